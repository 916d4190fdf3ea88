"""Shared test data: a tiny synthetic dataset in the LeRobot layout, small policy configs and an
untrained tabletop checkpoint.

Importable from any test (``tests/`` is on ``sys.path`` under pytest): ``from vla_testdata import ...``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mmvla.core.keys import ACTION_KEY, STATE_KEY
from mmvla.data.lerobot_format import Episode, LeRobotWriter
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.policy.normalize import Normalizer
from mmvla.sim.tabletop.tasks import all_instructions

IMAGE = 32
ENV_STATE = ("square_x", "square_y")
INSTRUCTIONS = ("pick up the red cube", "pick up the blue cylinder", "push the green slab to the left")


def synthetic_episode(rng: np.random.Generator, length: int, task_id: int) -> Episode:
    """An episode whose action depends on the image (a bright square's position) and the instruction;
    its privileged ``env_state`` is the square's (x, y) pixel position."""
    images = rng.integers(0, 40, size=(length, IMAGE, IMAGE, 3), dtype=np.uint8)
    pos = rng.integers(2, IMAGE - 8, size=(length, 2))
    for t, (y, x) in enumerate(pos):
        images[t, y : y + 6, x : x + 6, task_id % 3] = 255
    state = rng.normal(size=(length, 5)).astype(np.float32)
    action = np.zeros((length, 7), dtype=np.float32)
    action[:, 0] = (pos[:, 1] / IMAGE) * 2 - 1
    action[:, 1] = (pos[:, 0] / IMAGE) * 2 - 1
    action[:, 6] = 1.0 if task_id == 0 else -1.0
    return Episode(
        images={"front": images, "wrist": images[:, ::-1].copy()},
        state=state,
        action=action,
        task=INSTRUCTIONS[task_id],
        env_state=pos[:, ::-1].astype(np.float32),
    )


def write_synthetic_dataset(root: Path, episodes: int = 12, length: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    with LeRobotWriter(
        root, cameras=("front", "wrist"), image_size=IMAGE, fps=10, env_state_names=ENV_STATE
    ) as w:
        for i in range(episodes):
            w.add_episode(synthetic_episode(rng, length, i % 3))
        w.finish(split="train")
    return root


def small_policy_dict(**overrides: object) -> dict:
    d = {
        "cameras": ["front", "wrist"],
        "image_size": IMAGE,
        "instructions": list(INSTRUCTIONS),
        "dim": 32,
        "fusion": "film",
        "fusion_options": {"num_heads": 2, "num_layers": 1},
        "head": {"kind": "regression", "chunk_size": 3, "hidden": 32},
    }
    d.update(overrides)
    return d


def save_tiny_checkpoint(directory: Path) -> Path:
    """An untrained 32-pixel policy for the tabletop's training instructions, saved in ``directory``."""
    cfg = PolicyConfig(
        cameras=("front", "wrist"),
        image_size=IMAGE,
        dim=16,
        instructions=tuple(all_instructions("train")),
        fusion_options={"num_heads": 2, "num_layers": 1},
        head={"kind": "regression", "chunk_size": 2, "hidden": 16},
    )
    stats = {
        STATE_KEY: {"mean": [0.0] * 5, "std": [1.0] * 5},
        ACTION_KEY: {"mean": [0.0] * 7, "std": [1.0] * 7},
    }

    torch.manual_seed(0)
    policy = VLAPolicy(cfg, Normalizer(stats, {STATE_KEY: "mean_std", ACTION_KEY: "mean_std"}))
    return policy.save_pretrained(directory)
