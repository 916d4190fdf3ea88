"""``mmvla collect``: record scripted-expert demonstrations (and policy corrections) as a LeRobot v3.0 dataset."""

from __future__ import annotations

import argparse

from mmvla.cli import csv_list, flags
from mmvla.core.keys import ENV_NAMES
from mmvla.data.collect import DEFAULT_NOISE_STD, collect_dataset
from mmvla.pipeline import corrector_options
from mmvla.sim.tabletop.shift import RANDOMISABLE_AXES, parse_shift


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="dataset directory to create")
    p.add_argument(
        "--env",
        default="tabletop",
        choices=ENV_NAMES,
        help="simulator (default tabletop; metaworld-mt10/-mt50 need pip install 'mmvla[metaworld]')",
    )
    p.add_argument("--episodes", type=int, required=True, help="episodes to simulate (seeds S .. S+N-1)")
    p.add_argument("--workers", type=int, default=1, help="parallel simulation processes (default 1)")
    p.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    p.add_argument("--split", default="train", help="task split: train | unseen | all (default train)")
    p.add_argument("--image-size", type=int, default=64, help="square image side in pixels (default 64)")
    p.add_argument(
        "--cameras",
        type=csv_list,
        default=None,
        help="default front,wrist (tabletop), corner4 (metaworld-*)",
    )
    p.add_argument(
        "--families",
        type=csv_list,
        default=None,
        help="task families; default pick,push,place (tabletop), every task of the suite (metaworld-mt10/-mt50)",
    )
    p.add_argument("--noise", type=float, default=None, help="expert action noise std (default 0.1)")
    p.add_argument(
        "--shift",
        metavar="SPEC",
        help="tabletop distribution shift of every episode, e.g. camera=strong,lighting=mild; add ',randomise' "
        "for domain randomisation (each axis's severity drawn per episode in [0, it]) and ',clean_fraction=F' "
        "to leave that share of episodes clean; all=medium sets every axis but language (held-out wordings "
        "are never trained on)",
    )
    p.add_argument(
        "--corrections",
        type=int,
        default=0,
        metavar="N",
        help="DAgger: N further episodes executed by --policy and labelled by the expert (kept whatever "
        "their outcome; seeds --correction-seed ..)",
    )
    p.add_argument("--policy", help="checkpoint directory that executes the correction episodes")
    p.add_argument(
        "--correction-seed", type=int, default=500_000, help="first correction seed (default 500000)"
    )
    p.add_argument(
        "--correction-families",
        type=csv_list,
        default=None,
        help="families the corrections cycle through (default: every collected family)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT once the new dataset is complete")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:

    names = (
        "episodes",
        "workers",
        "seed",
        "split",
        "image_size",
        "cameras",
        "families",
        "overwrite",
        "env",
        "corrections",
        "correction_seed",
        "correction_families",
    )
    noise_std = DEFAULT_NOISE_STD if args.noise is None else args.noise
    env_options = {"shift": parse_shift(args.shift, RANDOMISABLE_AXES)} if args.shift else None
    corrector = (
        {} if args.policy is None else corrector_options(args.policy, args.cameras, args.env, args.image_size)
    )
    summary = collect_dataset(
        args.out,
        **flags(args, *names),
        noise_std=noise_std,
        env_options=env_options,
        progress=not args.quiet,
        **corrector,
    )
    print(summary.format())
    return 0
