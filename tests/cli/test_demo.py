"""`mmvla demo` end to end on a tiny budget: every stage runs and writes what the README promises."""

from __future__ import annotations

import json

import pytest

from mmvla.cli import main


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--episodes", "4", "--steps", "6", "--eval-episodes", "2"]
    assert main([*args, "--controls", "1", "--workers", "1", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["episodes"]["train"] == 2 and metrics["episodes"]["unseen"] == 2
    episodes = json.loads((out / "eval" / "episodes.json").read_text())
    for split in ("train", "unseen"):  # the summary is the evaluation's own count, episode by episode
        wins = [e["success"] for e in episodes if e["split"] == split]
        assert len(wins) == 2
        assert summary[f"success_{split}"] == round(metrics["success"][split], 3) == round(sum(wins) / 2, 3)
    for control in ("blank_images", "wrong_instruction"):  # the summary reports each control's own file
        m = json.loads((out / f"eval_{control}" / "metrics.json").read_text())
        assert m["episodes"] == {"train": 1, "unseen": 1}
        assert summary[f"control_{control}_unseen"] == round(m["success"]["unseen"], 3)
    held = json.loads((out / "eval" / "wordings" / "heldout" / "metrics.json").read_text())
    assert metrics["wordings"]["heldout"]["success"] == held["success"]  # same episodes, held-out words
    assert held["config"]["wordings"] == "heldout" and held["episodes"] == metrics["episodes"]
    assert summary["success_heldout_wordings_unseen"] == round(held["success"]["unseen"], 3)
    assert (out / "policy" / "model.safetensors").is_file()
    assert (out / "report.html").stat().st_size > 10_000
