"""Policy server and clients: metadata, /healthz, served == local actions, per-connection isolation under 16
concurrent clients, error frames, over-size frames, reconnects, the asynchronous client, graceful shutdown."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed

from mmvla.serving.client import (
    AsyncPolicyClient,
    PolicyClient,
    PolicyServerError,
    RemotePolicy,
    open_connection,
)
from mmvla.serving.protocol import pack, unpack
from mmvla.serving.server import PolicyServer

from .conftest import MAX_MESSAGE_BYTES, make_obs


def _raw(url: str):
    ws = open_connection(url)
    assert unpack(ws.recv(timeout=10))["kind"] == "metadata"
    return ws


def _health(server: PolicyServer) -> tuple[int, str, dict]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=10) as r:
        return r.status, r.headers["Content-Type"], json.loads(r.read())


def _reference_checkpoint_id(directory: Path) -> str:
    """The checkpoint id computed here from its definition (issue 20): sha256 over every non-hidden file, in
    order of relative POSIX path, of path (UTF-8), NUL, size (8 bytes little-endian), contents."""
    rows = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rows += [Path(root, f) for f in files if not f.startswith(".")]
    h = hashlib.sha256()
    for rel in sorted(p.relative_to(directory).as_posix() for p in rows):
        data = (directory / rel).read_bytes()
        h.update(rel.encode("utf-8") + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def test_metadata_on_connect_and_healthz(server, checkpoint):
    files = {p.name for p in checkpoint.iterdir()}
    assert {"model.safetensors", "config.json", "stats.json"} <= files  # what decides the actions
    sha = _reference_checkpoint_id(checkpoint)
    with PolicyClient(server.url) as client:
        md = client.metadata
        assert md["checkpoint_id"] == sha and md["protocol"] == 1
        assert md["cameras"] == ["front", "wrist"] and md["image_size"] == 32 and md["state_dim"] == 5
        assert md["action_dim"] == 7 and md["chunk_size"] == 3 and md["action_low"] == [-1.0] * 7
        assert md["action_names"][-1] == "gripper" and md["max_message_bytes"] == MAX_MESSAGE_BYTES
        assert md["safety"]["frozen_frames"] == 10
        assert client.fetch_metadata()["checkpoint_id"] == sha
        status, ctype, body = _health(server)
    assert status == 200 and ctype == "application/json"
    assert body["status"] == "ok" and body["checkpoint_id"] == sha and body["connections_total"] >= 1


@pytest.mark.parametrize("mode", ["ensemble", "execute"])
def test_served_actions_equal_local(server, local_policy, mode):
    rng = np.random.default_rng(10)
    stream = [make_obs(rng) for _ in range(8)]
    with PolicyClient(server.url) as client:
        client.reset(mode)
        local_policy.reset(mode)
        for obs in stream:
            a = client.act(obs)
            assert a.dtype == np.float32 and np.array_equal(a, local_policy.act(obs))
        reply = client.last_reply
        assert reply["step"] == 8 and reply["safety"]["decision"] == "ok"
        assert reply["counters"]["steps"] == 8 and reply["counters"]["ok"] == 8
        # A new episode on the server equals a fresh local episode.
        client.reset()
        local_policy.reset()
        assert np.array_equal(client.act(stream[0]), local_policy.act(stream[0]))
        # Whole chunks for open-loop execution.
        np.testing.assert_array_equal(client.act_chunk(stream[1]), local_policy.act_chunk(stream[1]))
        assert client.last_reply["actions"].shape == (3, 7)


def test_served_fallback_reports_decision_and_counters(server):
    rng = np.random.default_rng(11)
    with PolicyClient(server.url) as client:
        client.act(make_obs(rng))
        blank = make_obs(rng)
        blank["wrist"][:] = 0
        a = client.act(blank)
        assert np.all(a[:6] == 0)
        safety = client.last_reply["safety"]
        assert safety["fallback"] and safety["decision"] == "fallback_blank" and "'wrist'" in safety["reason"]
        stale = make_obs(rng, timestamp=time.time() - 60)
        client.act(stale)
        assert client.last_reply["safety"]["decision"] == "fallback_stale"
        client.act(make_obs(rng, timestamp=time.time()))
        counters = client.last_reply["counters"]
        assert counters["fallback_blank"] == 1 and counters["fallback_stale"] == 1 and counters["steps"] == 4
        assert not client.last_reply["safety"]["fallback"]


def test_error_frames_keep_the_connection_usable(server, local_policy):
    rng = np.random.default_rng(12)
    good = make_obs(rng)
    raw_cases = [(b"\x93\x01", "malformed"), ("a text frame", "malformed"), (b"\xc1", "malformed")]
    cases = [
        ({"kind": "fly"}, "unknown_kind"),
        ({"kind": 3}, "bad_request"),
        ({"no": "kind"}, "bad_request"),
        ({"kind": "act", "observation": good, "speed": 2}, "bad_request"),
        ({"kind": "act", "observation": [1, 2]}, "bad_request"),
        ({"kind": "act", "observation": {**good, "state": [0.0] * 5}}, "bad_request"),
        ({"kind": "act", "observation": good, "chunk": 1}, "bad_request"),
        ({"kind": "reset", "chunk_mode": "sometimes"}, "bad_request"),
        (
            {"kind": "act", "observation": {**good, "state": np.full(5, np.nan, np.float32)}},
            "invalid_observation",
        ),
        (
            {"kind": "act", "observation": {k: v for k, v in good.items() if k != "front"}},
            "invalid_observation",
        ),
        ({"kind": "act", "observation": {**good, "rear": good["front"]}}, "invalid_observation"),
        ({"kind": "act", "observation": {**good, "front": good["front"][:16]}}, "invalid_observation"),
        ({"kind": "act", "observation": {**good, "instruction": " "}}, "invalid_observation"),
    ]
    ws = _raw(server.url)
    try:
        for frame, code in raw_cases:
            ws.send(frame)
            reply = unpack(ws.recv(timeout=10))
            assert reply["kind"] == "error" and reply["error"] == code and reply["reason"], reply
        for i, (message, code) in enumerate(cases):
            ws.send(pack({**message, "id": i}))
            reply = unpack(ws.recv(timeout=10))
            assert reply["kind"] == "error" and reply["error"] == code and reply["reason"], (i, reply)
            assert reply["id"] == i
        ws.send(pack({"kind": "reset"}))
        assert unpack(ws.recv(timeout=10))["kind"] == "reset"
        ws.send(pack({"kind": "act", "observation": good, "id": "last"}))
        reply = unpack(ws.recv(timeout=10))
        local_policy.reset()
        assert reply["id"] == "last" and np.array_equal(reply["action"], local_policy.act(good))
    finally:
        ws.close()


def test_oversize_frame_closes_cleanly_then_the_client_reconnects(server, local_policy):
    rng = np.random.default_rng(13)
    ws = _raw(server.url)
    ws.send(b"\x00" * (MAX_MESSAGE_BYTES + 1))
    with pytest.raises(ConnectionClosed) as e:
        ws.recv(timeout=10)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1009
    with PolicyClient(server.url) as client:
        huge = make_obs(rng)
        huge["front"] = np.zeros((200, 200, 3), np.uint8)
        with pytest.raises(ValueError, match="max_message_bytes"):
            client.act(huge)  # refused before sending
        obs = make_obs(rng)
        local_policy.reset()
        assert np.array_equal(client.act(obs), local_policy.act(obs))


def test_invalid_observation_raises_policy_server_error(server):
    with PolicyClient(server.url) as client:
        with pytest.raises(PolicyServerError, match="invalid_observation") as e:
            client.act({"front": np.zeros((32, 32, 3), np.uint8)})
        assert e.value.code == "invalid_observation" and "wrist" in e.value.reason
        client.act(make_obs(np.random.default_rng(0)))  # still usable


def test_sixteen_concurrent_clients_get_isolated_answers(server, local_policy):
    n_clients, steps = 16, 6
    streams = []
    for i in range(n_clients):
        rng = np.random.default_rng(100 + i)
        streams.append(
            [
                make_obs(rng, instruction=("pick up the red cube", "push the green slab to the left")[i % 2])
                for _ in range(steps)
            ]
        )
    modes = ["ensemble" if i % 2 else "execute" for i in range(n_clients)]
    results: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_clients)

    def run(i: int) -> None:
        try:
            with PolicyClient(server.url, timeout=60) as client:
                client.reset(modes[i])
                barrier.wait(timeout=60)
                results[i] = [client.act(obs) for obs in streams[i]]
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert server.stats["connections_open"] >= 0
    for i in range(n_clients):  # each client's answers equal a local policy on its own stream alone
        local_policy.reset(modes[i])
        expected = [local_policy.act(obs) for obs in streams[i]]
        for got, want in zip(results[i], expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_async_client_never_waits_after_the_first_chunk(server, local_policy):
    rng = np.random.default_rng(14)
    stream = [make_obs(rng) for _ in range(12)]
    chunks = [local_policy.act_chunk(obs) for obs in stream]  # what any request at step s returns
    with AsyncPolicyClient(PolicyClient(server.url)) as robot:
        robot.reset()
        actions = []
        for obs in stream:
            actions.append(robot.act(obs))
            time.sleep(0.05)  # a 20 Hz control loop: the next chunk arrives while this one executes
            # ... on an idle machine. A loaded one may take longer than a control period to answer: the step
            # then lasts until the chunk in flight has arrived, so that what is checked is the client's
            # scheduling (requesting early enough for a round trip shorter than a step), not the machine.
            in_flight = robot._pending
            if in_flight is not None:
                concurrent.futures.wait([in_flight], timeout=60)
        waits, requests, prefetch_at = robot.waits, robot.requests, robot.prefetch_at
    assert waits == 1 and prefetch_at == 1 and requests <= 12  # k = 3, one step of delay: one per step
    for t, a in enumerate(actions):  # every action is row t - s of a chunk requested at some step s <= t
        assert any(np.array_equal(a, chunks[s][t - s]) for s in range(max(0, t - 2), t + 1)), t
    assert np.array_equal(actions[0], chunks[0][0])


def test_client_reconnects_with_backoff_after_a_server_restart(checkpoint, local_policy):
    srv = PolicyServer.from_checkpoint(checkpoint, port=0).start()
    port = srv.port
    client = PolicyClient(srv.url, timeout=30, backoff_initial=0.05)
    rng = np.random.default_rng(15)
    client.act(make_obs(rng))
    srv.stop()
    restarted: list[PolicyServer] = []

    def restart() -> None:
        time.sleep(0.5)
        restarted.append(PolicyServer.from_checkpoint(checkpoint, port=port).start())

    t = threading.Thread(target=restart)
    t.start()
    try:
        obs = make_obs(rng)
        a = client.act(obs)  # the connection is gone: reconnect (back-off) and send again
        local_policy.reset()
        assert np.array_equal(a, local_policy.act(obs))  # a fresh server-side episode
        assert client.reconnects == 1
    finally:
        t.join()
        client.close()
        for s in restarted:
            s.stop()
    with pytest.raises(ConnectionError, match="cannot connect"):
        PolicyClient(f"ws://127.0.0.1:{port}", connect_timeout=0.3)


def test_graceful_stop_closes_connections_and_the_port(checkpoint):
    srv = PolicyServer.from_checkpoint(checkpoint, port=0).start()
    ws = _raw(srv.url)
    srv.stop()
    with pytest.raises(ConnectionClosed) as e:
        ws.recv(timeout=10)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1001  # going away
    with pytest.raises(urllib.error.URLError):
        _health(srv)


def test_remote_policy_has_the_policy_surface(server, local_policy):
    remote = RemotePolicy(server.url)
    try:
        assert remote.cfg.cameras == local_policy.cfg.cameras and remote.cfg.image_size == 32
        remote.reset("execute")
        local_policy.reset("execute")
        obs = make_obs(np.random.default_rng(16))
        assert np.array_equal(remote.act(obs), local_policy.act(obs))
    finally:
        remote.close()


def _cpu_and_state(pid: int) -> tuple[float, str] | None:
    """(user + system CPU seconds, scheduler state letter) of a live process from /proc; None once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), fields[0]


