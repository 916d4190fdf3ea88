"""Cross-modal attention: vision attends to language and language to vision, residual + LayerNorm each side.

The design source's ``CrossModalAttention`` with padding masks honoured and stacked ``num_layers`` times::

    vision (B, Nv, D) ──► v' = LN_v(v + Attn_v(q=v, kv=l, key_mask=l_mask)) ─► v'' = LN(v' + MLP(v'))
    language (B, Nl, D) ► l' = LN_l(l + Attn_l(q=l, kv=v, key_mask=v_mask)) ─► l'' = LN(l' + MLP(l'))
    (both sides read the layer's *inputs*, as in the source)        × num_layers
    proprio (B, 1, D) ──► LN ──────────────────────────────────────────────────── appended as a token
    all tokens (B, Nl + 1 + Nv, D) ─► learned-query attention pool ─► pooled (B, D)

In general every attending modality (all but ``proprio``) attends to the concatenated tokens of the other
attending modalities; a lone attending modality attends to itself.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mmvla.modules.attention import MLP, AttentionPool, MultiHeadAttention
from mmvla.modules.fusion.base import Fusion, FusionConfig, FusionOutput, ModalityTokens
from mmvla.modules.fusion.registry import register_fusion

APPENDED = ("proprio",)  # modalities that are appended as tokens rather than attending


def _cat(xs: list[Tensor]) -> Tensor:
    """Concatenate along the token axis without copying a lone tensor."""
    return xs[0] if len(xs) == 1 else torch.cat(xs, dim=1)


class CrossModalLayer(nn.Module):
    """One bidirectional cross-attention layer (post-norm, as the design source), optional feed-forward.

    Args:
        names: attending modality names (sorted).
        dim, num_heads, dropout: attention sizes.
        hidden: feed-forward width; 0 disables the feed-forward sub-layer (the design source has none).
    """

    def __init__(
        self, names: tuple[str, ...], dim: int, num_heads: int, *, hidden: int = 0, dropout: float = 0.0
    ):
        super().__init__()
        self.names = names
        self.attn = nn.ModuleDict({m: MultiHeadAttention(dim, num_heads, dropout=dropout) for m in names})
        self.ln = nn.ModuleDict({m: nn.LayerNorm(dim) for m in names})
        self.mlp = nn.ModuleDict({m: MLP(dim, hidden, dropout=dropout) for m in names}) if hidden else None
        self.ln_mlp = nn.ModuleDict({m: nn.LayerNorm(dim) for m in names}) if hidden else None

    def forward(self, tokens: dict[str, Tensor], masks: dict[str, Tensor]) -> dict[str, Tensor]:
        """name -> (B, N_m, D) tokens and (B, N_m) keep-masks (a missing mask = all valid) -> name -> (B, N_m, D)."""
        out = {}
        for m in self.names:
            others = [o for o in self.names if o != m] or [m]
            ctx = _cat([tokens[o] for o in others])  # (B, N_ctx, D)
            ctx_mask = None
            if any(o in masks for o in others):
                keep = [
                    masks[o] if o in masks else tokens[o].new_ones(tokens[o].shape[:2], dtype=torch.bool)
                    for o in others
                ]
                ctx_mask = _cat(keep)  # (B, N_ctx)
            h = self.ln[m](tokens[m] + self.attn[m](tokens[m], ctx, key_mask=ctx_mask))  # (B, N_m, D)
            if self.mlp is not None and self.ln_mlp is not None:
                h = self.ln_mlp[m](h + self.mlp[m](h))
            out[m] = h
        return out


@register_fusion("cross_attention")
class CrossAttentionFusion(Fusion):
    """Stacked bidirectional cross-attention; see the module docstring for the diagram.

    Outputs: ``tokens`` (B, sum N_m, D) in sorted modality order with their masks; ``pooled`` (B, D) from a
    learned query over the valid tokens.
    """

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__(cfg)
        D = cfg.dim
        self.attending = tuple(m for m in cfg.modalities if m not in APPENDED)
        self.layers = nn.ModuleList(
            CrossModalLayer(self.attending, D, cfg.num_heads, hidden=cfg.hidden, dropout=cfg.dropout)
            for _ in range(cfg.num_layers if self.attending else 0)
        )
        self.ln_appended = nn.ModuleDict({m: nn.LayerNorm(D) for m in cfg.modalities if m in APPENDED})
        self.pool = AttentionPool(D, cfg.num_heads, dropout=cfg.dropout)

    def forward(self, x: ModalityTokens) -> FusionOutput:
        """ModalityTokens -> FusionOutput (see class docstring)."""
        self.check_inputs(x)
        masks = {m: x.mask(m) for m in self.cfg.modalities}
        h = {m: x.tokens[m] for m in self.attending}
        for layer in self.layers:
            h = layer(h, masks)
        h.update({m: ln(x.tokens[m]) for m, ln in self.ln_appended.items()})
        tokens = torch.cat([h[m] for m in self.cfg.modalities], dim=1)  # (B, N, D)
        mask = torch.cat([masks[m] for m in self.cfg.modalities], dim=1)  # (B, N)
        pooled = self.pool(tokens, mask)  # (B, D)
        return FusionOutput(tokens=tokens, mask=mask, pooled=pooled, aux_loss=pooled.new_zeros(()))
