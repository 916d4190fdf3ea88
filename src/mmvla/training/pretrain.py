"""CLIP-style contrastive pre-training of a policy's vision and language encoders.

::

    demonstrations (frame, instruction) ─┬─ frame (B, 3, H, W) ─► vision encoder ─► pooled (B, D) ─► Linear ─► L2 ─┐
                                         └─ instruction [str]*B ─► language encoder ─► pooled (B, D) ─► Linear ─► L2 ─┤
                                                                                                                     ▼
                          logits = exp(logit_scale) · img @ txtᵀ (fp32)  ─►  symmetric InfoNCE, multi-positive targets
                          (rows sharing an instruction, group id = task index, are all positives of each other)

The encoders are built exactly as :class:`mmvla.policy.VLAPolicy` builds them from a
:class:`~mmvla.policy.PolicyConfig` (same config classes, same ``dim``, same word vocabulary), and live under
the policy's own parameter names (``vision.*``, ``language.*``), so ``mmvla train --init-from OUT`` copies
them into a new policy one to one. The projection heads and the logit scale (``head.*``) are pre-training
only. The logit scale is clamped to ≤ ``max_logit_scale`` after every optimiser step and gets no weight
decay (:func:`mmvla.modules.contrastive.param_groups`).

Training pairs: every frame of the chosen cameras (``PretrainConfig.cameras``, default the front camera;
with several cameras each camera's frame is its own row, sharing the instruction's group) with its
episode's instruction, sampled uniformly over frames; frames get a DrQ random shift.

Evaluation (before and after training, identical across runs): a fixed held-out set rendered from the
simulator, not from the dataset. For every instruction of split ``"all"`` (the dataset's task families,
so it includes the held-out colour-shape compositions) and every round ``r = 0..R-1``, the scripted expert
runs one episode (seed ``eval_seed + 100000·r + i``, no noise) and the frame of the evaluation camera at
``(r + 1) / (R + 1)`` of the episode is kept. Each round holds one frame per instruction, so per round
the (N, N) similarity between frames and the N *distinct* instructions is square and
:func:`mmvla.modules.contrastive.alignment_metrics` applies as is (recall@k against the instruction set; group
ids = instruction index, so rows naming the same instruction would all count as positives). Recall is the
mean over rounds. Per split: ``"all"`` (every instruction a candidate), ``"train"`` (instructions without
a held-out composition) and ``"unseen"`` (instructions naming a held-out composition, as target or as
place base), each ranked among the candidates of its own split only. The modality gap
(:func:`mmvla.modules.contrastive.modality_gap`: raw centroid gap first, then the design source's ratio) uses
every frame of the split against its distinct instructions.

Caveat: frame → instruction retrieval is only well-posed when the frame identifies the instruction. A
frame of "pick up the red cube" also shows the other objects, and early in an episode nothing shows
which object will be acted on, or for a push in which direction; recall@1 has a ceiling below 1 that
depends on the progress fraction. Compare before/after and runs with each other, not against 1.

Outputs (``OUT/``): ``encoders.safetensors`` (policy parameter names; metadata: vocabulary),
``contrastive_head.safetensors``, ``train_config.json`` (``{"policy": ...}``, the policy config with its
instruction vocabulary: pass it to ``mmvla train --config`` together with ``--init-from OUT``),
``pretrain.json`` (configs, metrics before/after per split), ``log.csv`` and
``eval_embeddings.safetensors`` (the evaluation embeddings before/after with their indices and frames, so
the metrics can be recomputed); ``mmvla pretrain`` then draws ``viz/embeddings_{before,after}.png`` (joint
t-SNE of both modalities) from them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save as safetensors_save
from torch import Tensor, nn
from tqdm.auto import tqdm

from mmvla.core.io import atomic_write_bytes, atomic_write_csv, atomic_write_json
from mmvla.core.seeding import seed_everything
from mmvla.data.dataset import VLADataset
from mmvla.modules.augment import random_shift
from mmvla.modules.contrastive import (
    ContrastiveConfig,
    ContrastiveHead,
    ContrastiveOutput,
    alignment_metrics,
    modality_gap,
    param_groups,
)
from mmvla.modules.language import LanguageConfig, WordTokenizer, build_language_encoder, split_words
from mmvla.modules.vision import VisionConfig, build_vision_encoder
from mmvla.policy.config import PolicyConfig
from mmvla.policy.init import ENCODERS
from mmvla.policy.model import _build_dataclass
from mmvla.sim.registry import make_env, make_expert
from mmvla.sim.rollout import rollout
from mmvla.sim.tabletop.tasks import FAMILIES, all_instructions, parse_instruction

LOG_FIELDS = ("step", "loss", "logit_scale", "batch_acc", "lr", "grad_norm", "samples_per_s", "elapsed_s")
SPLIT_NAMES = ("all", "train", "unseen")
RECALL_KS = (1, 5)
EVAL_SEED = 7_000_000  # far from `mmvla collect`'s default seeds 0..N-1
EVAL_ENV = "tabletop"  # the evaluation set is the tabletop's: its instructions, splits and render_camera


# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------


@dataclass
class PretrainConfig:
    """Settings of a contrastive pre-training run (the encoders themselves come from a PolicyConfig).

    Attributes:
        steps: optimiser steps.
        batch_size: (frame, instruction) pairs per step (times the number of cameras).
        lr: peak AdamW learning rate (linear warm-up, then cosine to 0).
        warmup_steps: linear warm-up steps.
        weight_decay: AdamW weight decay on weight matrices (none on 1-D parameters and the logit scale).
        grad_clip: global gradient-norm clip (0 = off).
        embed_dim: width E of the shared embedding space; ``None`` = the policy's ``dim``.
        init_temperature: initial temperature τ (logit scale starts at 1/τ).
        max_logit_scale: clamp of the logit scale after every step (CLIP: 100).
        cameras: cameras whose frames are paired with the instruction (each is its own row).
        shift_pad: DrQ random-shift augmentation in pixels (0 = off).
        eval_rounds: R, frames per instruction in the held-out evaluation set.
        eval_seed: base seed of the evaluation episodes (fixed: every run sees the same set).
        eval_camera: camera the evaluation frames come from; ``None`` = the first of ``cameras``.
        log_every: steps between log rows.
        seed: seed of the weights, batch sampling and augmentation.
        threads: torch intra-op threads (``None`` = torch's default).
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    embed_dim: int | None = None
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    cameras: tuple[str, ...] = ("front",)
    shift_pad: int = 4
    eval_rounds: int = 3
    eval_seed: int = EVAL_SEED
    eval_camera: str | None = None
    log_every: int = 10
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        self.cameras = (self.cameras,) if isinstance(self.cameras, str) else tuple(self.cameras)
        for name in ("steps", "batch_size", "log_every", "eval_rounds"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"PretrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"PretrainConfig.lr must be > 0, got {self.lr}")
        for name in ("warmup_steps", "shift_pad"):
            if getattr(self, name) < 0:
                raise ValueError(f"PretrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(
                f"PretrainConfig: weight_decay and grad_clip must be >= 0, got {self.weight_decay}, {self.grad_clip}"
            )
        if self.embed_dim is not None and self.embed_dim < 1:
            raise ValueError(f"PretrainConfig.embed_dim must be positive or None, got {self.embed_dim}")
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"PretrainConfig.cameras must be non-empty and unique, got {self.cameras}")
        if self.eval_camera is not None and self.eval_camera not in self.cameras:
            raise ValueError(
                f"PretrainConfig.eval_camera {self.eval_camera!r} is not one of cameras {self.cameras}"
            )
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"PretrainConfig.threads must be >= 1 or None, got {self.threads}")
        # Fails here, naming the field, when the temperature and the clamp disagree.
        self.contrastive_config(8)

    @property
    def camera_for_eval(self) -> str:
        """The camera of the evaluation frames."""
        return self.eval_camera if self.eval_camera is not None else self.cameras[0]

    def contrastive_config(self, dim: int) -> ContrastiveConfig:
        """The ContrastiveHead config for encoders of width ``dim`` (projections D -> E)."""
        return ContrastiveConfig(
            embed_dim=self.embed_dim if self.embed_dim is not None else dim,
            vision_dim=dim,
            text_dim=dim,
            init_temperature=self.init_temperature,
            max_logit_scale=self.max_logit_scale,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error that names them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"pretrain config has unknown field(s): {', '.join(unknown)}")
        return cls(**d)


