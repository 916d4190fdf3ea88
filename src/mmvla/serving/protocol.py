"""Wire protocol of ``mmvla serve``: msgpack frames over a WebSocket, numpy arrays inline.

Only numpy and msgpack are needed, so a robot-side client installs neither torch nor MuJoCo.

Frames are binary WebSocket messages holding one msgpack map. A numpy array is the map
``{"__nd__": True, "dtype": "<name>", "shape": [d0, d1, ...], "data": <bytes>}`` with ``dtype`` one of
:data:`DTYPES` (little-endian, C order) and ``len(data) == prod(shape) * itemsize``; anything else
(another dtype, a length mismatch, more than :data:`MAX_NDIM` dimensions) is rejected. The decoder also
reads openpi's msgpack-numpy maps (``{b"__ndarray__": True, b"data", b"dtype": "<f4", b"shape"}`` and
``{b"__npgeneric__": True, b"data", b"dtype"}``, byte-string keys, numpy dtype strings of the same
whitelisted types), which :func:`pack_openpi` writes; see ``mmvla serve --protocol openpi``.

Limits checked while decoding, before anything is allocated from a declared size: maps and lists nest
at most :data:`MAX_DEPTH` deep (msgpack's own parser stops at 1,024), a list holds at most
:data:`MAX_CONTAINER` items and a map :data:`MAX_MAP_KEYS` keys, an array's dimensions are each at most
:data:`MAX_DIM` and its declared byte size must equal the bytes sent.

Client -> server (``"id"``, an int or a string of at most 128 UTF-8 bytes, is optional and echoed in the
reply; a longer one is ignored):

- ``{"kind": "metadata"}`` -> the metadata frame, which the server also sends unasked on connect:
  ``{"kind": "metadata", "protocol", "cameras", "image_size", "state_dim", "action_dim", "action_low",
  "action_high", "action_names", "chunk_size", "chunk_mode", "checkpoint_id" (sha256 over every
  file of the checkpoint: weights, config, statistics), "max_message_bytes", "max_instruction_chars", "safety" (the SafetyConfig),
  "mmvla_version"}``.
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
  timestamps (then frames are never stale). If the network's output is not finite the reply carries
  the hold action with ``safety.decision == "fallback_nonfinite"`` (with or without the safety layer).

Server -> client on any failure: ``{"kind": "error", "error": <code>, "reason": str, "id"?}`` with code
one of :data:`ERROR_CODES` and a reason of at most :data:`MAX_REASON_CHARS` ASCII characters that names the
problem and summarises values (type and size) instead of echoing them; the connection stays usable. A
frame over ``max_message_bytes`` is refused by the WebSocket layer itself: the server closes the
connection (code 1009) and the client reconnects. An ``act`` request that is still waiting for the
model when a newer one arrives on the same connection is answered ``superseded`` (the latest
observation wins over a stale backlog).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
ND_KEY = "__nd__"
OPENPI_ND_KEY = b"__ndarray__"
OPENPI_SCALAR_KEY = b"__npgeneric__"
DTYPES = frozenset(
    {"bool", "uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "float16", "float32", "float64"}
)
# numpy dtype strings (openpi's msgpack-numpy) of the same types, either byte order: "<f4", "|u1", ...
NUMPY_DTYPE_STRINGS = frozenset(np.dtype(n).newbyteorder(o).str for n in DTYPES for o in ("<", ">"))
MAX_NDIM = 8
MAX_DIM = 2**31 - 1
MAX_DEPTH = 8
MAX_CONTAINER = 4096
MAX_MAP_KEYS = 256
MAX_ID_CHARS = 128
MAX_REASON_CHARS = 200
KINDS = ("metadata", "reset", "act")
ERROR_CODES = (
    "malformed",
    "bad_request",
    "unknown_kind",
    "invalid_observation",
    "superseded",
    "unauthorized",
    "internal",
)


class ProtocolError(ValueError):
    """A frame that does not follow the protocol; ``code`` is one of :data:`ERROR_CODES`."""

    def __init__(self, code: str, reason: str) -> None:
        reason = bounded(reason)
        super().__init__(reason)
        self.code = code
        self.reason = reason


def bounded(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text`` with non-printable characters replaced by "?", other non-ASCII ones escaped (``\\xe9``), cut
    to ``limit`` characters ("..." at the end): at most ``limit`` bytes once encoded."""
    s = str(text)
    if len(s) > 4 * limit:  # never scan more than needed
        s = s[: 4 * limit]
    s = "".join(
        c if c.isascii() and c.isprintable() else ascii(c)[1:-1] if c.isprintable() else "?" for c in s
    )
    return s if len(s) <= limit else s[: limit - 3] + "..."


