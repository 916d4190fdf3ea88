"""Everyday wordings of the tabletop's tasks: how a user types them, with the words training used.

The shipped held-out sets (:mod:`mmvla.sim.tabletop.wordings`) measure words training never showed. This
set measures the other half of what a new user does: compositions of everyday words around the task,
most of them words a policy knows, in noun phrases the training lexicon never forms. A colour with a
shade or intensity ("dark red", "navy blue", "lime green"), a size adjective ("the small ..."), a shape
word with a shape adjective ("flat tile", "cylinder shaped block"), common verbs ("bring me", "shove
... a bit to the left", "set ... down on"), politeness, case and punctuation.

It was written by hand before :mod:`mmvla.policy.reading` learned to read such noun phrases. Its first
measurement (one wording per task) is in docs/guide/language-robustness.md; the reader's rules were
developed on other sentences, and one ("move X onto Y" is a place) was added after that measurement
showed the failure, as the guide says. Package data: ``data/everyday_wordings.tsv``, written by
``scripts/make_wordings.py`` from :func:`everyday_file_text`; lines ``canonical<TAB>wording``.
"""

from __future__ import annotations

import numpy as np

from mmvla.sim.tabletop.tasks import TaskSpec, all_tasks
from mmvla.sim.tabletop.wording_files import package_wordings

EVERYDAY_FILE = "everyday_wordings.tsv"
EVERYDAY_PER_TASK = 8
EVERYDAY_SEED = 7
COLOURS: dict[str, tuple[str, ...]] = {
    "red": ("red", "dark red", "deep red", "cherry red", "light red"),
    "green": ("green", "light green", "bright green", "lime green", "grass green"),
    "blue": ("blue", "light blue", "dark blue", "navy blue", "baby blue"),
    "yellow": ("yellow", "pale yellow", "bright yellow", "golden yellow", "dark yellow"),
    "purple": ("purple", "light purple", "dark purple", "deep purple", "pale purple"),
}
SHAPES: dict[str, tuple[str, ...]] = {
    "cube": ("cube", "block", "box", "cubic block", "square box"),
    "cylinder": ("cylinder", "tube", "cylindrical block", "round tube", "cylinder shaped block"),
    "slab": ("slab", "tile", "plate", "flat tile", "flat slab"),
}
SIZES = ("small", "little", "big", "tiny")
PICK = (
    "pick up {np}",
    "lift {np}",
    "grab {np}",
    "take {np}",
    "lift up {np}",
    "bring me {np}",
    "pick {np} up",
)
PUSH = ("push {np} {dir}", "slide {np} {dir}", "move {np} {dir}", "shove {np} {dir}", "push {np} over {dir}")
PLACE = (
    "put {np} on {base}",
    "place {np} on top of {base}",
    "stack {np} on {base}",
    "put {np} on top of {base}",
    "move {np} onto {base}",
    "set {np} down on {base}",
)
DIRECTIONS: dict[str, tuple[str, ...]] = {
    "left": ("to the left", "left", "towards the left", "a bit to the left", "to your left"),
    "right": ("to the right", "right", "towards the right", "a bit to the right", "to your right"),
}
AROUND = ("{x}", "{x}", "please {x}", "can you {x}", "could you {x}", "{x} please", "robot, {x}", "now {x}")


def _noun_phrase(combo: tuple[str, str], rng: np.random.Generator) -> str:
    words = ["the"]
    if rng.random() < 0.25:
        words.append(str(rng.choice(SIZES)))
    words += [str(rng.choice(COLOURS[combo[0]])), str(rng.choice(SHAPES[combo[1]]))]
    return " ".join(words)


def everyday_wording(task: TaskSpec, rng: np.random.Generator) -> str:
    """One everyday wording of ``task``, drawn with ``rng``."""
    np_ = _noun_phrase(task.target, rng)
    if task.family == "pick":
        text = str(rng.choice(PICK)).format(np=np_)
    elif task.family == "push":
        assert task.direction is not None
        text = str(rng.choice(PUSH)).format(np=np_, dir=str(rng.choice(DIRECTIONS[task.direction])))
    else:
        assert task.base is not None
        text = str(rng.choice(PLACE)).format(np=np_, base=_noun_phrase(task.base, rng))
    text = str(rng.choice(AROUND)).format(x=text)
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.3:
        text += str(rng.choice([".", "!", "?"]))
    return text


def everyday_file_text(seed: int = EVERYDAY_SEED, per_task: int = EVERYDAY_PER_TASK) -> str:
    """The content of the shipped everyday file: ``per_task`` distinct wordings of every task (all
    families, both splits), drawn with one generator seeded ``seed``."""
    rng = np.random.default_rng(seed)
    header = (
        f"# Everyday wordings of every tabletop task (mmvla.sim.tabletop.everyday, seed {seed}, {per_task} per "
        "task).\n# Built by scripts/make_wordings.py.\n# canonical instruction<TAB>everyday wording\n"
    )
    rows = []
    for task in all_tasks("all"):
        seen: list[str] = []
        for _ in range(50 * per_task):
            w = everyday_wording(task, rng)
            if w not in seen:
                seen.append(w)
            if len(seen) == per_task:
                break
        rows += [f"{task.instruction}\t{w}" for w in seen]
    return header + "\n".join(rows) + "\n"


def everyday_wordings() -> dict[str, tuple[str, ...]]:
    """The shipped everyday set: canonical instruction -> its everyday wordings (package data)."""
    return package_wordings(EVERYDAY_FILE)


__all__ = ["EVERYDAY_FILE", "everyday_file_text", "everyday_wording", "everyday_wordings"]
