"""Shared fixtures: a tiny synthetic dataset in the LeRobot layout and small policy configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from vla_testdata import (  # re-exported: tests here import them from .conftest
    IMAGE,
    INSTRUCTIONS,
    small_policy_dict,
    synthetic_episode,
    write_synthetic_dataset,
)

__all__ = ["IMAGE", "INSTRUCTIONS", "small_policy_dict", "synthetic_episode", "write_synthetic_dataset"]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "tiny")
