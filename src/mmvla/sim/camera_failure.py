"""A camera that fails partway through an episode: the context task (one definition for every path).

::

    observation index t:   0 (reset)  1  2  ...  s-1 | s      s+1    ...   (t = steps taken)
    "blank":               x_0        x_1 ...    x_s-1 | 0      0      ...   black frames
    "freeze":              x_0        x_1 ...    x_s-1 | x_s-1  x_s-1  ...   the last good frame, repeated

The failure starts at observation ``s >= 1`` and lasts to the end of the episode; only the failed camera
changes (the other cameras, the state and the instruction continue). The named objects are in view from
the first observation (the reset's), so ``s >= 1`` means the policy has seen the target before its
camera fails. ``s`` is drawn uniformly from ``start_range`` (inclusive) with a generator seeded by the
episode seed alone (:func:`failure_start`), so evaluation, the served path and a re-run agree.

Users of the one definition (:func:`fail_frames`, offline; :class:`FrameFailure`, online):

- the environment: :class:`CameraFailureWrapper` (a ``gymnasium.Wrapper``);
- evaluation: ``EvalConfig.camera_failure`` / ``mmvla eval --camera-failure blank|freeze`` (the
  wrapper, local or through a policy server: the client sends the failed frames);
- training: ``TrainConfig.camera_failure`` samples failures inside each sample's frame window
  (:mod:`mmvla.training.failures`, which calls :func:`fail_frames`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np

from mmvla.core.keys import CAMERA_FAILURES

FAILURE_MODES: tuple[str, ...] = CAMERA_FAILURES
DEFAULT_START_RANGE = (4, 16)  # control steps; the expert solves pick/push in ~20-35 and place in ~40-50
_SALT = 0x0CA3F  # keeps the failure draw independent of every other use of the episode seed

Frames = TypeVar("Frames")  # a numpy array or a torch tensor, time first: (T, ...)


def _check_mode(mode: str) -> None:
    if mode not in FAILURE_MODES:
        raise ValueError(f"unknown camera failure mode {mode!r}; expected one of {FAILURE_MODES}")


@dataclass(frozen=True)
class CameraFailure:
    """Which camera fails, how, and from which observation (drawn per episode).

    Attributes:
        mode: "blank" (black frames) or "freeze" (the last good frame repeated).
        camera: the failing camera (the tabletop's "front" by default).
        start_range: inclusive (low, high) range of the first failed observation index, low >= 1.
    """

    mode: str
    camera: str = "front"
    start_range: tuple[int, int] = DEFAULT_START_RANGE

    def __post_init__(self) -> None:
        _check_mode(self.mode)
        lo, hi = (int(v) for v in self.start_range)
        if not 1 <= lo <= hi:
            raise ValueError(
                f"CameraFailure.start_range must be (low, high) with 1 <= low <= high, got {self.start_range}"
            )
        object.__setattr__(self, "start_range", (lo, hi))

    def start_for(self, seed: int) -> int:
        """The first failed observation index of the episode with this seed (:func:`failure_start`)."""
        return failure_start(seed, self.start_range)


def failure_start(seed: int, start_range: tuple[int, int] = DEFAULT_START_RANGE) -> int:
    """Uniform integer in the inclusive ``start_range``, drawn from ``default_rng([seed, salt])``: the
    same episode seed gives the same failure step everywhere, and no other draw of the episode moves."""
    lo, hi = start_range
    return int(np.random.default_rng([int(seed), _SALT]).integers(lo, hi + 1))


def fail_frames(frames: Frames, start: int, mode: str) -> Frames:
    """Offline: a copy of the frame sequence ``frames`` (T, ...) (numpy array or torch tensor) with the
    failure applied from index ``start`` (1 <= start; start >= T changes nothing).

    blank: frames[start:] = 0; freeze: frames[start:] = frames[start - 1].
    """
    _check_mode(mode)
    if start < 1:
        raise ValueError(f"a failure starts at index >= 1 (after a good frame), got {start}")
    out: Any = frames.clone() if hasattr(frames, "clone") else np.array(frames, copy=True)  # type: ignore[attr-defined]
    if start < len(out):
        out[start:] = 0 if mode == "blank" else out[start - 1]
    return out  # type: ignore[no-any-return]


class FrameFailure:
    """Online: one camera's frames, fed one per observation, come out failed from index ``start``.

    ``frame = failure(frame)`` for observations 0, 1, 2, ... of one episode (a new instance per episode);
    the output sequence equals :func:`fail_frames` on the input sequence.
    """

    def __init__(self, mode: str, start: int) -> None:
        _check_mode(mode)
        if start < 1:
            raise ValueError(f"a failure starts at index >= 1 (after a good frame), got {start}")
        self.mode, self.start = mode, int(start)
        self.t = 0  # index of the next frame
        self._last_good: np.ndarray | None = None

    @property
    def failed(self) -> bool:
        """Whether the most recent frame was a failed one."""
        return self.t > self.start

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        t = self.t
        self.t += 1
        if t < self.start:
            self._last_good = frame
            return frame
        if self.mode == "blank":
            return np.zeros_like(frame)
        assert self._last_good is not None
        return self._last_good.copy()


class CameraFailureWrapper(gym.Wrapper[dict[str, Any], np.ndarray, dict[str, Any], np.ndarray]):
    """The environment with one camera failing partway through every episode (see the module docs).

    ``reset(seed=s)`` draws the failure step from ``s`` (:meth:`CameraFailure.start_for`);
    ``options={"failure_start": k}`` sets it (an int >= 1, or None: no failure this episode); without a
    seed it is drawn from the wrapper's own generator. ``info`` gains ``"camera_failed"`` (the returned
    observation's camera is failed) and ``"failure_start"``.
    """

    def __init__(self, env: gym.Env[dict[str, Any], np.ndarray], failure: CameraFailure) -> None:
        super().__init__(env)
        self.failure = failure
        self._frames: FrameFailure | None = None
        self._rng = np.random.default_rng()
        self.failure_start: int | None = None

    @property
    def failed(self) -> bool:
        """Whether the last observation's camera was failed."""
        return self._frames is not None and self._frames.failed

    def _apply(self, obs: dict[str, Any], info: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        cam = self.failure.camera
        if cam not in obs:
            raise ValueError(f"camera failure: the observation has no camera {cam!r} (keys {sorted(obs)})")
        if self._frames is not None:
            obs = dict(obs, **{cam: self._frames(obs[cam])})
        return obs, dict(info, camera_failed=self.failed, failure_start=self.failure_start)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        options = dict(options or {})
        if "failure_start" in options:
            start = options.pop("failure_start")
        elif seed is not None:
            start = self.failure.start_for(seed)
        else:
            lo, hi = self.failure.start_range
            start = int(self._rng.integers(lo, hi + 1))
        self.failure_start = None if start is None else int(start)
        self._frames = None if start is None else FrameFailure(self.failure.mode, int(start))
        obs, info = self.env.reset(seed=seed, options=options or None)
        return self._apply(obs, info)

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        obs, info = self._apply(obs, info)
        return obs, float(reward), terminated, truncated, info
