"""Normalisation of state and actions, with statistics kept outside the model weights.

Statistics come from the dataset's ``meta/stats.json`` and are saved beside each checkpoint as
``stats.json``; a missing or mismatched entry fails loudly with the feature's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

MODES = ("mean_std", "min_max")
_EPS = 1e-3


class Normalizer:
    """Per-feature affine normalisation: ``mean_std`` -> (x - mean) / std, ``min_max`` -> [-1, 1].

    Args:
        stats: feature -> {"mean", "std", "min", "max", ...} arrays (lists or numpy) of shape (F,).
        modes: feature -> mode, for the features this normaliser handles.
    """

    def __init__(self, stats: Mapping[str, Mapping[str, Any]], modes: Mapping[str, str]) -> None:
        self.modes = dict(modes)
        self.stats: dict[str, dict[str, np.ndarray]] = {}
        self._shift: dict[str, Tensor] = {}
        self._scale: dict[str, Tensor] = {}
        for key, mode in self.modes.items():
            if mode not in MODES:
                raise ValueError(f"normalisation mode for {key!r} must be one of {MODES}, got {mode!r}")
            if key not in stats:
                raise ValueError(f"normalisation statistics are missing feature {key!r}")
            need = ("mean", "std") if mode == "mean_std" else ("min", "max")
            entry: dict[str, np.ndarray] = {}
            for name in ("mean", "std", "min", "max"):
                if name in stats[key]:
                    entry[name] = np.asarray(stats[key][name], dtype=np.float32).reshape(-1)
                elif name in need:
                    raise ValueError(f"normalisation statistics for {key!r} lack {name!r}")
            arr = [entry[n] for n in need]
            if arr[0].shape != arr[1].shape or not all(np.isfinite(a).all() for a in arr):
                raise ValueError(
                    f"normalisation statistics for {key!r} are malformed (shapes or non-finite values)"
                )
            self.stats[key] = entry
            if mode == "mean_std":
                shift, scale = entry["mean"], np.maximum(entry["std"], _EPS)
            else:
                shift = (entry["max"] + entry["min"]) / 2
                scale = np.maximum((entry["max"] - entry["min"]) / 2, _EPS)
            self._shift[key] = torch.from_numpy(shift.astype(np.float32))
            self._scale[key] = torch.from_numpy(scale.astype(np.float32))

    def dim(self, key: str) -> int:
        """Feature width F of ``key``."""
        return int(self._shift[key].numel())

    def normalize(self, key: str, x: Tensor) -> Tensor:
        """x (..., F) raw -> normalised (..., F)."""
        self._check(key, x)
        return (x - self._shift[key].to(x)) / self._scale[key].to(x)

    def unnormalize(self, key: str, x: Tensor) -> Tensor:
        """x (..., F) normalised -> raw units (..., F)."""
        self._check(key, x)
        return x * self._scale[key].to(x) + self._shift[key].to(x)

    def _check(self, key: str, x: Tensor) -> None:
        if key not in self._shift:
            raise KeyError(f"no normalisation statistics for {key!r}")
        if x.shape[-1] != self._shift[key].numel():
            raise ValueError(
                f"{key!r}: last dimension {x.shape[-1]} != statistics width {self._shift[key].numel()}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: {"modes": ..., "stats": {feature: {stat: list}}}."""
        return {
            "modes": self.modes,
            "stats": {k: {n: v.tolist() for n, v in e.items()} for k, e in self.stats.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Normalizer:
        """Inverse of :meth:`to_dict`; raises ``ValueError`` on a malformed dict."""
        if not isinstance(d, Mapping) or "modes" not in d or "stats" not in d:
            raise ValueError("normalisation file must hold 'modes' and 'stats'")
        return cls(d["stats"], d["modes"])