# ---------------------------------------------------------------------------------------------------
# Model: the policy's encoders + a contrastive head
# ---------------------------------------------------------------------------------------------------


class DualEncoder(nn.Module):
    """The policy's vision and language encoders (same names, same construction) + :class:`ContrastiveHead`.

    State-dict names: ``vision.*`` and ``language.*`` exactly as in :class:`mmvla.policy.VLAPolicy`;
    ``head.*`` for the projections and the logit scale.

    Inputs of :meth:`forward`: images (B, 3, H, W) uint8 or float in [0, 1]; B instruction strings;
    optional (B,) group ids (rows with the same instruction).
    """

    def __init__(self, policy_cfg: PolicyConfig, contrastive: ContrastiveConfig) -> None:
        super().__init__()
        D = policy_cfg.dim
        # The same calls as VLAPolicy.__init__, so every name and shape matches the policy's.
        self.vision = build_vision_encoder(
            _build_dataclass(VisionConfig, policy_cfg.vision, dim=D, image_size=policy_cfg.image_size)
        )
        if self.vision.cfg.condition:
            raise ValueError(
                "contrastive pre-training needs an image embedding that does not see the instruction: "
                "set the policy's vision condition=False for `mmvla pretrain` (a conditioned policy can "
                "still start from the result with --init-from; its FiLM layers start fresh)"
            )
        tokenizer = WordTokenizer.build(policy_cfg.instructions)
        self.language = build_language_encoder(
            _build_dataclass(LanguageConfig, policy_cfg.language, dim=D), tokenizer
        )
        if contrastive.vision_dim != D or contrastive.text_dim != D:
            raise ValueError(
                f"DualEncoder: the contrastive head must project from the policy width {D}, got "
                f"vision_dim={contrastive.vision_dim}, text_dim={contrastive.text_dim}"
            )
        self.head = ContrastiveHead(contrastive)

    def image_features(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) uint8 or float in [0, 1] -> (B, D) pooled vision features (before projection)."""
        x = images.float() / 255.0 if not torch.is_floating_point(images) else images.float()
        return self.vision(x).pooled  # (B, D)

    def text_features(self, texts: Sequence[str]) -> Tensor:
        """B strings -> (B, D) pooled sentence features; each distinct string is encoded once."""
        uniq = list(dict.fromkeys(texts))
        pos = {t: i for i, t in enumerate(uniq)}
        inv = torch.tensor([pos[t] for t in texts], dtype=torch.long)
        pooled = self.language(uniq).pooled  # (U, D)
        return pooled[inv.to(pooled.device)]  # (B, D)

    def embed(self, images: Tensor, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """L2-normalised embeddings: images (B, 3, H, W) -> (B, E); texts (T,) -> (T, E)."""
        return self.head.embed(self.image_features(images), self.text_features(texts))

    def forward(
        self, images: Tensor, texts: Sequence[str], groups: Tensor | None = None
    ) -> ContrastiveOutput:
        """Symmetric InfoNCE on B (image, text) pairs (see :class:`ContrastiveHead`)."""
        if images.shape[0] != len(texts):
            raise ValueError(f"DualEncoder: {images.shape[0]} images but {len(texts)} texts")
        return self.head(self.image_features(images), self.text_features(texts), groups)

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """The ``vision.*`` and ``language.*`` tensors (policy names), contiguous CPU copies."""
        return {
            k: v.detach().cpu().contiguous().clone()
            for k, v in self.state_dict().items()
            if k.startswith(("vision.", "language."))
        }


# ---------------------------------------------------------------------------------------------------
# Fixed held-out evaluation set from the simulator
# ---------------------------------------------------------------------------------------------------


def instruction_split(instruction: str) -> str:
    """``"unseen"`` when a canonical instruction names a held-out composition (target or base), else ``"train"``."""
    return "train" if parse_instruction(instruction).in_split("train") else "unseen"


def dataset_families(instructions: Sequence[str]) -> tuple[str, ...]:
    """Task families of a dataset's canonical instructions (non-canonical ones are ignored), in FAMILIES order."""
    seen = set()
    for text in instructions:
        try:
            seen.add(parse_instruction(text).family)
        except ValueError:
            continue
    if not seen:
        raise ValueError(
            "pretrain: none of the dataset's instructions is a canonical simulator instruction, so the "
            "held-out evaluation set cannot be built; pass families explicitly"
        )
    return tuple(f for f in FAMILIES if f in seen)


