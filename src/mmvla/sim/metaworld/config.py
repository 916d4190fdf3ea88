"""Meta-World MT10's tasks, instructions and :class:`MetaWorldConfig` (pure Python: no Meta-World, no MuJoCo).

The environment built from a config: :mod:`mmvla.sim.metaworld.env`.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

INSTALL_HINT = "pip install 'mmvla[metaworld]'"

ENV_NAME = "metaworld-mt10"
ROBOT_TYPE = "metaworld_sawyer"
MT10_TASKS: tuple[str, ...] = (
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
)
#: Natural instructions per task; the first is canonical (the observation's "instruction"). Every
#: instruction names exactly one task.
TASK_INSTRUCTIONS: dict[str, tuple[str, ...]] = {
    "reach-v3": ("reach the goal", "move the gripper to the goal"),
    "push-v3": ("push the puck to the goal", "slide the puck to the goal"),
    "pick-place-v3": ("pick up the puck and place it at the goal", "put the puck on the goal"),
    "door-open-v3": ("open the door", "swing the door open"),
    "drawer-open-v3": ("open the drawer", "pull the drawer open"),
    "drawer-close-v3": ("close the drawer", "push the drawer shut"),
    "button-press-topdown-v3": ("press the button from the top", "push the button down"),
    "peg-insert-side-v3": ("insert the peg into the side hole", "put the peg in the hole"),
    "window-open-v3": ("open the window", "slide the window open"),
    "window-close-v3": ("close the window", "slide the window shut"),
}
INSTRUCTION_CHARSET = string.ascii_lowercase + " -"
INSTRUCTION_MAX_LENGTH = 64

#: Meta-World's cameras; the ``corner*`` ones render upside down and are rotated back.
CAMERAS: tuple[str, ...] = (
    "corner",
    "corner2",
    "corner3",
    "corner4",
    "topview",
    "behindGripper",
    "gripperPOV",
)
UPSIDE_DOWN_CAMERAS = frozenset({"corner", "corner2", "corner3", "corner4"})
DEFAULT_CAMERAS: tuple[str, ...] = ("corner4",)
GOAL_MARKER_TASKS = frozenset({"reach-v3", "push-v3", "pick-place-v3"})

DEFAULT_MAX_STEPS = 200  # the expert needs 47-111 steps on average per task (peg-insert-side the most)
MW_MAX_PATH_LENGTH = 500  # Meta-World refuses to step past this
ACTION_SCALE = 0.01  # metres per step at action 1 (Meta-World's SawyerXYZEnv.action_scale)
CONTROL_HZ = 80  # 5 substeps x 2.5 ms

STATE_NAMES: tuple[str, ...] = ("x", "y", "z", "gripper")
ACTION_NAMES_4: tuple[str, ...] = ("dx", "dy", "dz", "gripper")
ACTION_NAMES_7: tuple[str, ...] = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
HAND_LOW = (-0.525, 0.348, -0.0525)  # Meta-World's _HAND_SPACE
HAND_HIGH = (0.525, 1.025, 0.7)


def canonical_task(name: str) -> str:
    """``"reach"`` or ``"reach-v3"`` -> ``"reach-v3"``; ValueError naming the MT10 tasks otherwise."""
    task = name if name.endswith("-v3") else f"{name}-v3"
    if task not in TASK_INSTRUCTIONS:
        raise ValueError(f"unknown Meta-World MT10 task {name!r}; expected one of {', '.join(MT10_TASKS)}")
    return task


def instruction_to_task(text: str) -> str:
    """The task an instruction names (any of :data:`TASK_INSTRUCTIONS`, case and spaces normalised)."""
    key = " ".join(text.lower().split())
    for task, texts in TASK_INSTRUCTIONS.items():
        if key in texts:
            return task
    raise ValueError(f"instruction {text!r} names no Meta-World MT10 task")


def all_instructions(canonical_only: bool = True) -> tuple[str, ...]:
    """Every task's canonical instruction (MT10 order), or every phrasing with ``canonical_only=False``."""
    if canonical_only:
        return tuple(TASK_INSTRUCTIONS[t][0] for t in MT10_TASKS)
    return tuple(s for t in MT10_TASKS for s in TASK_INSTRUCTIONS[t])


