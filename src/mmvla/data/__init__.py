"""Episode recording, dataset reading and normalisation statistics (LeRobot v3.0 layout on disk).

Public API (imported lazily so that collection workers do not pay for ``import torch``):

- :class:`VLADataset` (``mmvla.data.dataset``): PyTorch dataset with action chunks and history.
- :func:`collect_dataset`, :class:`CollectSummary` (``mmvla.data.collect``): run the scripted expert in
  parallel and write a dataset atomically.
- :class:`LeRobotWriter`, :class:`Episode` (``mmvla.data.lerobot_format``): write the layout.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmvla.data.collect import CollectSummary, collect_dataset
    from mmvla.data.dataset import VLADataset
    from mmvla.data.lerobot_format import Episode, LeRobotWriter

_LAZY = {
    "VLADataset": "mmvla.data.dataset",
    "collect_dataset": "mmvla.data.collect",
    "CollectSummary": "mmvla.data.collect",
    "Episode": "mmvla.data.lerobot_format",
    "LeRobotWriter": "mmvla.data.lerobot_format",
}

__all__ = ["CollectSummary", "Episode", "LeRobotWriter", "VLADataset", "collect_dataset"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mmvla.data' has no attribute {name!r}")
