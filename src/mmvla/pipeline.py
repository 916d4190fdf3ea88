"""collect -> train -> evaluate -> controls -> summary -> report, as library functions.

The steps (:func:`collect_step`, :func:`train_step`, :func:`evaluate_step`, :func:`write_summary`) each
reuse what a directory already holds where that is safe, so every chain built from them is resumable;
the chains are :func:`run_demo` (``mmvla demo``), :func:`run_variant` and :func:`run_compare`
(``mmvla compare``). Benchmarks call these too. File names come from :class:`mmvla.core.paths.RunPaths`.

Resume detection, in one place (:func:`run_state`): a run directory is ``"finished"`` once its final
policy is saved, ``"partial"`` while it holds a resumable checkpoint, else ``"new"``. A finished run is
reused when the caller allows it; a partial one resumes from ``checkpoints/last``; a comparison run
whose ``spec.json`` records other settings is refused (:func:`claim_run`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# Modules, not functions: tests replace trainer.train and evaluate.evaluate to prove what is skipped.
import mmvla.evaluation.evaluate as evaluation
import mmvla.training.trainer as trainer
from mmvla.core.io import atomic_write_bytes, atomic_write_json, atomic_write_text, read_json
from mmvla.core.logs import read_log
from mmvla.core.paths import RunPaths, dataset_info
from mmvla.data.collect import collect_dataset
from mmvla.evaluation.compare import (
    CONTROL_NAMES,
    CompareConfig,
    Variant,
    base_configs,
    build_comparison,
    comparison_table,
    count_parameters,
    episode_outcomes,
    measure_latency,
    reference_observation,
    success_counts,
    variant_configs,
)
from mmvla.evaluation.inspect import report_attention_maps
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.policy.checkpoint import load_config
from mmvla.reporting.figures import comparison_chart_png, plot_attention_overlay
from mmvla.reporting.page import focus_run, write_report
from mmvla.sim.registry import default_cameras
from mmvla.training.config import TrainConfig
from mmvla.training.recipes import demo_configs

Log = Callable[[str], None]


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x))


# ------------------------------------------------------------------------ collect
def load_worker_policy(checkpoint: str) -> VLAPolicy:
    """The policy in ``checkpoint`` for a worker process that simulates beside it (one torch thread)."""
    torch.set_num_threads(1)
    return VLAPolicy.from_pretrained(checkpoint)


def checkpoint_corrector(
    checkpoint: str | os.PathLike[str], cameras: Sequence[str], image_size: int
) -> Callable[[], VLAPolicy]:
    """A picklable factory of the checkpoint's policy for DAgger corrections
    (:func:`mmvla.data.collect.collect_dataset`); ValueError unless it reads ``cameras`` at ``image_size``."""
    cfg, _ = load_config(checkpoint)
    if tuple(cfg.cameras) != tuple(cameras) or cfg.image_size != image_size:
        raise ValueError(
            f"collect: the policy {checkpoint} reads cameras {tuple(cfg.cameras)} at {cfg.image_size} px; "
            f"the collection records {tuple(cameras)} at {image_size} px"
        )
    return functools.partial(load_worker_policy, str(checkpoint))


def corrector_options(
    checkpoint: str | os.PathLike[str], cameras: Sequence[str] | None, env: str, image_size: int
) -> dict[str, Any]:
    """``collect_dataset``'s corrector arguments for ``checkpoint`` (``cameras`` None: the environment's
    default cameras), validated by :func:`checkpoint_corrector`."""
    cameras = cameras or default_cameras(env)
    return {
        "corrector": checkpoint_corrector(checkpoint, cameras, image_size),
        "corrector_name": str(checkpoint),
    }


def collect_step(
    data: str | os.PathLike[str],
    episodes: int,
    *,
    workers: int = 1,
    seed: int = 0,
    progress: bool = False,
    log: Log = print,
    prefix: str = "",
    correction_policy: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Path:
    """Collect ``episodes`` expert demonstrations (train split) into ``data``, or reuse the finished
    dataset already there; returns ``data``.

    ``options`` go to :func:`mmvla.data.collect.collect_dataset` (image_size, cameras, corrections, ...);
    ``correction_policy``: the checkpoint that executes the DAgger corrections. ``log`` receives one line
    per stage, starting with ``prefix`` (the summary line indented to match it).
    """
    if correction_policy is not None:
        options |= corrector_options(
            correction_policy,
            options.get("cameras"),
            options.get("env", "tabletop"),
            options.get("image_size", 64),
        )
    data = Path(data)
    if dataset_info(data).is_file():
        log(f"{prefix}reusing the dataset at {data}")
        return data
    log(f"{prefix}collecting {episodes} expert demonstrations -> {data}")
    s = collect_dataset(
        data, episodes=episodes, workers=workers, seed=seed, split="train", progress=progress, **options
    )
    log(" " * len(prefix) + str(s))
    return data


def require_dataset(data: str | os.PathLike[str]) -> Path:
    """``data`` when it holds a finished dataset, else ``FileNotFoundError``."""
    data = Path(data)
    if not dataset_info(data).is_file():
        raise FileNotFoundError(f"no dataset at {data} (expected meta/info.json from `mmvla collect`)")
    return data


def dataset_image_size(data: str | os.PathLike[str], cameras: Sequence[str]) -> int | None:
    """Image side (pixels) of the dataset's first camera in ``cameras``; None when it has no such camera."""
    info = read_json(dataset_info(data), "dataset info")
    feat = info.get("features", {}).get(f"observation.images.{cameras[0]}")
    return int(feat["shape"][0]) if feat else None


