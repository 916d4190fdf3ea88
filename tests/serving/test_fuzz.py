"""Fuzz: >= 1,000 malformed requests each get an error frame (over-size frames a clean close, after which a new
connection works), the server stays up, and a valid request afterwards still gets the right action."""

from __future__ import annotations

import logging
import math
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from mmvla.serving.client import open_connection
from mmvla.serving.protocol import DTYPES, ERROR_CODES, KINDS, ND_KEY, encode_array, pack, pack_openpi, unpack
from mmvla.serving.server import PolicyServer

from .conftest import MAX_MESSAGE_BYTES, make_obs

EXAMPLES = 1100
GOOD = make_obs(np.random.default_rng(0))
GOOD_FRAME = pack({"kind": "act", "observation": GOOD})
REQUIRED = ("front", "wrist", "state", "instruction")


def _act(observation: Any, **fields: Any) -> bytes:
    return pack({"kind": "act", "observation": observation, **fields})


def _is_valid_request(frame: bytes) -> bool:
    try:
        msg = msgpack.unpackb(frame, raw=False)
    except Exception:
        return False
    return isinstance(msg, dict) and msg.get("kind") in ("metadata", "reset") and len(msg) == 1


def _would_be_valid(key: str, value: Any) -> bool:
    if key == "timestamp":  # any finite number is a valid timestamp (perhaps stale: a fallback, no error)
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if key == "instruction":
        return isinstance(value, str) and bool(value.strip())
    return False


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)

