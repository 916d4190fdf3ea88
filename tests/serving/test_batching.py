"""Fair, batched inference: concurrent connections share forward passes (answers still equal each stream's
local policy), a newer act replaces a queued one (superseded), and a connection pipelining requests cannot
keep another connection's request out of the next batch."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mmvla.serving.client import PolicyClient, open_connection
from mmvla.serving.protocol import pack, unpack
from mmvla.serving.server import PolicyServer

from .conftest import make_obs


def _raw(url: str):
    ws = open_connection(url)
    assert unpack(ws.recv(timeout=10))["kind"] == "metadata"
    return ws


def _slow_next_batch(srv: PolicyServer, seconds: float) -> None:
    """Make the next batch take ``seconds`` longer, so that later requests pile up in the scheduler."""
    original = srv._run_batch

    def slow(jobs):  # type: ignore[no-untyped-def]
        srv._run_batch = original  # type: ignore[method-assign]
        time.sleep(seconds)
        return original(jobs)

    srv._run_batch = slow  # type: ignore[method-assign]


@pytest.mark.parametrize("vision_threads", [1, 2])  # 2: a batch's images split into slices computed at once
def test_concurrent_connections_are_batched_and_keep_their_own_state(
    checkpoint, local_policy, vision_threads
):
    n, steps = 8, 4
    streams = [[make_obs(np.random.default_rng(200 + i)) for _ in range(steps)] for i in range(n)]
    with PolicyServer.from_checkpoint(
        checkpoint, port=0, batch_wait_ms=20, vision_threads=vision_threads
    ) as srv:
        trace = srv.policy.vision_trace
        assert trace is not None and trace.threads == vision_threads
        slices: list[int] = []  # the helper's slices while serving (start-up's preparation is done)
        if trace._helpers is not None:
            submit = trace._helpers.submit
            trace._helpers.submit = lambda fn, sl: slices.append(sl.stop - sl.start) or submit(fn, sl)  # type: ignore[method-assign]
        clients = [PolicyClient(srv.url, timeout=60) for _ in range(n)]
        results: dict[int, list[np.ndarray]] = {i: [] for i in range(n)}
        barrier = threading.Barrier(n)

        def run(i: int) -> None:
            barrier.wait(timeout=30)
            for obs in streams[i]:
                results[i].append(clients[i].act(obs))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for c in clients:
            c.close()
        assert srv.stats["batched_requests"] == n * steps
        assert srv.stats["batches"] < n * steps / 2  # requests really shared forward passes
        assert (len(slices) > 0) == (vision_threads > 1)  # a second thread really computed slices
    for i in range(n):
        local_policy.reset()
        for got, obs in zip(results[i], streams[i], strict=True):
            np.testing.assert_allclose(got, local_policy.act(obs), rtol=0, atol=1e-5)


def test_the_latest_observation_replaces_a_queued_one(server, local_policy):
    rng = np.random.default_rng(7)
    frames = [make_obs(rng) for _ in range(3)]
    ws = _raw(server.url)
    try:
        _slow_next_batch(server, 0.5)
        for i, obs in enumerate(frames):
            ws.send(pack({"kind": "act", "observation": obs, "id": i}))
            if i == 0:
                time.sleep(0.1)  # 0 is taken into the (slow) batch
        replies = [unpack(ws.recv(timeout=10)) for _ in range(3)]
        assert [r["id"] for r in replies] == [0, 1, 2]  # in request order
        # 0 is being computed, 1 waits in the queue until 2 replaces it
        assert [r["kind"] for r in replies] == ["action", "error", "action"]
        assert replies[1]["error"] == "superseded"
        local_policy.reset()
        np.testing.assert_array_equal(replies[0]["action"], local_policy.act(frames[0]))
        np.testing.assert_array_equal(replies[2]["action"], local_policy.act(frames[2]))  # 1 never ran
    finally:
        ws.close()


def test_a_pipelining_connection_does_not_starve_another(server):
    rng = np.random.default_rng(8)
    obs = make_obs(rng)
    greedy, polite = _raw(server.url), _raw(server.url)
    try:
        _slow_next_batch(server, 0.5)
        greedy.send(pack({"kind": "act", "observation": obs, "id": 0}))  # in the slow batch
        time.sleep(0.1)
        for i in range(1, 40):  # a backlog on one connection
            greedy.send(pack({"kind": "act", "observation": obs, "id": i}))
        time.sleep(0.1)
        t0 = time.monotonic()
        polite.send(pack({"kind": "act", "observation": obs, "id": "polite"}))
        reply = unpack(polite.recv(timeout=20))
        waited = time.monotonic() - t0
        assert reply["kind"] == "action" and reply["id"] == "polite"
        assert waited < 2.0, waited  # the worker's 0.5 s, then at most a couple of batches
        got = [unpack(greedy.recv(timeout=20)) for _ in range(40)]
        assert [r["id"] for r in got] == list(range(40))
        kinds = [r["kind"] if r["kind"] == "action" else r["error"] for r in got]
        assert kinds == ["action"] + ["superseded"] * 38 + ["action"]
    finally:
        greedy.close()
        polite.close()


def _act_together(clients: list[PolicyClient], obs: dict) -> float:
    """Every client acts at once (one thread each); seconds until the last answer."""
    barrier = threading.Barrier(len(clients))

    def run(c: PolicyClient) -> None:
        barrier.wait(timeout=30)
        c.act(obs)

    threads = [threading.Thread(target=run, args=(c,)) for c in clients]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return time.monotonic() - t0


@pytest.mark.parametrize(
    "active, acting, groups, at_once",
    [(16, 8, 2, True), (16, 8, 1, False), (4, 2, 2, False)],  # last: halves below MIN_GROUP_BATCH
)
def test_a_batch_starts_once_a_groups_share_of_the_active_connections_waits(
    checkpoint, active, acting, groups, at_once
):
    """Of ``active`` connections, ``acting`` send a request: the batch starts at once when they are a
    group's share (at least MIN_GROUP_BATCH), else the scheduler waits batch_wait_ms for the others."""
    obs = make_obs(np.random.default_rng(9))
    with PolicyServer.from_checkpoint(checkpoint, port=0, batch_wait_ms=800, batch_groups=groups) as srv:
        srv._active_sessions = lambda: active  # type: ignore[method-assign]  # no 1 s activity window
        clients = [PolicyClient(srv.url, timeout=30) for _ in range(acting)]
        try:
            waited = _act_together(clients, obs)
        finally:
            for c in clients:
                c.close()
    if at_once:
        assert waited < 0.5, waited
    else:
        assert waited >= 0.75, waited
