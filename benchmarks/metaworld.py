"""Meta-World MT10 end to end at a stated budget: expert reference -> collect -> train -> evaluate per task.

One multi-task policy over the ten MT10 tasks, from one camera image (corner4, 64²), the hand state
(x, y, z, gripper) and the instruction. Writes ``benchmarks/results/metaworld.json`` (budget, wall time
per stage, per-task success with 95% Wilson intervals, the mean over tasks, and Meta-World's scripted
experts' own success on exactly the same (task, goal variation) episodes) and prints a table.

    python benchmarks/metaworld.py                       # full budget: 100 demos/task, 60 min, 50 evals/task
    python benchmarks/metaworld.py --train-minutes 30 --episodes-per-task 60
    python benchmarks/metaworld.py --steps 20000         # a fixed number of optimiser steps instead
    python benchmarks/metaworld.py --expert-only         # just the expert reference (fast: no rendering)
    python benchmarks/metaworld.py --quick               # smoke run of the whole pipeline (~minutes)

Protocol: MT10's 50 goal variations per task (``MetaWorldConfig.variations``); demonstrations are
recorded with seeds 0.. (task = seed % 10, variation = seed // 10 % 50, expert noise std 0.1 executed,
clean action recorded) and evaluation uses seeds 1,000,000.. (the same 50 variations per task, as
Meta-World's MT10 trains and tests on the same task set), ending each episode at the first success or
after 200 steps. ``--variations 0`` draws fresh goals from every seed instead (held-out goals).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmvla.core.io import atomic_write_json
from mmvla.core.stats import wilson_interval

os.environ.setdefault("MUJOCO_GL", "egl")
# This file is called metaworld.py: keep its directory off the import path so `import metaworld` finds
# Meta-World, not this script.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

RESULTS = Path(__file__).parent / "results" / "metaworld.json"
EVAL_SEED = 1_000_000


def policy_and_train_configs(args: argparse.Namespace, steps: int) -> tuple[Any, Any]:
    """The recipe: the tabletop demo's (a 16-32-64 CNN FiLM-conditioned on the instruction, one token
    of spatial-softmax keypoints per camera, the frozen MiniLM sentence encoder, FiLM fusion) with
    8-step action chunks, L1 loss, and the auxiliary loss that predicts the object and the goal relative
    to the hand (``observation.environment_state``, recorded by collect) from the fused features."""
    from mmvla.policy import PolicyConfig
    from mmvla.training.config import TrainConfig
    from mmvla.training.recipes import DEMO_VISION

    policy = PolicyConfig(
        cameras=(args.camera,),
        image_size=args.image_size,
        state_dim=4,
        action_dim=4,
        dim=args.dim,
        vision=dict(DEMO_VISION),
        vision_tokens="pooled",
        language={"kind": "minilm"},
        fusion=args.fusion,
        head={"kind": "regression", "chunk_size": args.chunk_size, "loss": "l1"},
        camera_dropout=0.0,  # one camera: dropping it leaves the policy blind
        aux_state_weight=args.aux_state_weight,
    )
    train = TrainConfig(
        steps=steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=min(200, max(1, steps // 20)),
        augment_shift=4,
        augment_jitter=0.1,
        ema_decay=0.999 if steps >= 2000 else 0.0,
        log_every=max(1, min(100, steps // 10)),
        checkpoint_every=max(1, min(2000, steps)),
        seed=args.seed,
        threads=args.threads,
    )
    return policy, train


def expert_reference(episodes_per_task: int, env_options: dict[str, Any]) -> dict[str, Any]:
    """Meta-World's experts through our adapter on the evaluation's (task, seed) pairs, no noise."""
    from mmvla.sim.metaworld.env import MT10_TASKS, MetaWorldMT10Env, run_expert_episode

    env = MetaWorldMT10Env(cameras=(), **env_options)  # the expert reads the simulator: no images needed
    per_task: dict[str, list[bool]] = {t: [] for t in MT10_TASKS}
    lengths: dict[str, list[int]] = {t: [] for t in MT10_TASKS}
    t0 = time.perf_counter()
    steps = 0
    try:
        for i in range(episodes_per_task * len(MT10_TASKS)):
            task = MT10_TASKS[i % len(MT10_TASKS)]  # the cycling mmvla.evaluation.evaluate uses
            ok, n = run_expert_episode(env, EVAL_SEED + i, task)
            per_task[task].append(ok)
            lengths[task].append(n)
            steps += n
    finally:
        env.close()
    seconds = time.perf_counter() - t0
    table = {
        t: {
            "success": float(np.mean(v)),
            "ci95": list(wilson_interval(int(sum(v)), len(v))),
            "episodes": len(v),
            "mean_length_success": float(np.mean([n for n, ok in zip(lengths[t], v, strict=True) if ok]))
            if any(v)
            else None,
        }
        for t, v in per_task.items()
    }
    return {
        "per_task": table,
        "mean_success": float(np.mean([r["success"] for r in table.values()])),
        "seconds": seconds,
        "steps_per_s_no_render": steps / seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes-per-task", type=int, default=100, help="demonstrations simulated per task")
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--train-minutes", type=float, default=60.0, help="training wall-time budget")
    budget.add_argument("--steps", type=int, help="optimiser steps (instead of --train-minutes)")
    ap.add_argument("--eval-per-task", type=int, default=50, help="closed-loop episodes per task")
    ap.add_argument(
        "--expert-per-task", type=int, help="expert reference episodes per task (default: eval's)"
    )
    ap.add_argument("--expert-only", action="store_true", help="only measure the expert reference")
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 demos, 30 steps, 2 evals per task")
    ap.add_argument("--workers", type=int, default=2, help="collection and evaluation processes")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for training (0: default)")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--camera", default="corner4")
    ap.add_argument("--chunk-size", type=int, default=8)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--fusion", default="film")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument(
        "--aux-state-weight",
        type=float,
        default=1.0,
        help="weight of the auxiliary object/goal-position loss (0: off)",
    )
    ap.add_argument("--noise", type=float, default=0.1, help="expert noise std while collecting")
    ap.add_argument("--variations", type=int, default=50, help="goal variations per task (0: fresh goals)")
    ap.add_argument("--max-steps", type=int, default=200, help="episode time limit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work-dir", help="keep dataset, run and eval outputs here (default: a temp dir)")
    ap.add_argument("--out", default=str(RESULTS), help="result JSON")
    args = ap.parse_args()
    if args.quick:
        args.episodes_per_task, args.eval_per_task = 2, 2
        args.steps = args.steps or 30
    if args.steps is not None:
        args.train_minutes = None
    expert_per_task = args.expert_per_task or args.eval_per_task
    env_options: dict[str, Any] = {
        "variations": args.variations or None,
        "max_steps": args.max_steps,
    }

    from mmvla.sim.metaworld.env import MT10_TASKS

    t_start = time.perf_counter()
    result: dict[str, Any] = {
        "benchmark": "Meta-World MT10 (v3), one multi-task policy from corner4 images + state + instruction",
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_at_start": list(os.getloadavg()),
            "python": platform.python_version(),
        },
        "protocol": {
            "tasks": list(MT10_TASKS),
            "variations_per_task": env_options["variations"],
            "max_steps": args.max_steps,
            "collect_seeds": f"0..{args.episodes_per_task * 10 - 1} (task = seed % 10)",
            "eval_seeds": f"{EVAL_SEED}..{EVAL_SEED + args.eval_per_task * 10 - 1} (task = i % 10)",
            "success": "Meta-World info['success'] at any step; episodes end at the first success",
        },
        "budget": {
            "episodes_per_task": args.episodes_per_task,
            "train_minutes": args.train_minutes,
            "steps": args.steps,
            "eval_per_task": args.eval_per_task,
            "expert_per_task": expert_per_task,
            "workers": args.workers,
            "quick": args.quick,
        },
    }

    print(f"expert reference: {expert_per_task} episodes per task ...", flush=True)
    result["expert"] = expert_reference(expert_per_task, env_options)
    print(f"  expert mean success {result['expert']['mean_success']:.1%}", flush=True)
    if args.expert_only:
        _finish(result, t_start, Path(args.out))
        return

    import torch

    from mmvla.data.collect import collect_dataset
    from mmvla.evaluation.evaluate import EvalConfig, evaluate
    from mmvla.training.trainer import train

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="mmvla-metaworld-"))
    work.mkdir(parents=True, exist_ok=True)
    data, run, ev = work / "data", work / "run", work / "eval"
    try:
        # ---- collect
        print(f"collect: {args.episodes_per_task} episodes per task ...", flush=True)
        s = collect_dataset(
            data,
            episodes=args.episodes_per_task * len(MT10_TASKS),
            workers=args.workers,
            seed=0,
            image_size=args.image_size,
            cameras=(args.camera,),
            noise_std=args.noise,
            overwrite=True,
            progress=False,
            env="metaworld-mt10",
            env_options=env_options,
        )
        result["collect"] = {
            "kept": s.kept,
            "dropped": s.dropped,
            "kept_per_task": s.kept_per_family,
            "dropped_per_task": s.dropped_per_family,
            "frames": s.frames,
            "seconds": s.seconds,
            "frames_per_s": s.frames_per_second,
            "mib_on_disk": s.bytes_on_disk / 2**20,
        }
        print(f"  {s}", flush=True)

        # ---- train
        steps = args.steps
        probe: dict[str, Any] | None = None
        if steps is None:  # convert the wall-time budget into steps with a short probe run
            t_probe = time.perf_counter()
            pcfg, tcfg = policy_and_train_configs(args, 40)
            r = train(data, work / "probe", pcfg, tcfg, progress=False)
            probe_seconds = time.perf_counter() - t_probe
            overhead = probe_seconds - r.train_seconds  # dataset loading and set-up, paid again
            left = args.train_minutes * 60 - probe_seconds - overhead
            steps = max(1, int(left * r.samples_per_s / args.batch_size * 0.97))
            probe = {"samples_per_s": r.samples_per_s, "seconds": probe_seconds, "steps_chosen": steps}
            shutil.rmtree(work / "probe", ignore_errors=True)
        pcfg, tcfg = policy_and_train_configs(args, steps)
        print(f"train: {steps} steps of {args.batch_size} ...", flush=True)
        t_train = time.perf_counter()
        r = train(data, run, pcfg, tcfg, progress=False)
        train_wall = time.perf_counter() - t_train
        result["train"] = {
            "steps": r.steps,
            "batch_size": args.batch_size,
            "train_seconds": r.train_seconds,
            "wall_seconds": train_wall + (probe["seconds"] if probe else 0.0),
            "samples_per_s": r.samples_per_s,
            "final_loss": r.final_loss,
            "probe": probe,
            "torch_threads": torch.get_num_threads(),
            "policy": pcfg.to_dict(),
            "train": tcfg.to_dict(),
        }
        print(f"  {r.steps} steps in {train_wall:.0f} s, final loss {r.final_loss:.4f}", flush=True)

        # ---- evaluate
        print(f"eval: {args.eval_per_task} episodes per task ...", flush=True)
        metrics = evaluate(
            r.policy_dir,
            EvalConfig(
                episodes=args.eval_per_task * len(MT10_TASKS),
                workers=args.workers,
                seed=EVAL_SEED,
                env="metaworld-mt10",
                env_options={"variations": env_options["variations"]},
                max_steps=args.max_steps,
            ),
            ev,
            progress=False,
        )
        per_task = metrics["per_family"]["train"]
        result["policy"] = {
            "per_task": per_task,
            "mean_success": float(np.mean([v["success"] for v in per_task.values()])),
            "mean_length": metrics["length"]["train"],
            "seconds": metrics["seconds"],
        }
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    _finish(result, t_start, Path(args.out))


def _finish(result: dict[str, Any], t_start: float, out: Path) -> None:
    result["wall_seconds"] = time.perf_counter() - t_start
    atomic_write_json(out, result)
    expert = result["expert"]["per_task"]
    policy = result.get("policy", {}).get("per_task", {})
    w = max(len(t) for t in expert)
    print(f"\n{'task':<{w}} {'policy':>8} {'95% CI':>14} {'expert':>8}")
    for task, e in expert.items():
        p = policy.get(task)
        if p:
            lo, hi = p["ci95"]
            cell = f"{p['success']:>8.1%} {f'[{lo:.2f}, {hi:.2f}]':>14}"
        else:
            cell = f"{'-':>8} {'':>14}"
        print(f"{task:<{w}} {cell} {e['success']:>8.1%}")
    pm = result.get("policy", {}).get("mean_success")
    pm_text = "-" if pm is None else f"{pm:.1%}"
    print(f"{'mean':<{w}} {pm_text:>8} {'':>14} {result['expert']['mean_success']:>8.1%}")
    print(f"wall time {result['wall_seconds']:.0f} s -> {out}")
    print(json.dumps(result["budget"]))


if __name__ == "__main__":
    main()
