"""The policy's glue checked against independent references, not against itself.

- encode: the language keep-mask the fusion sees is the tokenizer's word count (counted here by hand),
  and a batch of instructions of different lengths gives every row exactly the action it gets alone;
- decode: actions are the head's normalised output un-normalised with the dataset's stats.json (read
  here with ``json``, computed in float64), then clipped to [-1, 1];
- heads: each head's loss is the masked mean over valid chunk steps (hand-computed), and the flow head
  gives the same chunk whether masked fused tokens are present or removed from the sequence.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from vla_testdata import small_policy_dict

from mmvla.data.dataset import VLADataset
from mmvla.modules.fusion import FusionOutput, available_fusions
from mmvla.modules.heads import HeadConfig, build_head
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.training.trainer import dataset_normalizer

# Three lengths: 7, 5 and 3 words (the last has an unknown word, still one token per word).
MIXED = ("push the green slab to the left", "pick up the red cube", "pick the cube")


@pytest.fixture(scope="module")
def dataset(tiny_dataset) -> VLADataset:
    return VLADataset(tiny_dataset, chunk_size=3, progress=False)


def _policy(dataset: VLADataset, **overrides: object) -> VLAPolicy:
    """A small policy (seed 0, eval mode) normalised with the dataset's statistics."""
    cfg = PolicyConfig.from_dict(small_policy_dict(**overrides))
    torch.manual_seed(0)
    policy = VLAPolicy(cfg, dataset_normalizer(dataset, cfg))
    return policy.eval()


def _batch(dataset, n: int):
    b = dataset.get_batch(np.arange(n))
    return b["images"], b["state"]


def test_language_mask_is_the_word_count(dataset):
    policy = _policy(dataset, fusion="cross_attention")
    images, state = _batch(dataset, len(MIXED))
    x = policy.encode(images, list(MIXED), state)
    lengths = [len(t.split()) for t in MIXED]  # the reference: words per instruction
    L = max(lengths)
    want = torch.tensor([[True] + [j < n for j in range(L)] for n in lengths])  # summary, then words
    assert torch.equal(x.masks["language"], want)
    assert x.tokens["language"].shape[:2] == (len(MIXED), 1 + L)
    # Padded word slots carry nothing (the encoder's contract, which the mask must agree with).
    assert torch.all(x.tokens["language"][~want] == 0)


@pytest.mark.parametrize("fusion", available_fusions())
def test_mixed_length_batch_gives_each_row_its_own_action(dataset, fusion):
    policy = _policy(dataset, fusion=fusion, fusion_options={"num_heads": 2, "num_layers": 1})
    images, state = _batch(dataset, len(MIXED))
    batched, _ = policy.predict_chunk(images, list(MIXED), state)  # (B, k, A)
    for i, text in enumerate(MIXED):
        alone, _ = policy.predict_chunk(
            {c: v[i : i + 1] for c, v in images.items()}, [text], state[i : i + 1]
        )
        torch.testing.assert_close(batched[i : i + 1], alone, atol=2e-5, rtol=1e-4, msg=f"row {i}: {text!r}")
    # ... and the words matter: the same row with another instruction of the same length moves.
    other, _ = policy.predict_chunk(
        {c: v[1:2] for c, v in images.items()}, ["pick up the blue cylinder"], state[1:2]
    )
    if fusion != "film":  # FiLM starts as the identity on vision: language has no effect before training
        assert (other - batched[1:2]).abs().max() > 1e-6


def _stats(root) -> dict:
    return json.loads((root / "meta" / "stats.json").read_text())


@pytest.mark.parametrize(
    ("head", "mode"), [("regression", "mean_std"), ("bins", "min_max"), ("flow", "mean_std")]
)
def test_decode_is_the_datasets_unnormalisation(dataset, tiny_dataset, head, mode):
    spec = {"kind": head, "chunk_size": 3, "hidden": 32, "flow_steps": 2}
    policy = _policy(dataset, head=spec)
    assert policy.cfg.effective_action_norm() == mode
    # Give the head a large output so the un-normalisation (and the clip) are visible in every dimension.
    with torch.no_grad():
        for p in policy.head.parameters():
            p.mul_(3.0)
    images, state = _batch(dataset, 4)
    texts = ["pick up the red cube"] * 4
    with torch.no_grad():
        fused = policy.fuse(images, texts, state)
        pred = policy.head.predict(fused, generator=torch.Generator().manual_seed(5)).double().numpy()
    got, _ = policy.predict_chunk(images, texts, state, generator=torch.Generator().manual_seed(5))
    s = {k: np.asarray(v, dtype=np.float64) for k, v in _stats(tiny_dataset)["action"].items()}
    if mode == "mean_std":
        shift, scale = s["mean"], np.maximum(s["std"], 1e-3)
    else:
        shift, scale = (s["max"] + s["min"]) / 2, np.maximum((s["max"] - s["min"]) / 2, 1e-3)
    want = np.clip(pred * scale + shift, -1.0, 1.0)  # (B, k, A)
    assert np.any(np.abs(scale - 1) > 0.05) and np.any(np.abs(shift) > 0.05)  # not an identity
    np.testing.assert_allclose(got.double().numpy(), want, atol=1e-5)
    assert np.any(np.abs(want) < 0.99)  # not every value is at the clip
    # act() (execute mode, no safety layer) returns the first action of that chunk.
    policy.safety = None
    policy.reset("execute")
    obs = {c: images[c][0].permute(1, 2, 0).numpy() for c in policy.cfg.cameras}
    obs.update(state=state[0].numpy(), instruction=texts[0])
    torch.manual_seed(9)
    first = policy.act(obs)
    torch.manual_seed(9)
    with torch.no_grad():
        pred0 = policy.head.predict(policy.fuse({c: images[c][:1] for c in images}, texts[:1], state[:1]))
    np.testing.assert_allclose(first, np.clip(pred0[0, 0].double().numpy() * scale + shift, -1, 1), atol=1e-5)


