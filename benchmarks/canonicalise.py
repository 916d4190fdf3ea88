"""Canonicalisation by nearest known instruction, measured without a policy (issue #15).

One way to follow a wording the policy never saw is to replace it, before the policy reads it, by the
known instruction whose frozen all-MiniLM-L6-v2 embedding is nearest. This measures how often that
lands on the right task, for every tabletop task (pick, push, place), three ways:

    sentence_nn   nearest of all training wordings (32 per task, the canonical one included), by the
                  cosine of the mean-pooled sentence embeddings; its task is the answer
    class_mean    nearest task by the cosine to the mean embedding of its training wordings
    word_nn       each word outside the training vocabulary replaced by the training word whose
                  embedding (the word alone) is nearest; the rewritten wording is then parsed

on three sets of wordings: other training-vocabulary wordings (seed 1: new sentences, known words),
``heldout_phrasing`` (unseen verbs, fillers and phrasings, known object words) and the shipped
``heldout`` set (no content word from training). The answer is right when its task equals the
wording's own task (:func:`mmvla.sim.tabletop.wordings.parse_wording`, the simulator's ground truth).

    .venv/bin/python benchmarks/canonicalise.py     # ~2 min on 2 cores

Writes benchmarks/results/canonicalise.json and prints a summary.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from mmvla.core.io import atomic_write_json
from mmvla.modules.language import LanguageConfig, MiniLMTextEncoder, normalize_instruction
from mmvla.sim.tabletop.tasks import TaskSpec
from mmvla.sim.tabletop.wordings import (
    FUNCTION_WORDS,
    TRAIN,
    content_words,
    heldout_wordings,
    parse_wording,
    split_plain,
    wording_set,
)

RESULTS = Path(__file__).resolve().parent / "results"
SLOTS = ("family", "target", "direction", "base")


def _embed(enc: MiniLMTextEncoder, texts: list[str]) -> torch.Tensor:
    """(N, 384) unit-norm sentence embeddings, computed in batches of 256."""
    out = [enc.sentence_embeddings(texts[i : i + 256]) for i in range(0, len(texts), 256)]
    e = torch.cat(out)
    return e / e.norm(dim=-1, keepdim=True)


def _wrong_slots(got: TaskSpec, want: TaskSpec) -> str:
    return "+".join(s for s in SLOTS if getattr(got, s) != getattr(want, s))


def _score(answers: list[TaskSpec | None], truths: list[TaskSpec]) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    for got, want in zip(answers, truths, strict=True):
        if got is None:
            errors["unparsed"] += 1
        elif got != want:
            errors[_wrong_slots(got, want)] += 1
    right = len(truths) - sum(errors.values())
    return {"accuracy": right / len(truths), "wordings": len(truths), "errors": dict(errors.most_common())}


def _parse_or_none(text: str) -> TaskSpec | None:
    try:
        return parse_wording(text)
    except ValueError:
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-task", type=int, default=32, help="training wordings per task (the known set)")
    p.add_argument("--result", default=str(RESULTS / "canonicalise.json"))
    args = p.parse_args()
    t0 = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)
    enc = MiniLMTextEncoder(LanguageConfig(kind="minilm"))

    known = wording_set("train", args.per_task)  # canonical -> training wordings
    canon = sorted(known)
    keys = [c for c in canon for _ in known[c]]
    known_emb = _embed(enc, [normalize_instruction(w) for c in canon for w in known[c]])
    key_index = torch.tensor([canon.index(k) for k in keys])
    means = torch.stack([known_emb[key_index == i].mean(0) for i in range(len(canon))])
    means = means / means.norm(dim=-1, keepdim=True)
    known_tasks = [parse_wording(c) for c in canon]

    vocab = sorted(content_words(TRAIN) | FUNCTION_WORDS)
    vocab_emb = _embed(enc, vocab)

    def word_nn(text: str) -> str:
        words = split_plain(text)
        unknown = sorted({w for w in words if w not in vocab})
        if not unknown:
            return " ".join(words)
        near = (_embed(enc, unknown) @ vocab_emb.T).argmax(-1).tolist()
        swap = {w: vocab[j] for w, j in zip(unknown, near, strict=True)}
        return " ".join(swap.get(w, w) for w in words)

    sets: dict[str, list[tuple[str, str]]] = {
        "train_vocabulary_new_sentences": [
            (c, w)
            for c, ws in wording_set("train", 8, seed=1).items()
            for w in ws
            if w != c and w not in known[c]
        ],
        "heldout_phrasing": [(c, w) for c, ws in wording_set("heldout_phrasing", 8).items() for w in ws],
        "heldout": [(c, w) for c, ws in heldout_wordings().items() for w in ws],
    }
    out: dict[str, Any] = {
        "benchmark": "canonicalise",
        "encoder": "all-MiniLM-L6-v2 (frozen, mean-pooled, unit norm)",
        "known": {"tasks": len(canon), "wordings": len(keys), "vocabulary": len(vocab)},
        "sets": {},
    }
    for name, pairs in sets.items():
        truths = [parse_wording(c) for c, _ in pairs]
        emb = _embed(enc, [normalize_instruction(w) for _, w in pairs])
        nn = key_index[(emb @ known_emb.T).argmax(-1)].tolist()
        mean = (emb @ means.T).argmax(-1).tolist()
        out["sets"][name] = {
            "sentence_nn": _score([known_tasks[i] for i in nn], truths),
            "class_mean": _score([known_tasks[i] for i in mean], truths),
            "word_nn": _score([_parse_or_none(word_nn(w)) for _, w in pairs], truths),
        }
    out["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
    out["wall_seconds"] = time.perf_counter() - t0
    atomic_write_json(Path(args.result), out)
    print(f"{'set':32s} {'sentence_nn':>12s} {'class_mean':>11s} {'word_nn':>8s}")
    for name, r in out["sets"].items():
        print(
            f"{name:32s} {r['sentence_nn']['accuracy']:12.1%} {r['class_mean']['accuracy']:11.1%} "
            f"{r['word_nn']['accuracy']:8.1%}"
        )
    print(f"{out['wall_seconds']:.0f} s -> {args.result}")


if __name__ == "__main__":
    main()
