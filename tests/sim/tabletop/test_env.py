"""The tabletop environment: Gymnasium conformance, reproducibility, splits and honest grasping."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import mmvla.sim
from mmvla.sim.tabletop import scene
from mmvla.sim.tabletop.config import TabletopConfig
from mmvla.sim.tabletop.env import TabletopEnv
from mmvla.sim.tabletop.tasks import HELD_OUT, parse_instruction


@pytest.fixture
def env():
    e = TabletopEnv(cameras=("front", "wrist"), image_size=32)
    yield e
    e.close()


def test_check_env_passes(env):
    check_env(env, skip_render_check=True)


def test_registered_id_makes_the_env():
    e = gym.make(mmvla.sim.ENV_ID, cameras=("front",), image_size=32)
    try:
        obs, info = e.reset(seed=0)
        assert set(obs) == {"front", "state", "instruction"}
        assert obs["front"].shape == (32, 32, 3) and obs["front"].dtype == np.uint8
        assert obs["state"].shape == (5,) and obs["state"].dtype == np.float32
        for key in ("success", "family", "instruction", "target", "split"):
            assert key in info
        _, _, _, _, info = e.step(e.action_space.sample())
        assert info["success"] is False
    finally:
        e.close()


def test_config_rejects_unknown_names():
    with pytest.raises(ValueError, match="side"):
        TabletopConfig(cameras=("front", "side"))
    with pytest.raises(ValueError, match="stack"):
        TabletopConfig(families=("pick", "stack"))
    with pytest.raises(ValueError, match="test"):
        TabletopConfig(split="test")
    with pytest.raises(ValueError, match="num_objects"):
        TabletopConfig(num_objects=2)


def test_same_seed_same_first_observation_and_rollout(env):
    other = TabletopEnv(cameras=("front", "wrist"), image_size=32)
    try:
        actions = np.random.default_rng(0).uniform(-1, 1, size=(25, 7)).astype(np.float32)
        rollouts = []
        for e in (env, other, env):
            obs, _ = e.reset(seed=123)
            frames = [obs]
            for a in actions:
                obs, *_ = e.step(a)
                frames.append(obs)
            rollouts.append(frames)
        for frames in rollouts[1:]:
            for a, b in zip(rollouts[0], frames, strict=True):
                assert a["instruction"] == b["instruction"]
                np.testing.assert_array_equal(a["state"], b["state"])
                np.testing.assert_array_equal(a["front"], b["front"])
                np.testing.assert_array_equal(a["wrist"], b["wrist"])
        o1, _ = env.reset(seed=124)
        assert not np.array_equal(o1["front"], rollouts[0][0]["front"])
    finally:
        other.close()


def test_held_out_compositions_never_appear_in_training_resets():
    e = TabletopEnv(cameras=(), split="train", families=("pick", "push", "place"))
    seen_targets = set()
    for seed in range(1000):
        _, info = e.reset(seed=seed)
        for obj in e.objects:
            assert (obj.colour, obj.shape) not in HELD_OUT, (seed, info["instruction"])
        seen_targets.add(info["target"])
    assert len(seen_targets) == 15 - len(HELD_OUT)


def test_unseen_split_targets_only_held_out():
    e = TabletopEnv(cameras=(), split="unseen", families=("pick", "push"))
    for seed in range(200):
        _, info = e.reset(seed=seed)
        task = parse_instruction(info["instruction"])
        assert task.target in HELD_OUT


def test_every_episode_has_same_colour_and_same_shape_distractors():
    """Pick and push scenes (place scenes follow their own rule: tests/sim/tabletop/test_place_scenes.py)."""
    e = TabletopEnv(cameras=(), num_objects=(3, 5), families=("pick", "push"))
    for seed in range(200):
        e.reset(seed=seed)
        target = e.target
        assert target is not None
        others = e.objects[1:]
        assert any(o.colour == target.colour and o.shape != target.shape for o in others)
        assert any(o.shape == target.shape and o.colour != target.colour for o in others)
        names = [o.name for o in e.objects]
        assert len(set(names)) == len(names)
        assert 3 <= len(names) <= 5


def test_time_limit_truncates():
    e = TabletopEnv(cameras=(), max_steps=5)
    e.reset(seed=0)
    flags = [e.step(np.zeros(7, np.float32))[3] for _ in range(5)]
    assert flags == [False, False, False, False, True]


def _run(e: TabletopEnv, action: np.ndarray, steps: int) -> None:
    for _ in range(steps):
        e.step(action)


def _move_to(e: TabletopEnv, goal: np.ndarray, grip: float, steps: int = 40) -> None:
    for _ in range(steps):
        ee = e.ee_state()
        a = np.zeros(7, np.float32)
        a[:3] = np.clip((goal - ee[:3]) / e.config.max_delta_pos, -1, 1)
        a[5] = np.clip(-ee[3] / e.config.max_delta_yaw, -1, 1)
        a[6] = grip
        e.step(a)


@pytest.fixture
def grasp_env():
    """A pick episode with a cube target, the hand aligned with it (yaw 0)."""
    e = TabletopEnv(cameras=(), families=("pick",), max_steps=1000, terminate_on_success=False)
    for seed in range(100):
        e.reset(seed=seed)
        assert e.target is not None
        if e.target.shape == "cube" and abs(e.object_yaw(e.target)) % (np.pi / 2) < 0.1:
            break
    yield e
    e.close()


def test_closing_on_empty_air_lifts_nothing(grasp_env):
    e = grasp_env
    start = np.array([e.object_position(o) for o in e.objects])
    empty = np.array([-0.2, 0.18, 0.03])  # outside the object workspace
    _move_to(e, empty + np.array([0.0, 0.0, 0.08]), 1.0)
    _move_to(e, empty, 1.0)
    _move_to(e, empty, -1.0, steps=10)
    assert e.ee_state()[4] < 0.005  # fingers closed on nothing
    _move_to(e, empty + np.array([0.0, 0.0, 0.12]), -1.0)
    end = np.array([e.object_position(o) for o in e.objects])
    assert np.all(np.abs(end[:, 2] - start[:, 2]) < 0.003)


def test_lifting_without_closing_lifts_nothing(grasp_env):
    e = grasp_env
    assert e.target is not None
    pos = e.object_position(e.target)
    z0 = pos[2]
    _move_to(e, pos + np.array([0.0, 0.0, 0.08]), 1.0)
    _move_to(e, np.array([pos[0], pos[1], 0.02]), 1.0)
    _move_to(e, np.array([pos[0], pos[1], 0.15]), 1.0)
    assert abs(e.object_position(e.target)[2] - z0) < 0.003
    assert not e.is_pinched(e.target)


def test_closing_on_the_object_and_lifting_lifts_it(grasp_env):
    e = grasp_env
    assert e.target is not None
    pos = e.object_position(e.target)
    z0 = pos[2]
    _move_to(e, pos + np.array([0.0, 0.0, 0.08]), 1.0)
    _move_to(e, np.array([pos[0], pos[1], 0.02]), 1.0)
    _move_to(e, np.array([pos[0], pos[1], 0.02]), -1.0, steps=10)
    opening = e.ee_state()[4]
    assert abs(opening - 2 * scene.CUBE_HALF) < 0.004  # stopped by the cube
    _move_to(e, np.array([pos[0], pos[1], 0.15]), -1.0)
    assert e.object_position(e.target)[2] - z0 > 0.1
    assert e.is_pinched(e.target)
    # The other objects stayed on the table.
    for obj in e.objects[1:]:
        assert e.object_position(obj)[2] < 0.05
    # Opening the gripper drops it.
    _run(e, np.array([0, 0, 0, 0, 0, 0, 1.0], np.float32), 15)
    assert e.object_position(e.target)[2] < 0.05


def test_reset_options_choose_the_task():
    e = TabletopEnv(cameras=(), families=("pick", "push"))
    _, info = e.reset(seed=0, options={"instruction": "push the yellow cube to the left"})
    assert info["family"] == "push" and info["target"] == "yellow cube" and info["direction"] == "left"
    for seed in range(10):
        _, info = e.reset(seed=seed, options={"family": "pick"})
        assert info["family"] == "pick"
    held_out = " ".join(next(iter(sorted(HELD_OUT))))
    with pytest.raises(ValueError, match="split"):
        e.reset(seed=0, options={"instruction": f"pick up the {held_out}"})
    with pytest.raises(ValueError, match="place"):
        e.reset(seed=0, options={"family": "place"})
    with pytest.raises(ValueError, match="colour"):
        e.reset(seed=0, options={"colour": "red"})


def test_render_rgb_array_and_close_twice():
    e = TabletopEnv(cameras=("wrist",), image_size=32, render_mode="rgb_array", render_size=48)
    check_env(e)
    e.reset(seed=0)
    frame = e.render()
    assert frame is not None and frame.shape == (48, 48, 3) and frame.dtype == np.uint8
    assert frame.std() > 5  # not blank
    e.close()
    e.close()


def test_kwargs_override_config():
    cfg = TabletopConfig(image_size=32, cameras=("front",))
    e = TabletopEnv(cfg, split="unseen")
    assert e.config.split == "unseen" and e.config.image_size == 32
    assert e.observation_space["front"].shape == (32, 32, 3)


def test_check_rendered_passes_real_frames_and_names_a_blank_camera():
    """A broken OpenGL set-up renders flat frames without an error; collect and eval refuse them."""
    from mmvla.sim.registry import check_rendered

    env = TabletopEnv(cameras=("front", "wrist"), image_size=32)
    obs, _ = env.reset(seed=0)
    env.close()
    check_rendered(obs, ("front", "wrist"))  # the real renderer draws a scene
    blank = dict(obs, wrist=np.zeros_like(obs["wrist"]))
    with pytest.raises(RuntimeError, match="camera 'wrist' rendered a uniform frame"):
        check_rendered(blank, ("front", "wrist"))
