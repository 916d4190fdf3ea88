"""Meta-World MT10 and MT50 behind the tabletop's observation/action interface (optional extra ``mmvla[metaworld]``).

The ten MT10 tasks or all fifty MT50 tasks (Meta-World 3.1.1, v3 environments; ``config.suite``) become one
Gymnasium environment, :class:`MetaWorldEnv`, whose observations and actions look like
:class:`mmvla.sim.tabletop.env.TabletopEnv`'s, so ``mmvla collect / train / eval --env metaworld-mt10``
(or ``metaworld-mt50``) run the same code as the tabletop.

Observation (``gymnasium.spaces.Dict``):
    ``"corner4"`` (the cameras in ``config.cameras``): uint8 images, (H, W, 3), upright. Meta-World's
        ``corner*`` cameras render upside down (the camera is rolled by 180 degrees), so their images are
        rotated back (``img[::-1, ::-1]``; a rotation, not a mirror). Rendered headless (``MUJOCO_GL=egl``)
        with our own ``mujoco.Renderer``, shadows and multisampling off.
    ``"state"``: float32 (4,) = [x, y, z, gripper]: the hand position (Meta-World's end-effector body,
        metres, world frame: +x to the robot's right, +y away from its base, z up, table top at z = 0)
        and the gripper opening (finger distance / 0.1 m, clipped to [0, 1]: 0 closed, 1 open); that is
        Meta-World's own proprioception, ``obs[:4]``. Objects and goals are not in the state: the policy
        must find them in the image. (Datasets record them, relative to the hand, as the privileged
        ``observation.environment_state`` for an auxiliary loss: :func:`mmvla.sim.registry.environment_state`.)
    ``"instruction"``: the task's canonical instruction (:data:`TASK_INSTRUCTIONS`).

Action: float32 (4,) in [-1, 1] = [dx, dy, dz, gripper] (``config.action_dim = 4``, the default):
    dx, dy, dz: the hand's mocap target moves by ``action * 0.01`` m (Meta-World's ``action_scale``), world
        frame, once per control step (12.5 ms: 5 substeps of 2.5 ms, 80 Hz);
    gripper: the fingers' position target, our convention: +1 = open, -1 = closed (Meta-World's sign is
        the opposite: its ``action[3] = +1`` closes, so it receives ``-gripper``).
    With ``config.action_dim = 7`` the action is the tabletop's layout [dx, dy, dz, droll, dpitch, dyaw,
    gripper]: the three rotations are ignored (the Sawyer's hand always points down) and recorded as 0.

Tasks, goals and seeds: ``reset(seed=s)`` picks task ``config.tasks[s % n]`` (``options={"family": task}``
or ``{"instruction": text}`` overrides it) and the task's goal variation ``(s // n) % config.variations``.
Variation ``v`` of a task is Meta-World's own goal/object sampler (``_get_state_rand_vec`` with its rejection
loops) seeded from ``(config.variation_seed, task index in MT50_TASKS, v)``: like ``metaworld.MT10`` (50 fixed variations
per task; the same distribution, not the same numbers). ``variations=None`` draws a fresh variation from
every episode seed instead (held-out goals). Everything else is deterministic: Meta-World's hand always
starts at the task's ``hand_init_pos``.

The goal of reach, push and pick-place is a free-floating marker; Meta-World draws it as a 2 cm sphere,
about one pixel at 64². ``config.goal_marker_radius`` (default 3 cm) enlarges it so the policy can see it;
None keeps Meta-World's look. It is a site, so physics is unchanged.

Episodes end with ``terminated=True`` at the first success (``info["success"]``: Meta-World's own success
test; push, door-open and peg-insert drift out of success when continued) and ``truncated=True`` at
``config.max_steps``. ``info``: ``success`` (bool), ``family`` (the task name, e.g. ``"push-v3"``, so
evaluation groups by task), ``instruction``, ``variation``, ``split`` ("train": MT10 trains and tests on
the same tasks), ``reward`` (Meta-World's dense reward).

The expert is Meta-World's own scripted policy for the task (:class:`MetaWorldExpert`); it reads the full
Meta-World observation (object and goal positions) from the environment, never from our observation.

Command line (the policy's widths differ from the tabletop's, so training takes a small config)::

    mmvla collect --env metaworld-mt10 --out data/mt10 --episodes 1000 --workers 2   # 100 per task
    echo '{"policy": {"cameras": ["corner4"], "state_dim": 4, "action_dim": 4, "camera_dropout": 0.0,
           "head": {"kind": "regression", "chunk_size": 8, "loss": "l1"}, "aux_state_weight": 1.0}}' > mt10.json
    mmvla train --data data/mt10 --out runs/mt10 --config mt10.json --steps 20000
    mmvla eval --env metaworld-mt10 --checkpoint runs/mt10/policy --episodes 500 --out runs/mt10/eval

``benchmarks/metaworld.py`` runs that chain at a stated budget, with the expert reference.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from mmvla.sim.exit import close_at_exit
from mmvla.sim.metaworld.config import (
    CAMERAS,
    CONTROL_HZ,
    GOAL_MARKER_TASKS,
    HAND_HIGH,
    HAND_LOW,
    INSTALL_HINT,
    INSTRUCTION_CHARSET,
    INSTRUCTION_MAX_LENGTH,
    MT10_TASKS,
    MW_MAX_PATH_LENGTH,
    TASK_INSTRUCTIONS,
    UPSIDE_DOWN_CAMERAS,
    MetaWorldConfig,
    canonical_task,
    instruction_to_task,
    mt50_config,
)


def _import_metaworld() -> Any:
    """Import Meta-World (and its policies) lazily, with an install hint when it is absent."""
    # Headless rendering by default: set before the first `import mujoco` (Meta-World's own).
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:  # function-local: Meta-World is optional (pip install 'mmvla[metaworld]')
        import metaworld
        import metaworld.policies
    except ImportError as e:  # metaworld, or one of its undeclared dependencies (packaging)
        raise ImportError(f"Meta-World environments need Meta-World 3.1.1: {INSTALL_HINT} ({e})") from e
    return metaworld


def metaworld_available() -> bool:
    """True when Meta-World can be imported."""
    try:
        _import_metaworld()
    except ImportError:
        return False
    return True


LEROBOT_CORNER2_POS = (0.75, 0.075, 0.7)  # LeRobot's Meta-World corner2 camera position, metres


def orient_image(camera: str, image: np.ndarray) -> np.ndarray:
    """Turn a raw render of ``camera`` upright: the ``corner*`` cameras are rotated by 180 degrees."""
    return image[::-1, ::-1] if camera in UPSIDE_DOWN_CAMERAS else image


class MetaWorldEnv(gym.Env[dict[str, Any], np.ndarray]):
    """The MT10 or MT50 tasks of Meta-World with the tabletop's observation/action interface (see the
    module doc).

    Construct with a :class:`MetaWorldConfig` or its fields as keyword arguments (keywords override the
    config's fields when both are given). One Meta-World environment per task is built on first use and
    kept; each has its own renderer.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}  # noqa: RUF012

    def __init__(
        self, config: MetaWorldConfig | None = None, *, render_mode: str | None = None, **kwargs: Any
    ) -> None:
        _import_metaworld()
        if config is None:
            config = MetaWorldConfig(**kwargs)
        elif kwargs:
            config = replace(config, **kwargs)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"unknown render_mode {render_mode!r}; expected None or 'rgb_array'")
        self.config = config
        self.render_mode = render_mode
        size = config.image_size
        obs_spaces: dict[str, spaces.Space[Any]] = {
            cam: spaces.Box(0, 255, (size, size, 3), np.uint8) for cam in config.cameras
        }
        obs_spaces["state"] = spaces.Box(
            np.array([*HAND_LOW, 0.0], np.float32), np.array([*HAND_HIGH, 1.0], np.float32), (4,), np.float32
        )
        obs_spaces["instruction"] = spaces.Text(
            max_length=INSTRUCTION_MAX_LENGTH, min_length=1, charset=INSTRUCTION_CHARSET
        )
        self.observation_space = spaces.Dict(obs_spaces)
        self.action_space = spaces.Box(-1.0, 1.0, (config.action_dim,), np.float32)
        self._envs: dict[str, Any] = {}  # task -> Meta-World SawyerXYZEnv
        self._renderers: dict[tuple[str, int], Any] = {}  # (task, size) -> mujoco.Renderer
        # Episode state.
        self.task: str | None = None
        self.variation: int | None = None
        self.mw_obs = np.zeros(39)  # Meta-World's full observation (goal included), for the expert
        self._steps = 0
        self._success = False
        self._reward = 0.0

    # ------------------------------------------------------------------------------------------------
    # Gymnasium API
    # ------------------------------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode. ``options``: ``family`` (a task name) or ``instruction`` (any phrasing of a
        task); both must name one of ``config.tasks``. Without a seed, one is drawn from ``np_random``."""
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"family", "instruction"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; expected 'family', 'instruction'")
        if seed is None:
            seed = int(self.np_random.integers(2**31 - 1))
        cfg = self.config
        task = cfg.task_for_seed(seed)
        if "instruction" in options:
            task = instruction_to_task(str(options["instruction"]))
        elif options.get("family") is not None:
            task = canonical_task(str(options["family"]))
        if task not in cfg.tasks:
            raise ValueError(f"task {task!r} is not in this environment's tasks {cfg.tasks}")
        env = self._env(task)
        env.seed(cfg.sampler_seed(task, seed))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obs, _ = env.reset()
        self.mw_obs = np.asarray(obs, dtype=np.float64)
        self.task = task
        self.variation = cfg.variation_for_seed(seed)
        self._steps = 0
        self._reward = 0.0
        self._success = False
        return self._observation(), self._info()

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        """Apply one action (see the module docstring) for one 12.5 ms control step."""
        if self.task is None:
            raise RuntimeError("call reset() before step()")
        if self._steps >= self.config.max_steps:
            raise RuntimeError("the episode is over (time limit): call reset()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (self.config.action_dim,):
            raise ValueError(f"action must have shape ({self.config.action_dim},), got {np.shape(action)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {a}")
        mw_action = to_metaworld_action(np.clip(a, -1.0, 1.0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obs, reward, _, _, info = self._envs[self.task].step(mw_action)
        self.mw_obs = np.asarray(obs, dtype=np.float64)
        self._reward = float(reward)
        self._steps += 1
        self._success = bool(info.get("success", 0.0))
        terminated = bool(self._success and self.config.terminate_on_success)
        truncated = bool(self._steps >= self.config.max_steps and not terminated)
        return self._observation(), float(self._success), terminated, truncated, self._info()

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """With ``render_mode="rgb_array"``: the first camera (corner4 if none), (render_size,)*2 + (3,)."""
        if self.render_mode is None:
            return None
        cam = self.config.cameras[0] if self.config.cameras else "corner4"
        return self.render_camera(cam, self.config.render_size)

    def render_camera(self, camera: str, size: int | None = None) -> np.ndarray:
        """One camera's image now, upright, (size, size, 3) uint8 (default size: ``config.image_size``)."""
        if self.task is None:
            raise RuntimeError("call reset() before rendering")
        if camera not in CAMERAS:
            raise ValueError(f"unknown Meta-World camera {camera!r}; expected one of {CAMERAS}")
        size = self.config.image_size if size is None else size
        r = self._renderer(self.task, size)
        r.update_scene(self._envs[self.task].data, camera=camera)
        return np.ascontiguousarray(orient_image(camera, r.render()))

    def close(self) -> None:
        """Release the renderers and Meta-World environments (safe to call twice)."""
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()
        for env in self._envs.values():
            env.close()
        self._envs.clear()
        self.task = None

    # ------------------------------------------------------------------------------------------------
    # Read-outs
    # ------------------------------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        """Control steps taken in this episode."""
        return self._steps

    @property
    def max_steps(self) -> int:
        """This episode's time limit in control steps."""
        return self.config.max_steps

    @property
    def instruction(self) -> str:
        """The current task's canonical instruction."""
        if self.task is None:
            raise RuntimeError("call reset() first")
        return TASK_INSTRUCTIONS[self.task][0]

    @property
    def metaworld_env(self) -> Any:
        """The current task's Meta-World environment (``SawyerXYZEnv``)."""
        if self.task is None:
            raise RuntimeError("call reset() first")
        return self._envs[self.task]

    def state(self) -> np.ndarray:
        """float32 (4,) = [x, y, z, gripper opening] (Meta-World's ``obs[:4]``)."""
        return self.mw_obs[:4].astype(np.float32)

    # ------------------------------------------------------------------------------------------------
    def _env(self, task: str) -> Any:
        """Build (once) the Meta-World environment of ``task``, goal visible to the expert."""
        if task not in self._envs:
            from metaworld.env_dict import ALL_V3_ENVIRONMENTS  # optional: imported by _import_metaworld

            env = ALL_V3_ENVIRONMENTS[task]()
            env._set_task_called = True  # we drive the goal sampler ourselves (see sampler_seed)
            env._freeze_rand_vec = False
            env.seeded_rand_vec = True
            env._partially_observable = False  # the expert reads the goal from obs[-3:]
            env.__dict__.pop("sawyer_observation_space", None)  # cached with the goal hidden: recompute
            env.max_path_length = MW_MAX_PATH_LENGTH
            m = env.model
            m.vis.quality.shadowsize = 0  # before any renderer exists: shadows cost ~45 ms a frame
            m.vis.quality.offsamples = 0
            if self.config.goal_marker_radius is not None and task in GOAL_MARKER_TASKS:
                m.site_size[m.site("goal").id][0] = self.config.goal_marker_radius
            if self.config.lerobot_camera:
                m.cam_pos[m.camera("corner2").id] = LEROBOT_CORNER2_POS
            self._envs[task] = env
        return self._envs[task]

    def _renderer(self, task: str, size: int) -> Any:
        key = (task, size)
        if key not in self._renderers:
            import mujoco  # MuJoCo: imported (after Meta-World) only once a camera is rendered

            self._renderers[key] = mujoco.Renderer(self._envs[task].model, size, size)
            close_at_exit(self)
        return self._renderers[key]

    def _observation(self) -> dict[str, Any]:
        obs: dict[str, Any] = {cam: self.render_camera(cam) for cam in self.config.cameras}
        obs["state"] = self.state()
        obs["instruction"] = self.instruction
        return obs

    def _info(self) -> dict[str, Any]:
        return {
            "success": self._success,
            "family": self.task,
            "instruction": self.instruction,
            "variation": -1 if self.variation is None else self.variation,
            "split": self.config.split,
            "reward": self._reward,
        }


