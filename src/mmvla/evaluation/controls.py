"""The controls and ablations evaluation and diagnostics apply to a policy's inputs.

- :func:`blank_cameras`: cameras set to black (the vision-blind control, one camera or all);
- :func:`ablate`: the diagnostics' conditions (blank cameras, state at its mean);
- :func:`wrong_instruction`: another instruction of the same group (the language-blind control);
- :func:`swap_target`: retarget a tabletop episode to another object (the instruction-swap control);
- :func:`without_camera_fallback`: switch off the safety layer's blank-camera hold, so blanking measures
  the policy and not the safety layer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmvla.sim.registry import wrong_instruction_pool


def blank_cameras(obs: Mapping[str, Any], cameras: Sequence[str]) -> dict[str, Any]:
    """A copy of ``obs`` with each of ``cameras`` (H, W, 3) set to 0."""
    return dict(obs, **{c: np.zeros_like(obs[c]) for c in cameras})


def ablate(
    obs: Mapping[str, Any], condition: str, cameras: Sequence[str], state_mean: np.ndarray
) -> dict[str, Any]:
    """The observation the policy sees under ``condition`` (the instruction is handled by the caller).

    ``blank_images``: every camera (H, W, 3) set to 0; ``blank_<cam>``: that camera only;
    ``zero_proprio``: "state" set to ``state_mean`` (zero after normalisation); others: unchanged.
    """
    if condition == "blank_images":
        return blank_cameras(obs, cameras)
    if condition.startswith("blank_"):
        cam = condition.removeprefix("blank_")
        if cam not in cameras:
            raise ValueError(f"condition {condition!r}: the policy has no camera {cam!r}")
        return blank_cameras(obs, (cam,))
    if condition == "zero_proprio":
        return dict(obs, state=np.asarray(state_mean, dtype=np.float32).copy())
    if condition not in ("none", "wrong_instruction"):
        raise ValueError(f"unknown diagnostics condition {condition!r}")
    return dict(obs)


def wrong_instruction(env_name: str, split: str, canonical: str, seed: int) -> str:
    """The instruction the language-blind control tells the policy in episode ``seed``: drawn from
    :func:`mmvla.sim.registry.wrong_instruction_pool` with ``default_rng(seed)`` (the canonical one when
    the pool is empty)."""
    others = wrong_instruction_pool(env_name, split, canonical)
    return str(np.random.default_rng(seed).choice(others)) if others else canonical


def swap_target(sim: Any, seed: int) -> dict[str, Any]:
    """Retarget a tabletop episode to another object on the table, preferring the distractors that
    share the target's colour or shape (the ones only the words tell apart). Returns the observation."""
    colour, shape = sim.task.target
    others = [(o.colour, o.shape) for o in sim.objects[1:] if o is not sim.base]
    close = [c for c in others if c[0] == colour or c[1] == shape] or others
    return sim.retarget(close[int(np.random.default_rng(seed).integers(len(close)))])


def without_camera_fallback(policy: Any) -> None:
    """Switch off the run-time safety layer's blank-camera fallback (if the policy has one).

    The ablations blank cameras on purpose; with the fallback on, a blank camera would make ``act()``
    return the hold action and the diagnostics would measure the safety layer, not the policy. The
    other safety checks (validation, clamps) stay as configured, so ``none`` matches ``mmvla eval``.
    """
    safety = getattr(policy, "safety", None)
    if safety is None:
        return
    config: Any = getattr(safety, "config", None)
    is_config = dataclasses.is_dataclass(config) and not isinstance(config, type)
    if is_config and any(f.name == "blank_std" for f in dataclasses.fields(config)):
        policy.safety = type(safety)(dataclasses.replace(config, blank_std=None))
    else:  # an unknown safety layer: switch it off rather than measure it
        policy.safety = None
