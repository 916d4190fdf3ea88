"""Every registered fusion: shapes, padding, gradients to every parameter, determinism, modality subsets."""

from __future__ import annotations

import pytest
import torch

from mmvla.modules.fusion import FusionConfig, ModalityTokens, available_fusions, build_fusion
from mmvla.modules.fusion.film import FiLM
from mmvla.modules.fusion.moe import load_balancing_loss

B, D, NL, NV = 3, 32, 6, 9
ALL = ("language", "proprio", "vision")
FUSIONS = available_fusions()


def test_registry_has_every_design() -> None:
    expected = {"early", "late", "cross_attention", "transformer", "film", "gated", "moe", "hierarchical"}
    assert expected <= set(FUSIONS)


def make_inputs(modalities: tuple[str, ...] = ALL, seed: int = 0) -> ModalityTokens:
    """Language padded to different lengths with row 1 fully padded; vision with one camera dropped in row 2."""
    g = torch.Generator().manual_seed(seed)
    tokens, masks = {}, {}
    if "language" in modalities:
        tokens["language"] = torch.randn(B, NL, D, generator=g)
        lengths = torch.tensor([NL, 0, 3])
        masks["language"] = torch.arange(NL)[None] < lengths[:, None]  # (B, NL)
    if "vision" in modalities:
        tokens["vision"] = torch.randn(B, NV, D, generator=g)
        vm = torch.ones(B, NV, dtype=torch.bool)
        vm[2, :4] = False
        masks["vision"] = vm
    if "proprio" in modalities:
        tokens["proprio"] = torch.randn(B, 1, D, generator=g)
    return ModalityTokens(tokens=tokens, masks=masks)


