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
   but not a verb the speaker used from the training vocabulary ("push the red cube" names no task),
   and a lone object is not read as a pick when a place or push verb says its base or direction went
   unread. An instruction made of known words only (every training input) is never changed, and one
   whose slots name no single task keeps its grounded words.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mmvla.modules.language import normalize_instruction
from mmvla.modules.lexicon import LEXICONS, LexicalGrounding
from mmvla.sim.tabletop.wordings import parse_wording, verb_families

READINGS_CACHE = 4096  # instructions whose reading is kept (bounded: a server reads arbitrary text)


class InstructionReader:
    """Maps raw instructions to what the language encoder reads (see the module doc).

    Args:
        lexicon: one of :data:`~mmvla.modules.lexicon.LEXICONS` ("none", "wordnet", "wordnet_task").
        vocabulary: the words training showed the policy (any case).
    """

    def __init__(self, lexicon: str, vocabulary: Iterable[str]) -> None:
        if lexicon not in LEXICONS:
            raise ValueError(f"unknown lexicon {lexicon!r}; expected one of {LEXICONS}")
        self.lexicon = lexicon
        self.grounding = LexicalGrounding(vocabulary) if lexicon != "none" else None
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
        grounded = grounding.rewrite(text)
        if self.lexicon != "wordnet_task" or all(w in grounding.known for w in text.split()):
            return grounded
        try:
            task = parse_wording(grounded, ("train",))
        except ValueError:  # the slots name no single task: the grounded words as they are
            return grounded
        verbs = verb_families(("train",))
        said = {f for w in text.split() if w in grounding.known for f in verbs.get(w, ())}
        read = {f for w in grounded.split() for f in verbs.get(w, ())}
        if said and task.family not in said:  # "push the red cube": a known verb the arguments contradict
            return grounded
        if task.family == "pick" and read - {"pick"}:  # a place or push verb: its base or direction unread
            return grounded
        return task.instruction


__all__ = ["READINGS_CACHE", "InstructionReader"]
