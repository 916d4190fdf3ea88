"""Lexical grounding (#15): one checkpoint read three ways (as given, grounded, read as tasks), same episodes.

For each lexicon (``none``: words as given; ``wordnet``: every word outside the policy's training
vocabulary rewritten into the known word WordNet relates it to, mmvla.modules.lexicon;
``wordnet_task``: grounded, then read as the task its slots name, mmvla.policy.reading) the checkpoint
is evaluated on the same episodes worded five ways: canonically, with the shipped held-out set, with
the second held-out vocabulary (``heldout_fresh``, written before the grounding was built), with the
third (``heldout_blind``, written before stop 44's compass words and gloss reading) and with the fourth
(``heldout_blind2``, written before the gloss began checking weak WordNet readings). Also, per lexicon: the wrong-instruction control and the instruction swap
worded with held-out words (another object becomes the target: does the gripper go to it?).

Writes benchmarks/results/lexicon.json: success per lexicon, wording set and split (Wilson 95%),
held-out success as a fraction of canonical, exact McNemar tests (each lexicon against the one before
it on the same episodes; each wording set vs canonical), a text-level check (per lexicon, the share of
wordings whose reading the training lexicon alone parses back to its own task, the share read as
exactly the canonical instruction and the share read as another task's) and a word-level check (the share of each vocabulary's colour,
shape and verb words and direction phrases grounded to training words of the same meaning; ``dev`` is
the vocabulary the grounding's rules were developed on, not a held-out one).
``--text-only`` runs the two checks alone (seconds) and writes benchmarks/results/lexicon_text.json.

    .venv/bin/python benchmarks/lexicon.py --checkpoint runs/demo/policy   # ~20 min on 2 cores
    .venv/bin/python benchmarks/lexicon.py --checkpoint runs/demo/policy --text-only
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import platform
import time
from pathlib import Path
from typing import Any

from mmvla.core.io import atomic_write_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "lexicon.json"
TEXT_RESULTS = ROOT / "benchmarks" / "results" / "lexicon_text.json"
os.environ.setdefault("MUJOCO_GL", "egl")
LEXICONS = ("none", "wordnet", "wordnet_task")
WORDINGS = ("canonical", "heldout", "heldout_fresh", "heldout_blind", "heldout_blind2")


def text_check(policy_dir: Path) -> dict[str, Any]:
    """Per lexicon, the share of each held-out set's wordings whose reading (what the encoder reads)
    parses with the training lexicon alone to its own task, the share read as exactly the canonical
    instruction, and the share read as another task's canonical instruction (a confident wrong reading)."""
    from mmvla.policy.checkpoint import load_config
    from mmvla.policy.reading import InstructionReader
    from mmvla.sim.tabletop import wordings as W
    from mmvla.sim.tabletop.everyday import everyday_wordings
    from mmvla.sim.tabletop.tasks import all_instructions

    cfg, _ = load_config(policy_dir)
    instructions = set(all_instructions("all"))
    sets = {
        "heldout": {k: list(v) for k, v in W.heldout_wordings().items()},
        "heldout_fresh": W.wording_set("heldout_fresh", W.HELDOUT_PER_TASK),
        "dev": W.wording_set("dev", W.HELDOUT_PER_TASK),
        "heldout_blind": W.wording_set("heldout_blind", W.HELDOUT_PER_TASK),
        "heldout_blind2": W.wording_set("heldout_blind2", W.HELDOUT_PER_TASK),
        "everyday": {k: list(v) for k, v in everyday_wordings().items()},
    }
    vocabulary = cfg.vocabulary or W.training_vocabulary(cfg.instructions, W.TRAIN_PER_TASK)
    readers = {lex: InstructionReader(lex, vocabulary) for lex in LEXICONS}
    out: dict[str, Any] = {}
    for name, table in sets.items():
        parsed = dict.fromkeys(LEXICONS, 0)
        exact = dict.fromkeys(LEXICONS, 0)
        wrong = dict.fromkeys(LEXICONS, 0)
        total = 0
        for canonical, ws in table.items():
            for w in ws:
                for lex, reader in readers.items():
                    text = reader.read(w)
                    exact[lex] += text == canonical
                    wrong[lex] += text != canonical and text in instructions
                    with contextlib.suppress(ValueError):  # unparsable: not its task
                        parsed[lex] += W.parse_wording(text, ("train",)).instruction == canonical
                total += 1
        out[name] = {
            "wordings": total,
            **{k: v / total for k, v in parsed.items()},
            "canonical": {k: v / total for k, v in exact.items()},
            "wrong": {k: v / total for k, v in wrong.items()},
        }
    return out


