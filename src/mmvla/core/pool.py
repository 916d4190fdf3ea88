"""One way to run jobs in worker processes: :func:`imap`.

Workers are spawned (never forked: MuJoCo/EGL and torch do not survive a fork), each runs ``initializer``
once, then jobs one at a time (``chunksize=1``: episodes take seconds and vary in length). With
``workers == 1`` everything runs inline in this process, ``initializer`` included, and ``teardown`` runs
after the last job (the pool's workers release their resources when they exit).
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any, TypeVar

from tqdm.auto import tqdm

J = TypeVar("J")
R = TypeVar("R")


def imap(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    *,
    workers: int,
    initializer: Callable[..., None] | None = None,
    initargs: Iterable[Any] = (),
    teardown: Callable[[], None] | None = None,
    ordered: bool = False,
    progress: bool = False,
    desc: str | None = None,
    unit: str = "ep",
    postfix: Callable[[], dict[str, Any]] | None = None,
) -> Generator[R, None, None]:
    """Yield ``fn(job)`` for every job: in job order when ``ordered``, else as they finish.

    Args:
        fn, jobs: a module-level function and its picklable arguments, one per job.
        workers: processes (spawn context); 1 runs inline.
        initializer, initargs: run once per worker (inline: once, before the first job).
        teardown: inline only, run after the last job or on error (e.g. close the worker's environment).
        progress, desc, unit: a tqdm bar over jobs.
        postfix: called after the consumer has handled each result; its dict is shown on the bar.
    Closing the generator (``.close()``, or leaving a ``for`` loop by an exception) stops the pool at once.
    """
    bar = tqdm(total=len(jobs), disable=not progress, desc=desc, unit=unit)
    try:
        if workers == 1:
            if initializer is not None:
                initializer(*initargs)
            try:
                for job in jobs:
                    yield fn(job)
                    bar.update(1)
                    if postfix is not None:
                        bar.set_postfix(postfix())
            finally:
                if teardown is not None:
                    teardown()
            return
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, initializer=initializer, initargs=tuple(initargs)) as pool:
            results = (
                pool.imap(fn, jobs, chunksize=1) if ordered else pool.imap_unordered(fn, jobs, chunksize=1)
            )
            for r in results:
                yield r
                bar.update(1)
                if postfix is not None:
                    bar.set_postfix(postfix())
    finally:
        bar.close()
