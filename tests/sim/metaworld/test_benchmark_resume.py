"""``benchmarks/metaworld.py`` end to end on two tasks, then resumed: finished stages are not run again,
an interrupted evaluation group is, and the result matches the state the work directory holds."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "metaworld.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("metaworld") is None,
        reason="Meta-World is not installed: pip install 'mmvla[metaworld]'",
    ),
]


def _run(work: Path, out: Path) -> str:
    cmd = [sys.executable, str(BENCHMARK), "--suite", "mt50", "--quick", "--tasks", "reach,push"]
    cmd += ["--work-dir", str(work), "--out", str(out), "--quiet", "--workers", "1"]
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "MUJOCO_GL": "egl"}
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_benchmark_resumes_stage_by_stage(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "result.json"
    first = _run(work, out)
    assert "collect:" in first and "train:" in first and "eval easy" in first and "eval hard" in first
    result = json.loads(out.read_text())
    assert set(result["policy"]["per_group"]) == {"easy", "hard"}  # reach is easy, push is hard
    assert result["settings"]["tasks"] == ["reach-v3", "push-v3"]
    # The eval seeds stated in the result are disjoint from the collection's.
    assert result["protocol"]["collect_seeds"].startswith("0..1 ")

    # Interrupt after training: forget the hard group's evaluation; the rerun evaluates only that.
    state = json.loads((work / "state.json").read_text())
    del state["eval_groups"]["hard"]
    (work / "state.json").write_text(json.dumps(state))
    data_mtime = (work / "data" / "meta" / "info.json").stat().st_mtime_ns
    second = _run(work, out)
    assert "collect:" not in second and "train:" not in second and "eval easy" not in second
    assert "eval hard" in second
    assert (work / "data" / "meta" / "info.json").stat().st_mtime_ns == data_mtime

    # Interrupt during training: the trainer continues from its last checkpoint (already at the end).
    state = json.loads((work / "state.json").read_text())
    del state["train"]
    (work / "state.json").write_text(json.dumps(state))
    third = _run(work, out)
    assert "(resumed)" in third and "collect:" not in third
    assert json.loads(out.read_text())["train"]["steps"] == 30

    # Other settings in the same work directory are refused rather than mixed.
    cmd = [sys.executable, str(BENCHMARK), "--suite", "mt50", "--quick", "--tasks", "reach"]
    r = subprocess.run(
        [*cmd, "--work-dir", str(work), "--out", str(out)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode != 0 and "other settings" in r.stderr
