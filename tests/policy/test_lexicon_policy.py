"""The policy reads unseen words through its lexicon: the vocabulary comes from training, the switch
is validated, and what the language encoder reads is the grounded text."""

from __future__ import annotations

import json

import pytest
import torch
from vla_testdata import INSTRUCTIONS, small_policy_dict

from mmvla.data.dataset import VLADataset
from mmvla.evaluation.evaluate import EvalConfig
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.sim.tabletop.wordings import TRAIN_PER_TASK, split_plain, training_vocabulary, wordings_for
from mmvla.training.config import TrainConfig
from mmvla.training.trainer import dataset_normalizer, train


@pytest.fixture(scope="module")
def dataset(tiny_dataset):
    return VLADataset(tiny_dataset, chunk_size=3, progress=False)


def _policy(dataset, **overrides) -> VLAPolicy:
    cfg = PolicyConfig.from_dict(small_policy_dict(**overrides))
    torch.manual_seed(0)
    return VLAPolicy(cfg, dataset_normalizer(dataset, cfg))


def test_training_vocabulary_is_every_word_of_the_instructions_and_their_wordings():
    text = "pick up the red cube"
    pool = wordings_for(text, "train", 8)
    expected = sorted({w for t in pool for w in split_plain(t)})
    assert list(training_vocabulary([text], 8)) == expected
    assert training_vocabulary(["open the drawer"], 8) == ("drawer", "open", "the")  # not a tabletop task


def test_lexicon_is_validated_and_switchable(dataset):
    with pytest.raises(ValueError, match="lexicon"):
        PolicyConfig.from_dict(small_policy_dict(lexicon="thesaurus"))
    with pytest.raises(ValueError, match="lexicon"):
        EvalConfig(lexicon="thesaurus")
    with pytest.raises(ValueError, match="local checkpoint"):
        EvalConfig(lexicon="wordnet", server="ws://127.0.0.1:1")
    policy = _policy(dataset)
    assert policy.lexicon == "none" and policy.grounding is None
    assert policy.read_instructions(["Nudge the RED cube!"]) == ["nudge the red cube"]
    policy.set_lexicon("wordnet")
    assert policy.lexicon == "wordnet"
    # No saved vocabulary: the instructions' words and their training wordings are the known words.
    assert policy.grounding is not None
    assert policy.grounding.known == frozenset(training_vocabulary(policy.cfg.instructions, TRAIN_PER_TASK))
    assert policy.read_instructions(["Nudge the RED cube!", "pick up the red cube"]) == [
        "push the red cube",
        "pick up the red cube",
    ]
    with pytest.raises(ValueError, match="lexicon"):
        policy.set_lexicon("thesaurus")


def test_language_encoder_reads_the_grounded_text(dataset):
    policy = _policy(dataset, lexicon="wordnet")
    seen: list[list[str]] = []
    original = policy.language.forward

    def spy(texts):
        seen.append(list(texts))
        return original(texts)

    policy.language.forward = spy  # type: ignore[method-assign]
    images = {c: torch.zeros(1, 3, policy.cfg.image_size, policy.cfg.image_size) for c in policy.cfg.cameras}
    policy.encode(images, ["Nudge a red dice to the left"], torch.zeros(1, policy.cfg.state_dim))
    assert seen == [["push a red cube to the left"]]


def test_trainer_saves_the_vocabulary_it_trained_on(tiny_dataset, tmp_path):
    for augment, per_task in ((0.0, 1), (0.5, 4)):
        out = tmp_path / f"run{augment}"
        cfg = PolicyConfig.from_dict(small_policy_dict())
        tcfg = TrainConfig(
            steps=2, batch_size=4, warmup_steps=1, wording_augment=augment, wordings_per_task=per_task
        )
        train(tiny_dataset, out, cfg, tcfg, progress=False)
        saved = json.loads((out / "policy" / "config.json").read_text())
        assert saved["vocabulary"] == list(training_vocabulary(sorted(INSTRUCTIONS), per_task))
