"""The context task on the policy side: safety fallbacks while a camera has failed, failures sampled in
training windows, and per-episode memory rows that a failure in one row never reaches in another
(compared against running each row alone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vla_testdata import small_policy_dict

from mmvla.core.handover import HandOver
from mmvla.data.dataset import VLADataset
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.policy.safety import SafetyConfig, SafetyMonitor
from mmvla.sim.camera_failure import fail_frames
from mmvla.training.config import TrainConfig
from mmvla.training.failures import (
    apply_failures,
    blank_rows,
    current_frames,
    current_or_frozen,
    fail_aged_window,
    last_good_rows,
    sample_failure_ages,
    sample_failures,
)
from mmvla.training.history_dropout import drop_history
from mmvla.training.trainer import dataset_normalizer, train

CAMS = ("front", "wrist")


def _obs(rng: np.random.Generator, blank_front: bool = False) -> dict:
    obs = {c: rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for c in CAMS}
    if blank_front:
        obs["front"] = np.zeros_like(obs["front"])
    state = np.zeros(5, np.float32)
    state[4] = 0.086
    return {**obs, "state": state, "instruction": "pick up the red cube"}


# ------------------------------------------------------------------------------------------ fallbacks
def test_continue_fallback_acts_for_at_most_n_failed_steps_then_holds():
    m = SafetyMonitor(SafetyConfig(fallback="continue", continue_steps=3), log=lambda *a: None)
    rng = np.random.default_rng(0)
    kinds = []
    for t in range(7):
        hold = m.check(_obs(rng, blank_front=1 <= t <= 5), CAMS, 32, 5)
        if hold is None:
            m.limit(np.full(7, 0.5, np.float32))
        kinds.append(m.last.kind)
    assert kinds == ["ok"] + ["blind_continue"] * 3 + ["fallback_blank"] * 2 + ["ok"]
    assert m.counters["blind_continue"] == 3 and m.counters["fallback_blank"] == 2 and not m.handed_over


def test_handover_fallback_holds_and_the_policy_raises(tiny_dataset):
    m = SafetyMonitor(SafetyConfig(fallback="handover"), log=lambda *a: None)
    rng = np.random.default_rng(1)
    assert m.check(_obs(rng), CAMS, 32, 5) is None
    m.limit(np.zeros(7, np.float32))
    hold = m.check(_obs(rng, blank_front=True), CAMS, 32, 5)
    assert hold is not None and not hold[:6].any() and m.handed_over and m.last.kind == "handover"
    assert m.last.fallback  # the returned action is the hold action
    m.reset()
    assert not m.handed_over

    policy = _policy(VLADataset(tiny_dataset, chunk_size=3, progress=False), None).eval()
    policy.safety = SafetyMonitor(SafetyConfig(fallback="handover"), log=lambda *a: None)
    policy.reset()
    policy.act(_obs(rng))
    with pytest.raises(HandOver) as e:
        policy.act(_obs(rng, blank_front=True))
    assert e.value.action is not None and e.value.action.shape == (7,)


def test_fallback_config_is_validated():
    with pytest.raises(ValueError, match="fallback"):
        SafetyConfig(fallback="pray")
    with pytest.raises(ValueError, match="continue_steps"):
        SafetyConfig(continue_steps=-1)
    with pytest.raises(ValueError, match="camera_failure"):
        TrainConfig(camera_failure="smudge")
    assert TrainConfig(camera_failure="both").camera_failure_modes == ("blank", "freeze")


# ------------------------------------------------------------------------------------------ training
def test_sampled_failures_start_after_a_real_frame():
    mask = torch.ones(400, 6, dtype=torch.bool)
    for b in range(400):
        mask[b, : b % 7] = False  # 0..6 frames before the episode start
    mask[::7, :] = True
    g = torch.Generator().manual_seed(0)
    fails = sample_failures(mask, 1.0, ("blank", "freeze"), g)
    starts = set()
    for b, f in enumerate(fails):
        first = int((~mask[b]).sum())
        if first >= 5:  # at most one real frame: nothing to fail after
            assert f is None
            continue
        assert f is not None and first + 1 <= f[0] <= 5, (b, first, f)
        starts.add(f[0])
    assert starts == {1, 2, 3, 4, 5}
    assert {f[1] for f in fails if f} == {"blank", "freeze"}
    assert all(f is None for f in sample_failures(mask, 0.0, ("blank",), g))
    frames = torch.rand(4, 6, 3, 2, 2)
    some = [None, (2, "blank"), (5, "freeze"), None]
    out = apply_failures(frames, some)
    for b in range(4):
        f = some[b]
        want = frames[b] if f is None else fail_frames(frames[b], f[0], f[1])
        torch.testing.assert_close(out[b], want)
    assert (out[1, 2:] == 0).all() and (out[2, 5] == frames[2, 4]).all()
    # The memoryless shortcut: the current frame, chosen before and blanked after (augmentation).
    torch.testing.assert_close(blank_rows(current_frames(frames, some), some), out[:, -1])


def test_aged_failures_fail_every_frame_after_the_last_good_one_as_the_environment_does():
    """Failures older than the window, against :func:`fail_frames` applied to the whole episode."""
    steps = torch.arange(400) % 20  # (B,) steps into the episode
    g = torch.Generator().manual_seed(1)
    ages = sample_failure_ages(steps, 1.0, 12, ("blank", "freeze"), g)
    for b, a in enumerate(ages):
        if steps[b] == 0:
            assert a is None  # the reset's frame never fails
        else:
            assert a is not None and 1 <= a[0] <= min(12, int(steps[b])), (b, a)
    assert {a[0] for a in ages if a} == set(range(1, 13)) and {a[1] for a in ages if a} == {"blank", "freeze"}
    assert all(a is None for a in sample_failure_ages(steps, 0.0, 12, ("blank",), g))
    with pytest.raises(ValueError, match="span"):
        sample_failure_ages(steps, 1.0, 0, ("blank",), g)

    episode = torch.rand(20, 3, 2, 2)  # one episode's frames, rows 100..119 of a dataset
    T, t = 4, 15  # window of 4 frames ending at step t
    for age in (1, 3, 4, 9, 15):
        for mode in ("blank", "freeze"):
            fails = [(age, mode)]
            rows = last_good_rows(np.array([100 + t]), fails)
            assert rows.tolist() == [100 + t - age]
            last_good = episode[rows - 100]  # (1, 3, 2, 2)
            want = fail_frames(episode, t - age + 1, mode)  # the failure starts at observation t - age + 1
            window = episode[None, t - T + 1 : t + 1]
            torch.testing.assert_close(fail_aged_window(window, last_good, fails)[0], want[t - T + 1 : t + 1])
            current = blank_rows(current_or_frozen(episode[None, t], last_good, fails), fails)
            torch.testing.assert_close(current[0], want[t])
    # With span T - 1 the in-window sampling is the same draw: position T - age.
    mask = torch.ones(64, 5, dtype=torch.bool)
    mask[:20, :3] = False
    in_window = sample_failures(mask, 0.7, ("blank", "freeze"), torch.Generator().manual_seed(3))
    aged = sample_failure_ages(mask.sum(1) - 1, 0.7, 4, ("blank", "freeze"), torch.Generator().manual_seed(3))
    assert in_window == [None if a is None else (5 - a[0], a[1]) for a in aged]


def _policy(dataset, temporal):
    cfg = PolicyConfig.from_dict(small_policy_dict(temporal=temporal, camera_dropout=0.0))
    torch.manual_seed(0)
    return VLAPolicy(cfg, dataset_normalizer(dataset, cfg))


@pytest.mark.parametrize("reader", ["lstm", "attention"])
def test_training_rows_never_see_another_rows_failure(tiny_dataset, reader):
    ds = VLADataset(tiny_dataset, chunk_size=3, history=3, progress=False)
    policy = _policy(ds, {"context": 4, "reader": reader, "num_heads": 2}).eval()
    rows = [ds.episode_rows(e).start + t for e, t in ((0, 5), (1, 1), (2, 7), (3, 0))]
    batch = ds.get_batch(rows)
    fails = [(2, "blank"), None, (1, "freeze"), None]
    batch["images"]["front"] = apply_failures(batch["images"]["front"], fails)
    with torch.no_grad():
        together = policy.fuse_window(batch).pooled  # (4, D)
        for b in range(4):
            alone = {
                "images": {c: x[b : b + 1] for c, x in batch["images"].items()},
                "instruction": batch["instruction"][b : b + 1],
                "state": batch["state"][b : b + 1],
                "history_mask": batch["history_mask"][b : b + 1],
            }
            torch.testing.assert_close(together[b : b + 1], policy.fuse_window(alone).pooled)


def test_evaluation_memory_resets_at_episode_start_and_matches_training(tiny_dataset):
    """Act through a failed episode, reset, act through another: the second episode's actions equal a
    fresh policy's on it alone, and each step equals the training-time read of the failed window."""
    ds = VLADataset(tiny_dataset, chunk_size=3, history=2, progress=False)
    policy = _policy(ds, {"context": 3, "reader": "lstm"}).eval()
    policy.safety = None  # the policy itself sees the blank frames
    # Weights that make the memory matter (the projection starts at zero).
    torch.nn.init.normal_(policy.memory_proj.weight, std=0.5)

    def obs_at(i: int, front: np.ndarray | None = None) -> dict:
        o = {c: ds.images[c][i].transpose(1, 2, 0) for c in ds.cameras}
        if front is not None:
            o["front"] = front
        return {**o, "state": ds.state[i], "instruction": ds.tasks[int(ds.task_index[i])]}

    def episode(e: int, start: int | None) -> list[np.ndarray]:
        rows = ds.episode_rows(e)
        front = ds.images["front"][rows.start : rows.start + 6].transpose(0, 2, 3, 1)  # (6, H, W, 3)
        if start is not None:
            front = fail_frames(front, start, "freeze" if e % 2 else "blank")
        policy.reset(chunk_mode="ensemble")
        out = []
        for t in range(6):
            policy._chunker.reset()
            out.append(policy.act(obs_at(rows.start + t, front[t])))
        return out

    failed = episode(0, start=2)
    clean_after = episode(1, start=None)
    policy.memory.reset()
    fresh = episode(1, start=None)
    np.testing.assert_array_equal(np.stack(clean_after), np.stack(fresh))
    # The failed episode's step 3 == the training window of frames [1, 2, 3] with the same failure.
    rows = ds.episode_rows(0)
    batch = ds.get_batch([rows.start + 3])
    front = ds.images["front"][rows.start : rows.start + 4]  # (4, 3, H, W)
    batch["images"]["front"] = torch.from_numpy(fail_frames(front, 2, "blank")[1:4][None].copy())
    with torch.no_grad():
        want = policy._decode(policy.fuse_window(batch))[0, 0].numpy()
    np.testing.assert_allclose(failed[3], want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(failed[3], episode(0, start=None)[3], atol=1e-4)  # the failure mattered


def _front_frames_seen_in_training(tiny_dataset, run_dir, temporal, **options) -> torch.Tensor:
    """Train 4 steps with camera failures in every sample; the front frames each step fused, stacked."""
    cfg = PolicyConfig.from_dict(small_policy_dict(temporal=temporal))
    common = {"steps": 4, "batch_size": 8, "warmup_steps": 1, "log_every": 4, "checkpoint_every": 4}
    tcfg = TrainConfig(**common, threads=1, camera_failure="both", camera_failure_prob=1.0, **options)
    seen: list[torch.Tensor] = []
    original = VLAPolicy.fuse_window

    def spy(self, batch):
        seen.append(batch["images"]["front"].detach().clone())
        return original(self, batch)

    VLAPolicy.fuse_window = spy  # type: ignore[method-assign]
    try:
        result = train(tiny_dataset, run_dir, cfg, tcfg, progress=False)
    finally:
        VLAPolicy.fuse_window = original  # type: ignore[method-assign]
    assert (result.policy_dir / "config.json").is_file() and len(seen) == 4
    x = torch.cat(seen)
    if temporal is None:
        assert x.ndim == 4  # the memoryless policy reads the current frame only
    else:
        assert x.ndim == 5 and x.shape[1] == 3
    return x


@pytest.mark.parametrize("temporal", [None, {"context": 3, "reader": "lstm"}])
def test_trainer_samples_failures_for_memory_and_memoryless_policies(tiny_dataset, tmp_path, temporal):
    x = _front_frames_seen_in_training(tiny_dataset, tmp_path / "run", temporal, camera_failure_window=4)
    flat = x.flatten(1) if temporal is None else x[:, -1].flatten(1)
    assert (flat == 0).all(1).any()  # some current frames are blank (failures after augmentation)


@pytest.mark.parametrize("temporal", [None, {"context": 3, "reader": "lstm"}])
def test_trainer_samples_failures_older_than_the_window(tiny_dataset, tmp_path, temporal):
    """camera_failure_span: failed frames are black or a real earlier frame of the dataset, and some
    memory windows are failed throughout (impossible with in-window failures)."""
    x = _front_frames_seen_in_training(
        tiny_dataset, tmp_path / "run", temporal, camera_failure_span=15, augment_shift=0, augment_jitter=0.0
    )
    frames = x.flatten(0, 1) if temporal else x  # (N, 3, H, W)
    dataset = VLADataset(tiny_dataset, chunk_size=1, progress=False)
    real = dataset.frames("front", np.arange(len(dataset))).float() / 255.0  # (rows, 3, H, W)
    blank = (frames == 0).flatten(1).all(1)
    assert blank.any()
    dist = [float((f.flatten() - real.flatten(1)).abs().amax(1).min()) for f in frames[~blank]]
    assert max(dist) < 1e-6  # every other frame is a dataset frame (current or last good)
    if temporal is not None:
        assert (x.flatten(2) == 0).all(2).all(1).any()  # a window failed throughout


def test_history_dropout_hides_exactly_the_drawn_samples_past():
    """``drop_history`` against a reference: the same uniform draws, applied by hand."""
    mask = torch.ones(64, 4, dtype=torch.bool)
    mask[:8, :2] = False  # episode starts inside the window
    for prob in (0.0, 0.3, 1.0):
        out = drop_history(mask, prob, torch.Generator().manual_seed(5))
        u = torch.rand(64, generator=torch.Generator().manual_seed(5))
        want = mask.clone()
        for b in range(64):
            if float(u[b]) < prob:
                want[b, :3] = False
        assert torch.equal(out, want)
        assert torch.equal(out[:, -1], mask[:, -1])  # the current frame stays valid
    assert 0 < int((~drop_history(mask, 0.3, torch.Generator().manual_seed(5))[8:, 0]).sum()) < 56
    with pytest.raises(ValueError, match="history dropout"):
        drop_history(mask, 1.5, torch.Generator())


def test_trainer_applies_history_dropout_and_needs_a_memory(tiny_dataset, tmp_path):
    cfg = PolicyConfig.from_dict(small_policy_dict(temporal={"context": 3, "reader": "lstm"}))
    tcfg = TrainConfig(steps=2, batch_size=4, warmup_steps=1, log_every=2, threads=1, history_dropout=1.0)
    seen: list[torch.Tensor] = []
    original = VLAPolicy.fuse_window

    def spy(self, batch):
        seen.append(batch["history_mask"].clone())
        return original(self, batch)

    VLAPolicy.fuse_window = spy  # type: ignore[method-assign]
    try:
        train(tiny_dataset, tmp_path / "run", cfg, tcfg, progress=False)
    finally:
        VLAPolicy.fuse_window = original  # type: ignore[method-assign]
    masks = torch.cat(seen)
    assert masks[:, -1].all() and not masks[:, :-1].any()  # every sample: the current frame alone
    memoryless = PolicyConfig.from_dict(small_policy_dict())
    with pytest.raises(ValueError, match="history_dropout needs a temporal memory"):
        train(tiny_dataset, tmp_path / "run2", memoryless, tcfg, progress=False)
    with pytest.raises(ValueError, match="history_dropout"):
        TrainConfig(history_dropout=-0.1)
