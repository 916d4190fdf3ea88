"""A scripted expert that solves every task family from the simulator's true state.

Written to be *learnable* by behaviour cloning, not merely successful:

- Memoryless: the action is a smooth function of the current state (hand pose, finger gap, object
  poses). No phases, timers or 1 cm triggers that a cloned policy would have to reproduce exactly.
- Proportional: the hand moves a fixed fraction (``GAIN``) of the way to a goal each step, the step
  capped by its norm (so the direction is kept); most actions are unsaturated.
- Funnels: the height goal is a smooth function of the horizontal error
  ``z = z_grasp + H * (1 - exp(-(d / sigma)^2))`` so the hand descends *while* it centres; the gripper
  closes as a smooth function of the 3-D alignment error; the lift blends in smoothly as the fingers
  close on the object (the finger gap is in the observed state).

Noise and correction (DART-style): with ``noise_std > 0`` :meth:`ScriptedExpert.act` returns the
clean action plus Gaussian noise, which is what should be *executed*; the clean action for the same
state is kept in :attr:`ScriptedExpert.last_clean_action`, and that is the label a recorder should
store. The next call recomputes from the true (perturbed) state, so demonstrations show recovery.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from mmvla.sim.tabletop import scene
from mmvla.sim.tabletop.env import SceneObject, TabletopEnv

GAIN = 0.2  # fraction of the position error corrected per step
YAW_GAIN = 0.6
FUNNEL_HEIGHT = 0.09  # metres above the grasp height while far from the target
FUNNEL_SIGMA = 0.03  # metres: horizontal error at which ~63% of FUNNEL_HEIGHT is kept
YAW_TO_METRES = 0.05  # a yaw error of 1 rad counts as this many metres of misalignment
GRIP_SIGMA = 0.012  # metres: gripper command is ~0 at this 3-D alignment error ...
GRIP_Z_WEIGHT = 4.0  # ... where height errors count 4x (close only once low: a deep grasp holds)
AIM_BELOW = 0.003  # the descent aims this far below the grasp height, so it does not crawl at the end
GRASP_Z_MIN = scene.FINGER_TIP_BELOW + 0.003  # grasp point height keeping the tips 3 mm off the table
GRASP_WIDTH = 2 * scene.CUBE_HALF  # every shape is 4.5 cm wide across its grasp axis (unshifted)
LIFT_Z = 0.13  # absolute height the hand lifts to once the fingers hold the object
PUSH_Z = GRASP_Z_MIN
RELEASE_XY = 0.015  # place: the gripper opens once the object rests within this of the base's centre ...
RELEASE_SIGMA = 0.008  # ... (the release fading over this beyond it, and over this height off its seat)
PUSH_BACKOFF = 0.015  # the hand waits this far behind the contact point until aligned
PUSH_ADVANCE = 0.04  # ... then aims this far beyond it, pushing the object along
PUSH_AHEAD_SIGMA = 0.012  # steep funnel on the side of the object where the hand would hit it
PUSH_ALIGN_SIGMA = 0.01
PADDLE_HALF = scene.FINGER_HALF[0]  # closed fingers' half depth along the push axis (hand x)
PADDLE_HALF_WIDTH = 2 * scene.FINGER_HALF[1]  # closed fingers' half width across it (hand y)


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def wrap_angle(angle: float) -> float:
    """``angle`` (radians) wrapped to [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


def grasp_yaw(shape: str, object_yaw: float) -> float:
    """Hand yaw that puts the closing axis across the object's 4.5 cm side, in [-pi/2, pi/2).

    Cubes: modulo 90 degrees (so within [-pi/4, pi/4)); slabs: modulo 180 degrees (across the short
    side); cylinders: 0.
    """
    period = scene.SHAPE_YAW_PERIOD[shape]
    if period == 0.0:
        return 0.0
    return (object_yaw + period / 2) % period - period / 2


def push_contact_offset(
    shape: str,
    object_yaw: float,
    sign: float,
    half_width: float,
    half_extents: tuple[float, float, float] | None = None,
) -> float:
    """How far behind the object's centre (along ``-sign * x``) its footprint reaches within the strip
    ``|y - y_centre| <= half_width``: where a paddle of that half width, centred on the object's line
    and pushing towards ``sign * x``, first touches it. Metres. ``half_extents``: the object's actual
    half sizes (default: the shape's unshifted ones)."""
    hx, hy, _ = scene.SHAPE_HALF_EXTENTS[shape] if half_extents is None else half_extents
    if shape == "cylinder":
        return hx
    c, s = math.cos(object_yaw), math.sin(object_yaw)
    poly = [(c * px - s * py, s * px + c * py) for px, py in ((hx, hy), (-hx, hy), (-hx, -hy), (hx, -hy))]
    for bound in (half_width, -half_width):  # clip to y <= w, then to y >= -w
        out: list[tuple[float, float]] = []
        for i, (x0, y0) in enumerate(poly):
            x1, y1 = poly[(i + 1) % len(poly)]
            in0 = y0 <= bound if bound > 0 else y0 >= bound
            in1 = y1 <= bound if bound > 0 else y1 >= bound
            if in0:
                out.append((x0, y0))
            if in0 != in1:
                t = (bound - y0) / (y1 - y0)
                out.append((x0 + t * (x1 - x0), bound))
        poly = out
    return max(-sign * x for x, _ in poly)


class ScriptedExpert:
    """Scripted expert for :class:`~mmvla.sim.tabletop.env.TabletopEnv` (reads the true state via ``env.unwrapped``).

    Args:
        env: the environment (wrapped or not).
        noise_std: standard deviation of Gaussian noise added to the executed action (action units).
        seed: seed of the noise generator.

    Usage::

        expert = ScriptedExpert(env, noise_std=0.1, seed=0)
        obs, info = env.reset(seed=0)
        expert.reset()
        action = expert.act(obs)          # execute this
        label = expert.last_clean_action  # record this
    """

    def __init__(self, env: gym.Env[Any, Any] | TabletopEnv, noise_std: float = 0.0, seed: int | None = None):
        unwrapped = env.unwrapped
        if not isinstance(unwrapped, TabletopEnv):
            raise TypeError(f"ScriptedExpert needs a TabletopEnv, got {type(unwrapped).__name__}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.env: TabletopEnv = unwrapped
        self.noise_std = float(noise_std)
        self._rng = np.random.default_rng(seed)
        self.last_clean_action = np.zeros(7, np.float32)

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode (reseeds the noise generator when ``seed`` is given)."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.last_clean_action = np.zeros(7, np.float32)

    def act(self, obs: Any = None) -> np.ndarray:
        """Action to execute now, float32 (7,) in [-1, 1]: the clean action plus noise (if any).

        ``obs`` is accepted for API symmetry with a policy; the expert reads the simulator state.
        """
        clean = self.clean_action()
        self.last_clean_action = clean
        if self.noise_std <= 0:
            return clean.copy()
        noisy = clean + self._rng.normal(0.0, self.noise_std, size=7).astype(np.float32)
        noisy[3:5] = 0.0
        return np.clip(noisy, -1.0, 1.0).astype(np.float32)

    def clean_action(self) -> np.ndarray:
        """The noise-free expert action for the current state, float32 (7,) in [-1, 1]."""
        env = self.env
        task = env.task
        if task is None or env.target is None:
            raise RuntimeError("reset the environment before asking the expert for an action")
        if task.family == "pick":
            goal, yaw_goal, grip = self._pick(env.target)
        elif task.family == "push":
            goal, yaw_goal, grip = self._push(env.target, task.direction == "right")
        else:
            assert env.base is not None
            goal, yaw_goal, grip = self._place(env.target, env.base)
        return self._to_action(goal, yaw_goal, grip)

    # ------------------------------------------------------------------------------------------------
    def _to_action(self, goal: np.ndarray, yaw_goal: float, grip: float) -> np.ndarray:
        cfg = self.env.config
        ee = self.env.ee_state()
        delta = GAIN * (goal - ee[:3])
        norm = float(np.linalg.norm(delta))
        if norm > cfg.max_delta_pos:
            delta *= cfg.max_delta_pos / norm
        action = np.zeros(7, np.float32)
        action[:3] = delta / cfg.max_delta_pos
        action[5] = np.clip(YAW_GAIN * wrap_angle(yaw_goal - ee[3]) / cfg.max_delta_yaw, -1.0, 1.0)
        action[6] = np.clip(grip, -1.0, 1.0)
        return np.clip(action, -1.0, 1.0)

    def _grasp_terms(self, obj: SceneObject) -> tuple[np.ndarray, float, float, float]:
        """(grasp point goal (3,), yaw goal, horizontal+yaw error, lift weight in [0, 1])."""
        env = self.env
        ee = env.ee_state()
        pos = env.object_position(obj)
        half_h = obj.half_extents[2]
        grasp = pos + np.array([0.0, 0.0, max(0.0, GRASP_Z_MIN - half_h)])
        yaw_goal = grasp_yaw(obj.shape, env.object_yaw(obj))
        yaw_err = wrap_angle(yaw_goal - ee[3])
        d = math.hypot(math.hypot(grasp[0] - ee[0], grasp[1] - ee[1]), YAW_TO_METRES * yaw_err)
        # How far the fingers have closed towards the object's width: 0 open, 1 touching.
        closure = (2 * scene.FINGER_MAX - ee[4]) / (2 * scene.FINGER_MAX - 2 * obj.half_extents[1])
        # Lift weight: rises as the pads reach the object's width, falls again if they close well past
        # it (nothing between them: the grasp missed, so open and try again).
        lift = _smoothstep((closure - 0.85) / 0.15) * (1.0 - _smoothstep((closure - 1.15) / 0.15))
        return grasp, yaw_goal, d, lift

    def _pick(self, obj: SceneObject) -> tuple[np.ndarray, float, float]:
        ee = self.env.ee_state()
        grasp, yaw_goal, d, lift = self._grasp_terms(obj)
        funnel_z = grasp[2] - AIM_BELOW + FUNNEL_HEIGHT * (1.0 - math.exp(-((d / FUNNEL_SIGMA) ** 2)))
        goal = np.array([grasp[0], grasp[1], (1.0 - lift) * funnel_z + lift * LIFT_Z])
        grip = self._grip(d, grasp[2] - ee[2], lift)
        return goal, yaw_goal, grip

    @staticmethod
    def _grip(d: float, dz: float, lift: float) -> float:
        """Gripper command: closes smoothly as the 3-D alignment error shrinks, and stays closed
        while the pads hold something the object's width (``lift`` near 1)."""
        err3 = math.hypot(d, GRIP_Z_WEIGHT * dz)
        close = max(math.exp(-((err3 / GRIP_SIGMA) ** 2)), lift)
        return 1.0 - 2.0 * close

    def _push(self, obj: SceneObject, right: bool) -> tuple[np.ndarray, float, float]:
        env = self.env
        ee = env.ee_state()
        pos = env.object_position(obj)
        sign = 1.0 if right else -1.0
        contact = (
            push_contact_offset(obj.shape, env.object_yaw(obj), sign, PADDLE_HALF_WIDTH, obj.half_extents)
            + PADDLE_HALF
        )
        # Signed position of the hand along the push axis relative to the contact point (>0: past it).
        along = (ee[0] - pos[0]) * sign + contact
        lateral = pos[1] - ee[1]
        ahead = max(0.0, along - 0.004)  # a few mm of contact penetration is not 'over the object'
        behind = max(0.0, -along - 0.03)
        d2 = (lateral / FUNNEL_SIGMA) ** 2 + (ahead / PUSH_AHEAD_SIGMA) ** 2 + (behind / FUNNEL_SIGMA) ** 2
        z = PUSH_Z + FUNNEL_HEIGHT * (1.0 - math.exp(-d2))
        aligned = math.exp(
            -((lateral / PUSH_ALIGN_SIGMA) ** 2) - (((ee[2] - PUSH_Z) / (1.5 * PUSH_ALIGN_SIGMA)) ** 2)
        )
        x = pos[0] - sign * (contact + PUSH_BACKOFF) + sign * (PUSH_BACKOFF + PUSH_ADVANCE) * aligned
        return np.array([x, pos[1], z]), 0.0, -1.0

    def _place(self, obj: SceneObject, base: SceneObject) -> tuple[np.ndarray, float, float]:
        env = self.env
        ee = env.ee_state()
        grasp, yaw_goal, d, lift = self._grasp_terms(obj)
        pos = env.object_position(obj)
        bpos = env.object_position(base)
        place_z = bpos[2] + base.half_extents[2] + obj.half_extents[2]
        # Readiness to release: the object rests on its seat, well inside the success radius. Flat within
        # RELEASE_XY, so an object set down a little off centre is let go, not steered while pressed down.
        off_centre = max(0.0, math.hypot(pos[0] - bpos[0], pos[1] - bpos[1]) - RELEASE_XY)
        release = math.exp(-((off_centre / RELEASE_SIGMA) ** 2) - ((pos[2] - place_z) / RELEASE_SIGMA) ** 2)
        # Pick part (before the fingers hold it).
        funnel_z = grasp[2] - AIM_BELOW + FUNNEL_HEIGHT * (1.0 - math.exp(-((d / FUNNEL_SIGMA) ** 2)))
        grip = self._grip(d, grasp[2] - ee[2], lift)
        # Carry part: over the base, height funnel around it; horizontal motion waits for some height.
        # While held, the hand moves so that the *object* reaches its spot (whatever hand-object offset
        # the grasp gave), aiming a little below it so the descent does not crawl.
        offset = ee[:3] - pos
        d_base = math.hypot(bpos[0] - pos[0], bpos[1] - pos[1])
        carry_z = (
            place_z
            + offset[2]
            - AIM_BELOW
            + FUNNEL_HEIGHT * (1.0 - math.exp(-((d_base / FUNNEL_SIGMA) ** 2)))
        )
        clear = _smoothstep((pos[2] - obj.half_extents[2] - 0.03) / 0.03)
        near = math.exp(-((d_base / FUNNEL_SIGMA) ** 2))
        move = 1.0 - (1.0 - clear) * (1.0 - near)  # move sideways once clear of the table, or near the base
        carry_xy = (1.0 - move) * grasp[:2] + move * (bpos[:2] + offset[:2])
        goal = np.empty(3)
        goal[:2] = (1.0 - lift) * grasp[:2] + lift * carry_xy
        goal[2] = (1.0 - lift) * funnel_z + lift * carry_z
        grip = (1.0 - release) * grip + release * 1.0
        return goal, yaw_goal, grip
