"""``mmvla demo``: collect -> train -> evaluate on both splits -> report, on built-in defaults."""

from __future__ import annotations

import argparse

from mmvla.cli import flags
from mmvla.pipeline import run_demo
from mmvla.sim.tabletop.shift import RANDOMISABLE_AXES, parse_shift
from mmvla.training.recipes import (
    DEMO_CONTROLS,
    DEMO_EPISODES,
    DEMO_EVAL_EPISODES,
    DEMO_RANDOMISATION,
    DEMO_STEPS,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--episodes", type=int, default=DEMO_EPISODES, help="expert demonstrations to collect")
    p.add_argument("--steps", type=int, default=DEMO_STEPS, help="training steps")
    p.add_argument(
        "--eval-episodes", type=int, default=DEMO_EVAL_EPISODES, help="evaluation episodes per split"
    )
    p.add_argument("--fusion", default=None, help="fusion design (default: the demo config's)")
    p.add_argument("--workers", type=int, default=2, help="processes for collection and evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--controls",
        type=int,
        default=DEMO_CONTROLS,
        metavar="N",
        help=f"blind-control episodes per split (default {DEMO_CONTROLS}; 0: none)",
    )
    p.add_argument(
        "--shift",
        metavar="SPEC",
        help="collect with this distribution shift ('randomised': the recipe's domain randomisation, every "
        "axis but language up to medium, half the episodes clean; or a spec like camera=strong,lighting=mild,randomise)",
    )
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:

    names = ("episodes", "steps", "eval_episodes", "controls", "fusion", "workers", "seed")
    shift = None
    if args.shift:
        shift = (
            DEMO_RANDOMISATION if args.shift == "randomised" else parse_shift(args.shift, RANDOMISABLE_AXES)
        )
    run_demo(args.out, **flags(args, *names), shift=shift, progress=not args.quiet)
    return 0
