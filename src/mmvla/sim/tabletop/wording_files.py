"""Wording files shipped in ``mmvla/sim/tabletop/data``: ``canonical<TAB>wording`` lines, ``#`` comments."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def package_wordings(filename: str) -> dict[str, tuple[str, ...]]:
    """The shipped file ``filename``: canonical instruction -> its wordings, in file order."""
    text = resources.files("mmvla.sim.tabletop").joinpath("data", filename).read_text(encoding="utf-8")
    out: dict[str, list[str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 2:
            raise ValueError(f"{filename}:{n}: expected 'canonical<TAB>wording', got {line!r}")
        out.setdefault(parts[0], []).append(parts[1])
    return {k: tuple(v) for k, v in out.items()}


__all__ = ["package_wordings"]
