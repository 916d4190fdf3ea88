"""Normalisation statistics in LeRobot's format, exact and equal to NumPy's on the same arrays.

Two accumulators cover what a dataset holds:

- :class:`VectorStats` for low-dimensional features (state, action, bookkeeping columns). It keeps
  every row (a few MB for the datasets here) and computes the statistics with NumPy at the end, so
  quantiles are exact rather than sketched.
- :class:`ImageStats` for uint8 images. It keeps one 256-bin histogram per channel, from which mean,
  std, min, max and linear-interpolation quantiles are *exact* (a uint8 channel takes 256 values), in
  ``[0, 1]`` units and shaped ``(3, 1, 1)`` like LeRobot's image statistics. Histograms add, so workers
  can compute them per episode and the writer only sums.

Every statistic is a float64 ``np.ndarray``; ``count`` is the number of frames, shape ``(1,)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Quantile name -> probability, as LeRobot names them.
QUANTILES: dict[str, float] = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}
#: Every statistic written per feature.
STAT_NAMES: tuple[str, ...] = ("min", "max", "mean", "std", "count", *QUANTILES)
#: Statistics a reader requires for normalisation.
REQUIRED_STATS: tuple[str, ...] = ("min", "max", "mean", "std")


def array_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """Statistics over axis 0 of ``x`` (N, D) in float64: min/max/mean/std (ddof=0)/count/quantiles.

    Quantiles use NumPy's default (linear) interpolation. Each statistic has shape (D,); ``count`` (1,).
    """
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"array_stats expects a non-empty (N, D) array, got shape {x.shape}")
    x64 = x.astype(np.float64, copy=False)
    out: dict[str, np.ndarray] = {
        "min": x64.min(axis=0),
        "max": x64.max(axis=0),
        "mean": x64.mean(axis=0),
        "std": x64.std(axis=0),
        "count": np.array([x.shape[0]], dtype=np.int64),
    }
    qs = np.quantile(x64, list(QUANTILES.values()), axis=0)  # (Q, D)
    for name, row in zip(QUANTILES, qs, strict=True):
        out[name] = row
    return out


class VectorStats:
    """Accumulates rows of a (N, D) feature and computes :func:`array_stats` over all of them."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._parts: list[np.ndarray] = []

    @property
    def count(self) -> int:
        """Number of rows seen so far."""
        return sum(p.shape[0] for p in self._parts)

    def update(self, x: np.ndarray) -> None:
        """Add rows ``x`` of shape (n, D) (or (n,) when D == 1)."""
        x = np.asarray(x)
        if x.ndim == 1 and self.dim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"VectorStats(dim={self.dim}) got an array of shape {x.shape}")
        self._parts.append(x.astype(np.float64))

    def compute(self) -> dict[str, np.ndarray]:
        """Statistics over every row added, each shaped (D,); ``count`` (1,)."""
        if not self._parts:
            raise ValueError("VectorStats.compute() called before any update()")
        return array_stats(np.concatenate(self._parts, axis=0))


def channel_histogram(images: np.ndarray) -> np.ndarray:
    """Per-channel value histogram of uint8 images (..., C) → int64 (C, 256)."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"channel_histogram expects uint8 images, got {images.dtype}")
    flat = images.reshape(-1, images.shape[-1])  # (P, C)
    return np.stack([np.bincount(flat[:, c], minlength=256) for c in range(flat.shape[1])]).astype(np.int64)


def _quantile_from_histogram(hist: np.ndarray, q: float) -> float:
    """NumPy's linear-interpolation quantile of the multiset described by ``hist`` (256,)."""
    cum = np.cumsum(hist)  # cum[v] = number of values <= v
    n = int(cum[-1])
    h = q * (n - 1)
    lo = int(np.floor(h))
    frac = h - lo
    # sorted_x[k] is the smallest v with cum[v] > k
    x_lo = float(np.searchsorted(cum, lo, side="right"))
    x_hi = float(np.searchsorted(cum, min(lo + 1, n - 1), side="right"))
    return x_lo + frac * (x_hi - x_lo)


