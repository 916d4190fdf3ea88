"""Fixtures: synthetic episodes and a small dataset written from them (no simulator needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic_episodes import make_episode, write_dataset

from mmvla.data.lerobot_format import Episode


@pytest.fixture
def episodes() -> list[Episode]:
    rng = np.random.default_rng(0)
    return [make_episode(rng, length, i) for i, length in enumerate([7, 1, 12, 5, 9])]


@pytest.fixture
def dataset_root(tmp_path: Path, episodes: list[Episode]) -> Path:
    root = tmp_path / "ds"
    write_dataset(root, episodes)
    return root
