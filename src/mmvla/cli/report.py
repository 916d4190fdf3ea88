"""``mmvla report``: one self-contained HTML page for a run (or comparison) directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmvla.core.io import read_json
from mmvla.core.paths import RunPaths
from mmvla.evaluation.diagnostics import DiagnosticsConfig, format_diagnostics, run_diagnostics
from mmvla.pipeline import report_step
from mmvla.reporting.figures import write_diagnostics_figures
from mmvla.reporting.page import focus_run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run",
        required=True,
        help="run directory (from `mmvla demo`, `mmvla train` + `eval`, `mmvla compare`)",
    )
    p.add_argument("--out", help="output HTML path (default RUN/report.html)")
    p.add_argument(
        "--diagnostics",
        action="store_true",
        help="run the modality diagnostics (ablations, routing, gradient balance) into RUN/diagnostics "
        "on RUN/policy (for a comparison: the winner's first run) before writing the page",
    )
    p.add_argument("--episodes", type=int, default=20, help="diagnostics: episodes per split and condition")
    p.add_argument("--workers", type=int, default=2, help="diagnostics: rollout processes")
    p.add_argument("--max-steps", type=int, default=None, help="diagnostics: episode step limit")


def run(args: argparse.Namespace) -> int:

    run_dir = Path(args.run)
    comparison = None
    if RunPaths(run_dir).comparison.is_file():
        comparison = read_json(RunPaths(run_dir).comparison, "comparison")
    focus = focus_run(run_dir, comparison)
    if args.diagnostics:
        checkpoint = RunPaths(focus).policy
        if not (checkpoint / "config.json").is_file():
            raise FileNotFoundError(f"--diagnostics needs a policy checkpoint; none at {checkpoint}")
        cfg = DiagnosticsConfig(episodes=args.episodes, workers=args.workers, max_steps=args.max_steps)
        print(f"diagnostics of {checkpoint} ({args.episodes} episodes per split and condition)")
        diag = run_diagnostics(checkpoint, run_dir / "diagnostics", cfg, progress=True)
        write_diagnostics_figures(diag, run_dir / "diagnostics")
        print(format_diagnostics(diag))
    print(f"report: {report_step(run_dir, comparison, args.out)}")
    return 0
