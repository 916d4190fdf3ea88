"""What the library needs to know about an environment, as one frozen record (:class:`EnvSpec`).

Each simulator states its own (:mod:`mmvla.sim.tabletop.spec`, :mod:`mmvla.sim.metaworld.spec`);
:mod:`mmvla.sim.registry` holds them by name. Building a spec imports no simulator: the ``env`` and
``expert`` factories import MuJoCo (and Meta-World) when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


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


@dataclass(frozen=True)
class EnvSpec:
    """One environment by name.

    Attributes:
        name: the name in :data:`mmvla.core.keys.ENV_NAMES`.
        gym_id: its Gymnasium id (registered by ``import mmvla``).
        splits: the evaluation splits it has (tabletop: train, unseen; Meta-World: train).
        cameras: cameras recorded when none are named.
        families: task families (Meta-World: tasks) drawn when none are named.
        config: ``(cameras, image_size, split, families, max_steps, **options) -> config`` (validated,
            JSON-able via ``to_dict``; builds no simulator).
        env: ``config -> environment`` (imports the simulator).
        expert: ``(env, noise_std, seed) -> Expert``; its label is ``last_clean_action``.
        schema: ``config -> DatasetSchema``.
        env_state: ``env -> float32 (len(env_state_names),)`` privileged state recorded per frame.
        instructions: ``split -> every canonical instruction`` the environment gives in that split.
        instruction_group: ``instruction -> group``: the language-blind control tells the policy another
            instruction of the same group (tabletop: the same verb); None: any other instruction.
        retarget: the environment can change an episode's target after reset (``env.retarget``), which
            the instruction-swap control needs.
        wordings: the built-in wording sets (:mod:`mmvla.sim.tabletop.wordings`) cover its instructions.
        tracks_objects: it exposes ``objects``, ``initial_positions`` and ``data.xpos`` (which object an
            episode moved first).
        eval_cycles_families: evaluation cycles through ``families`` when none are named (balanced
            per-task counts) instead of letting the environment draw them.
    """

    name: str
    gym_id: str
    splits: tuple[str, ...]
    cameras: tuple[str, ...]
    families: tuple[str, ...]
    config: Callable[..., Any]
    env: Callable[[Any], Any]
    expert: Callable[[Any, float, int | None], Expert]
    schema: Callable[[Any], DatasetSchema]
    env_state: Callable[[Any], np.ndarray]
    instructions: Callable[[str], tuple[str, ...]]
    instruction_group: Callable[[str], str] | None = None
    retarget: bool = False
    wordings: bool = False
    tracks_objects: bool = False
    eval_cycles_families: bool = False
