"""Language robustness: does a policy follow instructions worded in ways it was never trained on?

Trains the demo recipe three ways on the same data and budget (8,000 steps), then evaluates each
checkpoint on the **same episodes** with three wording sets (canonical instructions; training
wordings; held-out wordings whose content words no training wording contains, mmvla.sim.tabletop.wordings),
with the wrong-instruction control and the instruction swap (another object on the table becomes
the target: does the gripper go to the newly named object?), and one diagnostic set: the held-out
verbs, fillers, directions and phrasings around *training* colour and shape words, which separates
unseen phrasing from unseen object words:

- ``canonical``: trained on the canonical instructions only (today's demo recipe);
- ``augment``: each sample's instruction replaced, with probability 0.75, by one of 32 training
  wordings of its task (``TrainConfig.wording_augment``);
- ``augment_attention``: the same, and the MiniLM sentence summary gains learned-query attention over
  the token states (``LanguageConfig.minilm_pool="attention"``).

Writes benchmarks/results/language.json: success per variant, wording set and split (Wilson 95%),
paired exact McNemar tests (each wording set against canonical wordings; each variant against
``canonical`` on every wording set), controls, the swap check, and a linear probe of what the frozen
MiniLM features say about held-out words.

    .venv/bin/python benchmarks/language.py --data runs/demo/data   # ~45 min on 2 cores (3 trainings)

Resumable: a variant whose ``RUN/policy`` exists is not trained again; a killed training resumes.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from mmvla.core.io import atomic_write_json, read_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "language.json"
os.environ.setdefault("MUJOCO_GL", "egl")
VARIANTS: dict[str, dict[str, Any]] = {
    "canonical": {"train": {}, "language": {}},
    "augment": {"train": {"wording_augment": 0.75}, "language": {}},
    "augment_attention": {"train": {"wording_augment": 0.75}, "language": {"minilm_pool": "attention"}},
}
WORDINGS = ("canonical", "train", "heldout")
CONTROL_RUNS = (
    ("wrong_instruction", "canonical"),
    ("instruction_swap", "canonical"),
    ("instruction_swap", "heldout"),
)
DIAGNOSTIC = "heldout_phrasing"  # held-out phrasing around training object words (not a held-out set)


def _train_variant(name: str, data: Path, run: Path, steps: int, threads: int) -> tuple[Path, float | None]:
    """Train (or resume, or reuse) one variant; returns its policy directory and training seconds
    (None when a finished run was reused)."""
    from mmvla.pipeline import train_step
    from mmvla.training.config import training_configs
    from mmvla.training.recipes import demo_configs

    policy_cfg, train_cfg = demo_configs(steps=steps)
    spec = VARIANTS[name]
    policy_cfg, train_cfg = training_configs(
        None,
        {**policy_cfg.to_dict(), **{f"language.{k}": v for k, v in spec["language"].items()}},
        {**train_cfg.to_dict(), **spec["train"], "threads": threads},
    )
    step = train_step(data, run, policy_cfg, train_cfg, reuse_finished=True, progress=True)
    return step.policy_dir, step.result.train_seconds if step.result else None


class SlotProbe(torch.nn.Module):
    """Linear read-out of each slot from the sentence embedding (``kind="sentence"``), or from one learned
    query per slot attending over the token states (``kind="attention"``, keys through a learned map)."""

    def __init__(self, kind: str, hidden: int, classes: list[int]) -> None:
        super().__init__()
        self.kind = kind
        self.heads = torch.nn.ModuleList(torch.nn.Linear(hidden, n) for n in classes)
        self.query = torch.nn.Parameter(torch.randn(len(classes), hidden) * 0.05)  # (Q, H)
        self.key = torch.nn.Linear(hidden, hidden)

    def forward(self, sent: torch.Tensor, x: torch.Tensor, m: torch.Tensor) -> list[torch.Tensor]:
        """sent (B, H), token states x (B, T, H), keep-mask m (B, T) -> one (B, classes) logit per slot."""
        if self.kind == "sentence":
            return [h(sent) for h in self.heads]
        a = torch.einsum("qd,btd->bqt", self.query, self.key(x)) / x.shape[-1] ** 0.5  # (B, Q, T)
        z = torch.einsum("bqt,btd->bqd", a.masked_fill(~m[:, None], float("-inf")).softmax(-1), x)
        return [h(z[:, i]) for i, h in enumerate(self.heads)]


def language_probe(steps: int = 300, seed: int = 0) -> dict[str, Any]:
    """What the frozen MiniLM features say about held-out words: linear read-outs of the task's slots.

    Trains, on the training wordings of every pick and push task (all compositions), one linear
    classifier per slot (colour, shape, family, direction) on (a) the sentence embedding and (b) learned-
    query attention over the token states; reports their accuracy on the held-out wordings (content
    words never in training) and on the training wordings. An upper bound on what any policy built on
    these features can read from unseen words.
    """
    from mmvla.modules.language import LanguageConfig, MiniLMTextEncoder, normalize_instruction
    from mmvla.sim.tabletop.tasks import COLOURS, SHAPES
    from mmvla.sim.tabletop.wordings import parse_wording, wording_set

    torch.manual_seed(seed)
    enc = MiniLMTextEncoder(LanguageConfig(kind="minilm"))
    families = ("pick", "push")
    sets = {
        "train": [
            (normalize_instruction(w), c) for c, ws in wording_set("train", 32, families).items() for w in ws
        ],
        "heldout": [
            (normalize_instruction(w), c) for c, ws in wording_set("heldout", 8, families).items() for w in ws
        ],
    }
    texts = sorted({w for pairs in sets.values() for w, _ in pairs})
    for i in range(0, len(texts), 128):
        enc.sentence_embeddings(texts[i : i + 128])
    slots = {"colour": len(COLOURS), "shape": len(SHAPES), "family": 2, "direction": 3}

    def labels(canonical: str) -> list[int]:
        t = parse_wording(canonical)
        return [
            COLOURS.index(t.target[0]),
            SHAPES.index(t.target[1]),
            families.index(t.family),
            ("left", "right", None).index(t.direction),
        ]

    def batch(pairs: list[tuple[str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = [enc._cache[w][1] for w, _ in pairs]
        x = torch.zeros(len(pairs), max(h.shape[0] for h in hidden), enc.hidden_size)
        m = torch.zeros(x.shape[:2], dtype=torch.bool)
        for i, h in enumerate(hidden):
            x[i, : len(h)], m[i, : len(h)] = h, True
        sent = torch.stack([enc._cache[w][0] for w, _ in pairs])
        return sent, x, m, torch.tensor([labels(c) for _, c in pairs])

    data = {k: batch(v) for k, v in sets.items()}
    out: dict[str, Any] = {
        "slots": list(slots),
        "train_wordings": len(sets["train"]),
        "heldout_wordings": len(sets["heldout"]),
    }
    for kind in ("sentence", "attention"):
        probe = SlotProbe(kind, enc.hidden_size, list(slots.values()))
        opt = torch.optim.AdamW(probe.parameters(), lr=1e-3, weight_decay=1e-2)
        sent, x, m, y = data["train"]
        for _ in range(steps):
            loss = sum(torch.nn.functional.cross_entropy(o, y[:, i]) for i, o in enumerate(probe(sent, x, m)))
            opt.zero_grad()
            loss.backward()  # type: ignore[union-attr]
            opt.step()
        with torch.no_grad():
            for split in ("train", "heldout"):
                s_, x_, m_, y_ = data[split]
                right = torch.stack([o.argmax(-1) == y_[:, i] for i, o in enumerate(probe(s_, x_, m_))])
                out.setdefault(kind, {})[split] = {
                    **{slot: float(right[i].float().mean()) for i, slot in enumerate(slots)},
                    "all_slots": float(right.all(0).float().mean()),
                }
    return out


def _evaluate_variant(policy_dir: Path, run: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Each wording set on the same episodes, and the controls, for one trained variant."""
    from mmvla.evaluation.evaluate import EvalConfig, evaluate, evaluate_wordings, success_by_split

    base = EvalConfig(episodes=args.episodes, split="all", workers=args.workers)
    worded = evaluate_wordings(policy_dir, base, WORDINGS, run / "eval", progress=True)
    controls = {}
    for control, wordings in CONTROL_RUNS:
        cfg = EvalConfig(
            episodes=args.controls, split="all", workers=args.workers, control=control, wordings=wordings
        )
        m = evaluate(policy_dir, cfg, run / f"eval_{control}_{wordings}", progress=True)
        controls[f"{control}_{wordings}"] = {
            "success": m["success"],
            "first_moved_named": m.get("first_moved_named"),
            "moved_any": m.get("moved_any"),
        }
    return {
        "wordings": {
            w: success_by_split(worded["wordings"][w])
            | {"paired_vs_canonical": worded["wordings"][w]["paired"]}
            for w in WORDINGS
        },
        "retained_heldout": worded["wordings"]["heldout"]["retained"],
        "controls": controls,
    }


