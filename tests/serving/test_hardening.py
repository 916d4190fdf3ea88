"""No amplification, no escapes, connection hygiene (issue 19): bounded error replies and logs, nesting and
declared sizes, non-finite outputs, instruction cap, token auth, idle / slow-frame timeouts, slot reclaim."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import msgpack
import numpy as np
import pytest
import torch
from websockets.exceptions import ConnectionClosed, InvalidStatus

from mmvla.cli.main import main as cli_main
from mmvla.policy.observation import observation_to_batch
from mmvla.policy.safety import SafetyConfig
from mmvla.serving.client import PolicyClient, open_connection
from mmvla.serving.protocol import MAX_REASON_CHARS, pack, unpack
from mmvla.serving.server import PolicyServer, default_vision_threads

from .conftest import make_obs

TOKEN = "s3cret-token-for-tests"


def _raw(url: str, token: str | None = None):
    ws = open_connection(url, token=token)
    assert unpack(ws.recv(timeout=10))["kind"] == "metadata"
    return ws


class _Bytes(logging.Handler):
    """Counts the bytes of every formatted record on mmvla's loggers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bytes = 0
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        if record.exc_info:
            line += logging.Formatter().formatException(record.exc_info)
        self.bytes += len(line) + 1
        self.lines.append(line)


@pytest.fixture
def log_bytes():
    handler = _Bytes()
    root = logging.getLogger("mmvla")
    old = root.level
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


@pytest.fixture(scope="module")
def big_server(checkpoint):
    """Accepts 5 MiB frames: big enough for 4 MB strings."""
    with PolicyServer.from_checkpoint(checkpoint, port=0, max_message_bytes=5 * 2**20) as srv:
        yield srv


def _nested_map(depth: int) -> bytes:
    return b"\x81\xa1a" * depth + b"\xc0"  # {"a": {"a": ... nil}}


def test_huge_and_deep_frames_get_small_replies_and_small_logs(big_server, log_bytes):
    good = make_obs(np.random.default_rng(0))
    four_mb = "x" * (4 * 2**20)
    frames = [
        pack({"kind": four_mb}),
        pack({"kind": "act", "observation": {**good, "instruction": four_mb}}),
        pack({"kind": "act", "observation": {**good, four_mb[:100_000]: 1}}),
        pack({"kind": "act", "observation": good, four_mb: 1}),
        pack({"kind": "act", "observation": {**good, "state": four_mb}}),
        msgpack.packb(
            {"kind": "act", "observation": {**good, "front": b"\xff" * 2**20}, "id": 1}, default=str
        ),
        b"\xa5\xff\xfe\xfd\xfc\xfb",  # a str of invalid UTF-8
        msgpack.packb(
            {
                "kind": "act",
                "observation": {
                    "front": {
                        "__nd__": True,
                        "dtype": "uint8",
                        "shape": [0, 2**31 - 1, 2**31 - 1],
                        "data": b"",
                    }
                },
            }
        ),
        *(b"\x82\xa4kind\xa3act\xa1x" + _nested_map(d) for d in (9, 500, 1000, 1023)),
        *(_nested_map(d) for d in (500, 1000, 5000)),
        b"\x91" * 1000 + b"\xc0",
        b"\xdd\xff\xff\xff\xff",  # a list declaring 2**32 - 1 items
        b"\xdf\xff\xff\xff\xff",  # a map declaring 2**32 - 1 keys
        b"\xc6\xff\xff\xff\xff",  # bytes declaring 4 GiB
    ]
    ws = _raw(big_server.url)
    try:
        for frame in frames:
            ws.send(frame)
            raw = ws.recv(timeout=30)
            reply = unpack(raw)
            assert reply["kind"] == "error" and reply["error"] != "internal", reply
            assert len(raw) <= 1024 and len(reply["reason"]) <= MAX_REASON_CHARS
            assert "xxxxxxxxxx" not in reply["reason"]  # summarised, never echoed
        ws.send(pack({"kind": "act", "observation": good}))
        assert unpack(ws.recv(timeout=30))["kind"] == "action"
    finally:
        ws.close()
    deadline = time.time() + 5
    while not any("ended after" in line for line in log_bytes.lines) and time.time() < deadline:
        time.sleep(0.05)
    assert log_bytes.bytes <= 1024, log_bytes.lines
    assert not any("Traceback" in line or "internal" in line for line in log_bytes.lines)


