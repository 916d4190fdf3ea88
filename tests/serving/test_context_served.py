"""The context task through the policy server: the served network sees exactly the failed frames the
environment produced (the same frames as the local policy), the server reports the safety decision, a
hand-over stops the episode on both paths, and batched connections keep their own memory."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from vla_testdata import small_policy_dict

from mmvla.data.dataset import VLADataset
from mmvla.evaluation import evaluate as ev
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.policy.safety import SafetyConfig, SafetyMonitor
from mmvla.serving.client import PolicyClient, RemotePolicy
from mmvla.serving.server import PolicyServer
from mmvla.sim.camera_failure import FrameFailure
from mmvla.training.trainer import dataset_normalizer

from .conftest import make_obs

START = 3
CONTINUE = SafetyConfig(fallback="continue", continue_steps=1000)  # failed frames reach the network


class Recorder:
    """Wraps a policy: records the observations it is given (what the environment produced)."""

    def __init__(self, policy) -> None:
        self.policy, self.cfg, self.seen = policy, policy.cfg, []

    def reset(self, chunk_mode=None) -> None:
        self.policy.reset(chunk_mode)

    def act(self, obs):
        self.seen.append({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in obs.items()})
        return self.policy.act(obs)


def _spy_fuse(policy: VLAPolicy) -> list[np.ndarray]:
    """Record the front images (H, W, 3) uint8 of every row the network fuses."""
    frames: list[np.ndarray] = []
    original = policy.fuse

    def fuse(images, instructions, state, past_state=None):  # type: ignore[no-untyped-def]
        frames.extend(x.permute(1, 2, 0).numpy().copy() for x in images["front"])
        return original(images, instructions, state, past_state)

    policy.fuse = fuse  # type: ignore[method-assign]
    return frames


def _episode(policy, mode: str, fallback: tuple[str, int] | None = None) -> ev.EpisodeResult:
    cfg = ev.EvalConfig(
        episodes=1,
        split="train",
        families=("pick",),
        max_steps=8,
        camera_failure=mode,
        failure_start=(START, START),
    )
    (job,) = ev._jobs(cfg, ("pick",), {"max_steps": 8, "families": ("pick",)})
    job[3]["fallback"] = fallback
    ev._WORKER["policy"] = policy
    try:
        return ev._run_episode(job)
    finally:
        ev._WORKER.clear()


@pytest.mark.parametrize("mode", ["blank", "freeze"])
def test_served_network_sees_exactly_the_failed_frames(checkpoint, mode):
    local = VLAPolicy.from_pretrained(checkpoint)
    local.safety = SafetyMonitor(CONTINUE)
    local_frames = _spy_fuse(local)
    local_rec = Recorder(local)
    local_result = _episode(local_rec, mode)
    with PolicyServer.from_checkpoint(checkpoint, port=0, safety=CONTINUE) as srv:
        served_frames = _spy_fuse(srv.policy)
        remote = RemotePolicy(srv.url)
        try:
            served_rec = Recorder(remote)
            served_result = _episode(served_rec, mode)
            decision = remote.client.last_reply["safety"]["decision"]
        finally:
            remote.close()
    # The server reports acting on a blank camera; a frozen one without timestamps is invisible to the
    # safety layer (a still scene renders bit-identical frames too), so the network just sees it.
    assert decision == ("blind_continue" if mode == "blank" else "ok")
    sent = [o["front"] for o in served_rec.seen]
    assert len(sent) == served_result.length == local_result.length == 8
    # The environment's frames: good before START, then blank / the last good frame.
    for t, f in enumerate(sent):
        if t < START:
            assert f.any()
        elif mode == "blank":
            assert not f.any()
        else:
            np.testing.assert_array_equal(f, sent[START - 1])
    np.testing.assert_array_equal(np.stack(sent), np.stack([o["front"] for o in local_rec.seen]))
    # Both networks fused exactly those frames, one per step (ensemble chunking predicts every step).
    np.testing.assert_array_equal(np.stack(served_frames), np.stack(sent))
    np.testing.assert_array_equal(np.stack(local_frames), np.stack(sent))
    assert served_result.failure_start == local_result.failure_start == START
    assert served_result.blind_steps == local_result.blind_steps == 8 - START


def test_hold_is_reported_and_handover_stops_the_episode_on_both_paths(checkpoint):
    local = VLAPolicy.from_pretrained(checkpoint)
    held = _episode(local, "blank", fallback=("hold", 0))
    assert not held.handed_over and held.length == 8 and held.blind_steps == 8 - START
    local_over = _episode(local, "blank", fallback=("handover", 0))
    assert local_over.handed_over and local_over.length == START and local_over.blind_steps == 0
    with PolicyServer.from_checkpoint(checkpoint, port=0, safety=SafetyConfig(fallback="handover")) as srv:
        remote = RemotePolicy(srv.url)
        try:
            served_over = _episode(remote, "blank")
            reply = remote.client.last_reply
        finally:
            remote.close()
    assert served_over.handed_over and served_over.length == START
    assert reply["safety"]["decision"] == "handover" and reply["safety"]["fallback"]
    with PolicyServer.from_checkpoint(checkpoint, port=0) as srv, PolicyClient(srv.url) as client:
        rng = np.random.default_rng(0)
        client.act(make_obs(rng))
        blank = make_obs(rng)
        blank["front"] = np.zeros_like(blank["front"])
        client.act(blank)
        assert client.last_reply["safety"]["decision"] == "fallback_blank"


@pytest.mark.parametrize(
    "context",
    [{"temporal": {"context": 3, "reader": "lstm"}}, {"state_history": 2}],
    ids=["memory", "states"],
)
def test_batched_connections_keep_their_own_memory(tiny_dataset, context):
    """Two connections, one with a failing camera, stepped together through one server with a temporal
    policy (a memory of fused features, or of recent states): each stream's actions equal that stream
    run alone on a local policy."""
    ds = VLADataset(tiny_dataset, chunk_size=3, progress=False)
    cfg = PolicyConfig.from_dict(small_policy_dict(**context, camera_dropout=0.0))
    torch.manual_seed(0)
    policy = VLAPolicy(cfg, dataset_normalizer(ds, cfg)).eval()
    if policy.memory_proj is not None:
        torch.nn.init.normal_(policy.memory_proj.weight, std=0.5)  # make the memory matter
    steps = 6
    streams = []
    for i, mode in enumerate(("blank", None)):
        rng = np.random.default_rng(300 + i)
        obs = [make_obs(rng) for _ in range(steps)]
        if mode is not None:
            fail = FrameFailure(mode, 2)
            for o in obs:
                o["front"] = fail(o["front"])
        streams.append(obs)
    results: dict[int, list[np.ndarray]] = {0: [], 1: []}
    with PolicyServer(policy, port=0, safety=CONTINUE, batch_wait_ms=20) as srv:
        clients = [PolicyClient(srv.url, timeout=60) for _ in range(2)]
        barrier = threading.Barrier(2)

        def run(i: int) -> None:
            for o in streams[i]:
                barrier.wait(timeout=30)
                results[i].append(clients[i].act(o))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for c in clients:
            c.close()
    local = VLAPolicy(cfg, policy.normalizer)
    local.load_state_dict(policy.state_dict())
    local.eval().safety = SafetyMonitor(CONTINUE)
    for i in range(2):
        local.reset()
        want = [local.act(o) for o in streams[i]]
        np.testing.assert_allclose(np.stack(results[i]), np.stack(want), rtol=0, atol=1e-5)
