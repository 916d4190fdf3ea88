"""The auxiliary privileged-state loss: recorded state round-trips, trains, and is checked for."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vla_testdata import small_policy_dict

from mmvla.core.keys import ENV_STATE_KEY
from mmvla.core.logs import read_log
from mmvla.data.dataset import VLADataset
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.training.config import TrainConfig
from mmvla.training.trainer import dataset_normalizer, train


def test_environment_state_round_trips_with_numpy_stats(tiny_dataset):
    ds = VLADataset(tiny_dataset, chunk_size=3, progress=False)
    assert ds.env_state_dim == 2
    # Written from the bright square's position in every frame: recompute it from the images.
    front = ds.images["front"]  # (N, 3, H, W)
    for i in (0, 7, len(ds) - 1):
        bright = np.argwhere(front[i].max(0) == 255)
        np.testing.assert_array_equal(ds.env_state[i], bright.min(0)[::-1])
    s = ds.stats[ENV_STATE_KEY]
    np.testing.assert_allclose(s["mean"], ds.env_state.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(s["std"], ds.env_state.astype(np.float64).std(0), rtol=1e-5)
    assert ds.get_batch([0, 5])["environment_state"].shape == (2, 2)


def test_aux_loss_trains_and_is_reported(tiny_dataset, tmp_path):
    cfg = PolicyConfig.from_dict(small_policy_dict(aux_state_weight=1.0))
    tcfg = TrainConfig(steps=100, batch_size=16, log_every=10, lr=3e-3, augment_shift=0)
    r = train(tiny_dataset, tmp_path / "run", cfg, tcfg, progress=False)
    assert len(read_log(r.run_dir / "log.csv")["loss_state"]) == 10
    trained = VLAPolicy.from_pretrained(r.policy_dir)
    assert trained.cfg.env_state_dim == 2 and trained.aux_state is not None
    ds = VLADataset(tiny_dataset, chunk_size=3, progress=False)
    torch.manual_seed(tcfg.seed)  # the same initial weights train() started from
    fresh = VLAPolicy(trained.cfg, trained.normalizer).eval()

    def state_error(policy: VLAPolicy) -> float:
        batch = ds.get_batch(np.arange(len(ds)))
        with torch.no_grad():
            fused = policy.fuse(batch["images"], batch["instruction"], batch["state"])
            want = policy.normalizer.normalize(ENV_STATE_KEY, batch["environment_state"])
            return float(((policy.aux_state(fused.pooled) - want) ** 2).mean())

    assert state_error(trained) < 0.5 * state_error(fresh)


def test_aux_loss_needs_the_recorded_state(tiny_dataset):
    ds = VLADataset(tiny_dataset, chunk_size=3, progress=False)
    cfg = PolicyConfig.from_dict(small_policy_dict(aux_state_weight=1.0, env_state_dim=2))
    torch.manual_seed(0)
    policy = VLAPolicy(cfg, dataset_normalizer(ds, cfg)).train()
    batch = ds.get_batch(np.arange(4))
    del batch["environment_state"]
    with pytest.raises(ValueError, match="environment_state"):
        policy(batch)
