"""Meta-World MT50 under the peers' protocol: the task list and difficulty groups against Meta-World's own,
every task's build, render and expert (slow), and that training and evaluation positions differ, read
from the simulator's own object and goal positions.

Skipped (with the reason) when the optional extra is not installed: ``pip install 'mmvla[metaworld]'``.
"""

from __future__ import annotations

import importlib.util
import runpy
from pathlib import Path

import numpy as np
import pytest

from mmvla.sim.metaworld import config as mwc
from mmvla.sim.metaworld import env as mwe

needs_metaworld = pytest.mark.skipif(
    importlib.util.find_spec("metaworld") is None,
    reason="Meta-World is not installed: pip install 'mmvla[metaworld]'",
)
BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "metaworld.py"


def test_difficulty_groups_partition_the_fifty_tasks() -> None:
    sizes = {g: len(ts) for g, ts in mwc.DIFFICULTY_GROUPS.items()}
    assert sizes == {"easy": 28, "medium": 11, "hard": 6, "very_hard": 5}
    grouped = [t for ts in mwc.DIFFICULTY_GROUPS.values() for t in ts]
    assert len(grouped) == len(set(grouped)) == 50 and set(grouped) == set(mwc.MT50_TASKS)
    # MT10 first, in MT10 order: a task's index (which seeds its goal sampler) is the same in both suites
    assert mwc.MT50_TASKS[:10] == mwc.MT10_TASKS
    assert mwc.difficulty("pick-place-wall") == "very_hard" and mwc.difficulty("reach-v3") == "easy"


def test_mt50_config_follows_the_peers_protocol() -> None:
    cfg = mwc.mt50_config()
    assert cfg.tasks == mwc.MT50_TASKS and cfg.variations is None and cfg.max_steps == 500
    assert cfg.to_dict()["env"] == "metaworld-mt50"
    assert mwc.MetaWorldConfig().to_dict()["env"] == "metaworld-mt10"
    assert mwc.mt50_config(variations=50, tasks=("sweep",)).variations == 50
    # fresh positions: every seed has its own sampler seed (no variation cycle)
    seeds = {cfg.sampler_seed("sweep-v3", s) for s in range(2000)}
    assert len(seeds) == 2000
    with pytest.raises(ValueError, match="suite"):
        mwc.MetaWorldConfig(suite="mt45")


def test_registry_names_mt50() -> None:
    from mmvla.sim.registry import default_families, env_config

    assert default_families("metaworld-mt50") == mwc.MT50_TASKS
    cfg = env_config("metaworld-mt50", families=("assembly", "reach"))
    assert cfg.suite == "mt50" and cfg.tasks == ("assembly-v3", "reach-v3") and cfg.max_steps == 500
    assert env_config("metaworld-mt50", max_steps=200).max_steps == 200


def test_benchmark_eval_seeds_are_never_collection_seeds() -> None:
    bench = runpy.run_path(str(BENCHMARK), run_name="not_main")
    groups = bench["eval_groups"](mwc.MT50_TASKS)
    assert [len(ts) for ts in groups.values()] == [28, 11, 6, 5]
    per_task, demos = 50, 50  # more than the benchmark's defaults: a margin
    collect = set(range(demos * 50))
    evaluation = [
        bench["group_seed"](k) + i for k, ts in enumerate(groups.values()) for i in range(per_task * len(ts))
    ]
    assert len(set(evaluation)) == len(evaluation) and not collect & set(evaluation)


def _positions(env: mwe.MetaWorldEnv, seed: int, task: str) -> np.ndarray:
    """The simulator's own object position and goal after a reset: (6,) metres."""
    env.reset(seed=seed, options={"family": task})
    mw = env.metaworld_env
    return np.concatenate([mw._get_pos_objects()[:3], mw._target_pos])


@needs_metaworld
@pytest.mark.parametrize("task", ["push-v3", "basketball-v3", "stick-pull-v3"])
def test_training_and_evaluation_positions_differ(task: str) -> None:
    env = mwe.make_mt50_env(cameras=(), tasks=(task,))
    try:
        train = np.stack([_positions(env, s, task) for s in range(20)])
        test = np.stack([_positions(env, 1_000_000 + s, task) for s in range(10)])
        again = _positions(env, 3, task)
    finally:
        env.close()
    np.testing.assert_array_equal(again, train[3])  # a seed fixes its positions
    gaps = np.abs(test[:, None, :] - train[None, :, :]).max(axis=-1)  # (test, train) largest coordinate gap
    assert gaps.min() > 1e-3, gaps.min()  # no evaluation episode repeats a training scene
    assert np.ptp(train, axis=0).max() > 0.02  # and positions really vary


@needs_metaworld
@pytest.mark.slow
@pytest.mark.parametrize("task", mwc.MT50_TASKS)
def test_every_task_builds_renders_and_its_expert_succeeds(task: str) -> None:
    env = mwe.make_mt50_env(cameras=("corner4",), image_size=32, tasks=(task,))
    try:
        obs, info = env.reset(seed=0)
        assert info["family"] == task and obs["instruction"] == mwc.TASK_INSTRUCTIONS[task][0]
        frame = obs["corner4"]
        assert frame.shape == (32, 32, 3) and frame.std() > 5  # a real picture, not a flat colour
        ok = [mwe.run_expert_episode(env, 1_000 + s, task)[0] for s in range(3)]
    finally:
        env.close()
    assert sum(ok) >= 2, ok  # soccer, the weakest expert, succeeds on 70% of seeds


@needs_metaworld
def test_gym_make_gives_mt50_under_the_protocol() -> None:
    import gymnasium as gym

    import mmvla  # noqa: F401  (registers the ids)

    env = gym.make("mmvla/MetaWorld-MT50-v0", cameras=(), tasks=("hammer",))
    try:
        cfg = env.unwrapped.config
        assert cfg.suite == "mt50" and cfg.variations is None and cfg.max_steps == 500
        _, info = env.reset(seed=5)
        assert info["family"] == "hammer-v3" and info["variation"] == -1
    finally:
        env.close()


@needs_metaworld
def test_lerobot_camera_moves_corner2_to_lerobots_pose() -> None:
    env = mwe.make_mt50_env(cameras=("corner2",), image_size=32, tasks=("reach",), lerobot_camera=True)
    plain = mwe.make_mt50_env(cameras=("corner2",), image_size=32, tasks=("reach",))
    try:
        moved, _ = env.reset(seed=0)
        before, _ = plain.reset(seed=0)
        m = env.metaworld_env.model
        np.testing.assert_allclose(m.cam_pos[m.camera("corner2").id], mwe.LEROBOT_CORNER2_POS)
        assert np.abs(moved["corner2"].astype(int) - before["corner2"].astype(int)).mean() > 5
    finally:
        env.close()
        plain.close()