def _wait_for_exit(
    proc: subprocess.Popen, idle_s: float = 15.0, cpu_s: float = 10.0, wall_s: float = 400.0
) -> int:
    """``proc.wait()`` that tells a hang from a starved CPU: fails if the process sleeps without using CPU for
    ``idle_s`` (a deadlock; a graceful shutdown sleeps at most the 2 s closing handshake), uses more than
    ``cpu_s`` CPU seconds (a spin; shutting down takes well under one), or outlives ``wall_s``. A process
    that is runnable but waiting for a core on a loaded machine is given the time it needs."""
    if not os.path.exists(f"/proc/{proc.pid}/stat"):  # no procfs: a wall-clock bound only
        return proc.wait(timeout=60)
    first = _cpu_and_state(proc.pid)
    cpu0 = first[0] if first is not None else 0.0
    start = progress = time.monotonic()
    last_cpu = cpu0
    while proc.poll() is None:
        now = time.monotonic()
        sample = _cpu_and_state(proc.pid)
        if sample is not None:
            cpu, state = sample
            if cpu > last_cpu or state == "R":
                progress = now
            last_cpu = cpu
            assert cpu - cpu0 <= cpu_s, f"shutting down used {cpu - cpu0:.1f} CPU s"
            assert now - progress <= idle_s, (
                f"asleep without progress for {now - progress:.0f} s (state {state})"
            )
        assert now - start <= wall_s, f"still running after {now - start:.0f} s"
        time.sleep(0.1)
    return proc.wait()


