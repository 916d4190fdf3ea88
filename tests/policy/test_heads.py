import pytest
import torch

from mmvla.modules.fusion import FusionOutput
from mmvla.modules.heads import HeadConfig, build_head


def _fused(B: int, D: int, seed: int = 0) -> FusionOutput:
    g = torch.Generator().manual_seed(seed)
    return FusionOutput(
        tokens=torch.randn(B, 5, D, generator=g),
        mask=torch.ones(B, 5, dtype=torch.bool),
        pooled=torch.randn(B, D, generator=g),
        aux_loss=torch.zeros(()),
    )


@pytest.mark.parametrize("kind", ["regression", "bins", "flow"])
def test_head_fits_a_fixed_mapping(kind):
    torch.manual_seed(0)
    B, D, k, A = 8, 32, 3, 7
    head = build_head(HeadConfig(kind=kind, dim=D, action_dim=A, chunk_size=k, hidden=64, flow_steps=20))
    fused = _fused(B, D)
    target = torch.rand(B, k, A, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    mask = torch.ones(B, k, dtype=torch.bool)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    first = float(head.loss(fused, target, mask).detach())
    for _ in range(300):
        loss = head.loss(fused, target, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(head.loss(fused, target, mask).detach()) < 0.3 * first
    pred = head.predict(fused, generator=torch.Generator().manual_seed(0))
    assert pred.shape == (B, k, A)
    # Flow samples from noise through a learned field: looser, but far below the ~0.9 of untrained noise.
    assert (pred - target).abs().mean() < (0.2 if kind == "flow" else 0.05)


def test_bins_round_trip_closed_form():
    head = build_head(HeadConfig(kind="bins", dim=8, num_bins=5, bin_range=1.0))
    x = torch.tensor([-1.0, -0.6, -0.4, 0.1, 0.9, 3.0])
    assert head.to_bins(x).tolist() == [0, 1, 1, 2, 4, 4]  # centres -1, -0.5, 0, 0.5, 1


def test_masked_steps_do_not_contribute():
    torch.manual_seed(0)
    head = build_head(HeadConfig(kind="regression", dim=16, chunk_size=3))
    fused = _fused(2, 16)
    target = torch.zeros(2, 3, 7)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    other = target.clone()
    other[~mask] = 100.0
    assert torch.equal(head.loss(fused, target, mask), head.loss(fused, other, mask))


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="unknown action head"):
        HeadConfig(kind="diffusion")
    with pytest.raises(ValueError, match="chunk_size"):
        HeadConfig(chunk_size=0)