@dataclass
class MetaWorldConfig:
    """Everything that defines a :class:`MetaWorldMT10Env`.

    Attributes:
        tasks: MT10 task names (v3; ``"reach"`` is accepted for ``"reach-v3"``) the seeds cycle through.
        cameras: Meta-World cameras rendered into the observation (:data:`CAMERAS`); an empty tuple
            renders nothing (fast expert-only runs).
        image_size: side of the square uint8 images, pixels.
        max_steps: time limit in control steps (truncation), at most 500 (Meta-World's own limit).
        variations: goal variations per task (seed -> variation ``(seed // len(tasks)) % variations``);
            None: a fresh variation from every seed.
        variation_seed: seeds the variations (a different benchmark instance per value).
        action_dim: 4 ([dx, dy, dz, gripper]) or 7 (the tabletop's layout, rotations ignored).
        goal_marker_radius: radius (m) the free goal marker of reach/push/pick-place is drawn with;
            None keeps Meta-World's 2 cm.
        terminate_on_success: end the episode (terminated=True) at the first successful step.
        render_size: side of the image ``render()`` returns (first camera, or corner4), pixels.
        split: always "train" (MT10 trains and tests on the same tasks; accepted for API symmetry).
    """

    tasks: tuple[str, ...] = MT10_TASKS
    cameras: tuple[str, ...] = DEFAULT_CAMERAS
    image_size: int = 64
    max_steps: int = DEFAULT_MAX_STEPS
    variations: int | None = 50
    variation_seed: int = 0
    action_dim: int = 4
    goal_marker_radius: float | None = 0.03
    terminate_on_success: bool = True
    render_size: int = 256
    split: str = "train"

    def __post_init__(self) -> None:
        if isinstance(self.tasks, str):
            self.tasks = (self.tasks,)
        self.tasks = tuple(canonical_task(t) for t in self.tasks)
        if not self.tasks:
            raise ValueError("MetaWorldConfig.tasks must not be empty")
        if len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"MetaWorldConfig.tasks has duplicates: {self.tasks}")
        if isinstance(self.cameras, str):
            self.cameras = (self.cameras,)
        self.cameras = tuple(self.cameras)
        for cam in self.cameras:
            if cam not in CAMERAS:
                raise ValueError(f"unknown Meta-World camera {cam!r}; expected any of {CAMERAS}")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"MetaWorldConfig.cameras has duplicates: {self.cameras}")
        for name in ("image_size", "render_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or not 16 <= v <= 1024:
                raise ValueError(f"MetaWorldConfig.{name} must be an int in [16, 1024], got {v!r}")
        if not isinstance(self.max_steps, int) or not 1 <= self.max_steps <= MW_MAX_PATH_LENGTH:
            raise ValueError(
                f"MetaWorldConfig.max_steps must be an int in [1, {MW_MAX_PATH_LENGTH}], got {self.max_steps!r}"
            )
        if self.variations is not None and (not isinstance(self.variations, int) or self.variations < 1):
            raise ValueError(
                f"MetaWorldConfig.variations must be a positive int or None, got {self.variations!r}"
            )
        if not isinstance(self.variation_seed, int) or self.variation_seed < 0:
            raise ValueError(
                f"MetaWorldConfig.variation_seed must be an int >= 0, got {self.variation_seed!r}"
            )
        if self.action_dim not in (4, 7):
            raise ValueError(f"MetaWorldConfig.action_dim must be 4 or 7, got {self.action_dim!r}")
        if self.goal_marker_radius is not None and not 0.0 < self.goal_marker_radius <= 0.1:
            raise ValueError(
                f"MetaWorldConfig.goal_marker_radius must be in (0, 0.1] metres or None, got {self.goal_marker_radius}"
            )
        if self.split != "train":
            raise ValueError(f"Meta-World MT10 has only the 'train' split, got {self.split!r}")

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the state vector's entries (the dataset's ``observation.state`` feature)."""
        return STATE_NAMES

    @property
    def action_names(self) -> tuple[str, ...]:
        """Names of the action vector's entries (the dataset's ``action`` feature)."""
        return ACTION_NAMES_4 if self.action_dim == 4 else ACTION_NAMES_7

    def task_for_seed(self, seed: int) -> str:
        """The task episode ``seed`` runs unless ``reset`` names one."""
        return self.tasks[seed % len(self.tasks)]

    def variation_for_seed(self, seed: int) -> int | None:
        """The goal variation of episode ``seed`` (None: the seed itself draws the goal)."""
        if self.variations is None:
            return None
        return (seed // len(self.tasks)) % self.variations

    def sampler_seed(self, task: str, seed: int) -> int:
        """The seed of Meta-World's goal/object sampler for ``task`` in episode ``seed`` (uint32)."""
        v = self.variation_for_seed(seed)
        key = (self.variation_seed, MT10_TASKS.index(task), -1 if v is None else v, seed if v is None else 0)
        return int(np.random.SeedSequence([k + 1 for k in key]).generate_state(1)[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (provenance in dataset metadata)."""
        d = asdict(self)
        d["tasks"] = list(self.tasks)
        d["cameras"] = list(self.cameras)
        d["env"] = ENV_NAME
        return d
