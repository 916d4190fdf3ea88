"""Training: the loss falls, a killed run resumes exactly, and DDP keeps replicas identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from vla_testdata import INSTRUCTIONS, small_policy_dict

from mmvla.core.logs import read_log
from mmvla.policy import PolicyConfig
from mmvla.training.config import TrainConfig
from mmvla.training.trainer import lr_at, train, weights_sha256


def _cfgs(**train_overrides):
    policy = PolicyConfig.from_dict(small_policy_dict())
    base = {
        "steps": 40,
        "batch_size": 8,
        "log_every": 5,
        "checkpoint_every": 10,
        "warmup_steps": 5,
        "ema_decay": 0.9,
        "device": "cpu",  # bit-exact resume is a CPU guarantee; CUDA kernels may be non-deterministic
    }
    return policy, TrainConfig(**{**base, **train_overrides})


def test_lr_schedule_closed_form():
    cfg = TrainConfig(steps=110, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert lr_at(110, cfg) == pytest.approx(0.1)


def test_loss_falls(tiny_dataset, tmp_path):
    policy, tcfg = _cfgs(steps=100, ema_decay=0.0, lr=3e-3)
    train(tiny_dataset, tmp_path / "run", policy, tcfg, progress=False)
    log = read_log(tmp_path / "run" / "log.csv")
    first, last = log["loss"][0], sum(log["loss"][-3:]) / 3
    assert last < 0.6 * first, (first, last)
    assert (tmp_path / "run" / "policy" / "model.safetensors").is_file()


def test_resume_after_kill_matches_uninterrupted_run(tiny_dataset, tmp_path):
    policy, tcfg = _cfgs()
    train(tiny_dataset, tmp_path / "full", policy, tcfg, progress=False)
    # "Kill" after 23 steps: the last checkpoint is at step 20, steps 21-23 are lost and redone.
    train(tiny_dataset, tmp_path / "cut", policy, tcfg, progress=False, stop_after=23)
    assert not (tmp_path / "cut" / "policy").exists()
    train(tiny_dataset, tmp_path / "cut", policy, tcfg, progress=False, resume=True)
    a = load_file(str(tmp_path / "full" / "checkpoints" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "checkpoints" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = load_file(str(tmp_path / "full" / "checkpoints" / "last" / "trainer_state.safetensors"))
    sb = load_file(str(tmp_path / "cut" / "checkpoints" / "last" / "trainer_state.safetensors"))
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    ea = load_file(str(tmp_path / "full" / "policy" / "model.safetensors"))
    eb = load_file(str(tmp_path / "cut" / "policy" / "model.safetensors"))
    assert all(torch.equal(ea[k], eb[k]) for k in ea)  # the EMA policy too
    steps = read_log(tmp_path / "cut" / "log.csv")["step"]
    assert steps == sorted(set(steps)) and steps[-1] == 40


def test_resume_without_checkpoint_is_a_clear_error(tiny_dataset, tmp_path):
    policy, tcfg = _cfgs()
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        train(tiny_dataset, tmp_path / "none", policy, tcfg, progress=False, resume=True)


@pytest.mark.slow
def test_torchrun_two_processes_keep_replicas_identical(tiny_dataset, tmp_path):
    out = tmp_path / "ddp"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(
        json.dumps(
            {
                "policy": small_policy_dict(),
                "train": {"log_every": 4, "checkpoint_every": 6, "warmup_steps": 2},
            }
        )
    )
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"),
        *("-m", "mmvla.cli", "train", "--data", str(tiny_dataset), "--out", str(out), "--config", str(cfg)),
        *("--steps", "12", "--batch-size", "4", "--threads", "1", "--device", "cpu", "--quiet"),
    ]
    r = subprocess.run(
        cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    replicas = json.loads((out / "replicas.json").read_text())
    assert replicas["backend"] == "gloo"
    assert replicas["world_size"] == 2 and len(replicas["weight_sha256"]) == 2
    assert replicas["weight_sha256"][0] == replicas["weight_sha256"][1]
    # ... and the saved policy is that replica (rank 0's weights, not a stale copy).
    saved = load_file(str(out / "policy" / "model.safetensors"))
    assert weights_sha256(saved) == replicas["weight_sha256"][0]
    assert read_log(out / "log.csv")["step"][-1] == 12


def test_widths_and_image_size_come_from_the_dataset(tiny_dataset, tmp_path):
    d = small_policy_dict(image_size=96, state_dim=9, action_dim=4)
    d.pop("instructions")
    policy = PolicyConfig.from_dict(d)
    train(
        tiny_dataset,
        tmp_path / "fit",
        policy,
        TrainConfig(steps=2, batch_size=4, warmup_steps=1),
        progress=False,
    )
    saved = json.loads((tmp_path / "fit" / "policy" / "config.json").read_text())
    assert (saved["image_size"], saved["state_dim"], saved["action_dim"]) == (32, 5, 7)
    assert saved["instructions"] == sorted(INSTRUCTIONS)


def test_disk_storage_trains_the_same_weights(tiny_dataset, tmp_path):
    """TrainConfig.data_storage reaches VLADataset; disk and memory batches are identical, so are the weights."""
    for storage in ("memory", "disk"):
        policy, tcfg = _cfgs(
            steps=6,
            checkpoint_every=6,
            ema_decay=0.0,
            data_storage=storage,
            data_cache_dir=str(tmp_path / "cache"),
        )
        train(tiny_dataset, tmp_path / storage, policy, tcfg, progress=False)
    assert len(list((tmp_path / "cache").glob("*.u8"))) == len(
        PolicyConfig.from_dict(small_policy_dict()).cameras
    )
    a = weights_sha256(load_file(str(tmp_path / "memory" / "checkpoints" / "last" / "model.safetensors")))
    b = weights_sha256(load_file(str(tmp_path / "disk" / "checkpoints" / "last" / "model.safetensors")))
    assert a == b
    with pytest.raises(ValueError, match="data_storage must be one of"):
        TrainConfig(data_storage="ram")