# ----------------------------------------------------------------------------------------------------
# Action mapping
# ----------------------------------------------------------------------------------------------------


def to_metaworld_action(action: np.ndarray) -> np.ndarray:
    """Our action, (4,) [dx, dy, dz, gripper] or (7,) tabletop layout, +1 = open -> Meta-World's (4,)
    [dx, dy, dz, grab effort] with +1 = close. Values are not clipped here."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape == (4,):
        return np.array([a[0], a[1], a[2], -a[3]])
    if a.shape == (7,):
        return np.array([a[0], a[1], a[2], -a[6]])
    raise ValueError(f"action must have shape (4,) or (7,), got {a.shape}")


def from_metaworld_action(mw_action: np.ndarray, action_dim: int = 4) -> np.ndarray:
    """Meta-World's (4,) action -> ours, float32 (action_dim,) clipped to [-1, 1] as Meta-World applies it."""
    m = np.clip(np.asarray(mw_action, dtype=np.float64).reshape(-1), -1.0, 1.0)
    if m.shape != (4,):
        raise ValueError(f"Meta-World actions have shape (4,), got {m.shape}")
    if action_dim == 4:
        return np.array([m[0], m[1], m[2], -m[3]], dtype=np.float32)
    if action_dim == 7:
        return np.array([m[0], m[1], m[2], 0.0, 0.0, 0.0, -m[3]], dtype=np.float32)
    raise ValueError(f"action_dim must be 4 or 7, got {action_dim}")


