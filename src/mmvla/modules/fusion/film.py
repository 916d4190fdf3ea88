"""FiLM fusion (RT-1 style): the other modalities modulate the vision tokens, starting as identity.

::

    cond = concat(masked mean of each non-vision modality)                 (B, C·D)
    h = vision tokens                                                       (B, Nv, D)
    for each of num_layers:  h = h + MLP(LN(h))                             residual block
                             γ, β = Linear_l(cond)  (zero-initialised)      (B, D) each
                             h = h * (1 + γ) + β                            FiLM, identity at init
    tokens = [h, LN(proprio)] ─► learned-query attention pool ─► pooled (B, D)

With zero-initialised γ/β generators every FiLM layer returns its input at initialisation, so training
starts from the unconditioned vision network (RT-1 inserts FiLM into a pretrained EfficientNet this way).
Needs ``"vision"`` among the modalities; with vision alone there is nothing to condition on and the
blocks are plain residual MLPs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmvla.modules.attention import MLP, AttentionPool, masked_mean
from mmvla.modules.fusion.base import Fusion, FusionConfig, FusionOutput, ModalityTokens
from mmvla.modules.fusion.registry import register_fusion


class FiLM(nn.Module):
    """``h * (1 + γ) + β`` with γ, β = Linear(cond); zero-initialised so it starts as the identity."""

    def __init__(self, cond_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: Tensor, cond: Tensor) -> Tensor:
        """(B, N, D), (B, C) -> (B, N, D)."""
        gamma, beta = self.proj(cond)[:, None].chunk(2, dim=-1)  # 2 x (B, 1, D)
        return h * (1 + gamma) + beta


@register_fusion("film")
class FiLMFusion(Fusion):
    """Vision tokens through residual MLP blocks, each followed by a FiLM layer conditioned on the rest.

    Outputs: ``tokens`` (B, Nv [+ 1], D): modulated vision tokens then the proprio token if present (the
    language enters only through γ/β); ``pooled`` (B, D) from a learned query over them.
    """

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__(cfg)
        if "vision" not in cfg.modalities:
            raise ValueError(f"film fusion modulates 'vision' tokens; modalities are {cfg.modalities}")
        D = cfg.dim
        self.cond_names = tuple(m for m in cfg.modalities if m != "vision")
        self.lns = nn.ModuleList(nn.LayerNorm(D) for _ in range(cfg.num_layers))
        self.mlps = nn.ModuleList(MLP(D, cfg.hidden, dropout=cfg.dropout) for _ in range(cfg.num_layers))
        cond_dim = len(self.cond_names) * D
        self.films = nn.ModuleList(FiLM(cond_dim, D) for _ in range(cfg.num_layers if cond_dim else 0))
        self.ln_proprio = nn.LayerNorm(D) if "proprio" in cfg.modalities else None
        self.pool = AttentionPool(D, cfg.num_heads, dropout=cfg.dropout)

    def forward(self, x: ModalityTokens) -> FusionOutput:
        """ModalityTokens -> FusionOutput (see class docstring)."""
        self.check_inputs(x)
        h, mask = x.tokens["vision"], x.mask("vision")  # (B, Nv, D), (B, Nv)
        cond = (
            torch.cat([masked_mean(x.tokens[m], x.mask(m)) for m in self.cond_names], dim=-1)  # (B, C·D)
            if self.cond_names
            else None
        )
        for i, (ln, mlp) in enumerate(zip(self.lns, self.mlps, strict=True)):
            h = h + mlp(ln(h))  # (B, Nv, D)
            if cond is not None:
                h = self.films[i](h, cond)  # (B, Nv, D)
        if self.ln_proprio is not None:
            h = torch.cat([h, self.ln_proprio(x.tokens["proprio"])], dim=1)  # (B, Nv + 1, D)
            mask = torch.cat([mask, x.mask("proprio")], dim=1)
        pooled = self.pool(h, mask)  # (B, D)
        return FusionOutput(tokens=h, mask=mask, pooled=pooled, aux_loss=pooled.new_zeros(()))
