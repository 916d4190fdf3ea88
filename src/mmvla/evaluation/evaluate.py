"""Closed-loop evaluation of a policy in a simulator, in parallel worker processes.

Reports success per split and per task family with 95% Wilson intervals, episode lengths, and the
blind controls that prove fusion works (blank images; an instruction naming another object).
The simulator is named by ``EvalConfig.env`` (:mod:`mmvla.sim.registry`): the tabletop by default, or
Meta-World MT10 (one split, "train"; families are its tasks, cycled so each gets episodes/10).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmvla.core.handover import HandOver
from mmvla.core.io import atomic_write_json, read_json
from mmvla.core.keys import (
    BLIND_CONTROLS,
    CAMERA_FAILURES,
    CONTROLS,
    ENV_NAMES,
    FALLBACKS,
    SPLITS,
    WORDING_SETS,
)
from mmvla.core.pool import imap
from mmvla.core.stats import mcnemar_exact, wilson_interval
from mmvla.evaluation.controls import blank_cameras, swap_target, without_camera_fallback, wrong_instruction
from mmvla.evaluation.video import write_episode_gif
from mmvla.modules.lexicon import LEXICONS
from mmvla.policy import VLAPolicy
from mmvla.policy.checkpoint import checkpoint_id, load_config
from mmvla.policy.safety import SafetyConfig, SafetyMonitor
from mmvla.serving.client import PolicyClient, RemotePolicy
from mmvla.sim.camera_failure import DEFAULT_START_RANGE, CameraFailure, CameraFailureWrapper
from mmvla.sim.registry import check_rendered, get_spec, make_env
from mmvla.sim.rollout import rollout
from mmvla.sim.tabletop.wordings import wording_for_episode

SWAP_MOVED_M = 0.02  # an object counts as moved once it is this far (metres) from where it started
BLIND_MOTION_M = 0.001  # a blind step "moved" when the hand (state[:3]) travelled more than this (metres)


@dataclass
class EvalConfig:
    """How to evaluate.

    Attributes:
        episodes: episodes per split.
        split: "train", "unseen" or "all" (both).
        workers: parallel processes (each runs one torch thread).
        seed: first episode seed; episode i of a split uses seed + i (disjoint from collection seeds).
        families: task families to cycle through (None: the environment's defaults).
        control: "none", "blank_images" (vision-blind), "wrong_instruction" (language-blind: success is
            still the original task's), or "instruction_swap" (tabletop: right after reset another object
            on the table becomes the target and the policy is told so; success is the swapped task's).
        chunk_mode: "ensemble" or "execute" action chunks.
        video_episodes: episodes per split recorded as GIFs with the instruction drawn on them.
        rephrase: canonical instruction -> the user's wording given to the policy instead.
        wordings: built-in wording set given to the policy (tabletop): "canonical", "train" (training
            wordings) or "heldout" (words no training wording uses); one wording per episode, drawn from
            the episode seed (:func:`mmvla.sim.tabletop.wordings.wording_for_episode`). ``rephrase`` wins.
        max_steps: episode step limit (None: the environment's own).
        env: simulator name in ``mmvla.sim.registry.ENV_NAMES`` ("tabletop", "metaworld-mt10" or "metaworld-mt50").
        env_options: further fields of that simulator's config (e.g. Meta-World's ``variations``).
        server: ``ws://host:port`` of ``mmvla serve``: workers act through a client of that server
            instead of loading the checkpoint (None: local policy).
        camera_failure: "blank" or "freeze": ``failure_camera`` fails from an observation drawn from the
            episode seed in ``failure_start`` (:mod:`mmvla.sim.camera_failure`); None: no failure.
            Through a server the client sends the failed frames (the server's safety layer decides).
        failure_camera: the camera that fails ("front").
        failure_start: inclusive range of the first failed observation index (>= 1).
        fallback: the local policy's safety fallback while a camera has failed: "hold", "continue" (act
            on for at most ``continue_steps`` failed steps, then hold) or "handover" (stop the episode);
            None: the checkpoint's default ("hold"). A server's is set by ``mmvla serve``.
        continue_steps: N of the "continue" fallback.
        lexicon: how the local policy reads words training never showed it: "wordnet" (grounded through
            WordNet, :mod:`mmvla.modules.lexicon`), "wordnet_task" (grounded, then read as the task its
            slots name) or "none"; None: the checkpoint's own setting.
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
    wordings: str = "canonical"
    max_steps: int | None = None
    env: str = "tabletop"
    env_options: dict[str, Any] = field(default_factory=dict)
    server: str | None = None
    camera_failure: str | None = None
    failure_camera: str = "front"
    failure_start: tuple[int, int] = DEFAULT_START_RANGE
    fallback: str | None = None
    continue_steps: int = 8
    lexicon: str | None = None

    def __post_init__(self) -> None:
        if self.lexicon is not None and self.lexicon not in LEXICONS:
            raise ValueError(f"EvalConfig.lexicon must be one of {LEXICONS} or None, got {self.lexicon!r}")
        if self.lexicon is not None and self.server is not None:
            raise ValueError("EvalConfig.lexicon applies to a local checkpoint, not a policy server")
        self.failure_start = (int(self.failure_start[0]), int(self.failure_start[1]))
        if self.camera_failure is not None:
            if self.camera_failure not in CAMERA_FAILURES:
                raise ValueError(
                    f"EvalConfig.camera_failure must be one of {CAMERA_FAILURES} or None, got {self.camera_failure!r}"
                )
            self.failure()  # validates the start range
        if self.fallback is not None and self.fallback not in FALLBACKS:
            raise ValueError(f"EvalConfig.fallback must be one of {FALLBACKS} or None, got {self.fallback!r}")
        if self.continue_steps < 0:
            raise ValueError(f"EvalConfig.continue_steps must be >= 0, got {self.continue_steps}")
        if self.fallback is not None and self.server is not None:
            raise ValueError(
                "EvalConfig.fallback applies to a local checkpoint; a server's fallback is set by `mmvla serve`"
            )
        if self.episodes < 1 or self.workers < 1:
            raise ValueError(
                f"EvalConfig: episodes and workers must be >= 1, got {self.episodes}, {self.workers}"
            )
        if self.split not in (*SPLITS, "all"):
            raise ValueError(f"EvalConfig.split must be train, unseen or all, got {self.split!r}")
        if self.control not in CONTROLS:
            raise ValueError(f"EvalConfig.control must be one of {CONTROLS}, got {self.control!r}")
        if self.env not in ENV_NAMES:
            raise ValueError(f"EvalConfig.env must be one of {ENV_NAMES}, got {self.env!r}")
        if self.wordings not in WORDING_SETS:
            raise ValueError(f"EvalConfig.wordings must be one of {WORDING_SETS}, got {self.wordings!r}")
        spec = get_spec(self.env)
        if self.wordings != "canonical" and not spec.wordings:
            raise ValueError(
                f"EvalConfig: wording sets exist for the tabletop only (its instructions), not {self.env}"
            )
        if self.control == "instruction_swap" and not spec.retarget:
            raise ValueError(
                f"EvalConfig: the instruction swap needs an environment that can retarget an episode; "
                f"{self.env} cannot"
            )
        if self.split != "all" and self.split not in spec.splits:
            raise ValueError(f"EvalConfig: {self.env} has only the {spec.splits} split(s)")
        if self.server is not None:
            if not self.server.startswith(("ws://", "wss://")):
                raise ValueError(f"EvalConfig.server must be a ws:// or wss:// URL, got {self.server!r}")
            if self.control == "blank_images":
                raise ValueError(
                    "control 'blank_images' cannot run through a server: its safety layer holds position on "
                    "blank cameras; run this control with the local checkpoint"
                )

    def failure(self) -> CameraFailure | None:
        """The camera failure of every episode (None without ``camera_failure``)."""
        if self.camera_failure is None:
            return None
        return CameraFailure(self.camera_failure, self.failure_camera, self.failure_start)

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits evaluated: the environment's for "all", else the one split."""
        return get_spec(self.env).splits if self.split == "all" else (self.split,)


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
    first_moved_named: bool | None = None  # tabletop: the first object moved (> 2 cm) was the named one
    failure_start: int | None = None  # camera failure: the first failed observation index
    blind_steps: int = 0  # steps whose action was computed from an observation with the failed camera
    blind_motion_steps: int = 0  # of those, steps in which the hand moved > BLIND_MOTION_M
    handed_over: bool = False  # the safety layer's "handover" fallback stopped the episode
    first_moved_role: str | None = None  # tabletop: that object was "named", the place "base", or "other"


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
    if server is not None:  # act through the policy server: one connection (episode state) per worker
        _WORKER["policy"] = RemotePolicy(server)
        return

    torch.set_num_threads(1)
    _WORKER["policy"] = VLAPolicy.from_pretrained(checkpoint)  # type: ignore[arg-type]


def _run_episode(job: tuple[str, int, str | None, dict[str, Any], bool]) -> EpisodeResult:
    split, seed, family, opts, record = job
    policy = _WORKER["policy"]
    pcfg = policy.cfg
    spec = get_spec(opts["env_name"])
    env = make_env(
        spec.name, cameras=tuple(pcfg.cameras), image_size=pcfg.image_size, split=split, **opts["env"]
    )
    failure: CameraFailure | None = opts.get("camera_failure")
    wrapped = CameraFailureWrapper(env, failure) if failure is not None else None
    if wrapped is not None:
        if failure is not None and failure.camera not in pcfg.cameras:
            raise ValueError(f"camera failure of {failure.camera!r}: the policy reads {tuple(pcfg.cameras)}")
        env = wrapped
    lexicon = opts.get("lexicon")
    if lexicon is not None and lexicon != policy.lexicon:
        policy.set_lexicon(lexicon)
    fallback = opts.get("fallback")
    if fallback is not None:  # the local policy's safety layer with this episode's fallback
        base = policy.safety.config if getattr(policy, "safety", None) is not None else SafetyConfig()
        policy.safety = SafetyMonitor(
            replace(base, fallback=fallback[0], continue_steps=fallback[1]), log=_quiet_safety_log
        )
    try:
        obs, info = env.reset(seed=seed, options={"family": family} if family else None)
        check_rendered(obs, pcfg.cameras)
        if opts["control"] == "instruction_swap":
            obs = swap_target(env.unwrapped, seed)
            info = dict(info, instruction=str(obs["instruction"]))
        canonical = str(obs["instruction"])
        told = canonical  # the canonical instruction the policy is told (another object's under the control)
        if opts["control"] == "wrong_instruction":
            told = wrong_instruction(spec.name, split, canonical, seed)
        given = opts["rephrase"].get(told)
        if given is None:
            given = (
                told if opts["wordings"] == "canonical" else wording_for_episode(told, opts["wordings"], seed)
            )
        blank = opts["control"] == "blank_images"
        if blank:
            without_camera_fallback(policy)  # measure the vision-blind policy, not the blank-camera hold
        policy.reset(chunk_mode=opts["chunk_mode"])
        frames: list[np.ndarray] | None = [] if record else None
        sim = env.unwrapped
        first_moved: list[int | None] = [None]

        # Episode book-keeping, also kept when a hand-over ends the episode inside rollout().
        track: dict[str, Any] = {"steps": 0, "success": bool(info.get("success", False)), "info": info}
        blind: dict[str, Any] = {"now": False, "from": np.zeros(3), "steps": 0, "moved": 0}

        def act(o: dict[str, Any]) -> np.ndarray:
            model_obs = dict(o, instruction=given)
            action = policy.act(blank_cameras(model_obs, pcfg.cameras) if blank else model_obs)
            blind["now"] = wrapped is not None and wrapped.failed
            blind["from"] = np.asarray(o["state"], dtype=np.float64)[:3].copy()
            return action

        def on_step(o: dict[str, Any], step_info: dict[str, Any]) -> None:
            track["steps"] += 1
            track["success"] = track["success"] or bool(step_info.get("success", False))
            track["info"] = step_info
            if blind["now"]:
                blind["steps"] += 1
                moved = np.linalg.norm(np.asarray(o["state"], dtype=np.float64)[:3] - blind["from"])
                blind["moved"] += int(moved > BLIND_MOTION_M)
            if first_moved[0] is None and spec.tracks_objects:
                first_moved[0] = _first_moved(sim)
            if frames is not None:
                frames.append(np.concatenate([o[c] for c in pcfg.cameras], axis=1))

        handed_over = False
        try:
            rollout(env, act, start=(obs, info), on_step=on_step)
        except HandOver:
            handed_over = True
        return EpisodeResult(
            split,
            seed,
            str(track["info"].get("family", family)),
            canonical,
            given,
            bool(track["success"]),
            int(track["steps"]),
            frames,
            None if first_moved[0] is None else first_moved[0] == 0,
            None if wrapped is None else wrapped.failure_start,
            int(blind["steps"]),
            int(blind["moved"]),
            handed_over,
            _role(first_moved[0], getattr(sim, "base", None) is not None),
        )
    finally:
        env.close()


def _quiet_safety_log(_level: int, _kind: str, _reason: str) -> None:
    """Evaluation counts the safety layer's decisions itself; one log line per blind step is noise."""


def _role(index: int | None, has_base: bool) -> str | None:
    """The role of the first moved object's index in ``sim.objects`` (target first, then a place base)."""
    if index is None:
        return None
    return "named" if index == 0 else "base" if index == 1 and has_base else "other"


def _first_moved(sim: Any) -> int | None:
    """Index (target = 0) of the object farthest beyond ``SWAP_MOVED_M`` from its start, if any."""
    pos = np.array([sim.data.xpos[o.body_id] for o in sim.objects])  # (N, 3)
    moved = np.linalg.norm(pos - sim.initial_positions, axis=1)  # (N,)
    return int(moved.argmax()) if moved.max() > SWAP_MOVED_M else None


# ------------------------------------------------------------------------ driver
def _jobs(
    cfg: EvalConfig, families: Sequence[str] | None, env_kwargs: dict[str, Any]
) -> Iterator[tuple[str, int, str | None, dict[str, Any], bool]]:
    opts = {
        "control": cfg.control,
        "chunk_mode": cfg.chunk_mode,
        "rephrase": cfg.rephrase,
        "wordings": cfg.wordings,
        "env": env_kwargs,
        "env_name": cfg.env,
        "camera_failure": cfg.failure(),
        "fallback": None if cfg.fallback is None else (cfg.fallback, cfg.continue_steps),
        "lexicon": cfg.lexicon,
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

    families = cfg.families
    env_kwargs: dict[str, Any] = dict(cfg.env_options)
    spec = get_spec(cfg.env)
    if not families and spec.eval_cycles_families:
        families = spec.families  # cycle through every task: balanced per-task counts
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
    ckpt = None if checkpoint is None else str(checkpoint)

    def close_connection() -> None:  # inline: the server connection; the pool's workers close theirs on exit
        if cfg.server is not None:
            _WORKER.pop("policy").close()

    for r in imap(
        _run_episode,
        jobs,
        workers=cfg.workers,
        initializer=_worker_init,
        initargs=(ckpt, cfg.server),
        teardown=close_connection,
        progress=progress,
        desc="eval",
        postfix=lambda: {"success": f"{np.mean([x.success for x in results]):.2f}"},
    ):
        results.append(r)
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

    with PolicyClient(server, connect_timeout=10.0) as client:
        served = str(client.metadata.get("checkpoint_id", ""))
    if checkpoint is not None:
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
        failed = [r for r in rs if r.failure_start is not None]
        if failed:  # the context task: how the policy and its safety layer behaved while blind
            m.setdefault("camera_failure", {})[split] = {
                "blind_steps": float(np.mean([r.blind_steps for r in failed])),
                "blind_motion_steps": float(np.mean([r.blind_motion_steps for r in failed])),
                "moved_blind": sum(r.blind_motion_steps > 0 for r in failed) / len(failed),
                "handed_over": sum(r.handed_over for r in failed) / len(failed),
            }
        touched = [r.first_moved_named for r in rs if r.first_moved_named is not None]
        if touched:  # tabletop: of the episodes that moved an object, how often the named one first
            m.setdefault("first_moved_named", {})[split] = sum(touched) / len(touched)
            m.setdefault("moved_any", {})[split] = len(touched) / len(rs)
    return m


def success_by_split(metrics: dict[str, Any]) -> dict[str, Any]:
    """``{split: {"success", "ci95", "per_family": {family: success}}}`` from a metrics dict (or one
    wording set's section of it): the compact table benchmarks record."""
    return {
        split: {
            "success": metrics["success"][split],
            "ci95": metrics["ci95"][split],
            "per_family": {f: v["success"] for f, v in metrics["per_family"][split].items()},
        }
        for split in metrics["success"]
    }


def paired_comparison(first: Sequence[EpisodeResult], second: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Exact McNemar test of two runs on the same episodes, matched by (split, seed).

    Returns ``{"episodes", "only_first", "only_second", "p_value"}``; ValueError when the runs do not
    cover the same episodes.
    """
    a = {(r.split, r.seed): r.success for r in first}
    b = {(r.split, r.seed): r.success for r in second}
    if a.keys() != b.keys():
        raise ValueError("paired_comparison: the two runs must cover the same (split, seed) episodes")
    only_a = sum(a[k] and not b[k] for k in a)
    only_b = sum(b[k] and not a[k] for k in a)
    return {
        "episodes": len(a),
        "only_first": only_a,
        "only_second": only_b,
        "p_value": mcnemar_exact(only_a, only_b),
    }


def read_episodes(out_dir: str | os.PathLike[str]) -> list[EpisodeResult]:
    """The per-episode results ``evaluate`` wrote to ``out_dir/episodes.json``."""
    rows = read_json(Path(out_dir) / "episodes.json", "evaluation episodes")
    return [EpisodeResult(**row) for row in rows]


def evaluate_wordings(
    checkpoint: str | os.PathLike[str],
    cfg: EvalConfig,
    wordings: Sequence[str],
    out_dir: str | os.PathLike[str],
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate the same episodes once per wording set and compare each set with the first (paired).

    The first set's files go to ``out_dir`` (as :func:`evaluate` writes them), each other set's to
    ``out_dir/wordings/<set>/``. Returns the first set's metrics with a ``"wordings"`` section
    ``{set: {"success", "ci95", "per_family", "retained", "paired": {split: McNemar vs the first}}}``,
    also written to ``out_dir/metrics.json``.
    """
    if not wordings or len(set(wordings)) != len(wordings):
        raise ValueError(f"evaluate_wordings: need distinct wording sets, got {list(wordings)}")
    out = Path(out_dir)
    runs: dict[str, dict[str, Any]] = {}
    episodes: dict[str, list[EpisodeResult]] = {}
    for i, name in enumerate(wordings):
        sub = out if i == 0 else out / "wordings" / name  # the first set's files (videos too) at the top
        run_cfg = replace(cfg, wordings=name, video_episodes=cfg.video_episodes if i == 0 else 0)
        runs[name] = evaluate(checkpoint, run_cfg, sub, progress=progress)
        episodes[name] = read_episodes(sub)
    first = wordings[0]
    section: dict[str, Any] = {}
    for name in wordings:
        m = runs[name]
        paired = {
            split: paired_comparison(
                [r for r in episodes[first] if r.split == split],
                [r for r in episodes[name] if r.split == split],
            )
            for split in m["success"]
        }
        section[name] = {
            "success": m["success"],
            "ci95": m["ci95"],
            "per_family": m["per_family"],
            "retained": {
                s: (m["success"][s] / runs[first]["success"][s] if runs[first]["success"][s] else None)
                for s in m["success"]
            },
            "paired": paired,
        }
    metrics = dict(runs[first], wordings=section)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


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
    for split, c in metrics.get("camera_failure", {}).items():
        lines.append(
            f"{split:<8} camera failure: {c['blind_steps']:.1f} blind steps per episode, "
            f"{c['blind_motion_steps']:.1f} moving; moved blind in {c['moved_blind']:.0%}, "
            f"handed over in {c['handed_over']:.0%}"
        )
    return "\n".join(lines)


def format_wordings(section: dict[str, Any]) -> str:
    """A plain-text table of success per wording set and split, with the paired test against the first."""
    lines = [f"{'wordings':<10} {'split':<8} {'success':>8} {'95% CI':>15} {'retained':>9} {'paired p':>9}"]
    for name, m in section.items():
        for split, rate in m["success"].items():
            lo, hi = m["ci95"][split]
            kept = m["retained"][split]
            lines.append(
                f"{name:<10} {split:<8} {rate:>8.1%} {f'[{lo:.2f}, {hi:.2f}]':>15} "
                f"{'-' if kept is None else f'{kept:.0%}':>9} {m['paired'][split]['p_value']:>9.3g}"
            )
    return "\n".join(lines)
