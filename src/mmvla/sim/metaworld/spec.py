"""Meta-World's :class:`~mmvla.sim.spec.EnvSpec` records: ``"metaworld-mt10"`` (:data:`SPEC`) and
``"metaworld-mt50"`` (:data:`MT50_SPEC`).

The two differ in their task set and defaults: MT10 keeps its 50 fixed goal variations per task and a
200-step limit (the benchmark this project first reported); MT50 follows the peers' protocol (LeRobot,
SmolVLA): positions re-drawn from every episode seed (``variations=None``) and Meta-World's own
500-step limit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from mmvla.core.keys import METAWORLD_ENV_STATE
from mmvla.sim import METAWORLD_MT10_ID, METAWORLD_MT50_ID
from mmvla.sim.metaworld import config as mw
from mmvla.sim.metaworld.env import MetaWorldEnv, MetaWorldExpert
from mmvla.sim.spec import DatasetSchema, EnvSpec, Expert


def _config(
    *,
    cameras: Sequence[str],
    image_size: int,
    split: str,
    families: Sequence[str],
    max_steps: int | None,
    make: Callable[..., mw.MetaWorldConfig] = mw.MetaWorldConfig,
    **options: Any,
) -> mw.MetaWorldConfig:
    """The registry's config call -> ``make(...)`` (MT10: the dataclass; MT50: :func:`mw.mt50_config`)."""
    if max_steps is not None:
        options["max_steps"] = max_steps
    return make(tasks=tuple(families), cameras=tuple(cameras), image_size=image_size, split=split, **options)


def _env(config: mw.MetaWorldConfig) -> Any:
    return MetaWorldEnv(config)


def _expert(env: Any, noise_std: float, seed: int | None) -> Expert:
    return MetaWorldExpert(env, noise_std=noise_std, seed=seed)


def _schema(config: mw.MetaWorldConfig) -> DatasetSchema:
    return DatasetSchema(
        tuple(config.state_names),
        tuple(config.action_names),
        mw.ROBOT_TYPE,
        mw.CONTROL_HZ,
        METAWORLD_ENV_STATE,
    )


def environment_state(env: Any) -> np.ndarray:
    """float32 (6,): the task's main object (Meta-World's ``obs[4:7]``: the puck, the peg, the
    door/drawer/window handle, the button) and its goal (``obs[36:39]``), each relative to the hand
    (``obs[:3]``), metres, world axes. Neither is in the policy's observation; the goal of reach, push and
    pick-place is only visible as its marker."""
    mw_obs = env.unwrapped.mw_obs  # (39,) Meta-World's full observation, goal included
    hand = mw_obs[:3]
    return np.asarray([*(mw_obs[4:7] - hand), *(mw_obs[36:39] - hand)], dtype=np.float32)


SPEC = EnvSpec(
    name=mw.ENV_NAME,
    gym_id=METAWORLD_MT10_ID,
    splits=("train",),  # MT10 trains and tests on the same tasks
    cameras=mw.DEFAULT_CAMERAS,
    families=mw.MT10_TASKS,
    config=_config,
    env=_env,
    expert=_expert,
    schema=_schema,
    env_state=environment_state,
    instructions=lambda split: mw.all_instructions(),
    eval_cycles_families=True,
)

MT50_SPEC = EnvSpec(
    name=mw.MT50_ENV_NAME,
    gym_id=METAWORLD_MT50_ID,
    splits=("train",),  # MT50 trains and tests on the same tasks (at different positions)
    cameras=mw.DEFAULT_CAMERAS,
    families=mw.MT50_TASKS,
    config=partial(_config, make=mw.mt50_config),
    env=_env,
    expert=_expert,
    schema=_schema,
    env_state=environment_state,
    instructions=lambda split: mw.all_instructions(tasks=mw.MT50_TASKS),
    eval_cycles_families=True,
)
