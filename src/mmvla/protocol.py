"""Wire protocol of ``mmvla serve``: msgpack frames over a WebSocket, numpy arrays inline.

Only numpy and msgpack are needed, so a robot-side client installs neither torch nor MuJoCo.

Frames are binary WebSocket messages holding one msgpack map. A numpy array is the map
``{"__nd__": True, "dtype": "<name>", "shape": [d0, d1, ...], "data": <bytes>}`` with ``dtype`` one of
:data:`DTYPES` (little-endian, C order) and ``len(data) == prod(shape) * itemsize``; anything else
(another dtype, a length mismatch, more than :data:`MAX_NDIM` dimensions) is rejected.

Client -> server (``"id"``, an int or a short string, is optional and echoed in the reply):

- ``{"kind": "metadata"}`` -> the metadata frame, which the server also sends unasked on connect:
  ``{"kind": "metadata", "protocol", "cameras", "image_size", "state_dim", "action_dim", "action_low",
  "action_high", "action_names", "chunk_size", "chunk_mode", "checkpoint_id" (sha256 of
  model.safetensors), "max_message_bytes", "safety" (the SafetyConfig), "mmvla_version"}``.
- ``{"kind": "reset", "chunk_mode"?: "ensemble" | "execute"}`` -> ``{"kind": "reset", "chunk_mode"}``:
  a new episode for this connection (chunks, memory and safety state cleared).
- ``{"kind": "act", "observation": {camera: uint8 (H, W, 3), "state": (S,), "instruction": str,
  "timestamp"?: float, "<camera>_timestamp"?: float}, "chunk"?: bool}`` ->
  ``{"kind": "action", "action": float32 (A,), "actions"?: float32 (k, A) (with "chunk": true),
  "safety": {"decision", "reason", "fallback"}, "counters": {...}, "step": int, "infer_ms": float}``.
  Without ``chunk`` the reply is one control step exactly as ``VLAPolicy.act`` gives it locally
  (chunking and memory per connection); with ``chunk`` it is the whole safety-filtered chunk for a
  client that executes it open-loop (``VLAPolicy.act_chunk``). Timestamps are compared with the
  server's ``time.time()``: a robot on another machine needs a synchronised clock (NTP/PTP) or no
  timestamps (then frames are never stale).

Server -> client on any failure: ``{"kind": "error", "error": <code>, "reason": str, "id"?}`` with code
one of :data:`ERROR_CODES`; the connection stays usable. A frame over ``max_message_bytes`` is refused
by the WebSocket layer itself: the server closes the connection (code 1009) and the client reconnects.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
ND_KEY = "__nd__"
DTYPES = frozenset(
    {"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float16", "float32", "float64"}
)
MAX_NDIM = 8
MAX_ID_CHARS = 128
KINDS = ("metadata", "reset", "act")
ERROR_CODES = ("malformed", "bad_request", "unknown_kind", "invalid_observation", "internal")


class ProtocolError(ValueError):
    """A frame that does not follow the protocol; ``code`` is one of :data:`ERROR_CODES`."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """numpy array -> the protocol's array map (little-endian, C order)."""
    a = np.asarray(a)
    if a.dtype.name not in DTYPES:
        raise ValueError(f"dtype {a.dtype} cannot be sent; allowed: {', '.join(sorted(DTYPES))}")
    a = np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")  # (ascontiguousarray makes 0-d 1-d)
    return {ND_KEY: True, "dtype": a.dtype.name, "shape": list(a.shape), "data": a.tobytes()}


def decode_array(d: Mapping[str, Any]) -> np.ndarray:
    """The protocol's array map -> a fresh, writable numpy array; ProtocolError if malformed."""
    if set(d) != {ND_KEY, "dtype", "shape", "data"} or d[ND_KEY] is not True:
        raise ProtocolError(
            "bad_request", f"an array must be exactly {{{ND_KEY!r}: true, 'dtype', 'shape', 'data'}}"
        )
    dtype, shape, data = d["dtype"], d["shape"], d["data"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ProtocolError(
            "bad_request", f"array dtype {dtype!r} is not allowed ({', '.join(sorted(DTYPES))})"
        )
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) > MAX_NDIM
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise ProtocolError(
            "bad_request",
            f"array shape must be a list of at most {MAX_NDIM} non-negative ints, got {shape!r}",
        )
    if not isinstance(data, (bytes, bytearray)):
        raise ProtocolError("bad_request", f"array data must be bytes, got {type(data).__name__}")
    dt = np.dtype(dtype).newbyteorder("<")
    expected = math.prod(shape) * dt.itemsize
    if expected != len(data):
        raise ProtocolError(
            "bad_request",
            f"array data holds {len(data)} bytes, shape {list(shape)} of {dtype} needs {expected}",
        )
    return np.frombuffer(data, dtype=dt).reshape(tuple(shape)).astype(dt.newbyteorder("="), copy=True)


def _to_wire(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return encode_array(x)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Mapping):
        return {k: _to_wire(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_wire(v) for v in x]
    return x


def pack(message: Mapping[str, Any]) -> bytes:
    """A message (numpy arrays anywhere inside) -> msgpack bytes."""
    return msgpack.packb(_to_wire(message), use_bin_type=True)


def _from_wire(x: Any) -> Any:
    if isinstance(x, dict):
        if ND_KEY in x:
            return decode_array(x)
        return {k: _from_wire(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_from_wire(v) for v in x]
    return x


def unpack(frame: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    """msgpack bytes -> a message map with arrays decoded; ProtocolError for anything malformed."""
    if isinstance(frame, str):
        raise ProtocolError("malformed", "expected a binary msgpack frame, got a text frame")
    try:
        obj = msgpack.unpackb(bytes(frame), raw=False, strict_map_key=True)
    except Exception as e:  # truncated, invalid UTF-8, bad map keys, nesting too deep, trailing bytes
        raise ProtocolError("malformed", f"frame is not valid msgpack: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", f"a frame must hold a map, got {type(obj).__name__}")
    return dict(_from_wire(obj))


def request_id(message: Mapping[str, Any]) -> int | str | None:
    """The optional "id" of a request if it is a valid one (an int or a short string), else None."""
    rid = message.get("id")
    if isinstance(rid, bool):
        return None
    if isinstance(rid, int) or (isinstance(rid, str) and len(rid) <= MAX_ID_CHARS):
        return rid
    return None
