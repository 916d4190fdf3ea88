"""The MuJoCo tabletop: scene, Gymnasium environment, language tasks and scripted expert.

Importing this package sets ``MUJOCO_GL=egl`` (unless already set) before MuJoCo is imported, and
registers the Gymnasium id ``"mmvla/Tabletop-v0"``::

    import gymnasium as gym
    import mmvla.sim

    env = gym.make("mmvla/Tabletop-v0", cameras=("front", "wrist"), image_size=64, split="train")

The time limit is inside the environment (``truncated=True`` after ``config.max_steps`` steps, per
family by default), so no ``TimeLimit`` wrapper is added.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym

from mmvla.sim.config import CAMERAS, DEFAULT_MAX_STEPS, TabletopConfig
from mmvla.sim.env import TabletopEnv
from mmvla.sim.expert import ScriptedExpert

ENV_ID = "mmvla/Tabletop-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="mmvla.sim.env:TabletopEnv", max_episode_steps=None)

__all__ = ["CAMERAS", "DEFAULT_MAX_STEPS", "ENV_ID", "ScriptedExpert", "TabletopConfig", "TabletopEnv"]
