"""PolicyConfig.ground_phrases: the trunk runs once per named object, checked against direct calls.

References: the phrases a text names come from the task vocabulary (``TaskSpec``), and each token is
recomputed here by calling the vision encoder with the language encoder's summary of that phrase.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vla_testdata import small_policy_dict

from mmvla.data.dataset import VLADataset
from mmvla.modules.fusion import available_fusions
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.policy.reading import InstructionReader
from mmvla.sim.tabletop.tasks import all_tasks
from mmvla.training.trainer import dataset_normalizer

VISION = {
    "kind": "cnn",
    "channels": (8, 8),
    "strides": (2, 2),
    "condition": True,
    "pool": "keypoint_features",
}
# A place task, a pick, a text that names no task, and a second place task.
TEXTS = (
    "put the red cube on the blue slab",
    "pick up the green cylinder",
    "do something",
    "put the yellow slab on the purple cube",
)


@pytest.fixture(scope="module")
def dataset(tiny_dataset) -> VLADataset:
    return VLADataset(tiny_dataset, chunk_size=3, progress=False)


def _policy(dataset: VLADataset, **overrides: object) -> VLAPolicy:
    d = small_policy_dict(vision=VISION, vision_tokens="pooled", ground_phrases=True, **overrides)
    cfg = PolicyConfig.from_dict(d)
    torch.manual_seed(0)
    return VLAPolicy(cfg, dataset_normalizer(dataset, cfg)).eval()


def _inputs(dataset: VLADataset, n: int):
    b = dataset.get_batch(np.arange(n))
    return b["images"], b["state"]


def test_phrases_name_the_task_objects():
    reader = InstructionReader("none", ())
    for task in all_tasks("all"):
        target, base = reader.phrases(task.instruction)
        assert target == f"the {task.target[0]} {task.target[1]}"
        assert base == (f"the {task.base[0]} {task.base[1]}" if task.base else "")
    assert reader.phrases("do something") == ("", "")


def test_each_token_is_the_trunk_conditioned_on_its_phrase(dataset):
    policy = _policy(dataset)
    images, state = _inputs(dataset, len(TEXTS))
    with torch.no_grad():
        x = policy.encode(images, list(TEXTS), state)
    cams = policy.cfg.cameras
    C, D = len(cams), policy.cfg.dim
    v = x.tokens["vision"].view(len(TEXTS), C, 2, D)
    mask = x.masks["vision"].view(len(TEXTS), C, 2)
    want_cond = [
        ("the red cube", "the blue slab"),
        ("the green cylinder", None),
        ("do something", None),  # no single task: the whole sentence
        ("the yellow slab", "the purple cube"),
    ]
    with torch.no_grad():
        for i, phrases in enumerate(want_cond):
            for role, phrase in enumerate(phrases):
                if phrase is None:
                    assert not mask[i, :, role].any()
                    assert torch.all(v[i, :, role] == 0)
                    continue
                assert mask[i, :, role].all()
                cond = policy.language([phrase]).pooled  # (1, D)
                for c, cam in enumerate(cams):
                    img = images[cam][i : i + 1].float() / 255.0
                    pooled = policy.vision(img, cond).pooled[0]
                    want = pooled + policy.role_embed[role] + policy.camera_embed[c]
                    torch.testing.assert_close(v[i, c, role], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fusion", available_fusions())
def test_batch_rows_act_as_they_do_alone(dataset, fusion):
    # Every fusion must ignore the masked base tokens of rows that name no base.
    policy = _policy(dataset, fusion=fusion)
    images, state = _inputs(dataset, len(TEXTS))
    batched, _ = policy.predict_chunk(images, list(TEXTS), state)
    for i, text in enumerate(TEXTS):
        alone, _ = policy.predict_chunk(
            {c: v[i : i + 1] for c, v in images.items()}, [text], state[i : i + 1]
        )
        torch.testing.assert_close(batched[i : i + 1], alone, atol=2e-5, rtol=1e-4, msg=text)


@pytest.mark.parametrize("texts", [TEXTS, TEXTS[1:3]])
def test_the_base_role_reaches_the_loss_only_when_a_base_is_named(dataset, texts):
    policy = _policy(dataset, camera_dropout=0.0).train()
    b = dataset.get_batch(np.arange(len(texts)))
    b["instruction"] = list(texts)
    loss, _ = policy(b)
    loss.backward()
    assert policy.role_embed is not None and policy.role_embed.grad is not None
    base_grad = policy.role_embed.grad[1].abs().sum()
    if any(t.startswith("put") for t in texts):
        assert base_grad > 0
    else:  # masked base tokens carry nothing to the loss
        assert base_grad == 0


def test_prepared_trace_covers_the_base_pass(dataset):
    policy = _policy(dataset)
    policy.trace_vision()
    policy.prepare_vision_trace(max_batch=3)
    assert policy.vision_trace is not None
    C = len(policy.cfg.cameras)
    # Three samples that all name a base give the trunk 6 samples' images.
    assert {k[0] for k in policy.vision_trace._checked} == {n * C for n in range(1, 7)}


def test_config_needs_a_conditioned_pooled_trunk():
    with pytest.raises(ValueError, match="ground_phrases"):
        PolicyConfig.from_dict(small_policy_dict(ground_phrases=True))  # unconditioned trunk
    with pytest.raises(ValueError, match="ground_phrases"):
        PolicyConfig.from_dict(small_policy_dict(vision=VISION, vision_tokens="all", ground_phrases=True))
