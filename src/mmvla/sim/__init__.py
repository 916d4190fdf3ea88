"""The MuJoCo tabletop: scene, Gymnasium environment, language tasks and scripted expert.

Importing this package sets ``MUJOCO_GL=egl`` (unless already set) before MuJoCo is imported, and
registers the Gymnasium id ``"mmvla/Tabletop-v0"``::

    import gymnasium as gym
    import mmvla.sim

    env = gym.make("mmvla/Tabletop-v0", cameras=("front", "wrist"), image_size=64, split="train")

The time limit is inside the environment (``truncated=True`` after ``config.max_steps`` steps, per
family by default), so no ``TimeLimit`` wrapper is added.

What a policy needs to know (details in :mod:`mmvla.sim.env`, :mod:`mmvla.sim.expert`):

- Control at 20 Hz (``scene.CONTROL_DT`` = 50 ms, 20 physics substeps of 2.5 ms).
- Action (7,) in [-1, 1]: dx, dy, dz move the end-effector target by ``action * 0.02`` m per step
  (world frame); droll, dpitch are ignored (top-down gripper); dyaw turns it by ``action * 15``
  degrees; gripper is an absolute target, +1 open ... -1 closed.
- State (5,) float32: grasp-point x, y, z in metres (table top z = 0, +x = right in the front image,
  +y = away from the front camera), yaw in radians, finger gap in metres (0 .. 0.086).
- Cameras: "front" looks down at the 26 x 20 cm object workspace from the front at ~34 degrees from
  vertical; "wrist" looks straight down from 7.5 cm above the grasp point, fingers at the top and
  bottom of its image (hand +y up, +x right: the same orientation as the front image at yaw 0).
- Episodes: the scripted expert takes ~25 steps (pick), ~28 (push), ~48 (place) without noise;
  time limits 80 / 80 / 150 steps; ``terminated`` at the first success.
- Recording: execute ``ScriptedExpert.act(obs)``, store ``expert.last_clean_action`` (DART-style).
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
