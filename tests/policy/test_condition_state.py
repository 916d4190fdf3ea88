"""A vision trunk conditioned on the robot state too (``condition_state``): validated, identical to the
language-only trunk at initialisation, and its features then follow the state while the plain one's
cannot."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vla_testdata import small_policy_dict

from mmvla.data.dataset import VLADataset
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.training.trainer import dataset_normalizer

VISION = {"kind": "cnn", "channels": [8, 16], "strides": [2, 2], "condition": True}


def _policy(dataset: VLADataset, **overrides) -> VLAPolicy:
    cfg = PolicyConfig.from_dict(small_policy_dict(vision=VISION, camera_dropout=0.0, **overrides))
    torch.manual_seed(0)
    return VLAPolicy(cfg, dataset_normalizer(dataset, cfg)).eval()


def test_condition_state_is_validated():
    with pytest.raises(ValueError, match="condition_state"):
        PolicyConfig.from_dict(small_policy_dict(condition_state=True))  # trunk not conditioned
    with pytest.raises(ValueError, match="condition_state"):
        PolicyConfig.from_dict(small_policy_dict(vision=VISION, condition_state=True, use_proprio=False))


def test_state_reaches_the_trunk_only_when_asked(tiny_dataset):
    ds = VLADataset(tiny_dataset, progress=False)
    plain, conditioned = _policy(ds), _policy(ds, condition_state=True)
    missing, unexpected = conditioned.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["state_cond.bias", "state_cond.weight"] and not unexpected
    batch = ds.get_batch(np.arange(4))
    images = batch["images"]
    moved = batch["state"] + torch.tensor([0.05, -0.03, 0.02, 0.0, 0.01])
    with torch.no_grad():
        # zero-initialised: the same vision tokens as the language-only trunk, for any state
        for state in (batch["state"], moved):
            a = plain.encode(images, batch["instruction"], state).tokens["vision"]
            b = conditioned.encode(images, batch["instruction"], state).tokens["vision"]
            torch.testing.assert_close(a, b)
        torch.nn.init.normal_(conditioned.state_cond.weight, std=0.5)
        vis = [
            conditioned.encode(images, batch["instruction"], s).tokens["vision"]
            for s in (batch["state"], moved)
        ]
        flat = [
            plain.encode(images, batch["instruction"], s).tokens["vision"] for s in (batch["state"], moved)
        ]
    assert (vis[0] - vis[1]).abs().max() > 1e-3  # the trunk now reads the state
    torch.testing.assert_close(flat[0], flat[1])  # the language-only trunk never does
