"""Every fusion and head builds, trains a step, saves and loads bit-identically; bad checkpoints fail clearly."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from vla_testdata import IMAGE, small_policy_dict

from mmvla.data.dataset import VLADataset
from mmvla.modules.fusion import available_fusions
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.policy.observation import ObservationError
from mmvla.training.trainer import dataset_normalizer


@pytest.fixture(scope="module")
def dataset(tiny_dataset):
    return VLADataset(tiny_dataset, chunk_size=3, progress=False)


def _policy(dataset, **overrides) -> VLAPolicy:
    cfg = PolicyConfig.from_dict(small_policy_dict(**overrides))
    torch.manual_seed(0)
    return VLAPolicy(cfg, dataset_normalizer(dataset, cfg))


def _obs(rng: np.random.Generator, instruction: str = "pick up the red cube") -> dict:
    return {
        "front": rng.integers(0, 255, (IMAGE, IMAGE, 3), dtype=np.uint8),
        "wrist": rng.integers(0, 255, (IMAGE, IMAGE, 3), dtype=np.uint8),
        "state": rng.normal(size=5).astype(np.float32),
        "instruction": instruction,
    }


@pytest.mark.parametrize("fusion", available_fusions())
def test_every_fusion_trains_a_step(dataset, fusion):
    policy = _policy(dataset, fusion=fusion, camera_dropout=0.3, instruction_dropout=0.3).train()
    batch = dataset.get_batch(np.arange(6))
    opt = torch.optim.SGD(policy.parameters(), lr=0.1)
    # Two steps: FiLM's zero-initialised γ/β generator passes no gradient to language until it moves.
    for _ in range(2):
        opt.zero_grad()
        loss, parts = policy(batch)
        assert torch.isfinite(loss) and set(parts) == {"loss_action", "loss_aux"}
        loss.backward()
        opt.step()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.vision.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.language.parameters())


@pytest.mark.parametrize("head", ["regression", "bins", "flow"])
def test_save_load_gives_bit_identical_actions(dataset, tmp_path, head):
    policy = _policy(dataset, head={"kind": head, "chunk_size": 3, "hidden": 32, "flow_steps": 3}).eval()
    policy.save_pretrained(tmp_path / "ckpt")
    loaded = VLAPolicy.from_pretrained(tmp_path / "ckpt")
    for chunk_mode in ("ensemble", "execute"):
        policy.reset(chunk_mode)
        loaded.reset(chunk_mode)
        rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(1)
        for _ in range(5):
            torch.manual_seed(3)  # the flow head samples noise from the global generator
            a = policy.act(_obs(rng_a))
            torch.manual_seed(3)
            b = loaded.act(_obs(rng_b))
            assert a.shape == (7,) and a.dtype == np.float32
            assert np.array_equal(a, b)
            assert np.all(np.abs(a) <= 1.0)


def test_tampered_checkpoints_fail_with_clear_errors(dataset, tmp_path):
    policy = _policy(dataset)
    good = policy.save_pretrained(tmp_path / "good")

    def variant(name):
        d = tmp_path / name
        shutil.copytree(good, d)
        return d

    d = variant("shapes")
    cfg = json.loads((d / "config.json").read_text())
    cfg["dim"] = 48
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="wrong shapes"):
        VLAPolicy.from_pretrained(d)

    d = variant("nostats")
    (d / "stats.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"stats\.json"):
        VLAPolicy.from_pretrained(d)

    d = variant("badstats")
    stats = json.loads((d / "stats.json").read_text())
    del stats["stats"]["action"]
    (d / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(ValueError, match="'action'"):
        VLAPolicy.from_pretrained(d)

    d = variant("fusion")
    cfg = json.loads((d / "config.json").read_text())
    cfg["fusion"] = "telepathy"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown fusion 'telepathy'"):
        VLAPolicy.from_pretrained(d)

    d = variant("missing_tensor")
    state = load_file(str(d / "model.safetensors"))
    state.pop(sorted(state)[0])
    save_file(state, str(d / "model.safetensors"))
    with pytest.raises(ValueError, match="missing tensors"):
        VLAPolicy.from_pretrained(d)

    d = variant("garbage")
    (d / "model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="unreadable"):
        VLAPolicy.from_pretrained(d)


def test_act_validates_observations(dataset):
    policy = _policy(dataset).eval()
    policy.reset()
    rng = np.random.default_rng(0)
    bad = [
        ({"front": None}, "missing camera 'front'"),
        ({"front": np.zeros((IMAGE, IMAGE, 3), np.float32)}, "dtype uint8"),
        ({"wrist": np.zeros((IMAGE, IMAGE + 1, 3), np.uint8)}, "shape"),
        ({"state": np.array([np.nan, 0, 0, 0, 0], np.float32)}, "NaN"),
        ({"state": np.zeros(4, np.float32)}, "shape"),
        ({"instruction": "  "}, "non-empty"),
    ]
    for patch, msg in bad:
        obs = _obs(rng)
        obs.update(patch)
        if patch.get("front", 1) is None:
            del obs["front"]
        with pytest.raises(ObservationError, match=msg):
            policy.act(obs)


def test_a_long_string_state_is_refused_without_copying_it():
    import tracemalloc

    from mmvla.policy.observation import validate_observation

    obs = {"front": np.zeros((IMAGE, IMAGE, 3), np.uint8), "instruction": "go"}
    for value in ("x" * 2**22, b"x" * 2**22):
        tracemalloc.start()
        try:
            with pytest.raises(ObservationError, match="got a string of 4194304"):
                validate_observation({**obs, "state": value}, ["front"], IMAGE, 5)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 2**20, peak  # np.asarray made a 16 MiB UCS-4 copy


def test_camera_dropout_masks_tokens(dataset):
    policy = _policy(dataset, camera_dropout=0.5).train()
    batch = dataset.get_batch(np.arange(8))
    torch.manual_seed(0)
    x = policy.encode(batch["images"], batch["instruction"], batch["state"])
    keep = x.masks["vision"]
    assert (~keep).any() and keep.any()
    assert torch.all(x.tokens["vision"][~keep] == 0)
    policy.eval()
    assert policy.encode(batch["images"], batch["instruction"], batch["state"]).masks["vision"].all()


def test_conditioned_vision_reads_the_instruction(dataset, tmp_path):
    vision = {"kind": "cnn", "channels": [8, 16], "strides": [2, 2], "residual": False, "condition": True}
    policy = _policy(dataset, vision=vision).eval()
    batch = dataset.get_batch(np.arange(4))
    images, state = batch["images"], batch["state"]
    a = policy.encode(images, ["pick up the red cube"] * 4, state).tokens["vision"]
    b = policy.encode(images, ["push the green slab to the left"] * 4, state).tokens["vision"]
    assert (a - b).abs().max() > 1e-4  # same pixels, other instruction: other vision tokens
    # The trunk is conditioned on the sentence summary the fusion sees (zero when the text is dropped).
    lang = policy.language(["pick up the red cube"] * 4).pooled
    direct = policy.vision(images["front"].float() / 255.0, lang).tokens
    torch.testing.assert_close(a[:, 1 : 1 + direct.shape[1]] - policy.camera_embed[0], direct)
    policy.save_pretrained(tmp_path / "p")
    loaded = VLAPolicy.from_pretrained(tmp_path / "p").eval()
    torch.testing.assert_close(loaded.encode(images, ["pick up the red cube"] * 4, state).tokens["vision"], a)


def test_pooled_vision_tokens_give_one_token_per_camera(dataset):
    vision = {"kind": "cnn", "channels": [8, 16], "strides": [2, 2], "pool": "keypoints", "condition": True}
    policy = _policy(dataset, vision=vision, vision_tokens="pooled").eval()
    batch = dataset.get_batch(np.arange(4))
    x = policy.encode(batch["images"], batch["instruction"], batch["state"])
    assert x.tokens["vision"].shape == (4, 2, policy.cfg.dim)  # front, wrist
    lang = policy.language(list(batch["instruction"])).pooled
    front = policy.vision(batch["images"]["front"].float() / 255.0, lang).pooled
    torch.testing.assert_close(x.tokens["vision"][:, 0], front + policy.camera_embed[0])
    loss, _ = policy.train()(batch)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="vision_tokens"):
        PolicyConfig.from_dict(small_policy_dict(vision_tokens="grid"))
