"""Collect scripted-expert demonstrations in parallel and write them as a LeRobot v3.0 dataset.

Episode ``i`` (0 <= i < episodes) is always simulated with seed ``seed + i`` for both the environment
reset and the expert's noise, so the dataset does not depend on the number of workers or on the order
in which they finish: results are written in seed order and failed episodes are dropped (and
counted). Workers PNG-encode frames and histogram pixels themselves; the parent only writes parquet.

Corrections (DAgger, Ross et al. 2011): with ``corrections > 0`` and a ``corrector`` (a picklable
factory of a trained policy, built once per worker), further episodes are *executed by the policy*
while the expert labels every visited state with its clean action. They show what the expert does in
the states the policy itself reaches (an object set down off centre, still held), which noisy expert
demonstrations rarely visit. They are kept whether the policy succeeded or not (the labels are the
expert's either way) and marked ``executor = "policy"``. Their seeds (``correction_seed``, default
500,000) lie between the demonstrations' and evaluation's (1,000,000+).

The whole dataset is built in a hidden sibling directory and renamed into place at the end
(:func:`mmvla.core.io.atomic_directory`): an interrupted collect never leaves a dataset that looks complete,
and ``overwrite=True`` keeps the old dataset intact until the new one is complete.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mmvla.core.io import atomic_directory, atomic_write_json
from mmvla.core.pool import imap
from mmvla.data.lerobot_format import (
    DEFAULT_DATA_FILES_SIZE_IN_MB,
    DEFAULT_PNG_COMPRESS_LEVEL,
    EncodedEpisode,
    Episode,
    LeRobotWriter,
    encode_episode,
)
from mmvla.sim.registry import (
    check_rendered,
    dataset_schema,
    default_cameras,
    default_families,
    env_config,
    environment_state,
    episode_extra,
    make_env,
    make_expert,
)
from mmvla.sim.rollout import rollout

DEFAULT_NOISE_STD = 0.1
MMVLA_META_PATH = "meta/mmvla.json"  # collection provenance; LeRobot ignores unknown meta files


class Actor(Protocol):
    """What executes correction episodes (a :class:`mmvla.policy.protocol.Policy` is one)."""

    def reset(self) -> None:
        """Start a new episode."""

    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        """(A,) float32 action for one observation (images, "state", "instruction")."""
        ...


@dataclass(frozen=True)
class CollectConfig:
    """What every worker needs to simulate one episode (picklable, validated on construction)."""

    split: str = "train"
    image_size: int = 64
    cameras: tuple[str, ...] = ("front", "wrist")
    families: tuple[str, ...] = ("pick", "push", "place")
    noise_std: float = DEFAULT_NOISE_STD
    compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL
    env: str = "tabletop"  # a name in mmvla.sim.registry.ENV_NAMES
    env_options: tuple[tuple[str, Any], ...] = ()  # further config fields of that environment
    corrector: Callable[[], Actor] | None = None  # builds the policy that executes the corrections

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("collect: at least one camera is required")
        if not self.families:
            raise ValueError("collect: at least one task family is required")
        if not isinstance(self.image_size, int) or self.image_size < 16:
            raise ValueError(f"collect: image_size must be an int >= 16, got {self.image_size!r}")
        if not (np.isfinite(self.noise_std) and self.noise_std >= 0):
            raise ValueError(f"collect: noise_std must be a finite number >= 0, got {self.noise_std}")
        if not 0 <= self.compress_level <= 9:
            raise ValueError(f"collect: compress_level must be in 0..9, got {self.compress_level}")


@dataclass
class EpisodeResult:
    """One simulated episode: success, its encoded frames (None when dropped) and metadata."""

    index: int
    seed: int
    success: bool
    family: str
    steps: int
    episode: EncodedEpisode | None
    fps: int


@dataclass
class CollectSummary:
    """What a collect run produced."""

    out: Path
    requested: int
    kept: int
    dropped: int
    frames: int
    seconds: float
    workers: int
    dropped_seeds: list[int] = field(default_factory=list)
    kept_per_family: dict[str, int] = field(default_factory=dict)
    dropped_per_family: dict[str, int] = field(default_factory=dict)
    bytes_on_disk: int = 0
    corrections: int = 0  # policy-executed, expert-labelled episodes among those kept
    corrections_succeeded: int = 0  # ... in which the policy itself succeeded

    @property
    def frames_per_second(self) -> float:
        """Frames written per wall-clock second (simulation, encoding and writing together)."""
        return self.frames / self.seconds if self.seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        d = asdict(self)
        d["out"] = str(self.out)
        d["frames_per_second"] = self.frames_per_second
        return d

    def __str__(self) -> str:
        return (
            f"kept {self.kept}/{self.requested} episodes (dropped {self.dropped}), {self.frames} frames "
            f"in {self.seconds:.1f} s ({self.frames_per_second:.0f} frames/s) -> {self.out}"
        )

    def format(self) -> str:
        """Human-readable multi-line summary."""
        fam = ", ".join(f"{k} {v}" for k, v in sorted(self.kept_per_family.items()))
        lines = [
            f"episodes kept    {self.kept} / {self.requested} ({fam})",
            f"episodes dropped {self.dropped} (expert failed)"
            + (
                f": seeds {self.dropped_seeds[:10]}{' ...' if self.dropped > 10 else ''}"
                if self.dropped
                else ""
            ),
            *(
                [f"corrections      {self.corrections} (policy succeeded in {self.corrections_succeeded})"]
                if self.corrections
                else []
            ),
            f"frames           {self.frames}",
            f"seconds          {self.seconds:.1f} ({self.workers} worker{'s' if self.workers != 1 else ''})",
            f"frames/s         {self.frames_per_second:.1f}",
            f"size on disk     {self.bytes_on_disk / 2**20:.1f} MiB",
            f"output           {self.out}",
        ]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Worker side
# ----------------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _sim_config(cfg: CollectConfig) -> Any:
    """The environment's validated config (builds no simulator)."""
    return env_config(
        cfg.env,
        cameras=cfg.cameras,
        image_size=cfg.image_size,
        split=cfg.split,
        families=cfg.families,
        **dict(cfg.env_options),
    )


