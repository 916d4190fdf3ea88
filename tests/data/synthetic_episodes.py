"""Synthetic episodes for the data tests (no simulator needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmvla.data.lerobot_format import Episode, LeRobotWriter
from mmvla.sim.registry import TABLETOP_ENV_STATE

CAMERAS = ("front", "wrist")
SIZE = 16
TASKS = ("pick up the red cube", "push the blue slab to the left", "pick up the green cylinder")


def make_episode(
    rng: np.random.Generator, length: int, index: int, size: int = SIZE, env_state: bool = False
) -> Episode:
    """Random frames (uint8 noise, so PNG has work to do), state and action; task cycles over TASKS;
    with ``env_state`` also a (T, E) privileged state, E as the tabletop records."""
    return Episode(
        images={cam: rng.integers(0, 256, (length, size, size, 3), dtype=np.uint8) for cam in CAMERAS},
        state=rng.normal(size=(length, 5)).astype(np.float32),
        action=rng.uniform(-1, 1, size=(length, 7)).astype(np.float32),
        task=TASKS[index % len(TASKS)],
        extra={
            "family": "pick" if index % 2 == 0 else "push",
            "split": "train",
            "seed": 100 + index,
            "target": "red cube",
        },
        env_state=rng.normal(size=(length, len(TABLETOP_ENV_STATE))).astype(np.float32)
        if env_state
        else None,
    )


def write_dataset(root: Path, episodes: list[Episode], **kw: Any) -> dict[str, Any]:
    with LeRobotWriter(
        root, cameras=CAMERAS, image_size=episodes[0].images["front"].shape[1], fps=10, **kw
    ) as w:  # type: ignore[arg-type]
        for ep in episodes:
            w.add_episode(ep)
        return w.finish(split="train")
