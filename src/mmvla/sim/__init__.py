"""Simulators: the MuJoCo tabletop (:mod:`mmvla.sim.tabletop`) and Meta-World MT10/MT50 (:mod:`mmvla.sim.metaworld`).

Importing this package has no side effects: no MuJoCo, no Gymnasium, no environment variables. MuJoCo is
imported (and ``MUJOCO_GL`` defaulted to ``egl`` just before) only by the modules that build an
environment. ``import mmvla`` registers the Gymnasium ids below (:mod:`mmvla.sim.gym_ids`)::

    import gymnasium as gym
    import mmvla

    env = gym.make("mmvla/Tabletop-v0", cameras=("front", "wrist"), image_size=64, split="train")

The time limit is inside each environment (``truncated=True`` after ``config.max_steps`` steps), so no
``TimeLimit`` wrapper is added. Environments by name (config, env, expert, dataset schema, ...):
:mod:`mmvla.sim.registry`; one episode: :func:`mmvla.sim.rollout.rollout`.
"""

from __future__ import annotations

ENV_ID = "mmvla/Tabletop-v0"
METAWORLD_MT10_ID = "mmvla/MetaWorld-MT10-v0"
METAWORLD_MT50_ID = "mmvla/MetaWorld-MT50-v0"

# Gymnasium id -> entry point ("module:Class", imported by gym.make only).
GYM_ENTRY_POINTS: dict[str, str] = {
    ENV_ID: "mmvla.sim.tabletop.env:TabletopEnv",
    METAWORLD_MT10_ID: "mmvla.sim.metaworld.env:MetaWorldMT10Env",
    METAWORLD_MT50_ID: "mmvla.sim.metaworld.env:make_mt50_env",
}

__all__ = ["ENV_ID", "GYM_ENTRY_POINTS", "METAWORLD_MT10_ID", "METAWORLD_MT50_ID"]
