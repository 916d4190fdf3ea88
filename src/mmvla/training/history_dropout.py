"""History dropout (``TrainConfig.history_dropout``): hide a sample's past frames from the temporal memory.

Imitation with history invites the *copycat* shortcut (Wen et al., 2020, "Fighting Copycat Agents in
Behavioral Cloning from Observation Histories"): the recent past predicts the next action so well that
the policy copies it instead of reading the current frame, and closed loop it repeats its own
mistakes. Hiding the past from a share of the samples makes the current frame carry the task on its
own; the memory still learns from the other samples what the past adds.
"""

from __future__ import annotations

import torch
from torch import Tensor


def drop_history(history_mask: Tensor, prob: float, generator: torch.Generator) -> Tensor:
    """(B, T) bool window mask (oldest first, the last entry the current frame) -> a copy in which each
    sample, with probability ``prob``, keeps only its current frame valid.

    ``generator`` is the trainer's sampling generator: one uniform draw per sample, whatever ``prob``.
    """
    if not 0.0 <= prob <= 1.0:
        raise ValueError(f"history dropout probability must be in [0, 1], got {prob}")
    B = history_mask.shape[0]
    drop = torch.rand(B, generator=generator) < prob  # (B,)
    out = history_mask.clone()
    out[drop.to(out.device), :-1] = False
    return out
