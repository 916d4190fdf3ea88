"""Task vocabulary: colours, shapes, families, held-out compositions and canonical instructions.

Every instruction the environment produces is one of the strings returned by :func:`all_instructions`
(lowercase ASCII letters and spaces only), so a policy can build its tokenizer vocabulary from them.

Families and their instructions::

    pick   "pick up the {colour} {shape}"
    push   "push the {colour} {shape} to the {left|right}"     (left = -x world = image left, front camera)
    place  "put the {colour} {shape} on the {colour} {shape}"  (the second object is a cube or a slab)

Splits. ``HELD_OUT`` is a fixed set of colour-shape compositions. ``split="train"`` never shows them at
all (neither as target nor as distractor nor as the base of a place task). ``split="unseen"`` always
uses one of them as the target (the object acted on); its distractors may be any composition.
``split="all"`` draws from every composition.
"""

from __future__ import annotations

from dataclasses import dataclass

# Saturated, well-separated colours (RGBA) that stay distinct at 64x64 under the scene's lighting.
COLOUR_RGBA: dict[str, tuple[float, float, float, float]] = {
    "red": (0.90, 0.10, 0.10, 1.0),
    "green": (0.10, 0.75, 0.15, 1.0),
    "blue": (0.10, 0.25, 0.95, 1.0),
    "yellow": (0.95, 0.85, 0.05, 1.0),
    "purple": (0.60, 0.15, 0.80, 1.0),
}
COLOURS: tuple[str, ...] = tuple(COLOUR_RGBA)
SHAPES: tuple[str, ...] = ("cube", "cylinder", "slab")
FAMILIES: tuple[str, ...] = ("pick", "push", "place")
DIRECTIONS: tuple[str, ...] = ("left", "right")
SPLITS: tuple[str, ...] = ("train", "unseen", "all")
# What each shape looks like, in the words a dictionary would use (a reader matches an unknown noun's
# dictionary gloss against these: mmvla.modules.gloss). Only training words name examples.
SHAPE_DESCRIPTIONS: dict[str, tuple[str, ...]] = {
    "cube": (
        "an object shaped like a cube, with six square faces",
        "a box-shaped block, as tall as it is wide",
    ),
    "cylinder": (
        "an object shaped like a cylinder: round, with circular ends",
        "a long round object, like a tube",
    ),
    "slab": (
        "a flat, thin, wide piece, like a slab or a tile",
        "a thin flat rectangular piece lying on the table",
    ),
}
# Shapes that can carry another object on top (the base of a "place" task).
PLACE_BASES: tuple[str, ...] = ("cube", "slab")

# One held-out composition per shape and per colour it uses: each colour and each shape is still seen
# in training with other partners, so the unseen split tests composition, not new words.
HELD_OUT: frozenset[tuple[str, str]] = frozenset({("red", "cylinder"), ("green", "slab"), ("blue", "cube")})

ALL_COMBOS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)