def test_mmvla_serve_command_shuts_down_on_signals(checkpoint):
    for sig in (signal.SIGINT, signal.SIGTERM):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mmvla.cli",
                "serve",
                "--checkpoint",
                str(checkpoint),
                "--port",
                "0",
                "--threads",
                "1",
                "--log-level",
                "INFO",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = proc.stdout.readline()
            assert line.startswith("mmvla serve: ws://127.0.0.1:"), (
                line,
                proc.stderr.read() if proc.poll() is not None else "",
            )
            url = line.split()[2]
            with PolicyClient(url) as client:
                assert client.act(make_obs(np.random.default_rng(0))).shape == (7,)
                proc.send_signal(sig)
                assert _wait_for_exit(proc) == 0
            log = proc.stderr.read()
            assert "shutting down: closing 1 connection(s)" in log and "server stopped" in log, log[-2000:]
            assert "Traceback" not in log, log[-2000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class _DelayedChunks:
    """A stand-in PolicyClient whose chunk for a request at step s arrives once the robot reached step
    s + delay (row j of it is the action for step s + j, encoded as [s, j, 0, ...]), or at once if the robot
    blocks waiting for it (its clock runs on while it waits). Steps, not seconds: nothing depends on how
    fast the machine is. ``robot`` is set once the AsyncPolicyClient exists; each observation carries the
    step "t" and the robot's wait count "waits" before that step."""

    def __init__(self, k: int, delay: int) -> None:
        self.metadata = {"chunk_size": k}
        self.k, self.delay, self.now = k, delay, 0
        self.cond = threading.Condition()
        self.robot: AsyncPolicyClient | None = None
        self.stuck = 0  # requests released by the safety timeout (the test fails on any)

    def act_chunk(self, obs: dict) -> np.ndarray:
        s = obs["t"]
        assert self.robot is not None

        def arrived() -> bool:
            assert self.robot is not None
            return self.now >= s + self.delay or self.robot.waits > obs["waits"]

        with self.cond:
            deadline = time.monotonic() + 60
            while s > 0 and not arrived():
                if time.monotonic() > deadline:
                    self.stuck += 1
                    break
                self.cond.wait(0.002)  # polls the robot's wait count
        return np.array([[s, j, 0, 0, 0, 0, 0] for j in range(self.k)], np.float32)

    def reset(self, chunk_mode=None) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.parametrize("prefetch_at, expect_waits", [(None, 1), (0, None)])
def test_async_client_aligns_late_chunks_and_adapts_its_prefetch(prefetch_at, expect_waits):
    fake = _DelayedChunks(k=5, delay=2)
    robot = AsyncPolicyClient(fake, prefetch_at=prefetch_at)  # type: ignore[arg-type]
    fake.robot = robot
    try:
        for t in range(30):
            a = robot.act({"t": t, "waits": robot.waits})
            assert a[0] + a[1] == t, (t, a[:2])  # the row of its chunk that belongs to this step
            with fake.cond:
                fake.now = t + 1
                fake.cond.notify_all()
            in_flight = robot._pending  # a chunk due by now has arrived before the next step
            if in_flight is not None and robot._pending_step + fake.delay <= fake.now:
                concurrent.futures.wait([in_flight], timeout=60)
        assert fake.stuck == 0
        if expect_waits is not None:
            assert robot.waits == expect_waits and robot.max_lag == 2 and robot.prefetch_at == 2
        else:
            assert robot.waits > 1  # requesting only when the chunk is used up makes the robot wait
    finally:
        robot.close()


def test_connections_beyond_the_limit_are_refused_with_503(checkpoint):
    with PolicyServer.from_checkpoint(checkpoint, port=0, max_connections=1) as srv:
        with PolicyClient(srv.url) as first:
            with pytest.raises(ConnectionError, match="503"):
                PolicyClient(srv.url, connect_timeout=0.2)
            assert first.act(make_obs(np.random.default_rng(0))).shape == (7,)
            assert _health(srv)[0] == 200  # /healthz is always answered
        deadline = time.time() + 10
        while srv.stats["connections_open"] and time.time() < deadline:
            time.sleep(0.01)
        with PolicyClient(srv.url) as again:  # the slot is free again
            assert again.metadata["chunk_size"] == 3
