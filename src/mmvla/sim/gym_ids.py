"""Register mmvla's Gymnasium ids (:data:`mmvla.sim.GYM_ENTRY_POINTS`) with string entry points.

``import mmvla`` calls :func:`register`. Entry points are strings, so no environment module (and so no
MuJoCo) is imported and no environment variable is touched until ``gym.make`` builds an environment.
"""

from __future__ import annotations

import gymnasium as gym

from mmvla.sim import GYM_ENTRY_POINTS


def register() -> None:
    """Register every id that is not registered yet (idempotent)."""
    for env_id, entry_point in GYM_ENTRY_POINTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=None)
