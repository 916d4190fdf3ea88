"""Statistics of success rates: binomial intervals, paired tests, multiple comparisons, bootstraps.

Independent of torch and the simulator; every function is checked against a closed form or a naive
enumeration in ``tests/core/test_stats.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% (by default) Wilson score interval of a binomial proportion; (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value for paired pass/fail outcomes (two policies on the same episodes).

    Only the discordant pairs count: ``only_first`` episodes only the first policy passed, ``only_second``
    only the second. Under "equally good" each discordant pair is a fair coin, so the p-value is the
    two-sided binomial test of ``only_first`` ~ Bin(n, 1/2), n = ``only_first + only_second``; 1.0 when
    n = 0. Pairing removes the episode-to-episode variation two independent intervals carry.
    """
    if only_first < 0 or only_second < 0:
        raise ValueError(f"mcnemar_exact: counts must be >= 0, got {only_first}, {only_second}")
    n = only_first + only_second
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_first, only_second) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def cluster_bootstrap_rmse(
    sq_err: np.ndarray, clusters: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """RMSE of K models scored on the same N samples, and its bootstrap over clusters (e.g. episodes).

    Frames of one episode are correlated, so whole clusters are resampled with replacement; each draw
    uses the *same* clusters for every model, so differences between models are paired (the spread of
    ``boot[:, a] - boot[:, b]`` is that of the difference, not of two independent errors). Draw b takes
    the clusters ``rng.integers(0, C, C)`` of ``np.random.default_rng(seed)`` (C clusters, sorted ids).

    Args:
        sq_err: (K, N) squared errors (any unit²) of K models on the same N samples.
        clusters: (N,) cluster id of each sample.
        n_boot: number of bootstrap draws.
        seed: seed of the draws.
    Returns:
        rmse (K,) on all samples, and boot (n_boot, K) the RMSE of each draw, in the unit of the errors.
    Raises:
        ValueError: shapes disagree, no samples, or ``n_boot < 1``.
    """
    sq = np.asarray(sq_err, dtype=np.float64)
    if sq.ndim != 2 or sq.shape[1] == 0 or np.shape(clusters) != (sq.shape[1],):
        raise ValueError(
            f"cluster_bootstrap_rmse: want sq_err (K, N) with N > 0 and clusters (N,), got "
            f"{sq.shape} and {np.shape(clusters)}"
        )
    if n_boot < 1:
        raise ValueError(f"cluster_bootstrap_rmse: n_boot must be >= 1, got {n_boot}")
    _, member = np.unique(np.asarray(clusters), return_inverse=True)  # (N,) in 0..C-1
    C = int(member.max()) + 1
    sums = np.stack([np.bincount(member, weights=row, minlength=C) for row in sq])  # (K, C)
    counts = np.bincount(member, minlength=C).astype(np.float64)  # (C,)
    draws = np.random.default_rng(seed).integers(0, C, size=(n_boot, C))  # (n_boot, C)
    boot = np.sqrt(sums[:, draws].sum(-1) / counts[draws].sum(-1))  # (K, n_boot)
    return np.sqrt(sq.mean(axis=1)), boot.T


def holm_reject(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm's step-down test: which hypotheses are rejected with family-wise error rate ``alpha``."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    reject = [False] * len(p_values)
    for rank, i in enumerate(order):
        if p_values[i] > alpha / (len(p_values) - rank):
            break
        reject[i] = True
    return reject
