"""The training loop: behaviour cloning of a :class:`VLAPolicy` on a recorded dataset.

One process or many (``torchrun``: DDP over gloo on CPU, nccl on GPU) run the same code. A run
directory holds::

    run.json                     policy + train config, dataset path
    log.csv                      one row per ``log_every`` steps (loss, lr, grad norms, samples/s)
    checkpoints/last/            atomic checkpoint: policy files + trainer_state.{safetensors,json}
    policy/                      the final policy (EMA weights when enabled)

``resume=True`` continues exactly where ``checkpoints/last`` stopped: weights, optimiser moments,
step count, EMA and every random generator state are restored, so a killed-and-resumed run ends
with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from mmvla.core.io import atomic_write_csv, atomic_write_json, durable_directory, read_json, recover_directory
from mmvla.core.keys import ACTION_KEY, ENV_STATE_KEY, STATE_KEY
from mmvla.core.logs import read_log_rows
from mmvla.core.seeding import seed_everything
from mmvla.data.dataset import VLADataset
from mmvla.modules.augment import color_jitter, random_shift
from mmvla.modules.language import normalize_instruction
from mmvla.modules.memory import MemoryConfig
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.policy.checkpoint import load_state_strict, write_policy_files
from mmvla.policy.init import init_from_directory
from mmvla.policy.normalize import Normalizer
from mmvla.sim.tabletop.wordings import training_vocabulary, wordings_for
from mmvla.training.config import TrainConfig
from mmvla.training.failures import (
    apply_failures,
    blank_rows,
    current_frames,
    current_or_frozen,
    fail_aged_window,
    last_good_rows,
    sample_failure_ages,
    sample_failures,
)
from mmvla.training.history_dropout import drop_history

LOG_FIELDS = (
    "step",
    "loss",
    "loss_action",
    "loss_aux",
    "loss_state",
    "lr",
    "grad_norm",
    "grad_vision",
    "grad_language",
    "grad_proprio",
    "grad_fusion",
    "grad_head",
    "samples_per_s",
    "elapsed_s",
)
MODULE_GROUPS = ("vision", "language", "proprio", "fusion", "head")


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    policy_dir: Path
    steps: int
    final_loss: float
    train_seconds: float
    samples_per_s: float
    initialised_tensors: int = 0  # tensors copied by ``init_from``


# ------------------------------------------------------------------------ helpers
def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate at optimiser step ``step`` (0-based): linear warm-up, then cosine to min_lr_ratio·lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on rank ≥ 2 weights; none on biases, norms and other 1-D parameters."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in sorted(model.named_parameters()):
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def dataset_normalizer(dataset: VLADataset, policy_cfg: PolicyConfig) -> Normalizer:
    """Normaliser for state (mean/std) and actions (the policy's mode) from the dataset's stats.json."""
    modes = {STATE_KEY: "mean_std", ACTION_KEY: policy_cfg.effective_action_norm()}
    if policy_cfg.aux_state_weight > 0:
        modes[ENV_STATE_KEY] = "mean_std"
    return Normalizer({k: dataset.stats[k] for k in modes if k in dataset.stats}, modes)


def _grad_norm(params: list[nn.Parameter]) -> float:
    norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0


class _Augment:
    """Random shift + colour jitter on a batch of uint8 images, drawn from one generator."""

    def __init__(self, cfg: TrainConfig, generator: torch.Generator) -> None:
        self.cfg, self.g = cfg, generator

    def __call__(self, images: dict[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for cam in sorted(images):
            shape = images[cam].shape  # (B, 3, H, W) or, with history, (B, T, 3, H, W)
            x = images[cam].float().reshape(-1, *shape[-3:]) / 255.0  # (B·T, 3, H, W)
            if self.cfg.augment_shift:
                x = random_shift(x, self.cfg.augment_shift, generator=self.g)
            if self.cfg.augment_jitter:
                j = self.cfg.augment_jitter
                x = color_jitter(x, brightness=j, contrast=j, saturation=j, generator=self.g)
            out[cam] = x.view(shape)
        return out


def wording_pools(instructions: list[str], per_task: int) -> dict[str, list[str]]:
    """Instruction -> its pool of training wordings (the instruction first); an instruction the
    tabletop's wording model does not know (e.g. Meta-World's) keeps a pool of itself alone."""

    pools: dict[str, list[str]] = {}
    for text in instructions:
        try:
            pools[text] = wordings_for(text, "train", per_task)
        except ValueError:
            pools[text] = [text]
    return pools


def reword(
    instructions: list[str], pools: dict[str, list[str]], p: float, generator: torch.Generator
) -> list[str]:
    """Replace each instruction, with probability ``p``, by a uniform draw from its pool (``generator``)."""
    swap = torch.rand(len(instructions), generator=generator) < p  # (B,)
    pick = torch.rand(len(instructions), generator=generator)  # (B,) in [0, 1)
    out = []
    for text, s, u in zip(instructions, swap.tolist(), pick.tolist(), strict=True):
        pool = pools.get(text, [text])
        out.append(pool[int(u * len(pool))] if s else text)
    return out


def _precompute_language(policy: VLAPolicy, texts: list[str], progress: bool) -> None:
    """Run a frozen sentence encoder once over every text training can show it (fills its cache, grown
    to hold them all: an LRU smaller than the pool would evict and recompute entries every step)."""
    encode = getattr(policy.language, "sentence_embeddings", None)
    if encode is None:
        return
    texts = sorted({normalize_instruction(t) for t in texts})
    size = getattr(policy.language, "cache_size", None)
    if size is not None and size < len(texts):
        setattr(policy.language, "cache_size", len(texts))  # noqa: B010 (mypy sees an nn.Module)
    for i in tqdm(range(0, len(texts), 256), disable=not progress, desc="language cache", unit="batch"):
        encode(texts[i : i + 256])


def _fit_to_dataset(cfg: PolicyConfig, dataset: VLADataset) -> PolicyConfig:
    """Fill what only the data can say: instructions (when empty), state/action widths and image size.

    The widths and image size are facts of the recording (e.g. Meta-World's 4-D state and action), not
    choices, so they are taken from the dataset's schema; anything else stays as configured.
    """
    h, w = dataset.image_shape
    if h != w:
        raise ValueError(f"dataset {dataset.root}: images are {h}x{w}; the policy needs square images")
    facts = {"state_dim": dataset.state_dim, "action_dim": dataset.action_dim, "image_size": h}
    if cfg.aux_state_weight > 0:
        if not dataset.env_state_dim:
            raise ValueError(
                f"aux_state_weight > 0 but dataset {dataset.root} records no observation.environment_state "
                "(collect it again with this version, or set aux_state_weight to 0)"
            )
        facts["env_state_dim"] = dataset.env_state_dim
    update: dict[str, Any] = {k: v for k, v in facts.items() if getattr(cfg, k) != v}
    if not cfg.instructions:
        update["instructions"] = sorted(dataset.instructions)
    return PolicyConfig.from_dict({**cfg.to_dict(), **update}) if update else cfg


# ------------------------------------------------------------------------ distributed
def _init_distributed(device: str = "auto") -> tuple[int, int, torch.device]:
    """(rank, world size, device) for ``TrainConfig.device``; initialises the process group (nccl on
    CUDA, gloo on CPU) when launched by torchrun. Each process takes GPU ``LOCAL_RANK``."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        count = torch.cuda.device_count()
        if count == 0:
            raise RuntimeError("device='cuda' was asked for, but torch sees no CUDA GPU")
        if local >= count:
            raise RuntimeError(
                f"process LOCAL_RANK={local} has no GPU of its own ({count} visible): start at most "
                f"{count} processes per node, or train on the CPU with --device cpu"
            )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "RANK" in os.environ and not dist.is_initialized():  # launched by torchrun (any world size)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    if use_cuda:
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


# ------------------------------------------------------------------------ trainer state
def _save_trainer_state(
    directory: Path, step: int, optimizer: torch.optim.Optimizer, ema: nn.Module | None, gen: torch.Generator
) -> None:
    """Optimiser moments, EMA weights and RNG states as safetensors + JSON (no pickle)."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    if ema is not None:
        for k, v in ema.state_dict().items():
            tensors[f"ema.{k}"] = v.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.sampler"] = gen.get_state()
    save_file(tensors, str(directory / "trainer_state.safetensors"))
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    atomic_write_json(directory / "trainer_state.json", {"step": step, "param_groups": groups})


def _load_trainer_state(
    directory: Path, optimizer: torch.optim.Optimizer, ema: nn.Module | None, gen: torch.Generator
) -> int:
    """Restore what :func:`_save_trainer_state` wrote; returns the step to continue from."""
    meta = read_json(directory / "trainer_state.json", "trainer state")
    tensors = load_file(str(directory / "trainer_state.safetensors"))
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    if ema is not None:
        load_state_strict(ema, {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}, str(directory))
    torch.set_rng_state(tensors["rng.torch"])
    gen.set_state(tensors["rng.sampler"])
    return int(meta["step"])


# ------------------------------------------------------------------------ main loop
def train(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    policy_cfg: PolicyConfig,
    train_cfg: TrainConfig,
    resume: bool = False,
    init_from: str | os.PathLike[str] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train a policy by behaviour cloning and write the run directory (see the module docstring).

    Args:
        data_dir: dataset written by ``mmvla collect``.
        out_dir: run directory (created; with ``resume`` it must hold ``checkpoints/last``).
        policy_cfg: the policy to build; ``instructions`` is filled from the dataset when empty.
        train_cfg: optimisation settings.
        resume: continue from ``out_dir/checkpoints/last``.
        init_from: a directory with ``encoders.safetensors`` (from ``mmvla pretrain``) or a policy
            checkpoint whose matching tensors initialise the new policy.
        progress: show a progress bar (rank 0 only).
        stop_after: stop (as if killed) after this many steps of this invocation; for tests.
        on_log: called with every log row.
    """
    rank, world, device = _init_distributed(train_cfg.device)
    out = Path(out_dir)
    last = out / "checkpoints" / "last"
    if rank == 0:
        recover_directory(last)  # a save killed between the fallback's two renames
    if resume and not (last / "trainer_state.json").is_file():
        raise FileNotFoundError(f"cannot resume: no checkpoint at {last}")
    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    seed_everything(train_cfg.seed + rank)  # per-rank dropout / flow noise; weights are synced below

    cameras = policy_cfg.cameras
    history = (
        MemoryConfig(**{**policy_cfg.temporal, "dim": policy_cfg.dim}).context - 1
        if policy_cfg.temporal
        else 0
    )
    if train_cfg.history_dropout > 0 and not history:
        raise ValueError("TrainConfig.history_dropout needs a temporal memory (PolicyConfig.temporal)")
    fail_modes = train_cfg.camera_failure_modes
    if fail_modes and train_cfg.camera_failure_camera not in cameras:
        raise ValueError(
            f"TrainConfig.camera_failure_camera {train_cfg.camera_failure_camera!r} is not a policy camera {cameras}"
        )
    # In-window camera failures need a frame window: the memory's, or camera_failure_window frames
    # (memoryless); failures aged up to camera_failure_span fetch the last good frame by row instead.
    span = train_cfg.camera_failure_span
    window_history = history or (train_cfg.camera_failure_window - 1 if fail_modes and not span else 0)
    dataset = VLADataset(
        Path(data_dir),
        cameras=cameras,
        chunk_size=policy_cfg.chunk_size,
        history=window_history,
        state_history=policy_cfg.state_history,
        progress=progress and rank == 0,
        storage=train_cfg.data_storage,
        cache_dir=train_cfg.data_cache_dir or None,
    )
    policy_cfg = _fit_to_dataset(policy_cfg, dataset)
    if not policy_cfg.vocabulary:  # the words training shows (lexical grounding rewrites any other)
        per_task = train_cfg.wordings_per_task if train_cfg.wording_augment > 0 else 1
        vocabulary = training_vocabulary(policy_cfg.instructions, per_task)
        policy_cfg = dataclasses.replace(policy_cfg, vocabulary=vocabulary)
    torch.manual_seed(train_cfg.seed)  # identical initial weights on every rank
    policy = VLAPolicy(policy_cfg, dataset_normalizer(dataset, policy_cfg)).to(device)
    initialised = 0
    if init_from is not None:
        initialised = len(init_from_directory(policy, init_from))
    torch.manual_seed(train_cfg.seed + rank)
    ema = copy.deepcopy(policy).eval().requires_grad_(False) if train_cfg.ema_decay > 0 else None
    model: nn.Module = policy
    if dist.is_initialized():  # DDP for any torchrun launch, one process included
        model = nn.parallel.DistributedDataParallel(
            policy,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=policy_cfg.fusion == "moe",  # top-k routing may skip an expert
        )
    optimizer = torch.optim.AdamW(
        param_groups(policy, train_cfg.weight_decay), lr=train_cfg.lr, betas=(0.9, 0.95)
    )
    gen = torch.Generator().manual_seed(train_cfg.seed * 1000 + rank)
    augment = _Augment(train_cfg, gen)
    pools = (
        wording_pools(list(policy_cfg.instructions), train_cfg.wordings_per_task)
        if train_cfg.wording_augment > 0
        else {}
    )
    if pools:
        texts = [*policy_cfg.instructions, *(w for ws in pools.values() for w in ws)]
        _precompute_language(policy, texts, progress and rank == 0)

    step = 0
    if resume:
        load_state_strict(policy, load_file(str(last / "model.safetensors")), str(last))
        step = _load_trainer_state(last, optimizer, ema, gen)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            out / "run.json",
            {
                "policy": policy_cfg.to_dict(),
                "train": train_cfg.to_dict(),
                "data": str(Path(data_dir).resolve()),
                "world_size": world,
            },
        )
    log_path = out / "log.csv"
    log_rows = read_log_rows(log_path, upto=step) if (resume and rank == 0) else []

    groups = {
        name: [p for p in getattr(policy, name).parameters()] if getattr(policy, name) is not None else []
        for name in MODULE_GROUPS
    }
    autocast_device = "cuda" if device.type == "cuda" else "cpu"
    policy.train()
    bar = tqdm(
        total=train_cfg.steps, initial=step, disable=not (progress and rank == 0), desc="train", unit="step"
    )
    t_start = time.perf_counter()
    t_window, n_window, start_step = t_start, 0, step
    loss_value = float("nan")
    while step < train_cfg.steps and (stop_after is None or step - start_step < stop_after):
        lr = lr_at(step, train_cfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        idx = torch.randint(len(dataset), (train_cfg.batch_size,), generator=gen)
        batch = dataset.get_batch(idx)
        if pools:
            batch["instruction"] = reword(batch["instruction"], pools, train_cfg.wording_augment, gen)
        if not fail_modes:
            batch["images"] = augment(batch["images"])
        elif span:  # failures up to `span` steps old, after augmentation (as at evaluation)
            rows = idx.numpy()
            ages = sample_failure_ages(
                torch.from_numpy(rows - dataset.episode_start[rows]),
                train_cfg.camera_failure_prob,
                span,
                fail_modes,
                gen,
            )
            cam = train_cfg.camera_failure_camera
            last_good = dataset.frames(cam, last_good_rows(rows, ages))  # (B, 3, H, W) uint8
            if history:  # the last good frame rides in front of the window through augmentation
                images = {**batch["images"], cam: torch.cat([last_good[:, None], batch["images"][cam]], 1)}
                images = augment(images)
                images[cam] = fail_aged_window(images[cam][:, 1:], images[cam][:, 0], ages)
            else:
                images = dict(batch["images"])
                images[cam] = current_or_frozen(images[cam], last_good, ages)
                images = augment(images)
                images[cam] = blank_rows(images[cam], ages)
            batch["images"] = images
        else:  # failures after augmentation: failed frames reach the network as at evaluation
            failures = sample_failures(batch["history_mask"], train_cfg.camera_failure_prob, fail_modes, gen)
            cam = train_cfg.camera_failure_camera
            if history:
                batch["images"] = augment(batch["images"])
                batch["images"][cam] = apply_failures(batch["images"][cam], failures)
            else:  # a memoryless policy reads the current frame: augment B frames, not B·T
                images = {k: v[:, -1] for k, v in batch["images"].items()}
                images[cam] = current_frames(batch["images"][cam], failures)
                batch["images"] = augment(images)
                batch["images"][cam] = blank_rows(batch["images"][cam], failures)
                batch["state"] = batch["state"][:, -1]
                del batch["history_mask"]
        if history and train_cfg.history_dropout > 0:
            batch["history_mask"] = drop_history(batch["history_mask"], train_cfg.history_dropout, gen)
        batch["images"] = {k: v.to(device) for k, v in batch["images"].items()}
        extra_keys = (
            (("history_mask",) if history else ())
            + (("environment_state",) if "environment_state" in batch else ())
            + (("past_state",) if "past_state" in batch else ())
        )
        for key in ("state", "action", "action_mask", *extra_keys):
            batch[key] = batch[key].to(device)
        with torch.autocast(autocast_device, dtype=torch.bfloat16, enabled=train_cfg.bf16):
            loss, parts = model(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(nn.utils.clip_grad_norm_(policy.parameters(), train_cfg.grad_clip or float("inf")))
        optimizer.step()
        if ema is not None:
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), policy.parameters(), strict=True):
                    pe.lerp_(p, 1 - train_cfg.ema_decay)
        step += 1
        n_window += train_cfg.batch_size * world
        loss_value = float(loss.detach())
        bar.update(1)
        if rank == 0 and (step % train_cfg.log_every == 0 or step == train_cfg.steps):
            now = time.perf_counter()
            row = {
                "step": step,
                "loss": loss_value,
                **parts,
                "lr": lr,
                "grad_norm": grad_norm,
                **{f"grad_{n}": _grad_norm(ps) for n, ps in groups.items()},
                "samples_per_s": n_window / max(now - t_window, 1e-9),
                "elapsed_s": now - t_start,
            }
            t_window, n_window = now, 0
            log_rows.append(row)
            atomic_write_csv(log_path, LOG_FIELDS, log_rows)
            bar.set_postfix(loss=f"{loss_value:.4f}", sps=f"{row['samples_per_s']:.0f}")
            if on_log is not None:
                on_log(row)
        if step % train_cfg.checkpoint_every == 0 or step == train_cfg.steps:
            _checkpoint(last, policy, optimizer, ema, gen, step, rank)
    bar.close()
    elapsed = time.perf_counter() - t_start
    policy_dir = out / "policy"
    if rank == 0 and step == train_cfg.steps:
        final = ema if ema is not None else policy
        final.save_pretrained(policy_dir, extra={"steps": step, "data": str(Path(data_dir).resolve())})
    if dist.is_initialized():
        # Replicas must agree bit for bit: gather every rank's weight hash, rank 0 records them.
        hashes: list[str | None] = [None] * world
        dist.all_gather_object(hashes, weights_sha256(policy.state_dict()))
        if rank == 0:
            atomic_write_json(
                out / "replicas.json",
                {"world_size": world, "backend": dist.get_backend(), "weight_sha256": hashes},
            )
        dist.barrier()
    done = step - start_step
    sps = done * train_cfg.batch_size * world / max(elapsed, 1e-9)
    return TrainResult(out, policy_dir, step, loss_value, elapsed, sps, initialised)


def weights_sha256(state: dict[str, Tensor]) -> str:
    """SHA-256 over every tensor of a state dict (sorted names, raw CPU bytes)."""
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _checkpoint(
    last: Path,
    policy: VLAPolicy,
    optimizer: torch.optim.Optimizer,
    ema: nn.Module | None,
    gen: torch.Generator,
    step: int,
    rank: int,
) -> None:
    if rank == 0:  # durable: a kill at any point leaves a complete `last` (old or new)
        with durable_directory(last) as tmp:
            write_policy_files(policy, tmp, extra={"step": step})
            _save_trainer_state(tmp, step, optimizer, ema, gen)
    if dist.is_initialized():
        dist.barrier()
