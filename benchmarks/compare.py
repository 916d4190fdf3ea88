"""Every fusion design on the default task at a reduced budget: `mmvla compare`, timed.

Runs :func:`mmvla.pipeline.run_compare` (what ``mmvla compare`` runs) over the eight fusion designs (same data, budget and seed for each), then writes
benchmarks/results/compare.json (settings, wall time, machine, the comparison rows and the winner) and
prints the comparison table. The run directory is resumable: rerunning continues where a killed run
stopped and only re-aggregates finished designs.

    .venv/bin/python benchmarks/compare.py                 # 2,000 demos, 4,000 steps each; target <= 60 min
    .venv/bin/python benchmarks/compare.py --quick         # smoke run (~1 min), results/compare_quick.json
    # mean ± spread over three seeds (seeds 1, 2 added to the first run's directory: 72 min measured):
    .venv/bin/python benchmarks/compare.py --data runs/bench_compare/data --seeds 0,1,2 \
        --result compare_seeds.json
    # action heads and language encoders on the same runs directory (FiLM is the base recipe):
    .venv/bin/python benchmarks/compare.py --fusions film --heads regression,bins,flow \
        --languages lstm,minilm --result compare_axes.json
    # the same designs without the instruction-conditioned CNN, on the first run's dataset:
    .venv/bin/python benchmarks/compare.py --data runs/bench_compare/data --set policy.vision.condition=false \
        --steps 3000 --eval-episodes 50 --controls 10 --out runs/bench_compare_uncond \
        --result compare_unconditioned.json

Timings on a shared machine are noisy: the JSON records the CPU count and the load average at the start.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

from mmvla.core.io import atomic_write_json, read_json

RESULTS = Path(__file__).resolve().parent / "results"
FUSIONS = "early,late,cross_attention,transformer,film,gated,moe,hierarchical"
QUICK_EPISODES = 6


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_compare", help="comparison directory (resumable)")
    p.add_argument("--fusions", default=FUSIONS)
    p.add_argument("--heads", default="", help="action heads to compare too, e.g. regression,bins,flow")
    p.add_argument("--languages", default="", help="language encoders to compare too, e.g. lstm,minilm")
    p.add_argument("--data", help="reuse this dataset (from mmvla collect) instead of collecting")
    p.add_argument("--episodes", type=int, default=2000, help="demonstrations collected")
    p.add_argument("--steps", type=int, default=4000, help="training steps per design")
    p.add_argument("--seeds", default="0")
    p.add_argument("--eval-episodes", type=int, default=100, help="evaluation episodes per split")
    p.add_argument("--controls", type=int, default=20, help="blind-control episodes per split")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SCOPE.FIELD=VALUE",
        help="recipe change for every design (mmvla compare --set)",
    )
    p.add_argument("--result", default="compare.json", help="file name under benchmarks/results")
    p.add_argument("--quick", action="store_true", help="tiny smoke budget; writes compare_quick.json")
    args = p.parse_args()

    # The budget: the flags above, or the smoke budget of --quick (recorded as the equivalent command).
    from mmvla.evaluation.compare import CompareConfig, comparison_table, parse_override, split_overrides
    from mmvla.pipeline import run_compare

    out_dir, overrides = args.out, list(args.overrides)
    budget: dict[str, Any] = {
        "episodes": args.episodes,
        "steps": args.steps,
        "eval_episodes": args.eval_episodes,
        "controls": args.controls,
        "eval_max_steps": None,
    }
    argv = [
        "compare",
        "--fusions", args.fusions,
        "--out", args.out,
        "--episodes", str(args.episodes),
        "--steps", str(args.steps),
        "--seeds", args.seeds,
        "--eval-episodes", str(args.eval_episodes),
        "--controls", str(args.controls),
        "--workers", str(args.workers),
        "--quiet",
    ]  # fmt: skip
    argv += ["--data", args.data] if args.data else []
    argv += ["--heads", args.heads] if args.heads else []
    argv += ["--languages", args.languages] if args.languages else []
    for override in args.overrides:
        argv += ["--set", override]
    result_path = RESULTS / args.result
    if args.quick:
        budget = {
            "episodes": QUICK_EPISODES,
            "steps": 20,
            "eval_episodes": 2,
            "controls": 1,
            "eval_max_steps": 20,
        }
        overrides += ["policy.dim=32", "train.batch_size=16"]
        argv += [
            "--episodes",
            str(QUICK_EPISODES),
            "--steps",
            "20",
            "--eval-episodes",
            "2",
            "--controls",
            "1",
        ]
        argv += ["--eval-max-steps", "20", "--set", "policy.dim=32", "--set", "train.batch_size=16"]
        out_dir = args.out + "_quick"
        argv[argv.index("--out") + 1] = out_dir
        result_path = RESULTS / "compare_quick.json"
    policy_overrides, train_overrides = split_overrides([parse_override(o) for o in overrides])
    cfg = CompareConfig(
        fusions=_names(args.fusions),
        heads=_names(args.heads),
        languages=_names(args.languages),
        seeds=tuple(int(s) for s in _names(args.seeds)),
        workers=args.workers,
        policy_overrides=policy_overrides,
        train_overrides=train_overrides,
        **budget,
    )
    previous = read_json(result_path, "compare result") if result_path.is_file() else {}
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    t0 = time.perf_counter()
    comparison = run_compare(out_dir, cfg, data_dir=args.data)
    wall = time.perf_counter() - t0
    print(comparison_table(comparison))
    out = Path(out_dir)
    # The wall time of the invocation that trained every design, kept when this one only re-aggregated.
    full_run: float | None = wall
    if comparison["skipped"]:
        same = previous.get("settings") == comparison["settings"]
        full_run = previous.get("wall_s_full_run") if same else None
    rows: list[dict[str, Any]] = [
        {
            "axis": r["axis"],
            "design": r["name"],
            "success_train": r["success"]["train"]["mean"],
            "success_unseen": r["success"]["unseen"]["mean"],
            "unseen_ci95": r["success"]["unseen"]["pooled"]["ci95"],
            "std_unseen": r["success"]["unseen"]["std"],
            "params": r["params"]["total"],
            "latency_p50_ms": r["latency_ms"]["p50"],
            "latency_p99_ms": r["latency_ms"]["p99"],
            "train_s": r["train_s"],
            "controls": {c: v["success"] for c, v in r["controls"].items()},
        }
        for r in comparison["variants"]
    ]
    atomic_write_json(
        result_path,
        {
            "command": "mmvla " + " ".join(argv),
            "wall_s": wall,
            "wall_s_this_invocation_only": bool(comparison["skipped"]),
            "wall_s_full_run": full_run,
            "ran": comparison["ran"],
            "skipped": comparison["skipped"],
            "machine": {
                "cpus": os.cpu_count(),
                "load_avg_1min_at_start": load,
                "platform": platform.platform(),
            },
            "settings": comparison["settings"],
            "episodes_collected": None if args.data else QUICK_EPISODES if args.quick else args.episodes,
            "rows": rows,
            "winner": comparison["winners"].get("fusion"),
            "winners": comparison["winners"],
            "target_minutes": 60,
        },
    )
    print(
        f"wall {wall / 60:.1f} min ({len(comparison['ran'])} designs run, {len(comparison['skipped'])} reused)"
    )
    print(f"wrote {result_path}, {out}/report.html")


if __name__ == "__main__":
    main()
