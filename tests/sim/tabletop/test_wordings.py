"""The wording model: held-out words are truly unseen, every wording means exactly its task."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from mmvla.modules.language import normalize_instruction
from mmvla.sim.tabletop.everyday import (
    EVERYDAY_FILE,
    EVERYDAY_PER_TASK,
    everyday_file_text,
    everyday_wordings,
)
from mmvla.sim.tabletop.tasks import all_instructions, all_tasks
from mmvla.sim.tabletop.wordings import (
    DEV,
    FUNCTION_WORDS,
    HELDOUT,
    HELDOUT_BLIND,
    HELDOUT_BLIND2,
    HELDOUT_FILE,
    HELDOUT_FRESH,
    TRAIN,
    content_words,
    generate_wording,
    heldout_file_text,
    heldout_wordings,
    parse_wording,
    verb_families,
    wording_for_episode,
    wording_set,
    wordings_for,
)

ROOT = Path(__file__).resolve().parents[3]


def _words(texts):
    return {w for t in texts for w in re.findall(r"[a-z0-9']+", t.lower())}


@pytest.fixture(scope="module")
def train_set():
    return wording_set("train", 32)


def test_heldout_file_shares_no_content_word_with_any_training_wording(train_set):
    """Read the words off the generated strings themselves (typos included), not off the lexicons."""
    train_words = _words(w for ws in train_set.values() for w in ws) - FUNCTION_WORDS
    held_words = _words(w for ws in heldout_wordings().values() for w in ws) - FUNCTION_WORDS
    assert held_words and train_words
    assert held_words.isdisjoint(train_words), sorted(held_words & train_words)
    assert content_words(TRAIN).isdisjoint(content_words(HELDOUT))


def test_fresh_heldout_vocabulary_shares_no_content_word_with_training_or_the_first_heldout(train_set):
    """The second held-out set is unseen by training and by whoever tuned on the first one."""
    fresh = wording_set("heldout_fresh", 8)
    fresh_words = _words(w for ws in fresh.values() for w in ws) - FUNCTION_WORDS
    train_words = _words(w for ws in train_set.values() for w in ws) - FUNCTION_WORDS
    held_words = _words(w for ws in heldout_wordings().values() for w in ws) - FUNCTION_WORDS
    assert fresh_words.isdisjoint(train_words), sorted(fresh_words & train_words)
    assert fresh_words.isdisjoint(held_words), sorted(fresh_words & held_words)
    assert content_words(HELDOUT_FRESH).isdisjoint(content_words(TRAIN) | content_words(HELDOUT))


def test_development_vocabulary_shares_no_content_word_with_any_other():
    """The grounding may be tuned on DEV, so DEV must not leak into training or either held-out set."""
    others = content_words(TRAIN) | content_words(HELDOUT) | content_words(HELDOUT_FRESH)
    assert not content_words(DEV) & others, sorted(content_words(DEV) & others)


def test_blind_heldout_vocabulary_shares_no_content_word_with_any_other(train_set):
    """The third held-out set is unseen by training and by whoever tuned the reader on the others."""
    others = content_words(TRAIN) | content_words(HELDOUT) | content_words(HELDOUT_FRESH) | content_words(DEV)
    assert not content_words(HELDOUT_BLIND) & others, sorted(content_words(HELDOUT_BLIND) & others)
    blind = _words(w for ws in wording_set("heldout_blind", 8).values() for w in ws) - FUNCTION_WORDS
    train_words = _words(w for ws in train_set.values() for w in ws) - FUNCTION_WORDS
    assert blind and blind.isdisjoint(train_words), sorted(blind & train_words)


def test_second_blind_vocabulary_shares_no_content_word_with_any_other():
    """Written after the third held-out set was measured, before the reader's next changes."""
    others = set().union(*(content_words(lex) for lex in (TRAIN, HELDOUT, HELDOUT_FRESH, DEV, HELDOUT_BLIND)))
    assert not content_words(HELDOUT_BLIND2) & others, sorted(content_words(HELDOUT_BLIND2) & others)


def test_canonical_words_are_training_words():
    canonical = _words(all_instructions("all")) - FUNCTION_WORDS
    assert canonical <= content_words(TRAIN)


@pytest.mark.parametrize(
    "vocabulary", ["train", "heldout", "heldout_fresh", "dev", "heldout_blind", "heldout_blind2"]
)
def test_every_wording_parses_back_to_its_task_and_no_two_tasks_share_one(vocabulary, train_set):
    sets = {
        "train": train_set,
        "heldout": {k: list(v) for k, v in heldout_wordings().items()},
        "heldout_fresh": wording_set("heldout_fresh", 8),
        "dev": wording_set("dev", 8),
        "heldout_blind": wording_set("heldout_blind", 8),
        "heldout_blind2": wording_set("heldout_blind2", 8),
    }[vocabulary]
    owner: dict[str, str] = {}
    for canonical, wordings in sets.items():
        assert len(wordings) >= 8
        for w in wordings:
            assert parse_wording(w).instruction == canonical, w
            key = normalize_instruction(w)
            assert owner.setdefault(key, canonical) == canonical, f"{w!r} is a wording of two tasks"
            owner[key] = canonical