def describe(value: Any) -> str:
    """A short summary of ``value`` for an error reason: its type and size, never its content."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, int):
        return "an int"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return f"a string of {len(value)} chars"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"{len(value)} bytes"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype.name} array of shape {tuple(value.shape)}"
    if isinstance(value, Mapping):
        return f"a map of {len(value)} keys"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} items"
    return f"a {type(value).__name__}"


def name(key: Any, limit: int = 32) -> str:
    """A map key for an error reason: short printable strings quoted, anything else summarised."""
    if isinstance(key, str) and len(key) <= limit and key.isprintable():
        return repr(key)
    if isinstance(key, str):
        return f"<{describe(key)}>"
    return f"<{describe(key)} key>"


def encode_array(a: np.ndarray) -> dict[str, Any]:
    """numpy array -> the protocol's array map (little-endian, C order)."""
    a = np.asarray(a)
    if a.dtype.name not in DTYPES:
        raise ValueError(f"dtype {a.dtype} cannot be sent; allowed: {', '.join(sorted(DTYPES))}")
    a = np.asarray(a, dtype=a.dtype.newbyteorder("<"), order="C")  # (ascontiguousarray makes 0-d 1-d)
    return {ND_KEY: True, "dtype": a.dtype.name, "shape": list(a.shape), "data": a.tobytes()}


def _checked_shape(shape: Any, itemsize: int, nbytes: int) -> tuple[int, ...]:
    """The declared shape, checked against the bytes sent before numpy sees it."""
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) > MAX_NDIM
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise ProtocolError(
            "bad_request",
            f"array shape must be a list of at most {MAX_NDIM} non-negative ints, got {describe(shape)}",
        )
    if any(n > MAX_DIM for n in shape):
        raise ProtocolError("bad_request", f"array shape has a dimension over {MAX_DIM}")
    expected = math.prod(shape) * itemsize
    if expected != nbytes:
        dims = "x".join(str(n) for n in shape) if len(shape) else "scalar"
        raise ProtocolError(
            "bad_request", bounded(f"array data holds {nbytes} bytes, shape {dims} needs {expected}", 160)
        )
    if math.prod(max(n, 1) for n in shape) * itemsize > 2**40:  # a zero-size array with huge dims
        raise ProtocolError("bad_request", "array shape is too large")
    return tuple(shape)


