"""Fixtures for the serving tests: a tiny trained checkpoint, a running server, observation streams."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from vla_testdata import IMAGE, INSTRUCTIONS, small_policy_dict, write_synthetic_dataset

from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.serving.server import PolicyServer
from mmvla.sim.tabletop.tasks import all_instructions

MAX_MESSAGE_BYTES = 64 * 1024  # two 32 px cameras take ~6 KB; fuzzed "huge" frames exceed this


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny policy (32 px, both cameras, the simulator's instructions) trained for a few steps."""
    from mmvla.training.config import TrainConfig
    from mmvla.training.trainer import train

    root = tmp_path_factory.mktemp("serve")
    data = write_synthetic_dataset(root / "data", episodes=6, length=12)
    cfg = PolicyConfig.from_dict(
        small_policy_dict(instructions=sorted({*INSTRUCTIONS, *all_instructions("all")}))
    )
    tcfg = TrainConfig(steps=12, batch_size=8, warmup_steps=2, log_every=4, checkpoint_every=12, threads=1)
    threads = torch.get_num_threads()
    try:
        return Path(train(data, root / "run", cfg, tcfg, progress=False).policy_dir)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a small shared machine two threads per process oversubscribe the cores
    (a 32 px step goes from ~10 ms to ~400 ms under load), and the server's inference thread is one more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def local_policy(checkpoint: Path) -> VLAPolicy:
    """A fresh local copy of the served policy (default safety layer)."""
    return VLAPolicy.from_pretrained(checkpoint)


@pytest.fixture(scope="module")
def server(checkpoint: Path) -> Iterator[PolicyServer]:
    srv = PolicyServer.from_checkpoint(checkpoint, port=0, max_message_bytes=MAX_MESSAGE_BYTES).start()
    try:
        yield srv
    finally:
        srv.stop()


def make_obs(rng: np.random.Generator, instruction: str = "pick up the red cube", **extra: object) -> dict:
    """A valid random observation (textured images, a plausible state)."""
    state = rng.normal(scale=0.05, size=5).astype(np.float32)
    state[4] = rng.uniform(0.0, 0.086)
    return {
        "front": rng.integers(0, 255, (IMAGE, IMAGE, 3), dtype=np.uint8),
        "wrist": rng.integers(0, 255, (IMAGE, IMAGE, 3), dtype=np.uint8),
        "state": state,
        "instruction": instruction,
        **extra,
    }
