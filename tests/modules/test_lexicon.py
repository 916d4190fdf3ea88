"""Lexical grounding: unseen words rewritten into known ones by WordNet's own relations."""

from __future__ import annotations

import contextlib
import itertools
import string

import pytest

from mmvla.modules.language import normalize_instruction
from mmvla.modules.lexicon import STOP_WORDS, LexicalGrounding, one_edit, wordnet
from mmvla.sim.tabletop import wordings as W
from mmvla.sim.tabletop.wordings import heldout_wordings, parse_wording, wording_set


@pytest.fixture(scope="module")
def train_pool():
    return wording_set("train", W.TRAIN_PER_TASK)


@pytest.fixture(scope="module")
def grounding(train_pool):
    return LexicalGrounding([w for ws in train_pool.values() for w in ws])


def _edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance (insert, delete, substitute, adjacent swap), plain DP."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def test_one_edit_is_exactly_the_strings_at_distance_one():
    word = "cube"
    edits = one_edit(word)
    for n in (3, 4, 5):  # every string of length 3..5 over a small alphabet, against the DP distance
        alphabet = "bceu" + "x"
        for chars in itertools.product(alphabet, repeat=n):
            s = "".join(chars)
            assert (s in edits) == (_edit_distance(s, word) == 1), s
    assert all(set(e) <= set(string.ascii_lowercase) for e in edits)


def test_known_words_and_training_wordings_pass_through_unchanged(grounding, train_pool):
    for ws in list(train_pool.values())[::5]:
        for w in ws:
            text = normalize_instruction(w)
            assert grounding.rewrite(text) == text or any(
                word not in grounding.known for word in text.split()
            ), text
    for word in sorted(grounding.known)[:50]:
        assert grounding.ground(word) is None
    assert all(grounding.ground(w) is None for w in STOP_WORDS)


def test_rewrites_follow_wordnet_relations(grounding):
    wn = wordnet()
    # "nudge" is a kind of push (its first verb sense's hypernym is push.v.01)
    assert any("push" in h.lemma_names() for s in wn.synsets("nudge", "v")[:1] for h in s.hypernyms())
    assert grounding.ground("nudge") == "push"
    # "dice" is a die, a kind of cube
    assert grounding.ground("dice") == "cube"
    # "lay" shares put.v.01 with "place", "put" and "set": the rewrite is one of them
    assert grounding.ground("lay") in {k for k in ("place", "put", "set") if k in grounding.known}
    # a word with no relation to any known word stays as it is
    assert grounding.ground("thanks") is None and grounding.rewrite("thanks") == "thanks"
    # every reported rewrite has evidence at or above the threshold
    for word in ("nudge", "dice", "lay", "hoist", "jade"):
        best = grounding.explain(word)[0]
        assert best[0] == grounding.ground(word) and best[1] >= grounding.min_score


def test_misspellings_and_derived_forms_reach_the_known_word(grounding):
    typos = [t for t in ("cylindar", "cylinxer", "cylinderr") if t not in grounding.known]
    assert typos and all(grounding.ground(t) == "cylinder" for t in typos)  # one edit from a known word
    assert grounding.ground("cubes") == "cube"  # inflection
    assert grounding.ground("leftwards") == "left"  # derivation
    assert grounding.ground("reddish") == "red"


def test_grounding_makes_heldout_wordings_readable_with_training_words(grounding):
    """Parsed with the training lexicon alone (what a policy learned), held-out wordings are unreadable
    as given and a large share becomes readable once grounded; training-vocabulary phrasings stay."""
    every = {
        "heldout": {k: list(v) for k, v in heldout_wordings().items()},
        "phrasing": wording_set("heldout_phrasing", 4),
    }
    rates = {}
    for name, sets in every.items():
        for ground in (False, True):
            ok = total = 0
            for canonical, ws in list(sets.items())[::3]:
                for w in ws:
                    text = normalize_instruction(w)
                    text = grounding.rewrite(text) if ground else text
                    with contextlib.suppress(ValueError):  # unparsable: not its task
                        ok += parse_wording(text, ("train",)).instruction == canonical
                    total += 1
            rates[name, ground] = ok / total
    assert rates["heldout", False] < 0.02
    assert rates["heldout", True] > 0.25, rates
    assert rates["phrasing", True] >= rates["phrasing", False] - 0.02, rates


