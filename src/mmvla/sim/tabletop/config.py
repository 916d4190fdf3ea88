"""Configuration of the tabletop environment, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mmvla.sim.tabletop.shift import ShiftConfig
from mmvla.sim.tabletop.tasks import FAMILIES, SPLITS

CAMERAS: tuple[str, ...] = ("front", "wrist")

# Default episode length (control steps at CONTROL_HZ) per family when ``max_steps`` is None.
DEFAULT_MAX_STEPS: dict[str, int] = {"pick": 80, "push": 80, "place": 150}


@dataclass
class TabletopConfig:
    """Everything that defines a :class:`mmvla.sim.tabletop.env.TabletopEnv`.

    Attributes:
        cameras: camera names to render into the observation, any subset of ``("front", "wrist")``;
            an empty tuple renders nothing (fast resets for task statistics).
        image_size: side of the square uint8 images, pixels.
        split: "train", "unseen" or "all" (see :mod:`mmvla.sim.tabletop.tasks`).
        families: task families drawn uniformly at reset unless ``options["family"]`` names one.
        num_objects: objects on the table, an int or an inclusive (min, max) range; 3..5.
        max_steps: time limit in control steps (truncation); None = per-family default
            (``DEFAULT_MAX_STEPS``).
        max_delta_pos: metres the end-effector target moves per step at action +-1 (x, y, z).
        max_delta_yaw: radians the yaw target turns per step at action +-1.
        terminate_on_success: end the episode (terminated=True) at the first successful step.
        render_size: side of the image ``render()`` returns (front camera), pixels.
        shift: distribution shift of every episode (:class:`mmvla.sim.tabletop.shift.ShiftConfig`, or its
            dict or spec string ``"camera=strong,lighting=mild"``); the default is the clean scene.
            With ``randomise`` each axis's severity is drawn per episode (domain randomisation).
    """

    cameras: tuple[str, ...] = ("front", "wrist")
    image_size: int = 64
    split: str = "train"
    families: tuple[str, ...] = ("pick", "push", "place")
    num_objects: int | tuple[int, int] = (3, 5)
    max_steps: int | None = None
    max_delta_pos: float = 0.02
    max_delta_yaw: float = 0.2618  # 15 degrees
    terminate_on_success: bool = True
    render_size: int = 256
    shift: ShiftConfig = field(default_factory=ShiftConfig)

    def __post_init__(self) -> None:
        if isinstance(self.cameras, str):
            self.cameras = (self.cameras,)
        self.cameras = tuple(self.cameras)
        for cam in self.cameras:
            if cam not in CAMERAS:
                raise ValueError(f"unknown camera {cam!r}; expected any of {CAMERAS}")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"duplicate camera in {self.cameras}")
        if not isinstance(self.image_size, int) or not 16 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be an int in [16, 1024], got {self.image_size!r}")
        if not isinstance(self.render_size, int) or not 16 <= self.render_size <= 1024:
            raise ValueError(f"render_size must be an int in [16, 1024], got {self.render_size!r}")
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; expected one of {SPLITS}")
        if isinstance(self.families, str):
            self.families = (self.families,)
        self.families = tuple(self.families)
        if not self.families:
            raise ValueError("families must not be empty")
        for fam in self.families:
            if fam not in FAMILIES:
                raise ValueError(f"unknown family {fam!r}; expected any of {FAMILIES}")
        if len(set(self.families)) != len(self.families):
            raise ValueError(f"duplicate family in {self.families}")
        lo, hi = self.object_range
        if not 3 <= lo <= hi <= 5:
            raise ValueError(f"num_objects must be in 3..5 (min <= max), got {self.num_objects!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ValueError(f"max_steps must be a positive int or None, got {self.max_steps!r}")
        if not 0.0 < self.max_delta_pos <= 0.1:
            raise ValueError(f"max_delta_pos must be in (0, 0.1] metres, got {self.max_delta_pos}")
        if not 0.0 < self.max_delta_yaw <= 1.0:
            raise ValueError(f"max_delta_yaw must be in (0, 1] radians, got {self.max_delta_yaw}")
        self.shift = ShiftConfig.coerce(self.shift)

    @property
    def object_range(self) -> tuple[int, int]:
        """``num_objects`` as an inclusive (min, max) pair."""
        n = self.num_objects
        if isinstance(n, int):
            return (n, n)
        try:
            lo, hi = n
        except (TypeError, ValueError):
            raise ValueError(f"num_objects must be an int or a (min, max) pair, got {n!r}") from None
        return (int(lo), int(hi))

    def steps_for(self, family: str) -> int:
        """Time limit in control steps for ``family``."""
        return self.max_steps if self.max_steps is not None else DEFAULT_MAX_STEPS[family]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        return asdict(self)
