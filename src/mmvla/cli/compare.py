"""``mmvla compare``: train, evaluate and measure fusion designs (or heads, or language encoders) side by side."""

from __future__ import annotations

import argparse

from mmvla.cli import flags
from mmvla.evaluation.compare import CompareConfig, comparison_table, parse_override, split_overrides
from mmvla.pipeline import run_compare


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in _names(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--seeds must be comma-separated integers, got {text!r}") from e


def _override(text: str) -> tuple[str, str, object]:

    try:
        return parse_override(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory (resumable: rerun to continue)")
    p.add_argument(
        "--fusions", type=_names, default=(), help="comma-separated fusion designs, e.g. early,film,moe"
    )
    p.add_argument(
        "--heads", type=_names, default=(), help="comma-separated action heads: regression,bins,flow"
    )
    p.add_argument(
        "--languages", type=_names, default=(), help="comma-separated language encoders, e.g. lstm,minilm"
    )
    p.add_argument("--data", help="dataset from `mmvla collect` (default: collect --episodes into OUT/data)")
    p.add_argument("--episodes", type=int, default=300, help="demonstrations to collect when no --data")
    p.add_argument("--steps", type=int, default=1500, help="training steps per run (default 1500)")
    p.add_argument("--seeds", type=_seeds, default=(0,), help="comma-separated training seeds (default 0)")
    p.add_argument("--eval-episodes", type=int, default=50, help="evaluation episodes per split per run")
    p.add_argument(
        "--controls",
        type=int,
        default=20,
        metavar="N",
        help="episodes per split of each blind control (0: none)",
    )
    p.add_argument("--eval-max-steps", type=int, default=None, help="episode step limit in evaluation")
    p.add_argument("--workers", type=int, default=2, help="processes for collection and evaluation")
    p.add_argument(
        "--set",
        dest="overrides",
        type=_override,
        action="append",
        default=[],
        metavar="SCOPE.FIELD=VALUE",
        help="change the demo recipe for every variant, e.g. --set policy.dim=64 --set train.batch_size=32",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:

    policy_overrides, train_overrides = split_overrides(args.overrides)
    names = ("fusions", "heads", "languages", "steps", "seeds", "episodes", "eval_episodes", "controls")
    cfg = CompareConfig(
        **flags(args, *names, "workers", "eval_max_steps"),
        policy_overrides=policy_overrides,
        train_overrides=train_overrides,
    )
    comparison = run_compare(args.out, cfg, data_dir=args.data, progress=not args.quiet)
    print(comparison_table(comparison))
    print(
        f"ran {len(comparison['ran'])} run(s), skipped {len(comparison['skipped'])} finished earlier; "
        f"{comparison['seconds']:.0f} s\nwrote {args.out}/comparison.json, comparison.md, comparison.png, report.html"
    )
    return 0
