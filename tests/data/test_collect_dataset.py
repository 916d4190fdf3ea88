"""collect_dataset: seed order, dropped failures, atomic writes; a small real collect with the simulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from synthetic_episodes import CAMERAS, make_episode

import mmvla.data.collect as collect_mod
from mmvla.data.collect import EpisodeResult, collect_dataset
from mmvla.data.dataset import VLADataset
from mmvla.data.lerobot_format import Episode, LeRobotWriter, encode_episode


def _fake_results(fail_seeds: set[int], store: dict[int, Episode]):  # type: ignore[no-untyped-def]
    """A stand-in for the worker pool: deterministic episodes per seed, in seed order (the pool's ordered
    mode; tests/core/test_pool.py checks that it orders)."""

    def results(
        cfg: Any, jobs: list[tuple[int, int, str | None, bool]], workers: int, **bar: Any
    ) -> Iterator[EpisodeResult]:
        for index, seed, _family, _corrective in jobs:
            rng = np.random.default_rng(seed)
            ep = make_episode(rng, 3 + seed % 4, seed, env_state=True)
            ep.extra.update(seed=seed)
            store[seed] = ep
            ok = seed not in fail_seeds
            yield EpisodeResult(
                index, seed, ok, str(ep.extra["family"]), ep.length, encode_episode(ep) if ok else None, 20
            )

    return results


def test_episodes_sorted_by_seed_and_failures_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store: dict[int, Episode] = {}
    monkeypatch.setattr(collect_mod, "_results", _fake_results({12, 15}, store))
    out = tmp_path / "ds"
    s = collect_dataset(out, episodes=8, workers=3, seed=10, image_size=16, progress=False)
    assert (s.requested, s.kept, s.dropped, s.dropped_seeds) == (8, 6, 2, [12, 15])
    kept = [store[seed] for seed in range(10, 18) if seed not in (12, 15)]
    assert s.frames == sum(e.length for e in kept)
    assert s.kept_per_family == {"pick": 3, "push": 3} and s.dropped_per_family == {"pick": 1, "push": 1}
    assert "episodes dropped 2" in s.format() and str(out) in s.format()
    assert str(s).startswith("kept 6/8 episodes (dropped 2)")
    ds = VLADataset(out, progress=False)
    assert ds.episodes["seed"] == [10, 11, 13, 14, 16, 17]
    np.testing.assert_array_equal(ds.action, np.concatenate([e.action for e in kept]))
    for cam in CAMERAS:
        ref = np.concatenate([e.images[cam] for e in kept]).transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(ds.images[cam], ref)
    assert ds.meta["fps"] == 20 and ds.meta["splits"] == {"train": "0:6"}
    meta = json.loads((out / "meta/mmvla.json").read_text())
    assert meta["dropped_seeds"] == [12, 15] and meta["seed"] == 10
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_all_failed_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collect_mod, "_results", _fake_results(set(range(100)), {}))
    with pytest.raises(ValueError, match="all 3 episodes failed"):
        collect_dataset(tmp_path / "ds", episodes=3, image_size=16, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_interrupted_collect_leaves_no_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    monkeypatch.setattr(collect_mod, "_results", _fake_results(set(), {}))
    real_add = LeRobotWriter.add_episode
    calls = {"n": 0}

    def add_then_fail(self: LeRobotWriter, ep: Any) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise exc
        return real_add(self, ep)

    monkeypatch.setattr(LeRobotWriter, "add_episode", add_then_fail)
    with pytest.raises(type(exc)):
        collect_dataset(tmp_path / "ds", episodes=5, image_size=16, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor its temporary sibling


def test_overwrite_keeps_old_dataset_until_new_one_is_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(collect_mod, "_results", _fake_results(set(), {}))
    out = tmp_path / "ds"
    collect_dataset(out, episodes=2, seed=0, image_size=16, progress=False)
    old_info = (out / "meta/info.json").read_text()
    with pytest.raises(FileExistsError):
        collect_dataset(out, episodes=3, seed=5, image_size=16, progress=False)

    real_finish = LeRobotWriter.finish

    def finish_then_fail(self: LeRobotWriter, *a: Any, **k: Any) -> Any:
        real_finish(self, *a, **k)  # the new dataset is fully written in the temporary directory ...
        assert (out / "meta/info.json").read_text() == old_info  # ... and the old one is untouched
        raise RuntimeError("killed before the rename")

    monkeypatch.setattr(LeRobotWriter, "finish", finish_then_fail)
    with pytest.raises(RuntimeError, match="before the rename"):
        collect_dataset(out, episodes=3, seed=5, image_size=16, overwrite=True, progress=False)
    assert (out / "meta/info.json").read_text() == old_info
    assert VLADataset(out, progress=False).episodes["seed"] == [0, 1]
    monkeypatch.setattr(LeRobotWriter, "finish", real_finish)
    collect_dataset(out, episodes=3, seed=5, image_size=16, overwrite=True, progress=False)
    assert VLADataset(out, progress=False).episodes["seed"] == [5, 6, 7]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_argument_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="episodes"):
        collect_dataset(tmp_path / "a", episodes=0)
    with pytest.raises(ValueError, match="workers"):
        collect_dataset(tmp_path / "a", episodes=1, workers=0)
    with pytest.raises(ValueError, match="split"):
        collect_dataset(tmp_path / "a", episodes=1, split="nope")
    with pytest.raises(ValueError, match="noise_std"):
        collect_dataset(tmp_path / "a", episodes=1, noise_std=-1.0)
    assert not (tmp_path / "a").exists()


# ---------------------------------------------------------------------------- with the real simulator


def test_real_collect_round_trip_and_worker_independence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mmvla.sim.tabletop.expert")
    from mmvla.cli import main

    seen: list[Episode] = []  # what the recorder saw, before PNG encoding
    real_encode = collect_mod.encode_episode

    def keep(ep: Episode, *a: Any) -> Any:
        seen.append(ep)
        return real_encode(ep, *a)

    monkeypatch.setattr(collect_mod, "encode_episode", keep)
    one = tmp_path / "one"
    s = collect_dataset(one, episodes=3, workers=1, seed=7, image_size=32, noise_std=0.1, progress=False)
    assert s.kept == len(seen) and s.kept + s.dropped == 3
    ds = VLADataset(one, image_size=32, progress=False)
    np.testing.assert_array_equal(ds.action, np.concatenate([e.action for e in seen]))
    np.testing.assert_array_equal(ds.state, np.concatenate([e.state for e in seen]))
    for cam in CAMERAS:
        ref = np.concatenate([e.images[cam] for e in seen]).transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(ds.images[cam], ref)
    assert [e.task for e in seen] == [
        ds.tasks[int(ds.task_index[ds.episode_rows(i).start])] for i in range(s.kept)
    ]
    assert set(ds.episodes["family"]) <= {"pick", "push", "place"} and set(ds.episodes["split"]) == {"train"}
    assert ds.meta["robot_type"] == "mmvla_tabletop" and ds.meta["fps"] == 20
    assert np.all(np.abs(ds.action) <= 1.0)

    # the CLI with 2 worker processes writes the same dataset
    two = tmp_path / "two"
    argv = ["collect", "--out", str(two), "--episodes", "3", "--workers", "2", "--seed", "7"]
    assert main([*argv, "--image-size", "32", "--noise", "0.1", "--quiet"]) == 0
    ds2 = VLADataset(two, progress=False)
    assert ds2.episodes["seed"] == ds.episodes["seed"]
    np.testing.assert_array_equal(ds2.action, ds.action)
    np.testing.assert_array_equal(ds2.state, ds.state)
    for cam in CAMERAS:
        np.testing.assert_array_equal(ds2.images[cam], ds.images[cam])
    assert main([*argv, "--quiet"]) == 2  # exists, no --overwrite: a clear CLI error


def test_corrections_are_executed_by_the_policy_and_labelled_by_the_expert(tmp_path: Path) -> None:
    """DAgger episodes: the states follow the policy's actions and every label is the expert's clean
    action in that state; a failed correction is kept. Reference: the same episode stepped here."""
    pytest.importorskip("mmvla.sim.tabletop.expert")
    from vla_testdata import save_tiny_checkpoint

    from mmvla.pipeline import checkpoint_corrector
    from mmvla.policy import VLAPolicy
    from mmvla.sim.registry import make_env
    from mmvla.sim.tabletop.expert import ScriptedExpert

    ckpt = save_tiny_checkpoint(tmp_path / "policy")  # untrained: it fails, and its episode is kept
    out = tmp_path / "ds"
    s = collect_dataset(
        out,
        episodes=1,
        seed=7,
        image_size=32,
        corrections=2,
        corrector=checkpoint_corrector(ckpt, CAMERAS, 32),
        corrector_name=str(ckpt),
        correction_seed=100,
        correction_families=["place"],
        progress=False,
    )
    assert (s.requested, s.corrections, s.corrections_succeeded) == (3, 2, 0)
    ds = VLADataset(out, image_size=32, progress=False)
    assert ds.episodes["seed"][-2:] == [100, 101] and ds.episodes["family"][-2:] == ["place", "place"]
    assert ds.episodes["executor"] == ["expert"] * (s.kept - 2) + ["policy", "policy"]
    meta = json.loads((out / "meta/mmvla.json").read_text())
    assert meta["corrections"] == {
        "policy": str(ckpt),
        "episodes": 2,
        "seed": 100,
        "families": ["place"],
        "policy_succeeded": 0,
    }

    rows = ds.episode_rows(s.kept - 2)  # the correction with seed 100, replayed by hand
    env = make_env("tabletop", cameras=CAMERAS, image_size=32, split="train")
    policy = VLAPolicy.from_pretrained(ckpt)
    policy.reset()
    expert = ScriptedExpert(env)
    obs, _ = env.reset(seed=100, options={"family": "place"})
    labels, states, executed = [], [], []
    for _ in range(rows.stop - rows.start):
        labels.append(expert.clean_action())
        states.append(obs["state"])
        executed.append(policy.act(obs))
        obs, *_ = env.step(executed[-1])
    env.close()
    np.testing.assert_array_equal(ds.state[rows], np.stack(states))
    np.testing.assert_array_equal(ds.action[rows], np.stack(labels))
    assert np.abs(np.stack(executed) - np.stack(labels)).max() > 0.1  # the policy, not the expert, acted


def test_corrections_are_validated(tmp_path: Path) -> None:
    from vla_testdata import save_tiny_checkpoint

    from mmvla.pipeline import checkpoint_corrector

    ckpt = save_tiny_checkpoint(tmp_path / "policy")
    corrector = checkpoint_corrector(ckpt, CAMERAS, 32)
    with pytest.raises(ValueError, match="corrections need a corrector"):
        collect_dataset(tmp_path / "a", episodes=1, corrections=2)
    with pytest.raises(ValueError, match="corrections need a corrector"):
        collect_dataset(tmp_path / "a", episodes=1, corrector=corrector)
    with pytest.raises(ValueError, match="overlap"):
        collect_dataset(tmp_path / "a", episodes=5, corrections=2, corrector=corrector, correction_seed=3)
    with pytest.raises(ValueError, match="correction families"):
        collect_dataset(
            tmp_path / "a", episodes=1, corrections=1, corrector=corrector, correction_families=["stack"]
        )
    with pytest.raises(ValueError, match="reads cameras"):
        checkpoint_corrector(ckpt, CAMERAS, 64)
    assert not (tmp_path / "a").exists()
