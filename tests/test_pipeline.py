"""mmvla.pipeline without a simulator: resume detection (finished reused, partial resumed, changed
refused) and the demo summary. The chains end to end: tests/evaluation/test_compare.py, tests/cli."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import mmvla.training.trainer
from mmvla.core.paths import RunPaths
from mmvla.pipeline import claim_run, run_state, train_step, write_summary
from mmvla.training.recipes import demo_configs


def _fake_train(calls: list[dict]):
    def train(data, out, policy_cfg, train_cfg, **kw):
        calls.append(kw)
        paths = RunPaths(out)
        paths.policy.mkdir(parents=True, exist_ok=True)
        paths.policy_weights.write_bytes(b"")
        return mmvla.training.trainer.TrainResult(Path(out), paths.policy, train_cfg.steps, 0.5, 2.0, 100.0)

    return train


def test_run_state_and_train_step_resume_detection(tmp_path, monkeypatch):
    policy_cfg, train_cfg = demo_configs(steps=4)
    paths = RunPaths(tmp_path / "run")
    calls: list[dict] = []
    monkeypatch.setattr(mmvla.training.trainer, "train", _fake_train(calls))

    assert run_state(paths.root) == "new"
    step = train_step(tmp_path / "data", paths.root, policy_cfg, train_cfg)
    assert calls[-1]["resume"] is False and step.resumed_from is None and step.result is not None

    paths.policy_weights.unlink()  # a killed run: a checkpoint at step 2, no final policy
    paths.trainer_state.parent.mkdir(parents=True)
    paths.trainer_state.write_text(json.dumps({"step": 2}))
    assert run_state(paths.root) == "partial"
    step = train_step(tmp_path / "data", paths.root, policy_cfg, train_cfg)
    assert calls[-1]["resume"] is True and step.resumed_from == 2

    assert run_state(paths.root) == "finished"
    n = len(calls)
    step = train_step(tmp_path / "data", paths.root, policy_cfg, train_cfg, reuse_finished=True)
    assert len(calls) == n and step.result is None and step.policy_dir == paths.policy  # reused
    train_step(tmp_path / "data", paths.root, policy_cfg, train_cfg)  # not reused: the trainer resumes
    assert len(calls) == n + 1 and calls[-1]["resume"] is True


def test_a_run_with_other_settings_is_refused(tmp_path):
    run = tmp_path / "run"
    spec = {"seed": 0, "train": {"steps": 3}, "data": "d"}
    claim_run(run, spec)  # nothing recorded yet
    run.mkdir()
    RunPaths(run).spec.write_text(json.dumps(spec))
    claim_run(run, spec)  # the same settings
    with pytest.raises(ValueError, match=r"other settings \(train differ\)"):
        claim_run(run, {**spec, "train": {"steps": 4}})


def test_summary_holds_success_controls_and_timings(tmp_path):
    policy_cfg, _ = demo_configs()
    metrics = {
        "success": {"train": 0.5004, "unseen": 0.25},
        "wordings": {"heldout": {"success": {"train": 0.4, "unseen": 0.2}}},
    }
    controls = {"blank_images": {"train": 0.1, "unseen": 0.0}}
    path = write_summary(tmp_path, policy_cfg, 8, metrics, controls, {"train_s": 12.345})
    assert json.loads(path.read_text()) == {
        "fusion": "film",
        "head": "regression",
        "steps": 8,
        "success_train": 0.5,
        "success_unseen": 0.25,
        "success_heldout_wordings_train": 0.4,
        "success_heldout_wordings_unseen": 0.2,
        "control_blank_images_train": 0.1,
        "control_blank_images_unseen": 0.0,
        "train_s": 12.3,
    }