# ------------------------------------------------------------------------------------------- heads
B, N, D, K, A = 3, 6, 16, 4, 7


def _fused(seed: int = 0) -> FusionOutput:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[0, 4:] = False
    mask[2, 1:3] = False
    return FusionOutput(
        tokens=torch.randn(B, N, D, generator=g),
        mask=mask,
        pooled=torch.randn(B, D, generator=g),
        aux_loss=torch.zeros(()),
    )


STEP_MASK = torch.tensor([[True, True, False, False], [True, False, False, False], [True, True, True, True]])


def _reference_loss(kind: str, head, fused: FusionOutput, target: torch.Tensor, seed: int) -> float:
    """The per-element loss computed here in float64 and averaged over valid steps with a Python loop."""
    if kind == "regression":
        per = (head.predict(fused).double() - target.double()).abs()  # (B, k, A), L1
    elif kind == "bins":
        r, n = head.cfg.bin_range, head.cfg.num_bins
        idx = np.rint((target.double().clamp(-r, r).numpy() + r) / (2 * r) * (n - 1)).astype(int)
        logp = F.log_softmax(head.logits(fused).double(), dim=-1).numpy()  # (B, k, A, n)
        per = torch.from_numpy(-np.take_along_axis(logp, idx[..., None], axis=-1)[..., 0])
    else:  # flow: the same draws as the head (x0 ~ N, then t ~ U) from the seeded global generator
        torch.manual_seed(seed)
        x0 = torch.randn_like(target)
        t = torch.rand(B)
        xt = (1 - t)[:, None, None] * x0 + t[:, None, None] * target
        per = (head.velocity(xt, t, fused).double() - (target - x0).double()) ** 2
    total, count = 0.0, 0
    for b in range(B):
        for j in range(K):
            if STEP_MASK[b, j]:
                total += float(per[b, j].sum())
                count += A
    return total / count


@pytest.mark.parametrize("kind", ["regression", "bins", "flow"])
def test_head_loss_is_the_mean_over_valid_steps(kind):
    torch.manual_seed(0)
    head = build_head(HeadConfig(kind=kind, dim=D, action_dim=A, chunk_size=K, hidden=32, num_bins=11))
    fused = _fused()
    target = torch.rand(B, K, A, generator=torch.Generator().manual_seed(1)) * 1.8 - 0.9
    with torch.no_grad():
        torch.manual_seed(4)
        got = float(head.loss(fused, target, STEP_MASK))
        want = _reference_loss(kind, head, fused, target, seed=4)
    assert got == pytest.approx(want, rel=1e-5)
    if kind == "flow":
        return  # the noisy chunk's masked steps reach valid ones through the action self-attention
    # Targets of masked steps are never read.
    other = target.clone()
    other[~STEP_MASK] = 50.0
    with torch.no_grad():
        torch.manual_seed(4)
        assert float(head.loss(fused, other, STEP_MASK)) == pytest.approx(got, rel=1e-6)


def test_flow_head_reads_only_kept_fused_tokens():
    torch.manual_seed(0)
    head = build_head(
        HeadConfig(kind="flow", dim=D, action_dim=A, chunk_size=K, hidden=32, flow_steps=3)
    ).eval()
    fused = _fused()
    with torch.no_grad():
        full = head.predict(fused, generator=torch.Generator().manual_seed(2))
        garbage = FusionOutput(
            tokens=torch.where(fused.mask[..., None], fused.tokens, torch.full_like(fused.tokens, 1e3)),
            mask=fused.mask,
            pooled=fused.pooled,
            aux_loss=fused.aux_loss,
        )
        torch.testing.assert_close(head.predict(garbage, generator=torch.Generator().manual_seed(2)), full)
        # Reference: each row alone, its masked tokens removed from the sequence altogether.
        for b in range(B):
            keep = fused.mask[b]
            row = FusionOutput(
                tokens=fused.tokens[b : b + 1, keep],
                mask=torch.ones(1, int(keep.sum()), dtype=torch.bool),
                pooled=fused.pooled[b : b + 1],
                aux_loss=fused.aux_loss,
            )
            g = torch.Generator().manual_seed(2)
            noise = torch.randn(B, K, A, generator=g)  # the batch's draw; row b's slice is its start
            x = noise[b : b + 1]
            dt = 1.0 / head.cfg.flow_steps
            for i in range(head.cfg.flow_steps):
                x = x + dt * head.velocity(x, torch.full((1,), i * dt), row)
            torch.testing.assert_close(full[b : b + 1], x, atol=1e-5, rtol=1e-4)
