"""benchmarks/full_recipe.py refuses inconsistent randomisation flags before it collects anything."""

from __future__ import annotations

import sys

import pytest
from script_modules import load_script


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--randomise"], "--randomise applies to a collection"),
        (["--collect", "2", "--clean-fraction", "0.5"], "--clean-fraction applies to --randomise"),
        (["--collect", "2", "--randomise", "--clean-fraction", "1.5"], "clean_fraction must be a number in"),
    ],
)
def test_inconsistent_flags_are_refused_with_a_message(argv, message, monkeypatch, capsys, tmp_path):
    bench = load_script("benchmarks/full_recipe.py", "bench_full_recipe")
    out = tmp_path / "result.json"
    monkeypatch.setattr(
        sys, "argv", ["full_recipe.py", *argv, "--data", str(tmp_path / "d"), "--out", str(out)]
    )
    with pytest.raises(SystemExit) as e:
        bench.main()
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d").exists() and not out.exists()  # nothing collected, nothing written