@dataclass
class EvalSet:
    """A fixed retrieval evaluation set: R rounds × N distinct instructions, one frame each.

    Attributes:
        instructions: N distinct instructions (``all_instructions("all", families)`` order).
        splits: N labels, ``"train"`` or ``"unseen"`` (see :func:`instruction_split`).
        frames: (R·N, H, W, 3) uint8 frames of ``camera``; row ``r·N + i`` shows instruction ``i`` in round ``r``.
        instruction_index: (R·N,) int64 instruction of each frame.
        round_index: (R·N,) int64 round of each frame.
        progress: R fractions of the episode at which each round's frames were taken.
        camera: the camera rendered.
        seed: base seed of the episodes.
    """

    instructions: list[str]
    splits: list[str]
    frames: np.ndarray
    instruction_index: np.ndarray
    round_index: np.ndarray
    progress: list[float]
    camera: str
    seed: int
    families: tuple[str, ...] = field(default_factory=tuple)

    @property
    def rounds(self) -> int:
        """R, frames per instruction."""
        return len(self.progress)


def _run_expert(env: Any, seed: int, instruction: str, stop: int | None) -> int:
    """Roll the noiseless expert from ``reset(seed)``; stop after ``stop`` steps (or at the episode's end).

    Returns the number of steps taken.
    """
    start = env.reset(seed=seed, options={"instruction": instruction})
    expert = make_expert(EVAL_ENV, env, noise_std=0.0, seed=seed)
    expert.reset()
    return rollout(env, expert.act, start=start, stop_on_success=False, max_steps=stop).steps


