"""VisionTrace: the traced encoder answers bit for bit as the eager one, for every encoder kind and batch
size (one graph per image shape), and training or autograd calls never reach a graph."""

from __future__ import annotations

import itertools

import pytest
import torch
from test_vision import CASES, _ids  # same directory (rootdir-relative imports)

from mmvla.modules.vision import VisionConfig, VisionOutput, build_vision_encoder
from mmvla.modules.vision_trace import MIN_SPLIT_IMAGES, VisionTrace


def _assert_identical(a: VisionOutput, b: VisionOutput) -> None:
    assert a.grids == b.grids
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.pooled, b.pooled)
    assert (a.keypoints is None) == (b.keypoints is None)
    if a.keypoints is not None and b.keypoints is not None:
        assert torch.equal(a.keypoints, b.keypoints)


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])  # type: ignore[arg-type]
def test_traced_equals_eager_for_every_batch_size(case: tuple[str, dict[str, object]]) -> None:
    kind, kw = case
    torch.manual_seed(0)
    enc = build_vision_encoder(VisionConfig(kind=kind, dim=32, num_keypoints=4, **kw)).eval()  # type: ignore[arg-type]
    trace = VisionTrace(enc)
    with torch.inference_mode():
        for b, hw in ((3, (64, 64)), (1, (64, 64)), (5, (64, 64)), (2, (96, 64))):
            images = torch.rand(b, 3, *hw)
            cond = torch.randn(b, 32) if kw.get("condition") else None
            _assert_identical(trace(images, cond), enc(images, cond))
    assert [k[:3] for k in trace._graphs] == [(3, 64, 64), (3, 96, 64)]  # one graph per image shape
    assert all(g is not None for g in trace._graphs.values())  # every case really ran traced


def test_graphs_follow_in_place_weight_updates() -> None:
    torch.manual_seed(0)
    enc = build_vision_encoder(VisionConfig(kind="cnn", dim=32)).eval()
    trace = VisionTrace(enc)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = trace(images).pooled
        enc.load_state_dict({k: v * 1.5 for k, v in enc.state_dict().items()})
        after = trace(images)
        _assert_identical(after, enc(images))
    assert not torch.equal(before, after.pooled)


def test_training_and_autograd_stay_eager() -> None:
    torch.manual_seed(0)
    enc = build_vision_encoder(VisionConfig(kind="cnn", dim=32))
    trace = VisionTrace(enc)
    images = torch.rand(2, 3, 64, 64)
    out = trace(images)  # training mode, grad enabled
    assert out.pooled.requires_grad and not trace._graphs
    enc.eval()
    assert trace(images).pooled.requires_grad and not trace._graphs  # eval, but autograd on
    with torch.no_grad():
        trace(images)
    assert len(trace._graphs) == 1


def test_a_differing_graph_falls_back_to_eager(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    enc = build_vision_encoder(VisionConfig(kind="cnn", dim=32)).eval()
    trace = VisionTrace(enc)
    images = torch.rand(2, 3, 64, 64)

    def wrong(images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = enc(images)
        return out.tokens, out.pooled + 1.0, out.keypoints

    with torch.no_grad():
        trace(images)
        key = next(iter(trace._graphs))
        trace._graphs[key] = wrong
        trace._checked.clear()  # a batch size not compared yet
        _assert_identical(trace(images), enc(images))
    assert trace._graphs[key] is None and "differs from eager" in caplog.text


def test_prepare_traces_and_checks_every_batch_size_ahead() -> None:
    torch.manual_seed(0)
    enc = build_vision_encoder(VisionConfig(kind="cnn", dim=32, condition=True)).eval()
    trace = VisionTrace(enc)
    trace.prepare((64, 64), [2, 4, 6], cond_dim=32)
    assert len(trace._graphs) == 1 and {k[0] for k in trace._checked} == {2, 4, 6}
    images, cond = torch.rand(4, 3, 64, 64), torch.randn(4, 32)
    with torch.no_grad():
        _assert_identical(trace(images, cond), enc(images, cond))


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("condition", [False, True])
def test_threads_split_a_large_batch_into_slices_computed_at_once(threads: int, condition: bool) -> None:
    torch.manual_seed(0)
    enc = build_vision_encoder(VisionConfig(kind="cnn", dim=32, num_keypoints=4, condition=condition)).eval()
    trace = VisionTrace(enc, threads=threads)
    B = MIN_SPLIT_IMAGES + 3
    images = torch.rand(B, 3, 64, 64)
    cond = torch.randn(B, 32) if condition else None
    bounds = [B * k // threads for k in range(threads + 1)]
    for mode in (torch.inference_mode, torch.no_grad):
        with mode():
            out = trace(images, cond)
            # Exactly the eager encoder on each slice, concatenated; and the whole batch's values.
            parts = [
                enc(images[a:b], None if cond is None else cond[a:b]) for a, b in itertools.pairwise(bounds)
            ]
            whole = enc(images, cond)
        assert torch.equal(out.pooled, torch.cat([p.pooled for p in parts]))
        assert torch.equal(out.tokens, torch.cat([p.tokens for p in parts]))
        assert out.keypoints is not None and whole.keypoints is not None
        assert torch.equal(out.keypoints, torch.cat([p.keypoints for p in parts]))  # type: ignore[misc]
        torch.testing.assert_close(out.pooled, whole.pooled, rtol=1e-5, atol=1e-6)
        assert out.grids == whole.grids and not out.pooled.requires_grad
    # Every slice ran through a graph (one per image shape), checked at its own batch size.
    assert all(g is not None for g in trace._graphs.values())
    assert {k[0] for k in trace._checked} == {b - a for a, b in itertools.pairwise(bounds)}


def test_small_batches_stay_in_one_slice_and_threads_are_validated() -> None:
    enc = build_vision_encoder(VisionConfig(kind="cnn", dim=32)).eval()
    trace = VisionTrace(enc, threads=2)
    with torch.no_grad():
        trace(torch.rand(MIN_SPLIT_IMAGES - 1, 3, 64, 64))
    assert {k[0] for k in trace._checked} == {MIN_SPLIT_IMAGES - 1}
    with pytest.raises(ValueError, match="threads must be >= 1"):
        VisionTrace(enc, threads=0)