def _init_worker(cfg: CollectConfig) -> None:
    """Build one environment (and the correcting policy, if any) per worker process."""
    env = make_env(cfg.env, _sim_config(cfg))
    _WORKER.clear()
    # one recorded frame per control step
    _WORKER.update(env=env, cfg=cfg, fps=round(float(env.metadata["render_fps"])))
    if cfg.corrector is not None:
        _WORKER["policy"] = cfg.corrector()


def _close_worker() -> None:
    env = _WORKER.pop("env", None)
    if env is not None:
        env.close()


def record_episode(
    index: int, seed: int, family: str | None = None, corrective: bool = False
) -> EpisodeResult:
    """Simulate episode ``index`` with ``seed`` (and ``family``, None: the seed's) in this worker's
    environment; encode it if successful, or always when ``corrective`` (executed by the worker's policy,
    labelled by the expert)."""
    env, cfg = _WORKER["env"], _WORKER["cfg"]
    obs, info = env.reset(seed=seed, options={"family": family} if family else None)
    check_rendered(obs, cfg.cameras)
    expert = make_expert(cfg.env, env, noise_std=cfg.noise_std, seed=seed)
    expert.reset()
    policy = _WORKER["policy"] if corrective else None
    if policy is not None:
        policy.reset()
    instruction = str(info["instruction"])
    family = str(info["family"])
    extra = episode_extra(info)  # tabletop: target; Meta-World: goal variation
    if cfg.corrector is not None:
        extra["executor"] = "policy" if corrective else "expert"
    frames: dict[str, list[np.ndarray]] = {cam: [] for cam in cfg.cameras}
    states: list[np.ndarray] = []
    actions: list[np.ndarray] = []
    env_states: list[np.ndarray] = []

    def act(o: dict[str, Any]) -> np.ndarray:
        """The expert's noisy action, or the policy's (executed); records the frame and the expert's
        clean action (the label)."""
        executed = np.asarray(expert.act(o), dtype=np.float32)
        if policy is not None:
            executed = np.asarray(policy.act(dict(o, instruction=instruction)), dtype=np.float32)
        for cam in cfg.cameras:
            frames[cam].append(np.array(o[cam], dtype=np.uint8, copy=True))
        states.append(np.array(o["state"], dtype=np.float32, copy=True))
        actions.append(np.array(expert.last_clean_action, dtype=np.float32, copy=True))
        privileged = environment_state(cfg.env, env)
        if privileged is not None:
            env_states.append(privileged)
        return executed

    ep = rollout(env, act, start=(obs, info), stop_on_success=False)
    success = bool(ep.info["success"])
    encoded = None
    if success or corrective:
        episode = Episode(
            images={cam: np.stack(f) for cam, f in frames.items()},
            state=np.stack(states),
            action=np.stack(actions),
            task=instruction,
            extra={"family": family, "split": cfg.split, "seed": int(seed), **extra},
            env_state=np.stack(env_states) if env_states else None,
        )
        encoded = encode_episode(episode, cfg.compress_level)
    return EpisodeResult(
        index=index,
        seed=seed,
        success=success,
        family=family,
        steps=len(actions),
        episode=encoded,
        fps=_WORKER["fps"],
    )


