"""The CSV training logs (``log.csv`` of ``mmvla train`` and ``mmvla pretrain``): one reader.

A log has a header and one row per logging step; every cell is a number or empty (a column a run does
not fill, e.g. ``loss_state`` without auxiliary state). The writers use
:func:`mmvla.core.io.atomic_write_csv` with their own field list
(:data:`mmvla.training.trainer.LOG_FIELDS`, :data:`mmvla.training.pretrain.LOG_FIELDS`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path


def read_log_rows(path: str | os.PathLike[str], upto: float | None = None) -> list[dict[str, float]]:
    """The rows of a log as ``{column: value}`` (empty cells left out); ``[]`` when there is no file.

    Args:
        path: the ``log.csv``.
        upto: keep only rows with ``step <= upto`` (a resumed run drops the rows a killed run wrote
            after its last checkpoint); None keeps every row.
    """
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [
            {k: float(v) for k, v in row.items() if v != ""}
            for row in csv.DictReader(f)
            if upto is None or float(row["step"]) <= upto
        ]


def read_log(path: str | os.PathLike[str]) -> dict[str, list[float]]:
    """A log as columns: header name -> the values of the rows that fill it (empty cells left out).

    Raises:
        FileNotFoundError: no file at ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training log not found: {path}")
    with path.open(newline="") as f:
        header = next(csv.reader(f), [])
    rows = read_log_rows(path)
    return {k: [r[k] for r in rows if k in r] for k in header}