# ----------------------------------------------------------------------------------------------------
# Expert
# ----------------------------------------------------------------------------------------------------


class MetaWorldExpert:
    """Meta-World's scripted policy for the current task (``metaworld.policies.ENV_POLICY_MAP``), mapped
    into our action space.

    Args:
        env: a :class:`MetaWorldEnv` (wrapped or not).
        noise_std: standard deviation of Gaussian noise added to the executed action (action units; the
            ignored rotation entries of a 7-D action stay 0).
        seed: seed of the noise generator.

    Usage (the same as the tabletop's :class:`~mmvla.sim.tabletop.expert.ScriptedExpert`)::

        expert = MetaWorldExpert(env, noise_std=0.1, seed=0)
        obs, info = env.reset(seed=0)
        expert.reset()
        action = expert.act(obs)          # execute this
        label = expert.last_clean_action  # record this
    """

    def __init__(self, env: gym.Env[Any, Any], noise_std: float = 0.0, seed: int | None = None) -> None:
        unwrapped = env.unwrapped
        if not isinstance(unwrapped, MetaWorldEnv):
            raise TypeError(f"MetaWorldExpert needs a MetaWorldEnv, got {type(unwrapped).__name__}")
        if not (np.isfinite(noise_std) and noise_std >= 0):
            raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std}")
        from metaworld.policies import ENV_POLICY_MAP  # optional: imported by _import_metaworld

        self.env: MetaWorldEnv = unwrapped
        self.noise_std = float(noise_std)
        self._rng = np.random.default_rng(seed)
        self._policy_map: dict[str, Any] = dict(ENV_POLICY_MAP)
        self._policies: dict[str, Any] = {}
        dim = self.env.config.action_dim
        self._noise_mask = np.ones(dim, np.float32)
        if dim == 7:
            self._noise_mask[3:6] = 0.0
        self.last_clean_action = np.zeros(dim, np.float32)

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode (reseeds the noise generator when ``seed`` is given)."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.last_clean_action = np.zeros(self.env.config.action_dim, np.float32)

    def clean_action(self) -> np.ndarray:
        """The noise-free expert action now, float32 (action_dim,) in [-1, 1] (our convention)."""
        task = self.env.task
        if task is None:
            raise RuntimeError("reset the environment before asking the expert for an action")
        if task not in self._policies:
            self._policies[task] = self._policy_map[task]()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Constant(s) may be too high": Meta-World clips, so do we
            mw_action = self._policies[task].get_action(self.env.mw_obs)
        return from_metaworld_action(mw_action, self.env.config.action_dim)

    def act(self, obs: Any = None) -> np.ndarray:
        """Action to execute now: the clean action plus noise (if any), clipped to [-1, 1].

        ``obs`` is accepted for API symmetry with a policy; the expert reads Meta-World's full observation.
        """
        clean = self.clean_action()
        self.last_clean_action = clean
        if self.noise_std <= 0:
            return clean.copy()
        noise = self._rng.normal(0.0, self.noise_std, size=clean.shape).astype(np.float32) * self._noise_mask
        return np.clip(clean + noise, -1.0, 1.0).astype(np.float32)


