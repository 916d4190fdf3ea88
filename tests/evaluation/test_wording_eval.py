"""Evaluation with wording sets and the instruction swap, checked against the simulator and by hand.

- ``wordings``: the policy is told exactly :func:`wording_for_episode` of the episode's canonical
  instruction; the scene (images, state) is the canonical run's, episode for episode.
- ``instruction_swap``: the simulator's own task and object order after ``retarget``; the scripted
  expert, acting on the swapped task, succeeds by the swapped task's criterion and fails the original.
- ``paired_comparison`` against counts made by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mmvla.evaluation.evaluate as ev
from mmvla.evaluation.evaluate import EpisodeResult, EvalConfig, evaluate, paired_comparison
from mmvla.policy import VLAPolicy
from mmvla.sim.tabletop.env import TabletopEnv
from mmvla.sim.tabletop.expert import ScriptedExpert
from mmvla.sim.tabletop.tasks import parse_instruction
from mmvla.sim.tabletop.wordings import wording_for_episode

from .test_blind_controls import Spy, save_tiny_checkpoint

SEED = 777


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("wordings") / "policy")


def _spied(checkpoint: Path, monkeypatch: pytest.MonkeyPatch, **cfg: Any) -> tuple[Spy, dict[str, Any]]:
    spies: list[Spy] = []

    def init(ckpt: str | None, server: str | None = None) -> None:
        spies.append(Spy(VLAPolicy.from_pretrained(ckpt)))  # type: ignore[arg-type]
        ev._WORKER["policy"] = spies[-1]

    monkeypatch.setattr(ev, "_worker_init", init)
    metrics = evaluate(checkpoint, EvalConfig(workers=1, seed=SEED, max_steps=3, **cfg), progress=False)
    return spies[0], metrics


@pytest.mark.parametrize("wordings", ["train", "heldout"])
def test_wording_set_changes_the_words_and_nothing_else(checkpoint, monkeypatch, wordings):
    plain, _ = _spied(checkpoint, monkeypatch, episodes=3, split="all")
    worded, metrics = _spied(checkpoint, monkeypatch, episodes=3, split="all", wordings=wordings)
    assert len(plain.episodes) == len(worded.episodes) == 6
    changed = 0
    for a, b in zip(plain.episodes, worded.episodes, strict=True):
        canonical = a[0]["instruction"]
        parse_instruction(canonical)  # the plain run saw the canonical instruction
        for oa, ob in zip(a, b, strict=True):
            for cam in ("front", "wrist"):
                np.testing.assert_array_equal(oa[cam], ob[cam])
            np.testing.assert_array_equal(oa["state"], ob["state"])
        given = {o["instruction"] for o in b}
        assert len(given) == 1  # one wording for the whole episode
        changed += given != {canonical}
    assert changed >= 4  # 32 training or 8 held-out wordings: rarely the canonical one
    seeds = [SEED + i for i in range(3)] * 2
    expected = [
        wording_for_episode(ep[0]["instruction"], wordings, s)
        for ep, s in zip(plain.episodes, seeds, strict=True)
    ]
    assert [ep[0]["instruction"] for ep in worded.episodes] == expected
    assert metrics["config"]["wordings"] == wordings


def test_unknown_wording_set_is_refused():
    with pytest.raises(ValueError, match="wordings"):
        EvalConfig(wordings="slang")
    with pytest.raises(ValueError, match="tabletop only"):
        EvalConfig(env="metaworld-mt10", wordings="heldout")


def test_retarget_moves_the_task_to_another_object_the_simulator_agrees():
    env = TabletopEnv(cameras=("front",), image_size=32, split="train", families=("pick",))
    try:
        for seed in range(3):
            obs, _ = env.reset(seed=seed)
            before = env.object_names
            new = tuple(before[1].split())
            obs = env.retarget(new)
            assert env.object_names[0] == before[1] and sorted(env.object_names) == sorted(before)
            assert obs["instruction"] == f"pick up the {before[1]}"
            # initial positions follow their objects
            for o, p0 in zip(env.objects, env.initial_positions, strict=True):
                np.testing.assert_allclose(env.data.xpos[o.body_id], p0, atol=1e-3)
        env.reset(seed=0)
        with pytest.raises(ValueError, match="on the table"):
            env.retarget(("red", "cylinder"))  # held out: never on a training table
        env.step(np.zeros(7))
        with pytest.raises(RuntimeError, match="first step"):
            env.retarget(tuple(env.object_names[1].split()))
    finally:
        env.close()


def test_expert_succeeds_on_the_swapped_task_not_the_original():
    env = TabletopEnv(cameras=("front",), image_size=32, split="train", families=("pick",))
    try:
        wins = 0
        for seed in range(3):
            env.reset(seed=seed)
            original = env.objects[0]
            env.retarget(tuple(env.object_names[1].split()))
            expert = ScriptedExpert(env, noise_std=0.0, seed=seed)
            success = False
            for _ in range(env.max_steps):
                _, _, terminated, truncated, info = env.step(expert.act())
                success = success or info["success"]
                if terminated or truncated:
                    break
            wins += success
            lift = env.data.xpos[env.target.body_id][2] - env.initial_positions[0][2]
            assert success == (lift >= 0.05 and env.is_pinched(env.target))
            assert env.data.xpos[original.body_id][2] < env.initial_positions[1][2] + 0.01  # not lifted
        assert wins == 3
    finally:
        env.close()


def test_paired_comparison_counts_by_hand():
    def runs(bits: str) -> list[EpisodeResult]:
        return [EpisodeResult("train", i, "pick", "x", "x", b == "1", 5) for i, b in enumerate(bits)]

    out = paired_comparison(runs("1101100"), runs("1000111"))
    assert out["only_first"] == 2 and out["only_second"] == 2 and out["episodes"] == 7
    assert out["p_value"] == pytest.approx(1.0)
    out = paired_comparison(runs("1111111"), runs("0000000"))
    assert out["only_first"] == 7 and out["p_value"] == pytest.approx(2 / 2**7)
    with pytest.raises(ValueError, match="same"):
        paired_comparison(runs("11"), runs("111"))
