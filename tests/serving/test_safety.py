"""Safety layer: validation, stale/frozen/blank fallback within one step and recovery, clamps for any output,
and no fallback on normal simulator rollouts."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mmvla.policy import VLAPolicy
from mmvla.policy.observation import ObservationError
from mmvla.policy.safety import SafetyConfig, SafetyMonitor

from .conftest import make_obs


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _with_safety(policy: VLAPolicy, clock: FakeClock, **cfg: object) -> VLAPolicy:
    policy.safety = SafetyMonitor(SafetyConfig(**cfg), clock=clock)  # type: ignore[arg-type]
    policy.reset()
    return policy


def _first_action(policy: VLAPolicy, obs: dict) -> np.ndarray:
    """Independent reference for the first step after a (re)start: row 0 of the predicted chunk."""
    from mmvla.policy.observation import observation_to_batch

    with torch.inference_mode():
        chunk, _ = policy.predict_chunk(*observation_to_batch(obs, policy.cfg.cameras))
    return chunk[0, 0].numpy()


def _hold(gripper: float) -> np.ndarray:
    h = np.zeros(7, np.float32)
    h[6] = gripper
    return h


def test_config_validation():
    for kwargs, msg in [
        ({"max_frame_age_s": 0}, "max_frame_age_s"),
        ({"frozen_frames": 1}, "frozen_frames"),
        ({"frozen_frames": -2}, "frozen_frames"),
        ({"blank_std": -1}, "blank_std"),
        ({"flat_scene_mean": (200, 100)}, "flat_scene_mean"),
        ({"max_pos_delta": 1.5}, "max_pos_delta"),
        ({"max_rot_delta": -0.1}, "max_rot_delta"),
        ({"state_low": (0,) * 5}, "together"),
        ({"state_low": (1, 0), "state_high": (0, 1)}, "low <= high"),
        ({"state_abs_max": 0}, "state_abs_max"),
        ({"gripper_open_width": 0}, "gripper_open_width"),
    ]:
        with pytest.raises(ValueError, match=msg):
            SafetyConfig(**kwargs)  # type: ignore[arg-type]
    assert SafetyConfig(max_frame_age_s=None, frozen_frames=0, blank_std=None).to_dict()["frozen_frames"] == 0


def test_validation_errors_are_observation_errors_and_counted(local_policy):
    rng = np.random.default_rng(0)
    policy = _with_safety(local_policy, FakeClock(), state_low=(-1,) * 5, state_high=(1,) * 5)
    bad = [
        ({"extra_camera": np.zeros((32, 32, 3), np.uint8)}, "unknown key"),
        ({"timestamp": float("nan")}, "finite number"),
        ({"front_timestamp": "now"}, "finite number"),
        ({"timestamp": True}, "finite number"),
        ({"state": np.array([0, 0, 2.0, 0, 0], np.float32)}, r"'state'\[2\] = 2 is out of range"),
        ({"state": np.array([0, 0, 0, 0, np.inf], np.float32)}, "NaN or Inf"),
        ({"instruction": ""}, "non-empty"),
        ({"front": np.zeros((32, 32, 3), np.float32)}, "dtype uint8"),
    ]
    for patch, msg in bad:
        with pytest.raises(ObservationError, match=msg):
            policy.act({**make_obs(rng), **patch})
    assert policy.safety is not None
    assert policy.safety.counters["invalid"] == len(bad)
    assert policy.safety.counters["steps"] == 0
    with pytest.raises(ObservationError, match=r"\|x\| <= 1000"):
        _with_safety(local_policy, FakeClock()).act({**make_obs(rng), "state": np.full(5, 5e3, np.float32)})


def test_stale_frame_holds_within_one_step_and_recovers(local_policy, caplog):
    clock = FakeClock()
    policy = _with_safety(local_policy, clock, max_frame_age_s=0.2)
    rng = np.random.default_rng(1)
    obs = make_obs(rng, timestamp=clock.t - 0.05)
    obs["state"][4] = 0.0645  # gripper opening 3/4 -> implied gripper action +0.5
    caplog.set_level(logging.DEBUG, logger="mmvla.safety")
    assert np.array_equal(policy.act(obs), _first_action(policy, obs))
    commanded = float(policy.act(make_obs(rng, timestamp=clock.t))[6])
    # The front camera's own timestamp is old (the shared one is fresh): hold at once, gripper unchanged.
    stale = make_obs(rng, timestamp=clock.t, front_timestamp=clock.t - 0.5)
    assert np.array_equal(policy.act(stale), _hold(commanded))
    assert policy.safety is not None and policy.safety.last is not None
    assert policy.safety.last.kind == "fallback_stale" and "'front'" in policy.safety.last.reason
    assert np.array_equal(policy.act(make_obs(rng, timestamp=clock.t - 1.0)), _hold(commanded))
    fresh = make_obs(rng, timestamp=clock.t)
    assert np.array_equal(policy.act(fresh), _first_action(policy, fresh))  # stale plans were dropped
    assert policy.safety.counters["fallback_stale"] == 2 and policy.safety.last.kind in ("ok", "clamped")
    messages = [r.getMessage() for r in caplog.records if r.name == "mmvla.safety"]
    assert any(r.levelno == logging.WARNING and "fallback_stale" in r.getMessage() for r in caplog.records)
    assert any("recovered" in m for m in messages)
    assert len(messages) == 5  # every decision is logged


def test_hold_gripper_before_any_command_comes_from_the_state(local_policy):
    clock = FakeClock()
    for opening, expected in [(0.0, -1.0), (0.043, 0.0), (0.086, 1.0)]:
        policy = _with_safety(local_policy, clock)
        obs = make_obs(np.random.default_rng(2), timestamp=clock.t - 5.0)  # stale from the first step
        obs["state"][4] = opening
        np.testing.assert_allclose(policy.act(obs), _hold(expected), atol=1e-6)


def test_frozen_camera_holds_at_n_identical_frames_and_recovers(local_policy):
    clock = FakeClock()
    N = 4
    policy = _with_safety(local_policy, clock, frozen_frames=N)
    rng = np.random.default_rng(3)
    frozen = make_obs(rng)["wrist"]
    gripper = None
    for i in range(N):  # the wrist camera keeps delivering the same image with advancing timestamps
        clock.t += 0.05
        obs = make_obs(rng, timestamp=clock.t)
        obs["wrist"] = frozen.copy()
        action = policy.act(obs)
        if i < N - 1:
            assert policy.safety is not None and not policy.safety.last.fallback  # type: ignore[union-attr]
            gripper = float(action[6])
        else:
            assert gripper is not None and np.array_equal(action, _hold(gripper))
            assert policy.safety.last.kind == "fallback_frozen"  # type: ignore[union-attr]
            assert "'wrist'" in policy.safety.last.reason  # type: ignore[union-attr]
    clock.t += 0.05
    obs = make_obs(rng, timestamp=clock.t)
    obs["wrist"] = frozen.copy()
    assert np.array_equal(policy.act(obs), _hold(gripper))  # still frozen
    clock.t += 0.05
    recovered = make_obs(rng, timestamp=clock.t)
    assert np.array_equal(policy.act(recovered), _first_action(policy, recovered))
    assert policy.safety.counters["fallback_frozen"] == 2  # type: ignore[union-attr]


def test_identical_frames_without_timestamps_are_not_frozen_by_default(local_policy):
    rng = np.random.default_rng(4)
    obs = make_obs(rng)
    policy = _with_safety(local_policy, FakeClock(), frozen_frames=3)
    for _ in range(6):  # a still scene in the noise-free simulator renders identical frames
        policy.act(obs)
    assert policy.safety is not None and policy.safety.counters["fallback_frozen"] == 0
    policy = _with_safety(local_policy, FakeClock(), frozen_frames=3, frozen_requires_timestamp=False)
    kinds = []
    for _ in range(4):
        policy.act(obs)
        kinds.append(policy.safety.last.kind)  # type: ignore[union-attr]
    assert [k == "fallback_frozen" for k in kinds] == [False, False, True, True]


@pytest.mark.parametrize("value", [0, 255, 5])
def test_blank_camera_holds_within_one_step_and_recovers(local_policy, value):
    clock = FakeClock()
    policy = _with_safety(local_policy, clock)
    rng = np.random.default_rng(5)
    first = make_obs(rng)
    a0 = policy.act(first)
    blank = make_obs(rng)
    blank["front"] = np.full_like(blank["front"], value)
    blank["front"][0, 0, 0] = value ^ 1  # a single different pixel is still flat
    assert np.array_equal(policy.act(blank), _hold(float(a0[6])))
    assert policy.safety is not None and policy.safety.last is not None
    assert policy.safety.last.kind == "fallback_blank" and "'front'" in policy.safety.last.reason
    recovered = make_obs(rng)
    assert np.array_equal(policy.act(recovered), _first_action(policy, recovered))


def test_flat_grey_frame_is_a_plain_surface_not_blank(local_policy):
    # The simulator's wrist camera sometimes sees only the uniform grey table (pixel std 0, mean 181).
    policy = _with_safety(local_policy, FakeClock())
    obs = make_obs(np.random.default_rng(6))
    obs["wrist"] = np.full_like(obs["wrist"], 181)
    policy.act(obs)
    assert policy.safety is not None and policy.safety.counters["fallback_blank"] == 0
    policy = _with_safety(local_policy, FakeClock(), flat_scene_mean=None)
    policy.act(obs)
    assert policy.safety is not None and policy.safety.counters["fallback_blank"] == 1


def test_execute_mode_drops_queued_actions_on_fallback(local_policy):
    clock = FakeClock()
    policy = _with_safety(local_policy, clock)
    policy.reset("execute")
    rng = np.random.default_rng(7)
    policy.act(make_obs(rng))  # queues k - 1 more actions of this chunk
    stale = make_obs(rng, timestamp=clock.t - 10)
    policy.act(stale)
    obs = make_obs(rng)
    assert np.array_equal(policy.act(obs), _first_action(policy, obs))


# --------------------------------------------------------------------------- clamps
_raw = hnp.arrays(
    np.float64,
    st.sampled_from([(7,), (3, 7), (1, 9)]),
    elements=st.floats(allow_nan=True, allow_infinity=True, width=64),
)


@settings(max_examples=300, deadline=None)
@given(raw=_raw, pos=st.floats(0, 1), rot=st.floats(0, 1))
def test_clamps_hold_for_any_output(raw, pos, rot):
    monitor = SafetyMonitor(SafetyConfig(max_pos_delta=pos, max_rot_delta=rot))
    out = monitor.limit(raw)
    assert out.shape == raw.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.all(np.abs(out[..., 0:3]) <= np.float32(pos))
    assert np.all(np.abs(out[..., 3:6]) <= np.float32(rot))
    assert np.all(np.abs(out[..., 6:]) <= 1)
    if not np.isfinite(raw).all():
        assert monitor.last is not None and monitor.last.kind == "fallback_nonfinite"
        assert np.all(out[..., :6] == 0)
        return
    # Reference: per-dimension limits in float64, then the float32 cast.
    lim = np.ones(raw.shape[-1])
    lim[0:3], lim[3:6] = pos, rot
    clipped = np.array(
        [[min(max(x, -m), m) for x, m in zip(row, lim, strict=True)] for row in raw.reshape(-1, len(lim))]
    )
    np.testing.assert_array_equal(out, clipped.reshape(raw.shape).astype(np.float32))
    assert monitor.last is not None
    assert monitor.last.kind == ("ok" if np.array_equal(clipped.reshape(raw.shape), raw) else "clamped")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=hnp.arrays(np.float32, (3, 7), elements=st.floats(-1e6, 1e6, width=32) | st.just(np.nan)))
def test_clamps_hold_through_policy_act(local_policy, raw):
    policy = _with_safety(local_policy, FakeClock(), max_pos_delta=0.25, max_rot_delta=0.1)
    policy._decode = lambda fused, generator=None: torch.from_numpy(raw)[None]  # type: ignore[method-assign]
    obs = make_obs(np.random.default_rng(0))
    for mode in ("ensemble", "execute"):
        policy.reset(mode)
        for _ in range(2):
            a = policy.act(obs)
            assert np.isfinite(a).all() and np.all(np.abs(a[:3]) <= 0.25) and np.all(np.abs(a[3:6]) <= 0.1)
            assert abs(a[6]) <= 1
        chunk = policy.act_chunk(obs)
        assert chunk.shape == (3, 7) and np.isfinite(chunk).all() and np.all(np.abs(chunk[:, :3]) <= 0.25)


# --------------------------------------------------------------------------- real simulator rollouts
@pytest.mark.parametrize("image_size", [32, 64])
def test_default_safety_never_falls_back_on_simulator_rollouts(image_size):
    from mmvla.sim.tabletop.env import TabletopEnv
    from mmvla.sim.tabletop.expert import ScriptedExpert

    env = TabletopEnv(image_size=image_size, families=("pick", "push", "place"))
    monitor = SafetyMonitor()
    try:
        for seed in range(6 if image_size == 32 else 3):
            expert = ScriptedExpert(env, noise_std=0.2, seed=seed)
            obs, _ = env.reset(seed=seed)
            monitor.reset()
            done = False
            while not done:
                assert monitor.check(obs, ("front", "wrist"), image_size, 5) is None, monitor.last
                obs, _, terminated, truncated, _ = env.step(monitor.limit(expert.act(obs)))
                done = terminated or truncated
        # A robot standing still: the simulator renders bit-identical frames, which are not "frozen".
        obs, _ = env.reset(seed=99)
        monitor.reset()
        for _ in range(30):
            assert monitor.check(obs, ("front", "wrist"), image_size, 5) is None, monitor.last
            obs, *_ = env.step(monitor.limit(np.zeros(7, np.float32)))
    finally:
        env.close()
    assert monitor.counters["steps"] > 100
    assert sum(v for k, v in monitor.counters.items() if k.startswith("fallback")) == 0


def test_policy_rollout_in_simulator_never_falls_back(local_policy):
    from mmvla.sim.tabletop.env import TabletopEnv

    env = TabletopEnv(image_size=32, max_steps=40)
    try:
        obs, _ = env.reset(seed=0)
        local_policy.reset()
        for _ in range(40):
            obs, _, terminated, truncated, _ = env.step(local_policy.act(obs))
            if terminated or truncated:
                break
    finally:
        env.close()
    counters = local_policy.safety.counters  # type: ignore[union-attr]
    assert counters["steps"] >= 10 and counters["ok"] + counters["clamped"] == counters["steps"], counters


def test_safety_off_restores_plain_validation(local_policy):
    local_policy.safety = None
    local_policy.reset()
    obs = make_obs(np.random.default_rng(8))
    obs["front"][:] = 0
    assert local_policy.act(obs).shape == (7,)  # no blank check
    with pytest.raises(ObservationError):
        local_policy.act({**obs, "state": np.zeros(4, np.float32)})
    assert dataclasses.asdict(SafetyConfig())["frozen_frames"] == 10
