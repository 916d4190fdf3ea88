"""The camera failure: exactly the frames it says, from the step it says; the reference is the simulator's
own render of each camera after every step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmvla.sim.camera_failure import (
    CameraFailure,
    CameraFailureWrapper,
    FrameFailure,
    fail_frames,
    failure_start,
)
from mmvla.sim.tabletop.env import TabletopEnv

SIZE = 16


def _episode(mode: str, seed: int, steps: int, start: int | None = None):
    """(wrapper observations, the simulator's clean front/wrist renders, the wrapper) over ``steps`` steps."""
    env = CameraFailureWrapper(
        TabletopEnv(cameras=("front", "wrist"), image_size=SIZE, max_steps=50), CameraFailure(mode)
    )
    sim = env.unwrapped
    options = None if start is None else {"failure_start": start}
    obs, info = env.reset(seed=seed, options=options)
    seen, clean, infos = [obs], [{c: sim.render_camera(c) for c in ("front", "wrist")}], [info]
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        obs, _, _, _, info = env.step(rng.uniform(-1, 1, 7).astype(np.float32))
        seen.append(obs)
        clean.append({c: sim.render_camera(c) for c in ("front", "wrist")})
        infos.append(info)
    return seen, clean, infos, env


@pytest.mark.parametrize("mode", ["blank", "freeze"])
def test_wrapper_fails_exactly_the_frames_it_says(mode):
    seen, clean, infos, env = _episode(mode, seed=3, steps=12)
    s = env.failure_start
    assert s == failure_start(3) == CameraFailure(mode).start_for(3) and 4 <= s <= 16
    seen, clean, infos, env = _episode(mode, seed=3, steps=12, start=5)  # a start inside the episode
    assert env.failure_start == 5
    for t, (o, c, info) in enumerate(zip(seen, clean, infos, strict=True)):
        np.testing.assert_array_equal(o["wrist"], c["wrist"])  # the other camera continues
        assert info["camera_failed"] == (t >= 5) and info["failure_start"] == 5
        if t < 5:
            np.testing.assert_array_equal(o["front"], c["front"])
        elif mode == "blank":
            assert o["front"].dtype == np.uint8 and not o["front"].any()
        else:
            np.testing.assert_array_equal(o["front"], clean[4]["front"])  # the last good frame
    # the scene kept moving: a frozen or blank frame is not what the camera would have seen
    assert not np.array_equal(clean[4]["front"], clean[12]["front"])
    env.close()


def test_failure_start_is_reproducible_and_covers_its_range():
    starts = [failure_start(s, (2, 6)) for s in range(400)]
    assert starts == [failure_start(s, (2, 6)) for s in range(400)]
    assert set(starts) == {2, 3, 4, 5, 6}
    with pytest.raises(ValueError, match="start_range"):
        CameraFailure("blank", start_range=(0, 3))
    with pytest.raises(ValueError, match="mode"):
        CameraFailure("smudge")


def test_no_failure_episode_and_the_env_rng_is_untouched():
    plain = TabletopEnv(cameras=("front",), image_size=SIZE)
    wrapped = CameraFailureWrapper(TabletopEnv(cameras=("front",), image_size=SIZE), CameraFailure("blank"))
    a, _ = plain.reset(seed=9)
    b, info = wrapped.reset(seed=9, options={"failure_start": None})
    np.testing.assert_array_equal(a["front"], b["front"])
    np.testing.assert_array_equal(plain.initial_positions, wrapped.unwrapped.initial_positions)
    assert info["camera_failed"] is False and info["failure_start"] is None
    for _ in range(3):
        assert not wrapped.step(np.zeros(7, np.float32))[4]["camera_failed"]
    plain.close()
    wrapped.close()


@pytest.mark.parametrize("mode", ["blank", "freeze"])
def test_online_equals_offline_for_numpy_and_torch(mode):
    frames = np.random.default_rng(0).integers(1, 255, (9, 4, 4, 3), dtype=np.uint8)
    for start in (1, 4, 8, 9, 20):
        online = FrameFailure(mode, start)
        got = np.stack([online(f) for f in frames])
        want = fail_frames(frames, start, mode)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(want[: min(start, 9)], frames[: min(start, 9)])
        np.testing.assert_array_equal(fail_frames(torch.from_numpy(frames), start, mode).numpy(), want)
        # the naive reference
        ref = frames.copy()
        for t in range(start, 9):
            ref[t] = 0 if mode == "blank" else frames[start - 1]
        np.testing.assert_array_equal(want, ref)
    with pytest.raises(ValueError, match=">= 1"):
        fail_frames(frames, 0, mode)