def test_error_replies_stay_under_1kb_with_multibyte_names_and_ids(big_server):
    """The largest error reply a client can provoke: an id of 128 UTF-8 bytes (4-byte characters) and
    unknown field names made of 4-byte characters, echoed in the reason (escaped: ASCII only)."""
    good = make_obs(np.random.default_rng(0))
    wide = "\U0001d518"  # a printable 4-byte character
    fields = {wide * (32 - i): i for i in range(6)}
    ws = _raw(big_server.url)
    try:
        for rid, echoed in (
            (wide * 32, True),
            (wide * 33, False),
            (wide * 128, False),
        ):  # 128, 132, 512 bytes
            ws.send(pack({"kind": "act", "observation": good, "id": rid, **fields}))
            raw = ws.recv(timeout=30)
            reply = unpack(raw)
            assert reply["kind"] == "error" and reply["error"] == "bad_request", reply
            assert len(raw) <= 1024, len(raw)
            assert reply["reason"].isascii() and len(reply["reason"]) <= MAX_REASON_CHARS, reply["reason"]
            assert "\\U0001d518" in reply["reason"]  # named, escaped
            assert reply.get("id") == (rid if echoed else None)
    finally:
        ws.close()


def test_instruction_length_is_capped_before_tokenising(checkpoint):
    with PolicyServer.from_checkpoint(checkpoint, port=0, max_instruction_chars=40) as srv:
        ws = _raw(srv.url)
        tokenised: list[int] = []
        encoder = srv.policy.language
        original = encoder.forward
        encoder.forward = lambda texts: (tokenised.append(len(texts)), original(texts))[1]  # type: ignore[method-assign]
        try:
            ws.send(
                pack(
                    {
                        "kind": "act",
                        "observation": make_obs(np.random.default_rng(0), instruction="pick " * 20),
                    }
                )
            )
            reply = unpack(ws.recv(timeout=10))
            assert reply["error"] == "invalid_observation" and "100 chars (max 40)" in reply["reason"]
            assert tokenised == []
            ws.send(pack({"kind": "act", "observation": make_obs(np.random.default_rng(0))}))
            assert unpack(ws.recv(timeout=10))["kind"] == "action" and tokenised == [1]
        finally:
            encoder.forward = original  # type: ignore[method-assign]
            ws.close()


@pytest.mark.parametrize("safety", [False, SafetyConfig(state_abs_max=1e38)])
def test_non_finite_network_output_becomes_the_hold_action(checkpoint, local_policy, safety):
    rng = np.random.default_rng(3)
    good = make_obs(rng)
    bad = {**good, "state": np.full(5, 1e30, np.float32)}
    with torch.inference_mode():  # the premise: this state overflows the network
        chunk, _ = local_policy.predict_chunk(*observation_to_batch(bad, local_policy.cfg.cameras))
    assert not torch.isfinite(chunk).all()
    with (
        PolicyServer.from_checkpoint(checkpoint, port=0, safety=safety) as srv,
        PolicyClient(srv.url) as client,
    ):
        for mode in ("ensemble", "execute"):
            client.reset(mode)
            first = client.act(good)
            action = client.act(bad)
            want = np.zeros(7, np.float32)
            want[6] = first[6]  # gripper unchanged
            np.testing.assert_array_equal(action, want)
            reply = client.last_reply
            assert (
                reply["error"] == "nonfinite_output" and reply["safety"]["decision"] == "fallback_nonfinite"
            )
            assert reply["safety"]["fallback"]
            chunk_actions = client.act_chunk(bad)
            np.testing.assert_array_equal(chunk_actions, np.repeat(want[None], 3, 0))
            assert np.isfinite(client.act(good)).all()  # recovers on the next finite output
        assert srv.stats["errors"] >= 4


def _health(port: int, token: str | None = None) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/healthz")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def test_token_authentication_and_healthz(checkpoint, monkeypatch):
    with PolicyServer.from_checkpoint(checkpoint, port=0, token=TOKEN) as srv:
        for token in (None, "wrong-token-xyz", TOKEN[:-1]):
            with pytest.raises(InvalidStatus) as e:
                open_connection(srv.url, token=token)
            assert e.value.response.status_code == 401
        assert _health(srv.port) == {"status": "ok"}  # liveness only
        assert _health(srv.port, "wrong-token-xyz") == {"status": "ok"}
        full = _health(srv.port, TOKEN)
        assert full["checkpoint_id"] == srv.checkpoint and full["unauthorized"] == 3
        with PolicyClient(srv.url, token=TOKEN) as client:
            assert client.act(make_obs(np.random.default_rng(0))).shape == (7,)
        monkeypatch.setenv("MMVLA_SERVE_TOKEN", TOKEN)  # the client reads the same variable
        with PolicyClient(srv.url) as client:
            assert client.metadata["chunk_size"] == 3
        # openpi-client's header form
        from websockets.sync.client import connect

        with connect(srv.url, additional_headers={"Authorization": f"Api-Key {TOKEN}"}, proxy=None) as ws:
            assert unpack(ws.recv(timeout=10))["kind"] == "metadata"


