"""Run-time safety layer shared by local and served control: validation, a hold-position fallback, clamps.

:class:`SafetyMonitor` sits between the observation and the action in :meth:`VLAPolicy.act`
(``policy.safety``, on by default; ``policy.safety = None`` switches it off):

1. **Validation** — on top of :func:`~mmvla.policy.observation.validate_observation` (missing camera,
   dtype, shape, NaN/Inf state, empty instruction): unknown keys (e.g. an unknown camera), malformed
   timestamps, a state outside the configured bounds. Any of these raises :class:`ObservationError`
   (the server turns it into an error frame); it is never a crash and never silently "fixed".
2. **Failed modality → fallback** — while any camera is *stale*, *frozen* or *blank*, the
   configured ``fallback`` applies:

   - ``"hold"`` (default): the action is the hold action: zero position and rotation deltas, gripper
     unchanged (the last gripper value commanded in this episode, or, before the first command, the
     value implied by the state's gripper opening at episode start);
   - ``"continue"``: the policy keeps acting on what it still has (its temporal memory, the other
     cameras, the state) for at most ``continue_steps`` consecutive failed steps (decision
     ``blind_continue``; the action is still clamped), then holds;
   - ``"handover"``: the hold action with decision ``handover`` and :attr:`SafetyMonitor.handed_over`
     set: the controller stops the episode and hands the robot over (:class:`mmvla.core.handover.HandOver`).

   Normal actions return on the first step the camera has recovered.

   - stale: the frame's timestamp (``"<camera>_timestamp"``, else ``"timestamp"``; seconds on the
     ``time.time()`` clock) is older than ``max_frame_age_s``. Frames without a timestamp are never stale.
   - frozen: the camera delivered bit-identical images ``frozen_frames`` times in a row. By default only
     deliveries whose timestamp advanced count: a real sensor's noise makes two genuinely new frames
     differ, whereas the noise-free simulator renders bit-identical frames whenever the view does not
     change (a still robot; the wrist camera over the textureless table while the hand moves), so
     counting untimestamped repeats would hold a normal episode forever.
   - blank: the image is flat (pixel standard deviation ≤ ``blank_std``) and dark or saturated (mean
     outside ``flat_scene_mean``) — a dead sensor, a lens cap, a black frame from a failed driver.
     A flat mid-grey image is a plain surface (the simulator's wrist camera sees one now and then).
3. **Action limits** — per-step clamp of position deltas (dims 0-2) to ±``max_pos_delta`` and rotation
   deltas (dims 3-5) to ±``max_rot_delta``, the gripper (dim 6) and any further dims to [-1, 1]; a
   non-finite action becomes the hold action.

Every decision is logged on the ``mmvla.safety`` logger with its reason (normal steps at DEBUG, clamps
and continuing fallbacks at INFO, a fallback's onset, a recovery and invalid observations at WARNING)
and counted in :attr:`SafetyMonitor.counters`; :attr:`SafetyMonitor.last` is the latest decision.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mmvla.core.handover import HANDOVER
from mmvla.core.keys import FALLBACKS
from mmvla.policy.observation import ObservationError, validate_observation

logger = logging.getLogger("mmvla.safety")

TIMESTAMP_KEY = "timestamp"
BASE_KEYS = ("state", "instruction", TIMESTAMP_KEY)

# Decision kinds, in the order of the counters.
OK = "ok"
CLAMPED = "clamped"
FALLBACK_STALE = "fallback_stale"
FALLBACK_FROZEN = "fallback_frozen"
FALLBACK_BLANK = "fallback_blank"
FALLBACK_NONFINITE = "fallback_nonfinite"
INVALID = "invalid"
BLIND_CONTINUE = "blind_continue"  # a camera failed; the policy acts on ("continue" fallback)
DECISIONS = (
    OK,
    CLAMPED,
    FALLBACK_STALE,
    FALLBACK_FROZEN,
    FALLBACK_BLANK,
    FALLBACK_NONFINITE,
    INVALID,
    BLIND_CONTINUE,
    HANDOVER,
)

POS_DIMS = slice(0, 3)  # dx, dy, dz
ROT_DIMS = slice(3, 6)  # droll, dpitch, dyaw
GRIPPER_DIM = 6  # absolute gripper target: +1 open, -1 closed


@dataclass
class SafetyConfig:
    """Thresholds of the safety layer; ``None`` (or 0 for ``frozen_frames``) switches a check off.

    Attributes:
        max_frame_age_s: a camera frame older than this (seconds, ``time.time()`` clock) is stale.
        frozen_frames: N; a camera that delivered the same image N times in a row is frozen.
        frozen_requires_timestamp: count only repeats whose timestamp advanced (see the module docs);
            False also counts untimestamped repeats — right for noisy real cameras, wrong in simulation.
        blank_std: a camera image whose pixel standard deviation (0-255 units) is at most this is flat.
        flat_scene_mean: a flat image whose mean brightness lies strictly inside (low, high) is a plain
            surface, not a failure; None: every flat image is blank.
        max_pos_delta: per-step clamp of |dx|, |dy|, |dz| (action units, 1 = the full action range).
        max_rot_delta: per-step clamp of |droll|, |dpitch|, |dyaw| (action units).
        state_low, state_high: optional per-dimension bounds of the state; outside them the observation
            is invalid.
        state_abs_max: every state value must satisfy |x| ≤ this (catches garbage and unit mix-ups).
        gripper_state_index: index of the gripper opening in the state (tabletop: 4); None: unknown.
        gripper_open_width: the state's gripper opening when fully open (tabletop: 0.086 m, which the
            action maps to +1; 0 = closed maps to -1).
        fallback: what a failed camera leads to: "hold", "continue" (act on for at most
            ``continue_steps`` consecutive failed steps, then hold) or "handover" (see the module docs).
        continue_steps: N, the most consecutive failed steps the "continue" fallback acts through.
    """

    max_frame_age_s: float | None = 0.5
    frozen_frames: int = 10
    frozen_requires_timestamp: bool = True
    blank_std: float | None = 2.0
    flat_scene_mean: tuple[float, float] | None = (16.0, 239.0)
    max_pos_delta: float = 1.0
    max_rot_delta: float = 1.0
    state_low: tuple[float, ...] | None = None
    state_high: tuple[float, ...] | None = None
    state_abs_max: float = 1e3
    gripper_state_index: int | None = 4
    gripper_open_width: float = 0.086
    fallback: str = "hold"
    continue_steps: int = 8

    def __post_init__(self) -> None:
        if self.fallback not in FALLBACKS:
            raise ValueError(f"SafetyConfig.fallback must be one of {FALLBACKS}, got {self.fallback!r}")
        if (
            isinstance(self.continue_steps, bool)
            or not isinstance(self.continue_steps, int)
            or self.continue_steps < 0
        ):
            raise ValueError(f"SafetyConfig.continue_steps must be an int >= 0, got {self.continue_steps!r}")
        if self.max_frame_age_s is not None and not self.max_frame_age_s > 0:
            raise ValueError(f"SafetyConfig.max_frame_age_s must be > 0 or None, got {self.max_frame_age_s}")
        if isinstance(self.frozen_frames, bool) or not isinstance(self.frozen_frames, int):
            raise ValueError(f"SafetyConfig.frozen_frames must be an int, got {self.frozen_frames!r}")
        if self.frozen_frames < 0 or self.frozen_frames == 1:
            raise ValueError(f"SafetyConfig.frozen_frames must be 0 (off) or >= 2, got {self.frozen_frames}")
        if self.blank_std is not None and not 0 <= self.blank_std < 128:
            raise ValueError(f"SafetyConfig.blank_std must be in [0, 128) or None, got {self.blank_std}")
        if self.flat_scene_mean is not None:
            self.flat_scene_mean = (float(self.flat_scene_mean[0]), float(self.flat_scene_mean[1]))
            lo, hi = self.flat_scene_mean
            if not 0 <= lo < hi <= 255:
                raise ValueError(
                    f"SafetyConfig.flat_scene_mean must be (low, high) with 0 <= low < high <= 255, got {(lo, hi)}"
                )
        for name in ("max_pos_delta", "max_rot_delta"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v <= 1):
                raise ValueError(f"SafetyConfig.{name} must be in [0, 1] (action units), got {v!r}")
        if (self.state_low is None) != (self.state_high is None):
            raise ValueError("SafetyConfig.state_low and state_high must be given together")
        if self.state_low is not None and self.state_high is not None:
            self.state_low = tuple(float(x) for x in self.state_low)
            self.state_high = tuple(float(x) for x in self.state_high)
            if len(self.state_low) != len(self.state_high) or not all(
                lo <= hi for lo, hi in zip(self.state_low, self.state_high, strict=True)
            ):
                raise ValueError(
                    "SafetyConfig.state_low/state_high must have equal lengths with low <= high per dimension"
                )
        if not self.state_abs_max > 0:
            raise ValueError(f"SafetyConfig.state_abs_max must be > 0, got {self.state_abs_max}")
        if self.gripper_state_index is not None and self.gripper_state_index < 0:
            raise ValueError(
                f"SafetyConfig.gripper_state_index must be >= 0 or None, got {self.gripper_state_index}"
            )
        if not self.gripper_open_width > 0:
            raise ValueError(f"SafetyConfig.gripper_open_width must be > 0, got {self.gripper_open_width}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class SafetyDecision:
    """One step's decision: ``kind`` (one of :data:`DECISIONS`), a human-readable ``reason``."""

    kind: str
    reason: str

    @property
    def fallback(self) -> bool:
        """Whether the returned action is the hold action."""
        return self.kind.startswith("fallback") or self.kind == HANDOVER

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.kind, "reason": self.reason, "fallback": self.fallback}


