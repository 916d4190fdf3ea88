"""The distribution-shift suite: a policy on the clean episodes and on each shifted variant of the SAME
episodes (same seeds: same task, objects, layout and targets), compared pairwise.

One worker pool runs every condition; each worker keeps one environment (one renderer) per split and
passes each episode's shift as a reset option (:class:`mmvla.sim.tabletop.shift.ShiftConfig`). The
table (``shift.json``) holds, per axis and severity: success with a 95% Wilson interval, the fraction of
clean success retained, and the exact McNemar test against the clean run on the same seeds (Holm-adjusted
over every cell). Next to it: ``shift/frames/`` (the first front-camera frame of the first episode of each
condition, what the policy saw), ``shift/gallery/`` (failed beside successful episodes chosen by outcome)
and ``shift/episodes.json``.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mmvla.core.io import atomic_write_bytes, atomic_write_json, read_json
from mmvla.core.pool import imap
from mmvla.core.stats import holm_reject, mcnemar_exact, wilson_interval
from mmvla.evaluation.evaluate import _WORKER, EpisodeResult, EvalConfig, _worker_init, summarise
from mmvla.policy.checkpoint import load_config
from mmvla.sim.registry import check_rendered, make_env
from mmvla.sim.rollout import rollout
from mmvla.sim.tabletop.shift import SHIFT_AXES, ShiftConfig, check_axes, severity_name

SHIFT_FILE = "shift.json"
SHIFT_DIR = "shift"
CLEAN = "clean"
GALLERY_PER_AXIS = 2  # lost episodes (clean success, shifted failure) shown per axis, beside one kept


@dataclass
class ShiftEpisode:
    """One episode of one condition (``axis`` "clean" with severity 0 for the clean run)."""

    axis: str
    severity: float
    split: str
    seed: int
    family: str
    instruction: str
    given_instruction: str
    success: bool
    length: int
    objects: int
    first: np.ndarray | None = None  # (H, W, 3) uint8 front frame at reset
    last: np.ndarray | None = None  # (H, W, 3) uint8 front frame at the end


def _env_for(split: str, opts: dict[str, Any]) -> Any:
    """This worker's environment for ``split`` (built once, reused by every condition)."""
    envs = _WORKER.setdefault("envs", {})
    if split not in envs:
        pcfg = _WORKER["policy"].cfg
        cams = tuple(dict.fromkeys(("front", *pcfg.cameras)))
        envs[split] = make_env(
            "tabletop", cameras=cams, image_size=pcfg.image_size, split=split, **opts["env"]
        )
    return envs[split]


def _close_envs() -> None:
    for env in _WORKER.pop("envs", {}).values():
        env.close()


def _run_shift_episode(job: tuple[str, float, str, int, str | None, dict[str, Any]]) -> ShiftEpisode:
    axis, severity, split, seed, family, opts = job
    policy = _WORKER["policy"]
    cams = tuple(policy.cfg.cameras)
    env = _env_for(split, opts)
    shift = ShiftConfig() if axis == CLEAN else ShiftConfig.single(axis, severity)
    options: dict[str, Any] = {"shift": shift}
    if family:
        options["family"] = family
    obs, info = env.reset(seed=seed, options=options)
    check_rendered(obs, cams)
    policy.reset(chunk_mode=opts["chunk_mode"])
    first = obs["front"].copy()
    ep = rollout(
        env, lambda o: policy.act({k: o[k] for k in (*cams, "state", "instruction")}), start=(obs, info)
    )
    sim = env.unwrapped
    return ShiftEpisode(
        axis,
        severity,
        split,
        seed,
        str(ep.info.get("family", family)),
        str(info["instruction"]),
        str(obs["instruction"]),
        ep.success,
        ep.steps,
        len(sim.objects),
        first,
        ep.obs["front"].copy(),
    )


