"""Meta-World MT10's :class:`~mmvla.sim.spec.EnvSpec` (registered as ``"metaworld-mt10"``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmvla.core.keys import METAWORLD_ENV_STATE
from mmvla.sim import METAWORLD_MT10_ID
from mmvla.sim.metaworld import config as mw
from mmvla.sim.metaworld.env import MetaWorldExpert, MetaWorldMT10Env
from mmvla.sim.spec import DatasetSchema, EnvSpec, Expert


def _config(
    *,
    cameras: Sequence[str],
    image_size: int,
    split: str,
    families: Sequence[str],
    max_steps: int | None,
    **options: Any,
) -> mw.MetaWorldConfig:
    if max_steps is not None:
        options["max_steps"] = max_steps
    return mw.MetaWorldConfig(
        tasks=tuple(families), cameras=tuple(cameras), image_size=image_size, split=split, **options
    )


def _env(config: mw.MetaWorldConfig) -> Any:
    return MetaWorldMT10Env(config)


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
