"""Name -> fusion class. ``build_fusion("film", cfg)`` is how a policy swaps designs with one flag."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from mmvla.modules.fusion.base import Fusion, FusionConfig

_FUSIONS: dict[str, type[Fusion]] = {}
F = TypeVar("F", bound=type[Fusion])


def register_fusion(name: str) -> Callable[[F], F]:
    """Class decorator adding a fusion design under ``name``."""

    def deco(cls: F) -> F:
        if name in _FUSIONS:
            raise ValueError(f"fusion {name!r} is already registered")
        _FUSIONS[name] = cls
        return cls

    return deco


def available_fusions() -> list[str]:
    """Registered fusion names, sorted."""
    return sorted(_FUSIONS)


def build_fusion(name: str, cfg: FusionConfig) -> Fusion:
    """Instantiate the fusion registered as ``name``; unknown names list the valid ones."""
    if name not in _FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; available: {', '.join(available_fusions())}")
    return _FUSIONS[name](cfg)