def histogram_stats(hist: np.ndarray, frames: int, scale: float = 1.0 / 255.0) -> dict[str, np.ndarray]:
    """Exact statistics of uint8 values from per-channel histograms (C, 256), in ``value * scale`` units.

    Each statistic has shape (C, 1, 1) (LeRobot's image convention); ``count`` is ``[frames]``.
    """
    hist = np.asarray(hist, dtype=np.int64)
    if hist.ndim != 2 or hist.shape[1] != 256:
        raise ValueError(f"histogram_stats expects (C, 256) histograms, got shape {hist.shape}")
    values = np.arange(256, dtype=np.float64) * scale  # (256,)
    n = hist.sum(axis=1).astype(np.float64)  # (C,)
    if np.any(n == 0):
        raise ValueError("histogram_stats: a channel histogram is empty")
    mean = (hist * values).sum(axis=1) / n
    var = (hist * (values[None, :] - mean[:, None]) ** 2).sum(axis=1) / n
    present = hist > 0
    vmin = np.array([values[np.argmax(p)] for p in present])
    vmax = np.array([values[255 - np.argmax(p[::-1])] for p in present])
    out: dict[str, np.ndarray] = {
        "min": vmin,
        "max": vmax,
        "mean": mean,
        "std": np.sqrt(var),
        "count": np.array([frames], dtype=np.int64),
    }
    for name, q in QUANTILES.items():
        out[name] = np.array([_quantile_from_histogram(h, q) * scale for h in hist])
    return {k: (v if k == "count" else v.reshape(-1, 1, 1)) for k, v in out.items()}


class ImageStats:
    """Accumulates per-channel histograms of uint8 images; statistics in [0, 1] units, shape (C, 1, 1)."""

    def __init__(self, channels: int = 3) -> None:
        self.hist = np.zeros((channels, 256), dtype=np.int64)
        self.frames = 0

    def update(self, images: np.ndarray) -> None:
        """Add uint8 images of shape (N, H, W, C)."""
        self.update_histogram(channel_histogram(images), frames=int(np.asarray(images).shape[0]))

    def update_histogram(self, hist: np.ndarray, frames: int) -> None:
        """Add a precomputed (C, 256) histogram covering ``frames`` images."""
        hist = np.asarray(hist, dtype=np.int64)
        if hist.shape != self.hist.shape:
            raise ValueError(f"ImageStats expects histograms of shape {self.hist.shape}, got {hist.shape}")
        self.hist += hist
        self.frames += frames

    def compute(self) -> dict[str, np.ndarray]:
        """Statistics over every image added (see :func:`histogram_stats`)."""
        if self.frames == 0:
            raise ValueError("ImageStats.compute() called before any update()")
        return histogram_stats(self.hist, self.frames)


def stats_to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, Any]]:
    """Nested lists for ``meta/stats.json`` (float64 round-trips exactly through JSON)."""
    return {feat: {k: np.asarray(v).tolist() for k, v in s.items()} for feat, s in stats.items()}


def stats_from_json(obj: Any, source: str = "stats.json") -> dict[str, dict[str, np.ndarray]]:
    """Parse ``meta/stats.json`` into float64 arrays (``count`` as int64); ValueError names bad entries."""
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected an object mapping feature -> statistics")
    out: dict[str, dict[str, np.ndarray]] = {}
    for feat, s in obj.items():
        if not isinstance(s, dict):
            raise ValueError(f"{source}: statistics of feature '{feat}' are not an object")
        parsed: dict[str, np.ndarray] = {}
        for k, v in s.items():
            try:
                parsed[k] = np.asarray(v, dtype=np.int64 if k == "count" else np.float64)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{source}: statistic '{k}' of feature '{feat}' is not numeric: {e}") from e
        out[feat] = parsed
    return out
