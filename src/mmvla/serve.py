"""Policy server: one policy's weights answering many robot clients over WebSockets.

::

    client ──ws──► asyncio loop (frames, validation, errors) ──► 1 inference thread ──► VLAPolicy
                   per connection: chunker, memory, SafetyMonitor  (swapped in around each step)

The wire protocol is documented in :mod:`mmvla.protocol`. ``GET /healthz`` on the same port answers
``200`` with a JSON status. Each connection gets its own run-time state (action chunks, temporal
memory, safety monitor) while the weights are shared; inference runs on one worker thread, off the
event loop, so framing, validation and replies for every client go on while a step is computed and
connections never see each other's state. Malformed input never takes the server down: it gets an
error frame and the connection stays open (a frame over ``max_message_bytes`` is refused by the
WebSocket layer, which closes that connection with code 1009).

Use :class:`PolicyServer` in-process (``start()`` / ``stop()`` run it in a background thread) or
through ``mmvla serve`` (``serve_forever`` with SIGINT/SIGTERM handled as a graceful shutdown).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import itertools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from mmvla import __version__
from mmvla.protocol import KINDS, PROTOCOL_VERSION, ProtocolError, pack, request_id, unpack

if TYPE_CHECKING:
    from mmvla.policy.model import VLAPolicy
    from mmvla.policy.safety import SafetyConfig

logger = logging.getLogger("mmvla.serve")

DEFAULT_MAX_MESSAGE_BYTES = 4 * 2**20
ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
HEALTH_PATH = "/healthz"
_REQUEST_KEYS = {
    "metadata": {"kind", "id"},
    "reset": {"kind", "id", "chunk_mode"},
    "act": {"kind", "id", "observation", "chunk"},
}


def checkpoint_id(directory: str | os.PathLike[str]) -> str:
    """sha256 (hex) of a checkpoint's ``model.safetensors``: identifies the weights a server answers with."""
    h = hashlib.sha256()
    with open(Path(directory) / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _Session:
    """One connection's run-time state; only touched on the inference thread (``state``) or the loop."""

    def __init__(self, number: int, peer: Any) -> None:
        self.number = number
        self.peer = peer
        self.state: dict[str, Any] | None = None  # VLAPolicy.runtime_state() of this connection
        self.steps = 0  # act requests answered since the last reset


class PolicyServer:
    """WebSocket policy server (msgpack frames, see :mod:`mmvla.protocol`).

    Args:
        policy: the policy (put in eval mode); its weights are shared by every connection.
        host, port: where to listen; port 0 picks a free port (see :attr:`port` after start).
        checkpoint: id sent in the metadata (``checkpoint_id(directory)``; "" if unknown).
        safety: True (default thresholds), a SafetyConfig for each connection's monitor, or False (no safety
            layer; not advised).
        chunk_mode: each connection's initial chunk mode ("ensemble" or "execute"); "reset" may change it.
        max_message_bytes: largest frame accepted; bigger ones close that connection (code 1009).
        max_connections: more simultaneous connections are refused with HTTP 503.
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
    ) -> None:
        from mmvla.policy.runtime import CHUNK_MODES
        from mmvla.policy.safety import SafetyConfig

        if chunk_mode not in CHUNK_MODES:
            raise ValueError(f"chunk_mode must be one of {CHUNK_MODES}, got {chunk_mode!r}")
        if max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {max_message_bytes}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.policy = policy.eval()
        self.host, self.port = host, int(port)
        self.checkpoint = checkpoint
        if isinstance(safety, bool):
            self.safety_config: SafetyConfig | None = SafetyConfig() if safety else None
        else:
            self.safety_config = safety
        self.chunk_mode = chunk_mode
        self.max_message_bytes = int(max_message_bytes)
        self.max_connections = int(max_connections)
        self.stats = {"connections_total": 0, "connections_open": 0, "requests": 0, "errors": 0}
        self._numbers = itertools.count(1)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._started_at = time.time()

    @classmethod
    def from_checkpoint(cls, directory: str | os.PathLike[str], **kwargs: Any) -> PolicyServer:
        """Load ``directory`` (``save_pretrained``) and build a server whose metadata carries its sha256."""
        from mmvla.policy import VLAPolicy

        policy = VLAPolicy.from_pretrained(directory)
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
            "safety": None if self.safety_config is None else self.safety_config.to_dict(),
            "mmvla_version": __version__,
        }

    def health(self) -> dict[str, Any]:
        """The /healthz body."""
        return {
            "status": "ok",
            "checkpoint_id": self.checkpoint,
            "uptime_s": round(time.time() - self._started_at, 3),
            **self.stats,
        }

    # ------------------------------------------------------------------ inference thread
    def _fresh_state(self, chunk_mode: str) -> dict[str, Any]:
        from mmvla.policy.safety import SafetyMonitor

        p = self.policy
        p.safety = None if self.safety_config is None else SafetyMonitor(self.safety_config)
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

    def _act(self, session: _Session, observation: dict[str, Any], chunk: bool) -> dict[str, Any]:
        p = self.policy
        assert session.state is not None
        p.set_runtime_state(session.state)
        t0 = time.perf_counter()
        try:
            if chunk:
                actions = p.act_chunk(observation)  # (k, A)
                action = actions[0]
            else:
                action = p.act(observation)  # (A,)
        finally:
            session.state = p.runtime_state()
        infer_ms = (time.perf_counter() - t0) * 1e3
        session.steps += 1
        monitor = session.state["safety"]
        if monitor is not None and monitor.last is not None:
            safety = monitor.last.to_dict()
            counters = dict(monitor.counters)
        else:
            safety, counters = {"decision": "ok", "reason": "safety layer off", "fallback": False}, {}
        reply: dict[str, Any] = {
            "kind": "action",
            "action": np.asarray(action, dtype=np.float32),
            "safety": safety,
            "counters": counters,
            "step": session.steps,
            "infer_ms": infer_ms,
        }
        if chunk:
            reply["actions"] = np.asarray(actions, dtype=np.float32)
        return reply

    async def _infer(self, fn: Callable[..., Any], *args: Any) -> Any:
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # ------------------------------------------------------------------ connection handling
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] == HEALTH_PATH:
            response = connection.respond(HTTPStatus.OK, json.dumps(self.health()) + "\n")
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "application/json"
            return response
        if self.stats["connections_open"] >= self.max_connections:
            return connection.respond(
                HTTPStatus.SERVICE_UNAVAILABLE, f"too many connections (max {self.max_connections})\n"
            )
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        session = _Session(next(self._numbers), ws.remote_address)
        self.stats["connections_total"] += 1
        self.stats["connections_open"] += 1
        logger.info("connection %d from %s opened", session.number, session.peer)
        try:
            session.state = await self._infer(self._fresh_state, self.chunk_mode)
            await ws.send(pack(self.metadata()))
            async for frame in ws:
                await ws.send(pack(await self._reply(session, frame)))
        except ConnectionClosed as e:
            logger.info("connection %d closed: %s", session.number, e)
        finally:
            self.stats["connections_open"] -= 1
            logger.info("connection %d ended after %d steps", session.number, session.steps)

    async def _reply(self, session: _Session, frame: Any) -> dict[str, Any]:
        """One request frame -> its reply (an error frame for anything wrong); never raises."""
        from mmvla.policy.observation import ObservationError
        from mmvla.policy.runtime import CHUNK_MODES

        self.stats["requests"] += 1
        rid: int | str | None = None
        try:
            msg = unpack(frame)
            rid = request_id(msg)
            kind = msg.get("kind")
            if not isinstance(kind, str):
                raise ProtocolError("bad_request", f"missing 'kind' (a string, one of {', '.join(KINDS)})")
            if kind not in _REQUEST_KEYS:
                raise ProtocolError(
                    "unknown_kind", f"unknown kind {kind[:64]!r}; expected one of {', '.join(KINDS)}"
                )
            extra = sorted(str(k)[:64] for k in set(msg) - _REQUEST_KEYS[kind])
            if extra:
                raise ProtocolError(
                    "bad_request", f"{kind!r} request has unknown field(s) {', '.join(extra)}"
                )
            if kind == "metadata":
                reply = self.metadata()
            elif kind == "reset":
                assert session.state is not None
                mode = msg.get("chunk_mode", session.state["chunk_mode"])
                if not isinstance(mode, str) or mode not in CHUNK_MODES:
                    raise ProtocolError(
                        "bad_request", f"chunk_mode must be one of {CHUNK_MODES}, got {mode!r}"
                    )
                await self._infer(self._reset_state, session, mode)
                session.steps = 0
                reply = {"kind": "reset", "chunk_mode": mode}
            else:
                observation = _check_observation_frame(msg.get("observation"))
                chunk = msg.get("chunk", False)
                if not isinstance(chunk, bool):
                    raise ProtocolError("bad_request", f"'chunk' must be true or false, got {chunk!r}")
                reply = await self._infer(self._act, session, observation, chunk)
        except ProtocolError as e:
            reply = self._error(session, e.code, e.reason)
        except ObservationError as e:
            reply = self._error(session, "invalid_observation", str(e))
        except Exception as e:  # a bug must not take the server down: report it, keep serving
            logger.exception("connection %d: internal error", session.number)
            reply = self._error(session, "internal", f"{type(e).__name__}: {e}")
        if rid is not None:
            reply["id"] = rid
        return reply

    def _error(self, session: _Session, code: str, reason: str) -> dict[str, Any]:
        self.stats["errors"] += 1
        logger.info("connection %d: %s: %s", session.number, code, reason)
        return {"kind": "error", "error": code, "reason": reason}

    # ------------------------------------------------------------------ lifecycle
    async def serve_forever(
        self, ready: Callable[[], None] | None = None, handle_signals: bool = False
    ) -> None:
        """Listen until :meth:`stop` (or SIGINT/SIGTERM with ``handle_signals``), then shut down gracefully:
        stop accepting, close every connection (code 1001), finish the step in progress."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_event = asyncio.Event()
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mmvla-infer")
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
                logger=logging.getLogger("mmvla.serve.websockets"),
            ) as server:
                self.port = int(next(iter(server.sockets)).getsockname()[1])
                self._started_at = time.time()
                logger.info(
                    "serving %s on %s (checkpoint %s)",
                    type(self.policy).__name__,
                    self.url,
                    self.checkpoint[:12],
                )
                if ready is not None:
                    ready()
                await self._stop_event.wait()
                logger.info("shutting down: closing %d connection(s)", self.stats["connections_open"])
                server.close(close_connections=True)
                await server.wait_closed()
        finally:
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


def _check_observation_frame(obs: Any) -> dict[str, Any]:
    """The "observation" of an act request: a map of str -> array | str | number (else bad_request)."""
    if not isinstance(obs, Mapping):
        raise ProtocolError("bad_request", f"'observation' must be a map, got {type(obs).__name__}")
    for key, value in obs.items():
        if not isinstance(key, str):
            raise ProtocolError("bad_request", f"observation keys must be strings, got {key!r}")
        if not isinstance(value, (np.ndarray, str, int, float)) or isinstance(value, bool):
            raise ProtocolError(
                "bad_request",
                f"observation[{key[:64]!r}] must be an array, a string or a number, got {type(value).__name__}",
            )
    return dict(obs)
