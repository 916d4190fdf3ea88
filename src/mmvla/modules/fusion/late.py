"""Late fusion: each modality has its own encoder; the results meet only at the end.

::

    tokens_m (B, N_m, D) ─masked mean─► LN ─► MLP_m ─► h_m (B, D) ─┐
    ... one per modality, sorted ...                                 ├─ concat (B, M·D) ─► Linear ─► pooled (B, D)
                                                    tokens = stack h_m (B, M, D)
"""

from __future__ import annotations

import torch
from torch import nn

from mmvla.modules.attention import MLP, masked_mean
from mmvla.modules.fusion.base import Fusion, FusionConfig, FusionOutput, ModalityTokens
from mmvla.modules.fusion.registry import register_fusion


@register_fusion("late")
class LateFusion(Fusion):
    """One encoder per modality on its pooled vector, combined by a linear layer at the end.

    Outputs: ``pooled`` (B, D); ``tokens`` (B, M, D), one per modality in sorted order, with mask False
    where the modality had no valid token in that row.
    """

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__(cfg)
        D = cfg.dim
        self.encoders = nn.ModuleDict(
            {
                m: nn.Sequential(nn.LayerNorm(D), MLP(D, cfg.hidden, D, dropout=cfg.dropout))
                for m in cfg.modalities
            }
        )
        self.head = nn.Linear(len(cfg.modalities) * D, D)

    def forward(self, x: ModalityTokens) -> FusionOutput:
        """ModalityTokens -> FusionOutput (see class docstring)."""
        self.check_inputs(x)
        names = self.cfg.modalities
        h = [self.encoders[m](masked_mean(x.tokens[m], x.mask(m))) for m in names]  # M x (B, D)
        present = torch.stack([x.mask(m).any(dim=1) for m in names], dim=1)  # (B, M)
        pooled = self.head(torch.cat(h, dim=-1))  # (B, D)
        return FusionOutput(
            tokens=torch.stack(h, dim=1), mask=present, pooled=pooled, aux_loss=pooled.new_zeros(())
        )
