"""Statistics equal NumPy's on the same arrays (float64, default linear quantiles)."""

from __future__ import annotations

import numpy as np
import pytest

from mmvla.data.stats import (
    QUANTILES,
    ImageStats,
    VectorStats,
    array_stats,
    channel_histogram,
    histogram_stats,
    stats_from_json,
    stats_to_json,
)


def _numpy_reference(x: np.ndarray, axis: tuple[int, ...] | int) -> dict[str, np.ndarray]:
    x = x.astype(np.float64)
    ref = {
        "min": x.min(axis=axis),
        "max": x.max(axis=axis),
        "mean": x.mean(axis=axis),
        "std": x.std(axis=axis),
    }
    for name, q in QUANTILES.items():
        ref[name] = np.quantile(x, q, axis=axis)
    return ref


def test_vector_stats_equal_numpy_over_several_updates() -> None:
    rng = np.random.default_rng(1)
    parts = [rng.normal(size=(n, 7)).astype(np.float32) * 3 + 1 for n in (5, 1, 40, 13)]
    acc = VectorStats(7)
    for p in parts:
        acc.update(p)
    got = acc.compute()
    ref = _numpy_reference(np.concatenate(parts), axis=0)
    for k, v in ref.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-12, atol=1e-12, err_msg=k)
        assert got[k].shape == (7,)
    assert got["count"].tolist() == [59]


def test_array_stats_one_dimensional_and_errors() -> None:
    x = np.arange(10, dtype=np.int64)
    s = array_stats(x)
    assert s["mean"].shape == (1,) and s["mean"][0] == 4.5 and s["q50"][0] == 4.5
    with pytest.raises(ValueError, match="non-empty"):
        array_stats(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="shape"):
        VectorStats(3).update(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="before any update"):
        VectorStats(3).compute()


@pytest.mark.parametrize("kind", ["uniform", "skewed", "constant", "two_values", "single_pixel"])
def test_image_stats_equal_numpy_in_unit_range(kind: str) -> None:
    rng = np.random.default_rng(2)
    if kind == "uniform":
        imgs = rng.integers(0, 256, (9, 6, 5, 3), dtype=np.uint8)
    elif kind == "skewed":
        imgs = (rng.beta(0.5, 3.0, (9, 6, 5, 3)) * 255).astype(np.uint8)
    elif kind == "constant":
        imgs = np.full((4, 3, 3, 3), 77, dtype=np.uint8)
    elif kind == "two_values":
        imgs = rng.choice(np.array([3, 250], dtype=np.uint8), size=(4, 3, 3, 3))
    else:
        imgs = rng.integers(0, 256, (1, 1, 1, 3), dtype=np.uint8)
    acc = ImageStats()
    k = min(2, imgs.shape[0] - 1)
    if k > 0:
        acc.update(imgs[:k])  # histograms add across updates
    acc.update_histogram(channel_histogram(imgs[k:]), frames=imgs.shape[0] - k)
    got = acc.compute()
    ref = _numpy_reference(imgs / 255.0, axis=(0, 1, 2))  # per channel, [0, 1] units
    for k, v in ref.items():
        assert got[k].shape == (3, 1, 1), k
        np.testing.assert_allclose(got[k].ravel(), v, rtol=1e-12, atol=1e-12, err_msg=k)
    assert got["count"].tolist() == [imgs.shape[0]]


def test_histogram_stats_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(C, 256\)"):
        histogram_stats(np.zeros((3, 255)), 1)
    with pytest.raises(ValueError, match="empty"):
        histogram_stats(np.zeros((3, 256)), 1)
    with pytest.raises(ValueError, match="uint8"):
        channel_histogram(np.zeros((1, 2, 2, 3), dtype=np.float32))


def test_json_round_trip_is_exact() -> None:
    rng = np.random.default_rng(3)
    acc = ImageStats()
    acc.update(rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8))
    stats = {"observation.images.front": acc.compute(), "action": array_stats(rng.normal(size=(20, 7)))}
    back = stats_from_json(stats_to_json(stats))
    for feat, s in stats.items():
        for k, v in s.items():
            np.testing.assert_array_equal(back[feat][k], v)
    with pytest.raises(ValueError, match="'mean' of feature 'action'"):
        stats_from_json({"action": {"mean": ["x"]}})
