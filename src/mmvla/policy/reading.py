"""How a policy reads an instruction: normalised, unseen words grounded, and optionally read as a task.

``InstructionReader("wordnet_task", vocabulary)("Kindly rest the ruby brick upon the cobalt plank!")``
-> ``["put the red cube on the blue slab"]``:

1. normalise case, punctuation and spacing (:func:`~mmvla.modules.language.normalize_instruction`);
2. ``"wordnet"`` and ``"wordnet_task"``: rewrite each word outside the training vocabulary into the known
   word WordNet relates it to (:class:`~mmvla.modules.lexicon.LexicalGrounding`);
3. ``"wordnet_task"`` only, and only for an instruction that held a word training never showed: read its
   slots with the training lexicon alone (colour and shape words, a direction, the base after "on";
   :func:`~mmvla.sim.tabletop.wordings.parse_wording` with ``("train",)``) and, when they name exactly one
   task, read that task's canonical instruction. Unknown filler and phrasing ("kindly", "thanks", "the
   brick in ruby") then cannot move the sentence embedding. The arguments name the family (a direction:
   push; a second object: place; neither: pick) and outrank a grounded verb ("rest" read as "move"),
   but not a verb the speaker used from the training vocabulary ("push the red cube" names no task)
   unless "on" or "onto" introduces the second object ("move the red cube onto the blue slab"),
   and a lone object is not read as a pick when a place or push verb says its base or direction went
   unread (but it is when that verb is a grounding and no word is left unread: "get the red cube" is
   grounded as "move the red cube", and moves nothing anywhere). An instruction made of known words only
   (every training input) is never changed when its slots and its verb name one task ("move the red
   cube onto the blue slab" is read as the place it names), and one whose slots name no single task
   keeps its grounded words.

When the slots name no task, an unknown head noun is read as the shape its dictionary gloss describes
(:class:`~mmvla.modules.gloss.GlossClassifier` against :data:`~mmvla.sim.tabletop.tasks.SHAPE_DESCRIPTIONS`:
"plank", "a stout length of sawn timber", is a slab), when that reading is clear and makes the slots
name one task (:meth:`InstructionReader._gloss_shapes`).

Before the slots are read, everyday noun phrases are put in the training lexicon's form: a shade or size
adjective is skipped ("the small dark green cube"), of two colour words in a row the last one names
the colour ("navy blue", "cherry red"), a shape adjective names the shape ("the round block" is a
cylinder, "the flat tile" a slab, "the square box" a cube) and of two shape words in a row, or joined by
"shaped" ("the cylinder shaped block"), the first one does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import combinations

from mmvla.modules.gloss import GlossClassifier
from mmvla.modules.language import normalize_instruction
from mmvla.modules.lexicon import DESCRIPTIVE_WORDS, DETERMINERS, LEXICONS, LexicalGrounding
from mmvla.sim.tabletop.tasks import DIRECTIONS, SHAPE_DESCRIPTIONS, TaskSpec
from mmvla.sim.tabletop.wordings import parse_wording, relation_words, slot_words, verb_families

READINGS_CACHE = 4096  # instructions whose reading is kept (bounded: a server reads arbitrary text)
# Adjectives that name one of the tabletop's shapes (the canonical shape word they stand for).
SHAPE_ADJECTIVES: dict[str, str] = {
    "round": "cylinder",
    "circular": "cylinder",
    "cylindrical": "cylinder",
    "flat": "slab",
    "square": "cube",
    "cubic": "cube",
    "cubical": "cube",
    "boxy": "cube",
}
SHAPE_JOINERS = frozenset(["shaped", "like", "looking"])  # "the cylinder shaped block"
MAX_GLOSS_NOUNS = 6  # unknown head nouns of one instruction read by their gloss
MAX_GLOSS_SHAPES = 2  # of them, at most this many read as shapes at once (a place task names two objects)
MAX_COLOUR_GAP = 3  # words between an object's noun and its colour ("the tube which is red": 3)
# A gloss reading is taken only when it is clear: on a development list of 29 shape nouns and 35 other
# nouns (none from a wording set), these thresholds kept 16 right readings of the 29 and no wrong one
# (taking every reading: 21 right, 8 wrong); 6 of the 35 other nouns pass them too, so the position
# guards of InstructionReader._gloss_shapes decide which words are objects.
MIN_GLOSS_SIMILARITY = 0.15  # cosine to the nearest description
MIN_GLOSS_MARGIN = 0.06  # over the next shape's


def shape_adjectives(words: Sequence[str], slots: dict[str, tuple[str, str]]) -> list[str]:
    """``words`` with each shape adjective replaced by the shape word it names, when ``slots`` (see
    :func:`everyday_phrases`) has that word: ["the", "flat", "tile"] -> ["the", "slab", "tile"]."""
    shape_words = {value for w, (kind, value) in slots.items() if kind == "shape" and w == value}
    return [SHAPE_ADJECTIVES[w] if SHAPE_ADJECTIVES.get(w) in shape_words else w for w in words]


def everyday_phrases(words: Sequence[str], slots: dict[str, tuple[str, str]]) -> list[str]:
    """``words`` with everyday noun phrases put in the training lexicon's form (see the module doc).

    ``slots``: single-word colour and shape phrases -> ("colour" | "shape", value), e.g.
    :func:`~mmvla.sim.tabletop.wordings.slot_words` of the training lexicon. A shape adjective becomes the
    canonical shape word when that word is in ``slots``.
    """
    out = [w for w in shape_adjectives(words, slots) if w not in DESCRIPTIVE_WORDS]

    def kind(i: int) -> str:
        return slots.get(out[i], ("", ""))[0] if 0 <= i < len(out) else ""

    i = 0
    while i < len(out):
        if kind(i) == "colour" and kind(i + 1) == "colour":  # "navy blue": the last names the colour
            del out[i]
            continue
        if kind(i) == "shape":
            j = i + 1 + (i + 1 < len(out) and out[i + 1] in SHAPE_JOINERS)
            if kind(j) == "shape":  # "round tube", "cylinder shaped block": the first names the shape
                del out[i + 1 : j + 1]
                continue
        i += 1
    return out


class InstructionReader:
    """Maps raw instructions to what the language encoder reads (see the module doc).

    Args:
        lexicon: one of :data:`~mmvla.modules.lexicon.LEXICONS` ("none", "wordnet", "wordnet_task").
        vocabulary: the words training showed the policy (any case).
    """

    def __init__(
        self, lexicon: str, vocabulary: Iterable[str], shapes: GlossClassifier | None = None
    ) -> None:
        if lexicon not in LEXICONS:
            raise ValueError(f"unknown lexicon {lexicon!r}; expected one of {LEXICONS}")
        self.lexicon = lexicon
        # Unknown head nouns read by their dictionary gloss (MiniLM, loaded at the first such noun).
        self.shapes = shapes or GlossClassifier(SHAPE_DESCRIPTIONS)
        self._verbs = verb_families(("train",))
        self.grounding = LexicalGrounding(vocabulary, verbs=self._verbs) if lexicon != "none" else None
        self._slots = slot_words(("train",))
        self._readings: dict[str, str] = {}
        self._phrases: dict[str, tuple[str, str]] = {}

    def __call__(self, instructions: Sequence[str]) -> list[str]:
        """B instructions -> the B texts the encoder reads."""
        return [self.read(t) for t in instructions]

    def read(self, instruction: str) -> str:
        """What the encoder reads for one instruction."""
        text = normalize_instruction(instruction)
        if self.grounding is None:
            return text
        if text not in self._readings:
            if len(self._readings) >= READINGS_CACHE:
                self._readings.clear()
            self._readings[text] = self._read(text, self.grounding)
        return self._readings[text]

    def phrases(self, text: str) -> tuple[str, str]:
        """The noun phrases of the object to move and of the base it goes on, as the training lexicon
        reads ``text`` (what :meth:`read` returned): ``("the red cube", "the blue slab")`` for a place
        task, ``("the red cube", "")`` for pick and push, ``("", "")`` when the text names no single task."""
        if text not in self._phrases:
            if len(self._phrases) >= READINGS_CACHE:
                self._phrases.clear()
            try:
                task = parse_wording(text, ("train",))
            except ValueError:
                self._phrases[text] = ("", "")
            else:
                base = f"the {task.base[0]} {task.base[1]}" if task.base else ""
                self._phrases[text] = (f"the {task.target[0]} {task.target[1]}", base)
        return self._phrases[text]

    def _read(self, text: str, grounding: LexicalGrounding) -> str:
        if self.lexicon != "wordnet_task":
            return grounding.rewrite(text)
        said = {f for w in text.split() if w in grounding.known for f in self._verbs.get(w, ())}
        if all(w in grounding.known for w in text.split()):
            try:
                known = parse_wording(text, ("train",))
            except ValueError:
                known = None
            if known is not None and (not said or known.family in said):
                return text  # every training input: its slots and verb name one task; read as it is
        grounded = grounding.rewrite(" ".join(shape_adjectives(text.split(), self._slots)))
        words = everyday_phrases(grounded.split(), self._slots)
        try:
            task = parse_wording(" ".join(words), ("train",))
        except ValueError:  # an unknown noun may name the missing shape
            glossed = self._gloss_shapes(text.split(), grounded.split(), grounding)
            if glossed is None:  # the slots name no single task: the grounded words as they are
                return grounded
            words, task = glossed
        read = {f for w in words for f in self._verbs.get(w, ())}
        onto = task.family == "place" and not relation_words(("train",)).isdisjoint(words)
        if said and task.family not in said and not onto:  # "push the red cube": no direction given
            return grounded  # ("move the red cube onto the blue slab" is a place)
        unread = any(grounding.unknown(w) for w in words)
        if task.family == "pick" and read - {"pick"} and (said or unread):
            return grounded  # a place or push verb: its base or direction went unread
        return task.instruction

    def _kind(self, word: str) -> str:
        """The slot ``word`` fills as a one-word phrase of the training lexicon: "colour", "shape" or ""."""
        return self._slots.get(word, ("", ""))[0]

    def _gloss_shapes(
        self, given: Sequence[str], grounded: Sequence[str], grounding: LexicalGrounding
    ) -> tuple[list[str], TaskSpec] | None:
        """The words and task of ``grounded`` (``given``'s words grounded one for one) once unknown head
        nouns are read as the shapes their glosses describe (:attr:`shapes`), or None if no reading names
        one task.

        A head noun is an unknown word of ``given`` that grounding did not read as a verb, within
        :data:`MAX_COLOUR_GAP` words after a determiner and of a colour word (every object is named with
        its colour), neither followed by a colour or shape word ("the mint tube": "mint" modifies) nor
        following a direction ("at the left end"), whose gloss reading is clear
        (:data:`MIN_GLOSS_SIMILARITY`, :data:`MIN_GLOSS_MARGIN`). Readings are tried fewest first;
        those that overwrite no colour grounding are tried before those that do ("the plum brick":
        brick-red is a colour, but the brick is what the phrase names), then those whose nouns stand
        nearest a colour word, then by gloss similarity.
        """
        colours = [i for i, w in enumerate(grounded) if self._kind(w) == "colour"]

        def colour_gap(i: int) -> int:
            return min((abs(i - j) for j in colours if j != i), default=len(grounded))

        reading: dict[int, tuple[str, float, float]] = {}
        for i, w in enumerate(given):
            after = grounded[i + 1] if i + 1 < len(grounded) else ""
            before = grounded[i - 1] if i else ""
            if (
                grounding.unknown(w)
                and grounded[i] not in self._verbs  # "plant the red ...": grounded as "place"
                and DETERMINERS.intersection(grounded[max(0, i - MAX_COLOUR_GAP) : i])  # in a noun phrase
                and colour_gap(i) <= MAX_COLOUR_GAP
                and after not in self._slots
                and before not in DIRECTIONS
                and self._kind(grounded[i]) != "shape"
            ):
                gloss = grounding.noun_gloss(w)
                if gloss is None:
                    continue
                shape, similarity, margin = self.shapes.classify(gloss)
                if similarity >= MIN_GLOSS_SIMILARITY and margin >= MIN_GLOSS_MARGIN:
                    reading[i] = (shape, similarity, margin)
                    if len(reading) == MAX_GLOSS_NOUNS:
                        break
        heads = list(reading)
        if not heads:
            return None
        tries = [c for k in range(1, MAX_GLOSS_SHAPES + 1) for c in combinations(heads, k)]
        tries.sort(
            key=lambda c: (
                sum(self._kind(grounded[i]) == "colour" for i in c),
                len(c),
                sum(colour_gap(i) for i in c),
                -sum(reading[i][1] for i in c),
            )
        )
        for chosen in tries:
            words = list(grounded)
            for i in chosen:
                words[i] = reading[i][0]
            words = everyday_phrases(words, self._slots)
            try:
                return words, parse_wording(" ".join(words), ("train",))
            except ValueError:
                continue
        return None


__all__ = ["READINGS_CACHE", "SHAPE_ADJECTIVES", "InstructionReader", "everyday_phrases", "shape_adjectives"]
