"""Does contrastive pre-training help a policy trained on few demonstrations?

One small dataset (by default 250 demonstrations, a quarter of `benchmarks/compare.py`'s), then:

1. contrastive pre-training (:func:`mmvla.training.pretrain.pretrain`, as ``mmvla pretrain``) aligns the demo recipe's vision and language encoders CLIP-style on its
   (frame, instruction) pairs (vision *unconditioned*: a contrastive image embedding must not see the
   instruction); recall@1/5 and the modality gap before/after on held-out frames incl. unseen
   compositions;
2. the demo recipe trained from scratch, and again initialised from the pre-trained encoders
   (the conditioned trunk's FiLM layers start fresh), same seed, same steps;
3. both evaluated on both splits.

Writes benchmarks/results/pretrain_lowdata.json and prints a summary.

    .venv/bin/python benchmarks/pretrain_lowdata.py          # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from mmvla.core.io import atomic_write_json, read_json
from mmvla.evaluation.evaluate import EvalConfig, evaluate
from mmvla.pipeline import collect_step, train_step
from mmvla.policy import PolicyConfig
from mmvla.training.pretrain import PretrainConfig, pretrain
from mmvla.training.recipes import demo_configs

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_pretrain_lowdata")
    p.add_argument("--episodes", type=int, default=250)
    p.add_argument("--pretrain-steps", type=int, default=1000)
    p.add_argument("--steps", type=int, default=1500, help="policy training steps")
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = collect_step(out / f"data{args.episodes}", args.episodes, workers=args.workers, seed=0)
    policy_cfg, train_cfg = demo_configs(steps=args.steps)
    policy = policy_cfg.to_dict()
    (out / "policy.json").write_text(json.dumps({"policy": policy, "train": train_cfg.to_dict()}))
    # A contrastive image embedding must not see the instruction: the pre-trained trunk is unconditioned.
    unconditioned = PolicyConfig.from_dict({**policy, "vision": {**policy["vision"], "condition": False}})

    pre = out / "pretrained"
    if not (pre / "pretrain.json").is_file():
        pretrain(data, pre, unconditioned, PretrainConfig(steps=args.pretrain_steps), progress=False)
    runs: dict[str, dict[str, Any]] = {}
    for name, init_from in (("scratch", None), ("pretrained_init", pre)):
        run = out / name
        trained = train_step(data, run, policy_cfg, train_cfg, reuse_finished=True, init_from=init_from)
        if not (run / "eval" / "metrics.json").is_file():
            cfg = EvalConfig(episodes=args.eval_episodes, split="all", workers=args.workers)
            evaluate(trained.policy_dir, cfg, run / "eval", progress=False)
        metrics = read_json(run / "eval" / "metrics.json", "metrics")
        runs[name] = {
            "success": metrics["success"],
            "ci95": metrics["ci95"],
            "per_family": metrics["per_family"],
        }
    pre_info = read_json(pre / "pretrain.json", "pretrain summary")
    result = {
        "benchmark": "pretrain_lowdata",
        "settings": {
            "episodes": args.episodes,
            "pretrain_steps": args.pretrain_steps,
            "policy_steps": args.steps,
            "eval_episodes_per_split": args.eval_episodes,
        },
        "pretrain": {"metrics": pre_info["metrics"], "train_seconds": pre_info["train_seconds"]},
        "runs": runs,
        "wall_s": time.perf_counter() - t0,
    }
    atomic_write_json(RESULTS / "pretrain_lowdata.json", result)
    for name, r in runs.items():
        print(f"{name:16s} " + ", ".join(f"{k} {v:.0%}" for k, v in r["success"].items()))
    after = pre_info["metrics"]["after"]
    print("pre-training, after: " + json.dumps({s: round(m["recall_i2t@1"], 3) for s, m in after.items()}))
    print(f"wrote {RESULTS / 'pretrain_lowdata.json'}")


if __name__ == "__main__":
    main()