truncated = st.integers(0, len(GOOD_FRAME) - 1).map(lambda n: GOOD_FRAME[:n])
garbage = st.binary(max_size=64).filter(lambda b: not _is_valid_request(b))
text_frames = st.text(max_size=32)  # sent as WebSocket text frames
observation_not_a_map = values.filter(lambda v: not isinstance(v, dict)).map(_act)
wrong_field_type = (
    st.tuples(st.sampled_from([*REQUIRED, "timestamp", "front_timestamp"]), values)
    .filter(lambda kv: not _would_be_valid(kv[0].replace("front_", ""), kv[1]))
    .map(lambda kv: _act({**GOOD, kv[0]: kv[1]}))
)
missing_keys = st.sets(st.sampled_from(REQUIRED), min_size=1).map(
    lambda drop: _act({k: v for k, v in GOOD.items() if k not in drop})
)
wrong_shapes = (
    st.tuples(
        st.sampled_from(["front", "wrist", "state"]),
        st.lists(st.integers(0, 40), min_size=0, max_size=4).map(tuple),
    )
    .filter(lambda ks: ks[1] != GOOD[ks[0]].shape)
    .map(lambda ks: _act({**GOOD, ks[0]: np.zeros(ks[1], GOOD[ks[0]].dtype)}))
)
wrong_dtypes = st.one_of(  # a camera must be uint8; the state any numeric dtype (bool is not numeric)
    st.tuples(st.sampled_from(["front", "wrist"]), st.sampled_from(sorted(DTYPES - {"uint8"}))),
    st.just(("state", "bool")),
).map(lambda kd: _act({**GOOD, kd[0]: GOOD[kd[0]].astype(kd[1])}))
bad_dtype_names = st.one_of(
    st.sampled_from(["object", "complex64", "float128", "<f4", "U8", "datetime64", "V4", ""]),
    st.text(max_size=10).filter(lambda s: s not in DTYPES),
    values.filter(lambda v: not isinstance(v, str)),
).map(lambda name: _act({**GOOD, "front": {**encode_array(GOOD["front"]), "dtype": name}}))
bad_array_maps = st.one_of(
    st.integers(0, 4000)
    .filter(lambda n: n != 32 * 32 * 3)
    .map(lambda n: {ND_KEY: True, "dtype": "uint8", "shape": [32, 32, 3], "data": b"\x00" * n}),
    st.lists(st.integers(2**20, 2**62), min_size=1, max_size=3).map(
        lambda shape: {ND_KEY: True, "dtype": "uint8", "shape": shape, "data": b"\x00" * 16}
    ),
    st.lists(st.integers(-5, -1), min_size=1, max_size=3).map(
        lambda shape: {ND_KEY: True, "dtype": "uint8", "shape": shape, "data": b""}
    ),
    st.dictionaries(st.sampled_from([ND_KEY, "dtype", "shape", "data", "x"]), values, max_size=4).map(
        lambda d: {ND_KEY: True, **d}
    ),
).map(lambda arr: _act({**GOOD, "wrist": arr}))
non_finite_state = st.tuples(
    st.lists(st.integers(0, 4), min_size=1, max_size=5),
    st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e9]),
).map(lambda iv: _act({**GOOD, "state": _set(GOOD["state"], iv[0], iv[1])}))
unknown_kinds = st.one_of(
    st.text(max_size=12).filter(lambda k: k not in KINDS).map(lambda k: pack({"kind": k})),
    values.filter(lambda k: not isinstance(k, str)).map(lambda k: pack({"kind": k})),
    st.dictionaries(st.text(max_size=5).filter(lambda k: k != "kind"), values, max_size=3).map(pack),
)
extra_fields = st.tuples(
    st.sampled_from(KINDS),
    st.text(min_size=1, max_size=8).filter(
        lambda f: f not in ("kind", "id", "observation", "chunk", "chunk_mode")
    ),
    values,
).map(
    lambda kfv: pack({"kind": kfv[0], kfv[1]: kfv[2], **({"observation": GOOD} if kfv[0] == "act" else {})})
)
bad_flags = st.one_of(
    values.filter(lambda v: not isinstance(v, bool)).map(lambda v: _act(GOOD, chunk=v)),
    values.filter(lambda v: v not in ("ensemble", "execute")).map(
        lambda v: pack({"kind": "reset", "chunk_mode": v})
    ),
)
unknown_camera = (
    st.text(min_size=1, max_size=8)
    .filter(lambda k: k not in (*REQUIRED, "timestamp", "front_timestamp", "wrist_timestamp"))
    .map(lambda k: _act({**GOOD, k: GOOD["front"]}))
)
deep_nesting = st.one_of(
    st.integers(9, 3000).map(lambda n: b"\x91" * n + b"\xc0"),
    st.integers(9, 1100).map(
        lambda n: b"\x81\xa1a" * n + b"\xc0"
    ),  # maps 500-1,000 deep: RecursionError once
    st.integers(7, 1000).map(lambda n: b"\x82\xa4kind\xa3act\xabobservation" + b"\x81\xa1a" * n + b"\xc0"),
)
huge_declared = st.one_of(
    st.tuples(st.integers(2**20, 2**31 - 1), st.integers(2**20, 2**31 - 1)).map(
        lambda d: _act({**GOOD, "front": {ND_KEY: True, "dtype": "uint8", "shape": [0, *d], "data": b""}})
    ),
    st.sampled_from([b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff"]),
)
non_utf8 = (
    st.binary(min_size=1, max_size=16)
    .filter(lambda b: not _utf8(b))
    .map(lambda b: b"\x81\xa4kind" + bytes([0xA0 + len(b)]) + b)  # {"kind": <a fixstr of invalid UTF-8>}
)


def _utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


oversize = st.integers(MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES + 5000).map(
    lambda n: _act({**GOOD, "front": np.zeros(n, np.uint8)})
)


def _set(state: np.ndarray, idx: list[int], value: float) -> np.ndarray:
    out = state.copy()
    out[idx] = value
    return out


malformed = st.one_of(
    truncated,
    garbage,
    text_frames,
    observation_not_a_map,
    wrong_field_type,
    missing_keys,
    wrong_shapes,
    wrong_dtypes,
    bad_dtype_names,
    bad_array_maps,
    non_finite_state,
    unknown_kinds,
    extra_fields,
    bad_flags,
    unknown_camera,
    deep_nesting,
    huge_declared,
    non_utf8,
)
frames = st.one_of(malformed, malformed, malformed, malformed, malformed, malformed, malformed, oversize)


LOG_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")  # mmvla serve's


def _log_bytes(caplog: pytest.LogCaptureFixture) -> int:
    """What the server's log lines captured so far take, formatted and filtered as ``mmvla serve`` writes
    them (the websockets library's own logger at WARNING)."""
    return sum(
        len(LOG_FORMAT.format(r)) + 1
        for r in caplog.records
        if r.name == "mmvla.serving.server"
        or (r.name.startswith("mmvla.serving.server.") and r.levelno >= logging.WARNING)
    )


@pytest.mark.timeout(300)
def test_fuzzed_requests_get_error_frames_and_the_server_stays_up(server, local_policy, caplog):
    caplog.set_level(logging.INFO, logger="mmvla.serving.server")
    state: dict[str, Any] = {"ws": open_connection(server.url), "sent": 0, "errors": 0, "closed": 0}
    state["ws"].recv(timeout=10)  # metadata
    codes: dict[str, int] = {}

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )
    @given(frame=frames)
    def send_one(frame: bytes | str) -> None:
        ws = state["ws"]
        state["sent"] += 1
        ws.send(frame)
        size = len(frame.encode() if isinstance(frame, str) else frame)
        if size > MAX_MESSAGE_BYTES:  # refused by the WebSocket layer: a clean close, then a new connection
            with pytest.raises(ConnectionClosed) as e:
                ws.recv(timeout=10)
            assert e.value.rcvd is not None and e.value.rcvd.code == 1009
            state["closed"] += 1
            state["ws"] = open_connection(server.url)
            assert unpack(state["ws"].recv(timeout=10))["kind"] == "metadata"
            return
        raw = ws.recv(timeout=10)
        assert len(raw) <= 1024, len(raw)  # never amplified
        reply = unpack(raw)
        assert reply["kind"] == "error", (frame[:200], reply)
        assert len(reply["reason"]) <= 200
        assert reply["error"] in ERROR_CODES and reply["error"] != "internal", reply
        assert isinstance(reply["reason"], str) and reply["reason"]
        codes[reply["error"]] = codes.get(reply["error"], 0) + 1
        state["errors"] += 1

    try:
        send_one()
        assert state["sent"] >= 1000
        assert state["errors"] + state["closed"] == state["sent"]
        print(f"fuzz: {state['sent']} requests, error codes {codes}, {state['closed']} over-size closes")
        assert set(codes) >= {"malformed", "bad_request", "unknown_kind", "invalid_observation"}, codes
        assert state["closed"] >= 1
        # The server is up and a valid request on the same connection still gets the right action.
        ws = state["ws"]
        ws.send(pack({"kind": "reset"}))
        assert unpack(ws.recv(timeout=10))["kind"] == "reset"
        ws.send(GOOD_FRAME)
        reply = unpack(ws.recv(timeout=10))
        local_policy.reset()
        assert reply["kind"] == "action" and np.array_equal(reply["action"], local_policy.act(GOOD))
    finally:
        state["ws"].close()
    assert server.stats["errors"] >= state["errors"]
    connections = 1 + state["closed"]
    assert _log_bytes(caplog) <= 1024 * connections, (_log_bytes(caplog), connections)  # no amplification


# ---------------------------------------------------------------- 4 MB strings and openpi frames
BIG_LIMIT = 5 * 2**20  # a server that accepts 4 MB strings
BIG_TEXTS = {c: c * (4 * 2**20 // len(c.encode())) for c in ("x", "\xe9", "\U0001d518")}  # 4 MB of UTF-8
BIG_BYTES = b"\xff" * (4 * 2**20)  # not UTF-8
GOOD_PI = {
    "observation/image": GOOD["front"],
    "observation/wrist_image": GOOD["wrist"],
    "observation/state": GOOD["state"],
    "prompt": GOOD["instruction"],
}


def _pi_nd(shape: list[int], data: bytes = b"", dtype: str | bytes = "|u1") -> dict[bytes, Any]:
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


def _pi_with(key: str, value: bytes) -> bytes:
    """GOOD_PI plus ``key`` mapped to the already-packed ``value`` (for values msgpack cannot build)."""
    items = b"".join(pack_openpi({k: v})[1:] for k, v in GOOD_PI.items())  # each a fixmap of one key
    return bytes([0x80 | (len(GOOD_PI) + 1)]) + items + msgpack.packb(key) + value


def _str32(raw: bytes) -> bytes:
    return b"\xdb" + len(raw).to_bytes(4, "big") + raw  # a msgpack str holding any bytes


# Every one of these is invalid for the mmvla protocol (an error reply is required).
big_places_mmvla = [
    lambda s: pack({"kind": s}),
    lambda s: pack({"kind": s[: len(s) // 2], "id": s[len(s) // 2 :]}),
    lambda s: pack({"kind": "metadata", "id": s, "x": 1}),
    lambda s: _act(GOOD, **{s: 1}),
    lambda s: _act({**GOOD, "instruction": s}),
    lambda s: _act({**GOOD, "instruction": s.encode()}),
    lambda s: _act({**GOOD, s: 1}),
    lambda s: _act({**GOOD, "state": s}),
    lambda s: _act({**GOOD, "front": s}),
    lambda s: _act({**GOOD, "wrist": [s]}),
    lambda s: _act({**GOOD, "front": {**encode_array(GOOD["front"]), "dtype": s}}),
    lambda s: _act(GOOD, chunk=s),
    lambda s: pack({"kind": "reset", "chunk_mode": s}),
    lambda s: s,  # a 4 MB text frame
]
big_places_openpi = [
    lambda s: pack_openpi({**GOOD_PI, "prompt": s}),
    lambda s: pack_openpi({**GOOD_PI, "prompt": s.encode()}),
    lambda s: pack_openpi({**GOOD_PI, s: 1}),
    lambda s: pack_openpi({**GOOD_PI, "observation/state": s}),
    lambda s: pack_openpi({**GOOD_PI, "observation/image": s}),
    lambda s: pack_openpi({**GOOD_PI, "observation": {s: GOOD["front"]}}),
    lambda s: pack_openpi({**GOOD_PI, "observation/image": _pi_nd([32, 32, 3], b"\0" * 3072, s.encode())}),
    lambda s: pack_openpi(
        {**GOOD_PI, "observation/state": {b"__npgeneric__": True, b"data": s, b"dtype": "<f4"}}
    ),
    lambda s: s,
]
big_mmvla = st.tuples(st.sampled_from(big_places_mmvla), st.sampled_from(sorted(BIG_TEXTS))).map(
    lambda ps: ps[0](BIG_TEXTS[ps[1]])
)
big_openpi = st.tuples(st.sampled_from(big_places_openpi), st.sampled_from(sorted(BIG_TEXTS))).map(
    lambda ps: ps[0](BIG_TEXTS[ps[1]])
)
big_non_utf8 = st.sampled_from(
    [
        b"\x81\xa4kind" + _str32(BIG_BYTES),  # {"kind": <4 MB of invalid UTF-8>}
        b"\x81" + _str32(BIG_BYTES) + b"\x01",  # the same as a map key
    ]
)
huge_shapes = st.sampled_from(
    [
        [0, 2**31 - 1, 2**31 - 1],
        [2**31 - 1, 0, 2**31 - 1, 2**31 - 1],
        [2**62, 2**62, 0],  # a product beyond int64
        [2**64 - 1, 0],
        [2**31, 1, 3],
        [-1, 32, 3],
        [-(2**63), 0],
        [1] * 9,
        [0] * 8,
    ]
)
pi_dtypes = st.sampled_from(["<c8", "|O", "<M8[ns]", "<U4", "|V4", "float32", "f4", "", "<f16", b"\xff\xfe"])
openpi_malformed = st.one_of(
    huge_shapes.map(lambda sh: pack_openpi({**GOOD_PI, "observation/image": _pi_nd(sh)})),
    huge_shapes.map(lambda sh: pack_openpi({**GOOD_PI, "observation/state": _pi_nd(sh, b"", "<f4")})),
    pi_dtypes.map(lambda dt: pack_openpi({**GOOD_PI, "observation/state": _pi_nd([5], b"\0" * 20, dt)})),
    st.sampled_from(sorted(DTYPES - {"uint8"})).map(
        lambda dt: pack_openpi({**GOOD_PI, "observation/image": GOOD["front"].astype(dt)})
    ),
    st.integers(9, 1000).map(lambda n: _pi_with("observation", b"\x81\xa1a" * n + b"\xc0")),
    st.integers(9, 3000).map(lambda n: _pi_with("extra", b"\x91" * n + b"\xc0")),
    st.binary(min_size=1, max_size=16)
    .filter(lambda b: not _utf8(b))
    .map(lambda b: _pi_with("prompt", b"\xc4" + bytes([len(b)]) + b)),
    st.binary(min_size=1, max_size=16)
    .filter(lambda b: not _utf8(b))
    .map(lambda b: _pi_with("prompt", _str32(b))),
    big_openpi,
)
mmvla_malformed = st.one_of(
    big_mmvla,
    big_non_utf8,
    huge_shapes.map(
        lambda sh: _act({**GOOD, "front": {ND_KEY: True, "dtype": "uint8", "shape": sh, "data": b""}})
    ),
    deep_nesting,
    huge_declared,
    non_utf8,
    wrong_dtypes,
    bad_dtype_names,
)


@pytest.fixture(scope="module")
def big_server(checkpoint):
    with PolicyServer.from_checkpoint(checkpoint, port=0, max_message_bytes=BIG_LIMIT) as srv:
        yield srv


@pytest.mark.timeout(600)
def test_fuzzed_4mb_strings_and_openpi_frames_get_small_replies_and_logs(big_server, local_policy, caplog):
    """A few hundred malformed frames (4 MB strings in every place a string can go, in 1-, 2- and 4-byte
    UTF-8 and invalid UTF-8; deep nesting; huge, negative and overflowing declared shapes; wrong dtypes)
    on an mmvla connection and an openpi one: never an internal error, every reply at most 1 KB, the log
    at most 1 KB per connection, and both connections still answer correctly afterwards."""
    caplog.set_level(logging.INFO, logger="mmvla.serving.server")
    conns = {"mmvla": open_connection(big_server.url), "openpi": open_connection(big_server.url)}
    for ws in conns.values():
        assert unpack(ws.recv(timeout=10))["kind"] == "metadata"
    conns["openpi"].send(pack_openpi(GOOD_PI))  # the first frame makes it an openpi connection
    assert "actions" in unpack(conns["openpi"].recv(timeout=10))
    codes: dict[str, int] = {}
    sent = {"mmvla": 0, "openpi": 0, "big": 0}

    def exchange(protocol: str, frame: bytes | str) -> None:
        ws = conns[protocol]
        ws.send(frame)
        sent[protocol] += 1
        sent["big"] += len(frame) > 2**20
        raw = ws.recv(timeout=30)
        assert len(raw) <= 1024, (protocol, len(raw))
        if isinstance(raw, str):  # openpi's error convention: "<code>: <reason>"
            assert protocol == "openpi", raw
            code = raw.split(":", 1)[0]
            assert len(raw) <= 230 and raw.isascii(), raw
        else:
            reply = unpack(raw)
            if protocol == "openpi" and "actions" in reply:  # some odd frames are valid openpi
                code = "ok"
            else:
                assert reply["kind"] == "error" and len(reply["reason"]) <= 200, reply
                code = reply["error"]
        assert code in ERROR_CODES or code == "ok", raw[:300]
        assert code != "internal", raw[:300]
        codes[code] = codes.get(code, 0) + 1

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        derandomize=True,  # the same 300 frames every run: how many are 4 MB is asserted below
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.function_scoped_fixture,
            HealthCheck.filter_too_much,
        ],
    )
    @given(which=st.sampled_from(["mmvla", "openpi"]), data=st.data())
    def send_one(which: str, data: st.DataObject) -> None:
        exchange(which, data.draw(mmvla_malformed if which == "mmvla" else openpi_malformed))

    try:
        send_one()
        for place in big_places_mmvla:  # every place at least once, whatever hypothesis drew
            exchange("mmvla", place(BIG_TEXTS["\U0001d518"]))
        for place in big_places_openpi:
            exchange("openpi", place(BIG_TEXTS["x"]))
        print(f"fuzz (4 MB, openpi): {sent}, codes {codes}")
        assert sent["mmvla"] + sent["openpi"] >= 300 and sent["big"] >= 50, sent
        assert codes.get("ok", 0) < sent["openpi"] / 2, codes
        # Both connections still work and give the local policy's answers.
        ws = conns["mmvla"]
        ws.send(pack({"kind": "reset"}))
        assert unpack(ws.recv(timeout=10))["kind"] == "reset"
        ws.send(GOOD_FRAME)
        local_policy.reset()
        np.testing.assert_array_equal(unpack(ws.recv(timeout=10))["action"], local_policy.act(GOOD))
        conns["openpi"].send(pack_openpi(GOOD_PI))
        assert unpack(conns["openpi"].recv(timeout=10))["actions"].shape == (3, 7)
    finally:
        for ws in conns.values():
            ws.close()
    assert big_server.stats["connections_total"] == 2  # no frame closed a connection
    assert not any("Traceback" in r.getMessage() or r.exc_info for r in caplog.records)
    assert _log_bytes(caplog) <= 1024 * 2, [r.getMessage() for r in caplog.records]