def test_a_word_s_place_in_the_sentence_picks_its_part_of_speech(grounding):
    """ "plank" the verb (WordNet: set down) is a place verb; "plank" the noun (a board) names no known
    word. Before an article a word reads as a verb, after one as a noun."""
    wn = wordnet()
    assert {s.pos() for s in wn.synsets("plank")} >= {"n", "v"}
    assert grounding.ground("plank", "verb") in {"place", "put", "set"}
    assert grounding.ground("plank", "noun") is None
    assert grounding.rewrite("plank the red cube on the blue slab").split()[0] in {"place", "put", "set"}
    assert grounding.rewrite("lift the red plank") == "lift the red plank"


def test_rewrites_produce_real_words_and_read_real_words_by_meaning():
    """A typo the wording model put into a training wording ("plaet") is never a target, and a real
    word one edit from a known one ("heft", WordNet: lift with effort; "left" is one edit away) is read
    by its meaning, not as a misspelling; a non-word still is ("cylindar")."""
    wn = wordnet()
    g = LexicalGrounding(["plaet", "place", "lift", "left", "cylinder", "pick", "up"])
    assert not wn.synsets("plaet") and "plaet" in one_edit("plant")
    assert g.ground("plant", "verb") == "place" and "plaet" not in g.targets
    assert wn.synsets("heft") and "left" in one_edit("heft")
    assert g.ground("heft", "verb") == "lift"
    assert g.ground("cylindar") == "cylinder"


def test_phrasal_verbs_adjective_glosses_and_derived_forms():
    """ "scoop up the ..." reads "scoop" as a verb (a particle follows); an adjective is grounded by the
    words of its gloss ("sinistral": "of or on the left"); a derived form WordNet lists only by its stem
    ("sinistrally") takes the stem's senses; a generic word of the task language ("colored") is never
    the answer."""
    wn = wordnet()
    g = LexicalGrounding(["pick", "up", "the", "red", "cube", "left", "yellow", "colored"])
    assert g.rewrite("scoop up the red cube") == "pick up the red cube"
    assert any("left" in s.definition() for s in wn.synsets("sinistral"))
    assert g.ground("sinistral") == "left"
    assert not wn.synsets("sinistrally") and g.ground("sinistrally") == "left"
    assert "color" in wn.synsets("flaxen")[0].definition() and g.ground("flaxen", "noun") == "yellow"


def test_lookups_per_text_and_memo_are_bounded(monkeypatch):
    """A served instruction of random words costs at most MAX_GROUNDED_WORDS lookups, and the memo of
    readings never outgrows MEMO_SIZE."""
    from mmvla.modules import lexicon

    grounding = LexicalGrounding(["pick", "up", "the", "red", "cube"])
    calls = []
    monkeypatch.setattr(grounding, "_nearest", lambda w, role: calls.append(w) or None)
    words = [f"zq{chr(97 + i // 26)}{chr(97 + i % 26)}x" for i in range(40)]
    assert grounding.rewrite(" ".join(words)) == " ".join(words)
    assert calls == words[: lexicon.MAX_GROUNDED_WORDS]
    monkeypatch.setattr(lexicon, "MEMO_SIZE", 5)
    fresh = LexicalGrounding(["pick", "up", "the", "red", "cube"])
    monkeypatch.setattr(fresh, "_nearest", lambda w, role: None)
    for w in words:
        fresh.ground(w)
        assert 0 < len(fresh._memo) <= 5
