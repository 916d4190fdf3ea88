"""Run-time action chunking: execute a predicted chunk open-loop, or temporally ensemble overlapping chunks."""

from __future__ import annotations

from collections import deque

import numpy as np

CHUNK_MODES = ("ensemble", "execute")


class ActionChunker:
    """Turns chunk predictions (k, A) into one action per step.

    Modes:
        ``execute``: predict a chunk, play its first ``execute_steps`` actions, then predict again.
        ``ensemble``: predict a chunk every step and average every stored prediction for the current
            step with weights exp(-decay · i), i = 0 for the oldest (ACT's temporal ensembling).

    Args:
        chunk_size: k, actions per predicted chunk.
        mode: "ensemble" or "execute".
        execute_steps: actions played per chunk in "execute" mode (1 ≤ execute_steps ≤ k).
        decay: ensembling weight decay per chunk age.
    """

    def __init__(
        self, chunk_size: int, mode: str = "ensemble", execute_steps: int | None = None, decay: float = 0.01
    ) -> None:
        if mode not in CHUNK_MODES:
            raise ValueError(f"chunk mode must be one of {CHUNK_MODES}, got {mode!r}")
        execute_steps = chunk_size if execute_steps is None else execute_steps
        if not 1 <= execute_steps <= chunk_size:
            raise ValueError(f"execute_steps must be in [1, {chunk_size}], got {execute_steps}")
        self.chunk_size, self.mode, self.execute_steps, self.decay = chunk_size, mode, execute_steps, decay
        self.reset()

    def reset(self) -> None:
        """Forget every stored prediction (episode start)."""
        self._queue: deque[np.ndarray] = deque()
        self._chunks: deque[tuple[int, np.ndarray]] = deque()  # (start step, (k, A) chunk)
        self._t = 0

    def needs_prediction(self) -> bool:
        """Whether the next :meth:`pop` needs a fresh chunk pushed first."""
        return self.mode == "ensemble" or not self._queue

    def push(self, chunk: np.ndarray) -> None:
        """Store a (k, A) chunk predicted at the current step."""
        chunk = np.asarray(chunk, dtype=np.float32)
        if chunk.ndim != 2 or chunk.shape[0] != self.chunk_size:
            raise ValueError(f"chunk must be ({self.chunk_size}, A), got {chunk.shape}")
        if self.mode == "execute":
            self._queue.extend(chunk[: self.execute_steps])
        else:
            self._chunks.append((self._t, chunk))
            while self._chunks and self._t - self._chunks[0][0] >= self.chunk_size:
                self._chunks.popleft()

    def pop(self) -> np.ndarray:
        """The (A,) action for the current step; advances time by one step."""
        if self.mode == "execute":
            if not self._queue:
                raise RuntimeError("no action queued: push a chunk first")
            action = self._queue.popleft()
        else:
            live = [(c[self._t - s]) for s, c in self._chunks if 0 <= self._t - s < self.chunk_size]
            if not live:
                raise RuntimeError("no chunk covers the current step: push a chunk first")
            w = np.exp(-self.decay * np.arange(len(live), dtype=np.float64))  # oldest first
            action = (np.stack(live) * (w / w.sum())[:, None]).sum(0).astype(np.float32)
        self._t += 1
        return action
