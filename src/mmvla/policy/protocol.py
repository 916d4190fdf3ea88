"""What a closed-loop rollout needs from a policy, whether it runs here or behind a policy server.

::

    policy.cfg.cameras, .image_size     which images to render, at what size
    policy.reset(chunk_mode=None)       start an episode (chunks, memory, safety state)
    policy.act(observation) -> (A,)     one control step: float32 action in [-1, 1]

:class:`mmvla.policy.VLAPolicy` (local) and :class:`mmvla.serving.client.RemotePolicy` (served) both
satisfy :class:`Policy`; evaluation is written against it. ``RemotePolicy`` also has ``close()`` (its
connection); a local policy holds nothing to release.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np


class PolicySpec(Protocol):
    """The parts of a policy's config a rollout reads (:class:`PolicyConfig` has them all)."""

    @property
    def cameras(self) -> tuple[str, ...]:
        """Camera names the policy reads, in observation order."""
        ...

    @property
    def image_size(self) -> int:
        """Square image side in pixels."""
        ...

    @property
    def state_dim(self) -> int:
        """Width of the proprioceptive state (S,)."""
        ...

    @property
    def action_dim(self) -> int:
        """Width of one action (A,)."""
        ...

    @property
    def chunk_size(self) -> int:
        """k, actions predicted at once."""
        ...


@runtime_checkable
class Policy(Protocol):
    """A policy a rollout can drive (see the module docstring).

    ``isinstance(x, Policy)`` checks that ``cfg``, ``reset`` and ``act`` exist, not their signatures.
    """

    @property
    def cfg(self) -> PolicySpec:
        """Cameras, image size and widths (:class:`PolicySpec`)."""
        ...

    def reset(self, chunk_mode: str | None = None) -> None:
        """Start a new episode; optionally switch the chunk mode ("ensemble" or "execute")."""
        ...

    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        """One control step: observation (camera images (H, W, 3) uint8, "state" (S,), "instruction")
        -> (A,) float32 action."""
        ...
