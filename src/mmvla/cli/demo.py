"""``mmvla demo``: collect -> train -> evaluate on both splits -> report, on built-in defaults."""

from __future__ import annotations

import argparse

HELP = "Run the whole chain on built-in defaults (about 10 minutes on a 2-core CPU) and write a report."

# Built-in defaults: the budget that fits ~10 minutes on a 2-core laptop CPU.
DEMO_EPISODES = 2000
DEMO_STEPS = 8000
DEMO_EVAL_EPISODES = 100
DEMO_CONTROLS = 50


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
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from mmvla.core.io import atomic_write_json
    from mmvla.data.collect import collect_dataset
    from mmvla.evaluation.evaluate import (
        EvalConfig,
        evaluate_blind_controls,
        evaluate_wordings,
        format_metrics,
        format_wordings,
    )
    from mmvla.policy import PolicyConfig
    from mmvla.reporting.page import write_report
    from mmvla.training.recipes import demo_configs
    from mmvla.training.trainer import train

    out = Path(args.out)
    data = out / "data"
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    if (data / "meta" / "info.json").is_file():
        print(f"[1/4] reusing the dataset at {data}")
    else:
        print(f"[1/4] collecting {args.episodes} expert demonstrations -> {data}")
        s = collect_dataset(
            data,
            episodes=args.episodes,
            workers=args.workers,
            seed=args.seed,
            split="train",
            progress=not args.quiet,
        )
        print(f"      {s}")
    timings["collect_s"] = time.perf_counter() - t0

    policy_cfg, train_cfg = demo_configs(steps=args.steps, seed=args.seed)
    if args.fusion:
        policy_cfg = PolicyConfig.from_dict({**policy_cfg.to_dict(), "fusion": args.fusion})
    print(f"[2/4] training a {policy_cfg.fusion} policy for {train_cfg.steps} steps -> {out}")
    t1 = time.perf_counter()
    result = train(
        data,
        out,
        policy_cfg,
        train_cfg,
        resume=(out / "checkpoints" / "last" / "trainer_state.json").is_file(),
        progress=not args.quiet,
    )
    timings["train_s"] = time.perf_counter() - t1

    print(
        f"[3/4] evaluating {args.eval_episodes} episodes per split (train and unseen compositions), "
        "worded canonically and with held-out words"
    )
    t2 = time.perf_counter()
    metrics = evaluate_wordings(
        result.policy_dir,
        EvalConfig(episodes=args.eval_episodes, split="all", workers=args.workers, video_episodes=3),
        ("canonical", "heldout"),
        out / "eval",
        progress=not args.quiet,
    )
    print(format_metrics(metrics))
    print(format_wordings(metrics["wordings"]))
    controls: dict[str, float] = {}
    if args.controls:
        blind = evaluate_blind_controls(
            result.policy_dir, args.controls, out, workers=args.workers, progress=not args.quiet
        )
        for control, success in blind.items():
            print(f"control {control}: " + ", ".join(f"{k} {v:.1%}" for k, v in success.items()))
            controls.update({f"control_{control}_{k}": round(v, 3) for k, v in success.items()})
    timings["eval_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    atomic_write_json(
        out / "summary.json",
        {
            "fusion": policy_cfg.fusion,
            "head": policy_cfg.head_config().kind,
            "steps": result.steps,
            **{f"success_{k}": round(v, 3) for k, v in metrics["success"].items()},
            **{
                f"success_heldout_wordings_{k}": round(v, 3)
                for k, v in metrics["wordings"]["heldout"]["success"].items()
            },
            **controls,
            **{k: round(v, 1) for k, v in timings.items()},
        },
    )
    report = write_report(out)
    print(
        f"[4/4] report: {report}\npolicy: {result.policy_dir}\nmetrics: {out / 'eval' / 'metrics.json'}\ntotal {timings['total_s'] / 60:.1f} min"
    )
    return 0