class _CameraHistory:
    """Per-camera episode memory for the frozen check."""

    __slots__ = ("image", "repeats", "timestamp")

    def __init__(self, image: np.ndarray, timestamp: float | None) -> None:
        self.image = image.copy()
        self.timestamp = timestamp
        self.repeats = 1  # deliveries of this exact image in a row (counting per the config)


class SafetyMonitor:
    """Applies a :class:`SafetyConfig` step by step; keeps per-episode state (call :meth:`reset`).

    Args:
        config: thresholds (defaults: :class:`SafetyConfig()`).
        clock: seconds on the clock that observation timestamps use (``time.time``).
        log: where decisions are reported, ``log(level, kind, reason)``; default: the ``mmvla.safety``
            logger, one line per decision (the server passes a per-connection, rate-limited one).

    Attributes:
        counters: decision kind -> count since construction (not cleared by :meth:`reset`), plus "steps".
        last: the latest decision (None before the first).
        handed_over: the "handover" fallback fired in this episode (cleared by :meth:`reset`).
        blind_steps: consecutive steps, up to now, with a failed camera (cleared on recovery and reset).
    """

    def __init__(
        self,
        config: SafetyConfig | None = None,
        clock: Callable[[], float] = time.time,
        log: Callable[[int, str, str], None] | None = None,
    ) -> None:
        self.config = config if config is not None else SafetyConfig()
        self.clock = clock
        self.log = log
        self.counters: dict[str, int] = {"steps": 0, **dict.fromkeys(DECISIONS, 0)}
        self.last: SafetyDecision | None = None
        self.reset()

    def reset(self) -> None:
        """Start a new episode: forget camera histories and the commanded gripper (counters stay)."""
        self._cameras: dict[str, _CameraHistory] = {}
        self._commanded_gripper: float | None = None
        self._start_gripper: float | None = None
        self._in_fallback = False
        self._continuing: str | None = None  # the failure the policy acts through this step ("continue")
        self.handed_over = False
        self.blind_steps = 0

    # ------------------------------------------------------------------ decisions
    def _record(self, kind: str, reason: str) -> None:
        decision = SafetyDecision(kind, reason)
        self.counters[kind] += 1
        if kind != INVALID:
            self.counters["steps"] += 1
        if kind == INVALID:
            level = logging.WARNING
        elif kind == BLIND_CONTINUE:
            level = logging.WARNING if self.blind_steps == 1 else logging.INFO
        elif decision.fallback:
            level = logging.INFO if self._in_fallback else logging.WARNING
        elif self._in_fallback:
            level = logging.WARNING
            reason = f"recovered: {reason}"
            decision = SafetyDecision(kind, reason)
        else:
            level = logging.INFO if kind == CLAMPED else logging.DEBUG
        if kind != INVALID:
            self._in_fallback = decision.fallback
        if self.log is not None:
            self.log(level, kind, reason)
        else:
            logger.log(level, "safety %s: %s", kind, reason)
        self.last = decision

    # ------------------------------------------------------------------ observation side
    def check(
        self,
        observation: Mapping[str, Any],
        cameras: Sequence[str],
        image_size: int,
        state_dim: int,
        action_dim: int = 7,
    ) -> np.ndarray | None:
        """Validate one observation and look for a failed camera.

        Args:
            observation: camera -> uint8 (H, W, 3), "state" (S,), "instruction" str, optional
                "timestamp" / "<camera>_timestamp" float seconds.
            cameras, image_size, state_dim: what the policy reads.
            action_dim: A, width of the hold action.
        Returns:
            the (A,) float32 hold action if a camera is stale, frozen or blank (the step's decision is
            then recorded), else None — the caller then computes the action and passes it to :meth:`limit`.
        Raises:
            ObservationError: the observation is invalid (counted as "invalid").
        """
        try:
            validate_observation(observation, cameras, image_size, state_dim)
            timestamps = self._validate_extras(observation, cameras)
        except ObservationError as e:
            self._record(INVALID, str(e))
            raise
        state = np.asarray(observation["state"], dtype=np.float64)
        if self._start_gripper is None:
            self._start_gripper = self._implied_gripper(state)
        now = float(self.clock())
        failure: tuple[str, str] | None = None
        for cam in cameras:  # every camera's history is updated, even after a first failure
            found = self._camera_failure(cam, observation[cam], timestamps[cam], now)
            if found is not None and failure is None:
                failure = found
        self._continuing = None
        if failure is None:
            self.blind_steps = 0
            return None
        self.blind_steps += 1
        c = self.config
        if c.fallback == "continue" and self.blind_steps <= c.continue_steps:
            self._continuing = f"{failure[1]}; acting on ({self.blind_steps}/{c.continue_steps} blind steps)"
            return None  # the decision is recorded by limit(), which still clamps the action
        if c.fallback == "handover":
            self.handed_over = True
            self._record(HANDOVER, f"{failure[1]}; handing over")
        else:
            self._record(*failure)
        return self.hold_action(action_dim)

    def _validate_extras(self, obs: Mapping[str, Any], cameras: Sequence[str]) -> dict[str, float | None]:
        """Unknown keys, timestamps, state bounds; returns camera -> timestamp (or None)."""
        known = {*cameras, *BASE_KEYS, *(f"{c}_{TIMESTAMP_KEY}" for c in cameras)}
        unknown = sorted(str(k) for k in obs if k not in known)
        if unknown:
            raise ObservationError(
                f"observation has unknown key(s) {', '.join(map(repr, unknown))}; accepted: cameras "
                f"{', '.join(cameras)}, 'state', 'instruction', 'timestamp', '<camera>_timestamp'"
            )

        def stamp(key: str) -> float | None:
            if key not in obs:
                return None
            v = obs[key]
            if isinstance(v, np.generic) and np.issubdtype(type(v), np.number):
                v = v.item()
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ObservationError(f"{key!r} must be a finite number of seconds, got {v!r}")
            return float(v)

        common = stamp(TIMESTAMP_KEY)
        out: dict[str, float | None] = {}
        for cam in cameras:
            own = stamp(f"{cam}_{TIMESTAMP_KEY}")
            out[cam] = own if own is not None else common
        c = self.config
        state = np.asarray(obs["state"], dtype=np.float64)
        big = np.abs(state) > c.state_abs_max
        if big.any():
            i = int(np.argmax(big))
            raise ObservationError(
                f"'state'[{i}] = {state[i]:g} is out of range (|x| <= {c.state_abs_max:g})"
            )
        if c.state_low is not None and c.state_high is not None:
            if len(c.state_low) != state.shape[0]:
                raise ObservationError(
                    f"'state' has {state.shape[0]} values but the safety bounds have {len(c.state_low)}"
                )
            low, high = np.asarray(c.state_low), np.asarray(c.state_high)
            bad = (state < low) | (state > high)
            if bad.any():
                i = int(np.argmax(bad))
                raise ObservationError(
                    f"'state'[{i}] = {state[i]:g} is out of range [{low[i]:g}, {high[i]:g}]"
                )
        return out

    def _camera_failure(
        self, cam: str, image: np.ndarray, timestamp: float | None, now: float
    ) -> tuple[str, str] | None:
        c = self.config
        failure: tuple[str, str] | None = None
        if c.max_frame_age_s is not None and timestamp is not None and now - timestamp > c.max_frame_age_s:
            failure = (
                FALLBACK_STALE,
                f"camera {cam!r} frame is {now - timestamp:.3f} s old (max {c.max_frame_age_s:g} s)",
            )
        # Frozen: bit-identical deliveries; the history is kept up to date whatever else failed.
        hist = self._cameras.get(cam)
        if hist is None or not np.array_equal(hist.image, image):
            self._cameras[cam] = _CameraHistory(image, timestamp)
        else:
            advanced = timestamp is not None and (hist.timestamp is None or timestamp > hist.timestamp)
            if advanced or not c.frozen_requires_timestamp:
                hist.repeats += 1
            if timestamp is not None:
                hist.timestamp = timestamp
            if failure is None and c.frozen_frames and hist.repeats >= c.frozen_frames:
                failure = (
                    FALLBACK_FROZEN,
                    f"camera {cam!r} delivered the same image {hist.repeats} times in a row "
                    f"(limit {c.frozen_frames})",
                )
        if failure is None and c.blank_std is not None:
            std = float(image.std())
            if std <= c.blank_std:
                mean = float(image.mean())
                flat_ok = c.flat_scene_mean is not None and c.flat_scene_mean[0] < mean < c.flat_scene_mean[1]
                if not flat_ok:
                    failure = (
                        FALLBACK_BLANK,
                        f"camera {cam!r} image is blank (pixel std {std:.2f} <= {c.blank_std:g}, mean {mean:.1f})",
                    )
        return failure

    # ------------------------------------------------------------------ action side
    def _implied_gripper(self, state: np.ndarray) -> float | None:
        i = self.config.gripper_state_index
        if i is None or i >= state.shape[0]:
            return None
        return float(np.clip(2.0 * state[i] / self.config.gripper_open_width - 1.0, -1.0, 1.0))

    def hold_action(self, action_dim: int = 7) -> np.ndarray:
        """(A,) float32: zero position/rotation deltas, the gripper unchanged (0 if nothing is known)."""
        hold = np.zeros(action_dim, dtype=np.float32)
        if action_dim > GRIPPER_DIM:
            g = self._commanded_gripper if self._commanded_gripper is not None else self._start_gripper
            hold[GRIPPER_DIM] = 0.0 if g is None else g
            self._commanded_gripper = float(hold[GRIPPER_DIM])
        return hold

    def limit(self, action: np.ndarray) -> np.ndarray:
        """Clamp a proposed action (A,) — or a chunk (k, A) — and record the step's decision.

        Position dims 0-2 to ±max_pos_delta, rotation dims 3-5 to ±max_rot_delta, every other dim to
        [-1, 1]; a non-finite value anywhere replaces the whole output by the hold action. Returns a new
        float32 array of the same shape.
        """
        a = np.asarray(action, dtype=np.float64)  # limits apply before the float32 cast (1e300 is finite)
        if a.ndim not in (1, 2) or a.shape[-1] == 0:
            raise ValueError(f"action must be (A,) or (k, A), got shape {a.shape}")
        A = a.shape[-1]
        if not np.isfinite(a).all():
            hold = self.hold_action(A)
            self._continuing = None
            self._record(FALLBACK_NONFINITE, "the policy produced a non-finite action")
            return np.broadcast_to(hold, a.shape).copy()
        c = self.config
        lim = np.ones(A)
        lim[POS_DIMS], lim[ROT_DIMS] = c.max_pos_delta, c.max_rot_delta
        clipped = np.clip(a, -lim, lim)
        out = clipped.astype(np.float32)
        if A > GRIPPER_DIM:
            self._commanded_gripper = float(out.reshape(-1, A)[0, GRIPPER_DIM])
        changed = clipped != a
        continuing, self._continuing = self._continuing, None
        if continuing is not None:
            self._record(BLIND_CONTINUE, continuing)
        elif changed.any():
            dims = sorted({int(i) for i in np.nonzero(changed.reshape(-1, A).any(0))[0]})
            self._record(
                CLAMPED,
                f"clamped action dim(s) {dims} (max |Δpos| {c.max_pos_delta:g}, max |Δrot| {c.max_rot_delta:g})",
            )
        else:
            self._record(OK, "within limits")
        return out
