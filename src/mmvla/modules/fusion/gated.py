"""Gated (adaptive) fusion: learned softmax weights per modality, exposed for logging.

::

    tokens_m ─► Linear_m ─► LN_m ─► e_m (B, N_m, D) ─masked mean─► p_m (B, D)
    w = softmax(MLP(concat p_m))  (B, M), modalities with no valid token in a row get weight 0
    pooled = LN(sum_m w_m p_m) (B, D);  tokens = concat_m w_m · e_m (B, sum N_m, D)
    info["gate_weights"] = w
"""

from __future__ import annotations

import torch
from torch import nn

from mmvla.modules.attention import MLP, masked_mean
from mmvla.modules.fusion.base import Fusion, FusionConfig, FusionOutput, ModalityTokens
from mmvla.modules.fusion.registry import register_fusion


@register_fusion("gated")
class GatedFusion(Fusion):
    """Per-sample softmax gate over modalities; see the module docstring.

    A modality fully padded in a row (instruction dropped, camera lost) is gated out of that row; a row
    where every modality is padded falls back to uniform weights. With a single modality the weight is 1.
    """

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__(cfg)
        D, M = cfg.dim, len(cfg.modalities)
        self.proj = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(D, D), nn.LayerNorm(D)) for m in cfg.modalities}
        )
        self.gate = MLP(M * D, cfg.hidden, M, dropout=cfg.dropout) if M > 1 else None
        self.ln = nn.LayerNorm(D)

    def forward(self, x: ModalityTokens) -> FusionOutput:
        """ModalityTokens -> FusionOutput with ``info["gate_weights"]`` (B, M), rows summing to 1."""
        self.check_inputs(x)
        names = self.cfg.modalities
        e = [self.proj[m](x.tokens[m]) for m in names]  # M x (B, N_m, D)
        masks = [x.mask(m) for m in names]  # M x (B, N_m)
        p = torch.stack([masked_mean(t, k) for t, k in zip(e, masks, strict=True)], dim=1)  # (B, M, D)
        B, M = p.shape[:2]
        if self.gate is None:
            w = p.new_ones(B, M)
        else:
            logits = self.gate(p.flatten(1))  # (B, M)
            present = torch.stack([k.any(dim=1) for k in masks], dim=1)  # (B, M)
            present = present | ~present.any(dim=1, keepdim=True)  # all absent -> treat all as present
            w = logits.masked_fill(~present, float("-inf")).softmax(dim=-1)  # (B, M)
        pooled = self.ln((w[..., None] * p).sum(dim=1))  # (B, D)
        tokens = torch.cat([w[:, i, None, None] * t for i, t in enumerate(e)], dim=1)  # (B, N, D)
        return FusionOutput(
            tokens=tokens,
            mask=torch.cat(masks, dim=1),
            pooled=pooled,
            aux_loss=pooled.new_zeros(()),
            info={"gate_weights": w},
        )
