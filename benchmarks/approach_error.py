"""Approach error: does a policy find the named object in scenes it has not seen?

For a checkpoint and a dataset of expert episodes (collect one from unseen seeds, e.g.
``mmvla collect --out runs/val100 --episodes 100 --seed 50000``), the mean L1 error of the first
predicted action's (x, y, z) against the expert's, split by frame index: frames < 5 are the
*approach*, where the action depends on where the named object is; later frames mostly do not. The
baseline predicts, per frame index, the mean expert action of a training dataset (``--baseline``).
Run it on the policy's own training data too: a low error there and a high one here is memorisation.

    .venv/bin/python benchmarks/approach_error.py --checkpoint runs/demo/policy --data runs/val100 \\
        [--baseline runs/demo/data]

Prints a summary (no JSON: a diagnostic of one checkpoint, not a project benchmark).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mmvla.data import VLADataset
from mmvla.policy import VLAPolicy

APPROACH = 5


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", required=True, help="expert episodes to score on")
    p.add_argument("--baseline", help="training dataset for the per-frame-index mean-action baseline")
    p.add_argument("--frames", type=int, default=3000, help="frames sampled (seed 0)")
    args = p.parse_args()
    torch.set_num_threads(2)
    policy = VLAPolicy.from_pretrained(args.checkpoint).eval()
    ds = VLADataset(args.data, cameras=policy.cfg.cameras, chunk_size=policy.cfg.chunk_size, progress=False)
    idx = np.random.default_rng(0).choice(len(ds), size=min(args.frames, len(ds)), replace=False)
    errors, frames = [], []
    for start in range(0, len(idx), 256):
        batch = ds.get_batch(idx[start : start + 256])
        pred, _ = policy.predict_chunk(batch["images"], batch["instruction"], batch["state"])  # (B, k, A)
        errors.append((pred[:, 0, :3] - batch["action"][:, 0, :3].float()).abs().mean(-1).numpy())
        frames.append(batch["frame_index"].numpy())
    err, frame = np.concatenate(errors), np.concatenate(frames)
    parts = {"all": frame >= 0, f"approach (t < {APPROACH})": frame < APPROACH, "later": frame >= APPROACH}
    print("  ".join(f"{name} {err[m].mean():.3f}" for name, m in parts.items()))
    if args.baseline:
        train = VLADataset(args.baseline, cameras=policy.cfg.cameras[:1], progress=False)
        base = [
            np.abs(
                ds.action[ds.frame_index == t][:, :3] - train.action[train.frame_index == t][:, :3].mean(0)
            ).mean()
            for t in range(APPROACH)
        ]
        print(f"mean-action baseline, approach: {np.mean(base):.3f}")


if __name__ == "__main__":
    main()
