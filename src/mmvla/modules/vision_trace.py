"""A vision encoder's inference forward replayed as TorchScript graphs, one per image shape.

Eager PyTorch leaves Python between every tensor op, and each op releases and re-takes the GIL. In a
process whose other thread also needs the GIL (the policy server's network loop) each re-take can
wait: on 2 cores, a batch of 8 requests took 11.6 ms inside the server against ~5 ms alone. A traced
graph runs the encoder's ~40 ops in one call into the TorchScript interpreter. The ops and kernels are
the same, so outputs are bit-identical; each new batch size is checked against the eager encoder once
and falls back to eager on any difference. Inference only: training (or autograd) uses the encoder.

A graph call holds the GIL only to enter and leave, so ``threads > 1`` splits a large batch into that many
slices computed at once, one per thread (the caller's and ``threads - 1`` helpers). With one torch
thread per process this is what uses a second core: torch's own intra-op threads spin-wait against the
server's network thread (measured on 2 cores: 2 torch threads halved a single client's throughput).
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import threading
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from mmvla.modules.vision import VisionEncoder, VisionOutput

logger = logging.getLogger(__name__)

# Fewer images than this run in one slice: below it a split costs more in hand-overs than it saves.
MIN_SPLIT_IMAGES = 8


class _AsTuple(nn.Module):
    """The encoder with tensors only in and out (what ``torch.jit.trace`` records): ``(images[, cond])
    -> (tokens, pooled[, keypoints])``."""

    def __init__(self, encoder: VisionEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, images: Tensor, *cond: Tensor) -> tuple[Tensor, ...]:
        out = self.encoder(images, cond[0] if cond else None)
        return (out.tokens, out.pooled) + (() if out.keypoints is None else (out.keypoints,))


class VisionTrace:
    """Callable like the encoder (``(images (B, 3, H, W) float in [0, 1], cond (B, D) | None) ->
    VisionOutput``) in eval mode without autograd; any other call goes to the encoder itself.

    A plain object, not a module: it holds no weights of its own. The graphs share the encoder's
    parameter storage, so in-place updates (``load_state_dict``, optimiser steps) reach them; a move to
    another device (new storage) traces anew. ``threads``: a batch of at least ``MIN_SPLIT_IMAGES``
    images runs as that many slices at once (same outputs: each slice's graph is checked like any other).
    """

    def __init__(self, encoder: VisionEncoder, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.encoder = encoder
        self.threads = int(threads)
        self._first_weight = next(encoder.parameters())  # a move (.to) gives it new storage
        self._graphs: dict[tuple[Any, ...], Any] = {}  # (C, H, W, dtype, cond?, weights) -> graph or None
        self._checked: set[tuple[Any, ...]] = set()  # (B, *key) compared with eager once
        self._lock = threading.Lock()  # tracing and checking: first uses from several threads
        self._helpers = (
            concurrent.futures.ThreadPoolExecutor(threads - 1, thread_name_prefix="mmvla-vision")
            if threads > 1
            else None
        )

    def __call__(self, images: Tensor, cond: Tensor | None = None) -> VisionOutput:
        if self.encoder.training or torch.is_grad_enabled():
            return self.encoder(images, cond)
        B = images.shape[0]
        if self._helpers is None or B < MIN_SPLIT_IMAGES:
            return self._run(images, cond)
        bounds = [B * k // self.threads for k in range(self.threads + 1)]
        slices = [slice(a, b) for a, b in itertools.pairwise(bounds)]
        inference = torch.is_inference_mode_enabled()  # grad modes are per thread: the helpers copy it

        def helper(sl: slice) -> VisionOutput:
            with torch.inference_mode() if inference else torch.no_grad():
                return self._run(images[sl], None if cond is None else cond[sl])

        futures = [self._helpers.submit(helper, sl) for sl in slices[1:]]
        parts = [self._run(images[slices[0]], None if cond is None else cond[slices[0]])]
        parts += [f.result() for f in futures]
        keypoints = [p.keypoints for p in parts]
        return VisionOutput(
            tokens=torch.cat([p.tokens for p in parts]),
            pooled=torch.cat([p.pooled for p in parts]),
            grids=parts[0].grids,
            keypoints=None if keypoints[0] is None else torch.cat(keypoints),  # type: ignore[arg-type]
        )

    def _run(self, images: Tensor, cond: Tensor | None) -> VisionOutput:
        """One slice through its shape's graph (traced, and checked against eager, on first use)."""
        key = (*images.shape[1:], images.dtype, cond is not None, self._first_weight.data_ptr())
        if key not in self._graphs:
            with self._lock:
                if key not in self._graphs:
                    self._graphs[key] = self._trace(images, cond)
        graph = self._graphs[key]
        if graph is None:
            return self.encoder(images, cond)
        out = graph(images) if cond is None else graph(images, cond)
        traced = VisionOutput(
            tokens=out[0],
            pooled=out[1],
            grids=self.encoder.output_grids(*images.shape[-2:]),
            keypoints=out[2] if len(out) > 2 else None,
        )
        if (images.shape[0], *key) not in self._checked:
            with self._lock:
                self._checked.add((images.shape[0], *key))
                if not _same(traced, self.encoder(images, cond)):
                    logger.warning(
                        "traced vision encoder differs from eager for input %s: eager from now", key
                    )
                    self._graphs[key] = None
                    return self.encoder(images, cond)
        return traced

    def prepare(self, image_size: tuple[int, int], batch_sizes: Iterable[int], cond_dim: int | None) -> None:
        """Trace, and check against eager, every batch size ahead of use (a first use otherwise pays for
        the trace and an extra eager pass: a latency spike in a server). Random float32 images in [0, 1]
        of ``image_size`` (H, W); ``cond_dim``: the conditioning width of a conditioned encoder, else None."""
        device = self._first_weight.device
        g = torch.Generator().manual_seed(0)
        with torch.inference_mode():
            for b in batch_sizes:
                images = torch.rand(b, 3, *image_size, generator=g).to(device)
                cond = None if cond_dim is None else torch.randn(b, cond_dim, generator=g).to(device)
                self(images, cond)

    def _trace(self, images: Tensor, cond: Tensor | None) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarning: the image size is fixed per graph
                inputs = (images,) if cond is None else (images, cond)
                return torch.jit.trace(_AsTuple(self.encoder), inputs, check_trace=False, strict=False)
        except Exception as e:  # an encoder the tracer cannot record still works, eagerly
            logger.warning("vision encoder not traceable (%s: %s): eager", type(e).__name__, e)
            return None


def _same(a: VisionOutput, b: VisionOutput) -> bool:
    """Bit-identical outputs (and the same grids)."""
    if a.grids != b.grids or (a.keypoints is None) != (b.keypoints is None):
        return False
    pairs = [(a.tokens, b.tokens), (a.pooled, b.pooled)]
    if a.keypoints is not None and b.keypoints is not None:
        pairs.append((a.keypoints, b.keypoints))
    return all(torch.equal(x, y) for x, y in pairs)
