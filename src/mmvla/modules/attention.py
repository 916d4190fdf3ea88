"""Multi-head attention on ``F.scaled_dot_product_attention``, plus the small blocks fusions reuse.

One mask convention: bool, **True = keep** (attend to / valid token). Masks come in two forms and may be
combined: a key mask ``(B, Nk)`` (padding) and a full mask ``(B, Nq, Nk)`` (or ``(Nq, Nk)``, e.g. causal).
A query row whose keys are all masked attends to nothing: its attention result is zeros (and its weights
are all zero), never NaN. SDPA itself returns NaN on such rows, so they are unmasked for the kernel and
zeroed afterwards. Cross-attention with one short side (20 words vs 196 patches) may instead fold the
projections onto the short side: same result, far fewer multiply-adds (see ``MultiHeadAttention``).

File order (nanoGPT): mask helpers, attention, MLP, transformer block, pooling.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmvla.modules.folded_attention import FoldKeysAttention, FoldQueriesAttention


def combine_masks(
    batch: int, nq: int, nk: int, key_mask: Tensor | None = None, attn_mask: Tensor | None = None
) -> Tensor | None:
    """Merge a key mask and a full mask into one ``(B, 1, Nq|1, Nk)`` keep-mask (None if both are None).

    Args:
        batch, nq, nk: batch size, query and key lengths.
        key_mask: (B, Nk) bool, True = keep.
        attn_mask: (B, Nq, Nk) or (Nq, Nk) bool, True = keep.
    """
    keep: Tensor | None = None
    if key_mask is not None:
        if key_mask.dtype != torch.bool or tuple(key_mask.shape) != (batch, nk):
            raise ValueError(
                f"key_mask must be bool ({batch}, {nk}), got {key_mask.dtype} {tuple(key_mask.shape)}"
            )
        keep = key_mask[:, None, None, :]  # (B, 1, 1, Nk)
    if attn_mask is not None:
        if (
            attn_mask.dtype != torch.bool
            or tuple(attn_mask.shape[-2:]) != (nq, nk)
            or attn_mask.dim() not in (2, 3)
        ):
            raise ValueError(
                f"attn_mask must be bool (B, {nq}, {nk}) or ({nq}, {nk}), got {attn_mask.dtype} {tuple(attn_mask.shape)}"
            )
        full = attn_mask.reshape(-1, 1, nq, nk)  # (B|1, 1, Nq, Nk)
        keep = full if keep is None else keep & full
    return keep


def _guard_empty_rows(keep: Tensor) -> tuple[Tensor, Tensor]:
    """Return (safe keep-mask with fully masked rows unmasked, (B, 1, Nq|1, 1) bool: row has a kept key)."""
    row_ok = keep.any(dim=-1, keepdim=True)  # (B, 1, Nq|1, 1)
    return keep | ~row_ok, row_ok


def _masked_softmax(scores: Tensor, keep: Tensor | None) -> Tensor:
    """Softmax over the last axis with a broadcastable keep-mask; fully masked rows give all-zero weights."""
    if keep is None:
        return scores.softmax(dim=-1)
    safe, row_ok = _guard_empty_rows(keep)
    return scores.masked_fill(~safe, float("-inf")).softmax(dim=-1) * row_ok


IMPLS = ("auto", "sdpa", "fold_keys", "fold_queries")


class AttentionOutput(NamedTuple):
    """Output of :meth:`MultiHeadAttention.forward_with_weights`.

    Attributes:
        out: (B, Nq, D) attention output after the output projection.
        weights: (B, H, Nq, Nk) softmax weights; 0 on masked keys, all 0 on fully masked rows.
    """

    out: Tensor
    weights: Tensor


class MultiHeadAttention(nn.Module):
    """Multi-head self- or cross-attention.

    ``forward(x)`` is self-attention (one fused QKV projection); ``forward(x, context)`` is
    cross-attention (queries from ``x``, keys/values from ``context`` with one fused KV projection).
    The packed ``in_proj_weight`` (3D, D) has the same layout as ``nn.MultiheadAttention``'s, so weights
    copy over one to one.

    ``forward`` is the fast path; ``forward_with_weights`` computes the softmax explicitly and also returns
    the per-head weights, for heatmaps. All paths give the same output (up to float rounding).

    Fast-path implementations (``impl``), all exact re-associations of the same product:

    - ``"sdpa"``: project q, k, v, then ``F.scaled_dot_product_attention``.
    - ``"fold_keys"`` (few keys, e.g. 196 patches attending to 20 words): per head, fold W_q into the
      keys (k_h W_q,h: Nk x D) and W_o into the values (v_h W_o,h^T: Nk x D), so the long side is never
      projected: scores = x @ folded keys, out = softmax @ folded values. Costs 4·Nk·D² + 2·Nq·Nk·H·D
      multiply-adds instead of 2·(Nq + Nk)·D² + 2·Nq·Nk·D.
    - ``"fold_queries"`` (few queries, e.g. 20 words attending to 196 patches): fold W_k into the queries
      and apply W_v after the weighted sum of the raw context (the key bias cancels in the softmax).
      Costs 4·Nq·D² + 2·Nq·Nk·H·D.
    - ``"auto"`` (default): SDPA for self-attention; for cross-attention the cheapest of the three by the
      counts above, a fold only when it saves at least 25 %. Chosen from shapes alone.

    Without attention dropout or autocast, a fold with a key-only mask runs as one autograd Function with
    a hand-written backward (:mod:`mmvla.modules.folded_attention`); the autograd code below covers the rest.

    Recording (vit-pytorch's ``recorder.py`` idea, used by :mod:`mmvla.reporting.figures`): while ``recorder`` is a list,
    ``forward`` takes the slow path and appends each call's detached (B, H, Nq, Nk) weights to it. The
    output is the slow path's, equal to the fast path's up to float rounding. ``None`` (the default) leaves
    ``forward`` untouched.
    """

    def __init__(
        self, dim: int, num_heads: int, *, dropout: float = 0.0, bias: bool = True, impl: str = "auto"
    ) -> None:
        super().__init__()
        if dim <= 0 or num_heads <= 0 or dim % num_heads:
            raise ValueError(
                f"MultiHeadAttention: dim={dim} must be positive and divisible by num_heads={num_heads}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MultiHeadAttention: dropout must be in [0, 1), got {dropout}")
        if impl not in IMPLS:
            raise ValueError(f"MultiHeadAttention: impl must be one of {IMPLS}, got {impl!r}")
        self.dim, self.num_heads, self.head_dim, self.dropout = dim, num_heads, dim // num_heads, dropout
        self.impl = impl
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))  # rows: q, k, v
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim)) if bias else None
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)
        self.recorder: list[Tensor] | None = None  # a list: forward records its weights (see class doc)

    def choose_impl(self, nq: int, nk: int, cross: bool) -> str:
        """The fast-path implementation ``forward`` uses for Nq queries and Nk keys (see class docstring)."""
        if self.impl != "auto":
            return self.impl
        if not cross:
            return "sdpa"
        D, H = self.dim, self.num_heads
        cost = {
            "sdpa": 2 * (nq + nk) * D * D + 2 * nq * nk * D,
            "fold_keys": 4 * nk * D * D + 2 * nq * nk * H * D,
            "fold_queries": 4 * nq * D * D + 2 * nq * nk * H * D,
        }
        best = min(cost, key=cost.__getitem__)
        return best if cost[best] * 1.25 <= cost["sdpa"] else "sdpa"

    def _project(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(B, Nq, D), (B, Nk, D) -> q (B, H, Nq, hd), k and v (B, H, Nk, hd)."""
        w, b, d = self.in_proj_weight, self.in_proj_bias, self.dim
        if context is None:
            q, k, v = F.linear(x, w, b).chunk(3, dim=-1)  # 3 x (B, Nq, D), one GEMM
        else:
            wq, wkv = w.split([d, 2 * d])  # one split: one gradient write
            bq, bkv = (None, None) if b is None else b.split([d, 2 * d])
            q = F.linear(x, wq, bq)  # (B, Nq, D)
            k, v = F.linear(context, wkv, bkv).chunk(2, dim=-1)  # 2 x (B, Nk, D)
        B, H, hd = x.shape[0], self.num_heads, self.head_dim
        q = q.reshape(B, -1, H, hd).transpose(1, 2)  # (B, H, Nq, hd)
        k = k.reshape(B, -1, H, hd).transpose(1, 2)  # (B, H, Nk, hd)
        v = v.reshape(B, -1, H, hd).transpose(1, 2)  # (B, H, Nk, hd)
        return q, k, v

    def _merge(self, y: Tensor) -> Tensor:
        """(B, H, Nq, hd) -> (B, Nq, D) through the output projection."""
        B, _, Nq, _ = y.shape
        return self.out_proj(y.transpose(1, 2).reshape(B, Nq, self.dim))

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """Fast path: SDPA, or a folded projection for skewed cross-attention (see :meth:`choose_impl`).

        Args:
            x: (B, Nq, D) queries (and keys/values when ``context`` is None).
            context: (B, Nk, D) keys/values for cross-attention, or None for self-attention.
            key_mask: (B, Nk) bool, True = keep.
            attn_mask: (B, Nq, Nk) or (Nq, Nk) bool, True = keep.

        Returns:
            (B, Nq, D). A fully masked query row gets a zero attention result (so ``out_proj.bias``).
        """
        if self.recorder is not None:  # heatmaps: the slow path, weights kept (no change to the math)
            res = self.forward_with_weights(x, context, key_mask=key_mask, attn_mask=attn_mask)
            self.recorder.append(res.weights.detach())
            return res.out
        ctx = x if context is None else context
        keep = combine_masks(x.shape[0], x.shape[1], ctx.shape[1], key_mask, attn_mask)  # (B|1, 1, Nq|1, Nk)
        impl = self.choose_impl(x.shape[1], ctx.shape[1], context is not None)
        if impl == "fold_keys":
            return self._fold_keys(x, ctx, keep)
        if impl == "fold_queries":
            return self._fold_queries(x, ctx, keep)
        q, k, v = self._project(x, context)
        p = self.dropout if self.training else 0.0
        if keep is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, H, Nq, hd)
        else:
            safe, row_ok = _guard_empty_rows(keep)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=safe, dropout_p=p)  # (B, H, Nq, hd)
            y = y * row_ok  # zero the rows that had no key to attend to
        return self._merge(y)

    def _drop(self, a: Tensor) -> Tensor:
        """Attention dropout on explicit weights (training only)."""
        return F.dropout(a, self.dropout, training=True) if self.training and self.dropout > 0 else a

    # Per-head products with a weight use einsum so the head is the batch of one GEMM (M = B·N); a
    # broadcast ``(B, H, N, hd) @ (H, hd, D)`` would copy the weight B times.
    #
    # Few operators matter as much as few multiply-adds here: at batch 1 a training step is dominated by
    # per-operator overhead (forward and backward), so the scale, the query/value biases and a key-only
    # padding mask are folded into the GEMMs' additive inputs (``baddbmm``) instead of separate
    # element-wise passes over the scores.
    def _hand_backward(self, x: Tensor) -> bool:
        """Whether a fold runs as one autograd Function (:mod:`mmvla.modules.folded_attention`): only when
        a backward can follow (without one, the plain ops are leaner), with no attention dropout in
        effect and no autocast (its per-op casts are autograd's job)."""
        return (
            torch.is_grad_enabled()
            and not (self.training and self.dropout > 0)
            and not torch.is_autocast_enabled(x.device.type)
        )

    def _key_bias(
        self, keep: Tensor | None, B: int, Nk: int, like: Tensor
    ) -> tuple[Tensor | None, Tensor | None]:
        """A key-only keep-mask (B|1, 1, 1, Nk) as an additive (B, 1, Nk) score bias (0 keep, -inf drop) and a
        (B, 1, 1) float row factor (0 for a batch row without any kept key, whose attention result is zero).

        Returns (None, None) without a mask. Fully masked rows are unmasked in the bias (no NaN) and zeroed
        through the row factor."""
        if keep is None:
            return None, None
        k2 = keep.reshape(keep.shape[0], Nk)  # (B|1, Nk)
        row_ok = k2.any(dim=-1, keepdim=True)  # (B|1, 1)
        safe = k2 | ~row_ok
        bias = torch.zeros(safe.shape, dtype=like.dtype, device=like.device).masked_fill_(
            ~safe, float("-inf")
        )
        return bias.expand(B, Nk).unsqueeze(1), row_ok.to(like.dtype).expand(B, 1).unsqueeze(-1)

    def _fold_keys(self, x: Tensor, ctx: Tensor, keep: Tensor | None) -> Tensor:
        """Few keys: W_q folded into the keys, W_o into the values. (B, Nq, D), (B, Nk, D) -> (B, Nq, D)."""
        B, Nq, D = x.shape
        Nk, H, hd = ctx.shape[1], self.num_heads, self.head_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        if keep is not None and keep.shape[2] != 1:  # a per-query mask: the general masked softmax
            return self._fold_keys_general(x, ctx, keep)
        if self._hand_backward(x):
            key_bias, row_ok = self._key_bias(keep, B, Nk, x)
            out: Tensor = FoldKeysAttention.apply(
                x, ctx, w, b, self.out_proj.weight, self.out_proj.bias, key_bias, row_ok, H
            )
            return out
        scale = hd**-0.5
        # One split per parameter: its backward writes the gradient once (a slice per use would zero-fill,
        # copy and accumulate a full (3D, D) gradient each time: a fifth of a batch-1 step).
        wq, wkv = w.split([D, 2 * D])
        bq, bkv = (None, None) if b is None else b.split([D, 2 * D])
        kv = F.linear(ctx, wkv, bkv)  # (B, Nk, 2D)
        k, v = kv[..., :D].reshape(B, Nk, H, hd), kv[..., D:].reshape(B, Nk, H, hd)  # (B, Nk, H, hd)
        kq = torch.einsum("bnhd,hde->bhne", k, wq.view(H, hd, D))  # (B, H, Nk, D): k_h W_q,h
        # Additive score input (B, 1, H·Nk): scale · b_q,h·k_h per key, and -inf on dropped keys.
        add: Tensor | float = 0.0
        if bq is not None:
            add = torch.einsum("bnhd,hd->bhn", k, bq.view(H, hd)).reshape(B, 1, H * Nk) * scale
        key_bias, row_ok = self._key_bias(keep, B, Nk, x)
        if key_bias is not None:
            add = add + key_bias.unsqueeze(2).expand(B, 1, H, Nk).reshape(B, 1, H * Nk)
        kqt = kq.reshape(B, H * Nk, D).transpose(1, 2)  # (B, D, H·Nk)
        s = (  # (B, Nq, H·Nk)
            torch.baddbmm(add, x, kqt, alpha=scale) if isinstance(add, Tensor) else torch.bmm(x, kqt) * scale
        )
        a = self._drop(s.view(B, Nq, H, Nk).softmax(dim=-1))  # (B, Nq, H, Nk)
        if row_ok is not None:
            v = v * row_ok.unsqueeze(-1)  # a batch row without keys attends to nothing
        vo = torch.einsum("bnhd,ehd->bhne", v, self.out_proj.weight.view(D, H, hd))  # (B, H, Nk, D)
        a2, vo2 = a.reshape(B, Nq, H * Nk), vo.reshape(B, H * Nk, D)
        if self.out_proj.bias is None:
            return torch.bmm(a2, vo2)  # (B, Nq, D)
        return torch.baddbmm(self.out_proj.bias, a2, vo2)  # (B, Nq, D)

    def _fold_keys_general(self, x: Tensor, ctx: Tensor, keep: Tensor) -> Tensor:
        """:meth:`_fold_keys` with a per-query keep-mask (B|1, 1, Nq, Nk)."""
        B, Nq, D = x.shape
        Nk, H, hd = ctx.shape[1], self.num_heads, self.head_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        k, v = F.linear(ctx, w[D:], None if b is None else b[D:]).chunk(2, dim=-1)  # 2 x (B, Nk, D)
        k, v = k.reshape(B, Nk, H, hd), v.reshape(B, Nk, H, hd)  # (B, Nk, H, hd)
        kq = torch.einsum("bnhd,hde->bhne", k, w[:D].view(H, hd, D)) * hd**-0.5  # (B, H, Nk, D): k_h W_q,h
        s = (x @ kq.reshape(B, H * Nk, D).transpose(1, 2)).view(B, Nq, H, Nk)  # (B, Nq, H, Nk): q_h·k_h
        if b is not None:  # the query bias adds b_q,h·k_h per key
            s = s + torch.einsum("bnhd,hd->bhn", k, b[:D].view(H, hd))[:, None] * hd**-0.5  # + (B, 1, H, Nk)
        a = self._drop(_masked_softmax(s, keep.transpose(1, 2)))  # (B, Nq, H, Nk)
        wo = self.out_proj.weight.view(D, H, hd)  # (D_out, H, hd)
        vo = torch.einsum("bnhd,ehd->bhne", v, wo)  # (B, H, Nk, D): v_h W_o,h^T
        out = a.reshape(B, Nq, H * Nk) @ vo.reshape(B, H * Nk, D)  # (B, Nq, D)
        return out if self.out_proj.bias is None else out + self.out_proj.bias

    def _fold_queries(self, x: Tensor, ctx: Tensor, keep: Tensor | None) -> Tensor:
        """Few queries: W_k folded into the queries, W_v after the weighted sum. (B, Nq, D), (B, Nk, D) -> (B, Nq, D)."""
        B, Nq, D = x.shape
        Nk, H, hd = ctx.shape[1], self.num_heads, self.head_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        if keep is not None and keep.shape[2] != 1:  # a per-query mask: the general masked softmax
            return self._fold_queries_general(x, ctx, keep)
        if self._hand_backward(x):
            key_bias, row_ok = self._key_bias(keep, B, Nk, x)
            out: Tensor = FoldQueriesAttention.apply(
                x, ctx, w, b, self.out_proj.weight, self.out_proj.bias, key_bias, row_ok, H
            )
            return out
        wq, wk, wv = w.split(D)  # one split: one gradient write (see _fold_keys)
        bq, _, bv = (None, None, None) if b is None else b.split(D)
        q = F.linear(x, wq, bq).reshape(B, Nq, H, hd)  # (B, Nq, H, hd)
        qk = torch.einsum("bqhd,hde->bhqe", q, wk.view(H, hd, D))  # (B, H, Nq, D)
        key_bias, row_ok = self._key_bias(keep, B, Nk, x)  # (B, 1, Nk), (B, 1, 1)
        qk2, ctx_t = qk.reshape(B, H * Nq, D), ctx.transpose(1, 2)
        if key_bias is None:
            s = torch.bmm(qk2, ctx_t) * hd**-0.5  # (B, H·Nq, Nk)
        else:
            s = torch.baddbmm(key_bias, qk2, ctx_t, alpha=hd**-0.5)  # (B, H·Nq, Nk)
        a = self._drop(s.softmax(dim=-1))  # (B, H·Nq, Nk); the key bias cancels in the softmax
        if row_ok is not None:
            a = a * row_ok  # a batch row without keys attends to nothing
        z = torch.bmm(a, ctx).view(B, H, Nq, D)  # (B, H, Nq, D): weighted sum of raw context
        y = torch.einsum("bhqe,hde->bqhd", z, wv.view(H, hd, D))  # (B, Nq, H, hd): then W_v,h
        if bv is not None:  # value bias, weighted by the row's total weight (1, or 0 for a row without keys)
            bvh = bv.view(H, hd)
            if self.training and self.dropout > 0:  # dropped weights no longer sum to 1
                y = y + a.view(B, H, Nq, Nk).sum(dim=-1).transpose(1, 2)[..., None] * bvh
            else:
                y = y + (bvh if row_ok is None else row_ok.unsqueeze(-1) * bvh)
        return self.out_proj(y.reshape(B, Nq, D))

    def _fold_queries_general(self, x: Tensor, ctx: Tensor, keep: Tensor) -> Tensor:
        """:meth:`_fold_queries` with a per-query keep-mask (B|1, 1, Nq, Nk)."""
        B, Nq, D = x.shape
        Nk, H, hd = ctx.shape[1], self.num_heads, self.head_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        q = F.linear(x, w[:D], None if b is None else b[:D]).reshape(B, Nq, H, hd)  # (B, Nq, H, hd)
        qk = torch.einsum("bqhd,hde->bhqe", q, w[D : 2 * D].view(H, hd, D)) * hd**-0.5  # (B, H, Nq, D)
        s = (qk.reshape(B, H * Nq, D) @ ctx.transpose(1, 2)).view(B, H, Nq, Nk)  # (B, H, Nq, Nk)
        a = self._drop(_masked_softmax(s, keep))  # (B, H, Nq, Nk); the key bias cancels in the softmax
        z = (a.reshape(B, H * Nq, Nk) @ ctx).view(B, H, Nq, D)  # (B, H, Nq, D): weighted sum of raw context
        y = torch.einsum("bhqe,hde->bqhd", z, w[2 * D :].view(H, hd, D))  # (B, Nq, H, hd): then W_v,h
        if b is not None:  # value bias, weighted by the row's total weight (0 for a fully masked row)
            y = y + a.sum(dim=-1).transpose(1, 2)[..., None] * b[2 * D :].view(H, hd)
        return self.out_proj(y.reshape(B, Nq, D))

    def forward_with_weights(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> AttentionOutput:
        """Slow path: explicit softmax; same arguments and output as :meth:`forward`, plus (B, H, Nq, Nk) weights."""
        q, k, v = self._project(x, context)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))  # (B, H, Nq, Nk)
        keep = combine_masks(x.shape[0], q.shape[2], k.shape[2], key_mask, attn_mask)
        weights = _masked_softmax(att, keep)  # (B, H, Nq, Nk)
        y = self._drop(weights) @ v  # (B, H, Nq, hd)
        return AttentionOutput(self._merge(y), weights)


