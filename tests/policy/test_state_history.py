"""A policy that reads its recent motion (``state_history``): the proprio input against a float64
reference, and act() feeding the network the same past states the dataset gives training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vla_testdata import small_policy_dict

from mmvla.data.dataset import VLADataset
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.policy.model import STATE_MOTION_GAIN
from mmvla.training.trainer import dataset_normalizer


def _policy(dataset: VLADataset, p: int) -> VLAPolicy:
    cfg = PolicyConfig.from_dict(small_policy_dict(state_history=p, camera_dropout=0.0))
    torch.manual_seed(0)
    return VLAPolicy(cfg, dataset_normalizer(dataset, cfg))


def test_proprio_input_is_state_then_scaled_motion(tiny_dataset):
    ds = VLADataset(tiny_dataset, state_history=2, progress=False)
    policy = _policy(ds, 2)
    batch = ds.get_batch(np.arange(6))
    got = policy._proprio_input(batch["state"], batch["past_state"]).double().numpy()  # (B, 15)
    stats = ds.stats["observation.state"]
    mean, std = stats["mean"].astype(np.float64), stats["std"].astype(np.float64)
    x = (batch["state"].double().numpy() - mean) / std  # (B, 5)
    past = (batch["past_state"].double().numpy() - mean) / std  # (B, 2, 5)
    want = np.concatenate([x, ((x[:, None] - past) * STATE_MOTION_GAIN).reshape(6, -1)], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    still = policy._proprio_input(batch["state"], None).numpy()  # no past: a robot that has not moved
    np.testing.assert_allclose(still[:, 5:], 0.0)
    with pytest.raises(ValueError, match="past_state"):
        policy._proprio_input(batch["state"], batch["past_state"][:, :1])


def test_act_reads_the_past_states_training_reads(tiny_dataset):
    ds = VLADataset(tiny_dataset, chunk_size=3, state_history=2, progress=False)
    policy = _policy(ds, 2).eval()
    rows = ds.episode_rows(0)
    policy.reset(chunk_mode="ensemble")
    for t in range(4):  # frames 0, 1 pad with the episode's first state, as the dataset does
        i = rows.start + t
        obs = {c: ds.images[c][i].transpose(1, 2, 0) for c in ds.cameras}
        obs.update(state=ds.state[i], instruction=ds.tasks[int(ds.task_index[i])])
        policy._chunker.reset()  # so the action is this step's chunk[0], not an ensemble
        action = policy.act(obs)
        np.testing.assert_array_equal(policy._past_window()[0].numpy(), ds[i]["past_state"].numpy())
        with torch.no_grad():
            want = policy._decode(policy.fuse_window(ds.get_batch([i])))[0, 0].numpy()
        np.testing.assert_allclose(action, want, rtol=1e-5, atol=1e-5)
    # The run-time state carries the window (a server swaps it per connection); reset clears it.
    saved = policy.runtime_state()
    policy.reset()
    assert policy._past_window() is None
    policy.set_runtime_state(saved)
    np.testing.assert_array_equal(policy._past_window()[0].numpy(), ds[rows.start + 3]["past_state"].numpy())


def test_state_history_config_is_validated():
    with pytest.raises(ValueError, match="state_history"):
        PolicyConfig.from_dict(small_policy_dict(state_history=-1))
    with pytest.raises(ValueError, match="temporal memory"):
        PolicyConfig.from_dict(small_policy_dict(state_history=1, temporal={"context": 2}))
    with pytest.raises(ValueError, match="use_proprio"):
        PolicyConfig.from_dict(small_policy_dict(state_history=1, use_proprio=False))
