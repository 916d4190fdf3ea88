"""Task vocabulary, instructions and the held-out split."""

from __future__ import annotations

import pytest

from mmvla.sim.tabletop.tasks import (
    COLOURS,
    DIRECTIONS,
    HELD_OUT,
    INSTRUCTION_CHARSET,
    SHAPES,
    TaskSpec,
    all_instructions,
    all_tasks,
    combos_for_split,
    instruction_for,
    parse_instruction,
    vocabulary,
)


def test_at_least_five_colours_and_three_shapes():
    assert len(COLOURS) >= 5 and len(SHAPES) >= 3


def test_held_out_leaves_every_word_seen_in_training():
    train = set(combos_for_split("train"))
    for colour, shape in HELD_OUT:
        assert any(c == colour for c, _ in train)
        assert any(s == shape for _, s in train)
    train_words = {w for s in all_instructions("train") for w in s.split()}
    assert set(vocabulary()) == train_words


def test_splits_partition_the_instructions():
    train, unseen, every = (set(all_instructions(s)) for s in ("train", "unseen", "all"))
    assert train and unseen
    assert train.isdisjoint(unseen)
    assert train | unseen <= every
    for text in unseen:
        assert parse_instruction(text).target in HELD_OUT
    for text in train:
        task = parse_instruction(text)
        assert task.target not in HELD_OUT and (task.base is None or task.base not in HELD_OUT)


def test_instruction_round_trip_and_charset():
    for split in ("train", "unseen"):
        for task in all_tasks(split):
            text = task.instruction
            assert parse_instruction(text) == task
            assert set(text) <= set(INSTRUCTION_CHARSET)
            assert text == text.strip().lower() and "  " not in text
    assert instruction_for("push", "red", "cube", direction="left") == "push the red cube to the left"
    assert len(all_instructions("all", ["push"])) == len(COLOURS) * len(SHAPES) * len(DIRECTIONS)


@pytest.mark.parametrize(
    "bad",
    ["pick up the pink cube", "pick up the red ball", "push the red cube to the top", "dance", ""],
)
def test_parse_rejects_non_canonical(bad):
    with pytest.raises(ValueError):
        parse_instruction(bad)


def test_taskspec_validation():
    with pytest.raises(ValueError, match="direction"):
        TaskSpec("push", ("red", "cube"))
    with pytest.raises(ValueError, match="base"):
        TaskSpec("place", ("red", "cube"), base=("blue", "cylinder"))