def build(name: str, modalities: tuple[str, ...] = ALL, seed: int = 0, **kw: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = FusionConfig(dim=D, num_heads=4, num_layers=2, modalities=modalities, max_tokens=16, **kw)  # type: ignore[arg-type]
    return build_fusion(name, cfg)


@pytest.mark.parametrize("name", FUSIONS)
def test_shapes_and_finite_with_padding(name: str) -> None:
    fusion = build(name).eval()
    out = fusion(make_inputs())
    assert out.pooled.shape == (B, D)
    assert out.tokens.dim() == 3 and out.tokens.shape[0] == B and out.tokens.shape[2] == D
    assert out.mask.shape == out.tokens.shape[:2] and out.mask.dtype == torch.bool
    assert out.aux_loss.shape == ()
    for t in (out.pooled, out.tokens, out.aux_loss):
        assert torch.isfinite(t).all()


@pytest.mark.parametrize("subset", [ALL, ("language", "vision")], ids=lambda s: "+".join(s))
@pytest.mark.parametrize("name", FUSIONS)
def test_rows_with_every_token_padded_stay_finite(name: str, subset: tuple[str, ...]) -> None:
    """Row 1: no language and every camera dropped (only proprio, if any, left); grads stay finite too."""
    fusion = build(name, subset).train()
    x = make_inputs(subset)
    x.masks["vision"][1] = False
    out = fusion(x)
    for t in (out.pooled, out.tokens, out.aux_loss):
        assert torch.isfinite(t).all()
    (out.pooled.sum() + out.tokens.sum() + out.aux_loss).backward()
    assert all(torch.isfinite(p.grad).all() for p in fusion.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", FUSIONS)
def test_padding_values_never_change_outputs(name: str) -> None:
    fusion = build(name).eval()
    x = make_inputs()
    y = make_inputs()
    for m, mask in y.masks.items():
        y.tokens[m][~mask] = 1e3  # garbage in every padded slot
    with torch.no_grad():
        a, b = fusion(x), fusion(y)
    torch.testing.assert_close(a.pooled, b.pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.tokens[a.mask], b.tokens[b.mask], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", FUSIONS)
def test_gradient_reaches_every_parameter(name: str) -> None:
    """Loss on pooled and on valid tokens; every parameter must get a nonzero gradient (catches dead levels)."""
    fusion = build(name).train()
    out = fusion(make_inputs())
    g = torch.Generator().manual_seed(1)
    loss = (out.pooled * torch.randn(out.pooled.shape, generator=g)).sum()
    loss = loss + (out.tokens * torch.randn(out.tokens.shape, generator=g))[out.mask].sum() + out.aux_loss
    loss.backward()
    dead = [n for n, p in fusion.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead, f"{name}: parameters without gradient: {dead}"
    for n, p in fusion.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("name", FUSIONS)
def test_deterministic_under_fixed_seed(name: str) -> None:
    a = build(name, seed=7, dropout=0.1).train()
    b = build(name, seed=7, dropout=0.1).train()
    torch.manual_seed(3)
    oa = a(make_inputs())
    torch.manual_seed(3)
    ob = b(make_inputs())
    assert torch.equal(oa.pooled, ob.pooled) and torch.equal(oa.tokens, ob.tokens)
    assert torch.equal(oa.aux_loss, ob.aux_loss)


SUBSETS = [("language", "vision"), ("proprio", "vision"), ("vision",), ("language",), ("language", "proprio")]


@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: "+".join(s))
@pytest.mark.parametrize("name", FUSIONS)
def test_modality_subsets(name: str, subset: tuple[str, ...]) -> None:
    if name == "film" and "vision" not in subset:
        with pytest.raises(ValueError, match="vision"):
            build(name, subset)
        return
    fusion = build(name, subset).train()
    out = fusion(make_inputs(subset))
    assert (
        out.pooled.shape == (B, D) and torch.isfinite(out.pooled).all() and torch.isfinite(out.tokens).all()
    )
    (out.pooled.sum() + out.tokens[out.mask].sum()).backward()


@pytest.mark.parametrize("name", FUSIONS)
def test_dict_order_and_wrong_modalities(name: str) -> None:
    fusion = build(name).eval()
    x = make_inputs()
    rev = ModalityTokens(tokens=dict(reversed(x.tokens.items())), masks=dict(reversed(x.masks.items())))
    with torch.no_grad():
        assert torch.equal(fusion(x).pooled, fusion(rev).pooled)
    with pytest.raises(ValueError, match="modalities"):
        fusion(make_inputs(("language", "vision")))


def test_film_starts_as_identity() -> None:
    """Each FiLM layer returns its input vision tokens at init, so the language has no effect yet."""
    fusion = build("film").eval()
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    films = [m for m in fusion.modules() if isinstance(m, FiLM)]
    assert len(films) == 2
    for m in films:
        m.register_forward_hook(lambda _m, inp, out: seen.append((inp[0], out)))
    x = make_inputs()
    with torch.no_grad():
        a = fusion(x)
    assert len(seen) == 2
    for inp, out in seen:
        assert torch.equal(inp, out)
    x.tokens["language"] = torch.randn_like(x.tokens["language"])
    with torch.no_grad():
        b = fusion(x)
    assert torch.equal(a.pooled, b.pooled) and torch.equal(a.tokens, b.tokens)


def test_film_conditions_after_a_step() -> None:
    fusion = build("film", ("language", "vision")).train()
    opt = torch.optim.SGD(fusion.parameters(), lr=0.1)
    fusion(make_inputs(("language", "vision"))).pooled.square().sum().backward()
    opt.step()
    x = make_inputs(("language", "vision"))
    with torch.no_grad():
        a = fusion(x).pooled
        x.tokens["language"] = torch.randn_like(x.tokens["language"])
        b = fusion(x).pooled
    assert not torch.allclose(a[0], b[0])


def test_gated_weights_sum_to_one_and_drop_missing_modalities() -> None:
    fusion = build("gated").eval()
    with torch.no_grad():
        out = fusion(make_inputs())
    w = out.info["gate_weights"]
    assert w.shape == (B, 3)
    torch.testing.assert_close(w.sum(dim=1), torch.ones(B))
    assert torch.all(w >= 0)
    assert w[1, 0] == 0  # row 1 has no language token (index 0 in sorted order)
    assert torch.all(w[[0, 2], 0] > 0)


def test_moe_balance_loss_closed_form() -> None:
    E = 4
    uniform = torch.full((10, E), 1.0 / E)
    for k in (1, 2):
        torch.testing.assert_close(load_balancing_loss(uniform, k), torch.tensor(1.0))
    collapsed = torch.zeros(10, E)
    collapsed[:, 0] = 1.0
    torch.testing.assert_close(load_balancing_loss(collapsed, 1), torch.tensor(float(E)))
    assert load_balancing_loss(collapsed, 2) > 1.0


@pytest.mark.parametrize("top_k", [1, 2])
def test_moe_aux_loss_minimal_for_uniform_router(top_k: int) -> None:
    fusion = build("moe", top_k=top_k, balance_weight=0.5).eval()
    for moe in fusion.moe:
        torch.nn.init.zeros_(moe.router.weight)
        torch.nn.init.zeros_(moe.router.bias)
    with torch.no_grad():
        uniform = fusion(make_inputs())
    torch.testing.assert_close(uniform.aux_loss, torch.tensor(0.5))
    probs = uniform.info["router_probs"]  # (B, L, N, E)
    assert probs.shape == (B, 2, NL + 1 + NV, 4)
    for moe in fusion.moe:
        moe.router.bias.data[0] = 20.0  # every token to expert 0
    with torch.no_grad():
        collapsed = fusion(make_inputs())
    assert collapsed.aux_loss > uniform.aux_loss


def test_hierarchical_uses_mid_level() -> None:
    """Changing the mid level's weights changes the output (the design source's mid level was dead)."""
    fusion = build("hierarchical").eval()
    x = make_inputs()
    with torch.no_grad():
        a = fusion(x).pooled
        for p in fusion.mid.parameters():
            p.add_(0.1)
        b = fusion(x).pooled
    assert not torch.allclose(a, b)


def test_transformer_rejects_too_many_tokens() -> None:
    fusion = build("transformer")
    x = make_inputs()
    x.tokens["vision"] = torch.randn(B, 17, D)
    x.masks["vision"] = torch.ones(B, 17, dtype=torch.bool)
    with pytest.raises(ValueError, match="max_tokens"):
        fusion(x)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="top_k"):
        FusionConfig(num_experts=2, top_k=3)


@pytest.mark.parametrize("name", ["cross_attention", "hierarchical"])
def test_folded_attention_in_fusion_matches_sdpa(name: str) -> None:
    """At a width where MultiHeadAttention picks a folded projection, the fusion equals its SDPA twin."""
    from mmvla.modules.attention import MultiHeadAttention

    torch.manual_seed(0)
    cfg = FusionConfig(dim=128, num_heads=4, num_layers=1, modalities=ALL)
    fusion = build_fusion(name, cfg).eval()
    twin = build_fusion(name, cfg).eval()
    twin.load_state_dict(fusion.state_dict())
    attns = [m for m in twin.modules() if isinstance(m, MultiHeadAttention)]
    assert any(m.choose_impl(49, 6, cross=True) != "sdpa" for m in attns)
    for m in attns:
        m.impl = "sdpa"
    g = torch.Generator().manual_seed(0)
    lang_mask = torch.tensor([[True] * 6, [False] * 6, [True] * 3 + [False] * 3])
    x = ModalityTokens(
        tokens={
            "language": torch.randn(B, 6, 128, generator=g),
            "vision": torch.randn(B, 49, 128, generator=g),
            "proprio": torch.randn(B, 1, 128, generator=g),
        },
        masks={"language": lang_mask},
    )
    with torch.no_grad():
        a, b = fusion(x), twin(x)
    assert torch.isfinite(a.pooled).all()
    torch.testing.assert_close(a.pooled, b.pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.tokens[a.mask], b.tokens[b.mask], atol=1e-5, rtol=1e-5)
