"""collect -> train -> evaluate -> controls -> diagnostics on an easy fixed setting with non-zero success.

The setting: push tasks only, 32-pixel images, four episodes; the tiny policy is trained (300 steps) on
the scripted expert's demonstrations of exactly the episodes it is then evaluated on (same seeds, so
the same layouts), which a small network can learn in seconds. It must beat the same network untrained
(the random policy: same architecture, seed-0 initial weights, evaluated on the same episodes) by a
margin asserted here, so that evaluation, the blind controls and the diagnostics are all exercised on
outcomes that are not all zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from mmvla.data.collect import collect_dataset
from mmvla.evaluation.diagnostics import DiagnosticsConfig, run_diagnostics
from mmvla.evaluation.evaluate import EvalConfig, evaluate
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.policy.checkpoint import load_config
from mmvla.training.config import TrainConfig
from mmvla.training.trainer import train

SEED, EPISODES, MAX_STEPS = 5000, 4, 50
FAMILIES = ("push",)
MARGIN = 0.5  # trained success - untrained success, on the same four episodes


def _eval_cfg(**kw: Any) -> EvalConfig:
    return EvalConfig(
        episodes=EPISODES, split="train", workers=1, seed=SEED, families=FAMILIES, max_steps=MAX_STEPS, **kw
    )


@pytest.fixture(scope="module")
def easy_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("e2e")
    # One family: the environment draws the same layouts whether or not reset names the family, so the
    # demonstrations are the evaluation episodes.
    summary = collect_dataset(
        root / "data",
        episodes=EPISODES,
        seed=SEED,
        image_size=32,
        families=FAMILIES,
        noise_std=0.0,
        progress=False,
    )
    assert summary.kept == EPISODES
    cfg = PolicyConfig(
        image_size=32,
        dim=32,
        vision={"kind": "cnn", "channels": [8, 16], "strides": [2, 2]},
        fusion="film",
        fusion_options={"num_heads": 2, "num_layers": 1},
        head={"kind": "regression", "chunk_size": 4, "hidden": 64},
        camera_dropout=0.0,
    )
    tcfg = TrainConfig(
        steps=300,
        batch_size=16,
        warmup_steps=10,
        lr=3e-3,
        augment_shift=0,
        augment_jitter=0.0,
        log_every=50,
        device="cpu",
        threads=1,
    )
    run = train(root / "data", root / "run", cfg, tcfg, progress=False)
    # The random policy: the trained run's exact config and statistics, seed-0 initial weights.
    trained = VLAPolicy.from_pretrained(run.policy_dir)
    torch.manual_seed(0)
    untrained = VLAPolicy(load_config(run.policy_dir)[0], trained.normalizer)
    untrained_dir = untrained.save_pretrained(root / "untrained")
    return {
        "root": root,
        "policy": run.policy_dir,
        "untrained": untrained_dir,
        "metrics": evaluate(run.policy_dir, _eval_cfg(), root / "eval", progress=False),
        "random": evaluate(untrained_dir, _eval_cfg(), progress=False),
    }


def test_a_tiny_run_beats_the_untrained_policy(easy_run):
    trained, random = easy_run["metrics"], easy_run["random"]
    assert trained["episodes"] == random["episodes"] == {"train": EPISODES}
    assert trained["success"]["train"] - random["success"]["train"] >= MARGIN, (
        trained["success"],
        random["success"],
    )
    # Successful episodes end early, failed ones run to the limit: the mean length says the same.
    lengths = trained["length"]["train"]
    assert lengths["mean_success"] is not None and lengths["mean_success"] < MAX_STEPS
    assert random["length"]["train"]["mean"] == MAX_STEPS


def test_controls_and_diagnostics_on_a_policy_that_succeeds(easy_run, tmp_path):
    base = easy_run["metrics"]["success"]["train"]
    assert base > 0
    controls = {
        c: evaluate(easy_run["policy"], _eval_cfg(control=c), progress=False)
        for c in ("blank_images", "wrong_instruction")
    }
    d = run_diagnostics(
        easy_run["policy"],
        tmp_path / "diag",
        DiagnosticsConfig(
            episodes=EPISODES,
            split="train",
            seed=SEED,
            max_steps=MAX_STEPS,
            families=FAMILIES,
            conditions=("blank_images", "wrong_instruction"),
        ),
    )
    # The diagnostics' rollouts are evaluate()'s: same seeds, same policy, same numbers.
    assert d["conditions"]["none"]["success"] == {"train": base}
    assert d["conditions"]["none"]["length"] == easy_run["metrics"]["length"]
    for c, m in controls.items():
        assert d["conditions"][c]["success"] == m["success"], c
        assert d["drop"][c]["train"]["all"] == pytest.approx(base - m["success"]["train"]), c
    assert Path(tmp_path / "diag" / "diagnostics.json").is_file()
