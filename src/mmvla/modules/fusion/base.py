"""The one call signature every fusion design shares, and its config.

A fusion takes a :class:`ModalityTokens` (a dict of per-modality token sequences plus keep-masks) and
returns a :class:`FusionOutput`. Modality names used by the policy: ``"vision"`` (all camera tokens,
camera embeddings already added), ``"language"`` and ``"proprio"`` (one token). Keys are always
iterated in sorted order so the result never depends on the caller's dict order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class ModalityTokens:
    """Per-modality tokens and masks.

    Attributes:
        tokens: name -> (B, N_m, D) float tensor.
        masks: name -> (B, N_m) bool tensor, True = keep (valid token). A missing entry means all valid.
    """

    tokens: dict[str, Tensor]
    masks: dict[str, Tensor] = field(default_factory=dict)

    def names(self) -> list[str]:
        """Modality names in sorted order."""
        return sorted(self.tokens)

    def mask(self, name: str) -> Tensor:
        """(B, N_m) bool keep-mask of modality ``name`` (all True when none was given)."""
        if name in self.masks:
            return self.masks[name]
        t = self.tokens[name]
        return torch.ones(t.shape[:2], dtype=torch.bool, device=t.device)

    def validate(self, dim: int) -> None:
        """Raise ``ValueError`` naming the modality when a shape, dtype or batch size is wrong."""
        if not self.tokens:
            raise ValueError("ModalityTokens.tokens is empty: a fusion needs at least one modality")
        batch = None
        for name in self.names():
            t = self.tokens[name]
            if t.dim() != 3 or t.shape[-1] != dim:
                raise ValueError(f"modality {name!r}: tokens must be (B, N, {dim}), got {tuple(t.shape)}")
            if batch is None:
                batch = t.shape[0]
            elif t.shape[0] != batch:
                raise ValueError(f"modality {name!r}: batch {t.shape[0]} != {batch}")
            if name in self.masks:
                m = self.masks[name]
                if m.dtype != torch.bool or tuple(m.shape) != tuple(t.shape[:2]):
                    raise ValueError(
                        f"modality {name!r}: mask must be bool (B, N)={tuple(t.shape[:2])}, "
                        f"got {m.dtype} {tuple(m.shape)}"
                    )


@dataclass
class FusionOutput:
    """What every fusion returns.

    Attributes:
        tokens: (B, N, D) fused tokens (for token-conditioned heads such as flow matching).
        mask: (B, N) bool keep-mask of ``tokens``.
        pooled: (B, D) one fused vector (for pooled heads such as regression or bins).
        aux_loss: scalar tensor added to the training loss (MoE load balancing; 0 otherwise).
        info: extra tensors for logging/visualisation, e.g. ``"gate_weights"`` (B, M).
    """

    tokens: Tensor
    mask: Tensor
    pooled: Tensor
    aux_loss: Tensor
    info: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class FusionConfig:
    """Hyper-parameters shared by all fusion designs (each uses the subset it needs).

    Attributes:
        dim: token width D of every modality (encoders project to it).
        num_heads: attention heads; must divide ``dim``.
        num_layers: blocks for stacked designs (transformer, cross_attention, hierarchical high level).
        mlp_ratio: hidden width of feed-forward blocks as a multiple of ``dim``.
        dropout: dropout probability inside the fusion.
        modalities: the modality names the fusion is built for (sorted on construction).
        max_tokens: per-modality maximum sequence length for learned position embeddings.
        num_experts: experts for ``moe``.
        balance_weight: weight of the MoE load-balancing loss in ``aux_loss``.
        top_k: experts each token is routed to in ``moe`` (1 = Switch, 2 = GShard style).
    """

    dim: int = 128
    num_heads: int = 4
    num_layers: int = 2
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    modalities: tuple[str, ...] = ("language", "proprio", "vision")
    max_tokens: int = 256
    num_experts: int = 4
    balance_weight: float = 0.01
    top_k: int = 2

    def __post_init__(self) -> None:
        self.modalities = tuple(sorted(self.modalities))
        if self.dim <= 0 or self.num_heads <= 0 or self.dim % self.num_heads:
            raise ValueError(
                f"FusionConfig: dim={self.dim} must be positive and divisible by num_heads={self.num_heads}"
            )
        if self.num_layers < 1:
            raise ValueError(f"FusionConfig: num_layers must be >= 1, got {self.num_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"FusionConfig: dropout must be in [0, 1), got {self.dropout}")
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"FusionConfig: modalities must be non-empty and unique, got {self.modalities}")
        if self.num_experts < 1:
            raise ValueError(f"FusionConfig: num_experts must be >= 1, got {self.num_experts}")
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(
                f"FusionConfig: top_k={self.top_k} must be in [1, num_experts={self.num_experts}]"
            )
        if self.max_tokens < 1 or self.mlp_ratio <= 0 or self.balance_weight < 0:
            raise ValueError(
                f"FusionConfig: need max_tokens >= 1, mlp_ratio > 0, balance_weight >= 0; got "
                f"{self.max_tokens}, {self.mlp_ratio}, {self.balance_weight}"
            )

    @property
    def hidden(self) -> int:
        """Hidden width of feed-forward blocks: ``max(1, round(dim * mlp_ratio))``."""
        return max(1, round(self.dim * self.mlp_ratio))


class Fusion(nn.Module):
    """Base class: subclasses implement ``forward(x: ModalityTokens) -> FusionOutput``."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def check_inputs(self, x: ModalityTokens) -> None:
        """Raise ``ValueError`` unless ``x`` has valid shapes and exactly the modalities of ``cfg``."""
        x.validate(self.cfg.dim)
        if tuple(x.names()) != self.cfg.modalities:
            raise ValueError(
                f"{type(self).__name__}: got modalities {tuple(x.names())}, built for {self.cfg.modalities}"
            )

    def forward(self, x: ModalityTokens) -> FusionOutput:  # pragma: no cover - abstract
        raise NotImplementedError
