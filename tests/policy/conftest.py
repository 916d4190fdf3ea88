"""Shared fixtures of the policy tests: the training vocabulary and a task reader over it."""

from __future__ import annotations

import pytest

from mmvla.policy.reading import InstructionReader
from mmvla.sim.tabletop import wordings as W
from mmvla.sim.tabletop.tasks import all_instructions


@pytest.fixture(scope="module")
def vocabulary():
    return W.training_vocabulary(all_instructions("train"), W.TRAIN_PER_TASK)


@pytest.fixture(scope="module")
def reader(vocabulary):
    return InstructionReader("wordnet_task", vocabulary)
