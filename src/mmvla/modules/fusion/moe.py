"""Mixture of modality experts: tokens of every modality share attention, then a routed expert MLP.

::

    h = concat_m(tokens_m + type_m)                                 (B, N, D), N = sum N_m
    for each of num_layers:
        h = h + Attn(LN(h), key_mask)                               modalities exchange information
        probs = softmax(Router(LN(h)))                              (B, N, E)
        each valid token -> its top_k experts, gates renormalised   (raw prob when top_k = 1, Switch)
        h = h + sum_k gate_k · Expert_k(LN(h))
        aux += balance_weight · E · sum_i f_i · P_i                 Switch-Transformer load balancing
    tokens = LN(h); pooled = masked mean (B, D); info["router_probs"] (B, num_layers, N, E)

f_i is the fraction of routing assignments that go to expert i, P_i the mean router probability of
expert i, both over valid tokens. The loss is 1 for uniform probabilities and up to E when collapsed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmvla.modules.attention import MLP, MultiHeadAttention, masked_mean
from mmvla.modules.fusion.base import Fusion, FusionConfig, FusionOutput, ModalityTokens
from mmvla.modules.fusion.registry import register_fusion


def load_balancing_loss(probs: Tensor, top_k: int) -> Tensor:
    """Switch-Transformer balancing loss ``E · sum_i f_i · P_i`` (minimum 1 for uniform routing).

    Args:
        probs: (T, E) router probabilities of the T valid tokens.
        top_k: experts per token; f_i counts all top_k assignments (so sum_i f_i = 1).
    """
    T, E = probs.shape
    if T == 0:
        return probs.sum()  # 0, keeps the graph
    assigned = F.one_hot(probs.topk(top_k, dim=-1).indices, E).sum(dim=1)  # (T, E) 0/1
    f = assigned.to(probs.dtype).mean(dim=0) / top_k  # (E,) fraction of assignments, no gradient
    P = probs.mean(dim=0)  # (E,)
    return E * (f * P).sum()


class MoEFeedForward(nn.Module):
    """Top-k routed expert MLPs over a flat set of tokens: (T, D) -> (T, D), router probs (T, E)."""

    def __init__(self, dim: int, hidden: int, num_experts: int, top_k: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.top_k = top_k
        self.router = nn.Linear(dim, num_experts)
        self.experts = nn.ModuleList(MLP(dim, hidden, dropout=dropout) for _ in range(num_experts))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(T, D) -> (T, D) mixture output and (T, E) router probabilities."""
        probs = self.router(x).softmax(dim=-1)  # (T, E)
        gates, idx = probs.topk(self.top_k, dim=-1)  # (T, k), (T, k)
        if self.top_k > 1:
            gates = gates / gates.sum(dim=-1, keepdim=True)
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = (idx == e).nonzero(as_tuple=True)  # tokens routed to expert e
            if tok.numel():
                y = y.index_add(0, tok, gates[tok, slot, None] * expert(x[tok]))
        return y, probs


@register_fusion("moe")
class MoEFusion(Fusion):
    """Joint attention plus routed modality experts; see the module docstring."""

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__(cfg)
        D, L = cfg.dim, cfg.num_layers
        self.type_embed = nn.Parameter(torch.randn(len(cfg.modalities), D) * 0.02)
        self.ln_attn = nn.ModuleList(nn.LayerNorm(D) for _ in range(L))
        self.attn = nn.ModuleList(MultiHeadAttention(D, cfg.num_heads, dropout=cfg.dropout) for _ in range(L))
        self.ln_moe = nn.ModuleList(nn.LayerNorm(D) for _ in range(L))
        self.moe = nn.ModuleList(
            MoEFeedForward(D, cfg.hidden, cfg.num_experts, cfg.top_k, dropout=cfg.dropout) for _ in range(L)
        )
        self.ln_f = nn.LayerNorm(D)

    def forward(self, x: ModalityTokens) -> FusionOutput:
        """ModalityTokens -> FusionOutput with ``aux_loss`` (balancing) and ``info["router_probs"]``."""
        self.check_inputs(x)
        names = self.cfg.modalities
        h = torch.cat([x.tokens[m] + self.type_embed[i] for i, m in enumerate(names)], dim=1)  # (B, N, D)
        keep = torch.cat([x.mask(m) for m in names], dim=1)  # (B, N)
        B, N = keep.shape
        aux = h.new_zeros(())
        all_probs = h.new_zeros(B, len(self.moe), N, self.cfg.num_experts)  # (B, L, N, E), 0 on padding
        for i in range(len(self.moe)):
            h = h + self.attn[i](self.ln_attn[i](h), key_mask=keep)  # (B, N, D)
            y, probs = self.moe[i](self.ln_moe[i](h)[keep])  # only valid tokens are routed: (T, D), (T, E)
            delta = torch.zeros_like(h)
            delta[keep] = y  # padded tokens pass through unchanged
            h = h + delta  # (B, N, D)
            all_probs[:, i][keep] = probs.detach()
            aux = aux + load_balancing_loss(probs, self.cfg.top_k)
        h = self.ln_f(h)
        aux = self.cfg.balance_weight * aux / len(self.moe)
        return FusionOutput(
            tokens=h, mask=keep, pooled=masked_mean(h, keep), aux_loss=aux, info={"router_probs": all_probs}
        )
