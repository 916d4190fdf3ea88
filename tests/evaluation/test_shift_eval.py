"""The shift suite: the same episodes in every condition, the table against counts made by hand, and the
report section drawn from what the suite wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmvla.core.io import read_json
from mmvla.core.stats import mcnemar_exact, wilson_interval
from mmvla.evaluation.evaluate import EvalConfig
from mmvla.evaluation.shifts import ShiftEpisode, evaluate_shifts, format_shift_table, shift_table, worst_axis
from mmvla.reporting.page import write_report

from .test_blind_controls import save_tiny_checkpoint


def _ep(axis: str, sev: float, seed: int, ok: bool) -> ShiftEpisode:
    return ShiftEpisode(axis, sev, "train", seed, "pick", "pick up the red cube", "x", ok, 5, 4)


def test_table_against_hand_counts():
    clean = [True, True, True, False, False]
    camera = [True, False, False, True, False]  # lost 2 (seeds 1, 2), won 1 (seed 3)
    eps = [_ep("clean", 0.0, s, ok) for s, ok in enumerate(clean)]
    eps += [_ep("camera", 3.0, s, ok) for s, ok in enumerate(camera)]
    table = shift_table(eps)
    cell = table["axes"]["camera"]["strong"]
    assert cell["success"] == pytest.approx(2 / 5)
    assert cell["ci95"] == pytest.approx(list(wilson_interval(2, 5)))
    assert cell["retained"] == pytest.approx((2 / 5) / (3 / 5))
    assert cell["paired"]["only_clean"] == 2 and cell["paired"]["only_shifted"] == 1
    assert cell["paired"]["p_value"] == pytest.approx(mcnemar_exact(2, 1))
    assert table["clean"]["success"] == pytest.approx(3 / 5)
    assert worst_axis(table) == ("camera", pytest.approx(0.4))
    assert "camera" in format_shift_table(table)
    with pytest.raises(ValueError, match="does not cover"):
        shift_table(eps[:-1])


def test_suite_runs_every_condition_on_the_same_episodes(tmp_path: Path):
    ckpt = save_tiny_checkpoint(tmp_path / "policy")
    out = tmp_path / "run" / "eval_shift"
    cfg = EvalConfig(episodes=2, split="train", workers=1, seed=4321, max_steps=3)
    result = evaluate_shifts(ckpt, cfg, ("camera", "language"), (3.0,), out, progress=False)
    rows = read_json(out / "shift" / "episodes.json", "episodes")
    assert len(rows) == 3 * 2 and result["episodes"] == 6
    by_seed: dict[int, list[dict]] = {}
    for r in rows:
        by_seed.setdefault(r["seed"], []).append(r)
    assert sorted(by_seed) == [4321, 4322]
    for seed_rows in by_seed.values():
        assert len({(r["family"], r["instruction"], r["objects"]) for r in seed_rows}) == 1  # same episode
        told = {r["axis"]: r["given_instruction"] for r in seed_rows}
        assert told["clean"] == told["camera"] == seed_rows[0]["instruction"]
        assert told["language"] != told["clean"]
    shift = read_json(out / "shift.json", "shift")
    assert set(shift["table"]["axes"]) == {"camera", "language"}
    assert (out / "shift" / "frames" / "camera_strong.png").is_file()
    metrics = read_json(out / "metrics.json", "metrics")
    assert metrics["episodes"]["train"] == 2 and "shift" in metrics
    page = write_report(tmp_path / "run").read_text()
    assert "Distribution shift" in page and "success vs severity" in page
