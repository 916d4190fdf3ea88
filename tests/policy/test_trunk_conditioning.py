"""A vision trunk conditioned on the instruction's roles too (``condition_roles``): validated, identical
to the sentence-only trunk at initialisation, each role's summary through its own projection."""

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


def test_roles_start_as_the_sentence_only_trunk(tiny_dataset):
    ds = VLADataset(tiny_dataset, progress=False)
    plain, roles = _policy(ds), _policy(ds, condition_roles=True)
    missing, unexpected = roles.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == [
        "role_cond.0.bias",
        "role_cond.0.weight",
        "role_cond.1.bias",
        "role_cond.1.weight",
    ]
    assert not unexpected
    batch = ds.get_batch(np.arange(4))
    with torch.no_grad():
        a = plain.encode(batch["images"], batch["instruction"], batch["state"]).tokens["vision"]
        b = roles.encode(batch["images"], batch["instruction"], batch["state"]).tokens["vision"]
    torch.testing.assert_close(a, b)


def test_roles_are_the_task_s_noun_phrases():
    from mmvla.policy.reading import InstructionReader
    from mmvla.sim.tabletop.wordings import parse_wording

    reader = InstructionReader("none", ())
    for text in (
        "put the red cube on the blue slab",
        "On the blue slab, place the red cube.",
        "pick up the red cube",
    ):
        task = parse_wording(text)  # the simulator's ground truth
        base = f"the {task.base[0]} {task.base[1]}" if task.base else ""
        assert reader.roles(text) == (f"the {task.target[0]} {task.target[1]}", base)
    assert reader.roles("push the green cylinder to the left") == ("the green cylinder", "")
    assert reader.roles("open the drawer") == ("", "")  # not a tabletop task


def test_role_condition_is_each_role_s_summary_through_its_projection(tiny_dataset):
    ds = VLADataset(tiny_dataset, progress=False)
    with pytest.raises(ValueError, match="condition_roles"):
        PolicyConfig.from_dict(small_policy_dict(condition_roles=True))  # trunk not conditioned
    policy = _policy(ds, condition_roles=True)
    texts = ["put the red cube on the blue slab", "pick up the red cube", "open the drawer"]
    with torch.no_grad():
        assert policy._role_condition(texts, None).abs().max() == 0  # zero-initialised
        for p in policy.role_cond.parameters():
            torch.nn.init.normal_(p, std=0.3)
        got = policy._role_condition(texts, None).double()
        target, base = policy.role_cond
        lang = policy.language(["the red cube", "the blue slab"]).pooled.double()

        def project(layer, x):
            return x @ layer.weight.double().T + layer.bias.double()

        want_place = project(target, lang[0]) + project(base, lang[1])
        torch.testing.assert_close(got[0], want_place, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[1], project(target, lang[0]), rtol=1e-5, atol=1e-5)  # pick: no base
        torch.testing.assert_close(got[2], torch.zeros_like(got[2]))  # no task read: nothing
        dropped = policy._role_condition(texts, torch.tensor([[False], [True], [True]]))
        assert dropped[0].abs().max() == 0
    batch = ds.get_batch(np.arange(2))
    with torch.no_grad():
        plain = _policy(ds).encode(batch["images"], batch["instruction"], batch["state"]).tokens["vision"]
        roles = policy.encode(batch["images"], batch["instruction"], batch["state"]).tokens["vision"]
    assert (plain - roles).abs().max() > 1e-4  # the roles now reach the trunk's features
