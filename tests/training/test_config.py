"""Training config files merged with overrides (``mmvla train --config FILE`` plus flags)."""

from __future__ import annotations

import json

import pytest

from mmvla.policy import PolicyConfig
from mmvla.training.config import apply_overrides, read_config_file, training_configs


def test_file_then_overrides(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"policy": {"dim": 64, "vision": {"kind": "cnn"}}, "train": {"steps": 7}}))
    policy, train = training_configs(path, {"vision.kind": "patch", "fusion": "late"}, {"lr": 0.01})
    assert (policy.dim, policy.vision["kind"], policy.fusion) == (64, "patch", "late")
    assert (train.steps, train.lr) == (7, 0.01)
    # A head flag on a file without a head starts from the default head, keeping its chunk size.
    policy, _ = training_configs(path, {"head.kind": "bins"})
    assert policy.head == {**PolicyConfig().head, "kind": "bins"}
    assert training_configs() == (PolicyConfig(), training_configs()[1])


def test_malformed_files_and_fields_are_named(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps({"policy": {}, "model": {}}))
    with pytest.raises(ValueError, match="only 'policy' and 'train'"):
        read_config_file(path)
    path.write_text(json.dumps({"train": [1]}))
    with pytest.raises(ValueError, match="'train' must be an object"):
        read_config_file(path)
    with pytest.raises(ValueError, match=r"unknown field.*stepz"):
        training_configs(None, train={"stepz": 1})
    with pytest.raises(ValueError, match="'a' is not a dict field"):
        apply_overrides({"a": 1}, {"a.b": 2})
