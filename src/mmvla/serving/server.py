"""Policy server: one policy's weights answering many robot clients over WebSockets.

::

    client ──ws──► asyncio loop: auth, slots, framing, validation, errors ──► scheduler ──► 1 inference thread
                   per connection: chunker, memory, SafetyMonitor, ≤ 1 queued act    (dynamic batches)

Two wire protocols on one port: mmvla's own (:mod:`mmvla.serving.protocol`, ``{"kind": ...}`` envelopes) and
openpi's (``openpi-client``'s ``WebsocketClientPolicy``: a bare observation map with msgpack-numpy
arrays in, ``{"actions": (H, A), "server_timing": ...}`` out). ``protocol="auto"`` picks one per
connection from its first frame. ``GET /healthz`` on the same port answers ``200``.

Scheduling: each connection has at most one ``act`` waiting for the model; a newer one replaces it
(the older is answered ``superseded``: the latest observation wins over a stale backlog). The
scheduler takes waiting requests first come first served into one batched forward pass on the
inference thread, up to ``max_batch`` of them. A batch starts once a ``1 / batch_groups`` share of the
recently active connections (at least ``MIN_GROUP_BATCH``) is waiting, or after ``batch_wait_ms``, so
that batches take turns: one computes while the others' replies and next requests cross the network.
A connection cannot get a second request into a batch, so one busy client does not starve the others.
Each connection keeps its own run-time state (action chunks, temporal memory, safety monitor); the
weights are shared.

Hygiene: an optional token (``Authorization: Bearer <token>`` or openpi's ``Api-Key <token>``,
compared in constant time; 401 without it); a connection idle for ``idle_timeout_s`` or with a frame
in progress for longer than ``frame_timeout_s`` is closed; the opening handshake must finish within
``handshake_timeout_s``; at most ``max_connections`` connections, ``max_connections_per_ip`` from one
address; when a cap is reached, the connection idle longest (no request for ``reclaim_idle_s``) gives
its slot to the newcomer, so idle or trickling sockets cannot lock a robot out.

Errors never amplify: every reason is at most 200 characters and summarises values instead of echoing
them; each connection logs the first error of each kind and a count at the end, and all log lines go
through one rate limiter. Non-finite network outputs become the hold action (with or without the safety
layer). See docs/serving.md for the threat model.

Use :class:`PolicyServer` in-process (``start()`` / ``stop()`` run it in a background thread) or
through ``mmvla serve`` (``serve_forever`` with SIGINT/SIGTERM handled as a graceful shutdown).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import hmac
import itertools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import numpy as np
import torch
from PIL import Image
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State

from mmvla import __version__
from mmvla.modules.lexicon import wordnet
from mmvla.policy.checkpoint import checkpoint_id
from mmvla.policy.model import VLAPolicy
from mmvla.policy.observation import ObservationError, observation_to_batch
from mmvla.policy.runtime import CHUNK_MODES
from mmvla.policy.safety import FALLBACK_NONFINITE, INVALID, SafetyConfig, SafetyMonitor
from mmvla.serving.protocol import (
    KINDS,
    PROTOCOL_VERSION,
    ProtocolError,
    bounded,
    describe,
    name,
    pack,
    pack_openpi,
    request_id,
    unpack,
)

logger = logging.getLogger("mmvla.serving.server")

DEFAULT_MAX_MESSAGE_BYTES = 4 * 2**20
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
HEALTH_PATH = "/healthz"
TOKEN_ENV = "MMVLA_SERVE_TOKEN"
PROTOCOLS = ("auto", "mmvla", "openpi")
GRIPPER_DIM = 6
_REQUEST_KEYS = {
    "metadata": {"kind", "id"},
    "reset": {"kind", "id", "chunk_mode"},
    "act": {"kind", "id", "observation", "chunk"},
}
_MAX_KEY_CHARS = 64
_DROP = "-"  # an openpi key mapped to this is ignored


def default_openpi_keys(cameras: tuple[str, ...] | list[str]) -> dict[str, str]:
    """openpi's LIBERO-style observation keys -> this policy's: ``observation/image`` the first camera,
    ``observation/wrist_image`` the second (if any), ``observation/state`` the state, ``prompt`` the
    instruction."""
    keys = {"observation/image": cameras[0], "observation/state": "state", "prompt": "instruction"}
    if len(cameras) > 1:
        keys["observation/wrist_image"] = cameras[1]
    return keys


def parse_key_map(spec: str) -> dict[str, str]:
    """``"observation/image=front,prompt=instruction"`` -> {wire key: policy key} (``-``: ignore the key)."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        wire, sep, key = part.partition("=")
        if not sep or not wire.strip() or not key.strip():
            raise ValueError(f"key mapping entries must look like 'wire/key=policy_key', got {part!r}")
        out[wire.strip()] = key.strip()
    return out


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 (H, W, 3) -> (size, size, 3): openpi's ``resize_with_pad`` convention (keep the aspect ratio,
    PIL bilinear, pad the short side with black); returned unchanged if it already has that size."""
    h, w = image.shape[:2]
    if h == w == size:
        return image
    ratio = max(w / size, h / size)  # the same integer arithmetic as openpi_client.image_tools
    nh, nw = max(1, int(h / ratio)), max(1, int(w / ratio))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), resample=Image.Resampling.BILINEAR))
    if nh == nw == size:
        return resized
    out = np.zeros((size, size, 3), np.uint8)
    top, left = max(0, int((size - nh) / 2)), max(0, int((size - nw) / 2))
    out[top : top + nh, left : left + nw] = resized
    return out


def default_vision_threads() -> int:
    """2 when torch computes on one thread and a second core exists (a batch's vision slices then use
    it), else 1 (torch's own threads already use the cores)."""
    return 2 if torch.get_num_threads() == 1 and (os.cpu_count() or 1) >= 2 else 1


class _LogLimiter:
    """A token bucket shared by every connection: at most ``rate`` lines/s (bursts of ``burst``)."""

    def __init__(self, rate: float = 20.0, burst: int = 50) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = float(burst), time.monotonic()
        self.dropped = 0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.tokens >= 1:
                self.tokens -= 1
                return True
            self.dropped += 1
            return False

    def log(self, level: int, msg: str, *args: Any) -> None:
        if logger.isEnabledFor(level) and self.allow():
            logger.log(level, msg, *args)


class _ConnLog:
    """One connection's log: the first event of each kind, then a count (at most one line per ``interval_s``
    per kind, saying how many were not logged), within a byte budget of ``burst_bytes`` that refills at
    ``refill_bytes_per_s``: a line over it is only counted (the closing summary has every count). With
    the lines for opening and closing, a connection writes well under 1 KB in its first minutes."""

    LINE_OVERHEAD = 60  # what ``mmvla serve`` puts before each message: time, level, logger name

    def __init__(
        self,
        number: int,
        peer: str,
        limiter: _LogLimiter,
        interval_s: float = 60.0,
        burst_bytes: int = 480,
        refill_bytes_per_s: float = 1.0,
    ) -> None:
        self.number, self.peer, self.limiter, self.interval_s = number, peer, limiter, interval_s
        self.burst_bytes, self.refill_bytes_per_s = burst_bytes, refill_bytes_per_s
        self.counts: collections.Counter[str] = collections.Counter()
        self._last: dict[str, float] = {}
        self._since: collections.Counter[str] = collections.Counter()
        self._budget, self._stamp = float(burst_bytes), time.monotonic()

    def event(self, level: int, kind: str, reason: str) -> None:
        self.counts[kind] += 1
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._since[kind] += 1
            return
        more = f" (+{self._since[kind]} not logged)" if self._since[kind] else ""
        line = f"connection {self.number}: {kind}: {bounded(reason)}{more}"
        self._budget = min(self.burst_bytes, self._budget + (now - self._stamp) * self.refill_bytes_per_s)
        self._stamp = now
        cost = len(line) + self.LINE_OVERHEAD
        if cost > self._budget:  # over budget: counted; the next event of this kind tries again
            self._since[kind] += 1
            return
        self._budget -= cost
        self._last[kind], self._since[kind] = now, 0
        self.limiter.log(level, "%s", line)

    def safety(self, level: int, kind: str, reason: str) -> None:
        if kind == INVALID:  # counted only: the invalid_observation error reply is logged already
            self.counts[f"safety {kind}"] += 1
        elif level > logging.DEBUG:
            self.event(level, f"safety {kind}", reason)


@dataclass(eq=False)
class _Job:
    """One act request waiting for (or in) a batch."""

    session: _Session
    observation: dict[str, Any]
    chunk: bool
    rid: int | str | None
    openpi: bool
    future: asyncio.Future[dict[str, Any]]
    queued_at: float = field(default_factory=time.perf_counter)
    started_at: float = 0.0
    taken: bool = False


class _Session:
    """One connection's run-time state; ``state`` is only touched on the inference thread."""

    def __init__(self, number: int, ws: ServerConnection, peer: str, log: _ConnLog) -> None:
        self.number = number
        self.ws = ws
        self.peer = peer
        self.log = log
        self.state: dict[str, Any] | None = None  # VLAPolicy.runtime_state() of this connection
        self.steps = 0  # act requests answered since the last reset
        self.protocol: str | None = None  # "mmvla" | "openpi" once known
        self.last_request = time.monotonic()
        self.last_act = 0.0
        self.pending: _Job | None = None
        self.delivery: asyncio.Task[None] | None = None
        self.last_gripper: float | None = None  # for the hold action without a safety layer
        self.closing = False


class _Connection(ServerConnection):
    """A ServerConnection that knows since when its current frame or fragmented message has been
    arriving (``partial_since``, monotonic seconds; None between messages): the slow-frame timeout."""

    partial_since: float | None = None
    _frames_done = 0
    _in_message = False  # a fragmented message has started and not finished

    def data_received(self, data: bytes) -> None:
        done = self._frames_done
        super().data_received(data)
        if self.protocol.state is not State.OPEN:
            return
        now = time.monotonic()
        if self._frames_done == done or self._in_message:  # bytes of a frame that is not complete yet
            if self.partial_since is None:
                self.partial_since = now
        else:
            self.partial_since = now if self.protocol.reader.buffer else None

    def process_event(self, event: Any) -> None:
        super().process_event(event)
        if isinstance(event, Frame):
            self._frames_done += 1
            if event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                self._in_message = not event.fin


# Batches taking turns pay off only while each stays this large: on 2 cores, with the demo policy, 4 and
# 8 clients served in two groups made 387 and 558 req/s against 556 and 651 in one batch (medians of 3
# interleaved rounds); 16 clients gained from two groups of 8.
MIN_GROUP_BATCH = 8


class PolicyServer:
    """WebSocket policy server (msgpack frames, see :mod:`mmvla.serving.protocol`).

    Args:
        policy: the policy (put in eval mode); its weights are shared by every connection.
        host, port: where to listen; port 0 picks a free port (see :attr:`port` after start).
        checkpoint: id sent in the metadata (``checkpoint_id(directory)``; "" if unknown).
        safety: True (default thresholds), a SafetyConfig for each connection's monitor, or False (no safety
            layer; not advised; non-finite outputs still become the hold action).
        chunk_mode: each connection's initial chunk mode ("ensemble" or "execute"); "reset" may change it.
        max_message_bytes: largest frame accepted; bigger ones close that connection (code 1009).
        max_connections: connections served at once; beyond it the longest-idle one is reclaimed, else 503.
        max_connections_per_ip: the same cap per client address.
        token: required bearer token (None: no authentication; ``mmvla serve`` reads $MMVLA_SERVE_TOKEN).
        idle_timeout_s: a connection without a request for this long is closed (code 1000).
        frame_timeout_s: a frame still arriving after this many seconds closes its connection (code 1008).
        handshake_timeout_s: the opening handshake must finish within this many seconds.
        reclaim_idle_s: at a cap, a connection without a request for this long may be closed for a newcomer.
        max_batch: most act requests in one forward pass (1: one at a time).
        batch_wait_ms: longest wait for recently active connections' requests before a batch starts.
        batch_groups: a batch starts once ``ceil(active / batch_groups)`` requests wait, but at least
            ``MIN_GROUP_BATCH`` (or every active connection); it takes every waiting request up to
            ``max_batch``. 1: a batch waits for every active connection.
        max_instruction_chars: longer instructions are refused before tokenising.
        vision_threads: a batch's vision pass runs as this many slices at once (threads); None:
            :func:`default_vision_threads` when the server is built.
        protocol: "auto" (per connection, from the first frame), "mmvla" or "openpi".
        openpi_keys: openpi observation key -> policy key (a camera, "state", "instruction", "timestamp"
            or "-" to ignore it); default :func:`default_openpi_keys`.
    """

    def __init__(
        self,
        policy: VLAPolicy,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        checkpoint: str = "",
        safety: SafetyConfig | bool = True,
        chunk_mode: str = "ensemble",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_connections: int = 64,
        max_connections_per_ip: int = 64,
        token: str | None = None,
        idle_timeout_s: float = 300.0,
        frame_timeout_s: float = 10.0,
        handshake_timeout_s: float = 10.0,
        reclaim_idle_s: float = 5.0,
        max_batch: int = 32,
        batch_wait_ms: float = 2.0,
        batch_groups: int = 2,
        max_instruction_chars: int = 512,
        vision_threads: int | None = None,
        protocol: str = "auto",
        openpi_keys: Mapping[str, str] | None = None,
    ) -> None:
        if chunk_mode not in CHUNK_MODES:
            raise ValueError(f"chunk_mode must be one of {CHUNK_MODES}, got {chunk_mode!r}")
        if max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {max_message_bytes}")
        if max_connections < 1 or max_connections_per_ip < 1:
            raise ValueError(
                f"max_connections and max_connections_per_ip must be >= 1, got {max_connections}, "
                f"{max_connections_per_ip}"
            )
        for label, v in (
            ("idle_timeout_s", idle_timeout_s),
            ("frame_timeout_s", frame_timeout_s),
            ("handshake_timeout_s", handshake_timeout_s),
        ):
            if not v > 0:
                raise ValueError(f"{label} must be > 0, got {v}")
        if reclaim_idle_s < 0 or batch_wait_ms < 0:
            raise ValueError(
                f"reclaim_idle_s and batch_wait_ms must be >= 0, got {reclaim_idle_s}, {batch_wait_ms}"
            )
        if vision_threads is None:
            vision_threads = default_vision_threads()
        if min(max_batch, batch_groups, max_instruction_chars, vision_threads) < 1:
            raise ValueError(
                "max_batch, batch_groups, max_instruction_chars and vision_threads must be >= 1, got "
                f"{max_batch}, {batch_groups}, {max_instruction_chars}, {vision_threads}"
            )
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if token is not None and len(token) < 8:
            raise ValueError("token must be at least 8 characters (or None for no authentication)")
        self.policy = policy.eval()
        policy.trace_vision(threads=vision_threads)  # one graph call per slice, not a GIL hand-over per op
        cams = tuple(policy.cfg.cameras)
        self.openpi_keys = dict(openpi_keys) if openpi_keys is not None else default_openpi_keys(cams)
        allowed = {*cams, "state", "instruction", "timestamp", _DROP, *(f"{c}_timestamp" for c in cams)}
        bad = sorted(v for v in self.openpi_keys.values() if v not in allowed)
        if bad:
            raise ValueError(f"openpi_keys map to unknown policy key(s) {bad}; allowed: {sorted(allowed)}")
        self.host, self.port = host, int(port)
        self.checkpoint = checkpoint
        if isinstance(safety, bool):
            self.safety_config: SafetyConfig | None = SafetyConfig() if safety else None
        else:
            self.safety_config = safety
        self.chunk_mode = chunk_mode
        self.max_message_bytes = int(max_message_bytes)
        self.max_connections = int(max_connections)
        self.max_connections_per_ip = int(max_connections_per_ip)
        self._token = token.encode() if token is not None else None
        self.idle_timeout_s, self.frame_timeout_s = float(idle_timeout_s), float(frame_timeout_s)
        self.handshake_timeout_s, self.reclaim_idle_s = float(handshake_timeout_s), float(reclaim_idle_s)
        self.max_batch, self.batch_wait_ms = int(max_batch), float(batch_wait_ms)
        self.batch_groups = int(batch_groups)
        self.max_instruction_chars = int(max_instruction_chars)
        self.protocol = protocol
        self.stats: dict[str, int] = {
            "connections_total": 0,
            "connections_open": 0,
            "requests": 0,
            "errors": 0,
            "refused": 0,
            "unauthorized": 0,
            "reclaimed": 0,
            "timed_out": 0,
            "superseded": 0,
            "batches": 0,
            "batched_requests": 0,
        }
        self._limiter = _LogLimiter()
        self._sessions: dict[ServerConnection, _Session] = {}
        self._numbers = itertools.count(1)
        self._queue: collections.deque[_Job] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._started_at = time.time()

    @classmethod
    def from_checkpoint(cls, directory: str | os.PathLike[str], **kwargs: Any) -> PolicyServer:
        """Load ``directory`` (``save_pretrained``) and build a server whose metadata carries its sha256."""
        policy = VLAPolicy.from_pretrained(directory)
        if policy.grounding is not None:
            wordnet()  # read WordNet (~4 s) now, not inside the first request with an unseen word
        return cls(policy, checkpoint=checkpoint_id(directory), **kwargs)

    # ------------------------------------------------------------------ description
    @property
    def url(self) -> str:
        """``ws://host:port`` (the bound port once started)."""
        return f"ws://{self.host}:{self.port}"

    def metadata(self) -> dict[str, Any]:
        """What a client needs to build observations and interpret actions (sent on connect)."""
        c = self.policy.cfg
        A = c.action_dim
        return {
            "kind": "metadata",
            "protocol": PROTOCOL_VERSION,
            "cameras": list(c.cameras),
            "image_size": c.image_size,
            "state_dim": c.state_dim,
            "action_dim": A,
            "action_low": [-1.0] * A,
            "action_high": [1.0] * A,
            "action_names": list(ACTION_NAMES[:A]) + [f"a{i}" for i in range(len(ACTION_NAMES), A)],
            "chunk_size": c.chunk_size,
            "chunk_mode": self.chunk_mode,
            "checkpoint_id": self.checkpoint,
            "max_message_bytes": self.max_message_bytes,
            "max_instruction_chars": self.max_instruction_chars,
            "openpi_keys": dict(self.openpi_keys),
            "safety": None if self.safety_config is None else self.safety_config.to_dict(),
            "mmvla_version": __version__,
        }

    def health(self, detailed: bool = True) -> dict[str, Any]:
        """The /healthz body: liveness only, or (``detailed``, for authenticated callers) counters too."""
        if not detailed:
            return {"status": "ok"}
        return {
            "status": "ok",
            "checkpoint_id": self.checkpoint,
            "uptime_s": round(time.time() - self._started_at, 3),
            "log_lines_dropped": self._limiter.dropped,
            **self.stats,
        }

    # ------------------------------------------------------------------ inference thread
    def _fresh_state(self, session: _Session, chunk_mode: str) -> dict[str, Any]:
        p = self.policy
        p.safety = (
            None if self.safety_config is None else SafetyMonitor(self.safety_config, log=session.log.safety)
        )
        p.reset(chunk_mode)
        return p.runtime_state()

    def _reset_state(self, session: _Session, chunk_mode: str) -> None:
        p = self.policy
        assert session.state is not None
        p.set_runtime_state(session.state)
        try:
            p.reset(chunk_mode)  # keeps the connection's safety counters
        finally:
            session.state = p.runtime_state()
        session.last_gripper = None

    def _hold(self, session: _Session, A: int) -> np.ndarray:
        monitor = session.state["safety"] if session.state is not None else None
        if monitor is not None:
            return monitor.hold_action(A)
        hold = np.zeros(A, np.float32)
        if A > GRIPPER_DIM:
            hold[GRIPPER_DIM] = 0.0 if session.last_gripper is None else session.last_gripper
        return hold

    def _run_batch(self, jobs: list[_Job]) -> list[dict[str, Any]]:
        """Every job's reply (a dict; error replies included); runs on the inference thread."""
        t0 = time.perf_counter()
        for job in jobs:
            job.started_at = t0
        with torch.inference_mode():
            replies: list[dict[str, Any] | None] = [None] * len(jobs)
            forward: list[int] = []  # jobs that need the network
            p = self.policy
            for i, job in enumerate(jobs):
                s = job.session
                assert s.state is not None
                p.set_runtime_state(s.state)
                try:
                    hold = p._check(job.observation)
                    p._observe_state(job.observation)
                except ObservationError as e:
                    replies[i] = self._error_reply(s, "invalid_observation", str(e))
                    continue
                except Exception as e:  # a bug: report it, keep serving
                    replies[i] = self._internal(s, e)
                    continue
                finally:
                    s.state = p.runtime_state()
                if hold is not None:
                    if job.chunk:
                        replies[i] = self._action_reply(s, job, np.repeat(hold[None], p.cfg.chunk_size, 0))
                    else:
                        p._chunker.reset()  # plans made before the failure are stale once it recovers
                        replies[i] = self._action_reply(s, job, hold)
                    continue
                forward.append(i)
            if forward:
                try:
                    self._forward(jobs, forward, replies)
                except Exception as e:
                    for i in forward:
                        if replies[i] is None:
                            replies[i] = self._internal(jobs[i].session, e)
            return [
                r if r is not None else self._internal(j.session, None)
                for r, j in zip(replies, jobs, strict=True)
            ]

    def _forward(self, jobs: list[_Job], forward: list[int], replies: list[dict[str, Any] | None]) -> None:
        """One batched pass for ``jobs[forward]``; fills their replies."""
        p = self.policy
        cams = p.cfg.cameras
        rows = [observation_to_batch(jobs[i].observation, cams) for i in forward]
        images = {c: torch.cat([r[0][c] for r in rows]) for c in cams}  # (B, 3, H, W)
        texts = [r[1][0] for r in rows]
        state = torch.cat([r[2] for r in rows])  # (B, S)
        past = None
        if p.cfg.state_history:  # each connection's own recent states
            windows: list[torch.Tensor] = []
            for i in forward:
                p.set_runtime_state(jobs[i].session.state)  # type: ignore[arg-type]
                window = p._past_window()
                assert window is not None  # _run_batch kept this request's state
                windows.append(window)
            past = torch.cat(windows)  # (B, P, S)
        fused = p.fuse(images, texts, state, past)
        if p.memory is not None:
            contexts = []
            for b, i in enumerate(forward):
                s = jobs[i].session
                p.set_runtime_state(s.state)  # type: ignore[arg-type]
                start = torch.tensor([p._episode_start])
                contexts.append(p.memory.step(fused.pooled[b : b + 1], start))
                p._episode_start = False
                s.state = p.runtime_state()
            fused = p._with_context(fused, torch.cat(contexts))
        chunks = p._decode(fused).cpu().numpy()  # (B, k, A)
        for b, i in enumerate(forward):
            job, s = jobs[i], jobs[i].session
            p.set_runtime_state(s.state)  # type: ignore[arg-type]
            try:
                chunk = chunks[b]  # (k, A)
                finite = bool(np.isfinite(chunk).all())
                if job.chunk:
                    out = chunk if p.safety is None else p.safety.limit(chunk)
                    if not finite and p.safety is None:
                        out = np.repeat(self._hold(s, chunk.shape[-1])[None], chunk.shape[0], 0)
                elif not finite:
                    p._chunker.reset()
                    out = self._hold(s, chunk.shape[-1]) if p.safety is None else p.safety.limit(chunk[0])
                else:
                    if p._chunker.needs_prediction():
                        p._chunker.push(chunk)
                    action = p._chunker.pop()
                    out = action if p.safety is None else p.safety.limit(action)
            finally:
                s.state = p.runtime_state()
            replies[i] = self._action_reply(s, job, out, nonfinite=not finite)

    def _action_reply(
        self, s: _Session, job: _Job, out: np.ndarray, nonfinite: bool = False
    ) -> dict[str, Any]:
        s.steps += 1
        out = np.asarray(out, dtype=np.float32)
        A = out.shape[-1]
        if A > GRIPPER_DIM and np.isfinite(out).all():
            s.last_gripper = float(out.reshape(-1, A)[0, GRIPPER_DIM])
        monitor = s.state["safety"] if s.state is not None else None
        if monitor is not None and monitor.last is not None:
            safety = monitor.last.to_dict()
            counters = dict(monitor.counters)
        else:
            safety, counters = {"decision": "ok", "reason": "safety layer off", "fallback": False}, {}
        if nonfinite:
            self.stats["errors"] += 1
            s.log.event(
                logging.WARNING, "nonfinite_output", "the network's output is not finite: hold action"
            )
            if monitor is None:
                safety = {
                    "decision": FALLBACK_NONFINITE,
                    "reason": "the policy produced a non-finite action",
                    "fallback": True,
                }
        infer_ms = (time.perf_counter() - job.started_at) * 1e3  # this request's batch so far
        queue_ms = (job.started_at - job.queued_at) * 1e3
        if job.openpi:
            actions = out if out.ndim == 2 else out[None]
            return {
                "actions": actions,
                "server_timing": {"infer_ms": infer_ms, "queue_ms": queue_ms},
                "policy_timing": {"infer_ms": infer_ms},
                "safety": safety,
                "step": s.steps,
                **({"error": "nonfinite_output"} if nonfinite else {}),
            }
        reply: dict[str, Any] = {
            "kind": "action",
            "action": out[0] if job.chunk else out,
            "safety": safety,
            "counters": counters,
            "step": s.steps,
            "infer_ms": infer_ms,
            "queue_ms": queue_ms,
        }
        if job.chunk:
            reply["actions"] = out
        if nonfinite:
            reply["error"] = "nonfinite_output"
        return reply

    def _internal(self, s: _Session, e: BaseException | None) -> dict[str, Any]:
        if e is not None and s.log.counts["internal"] == 0:
            logger.error("connection %d: internal error", s.number, exc_info=e)
        return self._error_reply(
            s, "internal", "internal error" if e is None else f"internal error ({type(e).__name__})"
        )

    def _error_reply(self, s: _Session, code: str, reason: str) -> dict[str, Any]:
        self.stats["errors"] += 1
        reason = bounded(reason)
        s.log.event(logging.INFO, code, reason)
        return {"kind": "error", "error": code, "reason": reason}

    # ------------------------------------------------------------------ scheduler
    async def _scheduler(self) -> None:
        """Take waiting act requests (one per connection, oldest first) into batches on the worker."""
        assert self._wakeup is not None and self._executor is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            limit = self._batch_limit()
            if self.batch_wait_ms > 0 and len(self._queue) < limit:
                deadline = loop.time() + self.batch_wait_ms / 1e3
                while len(self._queue) < limit:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), left)
            batch: list[_Job] = []
            while self._queue and len(batch) < self.max_batch:  # late arrivals of the last group too
                job = self._queue.popleft()
                if not job.future.done():
                    job.taken = True
                    batch.append(job)
            if not batch:
                continue
            self.stats["batches"] += 1
            self.stats["batched_requests"] += len(batch)
            try:
                replies = await loop.run_in_executor(self._executor, self._run_batch, batch)
            except Exception as e:  # never expected: _run_batch turns failures into replies
                replies = [self._internal(j.session, e) for j in batch]
            for job, reply in zip(batch, replies, strict=True):
                if not job.future.done():
                    job.future.set_result(reply)

    def _batch_limit(self) -> int:
        """Waiting requests that start a batch: a group's share of the active connections, but not fewer
        than MIN_GROUP_BATCH of them (or all), in [1, max_batch]."""
        active = self._active_sessions()
        share = max(-(-active // self.batch_groups), min(active, MIN_GROUP_BATCH))
        return max(1, min(self.max_batch, share))

    def _active_sessions(self) -> int:
        """Connections that sent an act request in the last second (the batch the scheduler waits for)."""
        now = time.monotonic()
        return sum(1 for s in self._sessions.values() if now - s.last_act < 1.0 and not s.closing)

    async def _on_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ------------------------------------------------------------------ connection handling
    def _authorised(self, request: Request) -> bool:
        if self._token is None:
            return True
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() not in ("bearer", "api-key"):
            return False
        return hmac.compare_digest(value.strip().encode(), self._token)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        authorised = self._authorised(request)
        if request.path.split("?", 1)[0] == HEALTH_PATH:
            response = connection.respond(HTTPStatus.OK, json.dumps(self.health(authorised)) + "\n")
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        peer = str(connection.remote_address[0]) if connection.remote_address else "?"
        if not authorised:
            self.stats["unauthorized"] += 1
            self._limiter.log(logging.WARNING, "refused %s: missing or wrong token", peer)
            return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")
        same_ip = [s for s in self._sessions.values() if s.peer == peer and not s.closing]
        live = [s for s in self._sessions.values() if not s.closing]
        for pool, cap in ((same_ip, self.max_connections_per_ip), (live, self.max_connections)):
            if len(pool) >= cap and not self._reclaim(pool):
                self.stats["refused"] += 1
                self._limiter.log(logging.WARNING, "refused %s: all %d slots busy", peer, cap)
                return connection.respond(
                    HTTPStatus.SERVICE_UNAVAILABLE, f"too many connections (max {cap})\n"
                )
        number = next(self._numbers)
        session = _Session(number, connection, peer, _ConnLog(number, peer, self._limiter))
        self._sessions[connection] = session
        asyncio.get_running_loop().create_task(self._forget_when_closed(connection))
        return None

    def _reclaim(self, pool: list[_Session]) -> bool:
        """Close the connection idle longest in ``pool`` if it has been idle ``reclaim_idle_s``."""
        now = time.monotonic()
        idle = [s for s in pool if s.pending is None and now - s.last_request >= self.reclaim_idle_s]
        if not idle:
            return False
        victim = min(idle, key=lambda s: s.last_request)
        self._close(victim, 1008, "idle connection closed for a new one", "reclaimed")
        return True

    def _close(self, s: _Session, code: int, reason: str, stat: str) -> None:
        if s.closing:
            return
        s.closing = True
        self.stats[stat] += 1
        self._limiter.log(logging.INFO, "connection %d from %s: %s", s.number, s.peer, reason)
        ws = s.ws
        asyncio.get_running_loop().create_task(ws.close(code, reason))
        if ws.transport is not None:  # the peer may never answer the closing handshake
            asyncio.get_running_loop().call_later(1.0, ws.transport.abort)

    async def _forget_when_closed(self, ws: ServerConnection) -> None:
        with contextlib.suppress(Exception):
            await ws.wait_closed()
        self._sessions.pop(ws, None)

    async def _watchdog(self) -> None:
        """Close idle connections and ones whose current frame has been arriving for too long."""
        period = max(0.05, min(0.5, self.frame_timeout_s / 4, self.idle_timeout_s / 4))
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for ws, s in list(self._sessions.items()):
                if s.closing:
                    continue
                since = getattr(ws, "partial_since", None)
                if since is not None and now - since > self.frame_timeout_s:
                    self._close(s, 1008, f"frame not complete within {self.frame_timeout_s:g} s", "timed_out")
                elif s.pending is None and now - s.last_request > self.idle_timeout_s:
                    self._close(s, 1000, f"idle for {self.idle_timeout_s:g} s", "timed_out")

    async def _handler(self, ws: ServerConnection) -> None:
        session = self._sessions.get(ws)
        if session is None:  # reclaimed between the handshake and now
            return
        self.stats["connections_total"] += 1
        self.stats["connections_open"] += 1
        self._limiter.log(logging.INFO, "connection %d from %s opened", session.number, session.peer)
        try:
            session.state = await self._on_worker(self._fresh_state, session, self.chunk_mode)
            await ws.send(pack(self.metadata()))
            async for frame in ws:
                session.last_request = time.monotonic()
                await self._on_frame(session, frame)
        except ConnectionClosed:
            pass
        finally:
            session.closing = True
            if session.pending is not None and not session.pending.future.done():
                session.pending.future.cancel()
            self.stats["connections_open"] -= 1
            errors = sum(v for k, v in session.log.counts.items() if not k.startswith("safety "))
            summary = ", ".join(f"{k} {v}" for k, v in session.log.counts.most_common(6))
            self._limiter.log(
                logging.INFO,
                "connection %d ended after %d steps, %d errors%s",
                session.number,
                session.steps,
                errors,
                f" ({summary})" if summary else "",
            )
            self._sessions.pop(ws, None)

    async def _send(self, s: _Session, reply: dict[str, Any], openpi: bool) -> None:
        if openpi:
            if reply.get("kind") == "error":  # openpi-client raises on a text frame
                await s.ws.send(bounded(f"{reply['error']}: {reply['reason']}"))
            else:
                await s.ws.send(pack_openpi(reply))
        else:
            await s.ws.send(pack(reply))

    async def _on_frame(self, s: _Session, frame: Any) -> None:
        """Parse one frame on the loop; answer it, or queue its act request (replied to when done)."""
        self.stats["requests"] += 1
        rid: int | str | None = None
        openpi = s.protocol == "openpi"
        try:
            msg = unpack(frame)
            if s.protocol is None:
                s.protocol = self.protocol if self.protocol != "auto" else self._detect(msg)
                openpi = s.protocol == "openpi"
            if openpi:
                job_args = (self._openpi_observation(msg), True)
            else:
                rid = request_id(msg)
                kind = msg.get("kind")
                if not isinstance(kind, str):
                    raise ProtocolError(
                        "bad_request", f"missing 'kind' (a string, one of {', '.join(KINDS)})"
                    )
                if kind not in _REQUEST_KEYS:
                    raise ProtocolError(
                        "unknown_kind", f"unknown kind {name(kind)}; expected one of {', '.join(KINDS)}"
                    )
                extra = sorted(name(k) for k in set(msg) - _REQUEST_KEYS[kind])
                if extra:
                    raise ProtocolError(
                        "bad_request",
                        f"{kind!r} request has {len(extra)} unknown field(s): {', '.join(extra[:4])}",
                    )
                if kind != "act":
                    await self._settle(s)  # replies stay in request order
                    if kind == "metadata":
                        reply = self.metadata()
                    else:
                        reply = await self._reset(s, msg)
                    if rid is not None:
                        reply["id"] = rid
                    await self._send(s, reply, False)
                    return
                chunk = msg.get("chunk", False)
                if not isinstance(chunk, bool):
                    raise ProtocolError(
                        "bad_request", f"'chunk' must be true or false, got {describe(chunk)}"
                    )
                job_args = (self._check_observation(msg.get("observation")), chunk)
        except ProtocolError as e:
            await self._settle(s)
            reply = self._error_reply(s, e.code, e.reason)
            if rid is not None:
                reply["id"] = rid
            await self._send(s, reply, openpi)
            return
        except Exception as e:  # a bug must not take the server down: report it, keep serving
            await self._settle(s)
            await self._send(s, self._internal(s, e), openpi)
            return
        await self._submit(
            s, _Job(s, job_args[0], job_args[1], rid, openpi, asyncio.get_running_loop().create_future())
        )

    def _detect(self, msg: Mapping[str, Any]) -> str:
        """A first frame without "kind" that has an openpi observation key (or "prompt") is openpi's."""
        if "kind" in msg:
            return "mmvla"
        openpi = any(k in self.openpi_keys or k == "prompt" for k in msg)
        return "openpi" if openpi else "mmvla"

    async def _settle(self, s: _Session) -> None:
        """Wait until this connection's act in progress has been answered."""
        if s.delivery is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(s.delivery)

    async def _submit(self, s: _Session, job: _Job) -> None:
        """Queue an act request; a request of this connection still waiting in the queue is answered
        ``superseded`` and the new one takes its place. Replies go out in request order."""
        prev = s.pending
        s.pending = job
        s.last_act = time.monotonic()
        if prev is not None and not prev.taken and not prev.future.done():
            self.stats["superseded"] += 1
            self._queue[self._queue.index(prev)] = job  # the newest observation keeps the older one's place
            reply = self._error_reply(s, "superseded", "a newer act request from this connection replaced it")
            prev.future.set_result(reply)
        else:  # nothing queued (perhaps one in the batch being computed: this one waits for the next)
            self._queue.append(job)
        assert self._wakeup is not None
        self._wakeup.set()
        s.delivery = asyncio.get_running_loop().create_task(self._deliver(s, job, s.delivery))

    async def _deliver(self, s: _Session, job: _Job, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:  # replies in request order
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(previous)
        try:
            reply = await job.future
        except asyncio.CancelledError:
            return
        finally:
            if s.pending is job:
                s.pending = None
                s.last_request = time.monotonic()  # idle time counts from the answer
        if job.rid is not None:
            reply["id"] = job.rid
        with contextlib.suppress(ConnectionClosed):
            await self._send(s, reply, job.openpi)

    async def _reset(self, s: _Session, msg: Mapping[str, Any]) -> dict[str, Any]:
        assert s.state is not None
        mode = msg.get("chunk_mode", s.state["chunk_mode"])
        if not isinstance(mode, str) or mode not in CHUNK_MODES:
            shown = repr(mode) if isinstance(mode, str) and len(mode) <= 16 else describe(mode)
            raise ProtocolError("bad_request", f"chunk_mode must be one of {CHUNK_MODES}, got {shown}")
        await self._on_worker(self._reset_state, s, mode)
        s.steps = 0
        return {"kind": "reset", "chunk_mode": mode}

    # ------------------------------------------------------------------ observations
    def _check_observation(self, obs: Any) -> dict[str, Any]:
        """The "observation" of an act request: a map of str -> array | str | number (else bad_request);
        an instruction longer than ``max_instruction_chars`` is refused here, before any tokenising."""
        if not isinstance(obs, Mapping):
            raise ProtocolError("bad_request", f"'observation' must be a map, got {describe(obs)}")
        for key, value in obs.items():
            if not isinstance(key, str) or len(key) > _MAX_KEY_CHARS or not key.isprintable():
                raise ProtocolError(
                    "bad_request",
                    f"observation keys must be printable strings of at most {_MAX_KEY_CHARS} chars, got {name(key)}",
                )
            if not isinstance(value, (np.ndarray, str, int, float)) or isinstance(value, bool):
                raise ProtocolError(
                    "bad_request",
                    f"observation[{name(key)}] must be an array, a string or a number, got {describe(value)}",
                )
        text = obs.get("instruction")
        if isinstance(text, str) and len(text) > self.max_instruction_chars:
            raise ProtocolError(
                "invalid_observation",
                f"'instruction' has {len(text)} chars (max {self.max_instruction_chars})",
            )
        return dict(obs)

    def _openpi_observation(self, msg: Mapping[str, Any]) -> dict[str, Any]:
        """An openpi observation map -> this policy's observation (keys mapped, images resized)."""
        flat: dict[str, Any] = {}

        def walk(prefix: str, m: Mapping[Any, Any]) -> None:
            for k, v in m.items():
                if not isinstance(k, str):
                    raise ProtocolError("bad_request", f"observation keys must be strings, got {name(k)}")
                key = f"{prefix}{k}"
                if isinstance(v, Mapping):
                    walk(key + "/", v)
                else:
                    flat[key] = v

        walk("", msg)
        cfg = self.policy.cfg
        out: dict[str, Any] = {}
        for wire, value in flat.items():
            key = self.openpi_keys.get(wire, wire)
            if key == _DROP:
                continue
            if isinstance(value, (bytes, bytearray)) and key == "instruction":
                try:
                    value = bytes(value).decode("utf-8")
                except UnicodeDecodeError:
                    raise ProtocolError("bad_request", "'prompt' is not UTF-8") from None
            if key in cfg.cameras and isinstance(value, np.ndarray):
                value = self._openpi_image(wire, value, cfg.image_size)
            if key == "state" and isinstance(value, np.ndarray) and value.dtype.kind == "f":
                value = value.astype(np.float32, copy=False)
            if key in out:
                raise ProtocolError("bad_request", f"two keys map to {name(key)}")
            out[key] = value
        return self._check_observation(out)

    @staticmethod
    def _openpi_image(wire: str, img: np.ndarray, size: int) -> np.ndarray:
        if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
            img = np.moveaxis(img, 0, -1)  # (3, H, W) -> (H, W, 3)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3 or min(img.shape[:2]) < 1:
            raise ProtocolError(
                "invalid_observation",
                f"{name(wire)} must be a uint8 (H, W, 3) or (3, H, W) image, got {describe(img)}",
            )
        return resize_image(np.ascontiguousarray(img), size)

    # ------------------------------------------------------------------ lifecycle
    async def serve_forever(
        self, ready: Callable[[], None] | None = None, handle_signals: bool = False
    ) -> None:
        """Listen until :meth:`stop` (or SIGINT/SIGTERM with ``handle_signals``), then shut down gracefully:
        stop accepting, close every connection (code 1001), finish the step in progress."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_event = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mmvla-infer")
        await self._on_worker(self.policy.prepare_vision_trace, self.max_batch)  # no first-use spikes
        tasks = [loop.create_task(self._scheduler()), loop.create_task(self._watchdog())]
        if handle_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._stop_event.set)
        try:
            async with serve(
                self._handler,
                self.host,
                self.port,
                max_size=self.max_message_bytes,
                compression=None,
                process_request=self._process_request,
                open_timeout=self.handshake_timeout_s,
                close_timeout=2.0,
                create_connection=_Connection,
                logger=logging.getLogger("mmvla.serving.server.websockets"),
            ) as server:
                self.port = int(next(iter(server.sockets)).getsockname()[1])
                self._started_at = time.time()
                logger.info(
                    "serving %s on %s (checkpoint %s, protocol %s, token %s)",
                    type(self.policy).__name__,
                    self.url,
                    self.checkpoint[:12],
                    self.protocol,
                    "required" if self._token is not None else "off",
                )
                if ready is not None:
                    ready()
                await self._stop_event.wait()
                logger.info("shutting down: closing %d connection(s)", self.stats["connections_open"])
                server.close(close_connections=True)
                await server.wait_closed()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            self._executor.shutdown(wait=True)
            logger.info("server stopped")

    def start(self, timeout: float = 30.0) -> PolicyServer:
        """Serve in a background thread (own event loop); returns once listening. For tests and benchmarks."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        ready = threading.Event()

        def main() -> None:
            try:
                asyncio.run(self.serve_forever(ready=ready.set))
            except BaseException as e:  # surfaced by start() or stop()
                self._thread_error = e
                ready.set()

        self._thread = threading.Thread(target=main, name="mmvla-serve", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or self._thread_error is not None:
            self.stop()
            raise RuntimeError(
                f"policy server failed to start on {self.host}:{self.port}: {self._thread_error}"
            )
        return self

    def request_stop(self) -> None:
        """Ask the server to shut down (thread-safe, returns at once)."""
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down gracefully and wait for the background thread (no-op if not running)."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"policy server did not stop within {timeout} s")
            self._thread = None

    def __enter__(self) -> PolicyServer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
