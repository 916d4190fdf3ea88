"""Close environments that are still open when the interpreter exits, while EGL still works.

A script that builds an environment and exits without ``env.close()`` used to print EGL tracebacks:
the renderers' ``__del__`` ran during interpreter teardown, after the EGL display was gone. Each
environment calls :func:`close_at_exit` when it makes its first renderer; an ``atexit`` hook (registered
then, so it runs before MuJoCo's own EGL clean-up, which was registered earlier) closes the live ones.
"""

from __future__ import annotations

import atexit
import weakref
from typing import Protocol


class Closable(Protocol):
    def close(self) -> None: ...


_LIVE: weakref.WeakSet[Closable] = weakref.WeakSet()  # environments holding renderers
_HOOKED = False


def close_at_exit(env: Closable) -> None:
    """Close ``env`` at interpreter exit unless it is closed (or collected) before (idempotent)."""
    global _HOOKED
    _LIVE.add(env)
    if not _HOOKED:
        atexit.register(_close_live)
        _HOOKED = True


def _close_live() -> None:
    for env in list(_LIVE):
        try:
            env.close()
        except Exception:
            continue
    _LIVE.clear()
