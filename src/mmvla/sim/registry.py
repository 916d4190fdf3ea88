"""Environments by name: one place that builds an environment, its expert and its dataset schema.

``collect`` and ``eval`` (library and CLI) take ``env=NAME``; everything environment-specific they need
comes from here, so adding a simulator does not touch them::

    cfg = env_config("metaworld-mt10", cameras=None, image_size=64)   # validated, JSON-able (to_dict)
    env = make_env("metaworld-mt10", cameras=("corner4",), image_size=64)
    expert = make_expert("metaworld-mt10", env, noise_std=0.1, seed=0)  # reset(), act(obs), last_clean_action

``"tabletop"`` is :class:`mmvla.sim.tabletop.env.TabletopEnv` (the default everywhere); ``"metaworld-mt10"`` is
:class:`mmvla.sim.metaworld.env.MetaWorldMT10Env` (needs ``pip install 'mmvla[metaworld]'``; Meta-World is
imported only when that environment is built).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from mmvla.core.keys import (
    ACTION_NAMES,
    ENV_NAMES,
    METAWORLD_ENV_STATE,
    ROBOT_TYPE,
    STATE_NAMES,
    TABLETOP_ENV_STATE,
)


class Expert(Protocol):
    """What the recorder needs from a scripted expert."""

    last_clean_action: np.ndarray

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, obs: Any = None) -> np.ndarray: ...


@dataclass(frozen=True)
class DatasetSchema:
    """What a dataset of an environment records: feature names, robot type, frames per second."""

    state_names: tuple[str, ...]
    action_names: tuple[str, ...]
    robot_type: str
    fps: int
    env_state_names: tuple[str, ...] = ()  # privileged per-frame state (observation.environment_state)


def check_env_name(name: str) -> str:
    """``name`` if it is a known environment; ValueError naming the known ones otherwise."""
    if name not in ENV_NAMES:
        raise ValueError(f"unknown environment {name!r}; expected one of {', '.join(ENV_NAMES)}")
    return name


def default_cameras(name: str) -> tuple[str, ...]:
    """Cameras recorded when none are named: tabletop front + wrist, Meta-World corner4."""
    if check_env_name(name) == "tabletop":
        return ("front", "wrist")
    from mmvla.sim.metaworld.env import DEFAULT_CAMERAS

    return DEFAULT_CAMERAS


def default_families(name: str) -> tuple[str, ...]:
    """Task families (Meta-World: tasks) drawn when none are named: tabletop pick + push, all of MT10."""
    if check_env_name(name) == "tabletop":
        return ("pick", "push")
    from mmvla.sim.metaworld.env import MT10_TASKS

    return MT10_TASKS


def env_config(
    name: str,
    *,
    cameras: Sequence[str] | None = None,
    image_size: int = 64,
    split: str = "train",
    families: Sequence[str] | None = None,
    max_steps: int | None = None,
    **options: Any,
) -> Any:
    """The validated config of environment ``name`` (``TabletopConfig`` or ``MetaWorldConfig``).

    ``cameras``/``families`` None: the environment's defaults; ``max_steps`` None: its own time limit;
    ``options``: further config fields (e.g. Meta-World's ``variations``, ``action_dim``).
    Builds no simulator and imports no Meta-World.
    """
    cams = tuple(default_cameras(name) if cameras is None else cameras)
    fams = tuple(default_families(name) if families is None else families)
    if name == "tabletop":
        from mmvla.sim.tabletop.config import TabletopConfig

        return TabletopConfig(
            cameras=cams, image_size=image_size, split=split, families=fams, max_steps=max_steps, **options
        )
    from mmvla.sim.metaworld.env import MetaWorldConfig

    if max_steps is not None:
        options["max_steps"] = max_steps
    return MetaWorldConfig(tasks=fams, cameras=cams, image_size=image_size, split=split, **options)


def make_env(name: str, config: Any = None, **kwargs: Any) -> Any:
    """Build environment ``name`` from ``config`` (from :func:`env_config`) or :func:`env_config`'s kwargs."""
    if config is None:
        config = env_config(name, **kwargs)
    elif kwargs:
        raise ValueError("make_env: pass either a config or keyword arguments, not both")
    if check_env_name(name) == "tabletop":
        from mmvla.sim.tabletop.env import TabletopEnv

        return TabletopEnv(config)
    from mmvla.sim.metaworld.env import MetaWorldMT10Env

    return MetaWorldMT10Env(config)


def make_expert(name: str, env: Any, noise_std: float = 0.0, seed: int | None = None) -> Expert:
    """The scripted expert of environment ``name`` acting in ``env`` (its label: ``last_clean_action``)."""
    if check_env_name(name) == "tabletop":
        from mmvla.sim.tabletop.expert import ScriptedExpert

        return ScriptedExpert(env, noise_std=noise_std, seed=seed)
    from mmvla.sim.metaworld.env import MetaWorldExpert

    return MetaWorldExpert(env, noise_std=noise_std, seed=seed)


def dataset_schema(name: str, config: Any) -> DatasetSchema:
    """Feature names, robot type and fps of a dataset recorded in ``name`` with ``config``."""
    if check_env_name(name) == "tabletop":
        from mmvla.sim.tabletop.scene import CONTROL_DT

        return DatasetSchema(
            STATE_NAMES, ACTION_NAMES, ROBOT_TYPE, round(1.0 / CONTROL_DT), TABLETOP_ENV_STATE
        )
    from mmvla.sim.metaworld import env as mw

    return DatasetSchema(
        tuple(config.state_names),
        tuple(config.action_names),
        mw.ROBOT_TYPE,
        mw.CONTROL_HZ,
        METAWORLD_ENV_STATE,
    )


def environment_state(name: str, env: Any) -> np.ndarray | None:
    """Privileged state recorded per frame for auxiliary losses (``observation.environment_state``).

    Tabletop, float32 (5,): the named object's centre relative to the grasp point (metres, world axes),
    then its yaw relative to the hand's as (cos, sin) of ``period_factor * (object_yaw - hand_yaw)``
    with the factor 4 for cubes and 2 for slabs (their footprints' symmetry), so every grasp the shape
    allows maps to (1, 0) and the target is continuous in both yaws; cylinders are always (1, 0).
    Relative, not absolute: the grasp point and yaw are in the proprioceptive state, so an absolute
    target would let a network answer "where the hand is" (the expert's hand sits on the target in most
    frames) without looking. The yaw term asks the encoder for the object's orientation, which most
    failed grasps got wrong (docs/findings.md).

    Meta-World, float32 (6,): the task's main object (Meta-World's ``obs[4:7]``: the puck, the peg, the
    door/drawer/window handle, the button) and its goal (``obs[36:39]``), each relative to the hand
    (``obs[:3]``), metres, world axes. Neither is in the policy's observation; the goal of reach, push and
    pick-place is only visible as its marker.
    """
    if check_env_name(name) != "tabletop":
        mw_obs = env.unwrapped.mw_obs  # (39,) Meta-World's full observation, goal included
        hand = mw_obs[:3]
        return np.asarray([*(mw_obs[4:7] - hand), *(mw_obs[36:39] - hand)], dtype=np.float32)
    from mmvla.sim.tabletop import scene

    sim = env.unwrapped
    target = sim.target
    ee = sim.ee_state()
    period = scene.SHAPE_YAW_PERIOD[target.shape]
    rel = (2 * np.pi / period) * (sim.object_yaw(target) - ee[3]) if period else 0.0
    return np.asarray([*(sim.object_position(target) - ee[:3]), np.cos(rel), np.sin(rel)], dtype=np.float32)


def check_rendered(obs: Mapping[str, Any], cameras: Sequence[str]) -> None:
    """RuntimeError when a camera's frame is one flat colour: the renderer returned nothing (a broken
    OpenGL/EGL set-up renders black frames without an error), and data or evaluations made from such
    frames are silently blind. Call it on an episode's first observation."""
    import os

    for cam in cameras:
        frame = np.asarray(obs[cam])
        if frame.size and int(frame.max()) == int(frame.min()):
            raise RuntimeError(
                f"camera {cam!r} rendered a uniform frame (every pixel {int(frame.max())}): the renderer "
                f"is not drawing (MUJOCO_GL={os.environ.get('MUJOCO_GL', '<unset>')!s}; check that an EGL "
                "or OSMesa library and its vendor files are installed)"
            )


def canonical_instructions(name: str, split: str = "train") -> tuple[str, ...]:
    """Every canonical instruction environment ``name`` can give in ``split``."""
    if check_env_name(name) == "tabletop":
        from mmvla.sim.tabletop.tasks import all_instructions

        return tuple(all_instructions(split))
    from mmvla.sim.metaworld.env import all_instructions as mw_instructions

    return mw_instructions()


def wrong_instruction_pool(name: str, split: str, canonical: str) -> list[str]:
    """Instructions for the language-blind control: same verb, other object (tabletop); another task
    (Meta-World)."""
    pool = canonical_instructions(name, split)
    if name == "tabletop":
        verb = canonical.split()[0]
        return [s for s in pool if s != canonical and s.split()[0] == verb]
    return [s for s in pool if s != canonical]


def episode_extra(info: Mapping[str, Any]) -> dict[str, str | int]:
    """Per-episode metadata an environment reports beyond family/split/seed (tabletop: target;
    Meta-World: goal variation)."""
    out: dict[str, str | int] = {}
    if "target" in info:
        out["target"] = str(info["target"])
    if "variation" in info:
        out["variation"] = int(info["variation"])
    return out
