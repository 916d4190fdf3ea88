"""``mmvla report``: one self-contained HTML page for a run directory."""

from __future__ import annotations

import argparse

HELP = "Write RUN/report.html: success tables, training curves and rollout clips, images embedded."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run", required=True, help="run directory (from `mmvla demo` or `mmvla train` + `mmvla eval`)"
    )
    p.add_argument("--out", help="output HTML path (default RUN/report.html)")


def run(args: argparse.Namespace) -> int:
    from mmvla.report import write_report

    print(f"report: {write_report(args.run, args.out)}")
    return 0
