"""`mmvla demo` as a benchmark: wall time per stage and success per split, task family and control.

Runs the demo (:func:`mmvla.pipeline.run_demo` on ``mmvla demo``'s default budget) in RUN unless RUN already holds a finished demo (``summary.json``), then writes
benchmarks/results/demo.json from the run's own files (``summary.json``: timings and controls;
``eval/metrics.json``: success, Wilson intervals and per-family rates) and prints a summary.

    .venv/bin/python benchmarks/demo.py                  # ~22 min on 2 cores (runs/demo)
    .venv/bin/python benchmarks/demo.py --run runs/demo  # record a demo that already ran

Time it alone: a second heavy job on two cores slows both severalfold.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

from mmvla.core.io import atomic_write_json, read_json
from mmvla.core.paths import RunPaths

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/demo", help="demo output directory (run it when unfinished)")
    args = p.parse_args()
    run = RunPaths(args.run)
    if not run.summary.is_file():
        # The budget: `mmvla demo`'s defaults (collection, training, evaluation, controls, workers).
        from mmvla.pipeline import run_demo
        from mmvla.training.recipes import DEMO_CONTROLS, DEMO_EPISODES, DEMO_EVAL_EPISODES, DEMO_STEPS

        run_demo(
            run.root,
            episodes=DEMO_EPISODES,
            steps=DEMO_STEPS,
            eval_episodes=DEMO_EVAL_EPISODES,
            controls=DEMO_CONTROLS,
            workers=2,
        )
    summary = read_json(run.summary, "demo summary")
    metrics = read_json(run.eval / "metrics.json", "demo metrics")
    config = read_json(run.run_config, "demo run config")
    result = {
        "benchmark": "demo",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "summary": summary,
        "success": metrics["success"],
        "ci95": metrics["ci95"],
        "per_family": metrics["per_family"],
        "episodes": metrics["episodes"],
        "wordings": metrics.get("wordings"),
        "policy": config["policy"],
        "train": config["train"],
    }
    atomic_write_json(RESULTS / "demo.json", result)
    print(
        f"demo: {summary['total_s'] / 60:.1f} min (collect {summary['collect_s']:.0f} s, train "
        f"{summary['train_s']:.0f} s, eval {summary['eval_s']:.0f} s); success "
        + ", ".join(f"{k} {v:.0%}" for k, v in metrics["success"].items())
        + "".join(
            f"; {name} wordings "
            + ", ".join(f"{k} {v:.0%}" for k, v in metrics["wordings"][name]["success"].items())
            for name in ("heldout", "heldout_fresh", "everyday")
            if name in metrics.get("wordings", {})
        )
    )
    print(f"wrote {RESULTS / 'demo.json'}")


if __name__ == "__main__":
    main()
