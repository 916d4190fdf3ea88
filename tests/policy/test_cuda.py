"""The CUDA path: the same losses on the GPU as on the CPU, bf16 autocast training, and DDP over nccl.

Skipped on machines without a GPU (CI has none); run on a GPU machine with
``pytest tests/policy/test_cuda.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from vla_testdata import small_policy_dict

from mmvla.core.logs import read_log
from mmvla.data import VLADataset
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.training.config import TrainConfig
from mmvla.training.trainer import dataset_normalizer, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _policy_and_batch(tiny_dataset):
    cfg = PolicyConfig.from_dict(small_policy_dict(fusion="cross_attention"))
    ds = VLADataset(tiny_dataset, cameras=cfg.cameras, chunk_size=cfg.chunk_size, progress=False)
    torch.manual_seed(0)
    policy = VLAPolicy(cfg, dataset_normalizer(ds, cfg)).eval()
    return policy, ds.get_batch(np.arange(16))


def _to(batch, device):
    out = dict(batch)
    out["images"] = {k: v.to(device) for k, v in batch["images"].items()}
    for k in ("state", "action", "action_mask"):
        out[k] = batch[k].to(device)
    return out


def test_gpu_loss_matches_cpu_and_bf16_stays_close(tiny_dataset, monkeypatch):
    policy, batch = _policy_and_batch(tiny_dataset)
    # Full fp32 on the GPU for the parity check (TF32 would round matmuls and convs to 10 bits).
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    with torch.no_grad():
        cpu_loss, _ = policy(batch)
        gpu = policy.to("cuda")
        gpu_batch = _to(batch, "cuda")
        gpu_loss, _ = gpu(gpu_batch)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16_loss, _ = gpu(gpu_batch)
    assert float(gpu_loss) == pytest.approx(float(cpu_loss), rel=1e-4)
    assert float(bf16_loss) == pytest.approx(float(cpu_loss), rel=3e-2)


def test_bf16_training_on_gpu_tracks_fp32_and_loads_on_cpu(tiny_dataset, tmp_path):
    policy = PolicyConfig.from_dict(small_policy_dict())
    final = {}
    for bf16 in (False, True):
        tcfg = TrainConfig(steps=100, batch_size=8, lr=3e-3, warmup_steps=5, bf16=bf16, device="cuda")
        train(tiny_dataset, tmp_path / f"bf16_{bf16}", policy, tcfg, progress=False)
        log = read_log(tmp_path / f"bf16_{bf16}" / "log.csv")
        final[bf16] = sum(log["loss"][-3:]) / 3
        assert final[bf16] < log["loss"][0], (bf16, log["loss"])
    assert final[True] == pytest.approx(final[False], rel=0.25)
    loaded = VLAPolicy.from_pretrained(tmp_path / "bf16_True" / "policy", map_location="cpu")
    assert all(p.device.type == "cpu" for p in loaded.parameters())


def test_torchrun_over_nccl(tiny_dataset, tmp_path):
    n = torch.cuda.device_count()
    out = tmp_path / "ddp"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"policy": small_policy_dict(), "train": {"log_every": 4, "warmup_steps": 2}}))
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"),
        *("-m", "mmvla.cli", "train", "--data", str(tiny_dataset), "--out", str(out), "--config", str(cfg)),
        *("--steps", "12", "--batch-size", "4", "--bf16", "--quiet"),
    ]
    r = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    replicas = json.loads((out / "replicas.json").read_text())
    assert replicas["backend"] == "nccl"
    assert replicas["world_size"] == n and len(set(replicas["weight_sha256"])) == 1
    assert read_log(out / "log.csv")["step"][-1] == 12