def build_eval_set(
    families: Sequence[str],
    image_size: int,
    camera: str = "front",
    rounds: int = 3,
    seed: int = EVAL_SEED,
    progress: bool = False,
) -> EvalSet:
    """Render the fixed held-out evaluation set (see the module docstring); deterministic in its arguments.

    Each episode runs twice from the same seed (the noiseless expert and MuJoCo are deterministic): once
    without rendering to learn its length T, then up to step ``round((r + 1) / (R + 1) · T)``, where one
    ``image_size``² frame of ``camera`` is rendered.
    """

    if rounds < 1:
        raise ValueError(f"build_eval_set: rounds must be >= 1, got {rounds}")
    instructions = all_instructions("all", tuple(families))
    n = len(instructions)
    fracs = [(r + 1) / (rounds + 1) for r in range(rounds)]
    frames = np.empty((rounds * n, image_size, image_size, 3), dtype=np.uint8)
    env = make_env(EVAL_ENV, cameras=(), image_size=image_size, split="all", families=tuple(families))
    bar = tqdm(total=rounds * n, desc="eval set", unit="ep", disable=not progress)
    try:
        for r, frac in enumerate(fracs):
            for i, text in enumerate(instructions):
                s = seed + 100_000 * r + i
                length = _run_expert(env, s, text, stop=None)
                _run_expert(env, s, text, stop=round(frac * length))
                frames[r * n + i] = env.render_camera(camera)
                bar.update(1)
    finally:
        bar.close()
        env.close()
    return EvalSet(
        instructions=list(instructions),
        splits=[instruction_split(t) for t in instructions],
        frames=frames,
        instruction_index=np.tile(np.arange(n, dtype=np.int64), rounds),
        round_index=np.repeat(np.arange(rounds, dtype=np.int64), n),
        progress=fracs,
        camera=camera,
        seed=seed,
        families=tuple(families),
    )


