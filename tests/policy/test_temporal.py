"""A policy with temporal memory: trains on history windows and acts with the same window at run time."""

from __future__ import annotations

import numpy as np
import torch
from vla_testdata import small_policy_dict

from mmvla.data.dataset import VLADataset
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.training.trainer import dataset_normalizer


def _policy(dataset, temporal):
    cfg = PolicyConfig.from_dict(small_policy_dict(temporal=temporal, camera_dropout=0.0))
    torch.manual_seed(0)
    return VLAPolicy(cfg, dataset_normalizer(dataset, cfg))


def test_fresh_memory_policy_equals_its_memoryless_twin(tiny_dataset):
    ds = VLADataset(tiny_dataset, chunk_size=3, history=3, progress=False)
    mem = _policy(ds, {"context": 4, "reader": "lstm"}).eval()
    plain = _policy(ds, None).eval()
    plain.load_state_dict({k: v for k, v in mem.state_dict().items() if not k.startswith("memory")})
    batch = ds.get_batch(np.arange(4))
    with torch.no_grad():
        a = mem.fuse_window(batch).pooled
        last = {c: x[:, -1] for c, x in batch["images"].items()}
        b = plain.fuse(last, batch["instruction"], batch["state"][:, -1]).pooled
    torch.testing.assert_close(a, b)


def test_training_reaches_the_memory_and_act_matches_the_window(tiny_dataset):
    ds = VLADataset(tiny_dataset, chunk_size=3, history=2, progress=False)
    policy = _policy(ds, {"context": 3, "reader": "attention", "num_heads": 2}).train()
    opt = torch.optim.SGD(policy.parameters(), lr=0.1)
    for _ in range(2):  # the zero-initialised projection passes gradient to the memory from step 2
        opt.zero_grad()
        loss, _ = policy(ds.get_batch(np.arange(8)))
        loss.backward()
        opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.memory.parameters())
    # Closed loop over the first 3 frames of episode 0 == the training-time window read at frame 2.
    rows = ds.episode_rows(0)
    batch = ds.get_batch([rows.start + 2])
    with torch.no_grad():
        want = policy.eval()._decode(policy.fuse_window(batch))[0, 0].numpy()
    policy.reset(chunk_mode="ensemble")
    for t in range(3):
        i = rows.start + t
        obs = {c: ds.images[c][i].transpose(1, 2, 0) for c in ds.cameras}
        obs.update(state=ds.state[i], instruction=ds.tasks[int(ds.task_index[i])])
        policy._chunker.reset()  # so the action is this step's chunk[0], not an ensemble
        action = policy.act(obs)
    np.testing.assert_allclose(action, want, rtol=1e-5, atol=1e-5)


def test_detached_history_fuses_the_same_window_with_gradient_from_the_current_frame_only(tiny_dataset):
    ds = VLADataset(tiny_dataset, chunk_size=3, history=3, progress=False)
    full = _policy(ds, {"context": 4, "reader": "lstm"}).eval()
    detached = _policy(ds, {"context": 4, "reader": "lstm", "history_grad": False}).eval()
    with torch.no_grad():  # past the zero-initialised projection, so the memory reaches the output
        full.memory_proj.weight.normal_(0.0, 0.1)
    detached.load_state_dict(full.state_dict())
    batch = ds.get_batch(np.arange(4))
    out = {}
    for name, m in (("full", full), ("detached", detached)):
        m.zero_grad()
        m.fuse_window(batch).pooled.square().sum().backward()
        out[name] = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    # The memory reader and its projection see the same values and the same upstream gradient ...
    for n in out["full"]:
        if n.startswith(("memory.", "memory_proj.")):
            torch.testing.assert_close(out["detached"][n], out["full"][n])
    # ... while the encoders get gradient from fewer frames (the current one), so it must differ.
    shared = [n for n in out["full"] if n.startswith("vision.") and n in out["detached"]]
    assert shared and any(not torch.allclose(out["full"][n], out["detached"][n]) for n in shared)
    # Values: the same window as the fully differentiated path.
    with torch.no_grad():
        torch.testing.assert_close(detached.fuse_window(batch).pooled, full.fuse_window(batch).pooled)
