"""Meta-World's MT10 and MT50 tasks, instructions, difficulty groups and :class:`MetaWorldConfig` (pure
Python: no Meta-World, no MuJoCo).

The environment built from a config: :mod:`mmvla.sim.metaworld.env`.
"""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

INSTALL_HINT = "pip install 'mmvla[metaworld]'"

ENV_NAME = "metaworld-mt10"
MT50_ENV_NAME = "metaworld-mt50"
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
#: Difficulty groups of MT50 (Seo et al. 2022, "Masked World Models"; the grouping LeRobot's Meta-World
#: evaluation and the SmolVLA paper report by): easy 28, medium 11, hard 6, very hard 5.
DIFFICULTY_GROUPS: dict[str, tuple[str, ...]] = {
    "easy": (
        "button-press-v3",
        "button-press-topdown-v3",
        "button-press-topdown-wall-v3",
        "button-press-wall-v3",
        "coffee-button-v3",
        "dial-turn-v3",
        "door-close-v3",
        "door-lock-v3",
        "door-open-v3",
        "door-unlock-v3",
        "drawer-close-v3",
        "drawer-open-v3",
        "faucet-close-v3",
        "faucet-open-v3",
        "handle-press-v3",
        "handle-press-side-v3",
        "handle-pull-v3",
        "handle-pull-side-v3",
        "lever-pull-v3",
        "plate-slide-v3",
        "plate-slide-back-v3",
        "plate-slide-back-side-v3",
        "plate-slide-side-v3",
        "reach-v3",
        "reach-wall-v3",
        "window-close-v3",
        "window-open-v3",
        "peg-unplug-side-v3",
    ),
    "medium": (
        "basketball-v3",
        "bin-picking-v3",
        "box-close-v3",
        "coffee-pull-v3",
        "coffee-push-v3",
        "hammer-v3",
        "peg-insert-side-v3",
        "push-wall-v3",
        "soccer-v3",
        "sweep-v3",
        "sweep-into-v3",
    ),
    "hard": (
        "assembly-v3",
        "hand-insert-v3",
        "pick-out-of-hole-v3",
        "pick-place-v3",
        "push-v3",
        "push-back-v3",
    ),
    "very_hard": (
        "shelf-place-v3",
        "disassemble-v3",
        "stick-pull-v3",
        "stick-push-v3",
        "pick-place-wall-v3",
    ),
}
#: All 50 tasks: MT10's first (in MT10 order, so a task's index, which seeds its goal sampler, is the
#: same in both suites), then the other forty in alphabetical order.
MT50_TASKS: tuple[str, ...] = MT10_TASKS + tuple(
    sorted(t for group in DIFFICULTY_GROUPS.values() for t in group if t not in MT10_TASKS)
)
SUITES: dict[str, tuple[str, ...]] = {"mt10": MT10_TASKS, "mt50": MT50_TASKS}
SUITE_ENV_NAMES: dict[str, str] = {"mt10": ENV_NAME, "mt50": MT50_ENV_NAME}
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
    # The other forty MT50 tasks.
    "assembly-v3": ("put the nut onto the peg", "assemble the nut on the peg"),
    "basketball-v3": ("dunk the ball into the basket", "put the basketball in the hoop"),
    "bin-picking-v3": ("move the puck from one bin to the other bin", "pick the puck into the other bin"),
    "box-close-v3": ("put the lid on the box", "close the box with its lid"),
    "button-press-topdown-wall-v3": (
        "press the button from the top behind the wall",
        "reach over the wall and push the button down",
    ),
    "button-press-v3": ("press the button", "push the button in"),
    "button-press-wall-v3": (
        "press the button behind the wall",
        "reach past the wall and push the button in",
    ),
    "coffee-button-v3": ("press the coffee machine button", "push the button on the coffee machine"),
    "coffee-pull-v3": ("pull the mug away from the coffee machine", "take the mug out of the coffee machine"),
    "coffee-push-v3": ("push the mug under the coffee machine", "slide the mug into the coffee machine"),
    "dial-turn-v3": ("turn the dial", "rotate the dial half a turn"),
    "disassemble-v3": ("take the nut off the peg", "lift the nut off the peg"),
    "door-close-v3": ("close the door", "swing the door shut"),
    "door-lock-v3": ("lock the door", "turn the door lock down"),
    "door-unlock-v3": ("unlock the door", "turn the door lock up"),
    "hand-insert-v3": ("put the gripper into the hole", "insert the hand into the hole"),
    "faucet-open-v3": ("turn the faucet on", "rotate the faucet open"),
    "faucet-close-v3": ("turn the faucet off", "rotate the faucet closed"),
    "hammer-v3": ("hammer the nail into the wall", "drive the nail in with the hammer"),
    "handle-press-side-v3": ("press the side handle down", "push the handle down from the side"),
    "handle-press-v3": ("press the handle down", "push the handle down"),
    "handle-pull-side-v3": ("pull the side handle up", "lift the handle up from the side"),
    "handle-pull-v3": ("pull the handle up", "lift the handle up"),
    "lever-pull-v3": ("pull the lever up", "raise the lever"),
    "pick-place-wall-v3": (
        "pick up the puck and place it at the goal behind the wall",
        "lift the puck over the wall onto the goal",
    ),
    "pick-out-of-hole-v3": ("pick the puck out of the hole", "lift the puck out of the hole"),
    "plate-slide-v3": ("slide the plate into the cabinet", "push the plate into the cabinet"),
    "plate-slide-side-v3": (
        "slide the plate into the cabinet from the side",
        "push the plate sideways into the cabinet",
    ),
    "plate-slide-back-v3": ("slide the plate out of the cabinet", "pull the plate out of the cabinet"),
    "plate-slide-back-side-v3": (
        "slide the plate out of the cabinet sideways",
        "pull the plate out of the cabinet to the side",
    ),
    "peg-unplug-side-v3": ("unplug the peg from the side", "pull the peg out of the side hole"),
    "soccer-v3": ("kick the ball into the goal", "shoot the soccer ball into the net"),
    "stick-push-v3": ("push the box with the stick", "use the stick to push the box"),
    "stick-pull-v3": ("pull the box with the stick", "use the stick to pull the box"),
    "push-wall-v3": ("push the puck to the goal around the wall", "slide the puck past the wall to the goal"),
    "push-back-v3": ("push the puck back to the goal", "slide the puck back to the goal"),
    "reach-wall-v3": ("reach the goal over the wall", "move the gripper past the wall to the goal"),
    "shelf-place-v3": ("put the puck on the shelf", "place the puck onto the shelf"),
    "sweep-into-v3": ("sweep the puck into the hole", "brush the puck into the hole"),
    "sweep-v3": ("sweep the puck off the table", "brush the puck off the edge of the table"),
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
    """``"reach"`` or ``"reach-v3"`` -> ``"reach-v3"``; ValueError naming the MT50 tasks otherwise."""
    task = name if name.endswith("-v3") else f"{name}-v3"
    if task not in TASK_INSTRUCTIONS:
        raise ValueError(f"unknown Meta-World task {name!r}; expected one of {', '.join(MT50_TASKS)}")
    return task