def word_check(policy_dir: Path) -> dict[str, Any]:
    """Per vocabulary: the share of its colour and shape words (read as nouns), verbs (the first word of
    each verb phrase, read as verbs) and direction phrases (right when the rewritten phrase holds "left"
    or "right") that grounding maps to a training word of the same meaning, with and without grounding."""
    from mmvla.modules.lexicon import LexicalGrounding
    from mmvla.policy.checkpoint import load_config
    from mmvla.sim.tabletop import wordings as W

    cfg, _ = load_config(policy_dir)
    grounding = LexicalGrounding(cfg.vocabulary or W.training_vocabulary(cfg.instructions, W.TRAIN_PER_TASK))

    def verbs(phrases: tuple[str, ...]) -> list[str]:
        return [p.split()[0] for p in phrases if not p.startswith("{")]

    def classes(lex: Any) -> dict[str, dict[str, list[str]]]:
        return {
            "colour": {k: list(v) for k, v in lex.colours.items()},
            "shape": {k: list(v) for k, v in lex.shapes.items()},
            "verb": {f: verbs(getattr(lex, f)) for f in ("pick", "push", "place")},
            "direction": {k: list(v) for k, v in lex.directions.items()},
        }

    train = classes(W.TRAIN)
    out: dict[str, Any] = {}
    for name in ("dev", "heldout", "heldout_fresh", "heldout_blind", "heldout_blind2"):
        rows: dict[str, Any] = {}
        for kind, table in classes(W.LEXICONS[name]).items():
            role = {"colour": "noun", "shape": "noun", "verb": "verb"}.get(kind)
            words = [(w, meaning) for meaning, ws in table.items() for w in dict.fromkeys(ws)]
            if kind == "direction":  # a phrase ("to the west"): read right when it then holds left/right
                right = sum(meaning in grounding.rewrite(w).split() for w, meaning in words)
                given = sum(meaning in w.split() for w, meaning in words)
            else:
                right = sum((grounding.ground(w, role) or w) in train[kind][meaning] for w, meaning in words)
                given = sum(w in train[kind][meaning] for w, meaning in words)
            rows[kind] = {"words": len(words), "none": given / len(words), "wordnet": right / len(words)}
        total = sum(r["words"] for r in rows.values())
        rows["all"] = {
            "words": total,
            **{k: sum(r[k] * r["words"] for r in rows.values()) / total for k in ("none", "wordnet")},
        }
        out[name] = rows
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
    p.add_argument("--text-only", action="store_true", help="the text and word checks alone (seconds)")
    args = p.parse_args()
    t0 = time.perf_counter()
    if args.text_only:
        checks = {
            "benchmark": "lexicon_text",
            "checkpoint": str(args.checkpoint),
            "text": text_check(Path(args.checkpoint)),
            "words": word_check(Path(args.checkpoint)),
        }
        atomic_write_json(TEXT_RESULTS, checks)
        for name, rows in checks["words"].items():
            text = checks["text"][name]
            print(
                f"{name:<14} text "
                + " -> ".join(f"{text[lex]:.0%}" for lex in LEXICONS)
                + f" (read as the canonical instruction: {text['canonical']['wordnet_task']:.0%}, as another"
                + f" task's: {text['wrong']['wordnet_task']:.0%}); words "
                + ", ".join(f"{k} {r['none']:.0%} -> {r['wordnet']:.0%}" for k, r in rows.items())
            )
        every = checks["text"]["everyday"]
        print(
            "everyday       text "
            + " -> ".join(f"{every[lex]:.0%}" for lex in LEXICONS)
            + f" (read as the canonical instruction: {every['canonical']['wordnet_task']:.0%})"
        )
        print(f"wrote {TEXT_RESULTS}")
        return
    out = Path(args.out)
    result: dict[str, Any] = {
        "benchmark": "lexicon",
        "checkpoint": str(args.checkpoint),
        "episodes_per_split": args.episodes,
        "control_episodes_per_split": args.controls,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
        "text": text_check(Path(args.checkpoint)),
        "words": word_check(Path(args.checkpoint)),
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
    # each lexicon against the one before it, on the same episodes, per wording set and split
    for before, after in itertools.pairwise(LEXICONS):
        paired: dict[str, Any] = {}
        for wording in WORDINGS:
            rel = Path() if wording == WORDINGS[0] else Path("wordings") / wording
            first, second = read_episodes(out / before / rel), read_episodes(out / after / rel)
            paired[wording] = {
                split: paired_comparison(
                    [r for r in first if r.split == split], [r for r in second if r.split == split]
                )
                for split in ("train", "unseen")
            }
        result[f"{after}_vs_{before}"] = paired
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(RESULTS, result)
    print(f"{'lexicon':<12} {'wording':<14} {'train':>7} {'unseen':>7} {'kept/canon':>11}")
    for lex, sec in result["lexicons"].items():
        for wording, w in sec["wordings"].items():
            kept = "/".join(f"{v:.0%}" if v is not None else "-" for v in w["retained"].values())
            print(
                f"{lex:<12} {wording:<14} {w['success']['train']:>7.0%} {w['success']['unseen']:>7.0%} {kept:>11}"
            )
        for name, c in sec["controls"].items():
            print(f"{lex:<12} {name:<14} {c['success']['train']:>7.0%} {c['success']['unseen']:>7.0%}")
    for before, after in itertools.pairwise(LEXICONS):
        for wording, splits in result[f"{after}_vs_{before}"].items():
            print(
                f"{after} vs {before}, {wording}: "
                + ", ".join(
                    f"{s} p={v['p_value']:.3g} ({v['only_first']}/{v['only_second']})"
                    for s, v in splits.items()
                )
            )
    print(f"text check: {result['text']}")
    print(f"wrote {RESULTS} in {result['wall_seconds'] / 60:.1f} min")


if __name__ == "__main__":
    main()
