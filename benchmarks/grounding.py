"""Grounding probe: how precisely does a policy's encoder locate the *named* object in unseen scenes?

Behaviour cloning hides perception failures behind control failures. This benchmark isolates the
perception half: for each encoder variant it trains a :class:`mmvla.policy.VLAPolicy` (front camera,
instruction, state) plus a linear read-out to regress the named object's table position (x, y) from the
approach-phase frames of expert episodes (frame index < 6, where the policy must find the object), and
reports the RMSE on episodes from other seeds. Chance (predicting the mean) is ~7-8 cm.

    .venv/bin/python benchmarks/grounding.py                     # ~10 min on 2 cores
    .venv/bin/python benchmarks/grounding.py --steps 300 --train-episodes 100 --quick

Writes benchmarks/results/grounding.json (or grounding_quick.json) and prints a table.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mmvla.data import VLADataset
from mmvla.data.collect import collect_dataset
from mmvla.io import atomic_write_json
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.train import dataset_normalizer

RESULTS = Path(__file__).resolve().parent / "results"
APPROACH_FRAMES = 6
CNN = {"kind": "cnn", "channels": [32, 64, 64], "strides": [2, 2, 2], "residual": False}

# name -> (policy overrides, what it tests)
VARIANTS: dict[str, tuple[dict[str, Any], str]] = {
    "grid_tokens": ({"vision": CNN}, "unconditioned CNN, pooled + 8x8 grid tokens (the old demo)"),
    "conditioned_grid": (
        {"vision": {**CNN, "condition": True}},
        "instruction-conditioned CNN (FiLM per stage), pooled + grid tokens",
    ),
    "conditioned_keypoints": (
        {"vision": {**CNN, "condition": True, "pool": "keypoints"}, "vision_tokens": "pooled"},
        "conditioned CNN, keypoints only, one token per camera",
    ),
    "conditioned_keypoints_16x16": (
        {
            "vision": {**CNN, "condition": True, "pool": "keypoints", "strides": [2, 2, 1]},
            "vision_tokens": "pooled",
        },
        "as above on a 16x16 feature map (stride 4)",
    ),
}


class Probe(nn.Module):
    """Policy encoder + fusion -> pooled (B, D) -> Linear -> named object's (x, y) in decimetres."""

    def __init__(self, policy: VLAPolicy) -> None:
        super().__init__()
        self.policy = policy
        self.readout = nn.Linear(policy.cfg.dim, 2)

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        fused = self.policy.fuse(batch["images"], batch["instruction"], batch["state"])
        return self.readout(fused.pooled)  # (B, 2)


def target_xy_dm(batch: dict[str, Any]) -> torch.Tensor:
    """Named object's (x, y), decimetres: the dataset's environment_state is object minus grasp point."""
    return (batch["environment_state"][:, :2].float() + batch["state"][:, :2].float()) * 10.0  # (B, 2)


def run_variant(
    name: str, overrides: dict[str, Any], train: VLADataset, val: VLADataset, steps: int, seed: int
) -> dict[str, Any]:
    torch.manual_seed(seed)
    cfg = PolicyConfig.from_dict(
        {
            "cameras": ["front"],
            "camera_dropout": 0.0,
            "dim": 128,
            "instructions": sorted(set(train.tasks) | set(val.tasks)),
            "head": {"kind": "regression", "chunk_size": 1},
            **overrides,
        }
    )
    model = Probe(VLAPolicy(cfg, dataset_normalizer(train, cfg)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    rows_tr = np.nonzero(train.frame_index < APPROACH_FRAMES)[0]
    rows_va = np.nonzero(val.frame_index < APPROACH_FRAMES)[0]
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    train_rmse = float("nan")
    for step in range(1, steps + 1):
        lr = 1e-3 * min(1.0, step / 50) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = train.get_batch(rng.choice(rows_tr, 64))
        loss = F.mse_loss(model(batch), target_xy_dm(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        train_rmse = 10 * math.sqrt(2 * float(loss.detach()))  # cm, over (x, y)
    seconds = time.perf_counter() - t0
    model.eval()
    sq = []
    with torch.no_grad():
        for start in range(0, len(rows_va), 256):
            batch = val.get_batch(rows_va[start : start + 256])
            sq.append((model(batch) - target_xy_dm(batch)).square().sum(-1))
    err_cm = 10 * torch.cat(sq).sqrt().numpy()
    return {
        "variant": name,
        "what": VARIANTS[name][1],
        "val_rmse_cm": float(np.sqrt(np.mean(err_cm**2))),
        "val_median_cm": float(np.median(err_cm)),
        "train_rmse_cm_last_batch": train_rmse,
        "train_seconds": seconds,
        "parameters": sum(p.numel() for p in model.policy.parameters()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_grounding", help="where the datasets are collected")
    p.add_argument("--train-episodes", type=int, default=2000)
    p.add_argument("--val-episodes", type=int, default=100)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="writes results/grounding_quick.json")
    args = p.parse_args()
    torch.set_num_threads(2)
    out = Path(args.out)
    sets = {}
    for split, episodes, seed in (("train", args.train_episodes, 0), ("val", args.val_episodes, 10**6)):
        root = out / f"{split}{episodes}"
        if not (root / "meta" / "info.json").is_file():
            collect_dataset(root, episodes=episodes, seed=seed, workers=args.workers, progress=False)
        sets[split] = VLADataset(root, cameras=["front"], progress=False)
    rows = []
    for name in args.variants.split(","):
        row = run_variant(name, VARIANTS[name][0], sets["train"], sets["val"], args.steps, args.seed)
        rows.append(row)
        print(
            f"{name:30s} val RMSE {row['val_rmse_cm']:5.2f} cm  median {row['val_median_cm']:5.2f} cm  "
            f"({row['train_seconds']:.0f} s)",
            flush=True,
        )
    result = {
        "benchmark": "grounding",
        "settings": {
            "train_episodes": args.train_episodes,
            "val_episodes": args.val_episodes,
            "val_seed": 10**6,
            "steps": args.steps,
            "batch_size": 64,
            "approach_frames": APPROACH_FRAMES,
            "camera": "front",
            "image_size": sets["train"].image_shape[0],
        },
        "results": rows,
    }
    path = RESULTS / ("grounding_quick.json" if args.quick else "grounding.json")
    atomic_write_json(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