@torch.no_grad()
def embed_eval_set(model: DualEncoder, ev: EvalSet, batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """L2-normalised eval embeddings: frames (R·N, E) and distinct instructions (N, E), float32 on CPU."""
    was_training = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
        imgs = []
        for lo in range(0, len(ev.frames), batch_size):
            x = torch.from_numpy(ev.frames[lo : lo + batch_size]).permute(0, 3, 1, 2).to(dev)  # (b, 3, H, W)
            imgs.append(F.normalize(model.head.vision_proj(model.image_features(x)), dim=-1))  # (b, E)
        img = torch.cat(imgs)  # (R·N, E)
        txt = F.normalize(model.head.text_proj(model.text_features(ev.instructions)), dim=-1)  # (N, E)
    finally:
        model.train(was_training)
    return img.float().cpu(), txt.float().cpu()


def retrieval_metrics(
    img_emb: Tensor,
    txt_emb: Tensor,
    instruction_index: Tensor,
    round_index: Tensor,
    splits: Sequence[str],
    ks: Sequence[int] = RECALL_KS,
) -> dict[str, dict[str, float]]:
    """Per-split retrieval and modality-gap metrics of an evaluation set (see the module docstring).

    Args:
        img_emb: (R·N, E) frame embeddings. txt_emb: (N, E) embeddings of the distinct instructions.
        instruction_index: (R·N,) instruction of each frame. round_index: (R·N,) round of each frame.
        splits: N split labels of the instructions.
        ks: recall cut-offs.
    Returns:
        ``{split: {"modality_gap", "gap_to_variance_ratio", "vision_variance", "text_variance",
        "recall_i2t@k"..., "recall_t2i@k"..., "matched_similarity", "mean_similarity", "candidates",
        "frames"}}`` for ``"all"`` and every split present; recalls and similarities are means over rounds.
    """
    labels = np.asarray(list(splits))
    instr = instruction_index.long()
    rounds = sorted({int(r) for r in round_index.tolist()})
    out: dict[str, dict[str, float]] = {}
    for split in SPLIT_NAMES:
        cand = np.arange(len(labels)) if split == "all" else np.flatnonzero(labels == split)
        if len(cand) < 2:
            continue
        cand_t = torch.as_tensor(cand, dtype=torch.long)
        txt = txt_emb[cand_t]  # (n, E)
        per_round: list[dict[str, float]] = []
        frame_rows: list[Tensor] = []
        for r in rounds:
            rows = []
            for i in cand.tolist():  # one frame of each candidate instruction, in candidate order
                hit = torch.nonzero((instr == i) & (round_index == r)).flatten()
                if len(hit) != 1:
                    raise ValueError(f"retrieval_metrics: round {r} has {len(hit)} frames of instruction {i}")
                rows.append(int(hit[0]))
            rows_t = torch.tensor(rows, dtype=torch.long)
            frame_rows.append(rows_t)
            m = alignment_metrics(img_emb[rows_t], txt, groups=cand_t, ks=ks)
            per_round.append(m.as_dict())
        gap = modality_gap(img_emb[torch.cat(frame_rows)], txt).as_dict()  # raw gap first
        metrics: dict[str, float] = dict(gap)
        for key in per_round[0]:
            metrics[key] = float(np.mean([p[key] for p in per_round]))
        metrics["candidates"] = float(len(cand))
        metrics["frames"] = float(len(cand) * len(rounds))
        out[split] = metrics
    return out


def evaluate_dual_encoder(
    model: DualEncoder, ev: EvalSet
) -> tuple[dict[str, dict[str, float]], Tensor, Tensor]:
    """Embed ``ev`` and compute :func:`retrieval_metrics`; returns (metrics, frame emb, text emb)."""
    img, txt = embed_eval_set(model, ev)
    m = retrieval_metrics(
        img, txt, torch.from_numpy(ev.instruction_index), torch.from_numpy(ev.round_index), ev.splits
    )
    return m, img, txt


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Learning rate of 0-based ``step``: linear warm-up to ``lr`` over ``warmup_steps``, then cosine to 0."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns.

    Attributes:
        out: the output directory.
        before, after: :func:`retrieval_metrics` of the evaluation set before and after training.
        steps: optimiser steps taken.
        seconds: training wall time (evaluation excluded).
        final_logit_scale: ``exp(logit_scale)`` at the end.
        max_logit_scale_seen: largest ``exp(logit_scale)`` after any step (≤ ``max_logit_scale``).
        policy_config: the policy config the encoders belong to (pass it to ``mmvla train``).
    """

    out: Path
    before: dict[str, dict[str, float]]
    after: dict[str, dict[str, float]]
    steps: int
    seconds: float
    final_logit_scale: float
    max_logit_scale_seen: float
    policy_config: PolicyConfig


def _batch_accuracy(img: Tensor, txt: Tensor, groups: Tensor) -> float:
    """Fraction of rows whose most similar text column is a positive (same group)."""
    best = (img.float() @ txt.float().T).argmax(dim=1)  # (B,)
    return float((groups[best] == groups).float().mean())


def pretrain(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    policy_cfg: PolicyConfig,
    cfg: PretrainConfig,
    progress: bool = True,
    eval_set: EvalSet | None = None,
    on_log: Callable[[dict[str, float]], None] | None = None,
) -> PretrainResult:
    """Contrastively align the policy's encoders on a dataset's (frame, instruction) pairs; write ``out_dir``.

    Args:
        data_dir: dataset written by ``mmvla collect``.
        out_dir: output directory (created; files are replaced atomically one by one).
        policy_cfg: the policy whose encoders to pre-train (``vision``, ``language``, ``dim``,
            ``image_size``, ``instructions``); ``instructions`` is filled from the dataset when empty, as
            ``mmvla train`` does. ``image_size`` must equal the dataset's.
        cfg: optimisation and evaluation settings.
        progress: show progress bars.
        eval_set: a pre-built :class:`EvalSet` (tests); default: :func:`build_eval_set` from ``cfg``.
        on_log: called with every log row.

    The embedding plots (``viz/embeddings_{before,after}.png``) are drawn from
    ``eval_embeddings.safetensors`` by :func:`mmvla.reporting.figures.write_pretrain_embedding_plots`
    (``mmvla pretrain`` does).
    """

    out = Path(out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    dataset = VLADataset(Path(data_dir), cameras=cfg.cameras, progress=progress)
    h, w = dataset.image_shape
    if h != w or h != policy_cfg.image_size:
        raise ValueError(
            f"pretrain: dataset images are {h}x{w} but the policy config has image_size={policy_cfg.image_size}"
        )
    if not policy_cfg.instructions:
        policy_cfg = PolicyConfig.from_dict(
            {**policy_cfg.to_dict(), "instructions": sorted(dataset.instructions)}
        )
    if eval_set is None:
        eval_set = build_eval_set(
            dataset_families(dataset.instructions),
            image_size=h,
            camera=cfg.camera_for_eval,
            rounds=cfg.eval_rounds,
            seed=cfg.eval_seed,
            progress=progress,
        )
    vocab = set(WordTokenizer.build(policy_cfg.instructions).vocab)
    oov = sorted({wd for t in eval_set.instructions for wd in split_words(t)} - vocab)

    torch.manual_seed(cfg.seed)
    model = DualEncoder(policy_cfg, cfg.contrastive_config(policy_cfg.dim))
    before, img0, txt0 = evaluate_dual_encoder(model, eval_set)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(cfg.seed)
    out.mkdir(parents=True, exist_ok=True)
    log_rows: list[dict[str, float]] = []
    max_scale = float(model.head.scale.detach())
    model.train()
    bar = tqdm(total=cfg.steps, disable=not progress, desc="pretrain", unit="step")
    t_start = time.perf_counter()
    t_window, n_window = t_start, 0
    for step in range(cfg.steps):
        lr = lr_at(step, cfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        idx = torch.randint(len(dataset), (cfg.batch_size,), generator=gen)
        batch = dataset.get_batch(idx)
        images = torch.cat([batch["images"][c] for c in cfg.cameras]).float() / 255.0  # (C·B, 3, H, W)
        images = random_shift(images, cfg.shift_pad, gen)
        texts = list(batch["instruction"]) * len(cfg.cameras)
        groups = batch["task_index"].repeat(len(cfg.cameras))  # (C·B,) same instruction = positives
        res = model(images, texts, groups)
        optimizer.zero_grad(set_to_none=True)
        res.loss.backward()
        grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf")))
        optimizer.step()
        model.head.clamp_()  # exp(logit_scale) <= max_logit_scale after every step
        scale = float(model.head.scale.detach())
        max_scale = max(max_scale, scale)
        n_window += len(texts)
        bar.update(1)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            now = time.perf_counter()
            row = {
                "step": step + 1,
                "loss": float(res.loss.detach()),
                "logit_scale": scale,
                "batch_acc": _batch_accuracy(res.img_emb.detach(), res.txt_emb.detach(), groups),
                "lr": lr,
                "grad_norm": grad_norm,
                "samples_per_s": n_window / max(now - t_window, 1e-9),
                "elapsed_s": now - t_start,
            }
            t_window, n_window = now, 0
            log_rows.append(row)
            atomic_write_csv(out / "log.csv", LOG_FIELDS, log_rows)
            bar.set_postfix(loss=f"{row['loss']:.3f}", scale=f"{scale:.1f}", acc=f"{row['batch_acc']:.2f}")
            if on_log is not None:
                on_log(row)
    bar.close()
    seconds = time.perf_counter() - t_start
    after, img1, txt1 = evaluate_dual_encoder(model, eval_set)

    # ---- outputs
    meta = {
        "format": "mmvla-encoders",
        "vocab": json.dumps(WordTokenizer.build(policy_cfg.instructions).vocab),
    }
    atomic_write_bytes(out / ENCODERS, safetensors_save(model.encoder_state_dict(), metadata=meta))
    head = {f"head.{k}": v.detach().cpu().contiguous().clone() for k, v in model.head.state_dict().items()}
    atomic_write_bytes(out / "contrastive_head.safetensors", safetensors_save(head))
    emb = {
        "before.image": img0,
        "before.text": txt0,
        "after.image": img1,
        "after.text": txt1,
        "instruction_index": torch.from_numpy(eval_set.instruction_index),
        "round_index": torch.from_numpy(eval_set.round_index),
        "frames": torch.from_numpy(eval_set.frames),
    }
    emb_meta = {"instructions": json.dumps(eval_set.instructions), "splits": json.dumps(eval_set.splits)}
    atomic_write_bytes(out / "eval_embeddings.safetensors", safetensors_save(emb, metadata=emb_meta))
    atomic_write_json(out / "train_config.json", {"policy": policy_cfg.to_dict()})
    final_scale = float(model.head.scale.detach())
    atomic_write_json(
        out / "pretrain.json",
        {
            "data": str(Path(data_dir).resolve()),
            "pretrain": cfg.to_dict(),
            "policy": policy_cfg.to_dict(),
            "pairs": {
                "cameras": list(cfg.cameras),
                "frames": len(dataset),
                "episodes": dataset.num_episodes,
                "instructions": len(dataset.instructions),
            },
            "eval": {
                "camera": eval_set.camera,
                "families": list(eval_set.families),
                "instructions": len(eval_set.instructions),
                "unseen_instructions": sum(s == "unseen" for s in eval_set.splits),
                "rounds": eval_set.rounds,
                "progress": eval_set.progress,
                "seed": eval_set.seed,
                "out_of_vocabulary_words": oov,
            },
            "metrics": {"before": before, "after": after},
            "steps": cfg.steps,
            "train_seconds": seconds,
            "final_logit_scale": final_scale,
            "max_logit_scale_seen": max_scale,
            "embedding_plots": None,  # the projection method once the plots are drawn (mmvla pretrain)
        },
    )
    return PretrainResult(out, before, after, cfg.steps, seconds, final_scale, max_scale, policy_cfg)


def format_metrics(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> str:
    """A plain-text table: per split, before/after recall@1/5 both directions, raw gap, then ratio."""
    head = f"{'split':<7} {'':<6} {'cand':>4} {'i2t@1':>6} {'i2t@5':>6} {'t2i@1':>6} {'t2i@5':>6} {'gap':>6} {'ratio':>7}"
    lines = [head]
    for split in SPLIT_NAMES:
        for when, m in (("before", before.get(split)), ("after", after.get(split))):
            if m is None:
                continue
            lines.append(
                f"{split if when == 'before' else '':<7} {when:<6} {int(m['candidates']):>4} "
                f"{m['recall_i2t@1']:>6.3f} {m['recall_i2t@5']:>6.3f} {m['recall_t2i@1']:>6.3f} "
                f"{m['recall_t2i@5']:>6.3f} {m['modality_gap']:>6.3f} {m['gap_to_variance_ratio']:>7.2f}"
            )
    return "\n".join(lines)
