"""Training hyper-parameters (the config beside :mod:`mmvla.training.trainer`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class TrainConfig:
    """How a policy is trained.

    Attributes:
        steps: optimiser steps.
        batch_size: samples per step and per process.
        lr: peak learning rate of AdamW.
        min_lr_ratio: final learning rate as a fraction of ``lr`` (cosine decay).
        warmup_steps: linear warm-up steps.
        weight_decay: AdamW decay on matrices (biases, norms, embeddings of rank 1 are not decayed).
        grad_clip: max global gradient norm (0 disables).
        ema_decay: exponential moving average of the weights saved as the final policy (0 disables).
        augment_shift: pixels of random shift (pad + random crop); 0 disables.
        augment_jitter: colour-jitter strength (brightness/contrast/saturation ±); 0 disables.
        bf16: bf16 autocast for the forward pass (CPU or CUDA).
        log_every: steps between log rows.
        checkpoint_every: steps between atomic checkpoints (``checkpoints/last``).
        seed: seeds the model init, batch sampling, augmentation and dropout.
        threads: torch intra-op threads (0 = torch's default).
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"`` or ``"cuda"``; under torchrun each
            process takes GPU ``LOCAL_RANK`` and the backend is nccl on CUDA, gloo on CPU.
        wording_augment: probability that a sample's instruction is replaced by one of its task's
            training wordings (:mod:`mmvla.sim.tabletop.wordings`; tabletop instructions only, others unchanged).
        wordings_per_task: size of each task's pool of training wordings (the canonical one included).
    """

    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.0
    augment_shift: int = 4
    augment_jitter: float = 0.1
    bf16: bool = False
    log_every: int = 25
    checkpoint_every: int = 500
    seed: int = 0
    threads: int = 0
    device: str = "auto"
    wording_augment: float = 0.0
    wordings_per_task: int = 32

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "log_every", "checkpoint_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(
                f"TrainConfig: need lr > 0 and 0 <= min_lr_ratio <= 1, got {self.lr}, {self.min_lr_ratio}"
            )
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip < 0 or self.augment_shift < 0:
            raise ValueError(
                "TrainConfig: warmup_steps, weight_decay, grad_clip and augment_shift must be >= 0"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"TrainConfig.device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if not 0 <= self.wording_augment <= 1 or self.wordings_per_task < 1:
            raise ValueError(
                "TrainConfig: wording_augment must be in [0, 1] and wordings_per_task >= 1, got "
                f"{self.wording_augment}, {self.wordings_per_task}"
            )
        if not 0 <= self.ema_decay < 1 or not 0 <= self.augment_jitter < 1:
            raise ValueError("TrainConfig: ema_decay and augment_jitter must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are named in the error."""
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"train config has unknown field(s): {', '.join(unknown)}")
        return cls(**d)
