"""The hand-over signal of the safety layer, shared by the local policy and the policy client.

It lives in ``core`` because :mod:`mmvla.serving.client` must not import :mod:`mmvla.policy` (torch).
"""

from __future__ import annotations

from typing import Any

HANDOVER = "handover"  # the safety decision: a camera failed, the robot is handed over


class HandOver(RuntimeError):
    """Raised by a policy's ``act`` (local or served) when the safety layer's ``fallback="handover"``
    fires: the controller stops the episode. ``action`` is the (A,) hold action (send it, or nothing)."""

    def __init__(self, reason: str, action: Any = None) -> None:
        super().__init__(f"handed over: {reason}")
        self.reason, self.action = reason, action