# ------------------------------------------------------------------------ train
def run_state(run_dir: str | os.PathLike[str]) -> str:
    """``"finished"`` (final policy saved), ``"partial"`` (a resumable checkpoint) or ``"new"``."""
    paths = RunPaths(run_dir)
    if paths.policy_weights.is_file():
        return "finished"
    return "partial" if paths.trainer_state.is_file() else "new"


@dataclass
class TrainStep:
    """What :func:`train_step` did.

    Attributes:
        policy_dir: the final policy.
        result: the trainer's result; None when a finished run was reused.
        resumed_from: the step training resumed from; None when it started at step 0 (or was reused).
    """

    policy_dir: Path
    result: trainer.TrainResult | None
    resumed_from: int | None


def train_step(
    data: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    policy_cfg: PolicyConfig,
    train_cfg: TrainConfig,
    *,
    reuse_finished: bool = False,
    init_from: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> TrainStep:
    """Train ``policy_cfg`` with ``train_cfg`` on ``data`` into ``run_dir``, resuming a partial run.

    With ``reuse_finished`` a finished run (:func:`run_state`) is returned untouched; without it the
    trainer runs again from ``checkpoints/last`` (which holds the final step, so nothing is re-learnt).
    """
    paths = RunPaths(run_dir)
    if reuse_finished and run_state(paths.root) == "finished":
        return TrainStep(paths.policy, None, None)
    resume = paths.trainer_state.is_file()
    start = int(read_json(paths.trainer_state, "trainer state")["step"]) if resume else None
    r = trainer.train(
        data, paths.root, policy_cfg, train_cfg, resume=resume, init_from=init_from, progress=progress
    )
    return TrainStep(r.policy_dir, r, start)


def steady_train_seconds(log_csv: Path, steps: int, batch_size: int, fallback: float) -> float:
    """Training time of ``steps`` steps at the median steady-state throughput of a run's log.

    The first log window holds one-off costs (kernel selection, allocator warm-up: tens of seconds for
    the first run of a process on a loaded machine) and a busy machine adds spikes; the median samples/s
    of the other windows is robust to both, so designs trained first and later compare fairly.
    ``fallback`` (the wall time) is returned when the log has fewer than two windows.
    """
    if not log_csv.is_file():
        return fallback
    sps = [v for v in read_log(log_csv).get("samples_per_s", [])[1:] if v > 0]
    return steps * batch_size / statistics.median(sps) if sps else fallback


def claim_run(run_dir: str | os.PathLike[str], spec: Mapping[str, Any]) -> None:
    """Refuse ``run_dir`` when its ``spec.json`` records other settings than ``spec`` (ValueError naming
    the keys that differ); the caller writes ``spec`` once it starts work."""
    paths = RunPaths(run_dir)
    if paths.spec.is_file():
        old = read_json(paths.spec, "run spec")
        if old != spec:
            diff = sorted(k for k in spec if old.get(k) != spec[k])
            raise ValueError(
                f"{paths.root} was trained with other settings ({', '.join(diff)} differ); "
                "use another --out or delete that run directory"
            )


# ------------------------------------------------------------------------ evaluate
def reusable_metrics(path: Path, eval_cfg: evaluation.EvalConfig) -> dict[str, Any] | None:
    """metrics.json at ``path`` when it was produced with the same evaluation settings (workers aside)."""
    if not path.is_file():
        return None
    m = read_json(path, "metrics")
    want = {
        k: v for k, v in _jsonable(dataclasses.asdict(eval_cfg)).items() if k not in ("workers", "rephrase")
    }
    have = {k: v for k, v in m.get("config", {}).items() if k not in ("workers", "rephrase")}
    return m if have == want else None


def evaluate_step(
    policy_dir: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    episodes: int,
    controls: int,
    *,
    workers: int = 1,
    wordings: Sequence[str] = ("canonical", "heldout", "heldout_fresh", "everyday"),
    video_episodes: int = 3,
    progress: bool = False,
    log: Log = print,
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """The demo's evaluation: ``episodes`` per split worded with each of ``wordings`` (same episodes,
    paired) into ``run_dir/eval``, then each blind control on ``controls`` episodes per split (0: none)
    into ``run_dir/eval_<control>``. Logs the tables; returns (metrics, {control: {split: success}})."""
    paths = RunPaths(run_dir)
    metrics = evaluation.evaluate_wordings(
        policy_dir,
        evaluation.EvalConfig(episodes=episodes, split="all", workers=workers, video_episodes=video_episodes),
        wordings,
        paths.eval,
        progress=progress,
    )
    log(evaluation.format_metrics(metrics))
    log(evaluation.format_wordings(metrics["wordings"]))
    blind: dict[str, dict[str, float]] = {}
    if controls:
        blind = evaluation.evaluate_blind_controls(
            policy_dir, controls, paths.root, workers=workers, progress=progress
        )
        for control, success in blind.items():
            log(f"control {control}: " + ", ".join(f"{k} {v:.1%}" for k, v in success.items()))
    return metrics, blind


def write_summary(
    run_dir: str | os.PathLike[str],
    policy_cfg: PolicyConfig,
    steps: int,
    metrics: Mapping[str, Any],
    controls: Mapping[str, Mapping[str, float]],
    timings: Mapping[str, float],
) -> Path:
    """``summary.json`` (read by the report): design, steps, success per split (canonical, both held-out
    wording sets and the everyday one), each control's success per split, and the stage timings in seconds; returns its path."""
    path = RunPaths(run_dir).summary
    atomic_write_json(
        path,
        {
            "fusion": policy_cfg.fusion,
            "head": policy_cfg.head_config().kind,
            "steps": steps,
            **{f"success_{k}": round(v, 3) for k, v in metrics["success"].items()},
            **{
                f"success_{name}_wordings_{k}": round(v, 3)
                for name in ("heldout", "heldout_fresh", "everyday")
                if name in metrics["wordings"]
                for k, v in metrics["wordings"][name]["success"].items()
            },
            **{
                f"control_{control}_{k}": round(v, 3)
                for control, success in controls.items()
                for k, v in success.items()
            },
            **{k: round(v, 1) for k, v in timings.items()},
        },
    )
    return path


# ------------------------------------------------------------------------ the demo
def report_step(
    run_dir: str | os.PathLike[str],
    comparison: Mapping[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
) -> Path:
    """Draw the attention overlays of the run's attention-fusion checkpoints, then write report.html.

    The page only reads the run directory; the overlays are the one part that needs the model, so they
    are computed here (evaluation) and drawn (reporting) before the page is written. ``out``: the page's
    path (default ``run_dir/report.html``). Returns the page's path.
    """
    root = Path(run_dir)
    for path, maps in report_attention_maps(root, focus_run(root, comparison)).items():
        plot_attention_overlay(maps, path)
    return write_report(root, out)


def run_demo(
    out: str | os.PathLike[str],
    *,
    episodes: int,
    steps: int,
    eval_episodes: int,
    controls: int,
    fusion: str | None = None,
    workers: int = 2,
    seed: int = 0,
    progress: bool = True,
    log: Log = print,
    shift: Any = None,
) -> Path:
    """``mmvla demo``: collect into ``out/data`` (reused when there; ``shift``: a
    :class:`mmvla.sim.tabletop.shift.ShiftConfig` the demonstrations are recorded under, e.g. the domain
    randomisation :data:`mmvla.training.recipes.DEMO_RANDOMISATION`), train the demo recipe
    (:func:`mmvla.training.recipes.demo_configs`, ``fusion`` swapped in when given) in ``out`` (resumed
    when partial), evaluate, run the controls, write ``summary.json`` and ``report.html``; returns the
    report's path."""
    paths = RunPaths(out)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    collect_step(
        paths.data,
        episodes,
        workers=workers,
        seed=seed,
        progress=progress,
        log=log,
        prefix="[1/4] ",
        env_options=None if shift is None else {"shift": shift},
    )
    timings["collect_s"] = time.perf_counter() - t0

    policy_cfg, train_cfg = demo_configs(steps=steps, seed=seed)
    if fusion:
        policy_cfg = PolicyConfig.from_dict({**policy_cfg.to_dict(), "fusion": fusion})
    log(f"[2/4] training a {policy_cfg.fusion} policy for {train_cfg.steps} steps -> {paths.root}")
    t1 = time.perf_counter()
    trained = train_step(paths.data, paths.root, policy_cfg, train_cfg, progress=progress)
    assert trained.result is not None  # reuse_finished=False: the trainer always ran
    timings["train_s"] = time.perf_counter() - t1

    log(
        f"[3/4] evaluating {eval_episodes} episodes per split (train and unseen compositions), "
        "worded canonically, with held-out words and with everyday ones"
    )
    t2 = time.perf_counter()
    metrics, blind = evaluate_step(
        trained.policy_dir, paths.root, eval_episodes, controls, workers=workers, progress=progress, log=log
    )
    timings["eval_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    write_summary(paths.root, policy_cfg, trained.result.steps, metrics, blind, timings)
    report = report_step(paths.root)
    log(
        f"[4/4] report: {report}\npolicy: {trained.policy_dir}\nmetrics: {paths.eval / 'metrics.json'}\n"
        f"total {timings['total_s'] / 60:.1f} min"
    )
    return report


# ------------------------------------------------------------------------ comparisons
def run_variant(
    variant: Variant,
    seed: int,
    data_dir: Path,
    out: Path,
    cfg: CompareConfig,
    base_policy: PolicyConfig,
    base_train: TrainConfig,
    observation: Mapping[str, Any] | None = None,
    progress: bool = False,
    log: Log = print,
) -> dict[str, Any]:
    """Train, evaluate and measure one variant at one seed in ``out/runs/<run name>``; returns its record.

    Stages already done with the same settings are skipped (see :mod:`mmvla.evaluation.compare`).
    """
    name = variant.run_name(seed)
    paths = RunPaths(RunPaths(out).runs / name)
    policy_cfg, train_cfg = variant_configs(variant, base_policy, base_train, seed)
    spec = {
        "variant": {"axis": variant.axis, "name": variant.name},
        "seed": seed,
        "policy": policy_cfg.to_dict(),
        "train": train_cfg.to_dict(),
        "data": str(data_dir.resolve()),
    }
    claim_run(paths.root, spec)
    common: dict[str, Any] = {"split": "all", "workers": cfg.workers, "max_steps": cfg.eval_max_steps}
    evals = {
        "none": evaluation.EvalConfig(episodes=cfg.eval_episodes, video_episodes=cfg.video_episodes, **common)
    }
    for control in CONTROL_NAMES if cfg.controls else ():
        evals[control] = evaluation.EvalConfig(episodes=cfg.controls, control=control, **common)
    eval_spec = {
        k: {kk: vv for kk, vv in _jsonable(dataclasses.asdict(v)).items() if kk != "workers"}
        for k, v in evals.items()
    }
    latency_spec = {"steps": cfg.latency_steps, "warmup": cfg.latency_warmup}
    if paths.result.is_file():
        res = read_json(paths.result, "run result")
        if (
            res.get("spec") == spec
            and res.get("eval_spec") == eval_spec
            and res.get("latency_spec") == latency_spec
        ):
            log(f"{name}: finished earlier, skipped (no training, no evaluation)")
            res["skipped"] = True
            return dict(res)
    paths.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(paths.spec, spec)

    # --- training (train_time.json is written once training finished)
    worked = False  # whether this call trained or evaluated anything
    if paths.train_time.is_file() and run_state(paths.root) == "finished":
        log(f"{name}: trained earlier, training skipped")
        train_time = read_json(paths.train_time, "train time")
    else:
        worked = True
        log(
            f"{name}: {'resuming' if paths.trainer_state.is_file() else 'training'} "
            f"({policy_cfg.fusion} fusion, {policy_cfg.head_config().kind} head, "
            f"{policy_cfg.language['kind']} language, {train_cfg.steps} steps)"
        )
        step = train_step(data_dir, paths.root, policy_cfg, train_cfg, progress=progress)
        r = step.result
        assert r is not None  # reuse_finished=False: the trainer always ran
        # A resumed run only timed its last part: scale its time per step to the whole run.
        total_s = r.train_seconds * train_cfg.steps / max(1, r.steps - (step.resumed_from or 0))
        train_time = {
            "train_s": steady_train_seconds(paths.log, train_cfg.steps, train_cfg.batch_size, total_s),
            "wall_s": total_s,
            "measured_s": r.train_seconds,
            "resumed_from_step": step.resumed_from,
            "samples_per_s": r.samples_per_s,
            "final_loss": r.final_loss,
        }
        atomic_write_json(paths.train_time, train_time)

    # --- evaluation and controls
    metrics: dict[str, Any] = {}
    for control, ecfg in evals.items():
        folder = paths.eval_control(control)
        m = reusable_metrics(folder / "metrics.json", ecfg)
        if m is None:
            log(f"{name}: evaluating{'' if control == 'none' else ' control ' + control}")
            worked = True
            m = evaluation.evaluate(paths.policy, ecfg, folder, progress=progress)
        metrics[control] = m

    # --- size and latency
    policy = VLAPolicy.from_pretrained(paths.policy)
    params = count_parameters(policy)
    latency = read_json(paths.latency, "latency") if paths.latency.is_file() else None
    if latency is None or {k: latency.get(k) for k in latency_spec} != latency_spec:
        obs = observation or reference_observation(policy_cfg.cameras, policy_cfg.image_size)
        latency = measure_latency(policy, obs, cfg.latency_steps, cfg.latency_warmup)
        atomic_write_json(paths.latency, latency)

    res = {
        "variant": variant.label,
        "axis": variant.axis,
        "name": variant.name,
        "seed": seed,
        "run_dir": f"runs/{name}",  # relative to OUT, so a moved comparison still reads
        "spec": spec,
        "eval_spec": eval_spec,
        "latency_spec": latency_spec,
        "params": params,
        "latency": latency,
        "train": train_time,
        "success": metrics["none"]["success"],
        "ci95": metrics["none"]["ci95"],
        "counts": success_counts(metrics["none"]),
        "per_family": metrics["none"]["per_family"],
        "controls": {
            c: {"success": m["success"], "counts": success_counts(m)}
            for c, m in metrics.items()
            if c != "none"
        },
    }
    atomic_write_json(paths.result, res)
    res["skipped"] = not worked
    return res


def run_compare(
    out_dir: str | os.PathLike[str],
    cfg: CompareConfig,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    log: Log = print,
    report: bool = True,
) -> dict[str, Any]:
    """Run (or resume) a comparison in ``out_dir`` and write comparison.json/.md/.png and report.html.

    Args:
        out_dir: output directory (layout in :mod:`mmvla.evaluation.compare`).
        cfg: what to compare and the budget.
        data_dir: a dataset from ``mmvla collect``; None collects ``cfg.episodes`` demonstrations into
            ``out_dir/data`` (reused when already there).
        progress: progress bars for training and evaluation.
        log: receives one line per stage (skips included).
        report: also write ``out_dir/report.html``.
    Returns:
        The comparison dict (also in ``comparison.json``); ``"ran"`` and ``"skipped"`` list the run
        directory names that did work in this invocation and those finished earlier.
    """
    paths = RunPaths(out_dir)
    out = paths.root
    out.mkdir(parents=True, exist_ok=True)
    base_policy, base_train = base_configs(cfg)
    if data_dir is None:
        data = collect_step(
            paths.data,
            cfg.episodes,
            workers=cfg.workers,
            seed=0,
            progress=progress,
            log=log,
            image_size=base_policy.image_size,
            cameras=base_policy.cameras,
        )
    else:
        data = require_dataset(data_dir)
    size = dataset_image_size(data, base_policy.cameras)
    if size is not None and size != base_policy.image_size:
        log(f"dataset images are {size} px: policies use image_size={size}")
        base_policy = PolicyConfig.from_dict({**base_policy.to_dict(), "image_size": size})
    obs = reference_observation(base_policy.cameras, base_policy.image_size)

    runs = [(v, s) for v in cfg.variants() for s in cfg.seeds]
    results: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    by_config: dict[str, dict[str, Any]] = {}
    for i, (v, seed) in enumerate(runs, 1):
        log(f"[{i}/{len(runs)}] {v.run_name(seed)}")
        pc, tc = variant_configs(v, base_policy, base_train, seed)
        key = json.dumps([pc.to_dict(), tc.to_dict()], sort_keys=True)
        if key in by_config:  # e.g. head-regression is the base recipe, like fusion-film
            same = by_config[key]
            log(f"{v.run_name(seed)}: same configuration as {Path(same['run_dir']).name}, results shared")
            results.append(
                {**same, "variant": v.label, "axis": v.axis, "name": v.name, "same_as": same["variant"]}
            )
            continue
        res = run_variant(v, seed, data, out, cfg, base_policy, base_train, obs, progress, log)
        by_config[key] = res
        results.append(res)
    for r in results:  # per-episode pass/fail for the paired tests (also for runs reused from disk)
        r["outcomes"] = episode_outcomes(RunPaths(out / r["run_dir"]).eval / "episodes.json")
    comparison = build_comparison(results, cfg, data)
    own = [r for r in results if "same_as" not in r]
    comparison["ran"] = [Path(r["run_dir"]).name for r in own if not r["skipped"]]
    comparison["skipped"] = [Path(r["run_dir"]).name for r in own if r["skipped"]]
    comparison["seconds"] = time.perf_counter() - t0
    atomic_write_json(paths.comparison, comparison)
    atomic_write_text(paths.comparison_table, comparison_table(comparison))
    atomic_write_bytes(paths.comparison_chart, comparison_chart_png(comparison))
    if report:
        report_step(out, comparison)
    return comparison
