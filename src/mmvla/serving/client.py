"""Robot-side client of ``mmvla serve`` (needs numpy, msgpack and websockets only; no torch).

- :class:`PolicyClient`: one WebSocket connection; ``act(observation)`` -> the next (A,) action,
  ``act_chunk`` -> a (k, A) chunk, ``reset()``, the server's ``metadata``; a lost connection is
  re-established with exponential back-off and the request sent again (the server then starts a
  fresh episode state for the new connection, as after ``reset``).
- :class:`AsyncPolicyClient`: executes a chunk open-loop while the next one is requested in the
  background from the latest observation, so the control loop does not wait for the network or the
  model; a late chunk is aligned by skipping the actions already executed since its request.
- :class:`RemotePolicy`: the ``cfg`` / ``reset`` / ``act`` surface of :class:`mmvla.policy.VLAPolicy`,
  acting through a server (``mmvla eval --server ws://...``).

The wire protocol is documented in :mod:`mmvla.serving.protocol`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import inspect
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from mmvla.core.handover import HANDOVER, HandOver
from mmvla.serving.protocol import ProtocolError, pack, unpack

if TYPE_CHECKING:  # for mypy only: importing mmvla.policy at run time would import torch
    from mmvla.policy.protocol import Policy

logger = logging.getLogger("mmvla.serving.client")

DEFAULT_CLIENT_MAX_MESSAGE_BYTES = 16 * 2**20
# Newer websockets releases read proxy settings from the environment (off here: a robot talks to its
# server directly) and want ``legacy=True`` for a plain connection object; older ones know neither.
_CONNECT_PARAMS = inspect.signature(connect).parameters
_CONNECT_EXTRA: dict[str, Any] = {
    **({"proxy": None} if "proxy" in _CONNECT_PARAMS else {}),
    **({"legacy": True} if "legacy" in _CONNECT_PARAMS else {}),
}


def open_connection(
    url: str,
    timeout: float = 10.0,
    max_size: int | None = DEFAULT_CLIENT_MAX_MESSAGE_BYTES,
    token: str | None = None,
) -> ClientConnection:
    """A raw synchronous WebSocket connection to ``url`` (no compression, no proxy); the caller closes it.

    ``token``: sent as ``Authorization: Bearer <token>`` (``mmvla serve --token``); None: none sent.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return connect(
        url,
        open_timeout=timeout,
        close_timeout=1.0,
        compression=None,
        max_size=max_size,
        additional_headers=headers,
        **_CONNECT_EXTRA,
    )