@pytest.mark.parametrize(
    "flag, env, good, bad",
    [
        (None, TOKEN, TOKEN, "wrong-token-xyz"),  # $MMVLA_SERVE_TOKEN alone
        ("flag-token-123", TOKEN, "flag-token-123", TOKEN),  # --token wins over the variable
    ],
    ids=["env", "flag"],
)
def test_mmvla_serve_takes_the_token_from_the_flag_or_the_environment(checkpoint, flag, env, good, bad):
    cmd = [sys.executable, "-m", "mmvla.cli", "serve", "--checkpoint", str(checkpoint), "--port", "0"]
    cmd += ["--threads", "1", "--log-level", "WARNING", *(["--token", flag] if flag else [])]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "MMVLA_SERVE_TOKEN": env},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("mmvla serve: ws://"), line
        url = line.split()[2]
        for token in (None, bad):
            with pytest.raises(InvalidStatus) as e:
                open_connection(url, token=token)
            assert e.value.response.status_code == 401
        _raw(url, good).close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_idle_connections_are_closed(checkpoint):
    with PolicyServer.from_checkpoint(checkpoint, port=0, idle_timeout_s=0.5) as srv:
        t0 = time.monotonic()  # before connecting: the server's idle clock starts during the handshake
        ws = _raw(srv.url)
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=10)
        assert e.value.rcvd is not None and e.value.rcvd.code == 1000
        assert 0.5 <= time.monotonic() - t0 < 3.0
        assert srv.stats["timed_out"] == 1


def _trickle_frame_start(ws) -> None:
    """The first bytes of a masked 1,000-byte binary frame, sent under the client library's feet."""
    ws.socket.sendall(b"\x82\xfe\x03\xe8" + b"\x01\x02\x03\x04" + b"\x00" * 10)


def test_trickled_frames_are_dropped_within_the_frame_timeout(checkpoint):
    with PolicyServer.from_checkpoint(checkpoint, port=0, frame_timeout_s=0.6, idle_timeout_s=60) as srv:
        ws = _raw(srv.url)
        t0 = time.monotonic()
        _trickle_frame_start(ws)
        closed = None
        while time.monotonic() - t0 < 5:
            try:
                ws.socket.sendall(b"\x00")  # one byte every 50 ms: never idle, never complete
            except OSError:
                closed = time.monotonic() - t0
                break
            if srv.stats["timed_out"]:
                closed = time.monotonic() - t0
                break
            time.sleep(0.05)
        assert closed is not None and 0.6 <= closed < 2.0, closed
        ws.close()
        # A steady client on another connection is never affected.
        with PolicyClient(srv.url) as client:
            for _ in range(3):
                client.act(make_obs(np.random.default_rng(0)))
                time.sleep(0.3)


def test_trickled_fragmented_message_is_dropped_within_the_frame_timeout(checkpoint):
    """Each fragment is a complete frame, but the message never ends (FIN never set): its clock runs from
    the first fragment, so sending a small fragment every 50 ms does not keep it alive."""
    with PolicyServer.from_checkpoint(checkpoint, port=0, frame_timeout_s=0.6, idle_timeout_s=60) as srv:
        ws = _raw(srv.url)
        t0 = time.monotonic()
        ws.socket.sendall(b"\x02\x81" + b"\x00" * 4 + b"\x01")  # binary, FIN clear, masked with a zero key
        closed = None
        while time.monotonic() - t0 < 5:
            try:
                ws.socket.sendall(b"\x00\x81" + b"\x00" * 4 + b"\x01")  # a continuation, FIN clear
            except OSError:
                closed = time.monotonic() - t0
                break
            if srv.stats["timed_out"]:
                closed = time.monotonic() - t0
                break
            time.sleep(0.05)
        assert closed is not None and 0.6 <= closed < 2.0, closed
        ws.close()


def test_trickled_handshake_is_dropped_within_the_handshake_timeout(checkpoint):
    with PolicyServer.from_checkpoint(checkpoint, port=0, handshake_timeout_s=0.6) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.settimeout(0.05)
        t0 = time.monotonic()
        request = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 200
        closed = None
        try:
            for b in request:  # one byte every 50 ms: the request never completes
                s.sendall(bytes([b]))
                try:
                    if s.recv(1024) == b"":
                        closed = time.monotonic() - t0
                        break
                except TimeoutError:
                    pass
        except OSError:  # reset by the server
            closed = time.monotonic() - t0
        finally:
            s.close()
        assert closed is not None and 0.6 <= closed < 2.0, closed