def _jobs(
    cfg: EvalConfig, conditions: Sequence[tuple[str, float]], env_kwargs: dict[str, Any]
) -> list[tuple[str, float, str, int, str | None, dict[str, Any]]]:
    opts = {"env": env_kwargs, "chunk_mode": cfg.chunk_mode}
    fams = cfg.families
    return [
        (axis, sev, split, cfg.seed + i, fams[i % len(fams)] if fams else None, opts)
        for axis, sev in conditions
        for split in cfg.splits
        for i in range(cfg.episodes)
    ]


def _cell(rows: Sequence[ShiftEpisode], clean: dict[tuple[str, int], bool]) -> dict[str, Any]:
    k, n = sum(r.success for r in rows), len(rows)
    only_clean = sum(clean[(r.split, r.seed)] and not r.success for r in rows)
    only_shift = sum(r.success and not clean[(r.split, r.seed)] for r in rows)
    clean_k = sum(clean[(r.split, r.seed)] for r in rows)
    fams = sorted({r.family for r in rows})
    return {
        "success": k / n,
        "ci95": list(wilson_interval(k, n)),
        "episodes": n,
        "successes": k,
        "retained": k / clean_k if clean_k else None,
        "paired": {
            "only_clean": only_clean,
            "only_shifted": only_shift,
            "p_value": mcnemar_exact(only_clean, only_shift),
        },
        "per_family": {f: float(np.mean([r.success for r in rows if r.family == f])) for f in fams},
        "mean_objects": float(np.mean([r.objects for r in rows])),
        "mean_length": float(np.mean([r.length for r in rows])),
    }


def shift_table(episodes: Sequence[ShiftEpisode]) -> dict[str, Any]:
    """The robustness table from every condition's episodes (the clean ones included).

    Returns ``{"clean": cell, "axes": {axis: {severity name: cell}}}``, a cell being ``{"success",
    "ci95", "episodes", "successes", "retained" (success / clean success on the same seeds), "paired":
    {"only_clean", "only_shifted", "p_value", "holm_reject"}, "per_family", "mean_objects", "mean_length"}``.
    ValueError when a condition does not cover the clean run's (split, seed) episodes.
    """
    clean_rows = [r for r in episodes if r.axis == CLEAN]
    clean = {(r.split, r.seed): r.success for r in clean_rows}
    if not clean:
        raise ValueError("shift_table: no clean episodes to compare with")
    cells: dict[str, dict[str, Any]] = {}
    for axis in [a for a in SHIFT_AXES if any(r.axis == a for r in episodes)]:
        for sev in sorted({r.severity for r in episodes if r.axis == axis}):
            rows = [r for r in episodes if r.axis == axis and r.severity == sev]
            if {(r.split, r.seed) for r in rows} != set(clean):
                raise ValueError(f"shift_table: {axis} {sev:g} does not cover the clean run's episodes")
            cells.setdefault(axis, {})[severity_name(sev)] = dict(_cell(rows, clean), severity=sev)
    flat = [c for by_sev in cells.values() for c in by_sev.values()]
    for c, rej in zip(flat, holm_reject([c["paired"]["p_value"] for c in flat]), strict=True):
        c["paired"]["holm_reject"] = rej
    return {"clean": _cell(clean_rows, clean), "axes": cells}