class PolicyServerError(RuntimeError):
    """The server answered with an error frame: ``code`` (see :data:`mmvla.serving.protocol.ERROR_CODES`), ``reason``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"policy server error ({code}): {reason}")
        self.code = code
        self.reason = reason


def _prepare_observation(observation: Mapping[str, Any]) -> dict[str, Any]:
    """Lists/tuples become numpy arrays (float32 for a float "state"), numpy scalars plain numbers."""
    out: dict[str, Any] = {}
    for key, value in observation.items():
        if isinstance(value, (list, tuple)):
            value = np.asarray(value)
        if isinstance(value, np.ndarray) and key == "state" and value.dtype == np.float64:
            value = value.astype(np.float32)
        if isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


class PolicyClient:
    """A synchronous client for one control stream (one server-side episode state).

    Args:
        url: ``ws://host:port`` of ``mmvla serve``.
        timeout: seconds to wait for each reply; a timeout drops the connection (the next request
            reconnects) and raises ``TimeoutError``.
        connect_timeout: total seconds to keep retrying a connection (exponential back-off from
            ``backoff_initial`` doubling up to ``backoff_max``) before ``ConnectionError``.
        max_message_bytes: largest reply accepted.
        token: the server's token (``mmvla serve --token``); None reads ``$MMVLA_SERVE_TOKEN`` (unset: none).
        connect: connect now (else on the first request).

    Attributes:
        metadata: the server's metadata frame (cameras, image_size, chunk_size, checkpoint_id, ...).
        last_reply: the latest "action" reply (its "safety", "counters", "step", "infer_ms").
        reconnects: connections re-established after a loss.
    """

    def __init__(
        self,
        url: str,
        timeout: float = 10.0,
        *,
        connect_timeout: float = 30.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        max_message_bytes: int = DEFAULT_CLIENT_MAX_MESSAGE_BYTES,
        connect: bool = True,
        token: str | None = None,
    ) -> None:
        if timeout <= 0 or connect_timeout < 0 or backoff_initial <= 0 or backoff_max < backoff_initial:
            raise ValueError(
                "PolicyClient: need timeout > 0, connect_timeout >= 0 and 0 < backoff_initial <= backoff_max"
            )
        self.url = url
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.backoff_initial, self.backoff_max = float(backoff_initial), float(backoff_max)
        self.max_message_bytes = int(max_message_bytes)
        self.token = token if token is not None else os.environ.get("MMVLA_SERVE_TOKEN") or None
        self.metadata: dict[str, Any] = {}
        self.last_reply: dict[str, Any] = {}
        self.reconnects = 0
        self._ws: ClientConnection | None = None
        self._lock = threading.RLock()
        self._ids = 0
        if connect:
            self.connect()

    # ------------------------------------------------------------------ connection
    def connect(self) -> None:
        """(Re)connect, retrying with exponential back-off for up to ``connect_timeout`` seconds."""
        with self._lock:
            self._drop()
            deadline = time.monotonic() + self.connect_timeout
            delay, attempts = self.backoff_initial, 0
            while True:
                attempts += 1
                ws = None
                try:
                    ws = open_connection(self.url, self.timeout, self.max_message_bytes, self.token)
                    metadata = unpack(ws.recv(timeout=self.timeout))
                    if metadata.get("kind") != "metadata":
                        raise ProtocolError(
                            "malformed", f"expected a metadata frame first, got {metadata.get('kind')!r}"
                        )
                    break
                except InvalidURI as e:
                    raise ValueError(f"invalid policy server URL {self.url!r}: {e}") from None
                except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, ProtocolError) as e:
                    if ws is not None:
                        ws.close()
                    if time.monotonic() + delay > deadline:
                        raise ConnectionError(
                            f"cannot connect to the policy server at {self.url} ({attempts} attempt(s)): {e}"
                        ) from e
                    logger.info("connecting to %s failed (%s); retrying in %.2f s", self.url, e, delay)
                    time.sleep(delay)
                    delay = min(2 * delay, self.backoff_max)
            old = self.metadata.get("checkpoint_id")
            if old is not None and old != metadata.get("checkpoint_id"):
                logger.warning(
                    "the server at %s now serves checkpoint %s (was %s)",
                    self.url,
                    metadata.get("checkpoint_id"),
                    old,
                )
            self.metadata, self._ws = metadata, ws

    def _drop(self) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to release
                self._ws.close()
            self._ws = None

    def close(self) -> None:
        """Close the connection (a later request reconnects)."""
        with self._lock:
            self._drop()

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ requests
    def request(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """Send one request (numpy arrays inside are encoded) and return its reply.

        Raises:
            PolicyServerError: the server answered with an error frame.
            ValueError: the frame is larger than the server accepts.
            ConnectionError: the connection was lost and could not be re-established.
            TimeoutError: no reply within ``timeout`` seconds.
        """
        with self._lock:
            if self._ws is None:
                self.connect()
            self._ids += 1
            rid = self._ids
            frame = pack({**message, "id": rid})
            limit = self.metadata.get("max_message_bytes")
            if isinstance(limit, int) and len(frame) > limit:
                raise ValueError(
                    f"request of {len(frame)} bytes exceeds the server's max_message_bytes {limit}"
                )
            for attempt in (1, 2):
                try:
                    assert self._ws is not None
                    self._ws.send(frame)
                    while True:
                        reply = unpack(self._ws.recv(timeout=self.timeout))
                        if reply.get("id") == rid:
                            break  # replies to earlier, abandoned requests are skipped
                    break
                except TimeoutError:
                    self._drop()
                    raise TimeoutError(f"no reply from {self.url} within {self.timeout:g} s") from None
                except (ConnectionClosed, OSError) as e:
                    self._drop()
                    if attempt == 2:
                        raise ConnectionError(f"lost the connection to {self.url}: {e}") from e
                    logger.warning(
                        "connection to %s lost (%s); reconnecting (fresh server-side episode state)",
                        self.url,
                        e,
                    )
                    self.connect()
                    self.reconnects += 1
        if reply.get("kind") == "error":
            raise PolicyServerError(str(reply.get("error")), str(reply.get("reason")))
        return reply

    def _action_reply(self, observation: Mapping[str, Any], chunk: bool) -> dict[str, Any]:
        message: dict[str, Any] = {"kind": "act", "observation": _prepare_observation(observation)}
        if chunk:
            message["chunk"] = True
        reply = self.request(message)
        key = "actions" if chunk else "action"
        if reply.get("kind") != "action" or not isinstance(reply.get(key), np.ndarray):
            raise PolicyServerError(
                "malformed", f"expected an action reply with {key!r}, got {sorted(reply)}"
            )
        self.last_reply = reply
        return reply

    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        """One control step: observation (camera uint8 (H, W, 3) arrays, "state", "instruction", optional
        timestamps) -> (A,) float32 action, as ``VLAPolicy.act`` gives it (server-side chunking)."""
        return np.asarray(self._action_reply(observation, chunk=False)["action"], dtype=np.float32)

    def act_chunk(self, observation: Mapping[str, Any]) -> np.ndarray:
        """The whole (k, A) float32 chunk for open-loop execution (``VLAPolicy.act_chunk``)."""
        return np.asarray(self._action_reply(observation, chunk=True)["actions"], dtype=np.float32)

    def reset(self, chunk_mode: str | None = None) -> None:
        """Start a new episode on the server (optionally switching "ensemble"/"execute" chunk mode)."""
        message: dict[str, Any] = {"kind": "reset"}
        if chunk_mode is not None:
            message["chunk_mode"] = chunk_mode
        self.request(message)

    def fetch_metadata(self) -> dict[str, Any]:
        """Ask the server for its metadata again (also updates :attr:`metadata`)."""
        reply = self.request({"kind": "metadata"})
        reply.pop("id", None)
        self.metadata = reply
        return reply


class AsyncPolicyClient:
    """Chunks executed open-loop with the next one requested in the background: the robot never waits.

    Each :meth:`act` returns the next action of the current chunk at once. When at most
    :attr:`prefetch_at` actions of it remain, a request with the current observation starts on a
    background thread; its chunk (row 0 = the step it was requested at) replaces the current one as soon
    as it arrives, skipping the rows for steps already executed. The control loop waits only if a chunk
    runs out before its successor arrives (counted in :attr:`waits`), or on the very first step.

    Args:
        client: a connected :class:`PolicyClient` (used only from this object's worker thread).
        prefetch_at: remaining actions at which the next chunk is requested; None (default): adaptive,
            the largest delay seen so far between a request and its chunk's arrival, in control steps
            (at least 1, at most k - 1): just early enough, without a request every step.
    """

    def __init__(self, client: PolicyClient, prefetch_at: int | None = None) -> None:
        k = int(client.metadata.get("chunk_size", 1))
        self.client = client
        self.chunk_size = k
        if prefetch_at is not None and not 0 <= prefetch_at <= k - 1:
            raise ValueError(f"prefetch_at must be in [0, {k - 1}] for chunks of {k}, got {prefetch_at}")
        self._fixed_prefetch = prefetch_at
        self.max_lag = 1  # most control steps a chunk took to arrive (adaptive prefetch)
        self.waits = 0  # steps that had to wait for a chunk (the first step always does)
        self.requests = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mmvla-client")
        self._chunk: np.ndarray | None = None  # (k, A)
        self._index = 0
        self._t = 0  # steps executed in this episode
        self._pending: concurrent.futures.Future[np.ndarray] | None = None
        self._pending_step = 0

    @property
    def prefetch_at(self) -> int:
        """Remaining actions of the current chunk at which the next one is requested."""
        if self._fixed_prefetch is not None:
            return self._fixed_prefetch
        return max(0, min(self.max_lag, self.chunk_size - 1))

    def _submit(self, observation: Mapping[str, Any]) -> None:
        self._pending = self._pool.submit(self.client.act_chunk, dict(observation))
        self._pending_step = self._t
        self.requests += 1

    def _adopt(self) -> None:
        assert self._pending is not None
        future, self._pending = self._pending, None
        self._chunk = future.result()  # re-raises PolicyServerError / ConnectionError / TimeoutError
        self._index = self._t - self._pending_step
        self.max_lag = max(self.max_lag, self._index)

    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        """The (A,) action for this step (observation as for :meth:`PolicyClient.act`)."""
        if self._pending is not None and self._pending.done():
            self._adopt()
        if self._chunk is None or self._index >= len(self._chunk):
            if self._pending is None:
                self._submit(observation)
                self.waits += 1  # nothing in flight: this step waits for a whole round trip
            elif not self._pending.done():
                self.waits += 1
            self._adopt()
            if self._chunk is None or self._index >= len(self._chunk):  # arrived too late to use any row
                self._submit(observation)
                self._adopt()
        assert self._chunk is not None
        action = self._chunk[self._index].copy()
        self._index += 1
        if self._pending is None and len(self._chunk) - self._index <= self.prefetch_at:
            self._submit(observation)
        self._t += 1
        return action

    def reset(self, chunk_mode: str | None = None) -> None:
        """New episode: drop the current and any in-flight chunk, reset the server-side state."""
        if self._pending is not None:
            concurrent.futures.wait([self._pending])
            self._pending = None
        self._chunk, self._index, self._t = None, 0, 0
        self._pool.submit(self.client.reset, chunk_mode).result()

    @property
    def last_reply(self) -> dict[str, Any]:
        """The latest chunk reply (safety decision and counters)."""
        return self.client.last_reply

    def close(self) -> None:
        """Stop the worker thread and close the connection."""
        self._pool.shutdown(wait=True)
        self.client.close()

    def __enter__(self) -> AsyncPolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class RemotePolicyConfig:
    """The parts of a PolicyConfig a rollout needs, from the server's metadata."""

    cameras: tuple[str, ...]
    image_size: int
    state_dim: int
    action_dim: int
    chunk_size: int


class RemotePolicy:
    """``cfg`` / ``reset`` / ``act`` like :class:`mmvla.policy.VLAPolicy`, through a policy server: a
    :class:`mmvla.policy.protocol.Policy`.

    Args:
        url: ``ws://host:port``.
        timeout: seconds per reply (a busy server with many clients needs more than one step's time).
        **client_kwargs: further :class:`PolicyClient` options.
    """

    def __init__(self, url: str, timeout: float = 60.0, **client_kwargs: Any) -> None:
        self.client = PolicyClient(url, timeout, **client_kwargs)
        md = self.client.metadata
        try:
            self.cfg = RemotePolicyConfig(
                cameras=tuple(str(c) for c in md["cameras"]),
                image_size=int(md["image_size"]),
                state_dim=int(md["state_dim"]),
                action_dim=int(md["action_dim"]),
                chunk_size=int(md["chunk_size"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise PolicyServerError("malformed", f"incomplete server metadata: {e}") from None
        self.checkpoint_id = str(md.get("checkpoint_id", ""))

    def reset(self, chunk_mode: str | None = None) -> None:
        """Start a new episode (server-side chunks, memory, safety state)."""
        self.client.reset(chunk_mode)

    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        """One control step -> (A,) float32 action; an invalid observation raises PolicyServerError, and
        a server whose safety layer hands the robot over (decision "handover") raises
        :class:`~mmvla.policy.safety.HandOver`, as the local policy does."""
        action = self.client.act(observation)
        safety = self.client.last_reply.get("safety")
        if isinstance(safety, Mapping) and safety.get("decision") == HANDOVER:
            raise HandOver(str(safety.get("reason", "")), action)
        return action

    def close(self) -> None:
        self.client.close()


if TYPE_CHECKING:  # mypy checks the served policy against the protocol
    _REMOTE_IS_A_POLICY: type[Policy] = RemotePolicy
