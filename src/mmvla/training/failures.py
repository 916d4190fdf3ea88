"""Camera failures sampled in training batches (``TrainConfig.camera_failure``), for the context task.

Each sample carries a window of T frames, oldest first (``history_mask`` (B, T): True = a frame of this
episode). With probability ``prob`` a sample's camera fails at a window position ``s`` drawn uniformly
from the positions after its first real frame (so a good frame precedes the failure, as at evaluation,
where the failure starts at observation >= 1); frames ``s..T-1`` are then blanked or frozen by
:func:`mmvla.sim.camera_failure.fail_frames`, the one definition evaluation and the environment use.
A sample whose window holds one real frame (its episode's first step) never fails.

A memoryless policy reads only the window's last frame: :func:`current_frames` picks it (the frozen
frame for a frozen sample) before augmentation, and :func:`blank_rows` blanks after it, so only B
frames are augmented instead of B·T; the result is the last frame of :func:`apply_failures`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mmvla.sim.camera_failure import fail_frames


def sample_failures(
    history_mask: Tensor, prob: float, modes: Sequence[str], generator: torch.Generator
) -> list[tuple[int, str] | None]:
    """Per sample: None (no failure) or (first failed window position, mode).

    Args:
        history_mask: (B, T) bool, True = a real frame of the sample's episode (oldest first).
        prob: probability that a sample (with >= 2 real frames) fails.
        modes: modes drawn uniformly ("blank", "freeze").
        generator: the trainer's sampling generator (draws: 3 per sample, whatever the outcome).
    """
    B, T = history_mask.shape
    u = torch.rand(B, 3, generator=generator)  # (B, 3): fail?, position, mode
    first = (~history_mask).sum(
        1
    )  # (B,) the window's first real frame (real frames are contiguous at the end)
    out: list[tuple[int, str] | None] = []
    for b in range(B):
        lo = int(first[b]) + 1  # a good frame before the failure
        if T - lo < 1 or float(u[b, 0]) >= prob:
            out.append(None)
            continue
        start = lo + min(int(float(u[b, 1]) * (T - lo)), T - lo - 1)
        out.append((start, modes[min(int(float(u[b, 2]) * len(modes)), len(modes) - 1)]))
    return out


def apply_failures(frames: Tensor, failures: Sequence[tuple[int, str] | None]) -> Tensor:
    """(B, T, ...) frames of one camera -> a copy with each sample's failure applied along T."""
    out = frames.clone()
    for b, f in enumerate(failures):
        if f is not None:
            out[b] = fail_frames(frames[b], f[0], f[1])
    return out


def current_frames(frames: Tensor, failures: Sequence[tuple[int, str] | None]) -> Tensor:
    """(B, T, ...) -> (B, ...): the last frame of each window, or the frame a freeze repeats there
    (``frames[b, start - 1]``); blank samples are blanked later by :func:`blank_rows`."""
    out = frames[:, -1].clone()
    for b, f in enumerate(failures):
        if f is not None and f[1] == "freeze":
            out[b] = frames[b, f[0] - 1]
    return out


def blank_rows(frames: Tensor, failures: Sequence[tuple[int, str] | None]) -> Tensor:
    """(B, ...) current frames -> a copy with the blank samples' frames set to 0."""
    out = frames.clone()
    for b, f in enumerate(failures):
        if f is not None and f[1] == "blank":
            out[b] = 0
    return out
