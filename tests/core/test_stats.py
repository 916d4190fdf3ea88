"""mmvla.core.stats against closed forms and naive enumerations."""

import math

import numpy as np
import pytest

from mmvla.core.stats import cluster_bootstrap_rmse, holm_reject, mcnemar_exact, wilson_interval


def test_wilson_matches_closed_form():
    # Textbook values: 5/10 -> [0.2366, 0.7634]; 0/10 -> [0, 0.2775]; 10/10 -> [0.7225, 1].
    for (k, n), (lo, hi) in {
        (5, 10): (0.2366, 0.7634),
        (0, 10): (0.0, 0.2775),
        (10, 10): (0.7225, 1.0),
    }.items():
        got = wilson_interval(k, n)
        assert math.isclose(got[0], lo, abs_tol=1e-4) and math.isclose(got[1], hi, abs_tol=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_cluster_bootstrap_rmse_matches_a_naive_resampling_loop():
    rng = np.random.default_rng(3)
    clusters = np.array([7, 7, 7, 2, 2, 9, 9, 9, 9, 4])  # unequal cluster sizes, unsorted ids
    sq = rng.random((3, clusters.size)) ** 2
    rmse, boot = cluster_bootstrap_rmse(sq, clusters, n_boot=50, seed=11)
    np.testing.assert_allclose(rmse, [math.sqrt(sum(r) / len(r)) for r in sq.tolist()], rtol=1e-12)
    ids = sorted(set(clusters.tolist()))
    draws = np.random.default_rng(11).integers(0, len(ids), size=(50, len(ids)))
    for b in range(50):
        rows = [i for c in draws[b] for i in range(clusters.size) if clusters[i] == ids[c]]
        for k in range(3):
            want = math.sqrt(sum(float(sq[k, i]) for i in rows) / len(rows))
            assert boot[b, k] == pytest.approx(want, rel=1e-12)
    # A model whose error is constant has the same RMSE in every draw.
    _, flat = cluster_bootstrap_rmse(np.full((1, clusters.size), 4.0), clusters, n_boot=20)
    np.testing.assert_allclose(flat, 2.0)
    with pytest.raises(ValueError, match="clusters"):
        cluster_bootstrap_rmse(sq, clusters[:-1])
    with pytest.raises(ValueError, match="n_boot"):
        cluster_bootstrap_rmse(sq, clusters, n_boot=0)


def test_mcnemar_exact_matches_the_binomial_test():

    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)  # 2 * P(Bin(5, 1/2) = 0)
    assert mcnemar_exact(3, 3) == 1.0 and mcnemar_exact(0, 0) == 1.0
    scipy_stats = pytest.importorskip("scipy.stats")
    for b, c in [(22, 2), (9, 4), (1, 12), (30, 18), (7, 0)]:
        want = scipy_stats.binomtest(b, b + c, 0.5).pvalue
        assert mcnemar_exact(b, c) == pytest.approx(want, rel=1e-12)
        assert mcnemar_exact(c, b) == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match=">= 0"):
        mcnemar_exact(-1, 2)


def test_holm_step_down():

    # sorted 0.01 <= 0.05/4, then 0.03 > 0.05/3 stops: only the first is rejected
    assert holm_reject([0.04, 0.01, 0.03, 0.5]) == [False, True, False, False]
    assert holm_reject([0.02, 0.001, 0.04]) == [True, True, True]  # 0.001<=.05/3, .02<=.05/2, .04<=.05
    assert holm_reject([]) == []
