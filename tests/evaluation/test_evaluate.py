import math

import pytest

from mmvla.evaluation.evaluate import EpisodeResult, read_rephrase_file, summarise, wilson_interval


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


def test_summarise_per_split_and_family():
    rs = [
        EpisodeResult("train", i, "pick" if i % 2 else "push", "x", "x", success=i < 3, length=10 + i)
        for i in range(6)
    ] + [EpisodeResult("unseen", 0, "pick", "y", "y", success=False, length=50)]
    m = summarise(rs)
    assert m["success"] == {"train": 0.5, "unseen": 0.0}
    assert m["episodes"] == {"train": 6, "unseen": 1}
    assert m["per_family"]["train"]["pick"]["success"] == pytest.approx(1 / 3)  # seeds 1, 3, 5 -> only 1
    assert m["per_family"]["train"]["push"]["success"] == pytest.approx(2 / 3)  # seeds 0, 2, 4 -> 0, 2
    assert m["length"]["train"]["mean_success"] == pytest.approx(11.0)  # lengths 10, 11, 12


def test_rephrase_file(tmp_path):
    p = tmp_path / "r.tsv"
    p.write_text("# comment\npick up the red cube\tgrab the red block\n\n")
    assert read_rephrase_file(p) == {"pick up the red cube": "grab the red block"}
    p.write_text("no tab here\n")
    with pytest.raises(ValueError, match=":1:"):
        read_rephrase_file(p)


def test_cluster_bootstrap_rmse_matches_a_naive_resampling_loop():
    import numpy as np

    from mmvla.evaluation.evaluate import cluster_bootstrap_rmse

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
