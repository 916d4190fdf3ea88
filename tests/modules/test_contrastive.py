"""Contrastive loss, temperature clamp, parameter groups and alignment metrics vs. independent references."""

from __future__ import annotations

import math

import pytest
import torch

from mmvla.modules.contrastive import (
    ContrastiveConfig,
    ContrastiveHead,
    alignment_metrics,
    info_nce,
    modality_gap,
    param_groups,
    positive_targets,
    retrieval_recall,
)


def _naive_info_nce(
    img: list[list[float]], txt: list[list[float]], scale: float, groups: list[int] | None
) -> float:
    """Float64 explicit loops: normalise, logits, soft targets, two log-softmax cross entropies."""
    b = len(img)

    def norm(v: list[float]) -> list[float]:
        n = math.sqrt(sum(x * x for x in v))
        return [x / n for x in v]

    iv, tv = [norm(v) for v in img], [norm(v) for v in txt]
    logits = [
        [scale * sum(a * c for a, c in zip(iv[i], tv[j], strict=True)) for j in range(b)] for i in range(b)
    ]
    g = groups if groups is not None else list(range(b))

    def ce(z: list[list[float]]) -> float:
        total = 0.0
        for i in range(b):
            m = max(z[i])
            lse = m + math.log(sum(math.exp(x - m) for x in z[i]))
            pos = [j for j in range(b) if g[j] == g[i]]
            total += -sum((z[i][j] - lse) / len(pos) for j in pos)
        return total / b

    zt = [[logits[j][i] for j in range(b)] for i in range(b)]
    return 0.5 * (ce(logits) + ce(zt))


def test_info_nce_matches_hand_computed_small_example() -> None:
    img = [[1.0, 0.0, 0.5], [0.2, 1.0, -0.3], [-0.4, 0.1, 1.0]]
    txt = [[0.9, 0.1, 0.4], [0.0, 1.2, 0.1], [0.3, -0.2, 0.8]]
    scale = 1 / 0.07
    got = info_nce(torch.tensor(img), torch.tensor(txt), torch.tensor(scale))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(_naive_info_nce(img, txt, scale, None), rel=1e-5, abs=1e-5)


def test_info_nce_multi_positive_matches_hand_computed() -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.randn(6, 4, generator=g, dtype=torch.float64)
    txt = torch.randn(6, 4, generator=g, dtype=torch.float64)
    groups = [0, 1, 0, 2, 1, 0]
    got = info_nce(img, txt, 5.0, torch.tensor(groups))
    want = _naive_info_nce(img.tolist(), txt.tolist(), 5.0, groups)
    assert got.item() == pytest.approx(want, rel=1e-5)
    # all-distinct groups reduce to the one-hot loss
    distinct = info_nce(img, txt, 5.0, torch.arange(6))
    assert distinct.item() == pytest.approx(info_nce(img, txt, 5.0).item(), rel=1e-6)


@pytest.mark.parametrize("b", [2, 7, 32])
def test_info_nce_uninformative_is_log_b(b: int) -> None:
    emb = torch.randn(1, 16).expand(b, 16)
    assert info_nce(emb, emb, 100.0).item() == pytest.approx(math.log(b), rel=1e-6)


def test_info_nce_fp32_with_half_inputs() -> None:
    img, txt = torch.randn(8, 16).bfloat16(), torch.randn(8, 16).bfloat16()
    loss = info_nce(img, txt, torch.tensor(14.0))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(info_nce(img.float(), txt.float(), 14.0).item(), rel=1e-6)


def test_positive_targets_rows_sum_to_one() -> None:
    t = positive_targets(torch.tensor([3, 3, 1, 3]))
    assert torch.allclose(t.sum(1), torch.ones(4))
    assert t[0].tolist() == pytest.approx([1 / 3, 1 / 3, 0.0, 1 / 3])
    assert t[2].tolist() == [0.0, 0.0, 1.0, 0.0]


def test_head_initial_scale_and_clamp_after_step() -> None:
    head = ContrastiveHead(ContrastiveConfig(embed_dim=8, vision_dim=5, text_dim=6))
    assert head.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    opt = torch.optim.AdamW(param_groups(head, 0.1), lr=10.0)  # a huge step pushes the scale up
    for _ in range(3):
        opt.zero_grad()
        (-head.logit_scale).backward()
        opt.step()
        assert head.scale.item() > 100.0
        head.clamp_()
        assert head.scale.item() <= 100.0 + 1e-4
    assert head.scale.item() == pytest.approx(100.0, rel=1e-5)


def test_head_forward_gradients_reach_everything() -> None:
    head = ContrastiveHead(ContrastiveConfig(embed_dim=8, vision_dim=5, text_dim=6))
    out = head(torch.randn(4, 5), torch.randn(4, 6), groups=torch.tensor([0, 0, 1, 2]))
    out.loss.backward()
    assert out.img_emb.shape == (4, 8) and torch.allclose(out.img_emb.norm(dim=-1), torch.ones(4))
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_param_groups_no_decay_on_scale_and_1d() -> None:
    head = ContrastiveHead(ContrastiveConfig(embed_dim=8, vision_dim=5, text_dim=6))
    decay, no_decay = param_groups(head, 0.05)
    names = {id(p): n for n, p in head.named_parameters()}
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == ["text_proj.weight", "vision_proj.weight"]  # type: ignore[attr-defined]
    assert sorted(names[id(p)] for p in no_decay["params"]) == [  # type: ignore[attr-defined]
        "logit_scale",
        "text_proj.bias",
        "vision_proj.bias",
    ]


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="init_temperature"):
        ContrastiveConfig(init_temperature=0.0)
    with pytest.raises(ValueError, match="exceeds"):
        ContrastiveConfig(init_temperature=0.001)


