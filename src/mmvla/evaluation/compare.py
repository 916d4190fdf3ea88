"""Compare design choices on one task: fusion designs, action heads and language encoders.

A *variant* is the demo recipe (:func:`mmvla.training.recipes.demo_configs`) with one axis changed: the fusion
design, the action head, or the language encoder. Every variant is trained on the same dataset with the
same budget and seeds, evaluated on both splits (same evaluation seeds for every variant, so the
comparison is paired), checked with the blind controls, and measured (parameters, policy step latency,
training time). The output directory holds::

    data/                                  the dataset (collected when no --data is given)
    runs/<axis>-<name>-seed<k>/            one training run each (train's run directory) plus
        spec.json                          what it was trained with (a rerun with other settings fails)
        train_time.json                    training wall time once training finished
        eval/, eval_blank_images/, eval_wrong_instruction/   metrics.json (+ videos)
        latency.json                       act() latency at batch 1, one thread
        result.json                        everything above in one record (written last)
    comparison.json, comparison.md, comparison.png, report.html

It is resumable: a run whose ``result.json`` matches the requested settings is not trained or evaluated
again; a run killed while training resumes from ``checkpoints/last``; finished stages (training, each
evaluation, latency) are kept. The runs are driven by :func:`mmvla.pipeline.run_compare`; this module
holds the analysis: variants and their configs, measurements, aggregation, the winner and the table.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmvla.core.keys import BLIND_CONTROLS, SPLITS
from mmvla.core.stats import holm_reject, mcnemar_exact, wilson_interval
from mmvla.modules.fusion import available_fusions
from mmvla.modules.heads import HEADS
from mmvla.modules.language import LANGUAGE_KINDS
from mmvla.policy import PolicyConfig
from mmvla.sim.registry import make_env
from mmvla.training.config import TrainConfig, apply_overrides
from mmvla.training.recipes import demo_configs

AXES = ("fusion", "head", "language")
CONTROL_NAMES = BLIND_CONTROLS


# ------------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class Variant:
    """One design choice: ``axis`` ("fusion" | "head" | "language") set to ``name``."""

    axis: str
    name: str

    @property
    def label(self) -> str:
        """``"<axis>-<name>"``, e.g. ``"fusion-film"``."""
        return f"{self.axis}-{self.name}"

    def run_name(self, seed: int) -> str:
        """Run directory name under ``OUT/runs``: ``"<axis>-<name>-seed<k>"``."""
        return f"{self.label}-seed{seed}"


@dataclass
class CompareConfig:
    """What to compare and with which budget.

    Attributes:
        fusions, heads, languages: names to compare on each axis (empty: that axis is not varied).
        steps: training steps per run.
        seeds: training seeds; every variant is trained once per seed.
        episodes: expert demonstrations collected when no dataset is given.
        eval_episodes: evaluation episodes per split (train and unseen compositions).
        controls: episodes per split of each blind control (blank images; wrong instruction); 0 skips.
        workers: processes for collection and evaluation.
        eval_max_steps: episode step limit during evaluation (None: the environment's per-family one).
        video_episodes: evaluation episodes per split recorded as GIFs (for the report).
        latency_steps, latency_warmup: timed and warm-up ``act()`` calls of the latency measurement.
        policy_overrides, train_overrides: changes to the demo recipe applied to every variant, as
            ``{"dim": 64, "head.hidden": 64}`` (a dotted key sets a field inside a dict field).
    """

    fusions: tuple[str, ...] = ()
    heads: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    steps: int = 1500
    seeds: tuple[int, ...] = (0,)
    episodes: int = 300
    eval_episodes: int = 50
    controls: int = 20
    workers: int = 2
    eval_max_steps: int | None = None
    video_episodes: int = 1
    latency_steps: int = 100
    latency_warmup: int = 10
    policy_overrides: dict[str, Any] = field(default_factory=dict)
    train_overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fusions, self.heads, self.languages = (
            tuple(self.fusions),
            tuple(self.heads),
            tuple(self.languages),
        )
        self.seeds = tuple(int(s) for s in self.seeds)
        for axis, names, valid in (
            ("fusion", self.fusions, tuple(available_fusions())),
            ("head", self.heads, HEADS),
            ("language", self.languages, LANGUAGE_KINDS),
        ):
            bad = [n for n in names if n not in valid]
            if bad:
                raise ValueError(
                    f"compare: unknown {axis}(s) {', '.join(bad)}; available: {', '.join(valid)}"
                )
            if len(set(names)) != len(names):
                raise ValueError(f"compare: a {axis} is listed twice in {','.join(names)}")
        if not (self.fusions or self.heads or self.languages):
            raise ValueError("compare: nothing to compare; give --fusions, --heads and/or --languages")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"compare: seeds must be non-empty, unique and >= 0, got {self.seeds}")
        for name in ("steps", "episodes", "eval_episodes", "workers", "latency_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"compare: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("controls", "video_episodes", "latency_warmup"):
            if getattr(self, name) < 0:
                raise ValueError(f"compare: {name} must be >= 0, got {getattr(self, name)}")
        if self.eval_max_steps is not None and self.eval_max_steps < 1:
            raise ValueError(f"compare: eval_max_steps must be >= 1 or None, got {self.eval_max_steps}")

    def variants(self) -> list[Variant]:
        """Every variant in axis order (fusion, head, language), names in the order given."""
        return (
            [Variant("fusion", n) for n in self.fusions]
            + [Variant("head", n) for n in self.heads]
            + [Variant("language", n) for n in self.languages]
        )


def parse_override(text: str) -> tuple[str, str, Any]:
    """``"policy.FIELD=VALUE"`` or ``"train.FIELD=VALUE"`` -> (scope, field, value); VALUE is read as
    JSON, else kept as a bare string (``cnn``). Raises ``ValueError`` quoting ``text`` otherwise."""
    key, sep, value = text.partition("=")
    scope, dot, name = key.partition(".")
    if not sep or not dot or scope not in ("policy", "train") or not name:
        raise ValueError(
            f"--set expects policy.FIELD=VALUE or train.FIELD=VALUE (VALUE as JSON), got {text!r}"
        )
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value  # a bare string such as cnn
    return scope, name, parsed


def split_overrides(items: Sequence[tuple[str, str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parsed overrides (:func:`parse_override`) -> (policy overrides, train overrides); a later one wins."""
    out: dict[str, dict[str, Any]] = {"policy": {}, "train": {}}
    for scope, name, value in items:
        out[scope][name] = value
    return out["policy"], out["train"]


def base_configs(cfg: CompareConfig) -> tuple[PolicyConfig, TrainConfig]:
    """The demo recipe with ``cfg.steps`` and the overrides applied: (PolicyConfig, TrainConfig)."""
    policy, train = demo_configs(steps=cfg.steps, seed=0)
    policy = PolicyConfig.from_dict(apply_overrides(policy.to_dict(), cfg.policy_overrides))
    train_d = apply_overrides(train.to_dict(), cfg.train_overrides)
    train_d["steps"] = cfg.steps
    train_d["warmup_steps"] = min(train_d["warmup_steps"], max(0, cfg.steps // 10))
    return policy, TrainConfig.from_dict(train_d)


def variant_configs(
    variant: Variant, base_policy: PolicyConfig, base_train: TrainConfig, seed: int
) -> tuple[PolicyConfig, TrainConfig]:
    """(PolicyConfig, TrainConfig) of ``variant`` at training ``seed``: the base with one axis changed."""
    d = base_policy.to_dict()
    if variant.axis == "fusion":
        d["fusion"] = variant.name
    elif variant.axis == "head":
        d["head"] = {**d["head"], "kind": variant.name}
    elif variant.axis == "language":
        d["language"] = {**d["language"], "kind": variant.name}
    else:
        raise ValueError(f"unknown axis {variant.axis!r}; expected one of {AXES}")
    return PolicyConfig.from_dict(d), TrainConfig.from_dict({**base_train.to_dict(), "seed": seed})


# ------------------------------------------------------------------------ measurements
def reference_observation(
    cameras: Sequence[str], image_size: int, seed: int = 1_000_000, family: str = "pick"
) -> dict[str, Any]:
    """A real environment observation (after ``reset(seed)``) for latency measurements."""
    env = make_env("tabletop", cameras=tuple(cameras), image_size=image_size, split="train")
    try:
        obs, _ = env.reset(seed=seed, options={"family": family})
        return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in obs.items()}
    finally:
        env.close()


def measure_latency(
    policy: Any, observation: Mapping[str, Any], steps: int = 100, warmup: int = 10
) -> dict[str, float]:
    """Wall time of ``policy.act(observation)`` at batch 1 on one torch thread, after ``warmup`` calls.

    The policy runs in "ensemble" chunk mode, so every call encodes, fuses and decodes (the worst
    case of a control step). Returns p50/p99/mean/max in milliseconds and the settings.
    """
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        policy.eval()
        policy.reset(chunk_mode="ensemble")
        for _ in range(warmup):
            policy.act(observation)
        times = np.empty(steps)
        for i in range(steps):
            t0 = time.perf_counter_ns()
            policy.act(observation)
            times[i] = (time.perf_counter_ns() - t0) / 1e6
    finally:
        torch.set_num_threads(prev)
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p99_ms": float(np.percentile(times, 99)),
        "mean_ms": float(times.mean()),
        "max_ms": float(times.max()),
        "steps": steps,
        "warmup": warmup,
        "threads": 1,
        "batch": 1,
    }


def count_parameters(policy: Any) -> dict[str, int]:
    """Parameters of ``policy``: total and trainable registered ones, plus frozen encoders kept outside
    the module tree (the pretrained sentence encoder is held in a plain list so it is never saved)."""
    total = sum(p.numel() for p in policy.parameters())
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    external = 0
    for module in policy.modules():
        for value in vars(module).values():
            if isinstance(value, list | tuple):
                external += sum(
                    sum(p.numel() for p in v.parameters()) for v in value if isinstance(v, nn.Module)
                )
    return {"total": total, "trainable": trainable, "frozen_external": external}


def success_counts(metrics: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """split -> {"successes", "episodes"} recovered from a metrics dict (an evaluation's metrics.json)."""
    return {
        s: {
            "successes": round(metrics["success"][s] * metrics["episodes"][s]),
            "episodes": int(metrics["episodes"][s]),
        }
        for s in metrics["success"]
    }


# ------------------------------------------------------------------------ aggregation
def _pooled(counts: Sequence[Mapping[str, int]]) -> dict[str, Any]:
    k = sum(c["successes"] for c in counts)
    n = sum(c["episodes"] for c in counts)
    return {
        "success": k / n if n else float("nan"),
        "ci95": list(wilson_interval(k, n)),
        "successes": k,
        "episodes": n,
    }


def aggregate_variant(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One variant's seeds -> mean ± std (sample, 0 for one seed) per split, pooled Wilson CI, costs."""
    first = results[0]
    out: dict[str, Any] = {
        "variant": first["variant"],
        "axis": first["axis"],
        "name": first["name"],
        "seeds": [r["seed"] for r in results],
        "runs": [r["run_dir"] for r in results],
        "success": {},
        "controls": {},
    }
    for split in SPLITS:
        rates = [float(r["success"][split]) for r in results if split in r["success"]]
        if not rates:
            continue
        out["success"][split] = {
            "mean": statistics.fmean(rates),
            "std": statistics.stdev(rates) if len(rates) > 1 else 0.0,
            "min": min(rates),
            "max": max(rates),
            "per_seed": rates,
            "pooled": _pooled([r["counts"][split] for r in results]),
        }
    controls = sorted({c for r in results for c in r.get("controls", {})})
    for c in controls:
        per_split = {
            s: _pooled([r["controls"][c]["counts"][s] for r in results if s in r["controls"][c]["counts"]])
            for s in SPLITS
        }
        both = _pooled(
            [
                r["controls"][c]["counts"][s]
                for r in results
                for s in SPLITS
                if s in r["controls"][c]["counts"]
            ]
        )
        out["controls"][c] = {**both, "per_split": per_split}
    # Per-episode pass/fail keyed "<training seed>/<episode seed>": every variant meets the same keys.
    out["outcomes"] = {
        s: {f"{r['seed']}/{k}": v for r in results for k, v in r.get("outcomes", {}).get(s, {}).items()}
        for s in SPLITS
    }
    out["params"] = first["params"]
    out["latency_ms"] = {
        "p50": statistics.median(r["latency"]["p50_ms"] for r in results),
        "p99": statistics.median(r["latency"]["p99_ms"] for r in results),
    }
    out["train_s"] = statistics.fmean(r["train"]["train_s"] for r in results)
    return out


def episode_outcomes(episodes_json: Path) -> dict[str, dict[str, bool]]:
    """Pass/fail per evaluation episode from an evaluation's ``episodes.json``: split -> {episode seed: ok}.
    Empty when the file is missing (an evaluation from before it was written)."""
    if not episodes_json.is_file():
        return {}
    out: dict[str, dict[str, bool]] = {}
    for ep in json.loads(episodes_json.read_text()):
        out.setdefault(str(ep["split"]), {})[str(ep["seed"])] = bool(ep["success"])
    return out


def paired_tests(
    best: Mapping[str, Any], others: Sequence[Mapping[str, Any]], split: str = "unseen"
) -> list[dict[str, Any]]:
    """``best`` against each of ``others`` on the evaluation episodes both ran (same seeds): discordant
    counts, the exact McNemar p-value and Holm's decision over all the comparisons. Empty when the rows
    carry no per-episode outcomes."""
    mine = best.get("outcomes", {}).get(split, {})
    tests = []
    for r in others:
        theirs = r.get("outcomes", {}).get(split, {})
        shared = mine.keys() & theirs.keys()
        if not shared:
            return []
        wins = sum(mine[k] and not theirs[k] for k in shared)
        losses = sum(theirs[k] and not mine[k] for k in shared)
        tests.append(
            {
                "name": r["name"],
                "pairs": len(shared),
                "wins": wins,
                "losses": losses,
                "p_value": mcnemar_exact(wins, losses),
            }
        )
    for t, rejected in zip(tests, holm_reject([t["p_value"] for t in tests]), strict=True):
        t["better"] = rejected and t["wins"] > t["losses"]
    return tests


def pick_winner(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Best mean unseen success (ties: train success, then fewer parameters); whether its pooled 95%
    Wilson interval overlaps the runner-up's; and, with per-episode outcomes, paired exact McNemar tests
    against every other design on the same unseen episodes (Holm-corrected at 5%)."""
    rows = [r for r in rows if "unseen" in r["success"]]
    if not rows:
        return None

    def key(r: Mapping[str, Any]) -> tuple[float, float, int]:
        tr = r["success"].get("train", {}).get("mean", 0.0)
        return (-r["success"]["unseen"]["mean"], -tr, r["params"]["total"])

    ranked = sorted(rows, key=key)
    best = ranked[0]
    w: dict[str, Any] = {
        "variant": best["variant"],
        "name": best["name"],
        "unseen_mean": best["success"]["unseen"]["mean"],
        "unseen_ci95": best["success"]["unseen"]["pooled"]["ci95"],
        "ranking": [r["name"] for r in ranked],
    }
    if len(ranked) > 1:
        ru = ranked[1]
        lo_b, _ = best["success"]["unseen"]["pooled"]["ci95"]
        _, hi_r = ru["success"]["unseen"]["pooled"]["ci95"]
        overlap = lo_b <= hi_r
        w.update(
            {
                "runner_up": ru["name"],
                "runner_up_mean": ru["success"]["unseen"]["mean"],
                "runner_up_ci95": ru["success"]["unseen"]["pooled"]["ci95"],
                "ci_overlap": overlap,
                "spread": best["success"]["unseen"]["mean"] - ranked[-1]["success"]["unseen"]["mean"],
            }
        )
        statement = (
            f"{best['name']} has the best unseen success ({w['unseen_mean']:.1%}, 95% CI "
            f"[{w['unseen_ci95'][0]:.2f}, {w['unseen_ci95'][1]:.2f}]); runner-up {ru['name']} "
            f"({w['runner_up_mean']:.1%}, [{w['runner_up_ci95'][0]:.2f}, {w['runner_up_ci95'][1]:.2f}]): "
            f"the intervals {'overlap' if overlap else 'do not overlap'}"
        )
        paired = paired_tests(best, ranked[1:])
        if paired:
            beaten = [t["name"] for t in paired if t["better"]]
            tied = [t["name"] for t in paired if not t["better"]]
            w["paired"] = paired
            parts = [f"better than {', '.join(beaten)}"] if beaten else []
            parts += [f"not distinguishable from {', '.join(tied)}"] if tied else []
            statement += (
                f". Paired on the same {paired[0]['pairs']} unseen episodes (exact McNemar, Holm-corrected"
                f" over {len(paired)} comparisons): {'; '.join(parts)}"
            )
        # Established: the intervals separate, or the paired tests put it above every other design.
        w["established"] = not overlap or bool(paired and all(t["better"] for t in paired))
        w["statement"] = statement + (
            ": a clear winner."
            if w["established"]
            else ". The lead is not statistically established at this budget."
        )
    else:
        w["statement"] = f"{best['name']} is the only design compared ({w['unseen_mean']:.1%} unseen)."
    return w


def _fmt_rate(s: Mapping[str, Any] | None) -> str:
    if not s:
        return "-"
    return f"{s['mean']:.1%} ± {s['std']:.1%}" if len(s["per_seed"]) > 1 else f"{s['mean']:.1%}"


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def comparison_table(comparison: Mapping[str, Any]) -> str:
    """Markdown table of every variant (winner of each axis marked with ★) and the winner statements."""
    head = (
        "| axis | design | train success | unseen success | unseen 95% CI (pooled) | params | "
        "latency p50 / p99 ms | train s | blank images | wrong instruction |"
    )
    lines = [head, "|" + "---|" * 10]
    winners = {a: w["name"] for a, w in comparison.get("winners", {}).items() if w}
    for r in comparison["variants"]:
        unseen = r["success"].get("unseen")
        ci = f"[{unseen['pooled']['ci95'][0]:.2f}, {unseen['pooled']['ci95'][1]:.2f}]" if unseen else "-"
        ctrl = [f"{r['controls'][c]['success']:.1%}" if c in r["controls"] else "-" for c in CONTROL_NAMES]
        star = " ★" if winners.get(r["axis"]) == r["name"] else ""
        lines.append(
            f"| {r['axis']} | {r['name']}{star} | {_fmt_rate(r['success'].get('train'))} | "
            f"{_fmt_rate(unseen)} | {ci} | {_fmt_params(r['params']['total'])} | "
            f"{r['latency_ms']['p50']:.1f} / {r['latency_ms']['p99']:.1f} | {r['train_s']:.0f} | "
            f"{ctrl[0]} | {ctrl[1]} |"
        )
    s = comparison.get("settings", {})
    notes = [
        "",
        f"Seeds {s.get('seeds')}, {s.get('steps')} training steps, {s.get('eval_episodes')} evaluation "
        f"episodes per split per seed, controls {s.get('controls')} episodes per split per seed. "
        "Success: mean ± sample std over seeds; CI: 95% Wilson interval of the pooled episodes. "
        "Latency: policy.act() at batch 1, one thread. Train s: steps at the median steady-state "
        "throughput (first log window excluded). Controls: success pooled over both splits.",
    ]
    for axis, w in comparison.get("winners", {}).items():
        if w:
            notes.append(f"- **{axis}**: {w['statement']}")
    return "\n".join(lines + notes) + "\n"


def build_comparison(
    results: Sequence[Mapping[str, Any]], cfg: CompareConfig, data_dir: Path
) -> dict[str, Any]:
    """Aggregate run records into the comparison dict (variants in the requested order, winners per axis)."""
    rows = []
    for v in cfg.variants():
        rs = [r for r in results if r["variant"] == v.label]
        if rs:
            rows.append(aggregate_variant(rs))
    return {
        "settings": {
            "fusions": list(cfg.fusions),
            "heads": list(cfg.heads),
            "languages": list(cfg.languages),
            "steps": cfg.steps,
            "seeds": list(cfg.seeds),
            "eval_episodes": cfg.eval_episodes,
            "controls": cfg.controls,
            "eval_max_steps": cfg.eval_max_steps,
            "policy_overrides": cfg.policy_overrides,
            "train_overrides": cfg.train_overrides,
            "data": str(data_dir.resolve()),
        },
        "variants": rows,
        "winners": {
            a: pick_winner([r for r in rows if r["axis"] == a])
            for a in AXES
            if any(r["axis"] == a for r in rows)
        },
    }
