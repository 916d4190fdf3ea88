"""scripts/mutants.py stays applicable: every mutation's text occurs exactly once in its file and its
tests exist (a refactoring that moves the code must move the mutation too, or the check rots silently)."""

from __future__ import annotations

from pathlib import Path

import pytest
from script_modules import load_script

ROOT = Path(__file__).resolve().parents[1]


def _mutants() -> tuple:
    return load_script("scripts/mutants.py", "mmvla_mutants_script").MUTANTS


@pytest.mark.parametrize("mutant", _mutants(), ids=lambda m: m.name)
def test_mutation_applies_and_its_tests_exist(mutant) -> None:  # type: ignore[no-untyped-def]
    source = ROOT / mutant.file
    assert source.is_file(), f"{mutant.name}: {mutant.file} does not exist"
    count = source.read_text().count(mutant.old)
    assert count == 1, f"{mutant.name}: its text occurs {count} times in {mutant.file}, not once"
    for test in mutant.tests:
        assert (ROOT / test.split("::")[0]).is_file(), f"{mutant.name}: {test} does not exist"
