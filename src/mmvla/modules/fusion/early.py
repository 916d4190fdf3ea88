"""Early fusion: pool every modality, concatenate, one MLP (the design source's ``EarlyFusion``).

::

    tokens_m (B, N_m, D) ─masked mean─► (B, D) ─┐
    ... one per modality, sorted ...             ├─ concat (B, M·D) ─► MLP ─► LN ─► pooled (B, D)
"""

from __future__ import annotations

import torch
from torch import nn

from mmvla.modules.attention import MLP, masked_mean
from mmvla.modules.fusion.base import Fusion, FusionConfig, FusionOutput, ModalityTokens
from mmvla.modules.fusion.registry import register_fusion


@register_fusion("early")
class EarlyFusion(Fusion):
    """Concatenate the masked-mean of each modality and mix with an MLP.

    Outputs: ``pooled`` (B, D); ``tokens`` is that vector as one token (B, 1, D), mask all True.
    A modality whose tokens are all padded in a row contributes a zero vector for that row.
    """

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__(cfg)
        self.mlp = MLP(len(cfg.modalities) * cfg.dim, cfg.hidden, cfg.dim, dropout=cfg.dropout)
        self.ln = nn.LayerNorm(cfg.dim)

    def forward(self, x: ModalityTokens) -> FusionOutput:
        """ModalityTokens -> FusionOutput (see class docstring)."""
        self.check_inputs(x)
        pooled = [masked_mean(x.tokens[m], x.mask(m)) for m in self.cfg.modalities]  # M x (B, D)
        h = self.ln(self.mlp(torch.cat(pooled, dim=-1)))  # (B, D)
        mask = torch.ones(h.shape[0], 1, dtype=torch.bool, device=h.device)  # (B, 1)
        return FusionOutput(tokens=h[:, None], mask=mask, pooled=h, aux_loss=h.new_zeros(()))
