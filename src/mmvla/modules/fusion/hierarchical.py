"""Hierarchical fusion ("π₀ style" in the design source): low → mid → high, every level feeding the next.

::

    low  = EarlyFusion(modalities).pooled                                    (B, D)  pooled sensor fusion
    mid  = CrossModalLayer × num_layers over (tokens_m + Linear(low))        (B, N_m, D) per modality
           (proprio is appended, LN'd, also conditioned on low)
    high = TransformerBlock × num_layers over [low token, mid tokens]        (B, 1 + N, D), key mask
    pooled = LN(high)[:, 0]; tokens = LN(high)[:, 1:]

The design source computed the mid level and then discarded it (its high level saw only the low token);
here low conditions mid, and high attends over both, so every parameter receives a gradient.
"""

from __future__ import annotations

import torch
from torch import nn

from mmvla.modules.attention import TransformerBlock
from mmvla.modules.fusion.base import Fusion, FusionConfig, FusionOutput, ModalityTokens
from mmvla.modules.fusion.cross_attention import APPENDED, CrossModalLayer
from mmvla.modules.fusion.early import EarlyFusion
from mmvla.modules.fusion.registry import register_fusion


@register_fusion("hierarchical")
class HierarchicalFusion(Fusion):
    """Three levels; see the module docstring. Outputs tokens in sorted modality order with masks."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__(cfg)
        D = cfg.dim
        self.low = EarlyFusion(cfg)
        self.low_to_mid = nn.Linear(D, D)
        self.attending = tuple(m for m in cfg.modalities if m not in APPENDED)
        self.mid = nn.ModuleList(
            CrossModalLayer(self.attending, D, cfg.num_heads, hidden=cfg.hidden, dropout=cfg.dropout)
            for _ in range(cfg.num_layers if self.attending else 0)
        )
        self.ln_appended = nn.ModuleDict({m: nn.LayerNorm(D) for m in cfg.modalities if m in APPENDED})
        self.level_embed = nn.Parameter(torch.randn(2, D) * 0.02)  # low token, mid tokens
        self.high = nn.ModuleList(
            TransformerBlock(D, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout)
            for _ in range(cfg.num_layers)
        )
        self.ln_f = nn.LayerNorm(D)

    def forward(self, x: ModalityTokens) -> FusionOutput:
        """ModalityTokens -> FusionOutput (see module docstring)."""
        self.check_inputs(x)
        names = self.cfg.modalities
        low = self.low(x).pooled  # (B, D)
        cond = self.low_to_mid(low)[:, None]  # (B, 1, D)
        masks = {m: x.mask(m) for m in names}
        h = {m: x.tokens[m] + cond for m in self.attending}  # low feeds mid
        for layer in self.mid:
            h = layer(h, masks)
        h.update({m: ln(x.tokens[m] + cond) for m, ln in self.ln_appended.items()})
        mid = torch.cat([h[m] for m in names], dim=1) + self.level_embed[1]  # (B, N, D)
        z = torch.cat([(low + self.level_embed[0])[:, None], mid], dim=1)  # (B, 1 + N, D)
        keep = torch.cat([torch.ones_like(masks[names[0]][:, :1]), *[masks[m] for m in names]], dim=1)
        for block in self.high:  # mid (and low) feed high
            z = block(z, key_mask=keep)
        z = self.ln_f(z)
        return FusionOutput(tokens=z[:, 1:], mask=keep[:, 1:], pooled=z[:, 0], aux_loss=z.new_zeros(()))