def difficulty(task: str) -> str:
    """The MT50 difficulty group of ``task`` (:data:`DIFFICULTY_GROUPS`): easy, medium, hard or very_hard."""
    task = canonical_task(task)
    return next(g for g, tasks in DIFFICULTY_GROUPS.items() if task in tasks)


def instruction_to_task(text: str) -> str:
    """The task an instruction names (any of :data:`TASK_INSTRUCTIONS`, case and spaces normalised)."""
    key = " ".join(text.lower().split())
    for task, texts in TASK_INSTRUCTIONS.items():
        if key in texts:
            return task
    raise ValueError(f"instruction {text!r} names no Meta-World task")


def all_instructions(canonical_only: bool = True, tasks: tuple[str, ...] = MT10_TASKS) -> tuple[str, ...]:
    """Every task's canonical instruction (in ``tasks``' order), or every phrasing with ``canonical_only=False``."""
    if canonical_only:
        return tuple(TASK_INSTRUCTIONS[t][0] for t in tasks)
    return tuple(s for t in tasks for s in TASK_INSTRUCTIONS[t])


@dataclass
class MetaWorldConfig:
    """Everything that defines a :class:`~mmvla.sim.metaworld.env.MetaWorldEnv`.

    Attributes:
        tasks: task names of the suite (v3; ``"reach"`` is accepted for ``"reach-v3"``) the seeds cycle
            through; empty: all of the suite's tasks.
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
        split: always "train" (MT10 and MT50 train and test on the same tasks; accepted for API symmetry).
        suite: "mt10" or "mt50": the task set ``tasks`` is drawn from and the environment's name.
        lerobot_camera: move the ``corner2`` camera to LeRobot's Meta-World pose (position
            [0.75, 0.075, 0.7], after Seo et al. 2022); its image is turned upright like every corner camera.
    """

    tasks: tuple[str, ...] = ()
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
    suite: str = "mt10"
    lerobot_camera: bool = False

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise ValueError(f"MetaWorldConfig.suite must be one of {sorted(SUITES)}, got {self.suite!r}")
        if isinstance(self.tasks, str):
            self.tasks = (self.tasks,)
        self.tasks = tuple(canonical_task(t) for t in self.tasks) or SUITES[self.suite]
        outside = [t for t in self.tasks if t not in SUITES[self.suite]]
        if outside:
            raise ValueError(
                f"MetaWorldConfig.tasks {outside} are not {self.suite.upper()} tasks (use suite='mt50')"
            )
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
            raise ValueError(
                f"Meta-World {self.suite.upper()} has only the 'train' split, got {self.split!r}"
            )

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
        key = (self.variation_seed, MT50_TASKS.index(task), -1 if v is None else v, seed if v is None else 0)
        return int(np.random.SeedSequence([k + 1 for k in key]).generate_state(1)[0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (provenance in dataset metadata)."""
        d = asdict(self)
        d["tasks"] = list(self.tasks)
        d["cameras"] = list(self.cameras)
        d["env"] = SUITE_ENV_NAMES[self.suite]
        return d


def mt50_config(**fields: Any) -> MetaWorldConfig:
    """A :class:`MetaWorldConfig` of MT50 under the peers' protocol (LeRobot, SmolVLA) unless ``fields``
    say otherwise: all fifty tasks, positions re-drawn from every episode seed (``variations=None``),
    Meta-World's own 500-step limit."""
    fields.setdefault("variations", None)
    fields.setdefault("max_steps", MW_MAX_PATH_LENGTH)
    return MetaWorldConfig(suite="mt50", **fields)
