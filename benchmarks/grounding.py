"""Grounding probe: how precisely does a policy's encoder locate the *named* object in unseen scenes?

Behaviour cloning hides perception failures behind control failures. This benchmark isolates the
perception half: for each encoder variant it trains a :class:`mmvla.policy.VLAPolicy` (front camera,
instruction, state) plus a linear read-out to regress the named object's table position (x, y) from the
approach-phase frames of expert episodes (frame index < 6, where the policy must find the object), and
reports the RMSE on episodes from other seeds. Chance (always predicting the training mean, recorded as
``settings.chance_rmse_cm``) is 9.6 cm on the 100 default validation episodes.

    .venv/bin/python benchmarks/grounding.py                     # ~10 min on 2 cores
    .venv/bin/python benchmarks/grounding.py --steps 300 --train-episodes 100 --quick
    # every fusion design on two encoders, MiniLM language, on the fusion comparison's dataset:
    .venv/bin/python benchmarks/grounding.py --variants grid_tokens,conditioned_keypoints \
        --fusions early,late,cross_attention,transformer,film,gated,moe,hierarchical --language minilm \
        --train-data runs/bench_compare/data --result grounding_fusions.json
    # the same with the conditioned encoder's grid tokens given to the fusion too:
    .venv/bin/python benchmarks/grounding.py --variants conditioned_grid --fusions ... --language minilm \
        --train-data runs/bench_compare/data --result grounding_fusions_grid.json

Each row carries a 95% interval of its RMSE from a bootstrap over validation episodes (frames of one
episode are correlated); with several fusions, the best of each variant is compared with each other one
on the same bootstrap draws (paired), and ``separated`` says the difference's interval excludes 0.

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

from mmvla.core.io import atomic_write_json
from mmvla.core.stats import cluster_bootstrap_rmse
from mmvla.data import VLADataset
from mmvla.data.collect import collect_dataset
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.training.trainer import dataset_normalizer

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


def approach_rows(ds: VLADataset) -> np.ndarray:
    """(M,) dataset rows of the approach frames (frame index < APPROACH_FRAMES)."""
    return np.nonzero(ds.frame_index < APPROACH_FRAMES)[0]


def chance_rmse_cm(train: VLADataset, val: VLADataset) -> float:
    """RMSE (cm) on the validation approach frames of always predicting the training approach frames'
    mean position: the score of a probe that ignores the image."""
    xy = []
    for ds in (train, val):
        rows = approach_rows(ds)  # targets from the vector columns only: no images gathered
        xy.append(
            target_xy_dm(
                {
                    "environment_state": torch.from_numpy(ds.env_state[rows]),
                    "state": torch.from_numpy(ds.state[rows]),
                }
            )
        )  # (M, 2)
    return float(10 * (xy[1] - xy[0].mean(0)).square().sum(-1).mean().sqrt())


def run_variant(
    name: str, overrides: dict[str, Any], train: VLADataset, val: VLADataset, steps: int, seed: int
) -> tuple[dict[str, Any], np.ndarray]:
    """Train one probe; returns its result row and the (M,) squared errors (cm²) on the M validation
    approach frames, in row order."""
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
    rows_tr, rows_va = approach_rows(train), approach_rows(val)
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
    sq_cm2 = 100 * torch.cat(sq).double().numpy()  # (M,)
    row = {
        "variant": name,
        "fusion": cfg.fusion,
        "language": cfg.language["kind"],
        "what": VARIANTS[name][1],
        "val_rmse_cm": float(np.sqrt(np.mean(sq_cm2))),
        "val_median_cm": float(np.median(np.sqrt(sq_cm2))),
        "train_rmse_cm_last_batch": train_rmse,
        "train_seconds": seconds,
        "parameters": sum(p.numel() for p in model.policy.parameters()),
    }
    return row, sq_cm2


def add_intervals(rows: list[dict[str, Any]], sq_cm2: list[np.ndarray], episode: np.ndarray) -> None:
    """Add each row's bootstrap 95% RMSE interval (over validation episodes) and, per variant with
    several fusions, the best fusion against each other one on the same draws."""
    rmse, boot = cluster_bootstrap_rmse(np.stack(sq_cm2), episode, n_boot=2000, seed=0)
    for k, row in enumerate(rows):
        row["val_rmse_ci95"] = [float(q) for q in np.quantile(boot[:, k], [0.025, 0.975])]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        idx = [k for k, r in enumerate(rows) if r["variant"] == variant]
        best = min(idx, key=lambda k: rmse[k])
        rows[best]["worse_than_best"] = False
        for k in idx:
            if k != best:
                diff = np.quantile(boot[:, k] - boot[:, best], [0.025, 0.975])
                rows[k]["vs_best"] = {
                    "best": rows[best]["fusion"],
                    "diff_cm": float(rmse[k] - rmse[best]),
                    "diff_ci95": [float(d) for d in diff],
                    "separated": bool(diff[0] > 0),
                }
                rows[k]["worse_than_best"] = bool(diff[0] > 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_grounding", help="where the datasets are collected")
    p.add_argument("--train-episodes", type=int, default=2000)
    p.add_argument("--val-episodes", type=int, default=100)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument(
        "--fusions", default="", help="run each variant with each of these fusions (default: film)"
    )
    p.add_argument("--language", default="lstm", help="language encoder kind (lstm, minilm, ...)")
    p.add_argument("--train-data", help="reuse this collected dataset for training (e.g. mmvla compare's)")
    p.add_argument("--result", default="grounding.json", help="file name under benchmarks/results")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="writes results/grounding_quick.json")
    args = p.parse_args()
    torch.set_num_threads(2)
    out = Path(args.out)
    sets = {}
    for split, episodes, seed in (("train", args.train_episodes, 0), ("val", args.val_episodes, 10**6)):
        root = Path(args.train_data) if split == "train" and args.train_data else out / f"{split}{episodes}"
        if not (root / "meta" / "info.json").is_file():
            collect_dataset(root, episodes=episodes, seed=seed, workers=args.workers, progress=False)
        sets[split] = VLADataset(root, cameras=["front"], progress=False)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; available: {', '.join(VARIANTS)}")
    fusions = [f for f in args.fusions.split(",") if f] or [None]
    rows, errors = [], []
    for name in args.variants.split(","):
        for fusion in fusions:
            overrides = {**VARIANTS[name][0], "language": {"kind": args.language}}
            overrides.update({"fusion": fusion} if fusion else {})
            row, sq = run_variant(name, overrides, sets["train"], sets["val"], args.steps, args.seed)
            rows.append(row)
            errors.append(sq)
            print(
                f"{name:28s} {row['fusion']:16s} val RMSE {row['val_rmse_cm']:5.2f} cm  "
                f"median {row['val_median_cm']:5.2f} cm  ({row['train_seconds']:.0f} s)",
                flush=True,
            )
    add_intervals(rows, errors, sets["val"].episode_start[approach_rows(sets["val"])])
    result = {
        "benchmark": "grounding",
        "settings": {
            "train_episodes": sets["train"].num_episodes,
            "train_data": str(Path(args.train_data).resolve()) if args.train_data else None,
            "language": args.language,
            "val_episodes": args.val_episodes,
            "val_seed": 10**6,
            "steps": args.steps,
            "batch_size": 64,
            "approach_frames": APPROACH_FRAMES,
            "chance_rmse_cm": chance_rmse_cm(sets["train"], sets["val"]),
            "camera": "front",
            "image_size": sets["train"].image_shape[0],
        },
        "results": rows,
    }
    path = RESULTS / ("grounding_quick.json" if args.quick else args.result)
    atomic_write_json(path, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
