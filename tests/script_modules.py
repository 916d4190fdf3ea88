"""Import a repository script (benchmarks/*.py, scripts/*.py) as a module for its tests.

Importable from any test (``tests/`` is on ``sys.path`` under pytest): ``from script_modules import load_script``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(relative_path: str, name: str) -> ModuleType:
    """The script at ``ROOT / relative_path``, executed once as module ``name`` (registered in
    ``sys.modules``: dataclasses defined in it need their module there)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relative_path)
    assert spec is not None and spec.loader is not None, relative_path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