def _record_star(args: tuple[int, int, str | None, bool]) -> EpisodeResult:
    return record_episode(*args)


# ----------------------------------------------------------------------------------------------------
# Parent side
# ----------------------------------------------------------------------------------------------------


def _results(
    cfg: CollectConfig, jobs: list[tuple[int, int, str | None, bool]], workers: int, **bar: Any
) -> Generator[EpisodeResult, None, None]:
    """Yield the episodes' results in job (seed) order, whatever order workers finish in; ``bar``:
    :func:`mmvla.core.pool.imap`'s progress arguments."""
    return imap(
        _record_star,
        jobs,
        workers=workers,
        initializer=_init_worker,
        initargs=(cfg,),
        teardown=_close_worker,
        ordered=True,
        desc="collect",
        **bar,
    )


def _normalise_permissions(root: Path) -> None:
    """Give the dataset the usual umask permissions (temporary files and dirs are created 0600/0700)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(root, 0o777 & ~umask)
    for p in root.rglob("*"):
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def collect_dataset(
    out: str | os.PathLike[str],
    episodes: int,
    workers: int = 1,
    seed: int = 0,
    split: str = "train",
    image_size: int = 64,
    cameras: Sequence[str] | None = None,
    families: Sequence[str] | None = None,
    noise_std: float = DEFAULT_NOISE_STD,
    overwrite: bool = False,
    progress: bool = True,
    data_files_size_in_mb: float = DEFAULT_DATA_FILES_SIZE_IN_MB,
    compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL,
    env: str = "tabletop",
    env_options: Mapping[str, Any] | None = None,
    corrections: int = 0,
    corrector: Callable[[], Actor] | None = None,
    corrector_name: str = "",
    correction_seed: int = 500_000,
    correction_families: Sequence[str] | None = None,
) -> CollectSummary:
    """Run the scripted expert for ``episodes`` seeds in ``workers`` processes and write a dataset.

    Args:
        out: dataset directory to create (must not exist or be empty unless ``overwrite``).
        episodes: number of episodes to simulate (seeds ``seed .. seed + episodes - 1``); failed ones
            are dropped, so the dataset may hold fewer.
        workers: parallel simulation processes (spawn context); 1 runs in this process.
        seed: base seed.
        split, image_size, cameras, families: environment settings (see ``TabletopConfig`` and
            ``MetaWorldConfig``; Meta-World's families are its task names); cameras/families None: the
            environment's defaults (tabletop: front + wrist, pick + push; Meta-World: corner4, every task of the suite).
        noise_std: std of the expert's action noise (the recorded label is its clean action).
        overwrite: replace an existing dataset (atomically, once the new one is complete).
        progress: show a tqdm bar over episodes.
        data_files_size_in_mb, compress_level: layout knobs (parquet file roll-over, PNG zlib level).
        env: environment name (``mmvla.sim.registry.ENV_NAMES``): "tabletop", "metaworld-mt10" or "metaworld-mt50".
        env_options: further fields of that environment's config (e.g. Meta-World's ``variations``).
        corrections: further episodes executed by the ``corrector``'s policy and labelled by the expert
            (DAgger; see the module docstring), seeds ``correction_seed ..`` (must not overlap the
            demonstrations' seeds), cycling through ``correction_families`` (default: every family);
            kept whatever their outcome.
        corrector: a picklable factory (e.g. ``functools.partial``) of the acting policy, called once per
            worker; the policy must read the collected cameras at ``image_size``.
        corrector_name: what the corrector is (a checkpoint path), recorded in ``meta/mmvla.json``.

    Returns:
        A :class:`CollectSummary`. Raises ``ValueError`` if every episode failed (nothing is written).
    """
    if not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"collect: episodes must be a positive int, got {episodes!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"collect: workers must be a positive int, got {workers!r}")
    if seed < 0:
        raise ValueError(f"collect: seed must be >= 0, got {seed}")
    if not isinstance(corrections, int) or corrections < 0:
        raise ValueError(f"collect: corrections must be an int >= 0, got {corrections!r}")
    if (corrections > 0) != (corrector is not None):
        raise ValueError(
            "collect: corrections need a corrector, and a corrector is only used for corrections"
        )
    if corrections and correction_seed < seed + episodes and seed < correction_seed + corrections:
        raise ValueError(
            f"collect: correction seeds {correction_seed}..{correction_seed + corrections - 1} overlap the "
            f"demonstrations' seeds {seed}..{seed + episodes - 1}"
        )
    cfg = CollectConfig(
        split=split,
        image_size=image_size,
        cameras=tuple(default_cameras(env) if cameras is None else cameras),
        families=tuple(default_families(env) if families is None else families),
        noise_std=float(noise_std),
        compress_level=compress_level,
        env=env,
        env_options=tuple(sorted((env_options or {}).items())),
        corrector=corrector,
    )
    sim_cfg = _sim_config(cfg)  # validates the environment settings before any process starts
    fix_families = tuple(cfg.families if correction_families is None else correction_families)
    unknown = sorted(set(fix_families) - set(cfg.families))
    if corrections and (unknown or not fix_families):
        raise ValueError(
            f"collect: correction families {unknown or []} not among the collected {cfg.families}"
        )

    shift = getattr(sim_cfg, "shift", None)
    if shift is not None and shift.language > 0:
        raise ValueError(
            "collect: the language shift gives held-out wordings, which must never reach a training set "
            "(use TrainConfig.wording_augment for training wordings)"
        )
    schema = dataset_schema(cfg.env, sim_cfg)
    workers = min(workers, episodes + corrections)
    out = Path(out)
    jobs: list[tuple[int, int, str | None, bool]] = [(i, seed + i, None, False) for i in range(episodes)]
    jobs += [
        (episodes + j, correction_seed + j, fix_families[j % len(fix_families)], True)
        for j in range(corrections)
    ]
    corrections_kept = corrections_succeeded = 0
    t0 = time.perf_counter()
    kept: dict[str, int] = {}
    dropped: dict[str, int] = {}
    dropped_seeds: list[int] = []
    with atomic_directory(out, overwrite=overwrite) as tmp:
        writer: LeRobotWriter | None = None
        results = _results(
            cfg,
            jobs,
            workers,
            progress=progress,
            postfix=lambda: {"kept": sum(kept.values()), "dropped": len(dropped_seeds)},
        )
        try:
            for r in results:
                if r.episode is None:
                    dropped[r.family] = dropped.get(r.family, 0) + 1
                    dropped_seeds.append(r.seed)
                    continue
                if writer is None:
                    writer = LeRobotWriter(
                        tmp,
                        cameras=cfg.cameras,
                        image_size=cfg.image_size,
                        fps=r.fps,
                        state_names=schema.state_names,
                        action_names=schema.action_names,
                        env_state_names=schema.env_state_names,
                        robot_type=schema.robot_type,
                        data_files_size_in_mb=data_files_size_in_mb,
                        compress_level=cfg.compress_level,
                    )
                writer.add_episode(r.episode)
                kept[r.family] = kept.get(r.family, 0) + 1
                if r.index >= episodes:  # a correction
                    corrections_kept += 1
                    corrections_succeeded += int(r.success)
            if writer is None:
                raise ValueError(f"collect: all {episodes} episodes failed; nothing was written to {out}")
            writer.finish(split=cfg.split)
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            results.close()  # stops the worker pool at once on error or Ctrl-C
        seconds = time.perf_counter() - t0
        summary = CollectSummary(
            out=out,
            requested=episodes + corrections,
            kept=writer.num_episodes,
            dropped=len(dropped_seeds),
            frames=writer.num_frames,
            seconds=seconds,
            workers=workers,
            dropped_seeds=dropped_seeds,
            kept_per_family=kept,
            dropped_per_family=dropped,
            corrections=corrections_kept,
            corrections_succeeded=corrections_succeeded,
        )
        atomic_write_json(
            tmp / MMVLA_META_PATH,
            {
                "seed": seed,
                "episodes_requested": episodes,
                "noise_std": cfg.noise_std,
                "env": cfg.env,
                "sim": sim_cfg.to_dict(),
                "dropped_seeds": dropped_seeds,
                "kept_per_family": kept,
                "dropped_per_family": dropped,
                **(
                    {
                        "corrections": {
                            "policy": corrector_name,
                            "episodes": corrections,
                            "seed": correction_seed,
                            "families": list(fix_families),
                            "policy_succeeded": corrections_succeeded,
                        }
                    }
                    if corrections
                    else {}
                ),
            },
        )
        summary.bytes_on_disk = _dir_size(tmp)
        _normalise_permissions(tmp)
    summary.seconds = time.perf_counter() - t0
    return summary
