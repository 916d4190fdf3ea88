"""Distribution shifts, checked against the simulator's own state.

- Each axis changes what it says (camera pose, light parameters, table rgba/material, geom sizes, object
  count, gripper start, image pixels, instruction) by the stated magnitude, and nothing else: every other
  model field and the observation parts it does not name are those of the clean episode at that seed.
- Severity 0 is the clean scene bit for bit, and a clean episode after a shifted one is clean.
- Shifted and clean episodes at one seed share task, objects, layout and gripper start (same targets).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmvla.sim.tabletop import scene
from mmvla.sim.tabletop.config import TabletopConfig
from mmvla.sim.tabletop.env import TabletopEnv
from mmvla.sim.tabletop.shift import (
    CAMERA_ROTATION_DEG,
    CAMERA_TRANSLATION_CM,
    GRIPPER_START_XY_CM,
    LIGHT_DIRECTION_DEG,
    OBJECT_SCALE_CHANGE,
    SHIFT_AXES,
    TABLE_RGB_DISTANCE,
    ShiftConfig,
    episode_severities,
    kelvin_rgb,
    magnitude,
    parse_axes,
    parse_shift,
)
from mmvla.sim.tabletop.tasks import parse_instruction

FIELDS = (
    "cam_pos",
    "cam_quat",
    "light_dir",
    "light_diffuse",
    "light_ambient",
    "geom_rgba",
    "geom_matid",
    "mat_rgba",
    "geom_size",
    "geom_rbound",
    "body_mass",
    "body_inertia",
)
# Model fields each axis may change; everything else must equal the clean episode's.
CHANGES = {
    "camera": {"cam_pos", "cam_quat"},
    "lighting": {"light_dir", "light_diffuse", "light_ambient", "headlight"},
    "table": {"geom_rgba", "geom_matid", "mat_rgba"},
    "object_size": {"geom_size", "geom_rbound", "body_mass", "body_inertia", "qpos"},
    "distractors": {"geom_rgba", "qpos", "objects"},
    "gripper_start": {"qpos", "mocap"},
    "image": {"pixels"},
    "language": {"instruction"},
}
SEEDS = (3, 11)


@pytest.fixture(scope="module")
def env():
    e = TabletopEnv(cameras=("front", "wrist"), image_size=32, families=("pick", "push", "place"))
    yield e
    e.close()


def _snapshot(env: TabletopEnv, seed: int, shift: ShiftConfig) -> dict:
    obs, info = env.reset(seed=seed, options={"shift": shift})
    m = env.model
    snap = {f: getattr(m, f).copy() for f in FIELDS}
    snap["headlight"] = np.concatenate([m.vis.headlight.ambient, m.vis.headlight.diffuse])
    snap["qpos"] = env.data.qpos.copy()
    snap["mocap"] = env.data.mocap_pos.copy()
    snap["objects"] = env.object_names
    snap["pixels"] = np.concatenate([obs["front"], obs["wrist"]])
    snap["instruction"] = obs["instruction"]
    snap["info"] = info
    return snap


def _differs(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return a.shape != b.shape or not np.array_equal(a, b)
    return a != b


@pytest.mark.parametrize("axis", SHIFT_AXES)
def test_each_shift_changes_what_it_says_and_nothing_else(env, axis):
    for seed in SEEDS:
        clean = _snapshot(env, seed, ShiftConfig())
        shifted = _snapshot(env, seed, ShiftConfig.single(axis, "strong"))
        changed = {k for k in clean if k != "info" and _differs(clean[k], shifted[k])}
        assert changed, f"{axis}: nothing changed"
        visual = changed - {"pixels"}
        assert visual <= CHANGES[axis], f"{axis} also changed {visual - CHANGES[axis]}"
        if axis != "language":
            assert "instruction" not in changed
        # same episode: task, target, the clean objects first and in order
        assert shifted["info"]["instruction"] == clean["info"]["instruction"]
        assert shifted["objects"][: len(clean["objects"])] == clean["objects"]


def test_camera_pose_moves_and_turns_by_the_stated_amount(env):
    clean = _snapshot(env, 5, ShiftConfig())
    cam = env.model.camera("front").id
    for sev in (1, 2, 3):
        s = _snapshot(env, 5, ShiftConfig(camera=sev))
        moved = np.linalg.norm(s["cam_pos"][cam] - clean["cam_pos"][cam])
        assert moved == pytest.approx(CAMERA_TRANSLATION_CM[sev - 1] / 100, rel=1e-9)
        dot = abs(float(s["cam_quat"][cam] @ clean["cam_quat"][cam]))
        assert math.degrees(2 * math.acos(min(1.0, dot))) == pytest.approx(
            CAMERA_ROTATION_DEG[sev - 1], abs=1e-6
        )
        # the wrist camera is not touched; the rendered front camera is where the model says
        wrist = env.model.camera("wrist").id
        np.testing.assert_array_equal(s["cam_pos"][wrist], clean["cam_pos"][wrist])
        np.testing.assert_allclose(env.data.cam_xpos[cam], s["cam_pos"][cam], atol=1e-12)


def test_lighting_scales_tints_and_tilts(env):
    clean = _snapshot(env, 7, ShiftConfig())
    s = _snapshot(env, 7, ShiftConfig(lighting=2))
    shift = env.shift_state
    gain = shift.light_scale * kelvin_rgb(shift.light_kelvin)
    assert abs(shift.light_scale - 1) == pytest.approx(0.4)
    assert shift.light_kelvin == pytest.approx(4500.0) or shift.light_kelvin == pytest.approx(10000.0)
    np.testing.assert_allclose(s["light_diffuse"], clean["light_diffuse"] * gain, rtol=1e-6)
    np.testing.assert_allclose(s["headlight"], clean["headlight"] * np.tile(gain, 2), rtol=1e-6)
    d0, d1 = clean["light_dir"][0], s["light_dir"][0]
    angle = math.degrees(math.acos(float(d0 @ d1) / np.linalg.norm(d0) / np.linalg.norm(d1)))
    assert angle == pytest.approx(LIGHT_DIRECTION_DEG[1], abs=1e-6)


def test_kelvin_rgb_is_white_at_6500_and_warm_below():
    np.testing.assert_allclose(kelvin_rgb(6500.0), 1.0)
    warm, cool = kelvin_rgb(3500.0), kelvin_rgb(15000.0)
    assert warm[0] > warm[1] > warm[2] and cool[2] > cool[1] > cool[0]


def test_table_colour_distance_and_texture(env):
    clean = _snapshot(env, 2, ShiftConfig())
    t = env.model.geom("table").id
    for sev, textured in ((1, False), (2, False), (3, True)):
        s = _snapshot(env, 2, ShiftConfig(table=sev))
        off = np.asarray(env.shift_state.table_rgb_offset)
        assert np.linalg.norm(off) == pytest.approx(TABLE_RGB_DISTANCE[sev - 1])
        np.testing.assert_allclose(s["geom_rgba"][t, :3], np.clip(clean["geom_rgba"][t, :3] + off, 0, 1))
        assert (s["geom_matid"][t] >= 0) == textured


def test_object_size_scales_geometry_and_keeps_objects_on_the_table(env):
    for seed in SEEDS:
        clean = _snapshot(env, seed, ShiftConfig())
        s = _snapshot(env, seed, ShiftConfig(object_size=3))
        scale = env.shift_state.object_scale
        assert abs(scale - 1) == pytest.approx(OBJECT_SCALE_CHANGE[2])
        for obj in env.objects:
            np.testing.assert_allclose(s["geom_size"][obj.geom_id], clean["geom_size"][obj.geom_id] * scale)
            assert s["body_mass"][obj.body_id] == pytest.approx(clean["body_mass"][obj.body_id] * scale**3)
            np.testing.assert_allclose(
                obj.half_extents, np.asarray(scene.SHAPE_HALF_EXTENTS[obj.shape]) * scale
            )
            # resting on the table: its centre at its scaled half height
            assert env.object_position(obj)[2] == pytest.approx(obj.half_extents[2], abs=1e-3)


def test_distractors_add_objects_up_to_the_table_capacity(env):
    for seed in SEEDS:
        clean = _snapshot(env, seed, ShiftConfig())
        for sev in (1, 2, 3):
            s = _snapshot(env, seed, ShiftConfig(distractors=sev))
            assert 0 < env.distractors_added <= sev
            assert len(s["objects"]) == len(clean["objects"]) + env.distractors_added
            assert len(set(s["objects"])) == len(s["objects"])  # no composition twice
            for obj in env.objects[len(clean["objects"]) :]:
                assert -0.2 < env.object_position(obj)[0] < 0.2  # on the table, in view


def test_gripper_start_offset(env):
    clean = _snapshot(env, 4, ShiftConfig())
    s = _snapshot(env, 4, ShiftConfig(gripper_start=3))
    dx, dy, dz, _dyaw = env.shift_state.gripper_offset
    assert math.hypot(dx, dy) == pytest.approx(GRIPPER_START_XY_CM[2] / 100)
    np.testing.assert_allclose(s["mocap"][0] - clean["mocap"][0], (dx, dy, dz), atol=1e-12)


def test_language_gives_a_heldout_wording_and_keeps_the_task(env):
    for sev in (1, 2, 3):
        s = _snapshot(env, 9, ShiftConfig(language=sev))
        canonical = s["info"]["instruction"]
        parse_instruction(canonical)
        assert s["instruction"] != canonical
        assert env.observation_space["instruction"].contains(s["instruction"])


def test_image_shift_degrades_pixels_and_keeps_state(env):
    obs_c, _ = env.reset(seed=1)
    obs_s, _ = env.reset(seed=1, options={"shift": {"image": "strong"}})
    np.testing.assert_array_equal(obs_c["state"], obs_s["state"])
    diff = np.abs(obs_c["front"].astype(int) - obs_s["front"].astype(int)).mean()
    assert diff > 2.0


def _episode(env: TabletopEnv, seed: int, shift: ShiftConfig | None = None) -> list[dict]:
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed, options=None if shift is None else {"shift": shift})
    out = [obs]
    for _ in range(4):
        obs, *_ = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        out.append(obs)
    return out


def _same(a: list[dict], b: list[dict]) -> None:
    for oa, ob in zip(a, b, strict=True):
        for k in ("front", "wrist", "state"):
            np.testing.assert_array_equal(oa[k], ob[k])
        assert oa["instruction"] == ob["instruction"]


def test_severity_zero_is_the_clean_scene_bit_for_bit():
    plain = TabletopEnv(cameras=("front", "wrist"), image_size=32)
    zero = TabletopEnv(
        TabletopConfig(cameras=("front", "wrist"), image_size=32, shift=dict.fromkeys(SHIFT_AXES, 0))
    )
    try:
        for seed in (0, 1):
            reference = _episode(plain, seed)
            _same(reference, _episode(zero, seed))
            _same(reference, _episode(zero, seed, ShiftConfig()))
            # a clean episode after a strongly shifted one is clean (model parameters restored)
            _episode(plain, 50 + seed, ShiftConfig(**dict.fromkeys(SHIFT_AXES, 3)))
            _same(reference, _episode(plain, seed))
    finally:
        plain.close()
        zero.close()


def test_shifted_episodes_are_reproducible_from_the_seed(env):
    every = ShiftConfig(**dict.fromkeys(SHIFT_AXES, 2.5))
    _same(_episode(env, 21, every), _episode(env, 21, every))


def test_config_validation_and_parsing():
    assert ShiftConfig(camera="strong", image="mild").severities() == {"camera": 3.0, "image": 1.0}
    assert not ShiftConfig().active
    assert parse_shift("camera=strong,lighting=1.5") == ShiftConfig(camera=3, lighting=1.5)
    assert parse_shift("all=medium,randomise").randomise
    assert parse_axes("all") == SHIFT_AXES and parse_axes("camera, image") == ("camera", "image")
    cfg = TabletopConfig(shift={"table": "medium"})
    assert cfg.shift == ShiftConfig(table=2) and cfg.to_dict()["shift"]["table"] == 2.0
    assert TabletopConfig(shift="distractors=mild").shift.distractors == 1.0
    with pytest.raises(ValueError, match=r"shift.camera must be in \[0, 3\]"):
        ShiftConfig(camera=4)
    with pytest.raises(ValueError, match=r"shift\.lighting must be one of"):
        ShiftConfig(lighting="extreme")
    with pytest.raises(ValueError, match=r"unknown shift field\(s\) \['colour'\]"):
        TabletopConfig(shift={"colour": 1})
    with pytest.raises(ValueError, match="unknown shift axis"):
        parse_shift("fog=mild")
    with pytest.raises(ValueError, match="expected AXIS=SEVERITY"):
        parse_shift("camera")
    assert magnitude((1.0, 2.5, 5.0), 1.5) == pytest.approx(1.75)


def test_randomised_severities_are_drawn_up_to_the_maximum():
    cfg = ShiftConfig(camera=2, image=3, randomise=True)
    draws = [episode_severities(cfg, seed, 0) for seed in range(200)]
    assert all(0 <= d["camera"] <= 2 and 0 <= d["image"] <= 3 for d in draws)
    assert np.std([d["camera"] for d in draws]) > 0.3
    assert draws[5] == episode_severities(cfg, 5, 0)


def test_clean_fraction_leaves_that_share_of_episodes_clean_and_the_rest_unchanged():
    dr = ShiftConfig(camera=2, image=3, randomise=True)
    half = ShiftConfig(camera=2, image=3, randomise=True, clean_fraction=0.5)
    plain = [episode_severities(dr, seed, 0) for seed in range(400)]
    mixed = [episode_severities(half, seed, 0) for seed in range(400)]
    clean = [m == {} for m in mixed]
    # Binomial(400, 0.5): 200 +- 10 (sd); 5 sd either way would be a broken coin.
    assert 150 < sum(clean) < 250
    # The randomised episodes draw exactly the severities they would without a clean share.
    assert all(m == p for m, p in zip(mixed, plain, strict=True) if m)
    assert all(
        episode_severities(ShiftConfig(camera=2, randomise=True, clean_fraction=1), s, 0) == {}
        for s in range(20)
    )
    assert parse_shift("all=medium,randomise,clean_fraction=0.25").clean_fraction == 0.25
    with pytest.raises(ValueError, match="clean_fraction must be a number in"):
        ShiftConfig(camera=1, randomise=True, clean_fraction=1.5)
    with pytest.raises(ValueError, match="set randomise too"):
        ShiftConfig(camera=1, clean_fraction=0.5)
    with pytest.raises(ValueError, match="clean_fraction must be a number"):
        parse_shift("camera=1,randomise,clean_fraction=half")