def run_expert_episode(
    env: MetaWorldEnv,
    seed: int,
    task: str | None = None,
    noise_std: float = 0.0,
) -> tuple[bool, int]:
    """Run the expert for one episode through the adapter: (success, steps). ``task`` overrides the seed's."""
    obs, _ = env.reset(seed=seed, options={"family": task} if task else None)
    expert = MetaWorldExpert(env, noise_std=noise_std, seed=seed)
    while True:
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        if terminated or truncated:
            return bool(info["success"]), env.steps


def task_instruction_pairs(tasks: Sequence[str] = MT10_TASKS) -> Mapping[str, str]:
    """Canonical instruction -> task for ``tasks`` (for tables and the wrong-instruction control)."""
    return {TASK_INSTRUCTIONS[canonical_task(t)][0]: canonical_task(t) for t in tasks}


def make_mt50_env(
    config: MetaWorldConfig | None = None, *, render_mode: str | None = None, **fields: Any
) -> MetaWorldEnv:
    """All fifty MT50 tasks under the peers' protocol (:func:`~mmvla.sim.metaworld.config.mt50_config`;
    ``fields`` override it); the entry point of ``gym.make("mmvla/MetaWorld-MT50-v0")``."""
    config = mt50_config(**fields) if config is None else replace(config, **fields)
    return MetaWorldEnv(config, render_mode=render_mode)


#: The class's name before MT50 (kept: the Gymnasium entry point and user code may name it).
MetaWorldMT10Env = MetaWorldEnv