def _ranked_similarity(ranks: list[int]) -> torch.Tensor:
    """(B, B) scores where the paired item of query i sits at 0-based rank ranks[i], in both directions.

    Off-diagonal entries are ``-((j - i) mod B)`` (distinct values -1..-(B-1) in every row and every
    column); the diagonal ``-ranks[i] - 0.5`` has exactly ``ranks[i]`` larger entries in its row and column.
    """
    b = len(ranks)
    s = torch.tensor([[-float((j - i) % b) for j in range(b)] for i in range(b)])
    s[range(b), range(b)] = -torch.tensor(ranks, dtype=torch.float32) - 0.5
    return s


def test_recall_closed_form() -> None:
    b = 12
    sim = _ranked_similarity(list(range(b)))  # query i's match at rank i
    for r in (retrieval_recall(sim), retrieval_recall(sim.T)):
        assert r == {1: pytest.approx(1 / 12), 5: pytest.approx(5 / 12), 10: pytest.approx(10 / 12)}
    ranks = [0, 0, 3, 7, 11, 4, 4, 9, 1, 2, 0, 5]
    r = retrieval_recall(_ranked_similarity(ranks), ks=(1, 2, 5, 10, 50))
    assert r[1] == pytest.approx(3 / 12)
    assert r[2] == pytest.approx(4 / 12)
    assert r[5] == pytest.approx(sum(x < 5 for x in ranks) / 12)
    assert r[10] == pytest.approx(11 / 12)
    assert r[50] == 1.0


def test_recall_multi_positive_any_positive_counts() -> None:
    sim = _ranked_similarity(list(range(6)))
    # Rows 0, 4, 5 share group 0. Row 4's scores: j=5 -1, j=0 -2, j=1 -3, j=2 -4, j=4 -4.5, j=3 -5: its
    # top column (5) is a positive -> hit at k=1 although its own pair is at rank 4. Row 5: j=0 scores -1,
    # top -> hit. Row 0: own pair at rank 0 -> hit. Rows 1, 2, 3 (own pair at ranks 1, 2, 3) miss.
    groups = torch.tensor([0, 1, 2, 3, 0, 0])
    r = retrieval_recall(sim, groups, ks=(1,))
    assert r[1] == pytest.approx(3 / 6)


def test_alignment_metrics_closed_form_cyclic() -> None:
    """img_i = e_i, txt_j[i] = w[(i - j + rho) mod B] / ‖w‖: every match at rank rho in both directions."""
    b, rho = 12, 3
    w = torch.linspace(1.0, 0.1, b)  # strictly decreasing, distinct
    img = torch.eye(b) * 3.0  # scaled rows: metrics must normalise
    txt = torch.stack([torch.stack([w[(i - j + rho) % b] for i in range(b)]) for j in range(b)])
    m = alignment_metrics(img, txt)
    assert m.recall_i2t == {1: 0.0, 5: 1.0, 10: 1.0}
    assert m.recall_t2i == {1: 0.0, 5: 1.0, 10: 1.0}
    assert m.matched_similarity == pytest.approx(float(w[rho] / w.norm()), rel=1e-6)
    assert m.mean_similarity == pytest.approx(float(w.sum() / w.norm() / b), rel=1e-6)
    assert set(m.as_dict()) >= {"matched_similarity", "recall_i2t@1", "recall_t2i@10"}


def test_modality_gap_closed_form() -> None:
    """vision_i = (cos θ_i, sin θ_i, 1, 0)/√2, text_i = (cos θ_i, sin θ_i, 0, 1)/√2, θ = 0, 90, 180, 270°.

    Centroids (0, 0, 1/√2, 0) and (0, 0, 0, 1/√2): gap = 1. Per-dim unbiased variances: x and y dims
    (1/2 + 0 + 1/2 + 0)/3 = 1/3, others 0 -> mean 1/6 per modality; ratio = 1 / (1/3) = 3.
    """
    ang = torch.tensor([0.0, 0.5, 1.0, 1.5], dtype=torch.float64) * math.pi
    c, s = ang.cos(), ang.sin()
    z, o = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    vision = torch.stack([c, s, o, z], dim=1) * torch.tensor(
        [[1.0], [2.0], [0.5], [7.0]], dtype=torch.float64
    )
    text = torch.stack([c, s, z, o], dim=1)
    g = modality_gap(vision, text)  # vision rows rescaled: normalisation happens inside
    assert g.gap == pytest.approx(1.0, abs=1e-12)
    assert g.vision_variance == pytest.approx(1 / 6, abs=1e-12)
    assert g.text_variance == pytest.approx(1 / 6, abs=1e-12)
    assert g.gap_to_variance_ratio == pytest.approx(3.0, abs=1e-10)
    assert next(iter(g.as_dict())) == "modality_gap"


def test_modality_gap_offset_vector() -> None:
    """Unit vectors of one modality, the other the same set rotated: gap = |rotation of centroid - centroid|."""
    gen = torch.Generator().manual_seed(1)
    x = torch.nn.functional.normalize(
        torch.randn(50, 3, generator=gen, dtype=torch.float64) + torch.tensor([2.0, 0, 0]), dim=-1
    )
    rot = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    y = x @ rot.T
    g = modality_gap(x, y)
    c = x.mean(0)
    assert g.gap == pytest.approx(float((c - rot @ c).norm()), rel=1e-10)
    assert g.vision_variance == pytest.approx(float(x.var(0).mean()), rel=1e-10)
