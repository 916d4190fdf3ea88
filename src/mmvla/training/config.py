"""Training hyper-parameters (the config beside :mod:`mmvla.training.trainer`), and the training config
file (``mmvla train --config``) merged with overrides."""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mmvla.core.io import read_json
from mmvla.core.keys import CAMERA_FAILURES
from mmvla.data.dataset import STORAGE_MODES
from mmvla.policy import PolicyConfig
from mmvla.sim.tabletop.wordings import TRAIN_PER_TASK

CONFIG_SECTIONS = ("policy", "train")
TRAIN_CAMERA_FAILURES = ("none", *CAMERA_FAILURES, "both")


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
        camera_failure: the context task in training: "none", "blank", "freeze" or "both" (each failed
            sample draws one): ``camera_failure_camera`` fails partway through a sample's frame window
            (:mod:`mmvla.training.failures`). The window is the temporal memory's context K, or for a
            memoryless policy ``camera_failure_window`` frames of which it reads the last (the current,
            possibly failed, frame).
        camera_failure_prob: probability that a sample's camera fails.
        camera_failure_camera: the camera that fails.
        camera_failure_window: frames per window for a memoryless policy (>= 2).
        camera_failure_span: 0, a failure starts inside the sample's frame window; N > 0, it started
            ``age`` steps before the sample's step, uniform over 1..min(N, steps into the episode), so
            it may predate the window and a frozen frame may be older than it, as at evaluation, where a
            camera stays failed for the rest of the episode (a memoryless policy then needs no window).
        history_dropout: with temporal memory, probability that a sample's past frames are hidden from
            the memory (only the current frame valid; :mod:`mmvla.training.history_dropout`), against
            the copycat shortcut of imitation with history.
        data_storage: where the dataset's decoded images live (``VLADataset(storage=...)``): "memory",
            "disk" (a uint8 cache file per camera read by row: resident memory independent of the dataset
            size; the first epoch decodes into it) or "auto" (disk above a quarter of RAM).
        data_cache_dir: folder of the disk cache ("" = ``<dataset>/.mmvla_cache``).
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
    wordings_per_task: int = TRAIN_PER_TASK
    camera_failure: str = "none"
    camera_failure_prob: float = 0.5
    camera_failure_camera: str = "front"
    camera_failure_window: int = 8
    camera_failure_span: int = 0
    history_dropout: float = 0.0
    data_storage: str = "auto"
    data_cache_dir: str = ""

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
        if not 0 <= self.history_dropout <= 1:
            raise ValueError(f"TrainConfig.history_dropout must be in [0, 1], got {self.history_dropout}")
        if self.camera_failure not in TRAIN_CAMERA_FAILURES:
            raise ValueError(
                f"TrainConfig.camera_failure must be one of {TRAIN_CAMERA_FAILURES}, got {self.camera_failure!r}"
            )
        if not 0 <= self.camera_failure_prob <= 1 or self.camera_failure_window < 2:
            raise ValueError(
                "TrainConfig: camera_failure_prob must be in [0, 1] and camera_failure_window >= 2, got "
                f"{self.camera_failure_prob}, {self.camera_failure_window}"
            )
        if not isinstance(self.camera_failure_span, int) or self.camera_failure_span < 0:
            raise ValueError(
                f"TrainConfig.camera_failure_span must be an int >= 0, got {self.camera_failure_span!r}"
            )

        if self.data_storage not in STORAGE_MODES:
            raise ValueError(
                f"TrainConfig.data_storage must be one of {STORAGE_MODES}, got {self.data_storage!r}"
            )

    @property
    def camera_failure_modes(self) -> tuple[str, ...]:
        """The failure modes sampled in training (empty: no failures)."""
        if self.camera_failure == "none":
            return ()
        return CAMERA_FAILURES if self.camera_failure == "both" else (self.camera_failure,)

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


def apply_overrides(d: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``d`` with ``overrides`` applied; ``"a.b": v`` sets ``d["a"]["b"] = v``.

    Raises ``ValueError`` naming the key when a dotted key's parent is not a dict.
    """
    out = copy.deepcopy(dict(d))
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ValueError(f"override {key!r}: {p!r} is not a dict field")
            node = child
        node[leaf] = value
    return out


def read_config_sections(
    path: str | os.PathLike[str], sections: Sequence[str], kind: str = "training config"
) -> dict[str, dict[str, Any]]:
    """A JSON config file of objects named by ``sections`` (each optional) as ``{section: dict}``.

    Raises ``ValueError`` naming the file when it is not an object, holds another key, or a section is
    not an object.
    """
    file = read_json(path, kind)
    names = [f"'{s}'" for s in sections]
    if not isinstance(file, dict) or set(file) - set(sections):
        listed = f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else names[0]
        raise ValueError(f"{path}: a {kind} holds only {listed} objects")
    for section, value in file.items():
        if not isinstance(value, dict):
            raise ValueError(f"{path}: '{section}' must be an object, got {type(value).__name__}")
    return {s: dict(file.get(s, {})) for s in sections}


def read_config_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A training config file ``{"policy": {...}, "train": {...}}`` (either section optional) as
    (policy dict, train dict); see :func:`read_config_sections`."""
    file = read_config_sections(path, CONFIG_SECTIONS)
    return file["policy"], file["train"]


def training_configs(
    config_file: str | os.PathLike[str] | None = None,
    policy: Mapping[str, Any] | None = None,
    train: Mapping[str, Any] | None = None,
) -> tuple[PolicyConfig, TrainConfig]:
    """(PolicyConfig, TrainConfig) from a config file (None: defaults) with overrides applied on top.

    Args:
        config_file: JSON file read by :func:`read_config_file`.
        policy: PolicyConfig fields; a dotted key sets a field inside a dict field (``"vision.kind"``).
            A ``head.*`` key on a file without a ``head`` starts from PolicyConfig's default head (a
            head needs its kind and chunk size); other dict fields start empty.
        train: TrainConfig fields.
    Raises:
        ValueError: a malformed file, an unknown field, or an invalid value (each names the field).
    """
    policy_d, train_d = read_config_file(config_file) if config_file else ({}, {})
    policy = dict(policy or {})
    if "head" not in policy_d and any(k.startswith("head.") for k in policy):
        policy_d["head"] = dict(PolicyConfig().head)
    return (
        PolicyConfig.from_dict(apply_overrides(policy_d, policy)),
        TrainConfig.from_dict(apply_overrides(train_d, dict(train or {}))),
    )
