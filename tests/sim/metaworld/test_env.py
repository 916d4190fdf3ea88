"""Meta-World MT10 (and MT50's shared parts) through our interface: observation validation, instructions, action mapping against the
simulator, upright cameras against a pinhole projection, experts, and a tiny collect -> train -> eval run.

Skipped (with the reason) when the optional extra is not installed: ``pip install 'mmvla[metaworld]'``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from mmvla.policy.observation import validate_observation
from mmvla.sim.metaworld import config as mwc
from mmvla.sim.metaworld import env as mwe

HAVE_METAWORLD = importlib.util.find_spec("metaworld") is not None
needs_metaworld = pytest.mark.skipif(
    not HAVE_METAWORLD, reason="Meta-World is not installed: pip install 'mmvla[metaworld]'"
)


def test_missing_metaworld_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "metaworld", None)  # makes `import metaworld` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'mmvla\[metaworld\]'"):
        mwe.MetaWorldMT10Env()
    assert not mwe.metaworld_available()


def test_instructions_map_to_tasks_one_to_one() -> None:
    assert set(mwc.TASK_INSTRUCTIONS) == set(mwc.MT50_TASKS) and len(mwc.MT10_TASKS) == 10
    every = [s for t in mwc.MT50_TASKS for s in mwc.TASK_INSTRUCTIONS[t]]
    assert len(every) == len(set(every))  # no phrasing names two tasks
    for task, texts in mwc.TASK_INSTRUCTIONS.items():
        assert texts, task
        for text in texts:
            assert mwc.instruction_to_task(text) == task
            assert mwc.instruction_to_task("  " + text.upper() + " ") == task
            assert set(text) <= set(mwc.INSTRUCTION_CHARSET) and len(text) <= mwc.INSTRUCTION_MAX_LENGTH
    assert len(set(mwc.all_instructions())) == 10
    with pytest.raises(ValueError, match="names no"):
        mwc.instruction_to_task("make coffee")
    assert mwc.canonical_task("reach") == "reach-v3"
    assert mwc.canonical_task("assembly") == "assembly-v3"  # an MT50 task
    with pytest.raises(ValueError, match="unknown Meta-World task"):
        mwc.canonical_task("stack-blocks")
    with pytest.raises(ValueError, match="not MT10 tasks"):
        mwc.MetaWorldConfig(tasks=("reach", "assembly"))


def test_action_mapping_round_trip() -> None:
    mw = np.array([0.3, -2.0, 0.5, 0.6])  # Meta-World: +grab closes; out-of-range values are clipped
    ours = mwe.from_metaworld_action(mw)
    np.testing.assert_allclose(ours, [0.3, -1.0, 0.5, -0.6], rtol=1e-6)
    np.testing.assert_allclose(mwe.to_metaworld_action(ours), np.clip(mw, -1, 1), rtol=1e-6)
    seven = mwe.from_metaworld_action(mw, action_dim=7)
    np.testing.assert_allclose(seven, [0.3, -1.0, 0.5, 0, 0, 0, -0.6], rtol=1e-6)
    np.testing.assert_allclose(mwe.to_metaworld_action(seven), mwe.to_metaworld_action(ours))


def test_config_validation() -> None:
    for bad in (
        {"tasks": ("door-lock",)},  # an MT50 task in the MT10 suite
        {"cameras": ("front",)},
        {"max_steps": 501},
        {"action_dim": 5},
        {"variations": 0},
        {"split": "unseen"},
    ):
        with pytest.raises(ValueError):
            mwc.MetaWorldConfig(**bad)  # type: ignore[arg-type]
    assert mwc.MetaWorldConfig(tasks=()).tasks == mwc.MT10_TASKS  # empty: the suite's tasks
    cfg = mwc.MetaWorldConfig(tasks=("reach", "push"))
    assert cfg.tasks == ("reach-v3", "push-v3")
    assert [cfg.task_for_seed(s) for s in range(4)] == ["reach-v3", "push-v3"] * 2
    assert [cfg.variation_for_seed(s) for s in (0, 1, 2, 101)] == [0, 0, 1, 0]  # 50 variations x 2 tasks


# ---------------------------------------------------------------------------- with Meta-World


@pytest.fixture(scope="module")
def env():  # type: ignore[no-untyped-def]
    if not HAVE_METAWORLD:
        pytest.skip("Meta-World is not installed: pip install 'mmvla[metaworld]'")
    e = mwe.MetaWorldMT10Env(image_size=32)
    yield e
    e.close()


@needs_metaworld
def test_task_list_is_metaworlds_mt10() -> None:
    from metaworld.env_dict import MT10_V3

    assert tuple(MT10_V3) == mwc.MT10_TASKS


@needs_metaworld
def test_observation_passes_the_policy_validation(env: mwe.MetaWorldMT10Env) -> None:
    for i, task in enumerate(mwc.MT10_TASKS):
        obs, info = env.reset(seed=i)
        assert info["family"] == task and obs["instruction"] == mwc.TASK_INSTRUCTIONS[task][0]
        validate_observation(obs, ("corner4",), 32, 4)
        assert env.observation_space.contains(obs)
        obs, reward, _, _, info = env.step(env.action_space.sample())
        validate_observation(obs, ("corner4",), 32, 4)
        assert set(info) >= {"success", "family", "instruction", "variation", "split"}
        assert isinstance(info["success"], bool) and reward == float(info["success"])
        # the state is Meta-World's own proprioception: hand position and gripper opening
        np.testing.assert_allclose(obs["state"][:3], env.metaworld_env.get_endeff_pos(), atol=1e-6)
        assert 0.0 <= obs["state"][3] <= 1.0


@needs_metaworld
def test_gymnasium_env_checker() -> None:
    from gymnasium.utils.env_checker import check_env

    e = mwe.MetaWorldMT10Env(image_size=32, tasks=("reach-v3",))
    try:
        check_env(e, skip_render_check=True)
    finally:
        e.close()


@needs_metaworld
def test_reset_by_instruction_and_family(env: mwe.MetaWorldMT10Env) -> None:
    _, info = env.reset(seed=0, options={"instruction": "pull the drawer open"})
    assert info["family"] == "drawer-open-v3" and info["instruction"] == "open the drawer"
    _, info = env.reset(seed=0, options={"family": "window-close"})
    assert info["family"] == "window-close-v3"
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(seed=0, options={"task": "reach-v3"})


@needs_metaworld
def test_seeds_fix_task_and_goal_variation() -> None:
    e = mwe.MetaWorldMT10Env(cameras=(), tasks=("reach-v3", "push-v3"), variations=3)
    try:

        def goal(seed: int) -> np.ndarray:
            e.reset(seed=seed)
            return np.array(e.metaworld_env._target_pos)

        # 2 tasks x 3 variations: seed s -> task s % 2, variation (s // 2) % 3; seed 6 repeats seed 0
        np.testing.assert_array_equal(goal(0), goal(6))
        assert not np.allclose(goal(0), goal(2))
        assert e.task == "reach-v3"
        e.reset(seed=1)
        assert e.task == "push-v3" and e.variation == 0
        # the expert sees the goal: Meta-World's observation ends with it
        np.testing.assert_allclose(e.mw_obs[-3:], e.metaworld_env._target_pos)
    finally:
        e.close()


@needs_metaworld
def test_actions_move_the_mocap_and_fingers_as_documented() -> None:
    e = mwe.MetaWorldMT10Env(cameras=(), tasks=("reach-v3",))
    try:
        e.reset(seed=0)
        mw = e.metaworld_env
        before = mw.data.mocap_pos[0].copy()
        e.step(np.array([1.0, -1.0, 0.5, 1.0], np.float32))
        np.testing.assert_allclose(mw.data.mocap_pos[0] - before, [0.01, -0.01, 0.005], atol=1e-9)
        np.testing.assert_allclose(mw.data.ctrl[:2], [-1.0, 1.0])  # +1 = open = Meta-World's -1
        e.step(np.array([0.0, 0.0, 0.0, -1.0], np.float32))
        np.testing.assert_allclose(mw.data.ctrl[:2], [1.0, -1.0])  # -1 = close
        with pytest.raises(ValueError, match="shape"):
            e.step(np.zeros(7, np.float32))
    finally:
        e.close()
    # action_dim 7: the rotation entries are ignored
    states = []
    for rot in (0.0, 1.0):
        e7 = mwe.MetaWorldMT10Env(cameras=(), tasks=("push-v3",), action_dim=7)
        try:
            e7.reset(seed=3)
            for _ in range(5):
                e7.step(np.array([0.5, 0.2, -0.3, rot, -rot, rot, 0.4], np.float32))
            states.append(np.array(e7.metaworld_env.data.qpos))
        finally:
            e7.close()
    np.testing.assert_array_equal(states[0], states[1])


@needs_metaworld
def test_expert_label_is_metaworlds_policy_in_our_convention() -> None:
    from metaworld.policies import ENV_POLICY_MAP

    e = mwe.MetaWorldMT10Env(cameras=(), tasks=("pick-place-v3",))
    try:
        obs, _ = e.reset(seed=0)
        expert = mwe.MetaWorldExpert(e, noise_std=0.2, seed=0)
        reference = ENV_POLICY_MAP["pick-place-v3"]()
        for _ in range(30):
            ref = np.clip(reference.get_action(e.mw_obs.copy()), -1, 1)
            executed = expert.act(obs)
            np.testing.assert_allclose(expert.last_clean_action, [*ref[:3], -ref[3]], atol=1e-6)
            assert np.all(np.abs(executed) <= 1.0)
            obs, *_ = e.step(executed)
    finally:
        e.close()


def _hand_subtree(model: object) -> set[int]:
    m = model
    hand = m.body("hand").id  # type: ignore[attr-defined]
    out = set()
    for b in range(m.nbody):  # type: ignore[attr-defined]
        a = b
        while a > 0 and a != hand:
            a = int(m.body_parentid[a])  # type: ignore[attr-defined]
        if a == hand:
            out.add(b)
    return out


def _project(model: object, data: object, camera: str, point: np.ndarray, size: int) -> tuple[float, float]:
    """(row, col) of a world point in the raw render of ``camera``: pinhole model, MuJoCo camera frame
    (x right, y up, looking along -z), row 0 at the top."""
    cid = model.camera(camera).id  # type: ignore[attr-defined]
    rot = data.cam_xmat[cid].reshape(3, 3)  # type: ignore[attr-defined]
    x, y, z = rot.T @ (point - data.cam_xpos[cid])  # type: ignore[attr-defined]
    f = 0.5 * size / math.tan(math.radians(model.cam_fovy[cid]) / 2)  # type: ignore[attr-defined]
    return size / 2 - f * y / -z, size / 2 + f * x / -z


@needs_metaworld
@pytest.mark.parametrize("camera", ["corner4", "corner", "corner3"])
def test_images_are_upright(camera: str) -> None:
    """World up is image up, and the hand is drawn where a pinhole projection puts it."""
    import mujoco

    size = 96
    e = mwe.MetaWorldMT10Env(cameras=(camera,), image_size=size, tasks=("reach-v3",))
    try:
        e.reset(seed=0)
        m, d = e.metaworld_env.model, e.metaworld_env.data
        hand = d.body("hand").xpos.copy()
        r0, c0 = _project(m, d, camera, hand, size)
        r1, c1 = _project(m, d, camera, hand + np.array([0.0, 0.0, 0.2]), size)
        if camera in mwc.UPSIDE_DOWN_CAMERAS:  # the orientation the adapter applies: a 180-degree turn
            r0, c0, r1, c1 = size - 1 - r0, size - 1 - c0, size - 1 - r1, size - 1 - c1
        assert r1 < r0 - 5, "a point 20 cm above the hand must be drawn higher in the image"
        with mujoco.Renderer(m, size, size) as seg_renderer:
            seg_renderer.enable_segmentation_rendering()
            seg_renderer.update_scene(d, camera=camera)
            seg = mwe.orient_image(camera, seg_renderer.render())  # (H, W, 2): object id, object type
        hand_geoms = {g for g in range(m.ngeom) if int(m.geom_bodyid[g]) in _hand_subtree(m)}
        r, c = round(r0), round(c0)
        window = seg[max(r - 3, 0) : r + 4, max(c - 3, 0) : c + 4]
        is_geom = window[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM)
        assert set(window[..., 0][is_geom].tolist()) & hand_geoms, "the hand is not where it projects"
        # and the colour image is the same view (not, say, mirrored)
        img = e.render_camera(camera)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        with mujoco.Renderer(m, size, size) as plain:
            plain.update_scene(d, camera=camera)
            np.testing.assert_array_equal(img, mwe.orient_image(camera, plain.render()))
    finally:
        e.close()


def _expert_success(seeds_per_task: int) -> dict[str, list[bool]]:
    e = mwe.MetaWorldMT10Env(cameras=(), max_steps=500)
    try:
        out: dict[str, list[bool]] = {}
        for i, task in enumerate(mwc.MT10_TASKS):
            seeds = [i + 10 * k for k in range(seeds_per_task)]  # seed % 10 is the task's index
            out[task] = [mwe.run_expert_episode(e, s)[0] for s in seeds]
            assert e.task == task
        return out
    finally:
        e.close()


@needs_metaworld
def test_expert_succeeds_through_the_adapter() -> None:
    res = _expert_success(2)
    assert all(all(v) for v in res.values()), res


@needs_metaworld
@pytest.mark.slow
def test_expert_success_rate_through_the_adapter() -> None:
    res = _expert_success(20)
    rates = {t: float(np.mean(v)) for t, v in res.items()}
    assert all(r >= 0.75 for r in rates.values()), rates  # peg-insert-side and door-open are the weakest
    assert np.mean(list(rates.values())) >= 0.95, rates


@needs_metaworld
def test_registry_builds_both_environments() -> None:
    from mmvla.sim.registry import dataset_schema, env_config, make_env, make_expert

    cfg = env_config("metaworld-mt10", image_size=32, families=("reach",), max_steps=7)
    assert cfg.tasks == ("reach-v3",) and cfg.max_steps == 7 and cfg.cameras == ("corner4",)
    schema = dataset_schema("metaworld-mt10", cfg)
    assert schema.state_names == ("x", "y", "z", "gripper") and schema.fps == 80
    assert schema.action_names == ("dx", "dy", "dz", "gripper")
    assert schema.env_state_names == ("object_dx", "object_dy", "object_dz", "goal_dx", "goal_dy", "goal_dz")
    env = make_env("metaworld-mt10", cfg)
    try:
        obs, _ = env.reset(seed=0)
        expert = make_expert("metaworld-mt10", env, noise_std=0.0, seed=0)
        n = 0
        while True:
            obs, _, term, trunc, _ = env.step(expert.act(obs))
            n += 1
            if term or trunc:
                break
        assert n == 7
    finally:
        env.close()
    with pytest.raises(ValueError, match="unknown environment"):
        env_config("libero")


@needs_metaworld
@pytest.mark.parametrize("task", ["reach-v3", "push-v3", "drawer-open-v3", "peg-insert-side-v3"])
def test_environment_state_is_object_and_goal_relative_to_the_hand(task: str) -> None:
    """The privileged aux target against Meta-World's own accessors (end effector, objects, goal), along an
    expert episode, so the object and the hand both move."""
    from mmvla.sim.registry import METAWORLD_ENV_STATE, environment_state

    env = mwe.MetaWorldMT10Env(cameras=(), tasks=(task,), max_steps=40)
    try:
        obs, _ = env.reset(seed=3)
        expert = mwe.MetaWorldExpert(env, seed=0)
        for _ in range(40):
            got = environment_state("metaworld-mt10", env)
            mw = env.metaworld_env
            hand = np.asarray(mw.get_endeff_pos(), dtype=np.float64)
            want = np.concatenate([mw._get_pos_objects()[:3] - hand, mw._get_pos_goal() - hand])
            assert got is not None and got.shape == (len(METAWORLD_ENV_STATE),) and got.dtype == np.float32
            np.testing.assert_allclose(got, want, atol=1e-6)
            obs, _, term, trunc, _ = env.step(expert.act(obs))
            if term or trunc:
                break
    finally:
        env.close()


@needs_metaworld
@pytest.mark.slow
def test_tiny_collect_train_eval(tmp_path: Path) -> None:
    """The whole pipeline through the CLI: collect (one episode per task), train, evaluate per task."""
    from mmvla.cli import main
    from mmvla.data.dataset import VLADataset
    from mmvla.sim.registry import METAWORLD_ENV_STATE

    data, run, ev = tmp_path / "data", tmp_path / "run", tmp_path / "eval"
    argv = ["collect", "--env", "metaworld-mt10", "--out", str(data), "--episodes", "10"]
    assert main([*argv, "--image-size", "32", "--quiet"]) == 0
    ds = VLADataset(data, progress=False)
    assert ds.meta["robot_type"] == mwc.ROBOT_TYPE and ds.meta["fps"] == 80
    assert ds.meta["features"]["action"]["names"] == ["dx", "dy", "dz", "gripper"]
    assert ds.meta["features"]["observation.state"]["names"] == ["x", "y", "z", "gripper"]
    assert set(ds.episodes["family"]) <= set(mwc.MT10_TASKS) and len(ds.episodes["family"]) >= 8
    assert set(ds.episodes["variation"]) == {0}
    assert ds.cameras == ("corner4",)
    assert ds.meta["features"]["observation.environment_state"]["names"] == list(METAWORLD_ENV_STATE)
    config = tmp_path / "mw.json"
    config.write_text(
        json.dumps(
            {
                "policy": {
                    "cameras": ["corner4"],
                    "image_size": 32,
                    "state_dim": 4,
                    "action_dim": 4,
                    "dim": 32,
                    "head": {"kind": "regression", "chunk_size": 4},
                    "aux_state_weight": 1.0,
                },
                "train": {"steps": 3, "batch_size": 8, "warmup_steps": 1, "log_every": 1},
            }
        )
    )
    assert main(["train", "--data", str(data), "--out", str(run), "--config", str(config), "--quiet"]) == 0
    argv = ["eval", "--env", "metaworld-mt10", "--checkpoint", str(run / "policy"), "--episodes", "10"]
    assert main([*argv, "--workers", "1", "--max-steps", "5", "--out", str(ev), "--quiet"]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    per_task = metrics["per_family"]["train"]
    assert set(per_task) == set(mwc.MT10_TASKS) and all(v["episodes"] == 1 for v in per_task.values())
    assert list(metrics["success"]) == ["train"] and metrics["config"]["env"] == "metaworld-mt10"