class MLP(nn.Module):
    """Linear -> GELU -> dropout -> Linear: (..., D) -> (..., D_out)."""

    def __init__(self, dim: int, hidden: int, out: int | None = None, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim if out is None else out)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(..., D) -> (..., D_out)."""
        return self.fc2(self.drop(F.gelu(self.fc1(x))))


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + Attn(LN(x) [, context])`` then ``x + MLP(LN(x))``.

    Self-attention by default; pass ``context`` to ``forward`` for cross-attention (context is used as is,
    normalise it beforehand if needed).
    """

    def __init__(self, dim: int, num_heads: int, *, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, dropout=dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, max(1, int(dim * mlp_ratio)), dropout=dropout)
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        key_mask: Tensor | None = None,
        attn_mask: Tensor | None = None,
    ) -> Tensor:
        """(B, N, D) -> (B, N, D); masks as in :meth:`MultiHeadAttention.forward` (True = keep)."""
        x = x + self.drop(self.attn(self.ln1(x), context, key_mask=key_mask, attn_mask=attn_mask))
        return x + self.drop(self.mlp(self.ln2(x)))


def masked_mean(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over valid tokens: (B, N, D), (B, N) bool True = keep -> (B, D); zeros for a fully masked row."""
    if mask is None:
        return x.mean(dim=1)
    w = mask.to(x.dtype).unsqueeze(-1)  # (B, N, 1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)


class AttentionPool(nn.Module):
    """A learned query attends over the valid tokens: (B, N, D), (B, N) mask -> (B, D)."""

    def __init__(self, dim: int, num_heads: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.ln = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, num_heads, dropout=dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, N, D) -> (B, D); a row with no valid token pools to ``attn.out_proj.bias``."""
        q = self.query.expand(x.shape[0], -1, -1)  # (B, 1, D)
        return self.attn(q, self.ln(x), key_mask=mask).squeeze(1)  # (B, D)