def combos_for_split(split: str, role: str = "target") -> tuple[tuple[str, str], ...]:
    """Colour-shape compositions allowed for ``role`` ("target" or "distractor") in ``split``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if role not in ("target", "distractor"):
        raise ValueError(f"unknown role {role!r}; expected 'target' or 'distractor'")
    if split == "all" or (split == "unseen" and role == "distractor"):
        return ALL_COMBOS
    if split == "train":
        return tuple(c for c in ALL_COMBOS if c not in HELD_OUT)
    return tuple(c for c in ALL_COMBOS if c in HELD_OUT)


@dataclass(frozen=True)
class TaskSpec:
    """A language task: what to do to which object.

    ``target`` is the (colour, shape) acted on; ``direction`` is set for push, ``base`` for place.
    """

    family: str
    target: tuple[str, str]
    direction: str | None = None
    base: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; expected one of {FAMILIES}")
        _check_combo(self.target, "target")
        if self.family == "push":
            if self.direction not in DIRECTIONS:
                raise ValueError(f"push needs a direction in {DIRECTIONS}, got {self.direction!r}")
        elif self.direction is not None:
            raise ValueError(f"{self.family} takes no direction, got {self.direction!r}")
        if self.family == "place":
            if self.base is None:
                raise ValueError("place needs a base object")
            _check_combo(self.base, "base")
            if self.base[1] not in PLACE_BASES:
                raise ValueError(f"place base must be one of {PLACE_BASES}, got {self.base[1]!r}")
            if self.base == self.target:
                raise ValueError("place base and target must differ")
        elif self.base is not None:
            raise ValueError(f"{self.family} takes no base, got {self.base!r}")

    @property
    def instruction(self) -> str:
        """The canonical instruction string."""
        return instruction_for(self.family, *self.target, direction=self.direction, base=self.base)

    @property
    def target_name(self) -> str:
        """``"{colour} {shape}"`` of the target, e.g. ``"red cube"``."""
        return f"{self.target[0]} {self.target[1]}"

    def in_split(self, split: str) -> bool:
        """Whether this task can be produced by ``split``."""
        if split == "all":
            return True
        if split == "train":
            return self.target not in HELD_OUT and (self.base is None or self.base not in HELD_OUT)
        if split == "unseen":
            return self.target in HELD_OUT
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def _check_combo(combo: tuple[str, str], what: str) -> None:
    colour, shape = combo
    if colour not in COLOURS:
        raise ValueError(f"unknown {what} colour {colour!r}; expected one of {COLOURS}")
    if shape not in SHAPES:
        raise ValueError(f"unknown {what} shape {shape!r}; expected one of {SHAPES}")


def instruction_for(
    family: str,
    colour: str,
    shape: str,
    direction: str | None = None,
    base: tuple[str, str] | None = None,
) -> str:
    """The canonical instruction for a task, e.g. ``instruction_for("push", "red", "cube", "left")``.

    Returns lowercase words separated by single spaces.
    """
    _check_combo((colour, shape), "target")
    if family == "pick":
        return f"pick up the {colour} {shape}"
    if family == "push":
        if direction not in DIRECTIONS:
            raise ValueError(f"push needs a direction in {DIRECTIONS}, got {direction!r}")
        return f"push the {colour} {shape} to the {direction}"
    if family == "place":
        if base is None:
            raise ValueError("place needs a base object")
        _check_combo(base, "base")
        return f"put the {colour} {shape} on the {base[0]} {base[1]}"
    raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")


def parse_instruction(text: str) -> TaskSpec:
    """Parse a canonical instruction back into a :class:`TaskSpec`; ``ValueError`` if it is not one."""
    words = text.strip().lower().split()
    try:
        if words[:3] == ["pick", "up", "the"] and len(words) == 5:
            return TaskSpec("pick", (words[3], words[4]))
        if words[:2] == ["push", "the"] and len(words) == 7 and words[4:6] == ["to", "the"]:
            return TaskSpec("push", (words[2], words[3]), direction=words[6])
        if words[:2] == ["put", "the"] and len(words) == 8 and words[4:6] == ["on", "the"]:
            return TaskSpec("place", (words[2], words[3]), base=(words[6], words[7]))
    except ValueError as e:
        raise ValueError(f"cannot parse instruction {text!r}: {e}") from None
    raise ValueError(f"not a canonical instruction: {text!r}")


def all_tasks(split: str, families: tuple[str, ...] | list[str] = FAMILIES) -> list[TaskSpec]:
    """Every task ``split`` can produce for ``families``, in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    for f in families:
        if f not in FAMILIES:
            raise ValueError(f"unknown family {f!r}; expected one of {FAMILIES}")
    tasks: list[TaskSpec] = []
    for family in FAMILIES:
        if family not in families:
            continue
        for combo in ALL_COMBOS:
            if family == "pick":
                cands = [TaskSpec("pick", combo)]
            elif family == "push":
                cands = [TaskSpec("push", combo, direction=d) for d in DIRECTIONS]
            else:
                cands = [
                    TaskSpec("place", combo, base=b) for b in ALL_COMBOS if b != combo and b[1] in PLACE_BASES
                ]
            tasks.extend(t for t in cands if t.in_split(split))
    return tasks


def all_instructions(split: str = "all", families: tuple[str, ...] | list[str] = FAMILIES) -> list[str]:
    """Every canonical instruction string ``split`` can produce (for ``families``), in a fixed order."""
    return [t.instruction for t in all_tasks(split, families)]


def vocabulary() -> list[str]:
    """Sorted list of every word used by any canonical instruction."""
    return sorted({w for s in all_instructions("all") for w in s.split()})


# Characters an instruction may contain (the gymnasium Text space's charset).
INSTRUCTION_CHARSET: str = "abcdefghijklmnopqrstuvwxyz ,.'-?!0123456789"
INSTRUCTION_MAX_LENGTH: int = 128
