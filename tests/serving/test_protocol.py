"""Wire encoding: arrays round-trip exactly for every allowed dtype; anything else is a ProtocolError."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mmvla.serving.protocol import (
    DTYPES,
    MAX_REASON_CHARS,
    ND_KEY,
    ProtocolError,
    bounded,
    decode_array,
    encode_array,
    pack,
    request_id,
    unpack,
)


@settings(max_examples=150, deadline=None)
@given(
    a=hnp.arrays(
        st.sampled_from(sorted(DTYPES)).map(np.dtype),
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    ),
    big_endian=st.booleans(),
)
def test_arrays_round_trip_bit_exactly(a, big_endian):
    if big_endian:
        a = a.astype(a.dtype.newbyteorder(">"))
    out = unpack(pack({"kind": "x", "nested": {"a": a, "list": [a, 1]}}))
    for got in (out["nested"]["a"], out["nested"]["list"][0]):
        assert got.shape == a.shape and got.dtype == a.dtype.newbyteorder("=")
        assert got.tobytes() == a.astype(a.dtype.newbyteorder("=")).tobytes()  # NaN payloads included
        assert got.flags.writeable


def test_encoding_is_the_documented_map():
    d = encode_array(np.arange(6, dtype=np.uint16).reshape(2, 3))
    assert d == {
        ND_KEY: True,
        "dtype": "uint16",
        "shape": [2, 3],
        "data": np.arange(6, dtype="<u2").tobytes(),
    }


@pytest.mark.parametrize(
    "bad, msg",
    [
        ({ND_KEY: True, "dtype": "object", "shape": [1], "data": b"\x00" * 8}, "not allowed"),
        ({ND_KEY: True, "dtype": "complex64", "shape": [1], "data": b"\x00" * 8}, "not allowed"),
        ({ND_KEY: True, "dtype": "<f4", "shape": [1], "data": b"\x00" * 4}, "not allowed"),
        ({ND_KEY: True, "dtype": "float32", "shape": [3], "data": b"\x00" * 8}, "needs 12"),
        ({ND_KEY: True, "dtype": "uint8", "shape": [2**40, 2**40], "data": b""}, "dimension over"),
        ({ND_KEY: True, "dtype": "uint8", "shape": [2**20, 2**20, 2**20], "data": b"\x00"}, "needs"),
        ({ND_KEY: True, "dtype": "uint8", "shape": [0, 2**30, 2**30], "data": b""}, "too large"),
        ({ND_KEY: True, "dtype": "float64", "shape": [0, 2**31 - 1, 2**31 - 1], "data": b""}, "too large"),
        ({ND_KEY: True, "dtype": "uint8", "shape": [-1], "data": b""}, "non-negative"),
        ({ND_KEY: True, "dtype": "uint8", "shape": [1] * 9, "data": b"\x00"}, "at most 8"),
        ({ND_KEY: True, "dtype": "uint8", "shape": [True], "data": b"\x00"}, "non-negative ints"),
        ({ND_KEY: True, "dtype": "uint8", "shape": [1], "data": "x"}, "bytes"),
        ({ND_KEY: False, "dtype": "uint8", "shape": [1], "data": b"\x00"}, "exactly"),
        ({ND_KEY: True, "dtype": "uint8", "shape": [1]}, "exactly"),
    ],
)
def test_malformed_arrays_are_rejected(bad, msg):
    with pytest.raises(ProtocolError, match=msg) as e:
        decode_array(bad)
    assert e.value.code == "bad_request"
    with pytest.raises(ProtocolError):
        unpack(msgpack.packb({"kind": "act", "a": bad}))


def test_malformed_frames():
    frame = pack({"kind": "act", "x": np.zeros(3)})
    for bad in (
        frame[:-1],
        b"",
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({1: 2}),
        "text",
        b"\x91" * 5000,
    ):
        with pytest.raises(ProtocolError) as e:
            unpack(bad)
        assert e.value.code == "malformed"
    with pytest.raises(ValueError, match="cannot be sent"):
        encode_array(np.array(["a"]))


def test_request_id():
    assert request_id({"id": 3}) == 3 and request_id({"id": "a"}) == "a"
    assert request_id({"id": True}) is None and request_id({"id": "x" * 500}) is None
    assert request_id({"id": [1]}) is None and request_id({}) is None
    wide = "\U0001d518"  # 4 bytes in UTF-8: ids are bounded in bytes (128), not characters
    assert request_id({"id": wide * 32}) == wide * 32 and request_id({"id": wide * 33}) is None


def test_bounded_reasons_are_ascii_and_short():
    assert bounded("caf\u00e9 \U0001d518\x00") == "caf\\xe9 \\U0001d518?"
    long = bounded("\U0001d518" * 1000)
    assert long.isascii() and len(long.encode()) == MAX_REASON_CHARS and long.endswith("...")
    assert bounded("x" * 200) == "x" * 200