def test_connection_log_keeps_within_its_byte_budget(monkeypatch, caplog):
    """Against a simulation of the budget: 480 bytes, each line costing its length + 60, refilled at
    1 byte/s; an event over budget is counted and its kind's next line says how many were not logged."""
    from mmvla.serving import server as server_module

    clock = [1000.0]
    monkeypatch.setattr(server_module.time, "monotonic", lambda: clock[0])
    caplog.set_level(logging.INFO, logger="mmvla.serving.server")
    log = server_module._ConnLog(7, "peer", server_module._LogLimiter(rate=1e6, burst=10**6))
    reason = "r" * 50
    budget, logged, skipped = 480.0, [], {}
    for t, kinds in ((0, range(8)), (100, range(8)), (1000, [0, 3, 9])):
        clock[0] = 1000.0 + t
        budget = min(480.0, budget + (100 if t == 100 else 900 if t == 1000 else 0))
        for k in kinds:
            kind = f"kind{k}"
            log.event(logging.INFO, kind, reason)
            if any(line.startswith(f"connection 7: {kind}: ") for line, at in logged if clock[0] - at < 60):
                skipped[kind] = skipped.get(kind, 0) + 1
                continue
            more = f" (+{skipped[kind]} not logged)" if skipped.get(kind) else ""
            line = f"connection 7: {kind}: {reason}{more}"
            if len(line) + 60 > budget:
                skipped[kind] = skipped.get(kind, 0) + 1
                continue
            budget -= len(line) + 60
            logged.append((line, clock[0]))
            skipped[kind] = 0
    got = [r.getMessage() for r in caplog.records]
    assert got == [line for line, _ in logged]
    assert len(got) == 7 and sum(len(line) + 60 for line in got) <= 480 + 1000  # it did log, within budget
    assert got[-2] == f"connection 7: kind3: {reason} (+2 not logged)"
    assert log.counts == {f"kind{k}": 2 + (k in (0, 3)) for k in range(8)} | {"kind9": 1}


def test_idle_and_trickling_sockets_never_lock_out_a_robot(checkpoint):
    n = 64
    with PolicyServer.from_checkpoint(
        checkpoint, port=0, token=TOKEN, max_connections=n, reclaim_idle_s=0.5, handshake_timeout_s=2
    ) as srv:
        idle = [_raw(srv.url, TOKEN) for _ in range(n)]  # every slot taken by an idle (authenticated) socket
        trickling = []
        for _ in range(n):  # half-sent handshakes: never a slot, dropped after handshake_timeout_s
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            trickling.append(s)
        try:
            with pytest.raises(InvalidStatus) as e:  # no token: refused whatever the load
                open_connection(srv.url)
            assert e.value.response.status_code == 401
            time.sleep(0.6)
            t0 = time.monotonic()
            with PolicyClient(srv.url, token=TOKEN, connect_timeout=5) as robot:
                for _ in range(5):
                    robot.act(make_obs(np.random.default_rng(0)))
            assert time.monotonic() - t0 < 5
            assert srv.stats["reclaimed"] >= 1 and srv.stats["refused"] == 0
        finally:
            for s in trickling:
                s.close()
            for ws in idle:
                ws.close()


def test_per_ip_cap_without_idle_connections_refuses_with_503(checkpoint):
    with PolicyServer.from_checkpoint(checkpoint, port=0, max_connections_per_ip=2, reclaim_idle_s=60) as srv:
        a, b = _raw(srv.url), _raw(srv.url)
        try:
            with pytest.raises(InvalidStatus) as e:
                open_connection(srv.url)
            assert e.value.response.status_code == 503
        finally:
            a.close()
            b.close()


def test_mmvla_serve_refuses_a_non_positive_switch_interval(checkpoint, capsys):
    before = sys.getswitchinterval()
    assert cli_main(["serve", "--checkpoint", str(checkpoint), "--switch-interval-ms", "0"]) == 2
    assert "--switch-interval-ms must be > 0" in capsys.readouterr().err
    assert sys.getswitchinterval() == before  # refused before anything process-wide was changed


def test_mmvla_serve_refuses_negative_thread_counts_before_changing_torch(checkpoint, capsys):
    before = torch.get_num_threads()
    for flag in ("--threads", "--vision-threads"):
        assert cli_main(["serve", "--checkpoint", str(checkpoint), flag, "-1"]) == 2
        assert "--threads and --vision-threads must be >= 0" in capsys.readouterr().err
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="vision_threads must be >= 1"):
        PolicyServer.from_checkpoint(checkpoint, port=0, vision_threads=0)


def test_default_vision_threads_use_a_second_core_only_beside_one_torch_thread(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        assert default_vision_threads() == 2
        monkeypatch.setattr(os, "cpu_count", lambda: 1)
        assert default_vision_threads() == 1
        monkeypatch.setattr(os, "cpu_count", lambda: 8)
        torch.set_num_threads(2)
        assert default_vision_threads() == 1
    finally:
        torch.set_num_threads(before)