def _png(path: Path, img: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _write_images(out: Path, episodes: Sequence[ShiftEpisode], first_seed: int) -> dict[str, Any]:
    """Example frames of each condition and the gallery chosen by outcome; returns their index."""
    frames: dict[str, str] = {}
    for r in episodes:
        if r.seed == first_seed and r.first is not None:
            name = f"{r.axis}_{severity_name(r.severity)}.png"
            if name not in frames.values():
                _png(out / SHIFT_DIR / "frames" / name, r.first)
                frames[f"{r.axis}/{severity_name(r.severity)}"] = name
    clean = {(r.split, r.seed): r for r in episodes if r.axis == CLEAN}
    gallery: list[dict[str, Any]] = []
    for axis in [a for a in SHIFT_AXES if any(r.axis == a for r in episodes)]:
        top = max(r.severity for r in episodes if r.axis == axis)
        rows = [r for r in episodes if r.axis == axis and r.severity == top]
        lost = [r for r in rows if clean[(r.split, r.seed)].success and not r.success][:GALLERY_PER_AXIS]
        kept = [r for r in rows if clean[(r.split, r.seed)].success and r.success][:1]
        failed_both = [r for r in rows if not clean[(r.split, r.seed)].success and not r.success][:1]
        for outcome, picked in (("lost", lost), ("kept", kept), ("failed_both", failed_both)):
            for r in picked:
                c = clean[(r.split, r.seed)]
                stem = f"{axis}_{severity_name(top)}_{r.split}_{r.seed}"
                entry: dict[str, Any] = {
                    "axis": axis,
                    "severity": severity_name(top),
                    "outcome": outcome,
                    "split": r.split,
                    "seed": r.seed,
                    "instruction": r.instruction,
                    "given_instruction": r.given_instruction,
                    "clean_success": c.success,
                    "shifted_success": r.success,
                    "images": {},
                }
                for which, ep in (("clean", c), ("shifted", r)):
                    for when in ("first", "last"):
                        img = getattr(ep, when)
                        if img is not None:
                            name = f"{stem}_{which}_{when}.png"
                            _png(out / SHIFT_DIR / "gallery" / name, img)
                            entry["images"][f"{which}_{when}"] = name
                gallery.append(entry)
    return {"frames": frames, "gallery": gallery}


def evaluate_shifts(
    checkpoint: str | os.PathLike[str],
    cfg: EvalConfig,
    axes: Sequence[str] = SHIFT_AXES,
    severities: Sequence[float] = (1.0, 2.0, 3.0),
    out_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the clean episodes and every (axis, severity) variant of them, and build the table.

    Args:
        checkpoint: policy directory.
        cfg: episodes per split and condition, splits, seed, workers, families, chunk mode, max steps
            (tabletop only; its controls, wordings and rephrasing must stay at their defaults).
        axes: shift axes (:data:`mmvla.sim.tabletop.shift.SHIFT_AXES`).
        severities: severities in (0, 3] run per axis (1 mild, 2 medium, 3 strong).
        out_dir: where ``shift.json``, ``metrics.json`` (the clean run's, with a ``"shift"`` section) and
            ``shift/`` go (None: nothing written).
    Returns:
        ``{"table": shift_table(...), "seconds", "episodes", "config", "axes", "severities"}``.
    """
    if cfg.env != "tabletop":
        raise ValueError(f"evaluate_shifts: the shift suite exists for the tabletop only, not {cfg.env}")
    if cfg.control != "none" or cfg.rephrase or cfg.wordings != "canonical" or cfg.server is not None:
        raise ValueError(
            "evaluate_shifts: run it without controls, rephrasing, wording sets or a server "
            "(the language axis gives held-out wordings itself)"
        )
    axes = check_axes(tuple(axes))
    sev = [float(s) for s in severities]
    if not sev or any(not 0 < s <= 3 for s in sev) or len(set(sev)) != len(sev):
        raise ValueError(
            f"evaluate_shifts: severities must be distinct numbers in (0, 3], got {list(severities)}"
        )
    load_config(checkpoint)  # fail early, in this process, on a bad checkpoint
    env_kwargs: dict[str, Any] = dict(cfg.env_options)
    if cfg.max_steps is not None:
        env_kwargs["max_steps"] = cfg.max_steps
    if cfg.families:
        env_kwargs["families"] = tuple(cfg.families)
    conditions = [(CLEAN, 0.0), *((a, s) for a in axes for s in sev)]
    jobs = _jobs(cfg, conditions, env_kwargs)
    t0 = time.perf_counter()
    episodes: list[ShiftEpisode] = []
    for r in imap(
        _run_shift_episode,
        jobs,
        workers=cfg.workers,
        initializer=_worker_init,
        initargs=(str(checkpoint), None),
        teardown=_close_envs,
        progress=progress,
        desc="shift",
    ):
        episodes.append(r)
    seconds = time.perf_counter() - t0
    order = {c: i for i, c in enumerate(conditions)}
    episodes.sort(key=lambda r: (order[(r.axis, r.severity)], r.split, r.seed))
    result: dict[str, Any] = {
        "table": shift_table(episodes),
        "seconds": seconds,
        "episodes": len(episodes),
        "episodes_per_cell": cfg.episodes * len(cfg.splits),
        "axes": list(axes),
        "severities": sev,
        "checkpoint": str(checkpoint),
        "config": {k: v for k, v in asdict(cfg).items() if k != "rephrase"},
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        result["images"] = _write_images(out, episodes, cfg.seed)
        atomic_write_json(
            out / SHIFT_DIR / "episodes.json",
            [{k: v for k, v in asdict(r).items() if k not in ("first", "last")} for r in episodes],
        )
        atomic_write_json(out / SHIFT_FILE, result)
        clean = [
            EpisodeResult(r.split, r.seed, r.family, r.instruction, r.given_instruction, r.success, r.length)
            for r in episodes
            if r.axis == CLEAN
        ]
        metrics = summarise(clean)
        metrics.update(
            control="none",
            checkpoint=str(checkpoint),
            seconds=seconds,
            config=replace_config(cfg),
            shift={k: result[k] for k in ("table", "seconds", "axes", "severities", "episodes_per_cell")},
        )
        atomic_write_json(out / "metrics.json", metrics)
    return result


def replace_config(cfg: EvalConfig) -> dict[str, Any]:
    """The JSON-able evaluation settings (without the rephrase table)."""
    return {k: v for k, v in asdict(replace(cfg, rephrase={})).items() if k != "rephrase"}


def format_shift_table(table: dict[str, Any]) -> str:
    """A plain-text table: success per axis and severity, 95% CI, retained fraction, paired p."""
    c = table["clean"]
    lines = [
        f"{'axis':<14} {'severity':<8} {'success':>8} {'95% CI':>14} {'retained':>9} {'lost':>5} {'won':>4} {'paired p':>9}",
        f"{'clean':<14} {'':<8} {c['success']:>8.1%} {'[{:.2f}, {:.2f}]'.format(*c['ci95']):>14} {'':>9} {'':>5} {'':>4} {'':>9}",
    ]
    for axis, by_sev in table["axes"].items():
        for name, m in by_sev.items():
            kept = m["retained"]
            p = m["paired"]
            star = "*" if p.get("holm_reject") else ""
            lines.append(
                f"{axis:<14} {name:<8} {m['success']:>8.1%} {'[{:.2f}, {:.2f}]'.format(*m['ci95']):>14} "
                f"{'-' if kept is None else f'{kept:.0%}':>9} {p['only_clean']:>5} {p['only_shifted']:>4} "
                f"{p['p_value']:>8.3g}{star}"
            )
    lines.append(
        "lost = clean success, shifted failure; won = the reverse (same seeds); * Holm-significant at 5%"
    )
    return "\n".join(lines)


def worst_axis(table: dict[str, Any]) -> tuple[str, float] | None:
    """The axis whose strongest severity retains the least clean success, and that success."""
    best: tuple[str, float] | None = None
    for axis, by_sev in table["axes"].items():
        top = max(by_sev.values(), key=lambda m: m["severity"])
        if best is None or top["success"] < best[1]:
            best = (axis, top["success"])
    return best


def read_shift(out_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``out_dir/shift.json`` when present."""
    path = Path(out_dir) / SHIFT_FILE
    if not path.is_file():
        return None
    return dict(read_json(path, "shift suite"))


__all__ = [
    "CLEAN",
    "SHIFT_FILE",
    "ShiftEpisode",
    "evaluate_shifts",
    "format_shift_table",
    "read_shift",
    "shift_table",
    "worst_axis",
]
