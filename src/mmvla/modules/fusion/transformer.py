"""Multimodal transformer: one token sequence of every modality through N pre-norm blocks, split back.

::

    [CLS] + for m in sorted modalities: tokens_m + pos_m[:N_m] + type_m      (B, 1 + sum N_m, D)
          ─► N x TransformerBlock(key_mask = [True, mask_m...])  (padding never attended to)
          ─► LN ─► pooled = h[:, 0] (B, D); tokens = h[:, 1:] (B, sum N_m, D)

The design source passed a 1 = valid mask as ``key_padding_mask`` (True = ignore), so it attended only to
padding; here the mask is True = keep throughout.
"""

from __future__ import annotations

import torch
from torch import nn

from mmvla.modules.attention import TransformerBlock
from mmvla.modules.fusion.base import Fusion, FusionConfig, FusionOutput, ModalityTokens
from mmvla.modules.fusion.registry import register_fusion


@register_fusion("transformer")
class TransformerFusion(Fusion):
    """Joint self-attention over all modalities with position and modality-type embeddings.

    Outputs: ``tokens`` (B, sum N_m, D) in sorted modality order with their masks; ``pooled`` (B, D) is
    the CLS token. Each modality may have at most ``cfg.max_tokens`` tokens.
    """

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__(cfg)
        D, M = cfg.dim, len(cfg.modalities)
        self.pos = nn.ParameterDict({m: nn.Parameter(torch.zeros(cfg.max_tokens, D)) for m in cfg.modalities})
        self.type_embed = nn.Parameter(torch.zeros(M, D))  # one row per modality, sorted order
        self.cls = nn.Parameter(torch.zeros(1, 1, D))
        for p in [*self.pos.values(), self.type_embed, self.cls]:
            nn.init.normal_(p, std=0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(D, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout)
            for _ in range(cfg.num_layers)
        )
        self.ln_f = nn.LayerNorm(D)

    def forward(self, x: ModalityTokens) -> FusionOutput:
        """ModalityTokens -> FusionOutput (see class docstring)."""
        self.check_inputs(x)
        parts, masks = [], []
        for i, m in enumerate(self.cfg.modalities):
            t = x.tokens[m]  # (B, N_m, D)
            if t.shape[1] > self.cfg.max_tokens:
                raise ValueError(
                    f"modality {m!r}: {t.shape[1]} tokens > FusionConfig.max_tokens={self.cfg.max_tokens}"
                )
            parts.append(t + self.pos[m][: t.shape[1]] + self.type_embed[i])  # (B, N_m, D)
            masks.append(x.mask(m))
        B = parts[0].shape[0]
        h = torch.cat([self.cls.expand(B, -1, -1), *parts], dim=1)  # (B, 1 + N, D)
        keep = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=h.device), *masks], dim=1)  # (B, 1 + N)
        for block in self.blocks:
            h = block(h, key_mask=keep)
        h = self.ln_f(h)
        return FusionOutput(tokens=h[:, 1:], mask=keep[:, 1:], pooled=h[:, 0], aux_loss=h.new_zeros(()))
