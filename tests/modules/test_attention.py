"""MultiHeadAttention against a float64 naive reference; masks, padding, fully masked rows, slow path."""

from __future__ import annotations

import math

import pytest
import torch

from mmvla.modules.attention import IMPLS, AttentionPool, MultiHeadAttention, TransformerBlock, masked_mean

B, NQ, NK, D, H = 3, 5, 7, 16, 4


def naive_attention(
    m: MultiHeadAttention, x: torch.Tensor, ctx: torch.Tensor | None, keep: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 loop-per-(batch, head, query) reference. keep: (B, Nq, Nk) bool or None."""
    w = m.in_proj_weight.detach().double()
    b = m.in_proj_bias.detach().double()
    wo, bo = m.out_proj.weight.detach().double(), m.out_proj.bias.detach().double()
    x = x.double()
    c = x if ctx is None else ctx.double()
    q, k, v = x @ w[:D].T + b[:D], c @ w[D : 2 * D].T + b[D : 2 * D], c @ w[2 * D :].T + b[2 * D :]
    nb, nq, nk, hd = x.shape[0], x.shape[1], c.shape[1], D // H
    y = torch.zeros(nb, nq, D, dtype=torch.float64)
    weights = torch.zeros(nb, H, nq, nk, dtype=torch.float64)
    for bi in range(nb):
        for h in range(H):
            sl = slice(h * hd, (h + 1) * hd)
            for i in range(nq):
                kept = [j for j in range(nk) if keep is None or bool(keep[bi, i, j])]
                if not kept:
                    continue
                s = torch.stack([q[bi, i, sl] @ k[bi, j, sl] / math.sqrt(hd) for j in kept])
                p = torch.exp(s - s.max())
                p = p / p.sum()
                for pj, j in zip(p, kept, strict=True):
                    weights[bi, h, i, j] = pj
                    y[bi, i, sl] += pj * v[bi, j, sl]
    return y @ wo.T + bo, weights


PATHS = ["slow", *IMPLS]  # the explicit-softmax path and every fast-path implementation


def make(seed: int = 0, impl: str = "auto") -> MultiHeadAttention:
    torch.manual_seed(seed)
    m = MultiHeadAttention(D, H, impl=impl).eval()
    with torch.no_grad():
        m.in_proj_bias.normal_()  # nonzero biases so they are checked too
        m.out_proj.bias.normal_()
    return m


def masks(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    key_mask = torch.rand(B, NK, generator=g) > 0.3
    key_mask[:, 0] = True
    full = torch.rand(B, NQ, NK, generator=g) > 0.4
    return key_mask, full


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("mask_kind", ["none", "key", "full", "both"])
@pytest.mark.parametrize("path", PATHS)
def test_matches_float64_naive(cross: bool, mask_kind: str, path: str) -> None:
    slow = path == "slow"
    m = make(impl="auto" if slow else path)
    x = torch.randn(B, NQ, D)
    ctx = torch.randn(B, NK, D) if cross else None
    nk = NK if cross else NQ
    key_mask, full = masks()
    key_mask, full = key_mask[:, :nk], full[:, :, :nk]
    km = key_mask if mask_kind in ("key", "both") else None
    am = full if mask_kind in ("full", "both") else None
    keep = torch.ones(B, NQ, nk, dtype=torch.bool)
    if km is not None:
        keep &= km[:, None, :]
    if am is not None:
        keep &= am
    ref, ref_w = naive_attention(m, x, ctx, keep)
    with torch.no_grad():
        if slow:
            out, w = m.forward_with_weights(x, ctx, key_mask=km, attn_mask=am)
            torch.testing.assert_close(w.double(), ref_w, atol=1e-5, rtol=0)
        else:
            out = m(x, ctx, key_mask=km, attn_mask=am)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)


def test_2d_attn_mask_broadcasts_over_batch() -> None:
    m = make()
    x = torch.randn(B, NQ, D)
    causal = torch.ones(NQ, NQ, dtype=torch.bool).tril()
    ref, _ = naive_attention(m, x, None, causal.expand(B, NQ, NQ))
    with torch.no_grad():
        torch.testing.assert_close(m(x, attn_mask=causal).double(), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("path", PATHS)
def test_padding_never_changes_valid_outputs(path: str) -> None:
    slow = path == "slow"
    m = make(impl="auto" if slow else path)
    x, ctx = torch.randn(B, NQ, D), torch.randn(B, NK, D)
    key_mask, _ = masks()
    ctx2 = ctx.clone()
    ctx2[~key_mask] = torch.randn(int((~key_mask).sum()), D) * 100.0  # garbage in padded slots
    with torch.no_grad():
        f = m.forward_with_weights if slow else m.forward
        a = f(x, ctx, key_mask=key_mask)
        b = f(x, ctx2, key_mask=key_mask)
    a = a.out if slow else a
    b = b.out if slow else b
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)  # exact for SDPA; folds may reorder sums


def test_self_attention_padded_queries_do_not_leak() -> None:
    """In self-attention, padded tokens' values (as keys and queries) never change valid positions."""
    block = TransformerBlock(D, H).eval()
    x = torch.randn(B, NQ, D)
    mask = torch.ones(B, NQ, dtype=torch.bool)
    mask[0, 3:] = False
    mask[2, 1:] = False
    x2 = x.clone()
    x2[~mask] = torch.randn(int((~mask).sum()), D) * 50.0
    with torch.no_grad():
        a, b = block(x, key_mask=mask), block(x2, key_mask=mask)
    assert torch.equal(a[mask], b[mask])


@pytest.mark.parametrize("path", PATHS)
def test_fully_masked_rows_are_finite_zero(path: str) -> None:
    slow = path == "slow"
    m = make(impl="auto" if slow else path)
    x, ctx = torch.randn(B, NQ, D, requires_grad=True), torch.randn(B, NK, D)
    key_mask = torch.ones(B, NK, dtype=torch.bool)
    key_mask[1] = False  # batch row 1 has no valid key at all
    full = torch.ones(B, NQ, NK, dtype=torch.bool)
    full[0, 2] = False  # one query row of batch row 0 masked
    if slow:
        out, w = m.forward_with_weights(x, ctx, key_mask=key_mask, attn_mask=full)
        assert torch.all(w[1] == 0) and torch.all(w[0, :, 2] == 0)
    else:
        out = m(x, ctx, key_mask=key_mask, attn_mask=full)
    assert torch.isfinite(out).all()
    bias = m.out_proj.bias.detach()
    torch.testing.assert_close(out[1].detach(), bias.expand(NQ, D))
    torch.testing.assert_close(out[0, 2].detach(), bias)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_slow_weights_sum_to_one_over_kept_keys() -> None:
    m = make()
    x, ctx = torch.randn(B, NQ, D), torch.randn(B, NK, D)
    key_mask, full = masks()
    with torch.no_grad():
        _, w = m.forward_with_weights(x, ctx, key_mask=key_mask, attn_mask=full)
    keep = key_mask[:, None, None, :] & full[:, None]  # (B, 1, Nq, Nk)
    assert torch.all(w[~keep.expand_as(w)] == 0)
    sums = w.sum(-1)  # (B, H, Nq)
    has_key = keep.any(-1).expand_as(sums)
    torch.testing.assert_close(sums[has_key], torch.ones_like(sums[has_key]))
    assert torch.all(sums[~has_key] == 0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cross", [False, True])
def test_fast_and_slow_paths_agree_with_grads(cross: bool, impl: str) -> None:
    m = make(impl=impl)
    x = torch.randn(B, NQ, D, requires_grad=True)
    ctx = torch.randn(B, NK, D) if cross else None
    key_mask = masks()[0][:, : (NK if cross else NQ)]
    fast = m(x, ctx, key_mask=key_mask)
    (gf,) = torch.autograd.grad(fast.square().sum(), x)
    slow = m.forward_with_weights(x, ctx, key_mask=key_mask).out
    (gs,) = torch.autograd.grad(slow.square().sum(), x)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gf, gs, atol=1e-4, rtol=1e-4)
    pf = torch.autograd.grad(m(x, ctx, key_mask=key_mask).sum(), list(m.parameters()))
    ps = torch.autograd.grad(
        m.forward_with_weights(x, ctx, key_mask=key_mask).out.sum(), list(m.parameters())
    )
    for a, b in zip(pf, ps, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("impl", ["fold_keys", "fold_queries"])
def test_folds_match_at_benchmark_like_shapes(impl: str) -> None:
    """Wide model, few keys/queries (where auto picks a fold): same as SDPA to float32 rounding."""
    torch.manual_seed(0)
    fold = MultiHeadAttention(256, 8, impl=impl).eval()
    sdpa = MultiHeadAttention(256, 8, impl="sdpa").eval()
    sdpa.load_state_dict(fold.state_dict())
    nq, nk = (49, 6) if impl == "fold_keys" else (6, 49)
    assert MultiHeadAttention(256, 8).choose_impl(nq, nk, cross=True) == impl
    x, ctx = torch.randn(4, nq, 256), torch.randn(4, nk, 256)
    km = torch.rand(4, nk) > 0.3
    km[0] = False
    with torch.no_grad():
        torch.testing.assert_close(fold(x, ctx, key_mask=km), sdpa(x, ctx, key_mask=km), atol=2e-5, rtol=1e-5)


def test_auto_uses_sdpa_for_self_attention_and_balanced_cross() -> None:
    m = MultiHeadAttention(64, 4)
    assert m.choose_impl(50, 50, cross=False) == "sdpa"
    assert m.choose_impl(50, 40, cross=True) == "sdpa"
    assert MultiHeadAttention(768, 8).choose_impl(196, 20, cross=True) == "fold_keys"
    assert MultiHeadAttention(768, 8).choose_impl(20, 196, cross=True) == "fold_queries"


def test_weights_copy_from_nn_multihead_attention() -> None:
    """Packed in-projection has nn.MultiheadAttention's layout: copying weights gives the same output."""
    torch.manual_seed(0)
    ref = torch.nn.MultiheadAttention(D, H, batch_first=True).eval()
    m = MultiHeadAttention(D, H).eval()
    m.load_state_dict(ref.state_dict())
    x, ctx = torch.randn(B, NQ, D), torch.randn(B, NK, D)
    key_mask = masks()[0]
    with torch.no_grad():
        expected, _ = ref(x, ctx, ctx, key_padding_mask=~key_mask)  # nn.MHA: True = ignore
        torch.testing.assert_close(m(x, ctx, key_mask=key_mask), expected, atol=1e-5, rtol=1e-5)


def test_mask_validation() -> None:
    m = make()
    x = torch.randn(B, NQ, D)
    with pytest.raises(ValueError, match="key_mask"):
        m(x, key_mask=torch.ones(B, NQ))  # float, not bool
    with pytest.raises(ValueError, match="attn_mask"):
        m(x, attn_mask=torch.ones(B, NQ, NQ + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="impl"):
        MultiHeadAttention(16, 4, impl="flash")


def test_masked_mean_and_pool() -> None:
    x = torch.randn(2, 4, D)
    mask = torch.tensor([[True, False, True, False], [False, False, False, False]])
    mean = masked_mean(x, mask)
    torch.testing.assert_close(mean[0], (x[0, 0] + x[0, 2]) / 2)
    assert torch.all(mean[1] == 0)
    pool = AttentionPool(D, H).eval()
    x2 = x.clone()
    x2[~mask] = 1e3
    with torch.no_grad():
        a, b = pool(x, mask), pool(x2, mask)
    assert torch.isfinite(a).all() and torch.equal(a, b)


@pytest.mark.parametrize("impl", ["fold_keys", "fold_queries"])
@pytest.mark.parametrize("bias", [True, False])
def test_fold_hand_backward_matches_naive_and_sdpa_gradients_in_float64(impl: str, bias: bool) -> None:
    """The folds' hand-written backward (mmvla.modules.folded_attention), in training mode without
    dropout: outputs against the float64 naive loop, every input and parameter gradient against SDPA's
    autograd, with a key mask that drops one batch row's every key."""
    torch.manual_seed(1)
    nq, nk = (NQ, 3) if impl == "fold_keys" else (3, NK)
    fold = MultiHeadAttention(D, H, impl=impl, bias=bias).double().train()
    sdpa = MultiHeadAttention(D, H, impl="sdpa", bias=bias).double().train()
    with torch.no_grad():
        for p in fold.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    sdpa.load_state_dict(fold.state_dict())
    x = torch.randn(B, nq, D, dtype=torch.float64, requires_grad=True)
    ctx = torch.randn(B, nk, D, dtype=torch.float64, requires_grad=True)
    km = torch.rand(B, nk) > 0.3
    km[0], km[1, 0] = False, True
    g = torch.randn(B, nq, D, dtype=torch.float64)
    for mask in (None, km):
        out = fold(x, ctx, key_mask=mask)
        assert type(out.grad_fn).__name__.startswith(("FoldKeysAttention", "FoldQueriesAttention"))
        if bias:  # the naive reference reads the biases
            keep = None if mask is None else mask[:, None, :].expand(B, nq, nk)
            want, _ = naive_attention(fold, x.detach(), ctx.detach(), keep)
            torch.testing.assert_close(out.detach(), want, atol=1e-12, rtol=1e-10)
        got = torch.autograd.grad((out * g).sum(), [x, ctx, *fold.parameters()])
        ref = torch.autograd.grad((sdpa(x, ctx, key_mask=mask) * g).sum(), [x, ctx, *sdpa.parameters()])
        for a, r in zip(got, ref, strict=True):
            torch.testing.assert_close(a, r, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("impl", ["fold_keys", "fold_queries"])
def test_fold_hand_backward_passes_gradcheck_and_steps_aside_for_dropout(impl: str) -> None:
    from mmvla.modules.folded_attention import FoldKeysAttention, FoldQueriesAttention

    torch.manual_seed(2)
    fn = FoldKeysAttention if impl == "fold_keys" else FoldQueriesAttention
    nq, nk = (4, 2) if impl == "fold_keys" else (2, 4)
    x = torch.randn(2, nq, 8, dtype=torch.float64, requires_grad=True)
    ctx = torch.randn(2, nk, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(24, 8, dtype=torch.float64, requires_grad=True)
    b = torch.randn(24, dtype=torch.float64, requires_grad=True)
    wo = torch.randn(8, 8, dtype=torch.float64, requires_grad=True)
    bo = torch.randn(8, dtype=torch.float64, requires_grad=True)
    key_bias = torch.tensor([[[0.0, float("-inf")] + [0.0] * (nk - 2)], [[0.0] * nk]], dtype=torch.float64)
    row_ok = torch.ones(2, 1, 1, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda *t: fn.apply(*t, key_bias, row_ok, 2), (x, ctx, w, b, wo, bo), eps=1e-6, atol=1e-7
    )
    m = MultiHeadAttention(16, 4, impl=impl, dropout=0.5).train()
    out = m(torch.randn(2, nq, 16), torch.randn(2, nk, 16))
    assert not type(out.grad_fn).__name__.startswith("Fold")  # dropout: the autograd path
