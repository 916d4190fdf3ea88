"""Environments by name: one :class:`~mmvla.sim.spec.EnvSpec` per name in :data:`mmvla.core.keys.ENV_NAMES`.

``collect``, ``eval``, the diagnostics and the contrastive evaluation set take ``env=NAME``; everything
environment-specific they need comes from here, so adding a simulator is one spec module and one line in
:data:`SPECS`::

    cfg = env_config("metaworld-mt10", cameras=None, image_size=64)   # validated, JSON-able (to_dict)
    env = make_env("metaworld-mt10", cameras=("corner4",), image_size=64)
    expert = make_expert("metaworld-mt10", env, noise_std=0.1, seed=0)  # reset(), act(obs), last_clean_action

``"tabletop"`` is :class:`mmvla.sim.tabletop.env.TabletopEnv` (the default everywhere);
``"metaworld-mt10"`` and ``"metaworld-mt50"`` are :class:`mmvla.sim.metaworld.env.MetaWorldEnv` (need
``pip install 'mmvla[metaworld]'``; Meta-World is imported only when that environment is built).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmvla.core.keys import ENV_NAMES, METAWORLD_ENV_STATE, TABLETOP_ENV_STATE
from mmvla.sim.metaworld.spec import MT50_SPEC as METAWORLD_MT50
from mmvla.sim.metaworld.spec import SPEC as METAWORLD_MT10
from mmvla.sim.spec import DatasetSchema, EnvSpec, Expert
from mmvla.sim.tabletop.spec import SPEC as TABLETOP

SPECS: dict[str, EnvSpec] = {s.name: s for s in (TABLETOP, METAWORLD_MT10, METAWORLD_MT50)}
assert tuple(SPECS) == ENV_NAMES, "mmvla.core.keys.ENV_NAMES and the registered specs disagree"

__all__ = [
    "METAWORLD_ENV_STATE",
    "SPECS",
    "TABLETOP_ENV_STATE",
    "DatasetSchema",
    "EnvSpec",
    "Expert",
    "canonical_instructions",
    "check_env_name",
    "check_rendered",
    "dataset_schema",
    "default_cameras",
    "default_families",
    "env_config",
    "environment_state",
    "episode_extra",
    "get_spec",
    "make_env",
    "make_expert",
    "wrong_instruction_pool",
]


def get_spec(name: str) -> EnvSpec:
    """The spec of environment ``name``; ValueError naming the known ones otherwise."""
    if name not in SPECS:
        raise ValueError(f"unknown environment {name!r}; expected one of {', '.join(ENV_NAMES)}")
    return SPECS[name]


def check_env_name(name: str) -> str:
    """``name`` if it is a known environment; ValueError naming the known ones otherwise."""
    return get_spec(name).name


def default_cameras(name: str) -> tuple[str, ...]:
    """Cameras recorded when none are named: tabletop front + wrist, Meta-World corner4."""
    return get_spec(name).cameras


def default_families(name: str) -> tuple[str, ...]:
    """Task families (Meta-World: tasks) drawn when none are named: tabletop pick, push and place, all of MT10 or MT50."""
    return get_spec(name).families


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
    spec = get_spec(name)
    return spec.config(
        cameras=tuple(spec.cameras if cameras is None else cameras),
        image_size=image_size,
        split=split,
        families=tuple(spec.families if families is None else families),
        max_steps=max_steps,
        **options,
    )


def make_env(name: str, config: Any = None, **kwargs: Any) -> Any:
    """Build environment ``name`` from ``config`` (from :func:`env_config`) or :func:`env_config`'s kwargs."""
    if config is None:
        config = env_config(name, **kwargs)
    elif kwargs:
        raise ValueError("make_env: pass either a config or keyword arguments, not both")
    return get_spec(name).env(config)


def make_expert(name: str, env: Any, noise_std: float = 0.0, seed: int | None = None) -> Expert:
    """The scripted expert of environment ``name`` acting in ``env`` (its label: ``last_clean_action``)."""
    return get_spec(name).expert(env, noise_std, seed)


def dataset_schema(name: str, config: Any) -> DatasetSchema:
    """Feature names, robot type and fps of a dataset recorded in ``name`` with ``config``."""
    return get_spec(name).schema(config)


def environment_state(name: str, env: Any) -> np.ndarray | None:
    """Privileged state recorded per frame for auxiliary losses (``observation.environment_state``):
    :func:`mmvla.sim.tabletop.spec.environment_state` (5,), :func:`mmvla.sim.metaworld.spec.environment_state` (6,)."""
    return get_spec(name).env_state(env)


def check_rendered(obs: Mapping[str, Any], cameras: Sequence[str]) -> None:
    """RuntimeError when a camera's frame is one flat colour: the renderer returned nothing (a broken
    OpenGL/EGL set-up renders black frames without an error), and data or evaluations made from such
    frames are silently blind. Call it on an episode's first observation."""
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
    return get_spec(name).instructions(split)


def wrong_instruction_pool(name: str, split: str, canonical: str) -> list[str]:
    """Instructions for the language-blind control: same verb, other object (tabletop); another task
    (Meta-World)."""
    spec = get_spec(name)
    pool = spec.instructions(split)
    group = spec.instruction_group
    if group is None:
        return [s for s in pool if s != canonical]
    return [s for s in pool if s != canonical and group(s) == group(canonical)]


def episode_extra(info: Mapping[str, Any]) -> dict[str, str | int]:
    """Per-episode metadata an environment reports beyond family/split/seed (tabletop: target;
    Meta-World: goal variation)."""
    out: dict[str, str | int] = {}
    if "target" in info:
        out["target"] = str(info["target"])
    if "variation" in info:
        out["variation"] = int(info["variation"])
    return out
