"""Each blind control of ``evaluate`` changes exactly what it says, seen by a spy in the policy's place.

The spy records every observation ``evaluate`` hands to ``act`` and answers a fixed action, so the
episode unfolds identically under every control; the reference is the same episode stepped here
directly in the simulator (same seed, same actions).

- ``none``: the simulator's images, state and canonical instruction, untouched;
- ``blank_images``: every camera all zeros (same shape and dtype), state and instruction untouched;
- ``wrong_instruction``: images and state untouched; one fixed instruction per episode, another
  canonical instruction of the split with the same verb (another object).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from vla_testdata import save_tiny_checkpoint

import mmvla.evaluation.evaluate as ev
from mmvla.evaluation.evaluate import EvalConfig, evaluate
from mmvla.policy import VLAPolicy
from mmvla.sim.tabletop.env import TabletopEnv
from mmvla.sim.tabletop.tasks import all_instructions

EPISODES, STEPS, SEED, IMAGE = 2, 3, 4242, 32
ACTION = np.array([0.3, -0.2, -0.4, 0.0, 0.0, 0.1, 0.5], np.float32)  # a fixed, non-trivial move


def _copy(observation: dict[str, Any]) -> dict[str, Any]:
    return {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in observation.items()}


class Spy:
    """Stands in for the policy: records what it is given, acts with ``ACTION``."""

    def __init__(self, policy: VLAPolicy) -> None:
        self.cfg = policy.cfg
        self.safety = policy.safety
        self.episodes: list[list[dict[str, Any]]] = []

    def reset(self, chunk_mode: str | None = None) -> None:
        self.episodes.append([])

    def act(self, observation: dict[str, Any]) -> np.ndarray:
        self.episodes[-1].append(_copy(observation))
        return ACTION.copy()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("controls") / "policy")


def _seen(checkpoint: Path, control: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Spy, dict]:
    spies: list[Spy] = []

    def init(ckpt: str | None, server: str | None = None) -> None:
        spies.append(Spy(VLAPolicy.from_pretrained(ckpt)))  # type: ignore[arg-type]
        ev._WORKER["policy"] = spies[-1]

    monkeypatch.setattr(ev, "_worker_init", init)
    cfg = EvalConfig(episodes=EPISODES, split="train", workers=1, seed=SEED, max_steps=STEPS, control=control)
    metrics = evaluate(checkpoint, cfg, progress=False)
    assert len(spies) == 1 and len(spies[0].episodes) == EPISODES
    return spies[0], metrics


@pytest.fixture(scope="module")
def reference() -> list[list[dict[str, Any]]]:
    """The observations before each action, stepped here in the simulator with the spy's actions."""
    env = TabletopEnv(cameras=("front", "wrist"), image_size=IMAGE, split="train", max_steps=STEPS)
    episodes = []
    for i in range(EPISODES):
        obs, _ = env.reset(seed=SEED + i)
        frames = []
        for _ in range(STEPS):
            frames.append(_copy(obs))
            obs, *_ = env.step(ACTION)
        episodes.append(frames)
    env.close()
    return episodes


def test_no_control_passes_the_simulator_observation(checkpoint, reference, monkeypatch):
    spy, metrics = _seen(checkpoint, "none", monkeypatch)
    for got_ep, want_ep in zip(spy.episodes, reference, strict=True):
        assert len(got_ep) == len(want_ep) == STEPS
        for got, want in zip(got_ep, want_ep, strict=True):
            assert set(got) == set(want)
            for k in ("front", "wrist", "state"):
                np.testing.assert_array_equal(got[k], want[k])
            assert got["instruction"] == want["instruction"]
    assert metrics["episodes"] == {"train": EPISODES}


def test_blank_images_zero_every_camera_and_nothing_else(checkpoint, reference, monkeypatch):
    spy, _ = _seen(checkpoint, "blank_images", monkeypatch)
    assert spy.safety is not None and spy.safety.config.blank_std is None  # the hold fallback is off
    for got_ep, want_ep in zip(spy.episodes, reference, strict=True):
        for got, want in zip(got_ep, want_ep, strict=True):
            for cam in ("front", "wrist"):
                assert got[cam].shape == want[cam].shape and got[cam].dtype == np.uint8
                assert not got[cam].any(), cam
                assert want[cam].any()  # the simulator did render something
            np.testing.assert_array_equal(got["state"], want["state"])
            assert got["instruction"] == want["instruction"]


def test_wrong_instruction_swaps_only_the_instruction(checkpoint, reference, monkeypatch):
    spy, _ = _seen(checkpoint, "wrong_instruction", monkeypatch)
    canonical = set(all_instructions("train"))
    for got_ep, want_ep in zip(spy.episodes, reference, strict=True):
        given = {o["instruction"] for o in got_ep}
        assert len(given) == 1  # one wrong instruction for the whole episode
        (text,) = given
        truth = want_ep[0]["instruction"]
        assert text != truth and text in canonical
        assert text.split()[0] == truth.split()[0]  # same verb: only the object (or direction) differs
        for got, want in zip(got_ep, want_ep, strict=True):
            for k in ("front", "wrist", "state"):
                np.testing.assert_array_equal(got[k], want[k])
