"""Register mmvla's Gymnasium ids (:data:`mmvla.sim.GYM_ENTRY_POINTS`) with string entry points.

``import mmvla`` calls :func:`register_when_gymnasium_loads`: Gymnasium costs ~0.3 s to import (numpy
included) and most of the library never needs it, so the ids are registered at once when Gymnasium is
already imported and otherwise right after its first import, by a one-shot import hook. Either way no
environment module (and so no MuJoCo) is imported and no environment variable is touched until
``gym.make`` builds an environment.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from mmvla.sim import GYM_ENTRY_POINTS

if TYPE_CHECKING:
    from importlib.machinery import ModuleSpec


def register() -> None:
    """Register every id that is not registered yet (imports Gymnasium)."""
    import gymnasium as gym  # only here: importing it is what the hook defers

    for env_id, entry_point in GYM_ENTRY_POINTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=None)


class _RegisterAfterImport:
    """A ``sys.meta_path`` finder (importlib.abc is not imported: it costs ~45 ms). Finds ``gymnasium`` through the other finders and registers the ids once its module has run."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "gymnasium":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps find_spec below from finding us again
        spec = importlib.util.find_spec(fullname)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_register(module: ModuleType) -> None:
            exec_module(module)
            register()

        loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


def register_when_gymnasium_loads() -> None:
    """Register the ids now if Gymnasium is imported, else right after it is (idempotent)."""
    if "gymnasium" in sys.modules:
        register()
    elif not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
