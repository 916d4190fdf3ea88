"""Image augmentations vs. naive references: shift, colour jitter, reproducibility, range."""

from __future__ import annotations

import pytest
import torch

from mmvla.modules.augment import AugmentConfig, adjust, augment, color_jitter, random_shift, shift


def _images(b: int = 4, h: int = 12, w: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_shift_zero_offset_is_identity() -> None:
    x = _images()
    assert torch.equal(shift(x, torch.zeros(4, 2, dtype=torch.long)), x)
    assert torch.equal(random_shift(x, pad=0), x)


def test_shift_matches_naive_replicate_crop() -> None:
    x = _images(b=3)
    offsets = torch.tensor([[2, -1], [-3, 3], [0, 1]])
    out = shift(x, offsets)
    _, _, h, w = x.shape
    for b, (dx, dy) in enumerate(offsets.tolist()):
        for yy in range(h):
            for xx in range(w):
                src = x[b, :, min(max(yy + dy, 0), h - 1), min(max(xx + dx, 0), w - 1)]
                assert torch.equal(out[b, :, yy, xx], src)


def test_random_shift_per_sample_range_and_reproducible() -> None:
    x = _images(b=16, h=16, w=16)
    a = random_shift(x, pad=4, generator=torch.Generator().manual_seed(7))
    b = random_shift(x, pad=4, generator=torch.Generator().manual_seed(7))
    c = random_shift(x, pad=4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    # every output is one of the 81 allowed shifts of its own input, and shifts vary across the batch
    found: dict[int, tuple[int, int]] = {}
    for dx in range(-4, 5):
        for dy in range(-4, 5):
            cand = shift(x, torch.tensor([[dx, dy]]).expand(16, 2))
            for i in range(16):
                if i not in found and torch.equal(a[i], cand[i]):
                    found[i] = (dx, dy)
    assert sorted(found) == list(range(16)), "some sample is not a shift of its input"
    assert len(set(found.values())) > 1


def test_adjust_unit_factors_identity_and_closed_forms() -> None:
    x = _images()
    ones = torch.ones(4)
    torch.testing.assert_close(adjust(x, ones, ones, ones), x)
    # saturation 0 -> grayscale copies in every channel; contrast 0 -> the mean luma everywhere
    gray = adjust(x, ones, ones, torch.zeros(4))
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for ch in range(3):
        torch.testing.assert_close(gray[:, ch], luma)
    flat = adjust(x, ones, torch.zeros(4), ones)
    torch.testing.assert_close(flat, luma.mean(dim=(1, 2)).view(4, 1, 1, 1).expand_as(x))
    bright = adjust(x, torch.full((4,), 0.5), ones, ones)
    torch.testing.assert_close(bright, x * 0.5)


def test_color_jitter_range_per_sample_and_reproducible() -> None:
    x = _images(b=8)
    g = torch.Generator().manual_seed(3)
    a = color_jitter(x, 0.5, 0.5, 0.5, generator=g)
    b = color_jitter(x, 0.5, 0.5, 0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    ratios = (a.mean(dim=(1, 2, 3)) / x.mean(dim=(1, 2, 3))).tolist()
    assert len({round(r, 4) for r in ratios}) == 8  # independent factors per sample
    assert torch.equal(color_jitter(x, 0.0, 0.0, 0.0), x)
    with pytest.raises(ValueError, match="brightness"):
        color_jitter(x, brightness=1.5)


def test_augment_pipeline_and_config() -> None:
    x = _images(b=5, h=32, w=32)
    cfg = AugmentConfig(shift_pad=4)
    a = augment(x, cfg, torch.Generator().manual_seed(0))
    b = augment(x, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(augment(x, AugmentConfig(0, 0.0, 0.0, 0.0)), x)
    with pytest.raises(ValueError, match="shift_pad"):
        AugmentConfig(shift_pad=-1)
