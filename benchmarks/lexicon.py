"""Lexical grounding (#15): one checkpoint read without and with WordNet grounding, on the same episodes.

For each lexicon (``none``: words as given; ``wordnet``: every word outside the policy's training
vocabulary rewritten into the known word WordNet relates it to, mmvla.modules.lexicon) the checkpoint
is evaluated on the same episodes worded three ways: canonically, with the shipped held-out set and
with the second held-out vocabulary (``heldout_fresh``, written before the grounding was built and
never used to tune it). Also, per lexicon: the wrong-instruction control and the instruction swap
worded with held-out words (another object becomes the target: does the gripper go to it?).

Writes benchmarks/results/lexicon.json: success per lexicon, wording set and split (Wilson 95%),
held-out success as a fraction of canonical, exact McNemar tests (wordnet vs none on the same
episodes; each wording set vs canonical), and a text-level check: the share of wordings whose
grounded text the training lexicon alone parses back to its own task.

    .venv/bin/python benchmarks/lexicon.py --checkpoint runs/demo/policy   # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import time
from pathlib import Path
from typing import Any

from mmvla.core.io import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "lexicon.json"
os.environ.setdefault("MUJOCO_GL", "egl")
LEXICONS = ("none", "wordnet")
WORDINGS = ("canonical", "heldout", "heldout_fresh")


def text_check(policy_dir: Path) -> dict[str, Any]:
    """Share of each held-out set's wordings that parse (training lexicon only) to their own task,
    as given and after grounding with the checkpoint's vocabulary."""
    from mmvla.modules.language import normalize_instruction
    from mmvla.modules.lexicon import LexicalGrounding
    from mmvla.policy.checkpoint import load_config
    from mmvla.sim.tabletop import wordings as W

    cfg, _ = load_config(policy_dir)
    sets = {
        "heldout": {k: list(v) for k, v in W.heldout_wordings().items()},
        "heldout_fresh": W.wording_set("heldout_fresh", W.HELDOUT_PER_TASK),
    }
    vocabulary = cfg.vocabulary or W.training_vocabulary(cfg.instructions, W.TRAIN_PER_TASK)
    grounding = LexicalGrounding(vocabulary)
    saved = W.LEXICONS
    W.LEXICONS = {"train": W.TRAIN}  # what the policy learned: the training vocabulary only
    W._phrase_table.cache_clear()
    out: dict[str, Any] = {}
    try:
        for name, table in sets.items():
            counts = {"none": 0, "wordnet": 0}
            total = 0
            for canonical, ws in table.items():
                for w in ws:
                    text = normalize_instruction(w)
                    for lex, t in (("none", text), ("wordnet", grounding.rewrite(text))):
                        with contextlib.suppress(ValueError):  # unparsable: not its task
                            counts[lex] += W.parse_wording(t).instruction == canonical
                    total += 1
            out[name] = {"wordings": total, **{k: v / total for k, v in counts.items()}}
    finally:
        W.LEXICONS = saved
        W._phrase_table.cache_clear()
    return out


def main() -> None:
    from mmvla.evaluation.evaluate import (
        EvalConfig,
        evaluate,
        evaluate_wordings,
        paired_comparison,
        read_episodes,
    )

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="policy directory (RUN/policy)")
    p.add_argument("--out", default="runs/bench-lexicon", help="evaluation work directory")
    p.add_argument("--episodes", type=int, default=100, help="episodes per split and wording set")
    p.add_argument("--controls", type=int, default=50, help="episodes per split of each control")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    t0 = time.perf_counter()
    out = Path(args.out)
    result: dict[str, Any] = {
        "benchmark": "lexicon",
        "checkpoint": str(args.checkpoint),
        "episodes_per_split": args.episodes,
        "control_episodes_per_split": args.controls,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "text": text_check(Path(args.checkpoint)),
        "lexicons": {},
    }
    for lex in LEXICONS:
        cfg = EvalConfig(episodes=args.episodes, split="all", workers=args.workers, lexicon=lex)
        metrics = evaluate_wordings(args.checkpoint, cfg, WORDINGS, out / lex, progress=True)
        section = metrics["wordings"]
        controls = {}
        for control, wording in (("wrong_instruction", "canonical"), ("instruction_swap", "heldout")):
            c_cfg = EvalConfig(
                episodes=args.controls,
                split="all",
                workers=args.workers,
                lexicon=lex,
                control=control,
                wordings=wording,
            )
            m = evaluate(args.checkpoint, c_cfg, out / lex / f"{control}_{wording}", progress=True)
            controls[f"{control}_{wording}"] = {"success": m["success"], "ci95": m["ci95"]}
        result["lexicons"][lex] = {"wordings": section, "controls": controls}
    # wordnet vs none on the same episodes, per wording set and split
    paired: dict[str, Any] = {}
    for wording in WORDINGS:
        rel = Path() if wording == WORDINGS[0] else Path("wordings") / wording
        first, second = read_episodes(out / "none" / rel), read_episodes(out / "wordnet" / rel)
        paired[wording] = {
            split: paired_comparison(
                [r for r in first if r.split == split], [r for r in second if r.split == split]
            )
            for split in ("train", "unseen")
        }
    result["wordnet_vs_none"] = paired
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(RESULTS, result)
    print(f"{'lexicon':<8} {'wording':<14} {'train':>7} {'unseen':>7} {'kept/canon':>11}")
    for lex, sec in result["lexicons"].items():
        for wording, w in sec["wordings"].items():
            kept = "/".join(f"{v:.0%}" if v is not None else "-" for v in w["retained"].values())
            print(
                f"{lex:<8} {wording:<14} {w['success']['train']:>7.0%} {w['success']['unseen']:>7.0%} {kept:>11}"
            )
        for name, c in sec["controls"].items():
            print(f"{lex:<8} {name:<14} {c['success']['train']:>7.0%} {c['success']['unseen']:>7.0%}")
    for wording, splits in paired.items():
        print(
            f"wordnet vs none, {wording}: "
            + ", ".join(
                f"{s} p={v['p_value']:.3g} ({v['only_first']}/{v['only_second']})" for s, v in splits.items()
            )
        )
    print(f"text check: {result['text']}")
    print(f"wrote {RESULTS} in {result['wall_seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
