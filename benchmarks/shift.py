"""Distribution shift: how far does a policy carry outside its training scenes?

Runs the shift suite (:func:`mmvla.evaluation.shifts.evaluate_shifts`) on a checkpoint: the clean
episodes and each of the 8 axes (front-camera pose, lighting, table, object size, distractors, gripper
start, image degradation, held-out language) at mild, medium and strong severity, on the SAME seeds, 50
episodes per cell (train split) by default. Writes benchmarks/results/shift.json: success per axis and
severity (Wilson 95%), retained fraction, paired exact McNemar against clean (Holm over the 24 cells),
the axis that hurts most, the wall time and the machine.

    .venv/bin/python benchmarks/shift.py --checkpoint runs/demo/policy          # ~8 min on 2 cores

``--randomised-run DIR`` (optional, ~35 min on 2 cores: collect 2,000 demonstrations with domain
randomisation over every visual and physical axis up to medium, train the demo recipe on them, run the
same suite) adds a second policy and a paired comparison per cell: does randomised training buy the
robustness back?

    .venv/bin/python benchmarks/shift.py --checkpoint runs/demo/policy --randomised-run runs/demo_dr
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

from mmvla.core.io import atomic_write_json, read_json
from mmvla.evaluation.evaluate import EvalConfig
from mmvla.evaluation.shifts import evaluate_shifts, format_shift_table, worst_axis
from mmvla.sim.tabletop.shift import SHIFT_AXES
from mmvla.training.recipes import DEMO_RANDOMISATION as RANDOMISATION

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "shift.json"
BUDGET_S = 600.0  # the target: the whole suite in 10 minutes on 2 cores


def _suite(checkpoint: Path, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cfg = EvalConfig(episodes=args.episodes, split=args.split, workers=args.workers, seed=args.seed)
    return evaluate_shifts(checkpoint, cfg, SHIFT_AXES, (1.0, 2.0, 3.0), out, progress=not args.quiet)


def _randomised_policy(run: Path, args: argparse.Namespace) -> Path:
    """Collect with domain randomisation and train the demo recipe in ``run`` (reused when done)."""
    from mmvla.pipeline import collect_step, train_step
    from mmvla.training.recipes import DEMO_EPISODES, DEMO_STEPS, demo_configs

    policy_dir = run / "policy"
    if policy_dir.is_dir():
        return policy_dir
    data = collect_step(
        run / "data", DEMO_EPISODES, workers=args.workers, seed=0, env_options={"shift": RANDOMISATION}
    )
    policy_cfg, train_cfg = demo_configs(steps=DEMO_STEPS, seed=0)
    train_step(data, run, policy_cfg, train_cfg, progress=not args.quiet)
    return policy_dir


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "runs" / "demo" / "policy")
    ap.add_argument("--episodes", type=int, default=50, help="episodes per cell (and split)")
    ap.add_argument("--split", default="train", choices=("train", "unseen", "all"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1_000_000)
    ap.add_argument(
        "--out", type=Path, default=None, help="suite outputs (default: CHECKPOINT/../eval_shift)"
    )
    ap.add_argument(
        "--randomised-run",
        type=Path,
        help="also train (or reuse) a domain-randomised policy here and compare",
    )
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    out = args.out or args.checkpoint.resolve().parent / "eval_shift"
    base = _suite(args.checkpoint, args, out)
    worst = worst_axis(base["table"])
    record: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "episodes_per_cell": base["episodes_per_cell"],
        "split": args.split,
        "seed": args.seed,
        "workers": args.workers,
        "episodes": base["episodes"],
        "suite_s": base["seconds"],
        "budget_s": BUDGET_S,
        "within_budget": base["seconds"] <= BUDGET_S,
        "table": base["table"],
        "worst_axis": None if worst is None else {"axis": worst[0], "strong_success": worst[1]},
        "strong": {a: m["strong"]["success"] for a, m in base["table"]["axes"].items() if "strong" in m},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    print(format_shift_table(base["table"]))
    if args.randomised_run is not None:
        policy = _randomised_policy(args.randomised_run, args)
        dr = _suite(policy, args, args.randomised_run / "eval_shift")
        record["randomised"] = {
            "checkpoint": str(policy),
            "randomisation": RANDOMISATION.to_dict(),
            "table": dr["table"],
            "strong": {a: m["strong"]["success"] for a, m in dr["table"]["axes"].items() if "strong" in m},
        }
        print("domain-randomised policy:")
        print(format_shift_table(dr["table"]))
    record["total_s"] = time.perf_counter() - t0
    previous = read_json(args.results, "shift results") if args.results.is_file() else {}
    if isinstance(previous, dict) and "randomised" in previous and "randomised" not in record:
        record["randomised"] = previous["randomised"]  # keep an earlier comparison run
    atomic_write_json(args.results, record)
    if worst is not None:
        print(
            f"hurts most: {worst[0]} (strong: {worst[1]:.0%} vs clean {base['table']['clean']['success']:.0%})"
        )
    print(
        f"{base['episodes']} episodes in {base['seconds']:.0f} s (budget {BUDGET_S:.0f} s) -> {args.results}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
