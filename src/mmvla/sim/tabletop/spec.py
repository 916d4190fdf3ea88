"""The tabletop's :class:`~mmvla.sim.spec.EnvSpec` (registered as ``"tabletop"``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mmvla.core.keys import ACTION_NAMES, ROBOT_TYPE, SPLITS, STATE_NAMES, TABLETOP_ENV_STATE
from mmvla.sim import ENV_ID
from mmvla.sim.spec import DatasetSchema, EnvSpec, Expert
from mmvla.sim.tabletop import scene
from mmvla.sim.tabletop.config import TabletopConfig
from mmvla.sim.tabletop.tasks import all_instructions


def _config(
    *,
    cameras: Sequence[str],
    image_size: int,
    split: str,
    families: Sequence[str],
    max_steps: int | None,
    **options: Any,
) -> TabletopConfig:
    return TabletopConfig(
        cameras=tuple(cameras),
        image_size=image_size,
        split=split,
        families=tuple(families),
        max_steps=max_steps,
        **options,
    )


def _env(config: TabletopConfig) -> Any:
    from mmvla.sim.tabletop.env import TabletopEnv  # imports MuJoCo

    return TabletopEnv(config)


def _expert(env: Any, noise_std: float, seed: int | None) -> Expert:
    from mmvla.sim.tabletop.expert import ScriptedExpert  # imports MuJoCo

    return ScriptedExpert(env, noise_std=noise_std, seed=seed)


def _schema(config: TabletopConfig) -> DatasetSchema:
    return DatasetSchema(
        STATE_NAMES, ACTION_NAMES, ROBOT_TYPE, round(1.0 / scene.CONTROL_DT), TABLETOP_ENV_STATE
    )


def environment_state(env: Any) -> np.ndarray:
    """float32 (8,): the named object's centre relative to the grasp point (metres, world axes), then its
    yaw relative to the hand's as (cos, sin) of ``period_factor * (object_yaw - hand_yaw)`` with the factor
    4 for cubes and 2 for slabs (their footprints' symmetry), so every grasp the shape allows maps to
    (1, 0) and the target is continuous in both yaws; cylinders are always (1, 0); then where the object
    must end (``TabletopEnv.goal_position``: lifted, pushed, or resting on the place base) relative to
    the grasp point, so a place policy is asked to find the second named object too.

    Relative, not absolute: the grasp point and yaw are in the proprioceptive state, so an absolute
    target would let a network answer "where the hand is" (the expert's hand sits on the target in most
    frames) without looking. The yaw term asks the encoder for the object's orientation, which most
    failed grasps got wrong (docs/findings.md).
    """
    sim = env.unwrapped
    target = sim.target
    ee = sim.ee_state()
    period = scene.SHAPE_YAW_PERIOD[target.shape]
    rel = (2 * np.pi / period) * (sim.object_yaw(target) - ee[3]) if period else 0.0
    goal = sim.goal_position() - ee[:3]
    return np.asarray(
        [*(sim.object_position(target) - ee[:3]), np.cos(rel), np.sin(rel), *goal], dtype=np.float32
    )


SPEC = EnvSpec(
    name="tabletop",
    gym_id=ENV_ID,
    splits=SPLITS,
    cameras=("front", "wrist"),
    families=("pick", "push", "place"),
    config=_config,
    env=_env,
    expert=_expert,
    schema=_schema,
    env_state=environment_state,
    instructions=lambda split: tuple(all_instructions(split)),
    instruction_group=lambda text: text.split()[0],  # the verb: same verb, other object
    retarget=True,
    wordings=True,
    tracks_objects=True,
)
