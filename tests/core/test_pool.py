"""mmvla.core.pool.imap: ordered and unordered results, inline and in spawned workers."""

from __future__ import annotations

import os
import time

import pytest

from mmvla.core.pool import imap

_STATE: dict[str, int] = {}


def _init(offset: int) -> None:
    _STATE["offset"] = offset


def _job(x: int) -> tuple[int, int]:
    time.sleep(0.05 * (x % 3 == 0))  # some jobs finish later than the ones after them
    return x + _STATE["offset"], os.getpid()


@pytest.mark.parametrize("workers", [1, 2])
def test_ordered_results_come_in_job_order(workers: int) -> None:
    out = list(imap(_job, list(range(9)), workers=workers, initializer=_init, initargs=(100,), ordered=True))
    assert [v for v, _ in out] == [100 + i for i in range(9)]
    assert (len({pid for _, pid in out}) == 1 and out[0][1] == os.getpid()) == (workers == 1)


def test_unordered_results_are_all_there_and_inline_teardown_runs() -> None:
    torn: list[bool] = []
    out = imap(
        _job, [3, 1, 2], workers=1, initializer=_init, initargs=(0,), teardown=lambda: torn.append(True)
    )
    assert sorted(v for v, _ in out) == [1, 2, 3] and torn == [True]
    assert sorted(v for v, _ in imap(_job, [3, 1, 2], workers=2, initializer=_init, initargs=(0,))) == [
        1,
        2,
        3,
    ]
