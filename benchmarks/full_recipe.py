"""The full recipe (configs/full.json) as a benchmark: train on the demo's data, evaluate, record.

Trains ``configs/full.json`` on a dataset (default: the demo's, ``runs/demo/data``; collected by
``mmvla demo`` or ``mmvla collect --out runs/demo/data --episodes 2000``), evaluates it on both splits
and runs the two blind controls on the same checkpoint, then writes benchmarks/results/full_recipe.json
(training time and throughput, success per split and family with Wilson intervals, controls).

    .venv/bin/python benchmarks/full_recipe.py                         # ~25 min on 2 cores
    .venv/bin/python benchmarks/full_recipe.py --run runs/full --eval-only   # re-evaluate a finished run

``--randomise`` collects under domain randomisation (every scene axis up to medium, as the demo's
``DEMO_RANDOMISATION``; ``--clean-fraction F`` leaves that share of the episodes clean); the evaluation
stays clean, and ``benchmarks/shift.py --checkpoint RUN/policy`` then measures what it retains under each
shift.

Resumable: a killed run continues from its last checkpoint. Time it alone (two heavy jobs on two cores
slow each other severalfold).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from mmvla.core.io import atomic_write_json, read_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "full_recipe.json"
HELDOUT_SETS = ("heldout", "heldout_fresh", "heldout_blind", "everyday")  # evaluated beside canonical
os.environ.setdefault("MUJOCO_GL", "egl")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "full.json"))
    p.add_argument("--data", default="runs/demo/data", help="dataset directory")
    p.add_argument(
        "--collect",
        type=int,
        default=0,
        help="when --data holds no dataset, collect this many expert demonstrations there first (seed 0, "
        "every family; the time is recorded as collect_seconds)",
    )
    p.add_argument(
        "--corrections",
        type=int,
        default=0,
        metavar="N",
        help="with --collect: N further DAgger episodes executed by --correction-policy, labelled by the expert",
    )
    p.add_argument(
        "--correction-policy", help="checkpoint that executes the corrections (a first-round policy)"
    )
    p.add_argument("--correction-families", default=None, help="comma-separated; default every family")
    p.add_argument(
        "--init-from",
        default=None,
        help="initialise every matching tensor from this checkpoint (fine-tune a first-round policy)",
    )
    p.add_argument(
        "--randomise",
        action="store_true",
        help="with --collect: domain randomisation over every scene axis up to medium severity (the demo's "
        "DEMO_RANDOMISATION), for the expert episodes and the corrections alike; evaluation stays clean",
    )
    p.add_argument(
        "--clean-fraction",
        type=float,
        default=0.0,
        help="with --randomise: the share of collected episodes left clean (drawn per episode)",
    )
    p.add_argument("--run", default="runs/full", help="run directory")
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per split")
    p.add_argument("--controls", type=int, default=50, help="blind-control episodes per split")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--eval-only", action="store_true", help="evaluate the finished run in --run")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()
    if args.randomise and not (args.collect and not args.eval_only):
        p.error("--randomise applies to a collection: give --collect N (and not --eval-only)")
    shift = None
    if args.randomise:  # validated here, before any collection
        from dataclasses import replace

        from mmvla.training.recipes import DEMO_RANDOMISATION

        try:
            shift = replace(DEMO_RANDOMISATION, clean_fraction=args.clean_fraction)
        except ValueError as e:
            p.error(f"--clean-fraction: {e}")
    elif args.clean_fraction:
        p.error("--clean-fraction applies to --randomise")

    from mmvla.core.paths import RunPaths
    from mmvla.evaluation.evaluate import EvalConfig, evaluate, success_by_split
    from mmvla.pipeline import collect_step, evaluate_step, require_dataset, train_step
    from mmvla.training.config import training_configs

    run = RunPaths(args.run)
    policy_cfg, train_cfg = training_configs(args.config)
    result: dict[str, Any] = {
        "config": str(Path(args.config).resolve().relative_to(ROOT)),
        "data": str(Path(args.data)),
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
    }
    t0 = time.perf_counter()
    if args.collect and not args.eval_only:
        corrections: dict[str, Any] = {}
        if args.corrections:
            corrections = {
                "corrections": args.corrections,
                "correction_policy": args.correction_policy,
                "correction_families": args.correction_families.split(",")
                if args.correction_families
                else None,
            }
        env: dict[str, Any] = {}
        if shift is not None:
            env = {"env_options": {"shift": shift}}
            result["randomisation"] = shift.to_dict()
        collect_step(
            args.data, args.collect, workers=args.workers, seed=0, progress=True, **corrections, **env
        )
        result["collect_seconds"] = round(time.perf_counter() - t0, 1)
        result["collected_episodes"] = args.collect
        if corrections:
            result["corrections"] = corrections
    if not args.eval_only:
        require_dataset(args.data)
        step = train_step(  # resumes a killed run
            args.data, run.root, policy_cfg, train_cfg, init_from=args.init_from, progress=True
        )
        result["init_from"] = args.init_from
        assert step.result is not None
        r = step.result
        result["train"] = {
            "steps": r.steps,
            "train_seconds": round(r.train_seconds, 1),
            "samples_per_s": round(r.samples_per_s, 1),
            "final_loss": round(r.final_loss, 4),
            "resumed": step.resumed_from is not None,
        }
    elif Path(args.out).is_file():  # keep the finished run's record (its config, data, collection,
        result = read_json(args.out) | {"machine": result["machine"]}  # training); re-evaluate it here
    else:
        result["train"] = None
    t1 = time.perf_counter()
    # The same episodes worded canonically, with the three held-out vocabularies and everyday words, then
    # the blind controls.
    metrics, controls = evaluate_step(
        run.policy,
        run.root,
        args.episodes,
        args.controls,
        workers=args.workers,
        video_episodes=0,
        progress=True,
        log=lambda line: None,
        wordings=("canonical", *HELDOUT_SETS),
    )
    result["success"] = success_by_split(metrics)
    for name in HELDOUT_SETS:  # paired with canonical
        result[f"{name}_wordings"] = success_by_split(metrics["wordings"][name]) | {
            "retained": metrics["wordings"][name]["retained"],
            "paired_vs_canonical": metrics["wordings"][name]["paired"],
        }
    swap = evaluate(
        run.policy,
        EvalConfig(
            episodes=args.controls or 50, split="all", workers=args.workers, control="instruction_swap"
        ),
        run.eval_control("instruction_swap"),
        progress=True,
    )
    result["instruction_swap"] = {k: swap.get(k) for k in ("success", "first_moved_named", "moved_any")}
    result["controls"] = controls
    result["eval_seconds"] = round(time.perf_counter() - t1, 1)
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    result["episodes_per_split"] = args.episodes
    result["control_episodes_per_split"] = args.controls
    atomic_write_json(Path(args.out), result)
    print(json.dumps({k: result[k] for k in ("train", "success", "controls")}, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
