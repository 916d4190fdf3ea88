"""Closed-loop evaluation of a policy in a simulator, in parallel worker processes.

Reports success per split and per task family with 95% Wilson intervals, episode lengths, and the
blind controls that prove fusion works (blank images; an instruction naming another object).
The simulator is named by ``EvalConfig.env`` (:mod:`mmvla.sim.registry`): the tabletop by default, or
Meta-World MT10 (one split, "train"; families are its tasks, cycled so each gets episodes/10).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mmvla.io import atomic_write_json

SPLITS = ("train", "unseen")
ENVS = ("tabletop", "metaworld-mt10")  # mmvla.sim.registry.ENV_NAMES (not imported here: it loads MuJoCo)
CONTROLS = ("none", "blank_images", "wrong_instruction")
BLIND_CONTROLS = CONTROLS[1:]  # vision-blind, language-blind


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% (by default) Wilson score interval of a binomial proportion; (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar p-value for paired pass/fail outcomes (two policies on the same episodes).

    Only the discordant pairs count: ``only_first`` episodes only the first policy passed, ``only_second``
    only the second. Under "equally good" each discordant pair is a fair coin, so the p-value is the
    two-sided binomial test of ``only_first`` ~ Bin(n, 1/2), n = ``only_first + only_second``; 1.0 when
    n = 0. Pairing removes the episode-to-episode variation two independent intervals carry.
    """
    if only_first < 0 or only_second < 0:
        raise ValueError(f"mcnemar_exact: counts must be >= 0, got {only_first}, {only_second}")
    n = only_first + only_second
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_first, only_second) + 1)) / 2**n
    return min(1.0, 2.0 * tail)


