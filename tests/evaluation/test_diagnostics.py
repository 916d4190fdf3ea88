"""Modality diagnostics: ablations, the routing recorder against direct fusion calls, gradient balance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmvla.core.keys import ACTION_KEY, STATE_KEY
from mmvla.evaluation.controls import ablate
from mmvla.evaluation.diagnostics import (
    DiagnosticsConfig,
    FusionRecorder,
    conditions_for,
    gradient_balance,
    run_diagnostics,
)
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.policy.normalize import Normalizer
from mmvla.policy.observation import observation_to_batch

INSTRUCTIONS = ("pick up the red cube", "push the blue cylinder to the left")


def _policy(fusion: str, **fusion_options: int) -> VLAPolicy:
    cfg = PolicyConfig(
        cameras=("front", "wrist"),
        image_size=32,
        dim=32,
        instructions=INSTRUCTIONS,
        fusion=fusion,
        fusion_options={"num_heads": 2, "num_layers": 1, **fusion_options},
        head={"kind": "regression", "chunk_size": 2, "hidden": 32},
    )
    stats = {
        STATE_KEY: {"mean": [0.1, 0.0, 0.2, 0.0, 0.04], "std": [0.1] * 5},
        ACTION_KEY: {"mean": [0.0] * 7, "std": [1.0] * 7},
    }
    torch.manual_seed(0)
    return VLAPolicy(cfg, Normalizer(stats, {STATE_KEY: "mean_std", ACTION_KEY: "mean_std"})).eval()


def _obs(seed: int = 0, instruction: str = INSTRUCTIONS[0]) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "front": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        "wrist": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        "state": rng.normal(0, 0.05, 5).astype(np.float32),
        "instruction": instruction,
    }


def test_ablate_removes_exactly_one_modality():
    obs = _obs()
    mean = np.arange(5, dtype=np.float32)
    cams = ("front", "wrist")
    b = ablate(obs, "blank_front", cams, mean)
    assert not b["front"].any() and np.array_equal(b["wrist"], obs["wrist"])
    b = ablate(obs, "blank_images", cams, mean)
    assert not b["front"].any() and not b["wrist"].any() and np.array_equal(b["state"], obs["state"])
    z = ablate(obs, "zero_proprio", cams, mean)
    assert np.array_equal(z["state"], mean) and np.array_equal(z["front"], obs["front"])
    assert ablate(obs, "none", cams, mean)["front"] is obs["front"]
    with pytest.raises(ValueError, match="no camera"):
        ablate(obs, "blank_top", cams, mean)
    with pytest.raises(ValueError, match="unknown"):
        ablate(obs, "deafen", cams, mean)
    assert conditions_for(cams, True) == [
        "none",
        "blank_images",
        "blank_front",
        "blank_wrist",
        "wrong_instruction",
        "zero_proprio",
    ]
    assert conditions_for(("front",), False) == ["none", "blank_images", "wrong_instruction"]


def test_recorder_gate_weights_equal_a_direct_fusion_call():
    policy = _policy("gated")
    rec = FusionRecorder(policy.fusion)
    policy.reset()
    obs = _obs()
    policy.act(obs)
    assert len(rec.gate) == 1
    rec.close()
    with torch.no_grad():
        want = policy.fuse(*observation_to_batch(obs, policy.cfg.cameras)).info["gate_weights"][0]
    assert len(rec.gate) == 1  # the hook is gone
    np.testing.assert_allclose(rec.gate[0], want.numpy(), rtol=1e-6, atol=1e-7)
    assert rec.gate[0].sum() == pytest.approx(1.0, abs=1e-6)


def test_recorder_router_probs_per_modality_match_a_naive_loop():
    policy = _policy("moe", num_layers=2, num_experts=3)
    rec = FusionRecorder(policy.fusion)
    obs = _obs(1, INSTRUCTIONS[1])
    policy.reset()
    policy.act(obs)
    rec.close()
    with torch.no_grad():
        x = policy.encode(*observation_to_batch(obs, policy.cfg.cameras))
        probs = policy.fusion(x).info["router_probs"][0].double()  # (L, N, E)
    L, _, E = probs.shape
    want = np.zeros((L, 3, E))
    offset = 0
    for mi, m in enumerate(sorted(x.tokens)):
        n = x.tokens[m].shape[1]
        keep = x.mask(m)[0]
        for layer in range(L):
            rows = [probs[layer, offset + j] for j in range(n) if keep[j]]
            want[layer, mi] = (sum(rows) / len(rows)).numpy()
        offset += n
    assert rec.router[0].shape == (L, 3, E)
    np.testing.assert_allclose(rec.router[0], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rec.router[0].sum(-1), 1.0, atol=1e-5)


def test_gradient_balance_closed_form():
    log = {
        "step": [1, 2, 3, 4],
        "grad_vision": [1.0, 1.0, 3.0, 3.0],
        "grad_language": [1.0, 1.0, 1.0, 1.0],
        "grad_proprio": [2.0, 2.0, 2.0, 2.0],
        "grad_fusion": [5.0, 5.0, 5.0, 5.0],
    }
    b = gradient_balance(log)
    assert b is not None and b["rows"] == 2
    assert b["encoder_share"] == pytest.approx({"vision": 0.5, "language": 1 / 6, "proprio": 1 / 3})
    assert b["dominant"] == "vision" and b["max_min_ratio"] == pytest.approx(3.0)
    assert gradient_balance({"step": [1]}) is None


@pytest.fixture(scope="module")
def gated_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mmvla.data.collect import collect_dataset
    from mmvla.training.config import TrainConfig
    from mmvla.training.trainer import train

    root = tmp_path_factory.mktemp("diag")
    collect_dataset(root / "data", episodes=2, workers=1, seed=0, image_size=32, progress=False)
    cfg = PolicyConfig(
        image_size=32,
        dim=32,
        fusion="gated",
        fusion_options={"num_heads": 2},
        head={"kind": "regression", "chunk_size": 2, "hidden": 32},
    )
    r = train(
        root / "data", root / "run", cfg, TrainConfig(steps=2, batch_size=4, warmup_steps=0), progress=False
    )
    return r.policy_dir


def test_run_diagnostics_end_to_end_matches_evaluate(gated_checkpoint, tmp_path):
    from mmvla.evaluation.evaluate import EvalConfig, evaluate

    cfg = DiagnosticsConfig(episodes=1, max_steps=4, workers=1)
    d = run_diagnostics(gated_checkpoint, tmp_path / "diag", cfg)
    conds = conditions_for(("front", "wrist"), True)
    assert list(d["conditions"]) == conds
    for c in conds[1:]:
        for split in ("train", "unseen"):
            assert d["drop"][c][split]["all"] == pytest.approx(
                d["conditions"]["none"]["success"][split] - d["conditions"][c]["success"][split]
            )
    gates = d["routing"]["gate_weights"]
    assert set(gates) == set(conds)  # blank cameras reach the fusion: the safety fallback is off
    for w in gates.values():
        assert len(w) == 3 and sum(w) == pytest.approx(1.0, abs=1e-5)
    assert d["gradient_balance"] is not None and set(d["gradient_balance"]["encoder_share"]) <= {
        "vision",
        "language",
        "proprio",
    }
    assert (tmp_path / "diag" / "diagnostics.json").is_file()
    # Same seeds, same policy: the baseline and the wrong-instruction control are evaluate()'s numbers.
    for control, key in (("none", "none"), ("wrong_instruction", "wrong_instruction")):
        m = evaluate(
            gated_checkpoint, EvalConfig(episodes=1, max_steps=4, workers=1, control=control), progress=False
        )
        assert m["success"] == d["conditions"][key]["success"]
        assert m["length"] == d["conditions"][key]["length"]


def test_report_command_with_diagnostics(gated_checkpoint):
    from mmvla.cli import main

    run = gated_checkpoint.parent
    argv = [
        "report",
        "--run",
        str(run),
        "--diagnostics",
        "--episodes",
        "1",
        "--workers",
        "1",
        "--max-steps",
        "3",
    ]
    assert main(argv) == 0
    for name in ("diagnostics.json", "ablation.png", "routing.png", "gradient_balance.png"):
        assert (run / "diagnostics" / name).is_file()  # the figures are drawn by the command
    page = (run / "report.html").read_text()
    assert "Modality diagnostics" in page and "gate weights" in page and "blank_wrist" in page
