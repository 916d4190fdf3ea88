"""One episode of any environment: :func:`rollout`.

Every closed loop in the library (evaluation, diagnostics, data collection, the contrastive evaluation
set, the failure-mode benchmark) is this function with a different ``act`` and ``on_step``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Rollout:
    """How an episode ended.

    Attributes:
        obs: the last observation.
        info: the last ``info`` (of the last step, or of the reset when no step was taken).
        steps: control steps taken.
        success: ``info["success"]`` was true at the reset or after any step.
        terminated, truncated: the last step's flags.
    """

    obs: dict[str, Any]
    info: dict[str, Any]
    steps: int
    success: bool
    terminated: bool = False
    truncated: bool = False


def rollout(
    env: Any,
    act: Callable[[dict[str, Any]], np.ndarray],
    *,
    seed: int | None = None,
    options: Mapping[str, Any] | None = None,
    start: tuple[dict[str, Any], dict[str, Any]] | None = None,
    on_step: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    stop_on_success: bool = True,
    max_steps: int | None = None,
) -> Rollout:
    """Reset ``env`` (``seed``, ``options``) or continue from ``start = (obs, info)``, then step
    ``env.step(act(obs))`` until terminated, truncated, success (``stop_on_success``) or ``max_steps``.

    ``on_step(obs, info)`` sees every step's new observation and info (record frames, read the simulator).
    """
    if start is None:
        obs, info = env.reset(seed=seed, options=dict(options) if options is not None else None)
    else:
        obs, info = start
    success = bool(info.get("success", False))
    steps, terminated, truncated = 0, False, False
    while max_steps is None or steps < max_steps:
        obs, _reward, terminated, truncated, info = env.step(act(obs))
        steps += 1
        success = success or bool(info.get("success", False))
        if on_step is not None:
            on_step(obs, info)
        if terminated or truncated or (stop_on_success and success):
            break
    return Rollout(obs, info, steps, success, bool(terminated), bool(truncated))