def cluster_bootstrap_rmse(
    sq_err: np.ndarray, clusters: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """RMSE of K models scored on the same N samples, and its bootstrap over clusters (e.g. episodes).

    Frames of one episode are correlated, so whole clusters are resampled with replacement; each draw
    uses the *same* clusters for every model, so differences between models are paired (the spread of
    ``boot[:, a] - boot[:, b]`` is that of the difference, not of two independent errors). Draw b takes
    the clusters ``rng.integers(0, C, C)`` of ``np.random.default_rng(seed)`` (C clusters, sorted ids).

    Args:
        sq_err: (K, N) squared errors (any unit²) of K models on the same N samples.
        clusters: (N,) cluster id of each sample.
        n_boot: number of bootstrap draws.
        seed: seed of the draws.
    Returns:
        rmse (K,) on all samples, and boot (n_boot, K) the RMSE of each draw, in the unit of the errors.
    Raises:
        ValueError: shapes disagree, no samples, or ``n_boot < 1``.
    """
    sq = np.asarray(sq_err, dtype=np.float64)
    if sq.ndim != 2 or sq.shape[1] == 0 or np.shape(clusters) != (sq.shape[1],):
        raise ValueError(
            f"cluster_bootstrap_rmse: want sq_err (K, N) with N > 0 and clusters (N,), got "
            f"{sq.shape} and {np.shape(clusters)}"
        )
    if n_boot < 1:
        raise ValueError(f"cluster_bootstrap_rmse: n_boot must be >= 1, got {n_boot}")
    _, member = np.unique(np.asarray(clusters), return_inverse=True)  # (N,) in 0..C-1
    C = int(member.max()) + 1
    sums = np.stack([np.bincount(member, weights=row, minlength=C) for row in sq])  # (K, C)
    counts = np.bincount(member, minlength=C).astype(np.float64)  # (C,)
    draws = np.random.default_rng(seed).integers(0, C, size=(n_boot, C))  # (n_boot, C)
    boot = np.sqrt(sums[:, draws].sum(-1) / counts[draws].sum(-1))  # (K, n_boot)
    return np.sqrt(sq.mean(axis=1)), boot.T


@dataclass
class EvalConfig:
    """How to evaluate.

    Attributes:
        episodes: episodes per split.
        split: "train", "unseen" or "all" (both).
        workers: parallel processes (each runs one torch thread).
        seed: first episode seed; episode i of a split uses seed + i (disjoint from collection seeds).
        families: task families to cycle through (None: the environment's defaults).
        control: "none", "blank_images" (vision-blind) or "wrong_instruction" (language-blind).
        chunk_mode: "ensemble" or "execute" action chunks.
        video_episodes: episodes per split recorded as GIFs with the instruction drawn on them.
        rephrase: canonical instruction -> the user's wording given to the policy instead.
        max_steps: episode step limit (None: the environment's own).
        env: simulator name in ``mmvla.sim.registry.ENV_NAMES`` ("tabletop" or "metaworld-mt10").
        env_options: further fields of that simulator's config (e.g. Meta-World's ``variations``).
        server: ``ws://host:port`` of ``mmvla serve``: workers act through a client of that server
            instead of loading the checkpoint (None: local policy).
    """

    episodes: int = 100
    split: str = "all"
    workers: int = 2
    seed: int = 1_000_000
    families: tuple[str, ...] | None = None
    control: str = "none"
    chunk_mode: str = "ensemble"
    video_episodes: int = 0
    rephrase: dict[str, str] = field(default_factory=dict)
    max_steps: int | None = None
    env: str = "tabletop"
    env_options: dict[str, Any] = field(default_factory=dict)
    server: str | None = None

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.workers < 1:
            raise ValueError(
                f"EvalConfig: episodes and workers must be >= 1, got {self.episodes}, {self.workers}"
            )
        if self.split not in (*SPLITS, "all"):
            raise ValueError(f"EvalConfig.split must be train, unseen or all, got {self.split!r}")
        if self.control not in CONTROLS:
            raise ValueError(f"EvalConfig.control must be one of {CONTROLS}, got {self.control!r}")
        if self.env not in ENVS:
            raise ValueError(f"EvalConfig.env must be one of {ENVS}, got {self.env!r}")
        if self.env != "tabletop" and self.split == "unseen":
            raise ValueError(f"EvalConfig: {self.env} has only the 'train' split")
        if self.server is not None:
            if not self.server.startswith(("ws://", "wss://")):
                raise ValueError(f"EvalConfig.server must be a ws:// or wss:// URL, got {self.server!r}")
            if self.control == "blank_images":
                raise ValueError(
                    "control 'blank_images' cannot run through a server: its safety layer holds position on "
                    "blank cameras; run this control with the local checkpoint"
                )

    @property
    def splits(self) -> tuple[str, ...]:
        if self.env != "tabletop":
            return ("train",)
        return SPLITS if self.split == "all" else (self.split,)


@dataclass
class EpisodeResult:
    """One rollout."""

    split: str
    seed: int
    family: str
    instruction: str
    given_instruction: str
    success: bool
    length: int
    frames: list[np.ndarray] | None = None


def read_rephrase_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Lines ``canonical instruction<TAB>user's wording`` -> dict; blank lines and # comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"rephrase file not found: {path}")
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise ValueError(f"{path}:{n}: expected 'canonical instruction<TAB>user wording', got {line!r}")
        out[parts[0].strip()] = parts[1].strip()
    return out


# ------------------------------------------------------------------------ worker side
_WORKER: dict[str, Any] = {}


def _worker_init(checkpoint: str | None, server: str | None = None) -> None:
    os.environ.setdefault("MUJOCO_GL", "egl")
    if server is not None:  # act through the policy server: one connection (episode state) per worker
        from mmvla.client import RemotePolicy

        _WORKER["policy"] = RemotePolicy(server)
        return
    import torch

    from mmvla.policy import VLAPolicy

    torch.set_num_threads(1)
    _WORKER["policy"] = VLAPolicy.from_pretrained(checkpoint)  # type: ignore[arg-type]


def _run_episode(job: tuple[str, int, str | None, dict[str, Any], bool]) -> EpisodeResult:
    split, seed, family, opts, record = job
    import mmvla.sim  # noqa: F401  (registers the environment)
    from mmvla.sim.registry import check_rendered, make_env, wrong_instruction_pool

    policy = _WORKER["policy"]
    pcfg = policy.cfg
    env = make_env(
        opts["env_name"], cameras=tuple(pcfg.cameras), image_size=pcfg.image_size, split=split, **opts["env"]
    )
    try:
        obs, info = env.reset(seed=seed, options={"family": family} if family else None)
        check_rendered(obs, pcfg.cameras)
        canonical = str(obs["instruction"])
        given = opts["rephrase"].get(canonical, canonical)
        if opts["control"] == "wrong_instruction":
            rng = np.random.default_rng(seed)
            given = str(rng.choice(wrong_instruction_pool(opts["env_name"], split, canonical)))
        if opts["control"] == "blank_images" and getattr(policy, "safety", None) is not None:
            from mmvla.diagnostics import without_camera_fallback

            without_camera_fallback(policy)  # measure the vision-blind policy, not the blank-camera hold
        policy.reset(chunk_mode=opts["chunk_mode"])
        frames: list[np.ndarray] | None = [] if record else None
        success, steps = bool(info.get("success", False)), 0
        done = False
        while not done:
            model_obs = dict(obs, instruction=given)
            if opts["control"] == "blank_images":
                model_obs.update({c: np.zeros_like(obs[c]) for c in pcfg.cameras})
            action = policy.act(model_obs)
            obs, _, terminated, truncated, info = env.step(action)
            steps += 1
            success = success or bool(info.get("success", False))
            if frames is not None:
                frames.append(np.concatenate([obs[c] for c in pcfg.cameras], axis=1))
            done = terminated or truncated or success
        return EpisodeResult(
            split, seed, str(info.get("family", family)), canonical, given, success, steps, frames
        )
    finally:
        env.close()


# ------------------------------------------------------------------------ driver
def _jobs(
    cfg: EvalConfig, families: Sequence[str] | None, env_kwargs: dict[str, Any]
) -> Iterator[tuple[str, int, str | None, dict[str, Any], bool]]:
    opts = {
        "control": cfg.control,
        "chunk_mode": cfg.chunk_mode,
        "rephrase": cfg.rephrase,
        "env": env_kwargs,
        "env_name": cfg.env,
    }
    for split in cfg.splits:
        for i in range(cfg.episodes):
            family = families[i % len(families)] if families else None
            yield split, cfg.seed + i, family, opts, i < cfg.video_episodes


def evaluate(
    checkpoint: str | os.PathLike[str] | None,
    cfg: EvalConfig,
    out_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run closed-loop episodes and return (and write to ``out_dir/metrics.json``) the metrics dict.

    Args:
        checkpoint: policy directory (``save_pretrained``); with ``cfg.server`` optional, and if given
            the server must be serving exactly these weights.
        cfg: the evaluation settings.
        out_dir: where metrics.json and videos go (None: nothing written).
    """
    from mmvla.policy.checkpoint import load_config

    families = cfg.families
    env_kwargs: dict[str, Any] = dict(cfg.env_options)
    if not families and cfg.env != "tabletop":
        from mmvla.sim.registry import default_families

        families = default_families(cfg.env)  # cycle through every task: balanced per-task counts
    if cfg.max_steps is not None:
        env_kwargs["max_steps"] = cfg.max_steps
    if families:
        env_kwargs["families"] = tuple(families)
    served_id = _check_server(cfg.server, checkpoint) if cfg.server is not None else None
    if cfg.server is None:
        if checkpoint is None:
            raise ValueError("evaluate needs a checkpoint or EvalConfig.server")
        load_config(checkpoint)  # fail early, in this process, on a bad checkpoint
    jobs = list(_jobs(cfg, families, env_kwargs))
    t0 = time.perf_counter()
    results: list[EpisodeResult] = []
    bar = tqdm(total=len(jobs), disable=not progress, desc="eval", unit="ep")
    ckpt = None if checkpoint is None else str(checkpoint)
    if cfg.workers == 1:
        _worker_init(ckpt, cfg.server)
        for job in jobs:
            results.append(_run_episode(job))
            bar.update(1)
        if cfg.server is not None:
            _WORKER.pop("policy").close()  # the connection; the pool's workers close theirs on exit
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(cfg.workers, initializer=_worker_init, initargs=(ckpt, cfg.server)) as pool:
            for r in pool.imap_unordered(_run_episode, jobs, chunksize=1):
                results.append(r)
                bar.update(1)
                bar.set_postfix(success=f"{np.mean([x.success for x in results]):.2f}")
    bar.close()
    results.sort(key=lambda r: (r.split, r.seed))
    metrics = summarise(results)
    metrics.update(
        {
            "control": cfg.control,
            "checkpoint": None if checkpoint is None else str(checkpoint),
            **({"server": cfg.server, "checkpoint_id": served_id} if cfg.server is not None else {}),
            "seconds": time.perf_counter() - t0,
            "config": {k: v for k, v in asdict(cfg).items() if k != "rephrase"},
            "rephrased": sum(r.instruction != r.given_instruction for r in results) if cfg.rephrase else 0,
        }
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "metrics.json", metrics)
        atomic_write_json(
            out / "episodes.json", [{k: v for k, v in asdict(r).items() if k != "frames"} for r in results]
        )
        from mmvla.video import write_episode_gif

        for r in results:
            if r.frames:
                write_episode_gif(
                    out / "videos" / f"{r.split}_{r.seed}_{'ok' if r.success else 'fail'}.gif",
                    r.frames,
                    r.given_instruction,
                    r.success,
                )
    return metrics


def evaluate_blind_controls(
    checkpoint: str | os.PathLike[str],
    episodes: int,
    out_dir: str | os.PathLike[str],
    workers: int = 1,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """Both blind controls on one checkpoint, ``episodes`` per split (train and unseen).

    Returns ``{control: {split: success rate}}``; each control's metrics go to
    ``out_dir/eval_<control>/metrics.json``.
    """
    return {
        control: evaluate(
            checkpoint,
            EvalConfig(episodes=episodes, split="all", workers=workers, control=control),
            Path(out_dir) / f"eval_{control}",
            progress=progress,
        )["success"]
        for control in BLIND_CONTROLS
    }


def _check_server(server: str, checkpoint: str | os.PathLike[str] | None) -> str:
    """Connect once (fail early and clearly); the served checkpoint id, checked against ``checkpoint``."""
    from mmvla.client import PolicyClient

    with PolicyClient(server, connect_timeout=10.0) as client:
        served = str(client.metadata.get("checkpoint_id", ""))
    if checkpoint is not None:
        from mmvla.serve import checkpoint_id

        local = checkpoint_id(checkpoint)
        if served != local:
            raise ValueError(
                f"the server at {server} serves checkpoint {served[:12] or '?'}, not {checkpoint} ({local[:12]})"
            )
    return served


def summarise(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Metrics dict (success, ci95, per_family, episodes, lengths) from episode results."""
    m: dict[str, Any] = {"success": {}, "ci95": {}, "per_family": {}, "episodes": {}, "length": {}}
    for split in sorted({r.split for r in results}):
        rs = [r for r in results if r.split == split]
        k = sum(r.success for r in rs)
        m["success"][split] = k / len(rs)
        m["ci95"][split] = list(wilson_interval(k, len(rs)))
        m["episodes"][split] = len(rs)
        ok = [r.length for r in rs if r.success]
        m["length"][split] = {
            "mean": float(np.mean([r.length for r in rs])),
            "mean_success": float(np.mean(ok)) if ok else None,
        }
        fam: dict[str, Any] = {}
        for f in sorted({r.family for r in rs}):
            fr = [r for r in rs if r.family == f]
            kf = sum(r.success for r in fr)
            fam[f] = {
                "success": kf / len(fr),
                "ci95": list(wilson_interval(kf, len(fr))),
                "episodes": len(fr),
            }
        m["per_family"][split] = fam
    return m


def format_metrics(metrics: dict[str, Any]) -> str:
    """A plain-text table of success per split and family."""
    w = max([8, *(len(f) for fams in metrics["per_family"].values() for f in fams)])  # Meta-World task names
    lines = [f"{'split':<8} {'family':<{w}} {'success':>8} {'95% CI':>15} {'n':>5}"]
    for split, rate in metrics["success"].items():
        lo, hi = metrics["ci95"][split]
        lines.append(
            f"{split:<8} {'all':<{w}} {rate:>8.1%} {f'[{lo:.2f}, {hi:.2f}]':>15} {metrics['episodes'][split]:>5}"
        )
        for fam, m in metrics["per_family"][split].items():
            flo, fhi = m["ci95"]
            lines.append(
                f"{'':<8} {fam:<{w}} {m['success']:>8.1%} {f'[{flo:.2f}, {fhi:.2f}]':>15} {m['episodes']:>5}"
            )
    return "\n".join(lines)
