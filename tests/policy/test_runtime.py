import numpy as np
import pytest

from mmvla.policy.runtime import ActionChunker


def test_execute_mode_plays_chunk_then_asks_again():
    c = ActionChunker(chunk_size=4, mode="execute", execute_steps=3)
    chunk = np.arange(8, dtype=np.float32).reshape(4, 2)
    assert c.needs_prediction()
    c.push(chunk)
    out = []
    for _ in range(3):
        assert not c.needs_prediction()
        out.append(c.pop())
    assert c.needs_prediction()
    np.testing.assert_array_equal(np.stack(out), chunk[:3])


def test_ensemble_matches_naive_weighted_average():
    rng = np.random.default_rng(0)
    k, decay, steps = 4, 0.3, 9
    chunks = [rng.normal(size=(k, 3)).astype(np.float32) for _ in range(steps)]
    c = ActionChunker(chunk_size=k, mode="ensemble", decay=decay)
    for t in range(steps):
        c.push(chunks[t])
        got = c.pop()
        # naive: every chunk predicted at s in (t-k, t], oldest first, weights exp(-decay * i)
        live = [chunks[s][t - s] for s in range(max(0, t - k + 1), t + 1)]
        w = np.exp(-decay * np.arange(len(live)))
        want = (np.stack(live) * (w / w.sum())[:, None]).sum(0)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="chunk mode"):
        ActionChunker(4, mode="bogus")
    with pytest.raises(ValueError, match="execute_steps"):
        ActionChunker(4, mode="execute", execute_steps=5)
    with pytest.raises(ValueError, match="chunk must be"):
        ActionChunker(4).push(np.zeros((3, 7)))
