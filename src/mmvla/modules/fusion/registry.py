"""Name -> fusion class. ``build_fusion("film", cfg)`` is how a policy swaps designs with one flag."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from mmvla.core.registry import Registry
from mmvla.modules.fusion.base import Fusion, FusionConfig

FUSIONS: Registry[type[Fusion]] = Registry("fusion")
F = TypeVar("F", bound=type[Fusion])


def register_fusion(name: str) -> Callable[[F], F]:
    """Class decorator adding a fusion design under ``name``."""

    def deco(cls: F) -> F:
        FUSIONS.register(name)(cls)
        return cls

    return deco


def available_fusions() -> list[str]:
    """Registered fusion names, sorted."""
    return sorted(FUSIONS)


def build_fusion(name: str, cfg: FusionConfig) -> Fusion:
    """Instantiate the fusion registered as ``name``; unknown names list the valid ones (sorted)."""
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; available: {', '.join(available_fusions())}")
    return FUSIONS.get(name)(cfg)