def _diagnostic(policy_dir: Path, run: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The held-out phrasing with training object words, on the canonical run's episodes (paired)."""
    from mmvla.evaluation.evaluate import (
        EvalConfig,
        evaluate,
        paired_comparison,
        read_episodes,
        success_by_split,
    )

    cfg = EvalConfig(episodes=args.episodes, split="all", workers=args.workers, wordings=DIAGNOSTIC)
    m = evaluate(policy_dir, cfg, run / f"eval_{DIAGNOSTIC}", progress=True)
    canonical, worded = read_episodes(run / "eval"), read_episodes(run / f"eval_{DIAGNOSTIC}")
    paired = {
        split: paired_comparison(
            [r for r in canonical if r.split == split], [r for r in worded if r.split == split]
        )
        for split in m["success"]
    }
    return success_by_split(m) | {"paired_vs_canonical": paired}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="runs/demo/data", help="dataset directory (the demo's)")
    p.add_argument("--runs", default="runs/language", help="parent of the variants' run directories")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of the variants")
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--threads", type=int, default=0, help="torch threads per training (0: default)")
    p.add_argument("--episodes", type=int, default=100, help="evaluation episodes per split and wording set")
    p.add_argument("--controls", type=int, default=50, help="control / swap episodes per split")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--no-probe", action="store_true", help="skip the linear probe of MiniLM's features (keep --out's)"
    )
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args()

    from mmvla.evaluation.evaluate import paired_comparison, read_episodes

    data, runs = Path(args.data), Path(args.runs)
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; expected some of {list(VARIANTS)}")
    t0 = time.perf_counter()
    rows: dict[str, Any] = {}
    for name in names:
        run = runs / name
        policy_dir, train_s = _train_variant(name, data, run, args.steps, args.threads)
        if train_s is None and (run / "variant.json").is_file():
            train_s = read_json(run / "variant.json", "variant record").get("train_seconds")
        atomic_write_json(run / "variant.json", {"train_seconds": train_s})
        budget = {"episodes": args.episodes, "controls": args.controls}
        done = run / "language_row.json"
        if done.is_file() and read_json(done, "benchmark row").get("budget") == budget:
            rows[name] = read_json(done, "benchmark row")["row"]  # evaluated already at this budget
            keep = {
                f"{c}_{w}" for c, w in CONTROL_RUNS
            }  # rows written before the wrong instruction was worded
            rows[name]["controls"] = {k: v for k, v in rows[name]["controls"].items() if k in keep}
        else:
            rows[name] = _evaluate_variant(policy_dir, run, args) | {"train_seconds": train_s}
            atomic_write_json(done, {"budget": budget, "row": rows[name]})
        if DIAGNOSTIC not in rows[name]["wordings"]:
            rows[name]["wordings"][DIAGNOSTIC] = _diagnostic(policy_dir, run, args)
            atomic_write_json(done, {"budget": budget, "row": rows[name]})
    # Each variant against the first, per wording set: the same episodes, so the test is paired.
    first = names[0]
    versus: dict[str, Any] = {}
    for name in names[1:]:
        for w in (*WORDINGS, DIAGNOSTIC):
            sub = {"canonical": "eval", DIAGNOSTIC: f"eval_{DIAGNOSTIC}"}.get(w, f"eval/wordings/{w}")
            a, b = read_episodes(runs / first / sub), read_episodes(runs / name / sub)
            versus.setdefault(name, {})[w] = {
                split: paired_comparison(
                    [r for r in a if r.split == split], [r for r in b if r.split == split]
                )
                for split in ("train", "unseen")
            }
    probe = None
    if not args.no_probe:
        probe = language_probe()
    elif Path(args.out).is_file():  # keep the probe of an earlier run of this benchmark
        probe = read_json(Path(args.out), "language results").get("probe")
    result = {
        "benchmark": "language",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "budget": {
            "steps": args.steps,
            "episodes": args.episodes,
            "controls": args.controls,
            "data": str(data),
        },
        "variants": rows,
        "versus_first": {"first": first, "tests": versus},
        "probe": probe,
        "wall_seconds": time.perf_counter() - t0,
    }
    atomic_write_json(Path(args.out), result)
    print(f"{'variant':<20} {'wordings':<10} {'train':>7} {'unseen':>7}")
    for name, row in rows.items():
        for w in WORDINGS:
            r = row["wordings"][w]
            print(f"{name:<20} {w:<10} {r['train']['success']:>7.0%} {r['unseen']['success']:>7.0%}")
        swap = row["controls"]["instruction_swap_canonical"]
        print(
            f"{'':<20} wrong instruction {row['controls']['wrong_instruction_canonical']['success']}; "
            f"swap success {swap['success']}, first moved = named {swap['first_moved_named']}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