def test_heldout_file_covers_every_task_and_matches_the_generator():
    text = (ROOT / "src" / "mmvla" / "sim" / "tabletop" / "data" / HELDOUT_FILE).read_text(encoding="utf-8")
    assert text == heldout_file_text(), "run scripts/make_wordings.py"
    assert set(heldout_wordings()) == set(all_instructions("all"))


def test_everyday_file_covers_every_task_and_matches_the_generator():
    text = (ROOT / "src" / "mmvla" / "sim" / "tabletop" / "data" / EVERYDAY_FILE).read_text(encoding="utf-8")
    assert text == everyday_file_text(), "run scripts/make_wordings.py"
    sets = everyday_wordings()
    assert set(sets) == set(all_instructions("all"))
    owner: dict[str, str] = {}
    for canonical, wordings in sets.items():
        assert len(set(wordings)) == EVERYDAY_PER_TASK
        for w in wordings:  # each one names its task's objects and nothing else's: no wording of two tasks
            key = normalize_instruction(w)
            assert owner.setdefault(key, canonical) == canonical, f"{w!r} is a wording of two tasks"
    task = parse_wording("put the red cube on the blue slab")
    assert wording_for_episode(task.instruction, "everyday", 3) in sets[task.instruction]


def test_training_pool_starts_with_the_canonical_instruction_and_is_reproducible():
    for task in all_tasks("all")[::7]:
        pool = wordings_for(task.instruction, "train", 16)
        assert pool[0] == task.instruction and len(set(pool)) == 16
        assert pool == wordings_for(task.instruction, "train", 16)
        assert pool != wordings_for(task.instruction, "train", 16, seed=1)


def test_wordings_vary_in_every_way_the_model_promises(train_set):
    every = [w for ws in train_set.values() for w in ws]
    assert any(w[:1].isupper() for w in every) and any(w.isupper() for w in every)
    assert any(w.endswith(".") for w in every) and any(w.endswith("!") for w in every)
    assert any(w.lower().startswith(("please", "can you")) for w in every)
    assert any(", " in w for w in every)  # object named first, or the direction first
    assert any(" that is " in w for w in every)  # colour after the noun
    known = content_words(TRAIN)
    typos = {w for w in _words(every) - FUNCTION_WORDS if w not in known}
    assert typos, "no light typos generated"


def test_generated_wordings_fit_the_environment_charset():
    from mmvla.sim.tabletop.tasks import INSTRUCTION_CHARSET, INSTRUCTION_MAX_LENGTH

    rng = np.random.default_rng(0)
    for task in all_tasks("all")[::5]:
        for vocabulary in ("train", "heldout", "heldout_fresh", "heldout_blind"):
            w = generate_wording(task, vocabulary, rng)
            assert len(w) <= INSTRUCTION_MAX_LENGTH
            assert set(w.lower()) <= set(INSTRUCTION_CHARSET), w


def test_episode_wording_is_chosen_by_seed():
    c = "push the red cube to the left"
    assert wording_for_episode(c, "canonical", 3) == c
    held = [wording_for_episode(c, "heldout", s) for s in range(40)]
    assert set(held) <= set(heldout_wordings()[c]) and len(set(held)) > 3
    assert held == [wording_for_episode(c, "heldout", s) for s in range(40)]
    with pytest.raises(ValueError, match="wording set"):
        wording_for_episode(c, "slang", 0)


def test_parse_rejects_text_without_an_object():
    with pytest.raises(ValueError, match="cannot parse"):
        parse_wording("do something useful")


def test_parse_reads_only_the_vocabularies_it_is_given():
    held = "rest the ruby dice atop the cobalt plank"
    assert parse_wording(held).instruction == "put the red cube on the blue slab"  # every lexicon
    with pytest.raises(ValueError, match="cannot parse"):
        parse_wording(held, ("train",))  # "ruby", "dice", "cobalt", "plank" are no training words
    # without a relation word of the vocabulary, the object named last is the base
    assert parse_wording("rest the red cube atop the blue slab", ("train",)).base == ("blue", "slab")
    assert parse_wording("on the blue slab, place the red cube", ("train",)).base == ("blue", "slab")
    with pytest.raises(ValueError, match="relation word but one object"):
        parse_wording("put the red cube on the zorblax", ("train",))  # its base went unread
    with pytest.raises(ValueError, match="two objects and a direction"):
        parse_wording("put the red cube on the blue slab to the left", ("train",))
    with pytest.raises(ValueError, match="vocabularies"):
        parse_wording("pick up the red cube", ("slang",))
    assert verb_families(("train",))["put"] == frozenset({"place"})
    assert "rest" not in verb_families(("train",)) and verb_families()["rest"] == frozenset({"place"})


def test_normalize_instruction_makes_punctuation_and_case_canonical():
    assert normalize_instruction("  Pick up the RED cube. ") == "pick up the red cube"
    assert normalize_instruction("push the red cube to the left-hand side!") == (
        "push the red cube to the left hand side"
    )
