"""Modality diagnostics: how much each modality matters to a trained policy, and how it routes them.

For a checkpoint this measures, with closed-loop rollouts on the same episode seeds as
:func:`mmvla.evaluation.evaluate.evaluate`:

* the success drop when one modality is removed, per split and task family. Conditions:
  ``none`` (baseline), ``blank_images`` (every camera black), ``blank_<camera>`` (one camera black),
  ``wrong_instruction`` (an instruction naming another object, as evaluate's control),
  ``zero_proprio`` (state set to the dataset mean, i.e. zero after normalisation: no information
  but in distribution);
* the routing weights of adaptive fusions averaged over the rollouts, per condition: gated fusion's
  ``info["gate_weights"]`` (B, M) and, for the mixture of experts, ``info["router_probs"]``
  (B, L, N, E) averaged over each modality's valid tokens -> (L, M, E). They are read with a forward
  hook on ``policy.fusion``; the policy code is untouched;
* modality imbalance during training from the run's ``log.csv``: per-module gradient norms and each
  encoder's share of the encoders' total.

:func:`run_diagnostics` writes ``diagnostics.json`` to an output directory; its figures (ablation.png,
routing.png, gradient_balance.png) are drawn by :func:`mmvla.reporting.figures.write_diagnostics_figures`.
``mmvla report --run DIR --diagnostics`` runs both.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmvla.core.io import atomic_write_json
from mmvla.core.keys import SPLITS, STATE_KEY
from mmvla.core.logs import read_log
from mmvla.core.pool import imap
from mmvla.evaluation.controls import ablate, without_camera_fallback, wrong_instruction
from mmvla.evaluation.evaluate import EpisodeResult, summarise
from mmvla.policy import VLAPolicy
from mmvla.policy.checkpoint import load_config
from mmvla.sim.registry import get_spec, make_env
from mmvla.sim.rollout import rollout

ENCODER_GROUPS = ("vision", "language", "proprio")
MODULE_GROUPS = ("vision", "language", "proprio", "fusion", "head")


@dataclass
class DiagnosticsConfig:
    """Settings of the modality diagnostics.

    Attributes:
        episodes: episodes per split and condition.
        split: "train", "unseen" or "all".
        workers: parallel rollout processes (one torch thread each).
        seed: first episode seed (evaluate's default, so ``none`` matches ``mmvla eval``).
        max_steps: episode step limit (None: the environment's per-family one).
        families: task families to cycle through (None: the environment's defaults).
        conditions: conditions to run (None: every one that applies to the policy; ``none`` is
            always added since drops are measured against it).
        env: simulator name in :data:`mmvla.core.keys.ENV_NAMES`.
    """

    episodes: int = 20
    split: str = "all"
    workers: int = 1
    seed: int = 1_000_000
    max_steps: int | None = None
    families: tuple[str, ...] | None = None
    conditions: tuple[str, ...] | None = None
    env: str = "tabletop"

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.workers < 1:
            raise ValueError(
                f"DiagnosticsConfig: episodes and workers must be >= 1, got {self.episodes}, {self.workers}"
            )
        if self.split not in (*SPLITS, "all"):
            raise ValueError(f"DiagnosticsConfig.split must be train, unseen or all, got {self.split!r}")
        get_spec(self.env)  # a known environment
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"DiagnosticsConfig.max_steps must be >= 1 or None, got {self.max_steps}")

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits rolled out: the environment's for "all", else the one split."""
        return get_spec(self.env).splits if self.split == "all" else (self.split,)


def conditions_for(cameras: Sequence[str], use_proprio: bool) -> list[str]:
    """Every ablation condition that applies to a policy with these cameras and proprio setting."""
    conds = ["none", "blank_images"]
    if len(cameras) > 1:
        conds += [f"blank_{c}" for c in cameras]
    conds.append("wrong_instruction")
    if use_proprio:
        conds.append("zero_proprio")
    return conds


class FusionRecorder:
    """Forward hook on a fusion module recording its routing at every call (batch-averaged).

    ``gate`` gets one (M,) array per call when the fusion exposes ``info["gate_weights"]`` (B, M);
    ``router`` one (L, M, E) array when it exposes ``info["router_probs"]`` (B, L, N, E): the router
    probabilities averaged over the valid tokens of each modality (NaN where a modality has none).
    Modalities are the fusion config's (sorted) order, the order the fusions concatenate tokens in.
    """

    def __init__(self, fusion: Any) -> None:
        self.modalities: list[str] = list(fusion.cfg.modalities)
        self.gate: list[np.ndarray] = []
        self.router: list[np.ndarray] = []
        self._handle = fusion.register_forward_hook(self._hook)

    def _hook(self, module: Any, args: tuple[Any, ...], output: Any) -> None:

        info = getattr(output, "info", {}) or {}
        if "gate_weights" in info:
            self.gate.append(info["gate_weights"].detach().float().mean(0).cpu().numpy())  # (M,)
        if "router_probs" in info and args:
            x = args[0]
            probs = info["router_probs"].detach().float().cpu()  # (B, L, N, E)
            per, start = [], 0
            for m in self.modalities:
                n = x.tokens[m].shape[1]
                w = x.mask(m).detach().cpu().float()[:, None, :, None]  # (B, 1, n, 1)
                total = w.sum(dim=(0, 2))  # (1, 1)
                s = (probs[:, :, start : start + n] * w).sum(dim=(0, 2))  # (L, E)
                per.append(torch.where(total > 0, s / total.clamp_min(1), torch.full_like(s, float("nan"))))
                start += n
            self.router.append(torch.stack(per, dim=1).numpy())  # (L, M, E)

    def clear(self) -> None:
        """Forget what was recorded."""
        self.gate.clear()
        self.router.clear()

    def summary(self) -> dict[str, Any]:
        """Means over the recorded calls: {"gate_weights": (M,) list | None, "router": (L, M, E) | None, "calls"}."""
        return {
            "gate_weights": np.mean(self.gate, axis=0).tolist() if self.gate else None,
            "router": np.nanmean(np.stack(self.router), axis=0).tolist() if self.router else None,
            "calls": max(len(self.gate), len(self.router)),
        }

    def close(self) -> None:
        """Remove the hook."""
        self._handle.remove()


# ------------------------------------------------------------------------ worker side
_WORKER: dict[str, Any] = {}


def _worker_init(checkpoint: str) -> None:

    torch.set_num_threads(1)
    policy = VLAPolicy.from_pretrained(checkpoint)
    without_camera_fallback(policy)
    _WORKER["policy"] = policy
    _WORKER["recorder"] = FusionRecorder(policy.fusion)
    _WORKER["state_mean"] = np.asarray(policy.normalizer.stats[STATE_KEY]["mean"], dtype=np.float32)


Job = tuple[str, str, int, str | None, str, dict[str, Any]]  # condition, split, seed, family, env, env kwargs


def _run_episode(job: Job) -> tuple[str, EpisodeResult, dict[str, Any]]:
    condition, split, seed, family, env_name, env_kwargs = job
    policy, recorder = _WORKER["policy"], _WORKER["recorder"]
    cams = tuple(policy.cfg.cameras)
    env = make_env(env_name, cameras=cams, image_size=policy.cfg.image_size, split=split, **env_kwargs)
    try:
        obs, info = env.reset(seed=seed, options={"family": family} if family else None)
        canonical = str(obs["instruction"])
        given = canonical
        if condition == "wrong_instruction":  # the same choice as evaluate's control
            given = wrong_instruction(env_name, split, canonical, seed)
        policy.reset(chunk_mode="ensemble")
        recorder.clear()

        def act(o: dict[str, Any]) -> np.ndarray:
            return policy.act(ablate(dict(o, instruction=given), condition, cams, _WORKER["state_mean"]))

        ep = rollout(env, act, start=(obs, info))
        result = EpisodeResult(
            split, seed, str(ep.info.get("family", family)), canonical, given, ep.success, ep.steps
        )
        return condition, result, recorder.summary()
    finally:
        env.close()


def _worker_teardown() -> None:
    _WORKER["recorder"].close()
    _WORKER.clear()


# ------------------------------------------------------------------------ driver
def _drops(base: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """split -> {"all": drop, family: drop}: baseline success minus success under the condition."""
    out: dict[str, Any] = {}
    for split, rate in base["success"].items():
        if split not in other["success"]:
            continue
        d = {"all": rate - other["success"][split]}
        for fam, m in base["per_family"][split].items():
            if fam in other["per_family"][split]:
                d[fam] = m["success"] - other["per_family"][split][fam]["success"]
        out[split] = d
    return out


def _mean_routing(summaries: Sequence[Mapping[str, Any]], key: str) -> list[Any] | None:
    vals = [np.asarray(s[key], dtype=np.float64) for s in summaries if s.get(key) is not None]
    if not vals:
        return None
    return np.nanmean(np.stack(vals), axis=0).tolist()  # episode-weighted mean


def gradient_balance(log: Mapping[str, Sequence[float]]) -> dict[str, Any] | None:
    """Modality imbalance from a training log's per-module gradient norms (:func:`mmvla.core.logs.read_log`).

    Returns per-module mean gradient norm over the second half of training, each encoder's share of the
    encoders' summed norm (vision + language + proprio) over the same rows, and the largest/smallest
    share ratio (1 = balanced); None when the log has no gradient columns.
    """
    groups = [g for g in MODULE_GROUPS if log.get(f"grad_{g}")]
    if not groups:
        return None
    n = len(log[f"grad_{groups[0]}"])
    half = slice(n // 2, n)
    mean_norm = {g: float(np.mean(log[f"grad_{g}"][half])) for g in groups}
    enc = [g for g in ENCODER_GROUPS if g in groups and mean_norm[g] > 0]
    total = sum(mean_norm[g] for g in enc)
    share = {g: mean_norm[g] / total for g in enc} if total > 0 else {}
    ratio = max(share.values()) / min(share.values()) if len(share) > 1 and min(share.values()) > 0 else None
    return {
        "window": "second half of training",
        "rows": n - n // 2,
        "mean_grad_norm": mean_norm,
        "encoder_share": share,
        "dominant": max(share, key=lambda g: share[g]) if share else None,
        "max_min_ratio": ratio,
    }


def run_diagnostics(
    checkpoint: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None,
    cfg: DiagnosticsConfig,
    log_csv: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the modality diagnostics of a policy checkpoint (see the module docstring).

    Args:
        checkpoint: policy directory (``save_pretrained``).
        out_dir: where ``diagnostics.json`` goes (None: nothing written).
        cfg: the settings.
        log_csv: the run's training log for the imbalance figure (None: ``checkpoint/../log.csv``
            when it exists).
        progress: a progress bar over episodes.
    Returns:
        ``{"conditions": {cond: metrics}, "drop": {cond: {split: {"all"|family: drop}}},
        "routing": {...} | None, "gradient_balance": {...} | None, ...}``; success rates are fractions.
    """

    pcfg, _ = load_config(checkpoint)
    applicable = conditions_for(pcfg.cameras, pcfg.use_proprio)
    conds = list(cfg.conditions) if cfg.conditions else applicable
    unknown = [c for c in conds if c not in applicable]
    if unknown:
        raise ValueError(
            f"diagnostics: condition(s) {', '.join(unknown)} do not apply to this policy; "
            f"available: {', '.join(applicable)}"
        )
    if "none" not in conds:
        conds.insert(0, "none")
    env_kwargs: dict[str, Any] = {}
    if cfg.max_steps is not None:
        env_kwargs["max_steps"] = cfg.max_steps
    if cfg.families:
        env_kwargs["families"] = tuple(cfg.families)
    fams = cfg.families
    jobs: list[Job] = [
        (c, split, cfg.seed + i, fams[i % len(fams)] if fams else None, cfg.env, env_kwargs)
        for c in conds
        for split in cfg.splits
        for i in range(cfg.episodes)
    ]
    t0 = time.perf_counter()
    out = list(
        imap(
            _run_episode,
            jobs,
            workers=cfg.workers,
            initializer=_worker_init,
            initargs=(str(checkpoint),),
            teardown=_worker_teardown,
            progress=progress,
            desc="diagnostics",
        )
    )
    out.sort(key=lambda r: (conds.index(r[0]), r[1].split, r[1].seed))

    metrics = {c: summarise([r for cc, r, _ in out if cc == c]) for c in conds}
    modalities = list(pcfg.fusion_config().modalities)
    routing: dict[str, Any] | None = None
    gate = {c: _mean_routing([s for cc, _, s in out if cc == c], "gate_weights") for c in conds}
    router = {c: _mean_routing([s for cc, _, s in out if cc == c], "router") for c in conds}
    if any(v is not None for v in gate.values()) or any(v is not None for v in router.values()):
        routing = {"modalities": modalities}
        if any(v is not None for v in gate.values()):
            routing["gate_weights"] = gate
            routing["gate_weights_per_family"] = {
                c: {
                    f: _mean_routing([s for cc, r, s in out if cc == c and r.family == f], "gate_weights")
                    for f in sorted({r.family for cc, r, _ in out if cc == c})
                }
                for c in conds
            }
        if any(v is not None for v in router.values()):
            routing["router_probs_by_modality"] = router  # cond -> (L, M, E)
    log_path = Path(log_csv) if log_csv else Path(checkpoint).resolve().parent / "log.csv"
    balance = None
    log: dict[str, list[float]] | None = None
    if log_path.is_file():
        log = read_log(log_path)
        balance = gradient_balance(log)
    result: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "fusion": pcfg.fusion,
        "cameras": list(pcfg.cameras),
        "modalities": modalities,
        "config": dataclasses.asdict(cfg),
        "conditions": metrics,
        "drop": {c: _drops(metrics["none"], metrics[c]) for c in conds if c != "none"},
        "routing": routing,
        "gradient_balance": balance,
        "log": str(log_path) if log is not None else None,
        "seconds": time.perf_counter() - t0,
    }
    if out_dir is not None:
        write_diagnostics(result, out_dir)
    return result


# ------------------------------------------------------------------------ files
def write_diagnostics(diag: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``diagnostics.json`` to ``out_dir``; returns its path. Its figures (ablation.png, routing.png,
    gradient_balance.png) are drawn by :func:`mmvla.reporting.figures.write_diagnostics_figures`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "diagnostics.json", diag)
    return out / "diagnostics.json"


def format_diagnostics(diag: Mapping[str, Any]) -> str:
    """Plain-text summary: success and drop per condition and split, routing weights, imbalance."""
    lines = [f"{'condition':<20} {'split':<7} {'success':>8} {'drop':>7}  per family drop"]
    for c, m in diag["conditions"].items():
        for split, rate in m["success"].items():
            d = diag["drop"].get(c, {}).get(split, {})
            fam = ", ".join(f"{f} {v:+.0%}" for f, v in d.items() if f != "all")
            drop = f"{d['all']:+.0%}" if "all" in d else ""
            lines.append(f"{c:<20} {split:<7} {rate:>8.1%} {drop:>7}  {fam}")
    routing = diag.get("routing") or {}
    for c, w in (routing.get("gate_weights") or {}).items():
        if w is not None:
            lines.append(
                f"gate weights ({c}): "
                + ", ".join(f"{m} {v:.2f}" for m, v in zip(routing["modalities"], w, strict=True))
            )
    bal = diag.get("gradient_balance")
    if bal and bal["encoder_share"]:
        lines.append(
            "gradient share (2nd half of training): "
            + ", ".join(f"{g} {s:.0%}" for g, s in bal["encoder_share"].items())
            + (f"; dominant {bal['dominant']}" if bal["dominant"] else "")
        )
    return "\n".join(lines)
