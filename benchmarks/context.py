"""Context that matters: a memoryless and a temporal-memory policy under front-camera failure (issue #16).

On one dataset and one training budget, with front-camera failures sampled in training
(``TrainConfig.camera_failure="both"``, :mod:`mmvla.training.failures`), it trains

    memoryless   the demo recipe (:func:`mmvla.training.recipes.demo_configs`)
    lstm         the same + a per-episode memory of the last K fused features read by an LSTM
    attention    the same + the memory read by causal attention (only with ``--readers lstm,attention``)

and evaluates each on the same episodes (seeds, splits train and unseen) in these conditions:

    clean                no failure (the default "hold" safety layer)
    blank, freeze        the front camera goes black / freezes from a step drawn from the episode seed in
                         --failure-start; the safety fallback "continue" with no limit, so the policy
                         itself acts blind (a frozen frame is invisible to the safety layer anyway)
    blank+hold           the default safety layer: hold position while the camera is blank
    blank+continue       act on for at most --continue-steps blind steps, then hold
    blank+handover       stop the episode at the failure and report a hand-over

Success is compared with clean by an exact paired McNemar test per split (:mod:`mmvla.core.stats`),
and the memory policies with the memoryless one in the same failure condition. Per condition it
records blind steps, blind-motion steps (steps in which the hand moved > 1 mm while the front camera
was failed, read from the simulator's state) and the hand-over rate.

    .venv/bin/python benchmarks/context.py                       # the full budget (~1 h on 2 cores)
    .venv/bin/python benchmarks/context.py --episodes 20 --steps 50 --eval-episodes 4 --out runs/ctx_tiny

Writes benchmarks/results/context.json (``--results`` to put it elsewhere) and prints a summary
(``--summary FILE`` prints that of a written result again).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from mmvla.core.io import atomic_write_json, read_json
from mmvla.evaluation.evaluate import EvalConfig, evaluate, paired_comparison, read_episodes
from mmvla.pipeline import collect_step, train_step
from mmvla.policy import PolicyConfig
from mmvla.training.recipes import demo_configs

RESULTS = Path(__file__).resolve().parent / "results"
EVAL_SEED = 6_000_000  # disjoint from collection (0..), `mmvla eval` (1,000,000..) and failure_modes
UNLIMITED = 10**6  # "continue" without a limit: the policy acts through the whole failure

# condition -> (camera failure, safety fallback, continue steps: None = --continue-steps)
CONDITIONS: dict[str, tuple[str | None, str | None, int | None]] = {
    "clean": (None, None, 0),
    "blank": ("blank", "continue", UNLIMITED),
    "freeze": ("freeze", "continue", UNLIMITED),
    "blank+hold": ("blank", "hold", 0),
    "blank+continue": ("blank", "continue", None),
    "blank+handover": ("blank", "handover", 0),
}


def policies(args: argparse.Namespace) -> dict[str, tuple[PolicyConfig, Any]]:
    """name -> (PolicyConfig, TrainConfig): the demo recipe, with and without temporal memory."""
    base, train = demo_configs(steps=args.steps, seed=args.seed)
    train = dataclasses.replace(
        train,
        batch_size=args.batch_size,
        camera_failure="both",
        camera_failure_prob=args.failure_prob,
        camera_failure_window=args.context,
        camera_failure_span=args.failure_span,
        checkpoint_every=max(1, min(500, args.steps)),
        log_every=max(1, min(25, args.steps)),
    )
    d = base.to_dict()
    memory = {"context": args.context, "history_grad": args.history_grad}
    out: dict[str, tuple[PolicyConfig, Any]] = {"memoryless": (base, train)}
    for reader in args.readers:
        temporal = {**memory, "reader": reader, **({"num_heads": 4} if reader == "attention" else {})}
        out[reader] = (
            PolicyConfig.from_dict({**d, "temporal": temporal}),
            dataclasses.replace(train, history_dropout=args.history_dropout),
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench_context", help="working directory (data, runs, evaluations)")
    p.add_argument("--results", default=str(RESULTS / "context.json"))
    p.add_argument("--episodes", type=int, default=2000, help="expert demonstrations collected")
    p.add_argument("--families", default="pick,push,place", help="task families (collection and evaluation)")
    p.add_argument("--steps", type=int, default=8000, help="training steps, each policy")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--context", type=int, default=4, help="K: frames the memory reads (and failure window)")
    p.add_argument(
        "--readers", default="lstm", help="memory readers to train (comma-separated: lstm,attention)"
    )
    p.add_argument(
        "--history-grad",
        action="store_true",
        help="train the encoders through the window's past frames too (MemoryConfig.history_grad: K "
        "memoryless steps' work per step instead of (K + 2)/3); default: past frames fused without gradient, "
        "as the rollout stores them",
    )
    p.add_argument(
        "--history-dropout",
        type=float,
        default=0.0,
        help="memory policies: share of samples whose past frames are hidden (TrainConfig.history_dropout)",
    )
    p.add_argument("--failure-prob", type=float, default=0.5, help="share of training samples that fail")
    p.add_argument(
        "--failure-span",
        type=int,
        default=0,
        help="training failures up to this many steps old (TrainConfig.camera_failure_span); 0 = inside "
        "the K-frame window",
    )
    p.add_argument("--failure-start", default="4,16", help="LO,HI: first failed step at evaluation")
    p.add_argument("--continue-steps", type=int, default=8, help="N of the blank+continue condition")
    p.add_argument("--eval-episodes", type=int, default=40, help="episodes per split and condition")
    p.add_argument("--conditions", default=",".join(CONDITIONS), help="conditions evaluated")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--summary", metavar="FILE", help="print the summary of a written result and exit")
    args = p.parse_args()
    if args.summary:
        print(summary(read_json(Path(args.summary), "context result")))
        return
    args.readers = [r for r in args.readers.split(",") if r]
    families = tuple(f for f in args.families.split(",") if f)
    lo, hi = (int(v) for v in args.failure_start.split(","))
    conditions = [c for c in args.conditions.split(",") if c]
    unknown = sorted(set(conditions) - set(CONDITIONS))
    if unknown or "clean" not in conditions:
        raise SystemExit(f"--conditions: unknown {unknown} or no 'clean' (known: {', '.join(CONDITIONS)})")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = collect_step(
        out / f"data{args.episodes}", args.episodes, workers=args.workers, seed=0, families=families
    )
    runs: dict[str, Any] = {}
    episodes: dict[tuple[str, str], list[Any]] = {}
    for name, (policy_cfg, train_cfg) in policies(args).items():
        t_train = time.perf_counter()
        trained = train_step(data, out / name, policy_cfg, train_cfg, reuse_finished=True)
        run: dict[str, Any] = {"train_s": time.perf_counter() - t_train, "conditions": {}}
        for cond in conditions:
            failure, fallback, n = CONDITIONS[cond]
            cfg = EvalConfig(
                episodes=args.eval_episodes,
                split="all",
                workers=args.workers,
                seed=EVAL_SEED,
                families=families,
                camera_failure=failure,
                failure_start=(lo, hi),
                fallback=fallback,
                continue_steps=args.continue_steps if n is None else n,
            )
            where = out / name / "eval" / cond
            if not (where / "episodes.json").is_file():
                evaluate(trained.policy_dir, cfg, where, progress=False)
            m = read_json(where / "metrics.json", "metrics")
            episodes[name, cond] = read_episodes(where)
            run["conditions"][cond] = {
                "success": m["success"],
                "ci95": m["ci95"],
                "per_family": {
                    s: {f: v["success"] for f, v in fam.items()} for s, fam in m["per_family"].items()
                },
                **({"camera_failure": m["camera_failure"]} if "camera_failure" in m else {}),
            }
        for cond in conditions:
            if cond == "clean":
                continue
            run["conditions"][cond]["vs_clean"] = _paired(episodes[name, "clean"], episodes[name, cond])
        runs[name] = run
    for name in runs:
        if name == "memoryless":
            continue
        for cond in conditions:
            runs[name]["conditions"][cond]["vs_memoryless"] = _paired(
                episodes["memoryless", cond], episodes[name, cond]
            )
    result = {
        "benchmark": "context",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "results", "summary")},
        "conditions": {
            k: {"failure": f, "fallback": fb, "continue_steps": n} for k, (f, fb, n) in CONDITIONS.items()
        },
        "runs": runs,
        "wall_s": time.perf_counter() - t0,
    }
    atomic_write_json(Path(args.results), result)
    print(summary(result))
    print(f"wrote {args.results}")


def _paired(first: list[Any], second: list[Any]) -> dict[str, Any]:
    """McNemar per split of two runs on the same episodes (first = the reference)."""
    return {
        split: paired_comparison(
            [r for r in first if r.split == split], [r for r in second if r.split == split]
        )
        for split in sorted({r.split for r in first})
    }


def summary(result: dict[str, Any]) -> str:
    """One line per policy and condition: success per split (and per family), McNemar p vs clean and vs
    the memoryless policy, blind steps, blind-motion steps, hand-over rate."""
    lines = [
        f"{'policy':<11} {'condition':<15} {'split':<7} {'success':>7} {'p(clean)':>8} {'p(mem0)':>8} "
        f"{'blind':>6} {'moving':>6} {'handover':>8}  per family"
    ]
    for name, run in result["runs"].items():
        for cond, c in run["conditions"].items():
            for split, rate in c["success"].items():
                vs = c.get("vs_clean", {}).get(split)
                vm = c.get("vs_memoryless", {}).get(split)
                cf = c.get("camera_failure", {}).get(split)
                p_clean = "-" if vs is None else f"{vs['p_value']:.3g}"
                p_mem = "-" if vm is None else f"{vm['p_value']:.3g}"
                blind = "-" if cf is None else f"{cf['blind_steps']:.1f}"
                moving = "-" if cf is None else f"{cf['blind_motion_steps']:.1f}"
                over = "-" if cf is None else f"{cf['handed_over']:.0%}"
                families = " ".join(f"{f} {v:.0%}" for f, v in c.get("per_family", {}).get(split, {}).items())
                lines.append(
                    f"{name:<11} {cond:<15} {split:<7} {rate:>7.0%} {p_clean:>8} {p_mem:>8} "
                    f"{blind:>6} {moving:>6} {over:>8}  {families}"
                )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
