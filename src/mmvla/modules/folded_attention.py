"""Folded cross-attention with a hand-written backward: the fast paths of ``MultiHeadAttention``.

``MultiHeadAttention`` folds the projections onto the short side of a skewed cross-attention (see its
docstring). Written with autograd, one folded call is ~30 small operators whose backward also pays for
reshape copies, einsum permutes and the gradient of the packed ``in_proj_weight`` built by concatenating
its pieces. At batch 1 that overhead, not the multiply-adds, dominates a training step. The two
``torch.autograd.Function`` below compute the same forward and write every gradient once, each weight's
straight into its final buffer. They cover the common case: a key-only padding mask (or none) and no
attention dropout; ``MultiHeadAttention`` keeps its autograd paths for the rest and as the reference.

Notation (shapes per call): x (B, Nq, D) queries, ctx (B, Nk, D) keys/values, H heads of hd = D / H,
w (3D, D) packed q/k/v weight with bias b (3D) or None, wo (D, D) output weight with bias bo (D) or None,
key_bias (B, 1, Nk) additive score bias (0 keep, -inf drop) or None, row_ok (B, 1, 1) 1 for a batch row
with a kept key, 0 without (its attention result is zero) or None.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable


def _heads_first(t: Tensor, H: int) -> Tensor:
    """(B, N, H, hd) -> (H, B·N, hd), contiguous (the head is the batch of one GEMM)."""
    B, N, _, hd = t.shape
    return t.permute(2, 0, 1, 3).reshape(H, B * N, hd)


def _sum_rows(g: Tensor) -> Tensor:
    """(..., D) -> (D): a bias gradient."""
    return g.reshape(-1, g.shape[-1]).sum(0)


class FoldKeysAttention(torch.autograd.Function):
    """Few keys: W_q folded into the keys, W_o into the values. Returns (B, Nq, D).

    kq_h = k_h W_q,h (Nk, D); s = scale · x kq^T + scale · b_q,h·k_h + key_bias; a = softmax per head;
    vo_h = v_h W_o,h^T (Nk, D); out = a vo + b_o.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        fctx: FunctionCtx,
        x: Tensor,
        ctx: Tensor,
        w: Tensor,
        b: Tensor | None,
        wo: Tensor,
        bo: Tensor | None,
        key_bias: Tensor | None,
        row_ok: Tensor | None,
        num_heads: int,
    ) -> Tensor:
        B, Nq, D = x.shape
        Nk, H = ctx.shape[1], num_heads
        hd = D // H
        scale = hd**-0.5
        kv = torch.nn.functional.linear(ctx, w[D:], None if b is None else b[D:])  # (B, Nk, 2D)
        k = _heads_first(kv[..., :D].reshape(B, Nk, H, hd), H)  # (H, B·Nk, hd)
        v = _heads_first(kv[..., D:].reshape(B, Nk, H, hd), H)  # (H, B·Nk, hd)
        kq = torch.bmm(k, w[:D].view(H, hd, D))  # (H, B·Nk, D)
        kq2 = kq.view(H, B, Nk, D).transpose(0, 1).reshape(B, H * Nk, D)  # (B, H·Nk, D)
        add = x.new_zeros(B, 1, H * Nk)
        if b is not None:  # the query bias adds scale · b_q,h·k_h per key
            kb = torch.bmm(k, b[:D].view(H, hd, 1)).view(H, B, Nk)  # (H, B, Nk)
            add += kb.transpose(0, 1).reshape(B, 1, H * Nk) * scale
        if key_bias is not None:
            add += key_bias.unsqueeze(2).expand(B, 1, H, Nk).reshape(B, 1, H * Nk)
        s = torch.baddbmm(add, x, kq2.transpose(1, 2), alpha=scale)  # (B, Nq, H·Nk)
        a = s.view(B, Nq, H, Nk).softmax(dim=-1).view(B, Nq, H * Nk)
        if row_ok is not None:  # a batch row without keys attends to nothing
            v = (v.view(H, B, Nk, hd) * row_ok.view(1, B, 1, 1)).view(H, B * Nk, hd)
        vo = torch.bmm(v, wo.view(D, H, hd).permute(1, 2, 0))  # (H, B·Nk, D): v_h W_o,h^T
        vo2 = vo.view(H, B, Nk, D).transpose(0, 1).reshape(B, H * Nk, D)  # (B, H·Nk, D)
        out = torch.bmm(a, vo2) if bo is None else torch.baddbmm(bo, a, vo2)  # (B, Nq, D)
        fctx.save_for_backward(x, ctx, w, b, wo, row_ok, k, v, kq2, a, vo2)  # type: ignore[arg-type]  # None allowed
        fctx.num_heads = H  # type: ignore[attr-defined]
        return out

    @staticmethod
    @once_differentiable
    def backward(fctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, ctx, w, b, wo, row_ok, k, v, kq2, a, vo2 = fctx.saved_tensors
        H = fctx.num_heads
        B, Nq, D = x.shape
        Nk, hd = ctx.shape[1], D // H
        scale = hd**-0.5
        need_x, need_ctx, need_w, need_b, need_wo, need_bo = fctx.needs_input_grad[:6]
        # out = a vo2 + bo
        d_a = torch.bmm(g, vo2.transpose(1, 2))  # (B, Nq, H·Nk)
        d_vo2 = torch.bmm(a.transpose(1, 2), g)  # (B, H·Nk, D)
        # softmax per head: d_s = a ⊙ (d_a − Σ_n d_a ⊙ a)
        a4, d_a4 = a.view(B, Nq, H, Nk), d_a.view(B, Nq, H, Nk)
        d_s = (a4 * (d_a4 - (d_a4 * a4).sum(-1, keepdim=True))).view(B, Nq, H * Nk)
        d_kq2 = torch.bmm(d_s.transpose(1, 2), x) * scale  # (B, H·Nk, D)
        d_x = torch.bmm(d_s, kq2) * scale if need_x else None  # (B, Nq, D)
        d_kq = d_kq2.view(B, H, Nk, D).transpose(0, 1).reshape(H, B * Nk, D)  # (H, B·Nk, D)
        d_vo = d_vo2.view(B, H, Nk, D).transpose(0, 1).reshape(H, B * Nk, D)  # (H, B·Nk, D)
        wq3 = w[:D].view(H, hd, D)
        d_k = torch.bmm(d_kq, wq3.transpose(1, 2))  # (H, B·Nk, hd)
        d_add = None
        if b is not None:  # s += scale · k_h·b_q,h
            d_add = d_s.sum(1).view(B, H, Nk).transpose(0, 1).reshape(H, B * Nk, 1) * scale  # (H, B·Nk, 1)
            d_k += d_add * b[:D].view(H, 1, hd)
        d_v = torch.bmm(d_vo, wo.view(D, H, hd).transpose(0, 1))  # (H, B·Nk, hd): d_vo_h W_o,h
        if row_ok is not None:
            d_v = (d_v.view(H, B, Nk, hd) * row_ok.view(1, B, 1, 1)).view(H, B * Nk, hd)
        # back to (B·Nk, 2D) for the kv projection
        d_kv = torch.cat([d_k, d_v], dim=2).view(H, B * Nk, 2, hd).permute(1, 2, 0, 3).reshape(B * Nk, 2 * D)
        d_w = d_b = d_wo = d_bo = None
        if need_w:
            d_w = torch.empty_like(w)
            torch.bmm(k.transpose(1, 2), d_kq, out=d_w[:D].view(H, hd, D))  # Σ k_h^T d_kq_h
            torch.mm(d_kv.t(), ctx.reshape(B * Nk, D), out=d_w[D:])  # (2D, D)
        if need_b and b is not None:
            d_b = torch.empty_like(b)
            if d_add is None:
                d_b[:D] = 0
            else:
                d_b[:D] = (k * d_add).sum(1).reshape(D)  # Σ scale · d_add_h k_h
            d_b[D:] = d_kv.sum(0)
        d_ctx = torch.mm(d_kv, w[D:]).view(B, Nk, D) if need_ctx else None
        if need_wo:
            d_wo3 = torch.bmm(d_vo.transpose(1, 2), v)  # (H, D, hd): Σ d_vo_h^T v_h
            d_wo = d_wo3.permute(1, 0, 2).reshape(D, D)
        if need_bo:
            d_bo = _sum_rows(g)
        return d_x, d_ctx, d_w, d_b, d_wo, d_bo, None, None, None


class FoldQueriesAttention(torch.autograd.Function):
    """Few queries: W_k folded into the queries, W_v applied after the weighted sum. Returns (B, Nq, D).

    q = x W_q^T + b_q; qk_h = q_h W_k,h (Nq, D); s = scale · qk ctx^T + key_bias (the key bias b_k cancels
    in the softmax); a = softmax · row_ok; z_h = a_h ctx; y_h = z_h W_v,h^T + row_ok · b_v,h;
    out = y W_o^T + b_o.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        fctx: FunctionCtx,
        x: Tensor,
        ctx: Tensor,
        w: Tensor,
        b: Tensor | None,
        wo: Tensor,
        bo: Tensor | None,
        key_bias: Tensor | None,
        row_ok: Tensor | None,
        num_heads: int,
    ) -> Tensor:
        B, Nq, D = x.shape
        H = num_heads
        hd = D // H
        scale = hd**-0.5
        q = torch.nn.functional.linear(x, w[:D], None if b is None else b[:D])  # (B, Nq, D)
        qh = _heads_first(q.view(B, Nq, H, hd), H)  # (H, B·Nq, hd)
        qk = torch.bmm(qh, w[D : 2 * D].view(H, hd, D))  # (H, B·Nq, D)
        qk2 = qk.view(H, B, Nq, D).transpose(0, 1).reshape(B, H * Nq, D)  # (B, H·Nq, D)
        if key_bias is None:
            s = torch.bmm(qk2, ctx.transpose(1, 2)) * scale  # (B, H·Nq, Nk)
        else:
            s = torch.baddbmm(key_bias, qk2, ctx.transpose(1, 2), alpha=scale)
        p = s.softmax(dim=-1)  # (B, H·Nq, Nk)
        a = p if row_ok is None else p * row_ok  # a batch row without keys attends to nothing
        z = torch.bmm(a, ctx)  # (B, H·Nq, D)
        zh = z.view(B, H, Nq, D).transpose(0, 1).reshape(H, B * Nq, D)  # (H, B·Nq, D)
        y = torch.bmm(zh, w[2 * D :].view(H, hd, D).transpose(1, 2))  # (H, B·Nq, hd): z_h W_v,h^T
        y2 = y.view(H, B, Nq, hd).permute(1, 2, 0, 3).reshape(B, Nq, D)  # (B, Nq, D)
        if b is not None:  # the value bias, weighted by the row's total weight (1, or 0 without keys)
            bv = b[2 * D :]
            y2 = y2 + (bv if row_ok is None else row_ok * bv)
        out = torch.nn.functional.linear(y2, wo, bo)  # (B, Nq, D)
        fctx.save_for_backward(x, ctx, w, b, wo, row_ok, qh, qk2, p, zh, y2)  # type: ignore[arg-type]  # None allowed
        fctx.num_heads = H  # type: ignore[attr-defined]
        return out

    @staticmethod
    @once_differentiable
    def backward(fctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, ctx, w, b, wo, row_ok, qh, qk2, p, zh, y2 = fctx.saved_tensors
        H = fctx.num_heads
        B, Nq, D = x.shape
        hd = D // H
        scale = hd**-0.5
        need_x, need_ctx, need_w, need_b, need_wo, need_bo = fctx.needs_input_grad[:6]
        g2 = g.reshape(B * Nq, D)
        d_wo = torch.mm(g2.t(), y2.reshape(B * Nq, D)) if need_wo else None  # (D, D)
        d_bo = g2.sum(0) if need_bo else None
        d_y2 = torch.mm(g2, wo)  # (B·Nq, D)
        d_y = d_y2.view(B, Nq, H, hd).permute(2, 0, 1, 3).reshape(H, B * Nq, hd)  # (H, B·Nq, hd)
        wv3 = w[2 * D :].view(H, hd, D)
        d_z = torch.bmm(d_y, wv3).view(H, B, Nq, D).transpose(0, 1).reshape(B, H * Nq, D)  # (B, H·Nq, D)
        a = p if row_ok is None else p * row_ok
        d_a = torch.bmm(d_z, ctx.transpose(1, 2))  # (B, H·Nq, Nk)
        if row_ok is not None:
            d_a *= row_ok
        d_s = p * (d_a - (d_a * p).sum(-1, keepdim=True))  # (B, H·Nq, Nk)
        d_qk2 = torch.bmm(d_s, ctx) * scale  # (B, H·Nq, D)
        d_ctx = None
        if need_ctx:
            d_ctx = torch.bmm(a.transpose(1, 2), d_z)  # (B, Nk, D)
            d_ctx.baddbmm_(d_s.transpose(1, 2), qk2, alpha=scale)
        d_qk = d_qk2.view(B, H, Nq, D).transpose(0, 1).reshape(H, B * Nq, D)  # (H, B·Nq, D)
        wk3 = w[D : 2 * D].view(H, hd, D)
        d_qh = torch.bmm(d_qk, wk3.transpose(1, 2))  # (H, B·Nq, hd)
        d_q = d_qh.view(H, B, Nq, hd).permute(1, 2, 0, 3).reshape(B * Nq, D)  # (B·Nq, D)
        d_w = d_b = None
        if need_w:
            d_w = torch.empty_like(w)
            torch.mm(d_q.t(), x.reshape(B * Nq, D), out=d_w[:D])  # (D, D)
            torch.bmm(qh.transpose(1, 2), d_qk, out=d_w[D : 2 * D].view(H, hd, D))  # Σ q_h^T d_qk_h
            torch.bmm(d_y.transpose(1, 2), zh, out=d_w[2 * D :].view(H, hd, D))  # Σ d_y_h^T z_h
        if need_b and b is not None:
            d_b = torch.empty_like(b)
            d_b[:D] = d_q.sum(0)
            d_b[D : 2 * D] = 0  # the key bias cancels in the softmax
            d_bv = d_y2.view(B, Nq, D)
            d_b[2 * D :] = _sum_rows(d_bv if row_ok is None else d_bv * row_ok)
        d_x = torch.mm(d_q, w[:D]).view(B, Nq, D) if need_x else None
        return d_x, d_ctx, d_w, d_b, d_wo, d_bo, None, None, None