def decode_array(d: Mapping[str, Any]) -> np.ndarray:
    """The protocol's array map -> a fresh, writable numpy array; ProtocolError if malformed."""
    if set(d) != {ND_KEY, "dtype", "shape", "data"} or d[ND_KEY] is not True:
        raise ProtocolError(
            "bad_request", f"an array must be exactly {{{ND_KEY!r}: true, 'dtype', 'shape', 'data'}}"
        )
    dtype, shape, data = d["dtype"], d["shape"], d["data"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        shown = repr(dtype) if isinstance(dtype, str) and len(dtype) <= 16 else describe(dtype)
        raise ProtocolError("bad_request", f"array dtype {bounded(shown, 24)} is not allowed")
    if not isinstance(data, (bytes, bytearray)):
        raise ProtocolError("bad_request", f"array data must be bytes, got {describe(data)}")
    dt = np.dtype(dtype).newbyteorder("<")
    shape_t = _checked_shape(shape, dt.itemsize, len(data))
    return np.frombuffer(data, dtype=dt).reshape(shape_t).astype(dt.newbyteorder("="), copy=True)


def _decode_openpi(d: Mapping[Any, Any]) -> Any:
    """openpi's msgpack-numpy maps -> a writable numpy array (native byte order) or a Python scalar."""
    if OPENPI_ND_KEY in d:
        keys, what = {OPENPI_ND_KEY, b"data", b"dtype", b"shape"}, "an ndarray map"
    else:
        keys, what = {OPENPI_SCALAR_KEY, b"data", b"dtype"}, "an npgeneric map"
    if set(d) != keys:
        raise ProtocolError(
            "bad_request", f"{what} must have exactly the keys {sorted(k.decode() for k in keys)}"
        )
    dtype = d[b"dtype"]
    if isinstance(dtype, bytes):
        dtype = dtype.decode("latin-1")
    if not isinstance(dtype, str) or dtype not in NUMPY_DTYPE_STRINGS:
        shown = repr(dtype) if isinstance(dtype, str) and len(dtype) <= 16 else describe(dtype)
        raise ProtocolError("bad_request", f"array dtype {bounded(shown, 24)} is not allowed")
    dt = np.dtype(dtype)
    if OPENPI_SCALAR_KEY in d:
        v = d[b"data"]
        ok = (
            isinstance(v, bool) if dt.kind == "b" else isinstance(v, (int, float)) and not isinstance(v, bool)
        )
        if not ok:
            raise ProtocolError("bad_request", f"npgeneric data must be a {dt.name}, got {describe(v)}")
        return v
    data = d[b"data"]
    if not isinstance(data, (bytes, bytearray)):
        raise ProtocolError("bad_request", f"array data must be bytes, got {describe(data)}")
    shape_t = _checked_shape(d[b"shape"], dt.itemsize, len(data))
    return np.frombuffer(data, dtype=dt).reshape(shape_t).astype(dt.newbyteorder("="), copy=True)


def _wire_default(x: Any) -> Any:
    """msgpack's hook for what it cannot pack itself (it walks dicts, lists and tuples in C)."""
    if isinstance(x, np.ndarray):
        return encode_array(x)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, Mapping):
        return dict(x)
    raise TypeError(f"cannot pack {type(x).__name__}")


def pack(message: Mapping[str, Any]) -> bytes:
    """A message (numpy arrays anywhere inside) -> msgpack bytes."""
    return msgpack.packb(message, default=_wire_default, use_bin_type=True)


def _openpi_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind in "VOc":
            raise ValueError(f"dtype {obj.dtype} cannot be sent")
        a = np.ascontiguousarray(obj)
        return {OPENPI_ND_KEY: True, b"data": a.tobytes(), b"dtype": a.dtype.str, b"shape": list(a.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot pack {type(obj).__name__}")


def pack_openpi(message: Mapping[str, Any]) -> bytes:
    """A message -> msgpack bytes with openpi's msgpack-numpy array maps (what ``openpi-client`` reads)."""
    return msgpack.packb(message, default=_openpi_default, use_bin_type=True)


def _from_wire(x: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise ProtocolError("malformed", f"maps and lists nest more than {MAX_DEPTH} deep")
    if isinstance(x, dict):
        if ND_KEY in x:
            return decode_array(x)
        if OPENPI_ND_KEY in x or OPENPI_SCALAR_KEY in x:
            return _decode_openpi(x)
        return {k: _from_wire(v, depth + 1) for k, v in x.items()}
    if isinstance(x, list):
        return [_from_wire(v, depth + 1) for v in x]
    return x


def unpack(frame: bytes | bytearray | memoryview | str) -> dict[str, Any]:
    """msgpack bytes -> a message map with arrays decoded; ProtocolError for anything malformed."""
    if isinstance(frame, str):
        raise ProtocolError("malformed", "expected a binary msgpack frame, got a text frame")
    try:
        obj = msgpack.unpackb(
            bytes(frame),
            raw=False,
            strict_map_key=True,
            max_array_len=MAX_CONTAINER,
            max_map_len=MAX_MAP_KEYS,
            max_ext_len=0,
        )
    except Exception as e:  # truncated, invalid UTF-8, bad map keys, nesting too deep, trailing bytes
        raise ProtocolError("malformed", f"frame is not valid msgpack ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", f"a frame must hold a map, got {describe(obj)}")
    return dict(_from_wire(obj, 1))


def request_id(message: Mapping[str, Any]) -> int | str | None:
    """The optional "id" of a request if it is a valid one (an int, or a string of at most
    :data:`MAX_ID_CHARS` bytes in UTF-8), else None."""
    rid = message.get("id")
    if isinstance(rid, bool):
        return None
    if isinstance(rid, int) or (isinstance(rid, str) and len(rid.encode("utf-8", "replace")) <= MAX_ID_CHARS):
        return rid
    return None
