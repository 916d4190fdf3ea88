"""``TabletopEnv``: a MuJoCo tabletop with a parallel-jaw gripper and language tasks (Gymnasium API).

Observation (``gymnasium.spaces.Dict``):
    ``"front"``, ``"wrist"`` (those in ``config.cameras``): uint8 images, (H, W, 3).
    ``"state"``: float32 (5,) = [ee_x, ee_y, ee_z, ee_yaw, gripper_opening]:
        ee_x, ee_y, ee_z: the grasp point (between the finger pads, 15 mm above the tips), metres, world
        frame (table top at z = 0, +x = image right of the front camera, +y = away from it);
        ee_yaw: radians, the hand's rotation about world z, in [-pi, pi];
        gripper_opening: gap between the finger pads, metres, 0 (closed) .. 0.086 (open).
    ``"instruction"``: the canonical instruction string (see :mod:`mmvla.sim.tabletop.tasks`).

Action: float32 (7,) in [-1, 1] = [dx, dy, dz, droll, dpitch, dyaw, gripper], at 20 Hz (``CONTROL_DT``):
    dx, dy, dz: the end-effector target moves by ``action * config.max_delta_pos`` metres (0.02 by
        default) in the world frame;
    droll, dpitch: ignored (the gripper always points down);
    dyaw: the yaw target turns by ``action * config.max_delta_yaw`` radians (15 degrees by default),
        kept within [-pi/2, pi/2];
    gripper: an absolute target, not a delta: +1 = fully open, -1 = fully closed, linear in between.
The target is clamped to the workspace and to within 3 cm (0.3 rad) of the hand's actual pose, so
pushing against the table or an object never winds up a large force.

``info`` on every step: ``success`` (bool), ``family``, ``instruction``, ``target`` ("red cube"),
``split``, ``direction`` (push) and ``base`` (place) or None. Episodes end with ``terminated=True`` at the
first success (``config.terminate_on_success``) and with ``truncated=True`` at the time limit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import Any

# Headless rendering by default; it must be set before the first `import mujoco` (the next lines).
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from mmvla.sim.exit import close_at_exit
from mmvla.sim.tabletop import scene
from mmvla.sim.tabletop.config import CAMERAS, TabletopConfig
from mmvla.sim.tabletop.shift import (
    MAX_OBJECTS,
    NOMINAL_K,
    SHIFT_AXES,
    EpisodeShift,
    ShiftConfig,
    axis_angle_quat,
    degrade_image,
    kelvin_rgb,
    quat_mul,
    rotate,
    sample_episode_shift,
    shift_rng,
)
from mmvla.sim.tabletop.tasks import (
    COLOUR_RGBA,
    INSTRUCTION_CHARSET,
    INSTRUCTION_MAX_LENGTH,
    PLACE_BASES,
    SHAPES,
    TaskSpec,
    combos_for_split,
    parse_instruction,
)
from mmvla.sim.tabletop.wordings import shifted_wording

# ---- workspace (metres, world frame) ----------------------------------------------------------------
OBJECT_X = (-0.13, 0.13)  # object centres are drawn in this box
OBJECT_Y = (-0.09, 0.11)
HAND_LOW = np.array([-0.24, -0.20, scene.FINGER_TIP_BELOW - 0.002])  # end-effector target bounds
HAND_HIGH = np.array([0.24, 0.22, 0.25])
YAW_LIMIT = math.pi / 2
HAND_START_XY = 0.06  # start position: uniform in [-0.06, 0.06]^2 ...
HAND_START_Z = (0.12, 0.16)  # ... at this height
HAND_START_YAW = 0.2
TARGET_LEASH = 0.03  # metres the controller's target may lead the actual hand position
YAW_LEASH = 0.3

# ---- success thresholds ---------------------------------------------------------------------------
LIFT_HEIGHT = 0.05  # pick: target raised this much above its start height while pinched
PUSH_DISTANCE = 0.06  # push: target moved this far in the named direction ...
PUSH_MAX_DZ = 0.01  # ... staying on the table (height change below this) and not pinched
PLACE_MAX_XY = 0.025  # place: target's centre within this of the base's centre (horizontal) ...
PLACE_DZ_TOL = 0.01  # ... resting on it (height = base top + half target height, within this) ...
# ... and released (not pinched).

MIN_GAP = 0.055  # object centres are at least MIN_GAP + the larger footprint radius apart

# Model fields a distribution shift changes (mmvla.sim.tabletop.shift); restored at every reset.
_SHIFTED_MODEL_FIELDS = (
    "cam_pos",
    "cam_quat",
    "light_dir",
    "light_diffuse",
    "light_ambient",
    "geom_matid",
    "mat_rgba",
    "geom_size",
    "geom_rbound",
    "geom_aabb",
    "body_mass",
    "body_inertia",
    "body_subtreemass",
)
DISTRACTOR_TRIES = 200  # random spots tried per added distractor before the table counts as full
# Added distractors (distractor shift) keep MIN_GAP + the larger radius from the target and the place
# base, as every object does, but pack closer to the other distractors: footprints this far apart.
DISTRACTOR_CLEARANCE = 0.015
DISTRACTOR_X = (-0.17, 0.17)  # added distractors' centres: the object box widened by 4 cm (2 cm in y),
DISTRACTOR_Y = (-0.11, 0.13)  # still inside the front camera's view

STATE_LOW = np.array([-1.0, -1.0, -0.5, -math.pi, 0.0], np.float32)
STATE_HIGH = np.array([1.0, 1.0, 1.0, math.pi, 2 * scene.FINGER_MAX], np.float32)


@dataclass
class SceneObject:
    """One object on the table in the current episode."""

    colour: str
    shape: str
    body_id: int
    geom_id: int
    qpos_adr: int
    qvel_adr: int
    half_extents: tuple[float, float, float] = (0.0, 0.0, 0.0)  # this episode's (scaled) half sizes, metres

    @property
    def name(self) -> str:
        """``"{colour} {shape}"``."""
        return f"{self.colour} {self.shape}"


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


def _quat_yaw(q: np.ndarray) -> float:
    w, x, y, z = (float(v) for v in q)
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def _shares(a: tuple[str, str], b: tuple[str, str]) -> bool:
    """Whether two compositions share their colour or their shape."""
    return a[0] == b[0] or a[1] == b[1]


def _place_objects(
    rng: np.random.Generator,
    pool: list[tuple[str, str]],
    target: tuple[str, str],
    base: tuple[str, str],
    n: int,
) -> list[tuple[str, str]]:
    """Place scenes where both noun phrases matter: [target, base, distractors...].

    The target has a distractor (an object other than the base) sharing its colour or its shape, and so
    has the base (an object other than the target). With one free slot (n = 3) one distractor serves
    both when the split allows one (e.g. the target's colour and the base's shape); otherwise the scene
    takes a fourth object, so a place scene may hold one object more than ``n``. Further slots get the
    target's missing same-colour / same-shape distractor, then random distinct extras.
    """
    chosen = [target, base]

    def pick(cands: list[tuple[str, str]]) -> None:
        cands = [c for c in cands if c not in chosen]
        if cands:
            chosen.append(cands[int(rng.integers(len(cands)))])

    both = [c for c in pool if c not in chosen and _shares(c, target) and _shares(c, base)]
    if n - len(chosen) <= 1 and both:
        pick(both)
    else:
        pick([c for c in pool if _shares(c, target)])
    if not any(_shares(c, base) for c in chosen[2:]):
        pick([c for c in pool if _shares(c, base)])
    colour, shape = target
    if len(chosen) < n and not any(c[0] == colour for c in chosen[2:]):
        pick([c for c in pool if c[0] == colour and c[1] != shape])
    if len(chosen) < n and not any(c[1] == shape for c in chosen[2:]):
        pick([c for c in pool if c[1] == shape and c[0] != colour])
    while len(chosen) < n:
        pick(pool)
    return chosen


class TabletopEnv(gym.Env[dict[str, Any], np.ndarray]):
    """Tabletop language-conditioned manipulation (pick / push / place) with a scripted-expert-friendly API.

    Construct with a :class:`TabletopConfig` or its fields as keyword arguments (keywords override the
    config's fields when both are given). ``render_mode="rgb_array"`` makes ``render()`` return the front
    camera at ``config.render_size``.
    """

    metadata = {  # noqa: RUF012 (gymnasium declares it an instance attribute)
        "render_modes": ["rgb_array"],
        "render_fps": round(1.0 / scene.CONTROL_DT),
    }

    def __init__(
        self, config: TabletopConfig | None = None, *, render_mode: str | None = None, **kwargs: Any
    ) -> None:
        if config is None:
            config = TabletopConfig(**kwargs)
        elif kwargs:
            config = replace(config, **kwargs)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; expected None or 'rgb_array'")
        self.config = config
        self.render_mode = render_mode
        self.model = mujoco.MjModel.from_xml_string(
            scene.build_mjcf(max(config.image_size, config.render_size))
        )
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._hand_body = m.body("hand").id
        self._mocap_id = int(m.body_mocapid[m.body("mocap").id])
        self._hand_qadr = int(m.jnt_qposadr[m.joint("hand").id])
        self._finger_l_qadr = int(m.jnt_qposadr[m.joint("finger_l").id])
        self._finger_r_qadr = int(m.jnt_qposadr[m.joint("finger_r").id])
        self._finger_geoms = (m.geom("finger_l").id, m.geom("finger_r").id)
        self._camera_ids = {name: m.camera(name).id for name in CAMERAS}
        # Per-camera visibility: the wrist camera looks through the palm it is mounted in.
        self._scene_options: dict[str, mujoco.MjvOption] = {}
        for name in CAMERAS:
            opt = mujoco.MjvOption()
            if name == "wrist":
                opt.geomgroup[scene.PALM_GROUP] = 0
            self._scene_options[name] = opt
        self._pool: dict[str, list[SceneObject]] = {}
        for shape in SHAPES:
            self._pool[shape] = []
            for k in range(scene.POOL_PER_SHAPE):
                name = scene.object_body_name(shape, k)
                b = m.body(name).id
                j = int(m.body_jntadr[b])
                self._pool[shape].append(
                    SceneObject(
                        "",
                        shape,
                        b,
                        m.geom(name).id,
                        int(m.jnt_qposadr[j]),
                        int(m.jnt_dofadr[j]),
                        scene.SHAPE_HALF_EXTENTS[shape],
                    )
                )
        # Distribution shifts (mmvla.sim.tabletop.shift): what they change, restored at every reset.
        self._front_cam = self._camera_ids["front"]
        self._top_light = m.light("top").id
        self._table_geom = m.geom("table").id
        self._checker_mat = m.material(scene.TABLE_CHECKER_MATERIAL).id
        self._model_defaults = {name: getattr(m, name).copy() for name in _SHIFTED_MODEL_FIELDS}
        self._table_rgba = m.geom_rgba[self._table_geom].copy()
        self._headlight_defaults = (m.vis.headlight.ambient.copy(), m.vis.headlight.diffuse.copy())
        self.shift_state = EpisodeShift(severities={})  # what the current episode's shift applied
        self.distractors_added = 0  # extra distractors placed by the current episode's shift
        self._shift_seed: int | None = None
        self._shift_episode = 0
        self._image_rng: np.random.Generator | None = None
        self._given_instruction: str | None = None

        size = config.image_size
        obs_spaces: dict[str, spaces.Space[Any]] = {
            cam: spaces.Box(0, 255, (size, size, 3), np.uint8) for cam in config.cameras
        }
        obs_spaces["state"] = spaces.Box(STATE_LOW, STATE_HIGH, (5,), np.float32)
        obs_spaces["instruction"] = spaces.Text(
            max_length=INSTRUCTION_MAX_LENGTH, min_length=1, charset=INSTRUCTION_CHARSET
        )
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Box(-1.0, 1.0, (7,), np.float32)

        self._renderer: mujoco.Renderer | None = None
        self._big_renderer: mujoco.Renderer | None = None
        # Episode state.
        self.task: TaskSpec | None = None
        self.objects: list[SceneObject] = []
        self.target: SceneObject | None = None
        self.base: SceneObject | None = None
        self.initial_positions: np.ndarray = np.zeros((0, 3))
        self._target_pos = np.zeros(3)
        self._target_yaw = 0.0
        self._steps = 0
        self._max_steps = 1

    # ------------------------------------------------------------------------------------------------
    # Gymnasium API
    # ------------------------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode. ``options``: ``family`` (str), ``instruction`` (a canonical instruction;
        overrides ``family``), ``shift`` (a :class:`~mmvla.sim.tabletop.shift.ShiftConfig` or its dict:
        this episode's shift instead of ``config.shift``). Family and instruction must be producible by
        the configured split and families.

        The shift draws from its own generators (seeded from ``seed`` and the number of unseeded resets
        since), never from ``np_random``: task, objects, layout and the gripper's drawn start are those
        of the clean episode at the same seed. Every model parameter a shift changes is restored first.
        """
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"family", "instruction", "shift"}
        if unknown:
            raise ValueError(
                f"unknown reset option(s) {sorted(unknown)}; expected 'family', 'instruction', 'shift'"
            )
        shift_cfg = (
            self.config.shift if options.get("shift") is None else ShiftConfig.coerce(options["shift"])
        )
        if seed is not None:
            self._shift_seed, self._shift_episode = int(seed), 0
        else:
            if self._shift_seed is None:  # never seeded: an entropy seed, not a draw from np_random
                self._shift_seed = int(np.random.SeedSequence().entropy % 2**63)  # type: ignore[operator]
            self._shift_episode += 1
        shift = (
            sample_episode_shift(shift_cfg, self._shift_seed, self._shift_episode)
            if shift_cfg.active
            else EpisodeShift(severities={})
        )
        self.shift_state = shift
        self._restore_model()
        rng = self.np_random
        cfg = self.config
        task = self._choose_task(rng, options)
        lo, hi = cfg.object_range
        n = int(rng.integers(lo, hi + 1))
        combos = self._choose_objects(rng, task, n)
        poses = self._choose_layout(rng, task, combos)
        scale = shift.object_scale
        self.distractors_added = 0
        if shift.distractors_added:
            extra = self._add_distractors(task, combos, poses, shift.distractors_added, scale)
            self.distractors_added = len(extra)
            for combo, pose in extra:
                combos.append(combo)
                poses.append(pose)

        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        # Park the whole pool, then place this episode's objects.
        index = 0
        for shape in SHAPES:
            for obj in self._pool[shape]:
                m.body_gravcomp[obj.body_id] = 1.0
                d.qpos[obj.qpos_adr : obj.qpos_adr + 3] = scene.parking_position(index)
                d.qpos[obj.qpos_adr + 3 : obj.qpos_adr + 7] = (1.0, 0.0, 0.0, 0.0)
                index += 1
        used = {s: 0 for s in SHAPES}
        self.objects = []
        for (colour, shape), (x, y, yaw) in zip(combos, poses, strict=True):
            half = scene.SHAPE_HALF_EXTENTS[shape]
            obj = replace(self._pool[shape][used[shape]], colour=colour)
            if scale != 1.0:
                obj = replace(obj, half_extents=(half[0] * scale, half[1] * scale, half[2] * scale))
                self._scale_object(obj, scale)
            used[shape] += 1
            m.body_gravcomp[obj.body_id] = 0.0
            m.geom_rgba[obj.geom_id] = COLOUR_RGBA[colour]
            z = obj.half_extents[2] + 0.0005
            d.qpos[obj.qpos_adr : obj.qpos_adr + 3] = (x, y, z)
            d.qpos[obj.qpos_adr + 3 : obj.qpos_adr + 7] = _yaw_quat(yaw)
            self.objects.append(obj)
        self.task = task
        self.target = self.objects[0]
        self.base = self.objects[1] if task.family == "place" else None

        hand = np.array(
            [
                rng.uniform(-HAND_START_XY, HAND_START_XY),
                rng.uniform(-HAND_START_XY, HAND_START_XY),
                rng.uniform(*HAND_START_Z),
            ]
        )
        yaw = float(rng.uniform(-HAND_START_YAW, HAND_START_YAW))
        if any(shift.gripper_offset):
            hand = hand + np.asarray(shift.gripper_offset[:3])
            yaw += shift.gripper_offset[3]
        self._apply_scene_shift(shift)
        d.qpos[self._hand_qadr : self._hand_qadr + 3] = hand
        d.qpos[self._hand_qadr + 3 : self._hand_qadr + 7] = _yaw_quat(yaw)
        d.qpos[self._finger_l_qadr] = scene.FINGER_MAX
        d.qpos[self._finger_r_qadr] = scene.FINGER_MAX
        d.mocap_pos[self._mocap_id] = hand
        d.mocap_quat[self._mocap_id] = _yaw_quat(yaw)
        d.ctrl[0] = scene.FINGER_MAX
        self._target_pos = hand.copy()
        self._target_yaw = yaw
        # Let the objects settle onto the table for one control period.
        mujoco.mj_step(m, d, nstep=scene.SUBSTEPS)
        self.initial_positions = np.array([d.xpos[o.body_id].copy() for o in self.objects])
        self._steps = 0
        self._max_steps = cfg.steps_for(task.family)
        self._image_rng = (
            shift_rng(self._shift_seed, self._shift_episode, SHIFT_AXES.index("image"))
            if shift.image_active
            else None
        )
        self._set_given_instruction()
        return self._observation(), self._info(self._success())

    def retarget(self, target: tuple[str, str]) -> dict[str, Any]:
        """Make another object on the table the target of the current task (same family, direction and
        base), before the first step: the instruction-swap check. Returns the new observation.

        Raises ``ValueError`` if no object of that composition is on the table, it is the place base, or
        the episode has already stepped.
        """
        if self.task is None or self._steps:
            raise RuntimeError("retarget() must follow reset() and precede the first step()")
        index = next((i for i, o in enumerate(self.objects) if (o.colour, o.shape) == tuple(target)), None)
        if index is None:
            raise ValueError(f"no {target[0]} {target[1]} on the table (objects: {self.object_names})")
        if self.base is not None and self.objects[index] is self.base:
            raise ValueError(f"the {target[0]} {target[1]} is the place base; it cannot be the target")
        order = [index, *(i for i in range(len(self.objects)) if i != index)]
        self.objects = [self.objects[i] for i in order]
        self.initial_positions = self.initial_positions[order]
        self.target = self.objects[0]
        self.task = replace(self.task, target=(self.target.colour, self.target.shape))
        self._set_given_instruction()
        return self._observation()

    @property
    def object_names(self) -> list[str]:
        """``"colour shape"`` of each object on the table, the target first (then the place base)."""
        return [f"{o.colour} {o.shape}" for o in self.objects]

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Apply one action (see the module docstring) for ``CONTROL_DT`` seconds."""
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (7,):
            raise ValueError(f"action must have shape (7,), got {np.shape(action)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {a}")
        a = np.clip(a, -1.0, 1.0)
        cfg = self.config
        m, d = self.model, self.data
        hand_pos = d.xpos[self._hand_body]
        hand_yaw = _quat_yaw(d.xquat[self._hand_body])
        target = self._target_pos + a[:3] * cfg.max_delta_pos
        target = np.clip(target, hand_pos - TARGET_LEASH, hand_pos + TARGET_LEASH)
        self._target_pos = np.clip(target, HAND_LOW, HAND_HIGH)
        yaw = self._target_yaw + float(a[5]) * cfg.max_delta_yaw
        yaw = min(max(yaw, hand_yaw - YAW_LEASH), hand_yaw + YAW_LEASH)
        self._target_yaw = min(max(yaw, -YAW_LIMIT), YAW_LIMIT)
        d.mocap_pos[self._mocap_id] = self._target_pos
        d.mocap_quat[self._mocap_id] = _yaw_quat(self._target_yaw)
        d.ctrl[0] = (float(a[6]) + 1.0) * 0.5 * scene.FINGER_MAX
        mujoco.mj_step(m, d, nstep=scene.SUBSTEPS)
        self._steps += 1
        success = self._success()
        terminated = bool(success and cfg.terminate_on_success)
        truncated = bool(self._steps >= self._max_steps and not terminated)
        return self._observation(), float(success), terminated, truncated, self._info(success)

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """With ``render_mode="rgb_array"``: the front camera, (render_size, render_size, 3) uint8."""
        if self.render_mode is None:
            return None
        if self._big_renderer is None:
            s = self.config.render_size
            self._big_renderer = mujoco.Renderer(self.model, s, s)
            close_at_exit(self)
        self._big_renderer.update_scene(
            self.data, camera=self._camera_ids["front"], scene_option=self._scene_options["front"]
        )
        return self._big_renderer.render().copy()

    def render_camera(self, camera: str, size: int | None = None) -> np.ndarray:
        """One camera's image now, (size, size, 3) uint8 (default: ``config.image_size``)."""
        if camera not in self._camera_ids:
            raise ValueError(f"unknown camera {camera!r}; expected one of {CAMERAS}")
        if size is None or size == self.config.image_size:
            r = self._get_renderer()
        else:
            r = mujoco.Renderer(self.model, size, size)
        r.update_scene(self.data, camera=self._camera_ids[camera], scene_option=self._scene_options[camera])
        img = r.render().copy()
        if r is not self._renderer:
            r.close()
        return img

    def close(self) -> None:
        """Release the renderers (safe to call twice)."""
        for r in (self._renderer, self._big_renderer):
            if r is not None:
                r.close()
        self._renderer = None
        self._big_renderer = None

    # ------------------------------------------------------------------------------------------------
    # State read-outs (used by the scripted expert and the tests)
    # ------------------------------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        """Control steps taken in this episode."""
        return self._steps

    @property
    def max_steps(self) -> int:
        """This episode's time limit in control steps."""
        return self._max_steps

    def ee_state(self) -> np.ndarray:
        """float64 (5,) = [x, y, z, yaw, gripper_opening] (metres, radians; unclipped)."""
        d = self.data
        pos = d.xpos[self._hand_body]
        yaw = _quat_yaw(d.xquat[self._hand_body])
        opening = d.qpos[self._finger_l_qadr] + d.qpos[self._finger_r_qadr]
        return np.array([pos[0], pos[1], pos[2], yaw, opening])

    def hand_rotation(self) -> np.ndarray:
        """The hand's rotation matrix, (3, 3), columns = its axes in the world frame."""
        return self.data.xmat[self._hand_body].reshape(3, 3).copy()

    def object_position(self, obj: SceneObject) -> np.ndarray:
        """Centre of ``obj``, (3,) metres, world frame."""
        return self.data.xpos[obj.body_id].copy()

    def object_yaw(self, obj: SceneObject) -> float:
        """Rotation of ``obj`` about world z, radians in [-pi, pi]."""
        return _quat_yaw(self.data.xquat[obj.body_id])

    def object_rotation(self, obj: SceneObject) -> np.ndarray:
        """Rotation matrix of ``obj``, (3, 3)."""
        return self.data.xmat[obj.body_id].reshape(3, 3).copy()

    def is_pinched(self, obj: SceneObject) -> bool:
        """True when both finger pads touch ``obj`` from either side (pad normals along the closing axis)
        and its centre lies between the pads: the gripper holds it, read from the contacts."""
        d = self.data
        hand_y = d.xmat[self._hand_body].reshape(3, 3)[:, 1]
        touching = [False, False]
        for i in range(d.ncon):
            c = d.contact[i]
            g1, g2 = int(c.geom1), int(c.geom2)
            if obj.geom_id not in (g1, g2):
                continue
            other = g2 if g1 == obj.geom_id else g1
            if other not in self._finger_geoms or c.dist > 0.002:
                continue
            normal = c.frame[:3]
            if abs(float(normal @ hand_y)) > 0.7:
                touching[self._finger_geoms.index(other)] = True
        if not all(touching):
            return False
        rel = d.xpos[obj.body_id] - d.xpos[self._hand_body]
        local_y = float(rel @ hand_y)
        half_gap = 0.5 * (d.qpos[self._finger_l_qadr] + d.qpos[self._finger_r_qadr])
        return abs(local_y) <= half_gap + 0.005

    # ------------------------------------------------------------------------------------------------
    # Internals
    # ------------------------------------------------------------------------------------------------
    def _get_renderer(self) -> mujoco.Renderer:
        if self._renderer is None:
            s = self.config.image_size
            self._renderer = mujoco.Renderer(self.model, s, s)
            close_at_exit(self)
        return self._renderer

    def _observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = {}
        if self.config.cameras:
            r = self._get_renderer()
            for cam in self.config.cameras:
                r.update_scene(self.data, camera=self._camera_ids[cam], scene_option=self._scene_options[cam])
                obs[cam] = r.render().copy()
                if self._image_rng is not None:
                    obs[cam] = degrade_image(obs[cam], self.shift_state, self._image_rng)
        state = np.clip(self.ee_state(), STATE_LOW, STATE_HIGH).astype(np.float32)
        obs["state"] = state
        assert self.task is not None
        obs["instruction"] = self._given_instruction or self.task.instruction
        return obs

    def _info(self, success: bool) -> dict[str, Any]:
        assert self.task is not None
        return {
            "success": bool(success),
            "family": self.task.family,
            "instruction": self.task.instruction,
            "target": self.task.target_name,
            "split": self.config.split,
            "direction": self.task.direction,
            "base": None if self.task.base is None else f"{self.task.base[0]} {self.task.base[1]}",
            "steps": self._steps,
        }

    def _success(self) -> bool:
        task, target = self.task, self.target
        assert task is not None and target is not None
        pos = self.data.xpos[target.body_id]
        start = self.initial_positions[0]
        if task.family == "pick":
            return bool(pos[2] - start[2] >= LIFT_HEIGHT and self.is_pinched(target))
        if task.family == "push":
            sign = 1.0 if task.direction == "right" else -1.0
            moved = (pos[0] - start[0]) * sign
            return bool(
                moved >= PUSH_DISTANCE
                and abs(pos[2] - start[2]) < PUSH_MAX_DZ
                and not self.is_pinched(target)
            )
        # place
        base = self.base
        assert base is not None
        bpos = self.data.xpos[base.body_id]
        want_z = bpos[2] + base.half_extents[2] + target.half_extents[2]
        return bool(
            math.hypot(pos[0] - bpos[0], pos[1] - bpos[1]) <= PLACE_MAX_XY
            and abs(pos[2] - want_z) <= PLACE_DZ_TOL
            and not self.is_pinched(target)
            and not any(self.finger_contacts(target))
        )

    def goal_position(self) -> np.ndarray:
        """(3,) world position (m) the target's centre must reach for success: pick, ``LIFT_HEIGHT`` above
        its start; push, ``PUSH_DISTANCE`` from its start in the named direction; place, resting centred
        on the base (the base's centre raised by both half heights)."""
        task, target = self.task, self.target
        assert task is not None and target is not None
        start = self.initial_positions[0]
        if task.family == "pick":
            return start + np.array([0.0, 0.0, LIFT_HEIGHT])
        if task.family == "push":
            sign = 1.0 if task.direction == "right" else -1.0
            return start + np.array([sign * PUSH_DISTANCE, 0.0, 0.0])
        base = self.base
        assert base is not None
        bpos = self.data.xpos[base.body_id]
        return bpos + np.array([0.0, 0.0, base.half_extents[2] + target.half_extents[2]])

    def finger_contacts(self, obj: SceneObject) -> tuple[bool, bool]:
        """Whether each finger (left, right) touches ``obj`` at all."""
        d = self.data
        touching = [False, False]
        for i in range(d.ncon):
            c = d.contact[i]
            g1, g2 = int(c.geom1), int(c.geom2)
            if obj.geom_id in (g1, g2):
                other = g2 if g1 == obj.geom_id else g1
                if other in self._finger_geoms and c.dist <= 0.002:
                    touching[self._finger_geoms.index(other)] = True
        return (touching[0], touching[1])

    # ------------------------------------------------------------------------------------------------
    # Distribution shifts (mmvla.sim.tabletop.shift)
    # ------------------------------------------------------------------------------------------------
    def _restore_model(self) -> None:
        """Every model parameter a shift may change back to its compiled value (bit for bit)."""
        m = self.model
        for name, value in self._model_defaults.items():
            getattr(m, name)[...] = value
        m.geom_rgba[self._table_geom] = self._table_rgba
        m.vis.headlight.ambient[:] = self._headlight_defaults[0]
        m.vis.headlight.diffuse[:] = self._headlight_defaults[1]

    def _scale_object(self, obj: SceneObject, scale: float) -> None:
        """Scale one object's geometry by ``scale``, and its mass and inertia at constant density."""
        m = self.model
        m.geom_size[obj.geom_id] *= scale
        m.geom_rbound[obj.geom_id] *= scale
        m.geom_aabb[obj.geom_id] *= scale
        m.body_mass[obj.body_id] *= scale**3
        m.body_subtreemass[obj.body_id] *= scale**3
        m.body_inertia[obj.body_id] *= scale**5

    def _apply_scene_shift(self, shift: EpisodeShift) -> None:
        """The camera, lighting and table shifts, written into the model (restored at the next reset)."""
        m = self.model
        (axis, angle) = shift.camera_rotation
        if any(shift.camera_offset) or angle:
            c = self._front_cam
            m.cam_pos[c] = m.cam_pos[c] + np.asarray(shift.camera_offset)
            q = quat_mul(m.cam_quat[c], axis_angle_quat(np.asarray(axis), angle))  # in the camera's frame
            m.cam_quat[c] = q / np.linalg.norm(q)
        (tilt_axis, tilt) = shift.light_tilt
        if shift.light_scale != 1.0 or tilt or shift.light_kelvin != NOMINAL_K:
            gain = shift.light_scale * kelvin_rgb(shift.light_kelvin)  # (3,)
            li = self._top_light
            m.light_diffuse[li] = m.light_diffuse[li] * gain
            m.light_ambient[li] = m.light_ambient[li] * gain
            m.vis.headlight.ambient[:] = self._headlight_defaults[0] * gain
            m.vis.headlight.diffuse[:] = self._headlight_defaults[1] * gain
            if tilt:
                d0 = m.light_dir[li] / np.linalg.norm(m.light_dir[li])
                k = np.asarray(tilt_axis) - d0 * (
                    np.asarray(tilt_axis) @ d0
                )  # tilt about an axis normal to it
                m.light_dir[li] = rotate(d0, k / np.linalg.norm(k), tilt)
        if any(shift.table_rgb_offset):
            rgb = np.clip(self._table_rgba[:3] + np.asarray(shift.table_rgb_offset), 0.0, 1.0)
            m.geom_rgba[self._table_geom, :3] = rgb
            if shift.table_texture:
                m.geom_matid[self._table_geom] = self._checker_mat
                m.mat_rgba[self._checker_mat] = (*rgb, 1.0)

    def _add_distractors(
        self,
        task: TaskSpec,
        combos: list[tuple[str, str]],
        poses: list[tuple[float, float, float]],
        count: int,
        scale: float,
    ) -> list[tuple[tuple[str, str], tuple[float, float, float]]]:
        """Up to ``count`` more distractors (distinct compositions of the split's pool) placed around the
        episode's layout, drawn from the distractor shift's own generator: ``MIN_GAP`` + the larger radius
        from the target (and the place base), footprint circles ``DISTRACTOR_CLEARANCE`` apart from the
        other objects, the push corridor kept clear; fewer when ``DISTRACTOR_TRIES`` random spots find no
        room (the table is full)."""
        assert self._shift_seed is not None
        rng = shift_rng(self._shift_seed, self._shift_episode, SHIFT_AXES.index("distractors"))
        chosen = list(combos)
        placed = list(poses)
        radii = [scene.SHAPE_RADIUS[s] * scale for _, s in chosen]
        keep_clear = 2 if task.family == "place" else 1  # the target (and the base) keep the full gap
        out: list[tuple[tuple[str, str], tuple[float, float, float]]] = []
        for _ in range(min(count, MAX_OBJECTS - len(chosen))):
            pool = [c for c in combos_for_split(self.config.split, "distractor") if c not in chosen]
            if not pool:
                break
            combo = pool[int(rng.integers(len(pool)))]
            r = scene.SHAPE_RADIUS[combo[1]] * scale
            for _ in range(DISTRACTOR_TRIES):
                x = float(rng.uniform(*DISTRACTOR_X))
                y = float(rng.uniform(*DISTRACTOR_Y))
                if all(
                    math.hypot(x - px, y - py)
                    >= (MIN_GAP + max(r, radii[j]) if j < keep_clear else DISTRACTOR_CLEARANCE + r + radii[j])
                    for j, (px, py, _) in enumerate(placed)
                ) and (task.family != "push" or self._corridor_clear(task, placed[0], radii[0], x, y, r)):
                    pose = (x, y, float(rng.uniform(-math.pi, math.pi)))
                    chosen.append(combo)
                    placed.append(pose)
                    radii.append(r)
                    out.append((combo, pose))
                    break
            else:
                break
        return out

    def _set_given_instruction(self) -> None:
        """The instruction the observation carries: the language shift's wording, else canonical."""
        assert self.task is not None and self._shift_seed is not None
        language_set = self.shift_state.language_set
        if language_set == "canonical":
            self._given_instruction = None
            return
        rng = shift_rng(self._shift_seed, self._shift_episode, SHIFT_AXES.index("language"))
        # lower-cased: the observation space's charset has no capitals (policies lower-case input anyway)
        self._given_instruction = shifted_wording(self.task.instruction, language_set, rng).lower()

    @property
    def given_instruction(self) -> str:
        """The instruction in the observation (a held-out wording under the language shift)."""
        assert self.task is not None
        return self._given_instruction or self.task.instruction

    def _choose_task(self, rng: np.random.Generator, options: dict[str, Any]) -> TaskSpec:
        cfg = self.config
        if options.get("instruction") is not None:
            task = parse_instruction(str(options["instruction"]))
            if task.family not in cfg.families:
                raise ValueError(
                    f"instruction {task.instruction!r} is a {task.family} task; env families are {cfg.families}"
                )
            if not task.in_split(cfg.split):
                raise ValueError(f"instruction {task.instruction!r} is not in split {cfg.split!r}")
            return task
        family = options.get("family")
        if family is None:
            family = cfg.families[int(rng.integers(len(cfg.families)))]
        elif family not in cfg.families:
            raise ValueError(f"unknown family {family!r}; this env draws from {cfg.families}")
        targets = combos_for_split(cfg.split, "target")
        target = targets[int(rng.integers(len(targets)))]
        if family == "pick":
            return TaskSpec("pick", target)
        if family == "push":
            return TaskSpec("push", target, direction=("left", "right")[int(rng.integers(2))])
        # In train the distractor pool already excludes every held-out composition.
        bases = [c for c in combos_for_split(cfg.split, "distractor") if c != target and c[1] in PLACE_BASES]
        return TaskSpec("place", target, base=bases[int(rng.integers(len(bases)))])

    def _choose_objects(self, rng: np.random.Generator, task: TaskSpec, n: int) -> list[tuple[str, str]]:
        """Combos on the table: target first (then the base for place), then a same-colour and a
        same-shape distractor, then random distinct extras. No composition appears twice.

        Place (:func:`_place_objects`): target, base, then distractors such that each of the two
        named objects has one that shares its colour or its shape."""
        split = self.config.split
        pool = list(combos_for_split(split, "distractor"))
        if task.base is not None:
            return _place_objects(rng, pool, task.target, task.base, n)
        chosen: list[tuple[str, str]] = [task.target]
        colour, shape = task.target

        def pick(cands: list[tuple[str, str]]) -> None:
            cands = [c for c in cands if c not in chosen]
            if cands:
                chosen.append(cands[int(rng.integers(len(cands)))])

        if not any(c[0] == colour for c in chosen[1:]):
            pick([c for c in pool if c[0] == colour and c[1] != shape])
        if not any(c[1] == shape for c in chosen[1:]):
            pick([c for c in pool if c[1] == shape and c[0] != colour])
        while len(chosen) < n:
            pick(pool)
        return chosen

    def _choose_layout(
        self, rng: np.random.Generator, task: TaskSpec, combos: list[tuple[str, str]]
    ) -> list[tuple[float, float, float]]:
        """(x, y, yaw) per object: footprints apart by MIN_GAP, and for push a clear corridor."""
        radii = [scene.SHAPE_RADIUS[s] for _, s in combos]
        for _ in range(1000):
            poses: list[tuple[float, float, float]] = []
            ok = True
            for i, r in enumerate(radii):
                for _ in range(100):
                    x = float(rng.uniform(*OBJECT_X))
                    y = float(rng.uniform(*OBJECT_Y))
                    if all(
                        math.hypot(x - px, y - py) >= MIN_GAP + max(r, radii[j])
                        for j, (px, py, _) in enumerate(poses)
                    ) and (
                        i == 0
                        or task.family != "push"
                        or self._corridor_clear(task, poses[0], radii[0], x, y, r)
                    ):
                        if i == 0 and task.family == "push" and not self._push_room(task, x):
                            continue
                        poses.append((x, y, float(rng.uniform(-math.pi, math.pi))))
                        break
                else:
                    ok = False
                    break
            if ok:
                return poses
        raise RuntimeError("could not lay out the objects; the workspace is too small for this many")

    @staticmethod
    def _push_room(task: TaskSpec, x: float) -> bool:
        sign = 1.0 if task.direction == "right" else -1.0
        return abs(x + sign * (PUSH_DISTANCE + 0.03)) <= OBJECT_X[1] + 0.05

    @staticmethod
    def _corridor_clear(
        task: TaskSpec, target: tuple[float, float, float], rt: float, x: float, y: float, r: float
    ) -> bool:
        sign = 1.0 if task.direction == "right" else -1.0
        along = (x - target[0]) * sign
        if abs(y - target[1]) >= rt + r + 0.02:
            return True
        return not (-(rt + r + 0.06) <= along <= rt + r + PUSH_DISTANCE + 0.05)
