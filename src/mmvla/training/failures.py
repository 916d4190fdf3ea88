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

Failures older than the window (``TrainConfig.camera_failure_span`` > 0): at evaluation a camera stays
failed for the rest of the episode, so after K steps a memory's whole window is failed and a frozen frame
is older than any window. :func:`sample_failure_ages` draws each failure's age (steps since the last good
frame) up to the span; the trainer fetches the last good frame by its dataset row
(:func:`last_good_rows`) and :func:`fail_aged_window` / :func:`current_or_frozen` fail the frames after
it. With span T - 1 this is exactly the in-window sampling above (:func:`sample_failures` calls it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mmvla.sim.camera_failure import fail_frames


def sample_failure_ages(
    steps: Tensor, prob: float, span: int, modes: Sequence[str], generator: torch.Generator
) -> list[tuple[int, str] | None]:
    """Per sample: None (no failure) or (age, mode): the camera failed ``age`` >= 1 steps ago, so the
    sample's last good frame is its step minus ``age``.

    ``age`` is uniform over 1..min(span, steps[b]): a failure starts after the episode's first frame.

    Args:
        steps: (B,) int, each sample's step in its episode (0 = the reset's frame, which never fails).
        prob: probability that a sample (at step >= 1) fails.
        span: the oldest failure, in steps before the sample's step (>= 1).
        modes: modes drawn uniformly ("blank", "freeze").
        generator: the trainer's sampling generator (draws: 3 per sample, whatever the outcome).
    """
    if span < 1:
        raise ValueError(f"sample_failure_ages: span must be >= 1, got {span}")
    u = torch.rand(len(steps), 3, generator=generator)  # (B, 3): fail?, age, mode
    out: list[tuple[int, str] | None] = []
    for b in range(len(steps)):
        n = min(span, int(steps[b]))  # possible ages
        if n < 1 or float(u[b, 0]) >= prob:
            out.append(None)
            continue
        age = n - min(int(float(u[b, 1]) * n), n - 1)
        out.append((age, modes[min(int(float(u[b, 2]) * len(modes)), len(modes) - 1)]))
    return out


def sample_failures(
    history_mask: Tensor, prob: float, modes: Sequence[str], generator: torch.Generator
) -> list[tuple[int, str] | None]:
    """Per sample: None (no failure) or (first failed window position, mode): a failure inside the
    window (:func:`sample_failure_ages` with span T - 1, position T - age).

    Args:
        history_mask: (B, T) bool, True = a real frame of the sample's episode (oldest first; real
            frames are contiguous at the end).
        prob: probability that a sample (with >= 2 real frames) fails.
        modes: modes drawn uniformly ("blank", "freeze").
        generator: the trainer's sampling generator (draws: 3 per sample, whatever the outcome).
    """
    T = history_mask.shape[1]
    steps = history_mask.sum(1) - 1  # (B,) real frames before the current one (capped by the window)
    ages = sample_failure_ages(steps, prob, max(T - 1, 1), modes, generator)
    return [None if a is None else (T - a[0], a[1]) for a in ages]


def last_good_rows(rows: np.ndarray, ages: Sequence[tuple[int, str] | None]) -> np.ndarray:
    """(B,) dataset rows of the current frames -> (B,) rows of each sample's last good frame (its own
    row where it has no failure)."""
    return np.array([r - (0 if a is None else a[0]) for r, a in zip(rows.tolist(), ages, strict=True)])


def fail_aged_window(frames: Tensor, last_good: Tensor, ages: Sequence[tuple[int, str] | None]) -> Tensor:
    """(B, T, ...) window frames, (B, ...) last good frames -> a copy in which each failed sample's frames
    after its last good one (window positions >= T - age; all of them when age >= T) are black or that
    frame repeated."""
    out = frames.clone()
    T = frames.shape[1]
    for b, a in enumerate(ages):
        if a is not None:
            out[b, max(T - a[0], 0) :] = 0 if a[1] == "blank" else last_good[b]
    return out


def current_or_frozen(current: Tensor, last_good: Tensor, ages: Sequence[tuple[int, str] | None]) -> Tensor:
    """(B, ...) current frames -> a copy with each frozen sample's frame replaced by its last good
    frame (blank samples are blanked later by :func:`blank_rows`, after augmentation)."""
    out = current.clone()
    for b, a in enumerate(ages):
        if a is not None and a[1] == "freeze":
            out[b] = last_good[b]
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
