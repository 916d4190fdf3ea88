"""TemporalMemory: per-row history, resets of exactly one row, step == read, LSTM against nn.LSTM."""

from __future__ import annotations

import pytest
import torch

from mmvla.modules.memory import MemoryConfig, TemporalMemory

B, D, K, T = 3, 16, 4, 7
READERS = ["lstm", "attention"]


def make(reader: str, num_layers: int = 2) -> TemporalMemory:
    torch.manual_seed(0)
    return TemporalMemory(MemoryConfig(dim=D, context=K, reader=reader, num_layers=num_layers)).eval()


def rollout(mem: TemporalMemory, xs: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """xs (T, B, D), starts (T, B) bool -> (T, B, D) outputs of mem.step."""
    mem.reset()
    with torch.no_grad():
        return torch.stack([mem.step(x, s) for x, s in zip(xs, starts, strict=True)])


def first_step_only(t: int = T) -> torch.Tensor:
    s = torch.zeros(t, B, dtype=torch.bool)
    s[0] = True
    return s


@pytest.mark.parametrize("reader", READERS)
def test_rows_never_see_each_other(reader: str) -> None:
    mem = make(reader)
    xs = torch.randn(T, B, D)
    a = rollout(mem, xs, first_step_only())
    xs2 = xs.clone()
    xs2[:, 1] = torch.randn(T, D) * 10  # change row 1's whole history
    b = rollout(mem, xs2, first_step_only())
    torch.testing.assert_close(a[:, [0, 2]], b[:, [0, 2]], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 1], b[:, 1])


@pytest.mark.parametrize("reader", READERS)
def test_reset_clears_exactly_one_row(reader: str) -> None:
    mem = make(reader)
    xs = torch.randn(T, B, D)
    starts = first_step_only()
    base = rollout(mem, xs, starts)
    reset_at = 3
    starts2 = starts.clone()
    starts2[reset_at, 1] = True  # row 1 starts a new episode at step 3
    out = rollout(mem, xs, starts2)
    # other rows: unchanged
    torch.testing.assert_close(out[:, [0, 2]], base[:, [0, 2]], atol=1e-6, rtol=0)
    # row 1 before the reset: unchanged; after: as a fresh memory fed only its post-reset inputs
    torch.testing.assert_close(out[:reset_at, 1], base[:reset_at, 1], atol=1e-6, rtol=0)
    fresh = TemporalMemory(mem.cfg).eval()
    fresh.load_state_dict(mem.state_dict())
    post = xs[reset_at:, 1:2]  # (T - 3, 1, D)
    ref = rollout(fresh, post, first_step_only(T - reset_at)[:, :1])
    torch.testing.assert_close(out[reset_at:, 1], ref[:, 0], atol=1e-6, rtol=0)
    assert not torch.allclose(out[reset_at:, 1], base[reset_at:, 1])


@pytest.mark.parametrize("reader", READERS)
def test_step_equals_read_on_windows(reader: str) -> None:
    """The stateful path equals the functional reader on left-padded training windows."""
    mem = make(reader)
    xs = torch.randn(T, B, D)
    out = rollout(mem, xs, first_step_only())
    for t in range(T):
        lo = max(0, t - K + 1)
        window = torch.zeros(B, K, D)
        valid = torch.zeros(B, K, dtype=torch.bool)
        n = t - lo + 1
        window[:, K - n :] = xs[lo : t + 1].transpose(0, 1)
        valid[:, K - n :] = True
        with torch.no_grad():
            torch.testing.assert_close(mem.read(window, valid), out[t], atol=1e-6, rtol=0)


@pytest.mark.parametrize("reader", READERS)
def test_invalid_entries_never_matter(reader: str) -> None:
    mem = make(reader)
    hist = torch.randn(B, K, D)
    valid = torch.ones(B, K, dtype=torch.bool)
    valid[0, :2] = False
    valid[1, :3] = False
    hist2 = hist.clone()
    hist2[~valid] = 1e3
    with torch.no_grad():
        a, b = mem.read(hist, valid), mem.read(hist2, valid)
        short = mem.read(hist[1:2, 3:], valid[1:2, 3:])  # the valid suffix alone, K' = 1
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    torch.testing.assert_close(a[1:2], short, atol=1e-6, rtol=0)
    empty = mem.read(hist, torch.zeros(B, K, dtype=torch.bool))
    assert torch.isfinite(empty).all()


def test_lstm_reader_matches_nn_lstm() -> None:
    """Independent reference: torch's nn.LSTM on the valid suffix, same weights."""
    mem = make("lstm", num_layers=2)
    ref = torch.nn.LSTM(D, D, num_layers=2, batch_first=True)
    with torch.no_grad():
        for i, cell in enumerate(mem.cells):
            getattr(ref, f"weight_ih_l{i}").copy_(cell.weight_ih)
            getattr(ref, f"weight_hh_l{i}").copy_(cell.weight_hh)
            getattr(ref, f"bias_ih_l{i}").copy_(cell.bias_ih)
            getattr(ref, f"bias_hh_l{i}").copy_(cell.bias_hh)
        hist = torch.randn(2, K, D)
        valid = torch.tensor([[False, True, True, True], [True, True, True, True]])
        out = mem.read(hist, valid)
        expect0 = ref(hist[0:1, 1:])[0][:, -1]
        expect1 = ref(hist[1:2])[0][:, -1]
    torch.testing.assert_close(out, torch.cat([expect0, expect1]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("reader", READERS)
def test_gradients_reach_every_parameter(reader: str) -> None:
    mem = make(reader).train()
    hist = torch.randn(B, K, D)
    valid = torch.ones(B, K, dtype=torch.bool)
    valid[0, 0] = False
    (mem.read(hist, valid) * torch.randn(B, D)).sum().backward()
    dead = [n for n, p in mem.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead


def test_validation() -> None:
    with pytest.raises(ValueError, match="reader"):
        MemoryConfig(reader="gru")
    mem = make("lstm")
    with pytest.raises(ValueError, match="history"):
        mem.read(torch.randn(B, K + 1, D), torch.ones(B, K + 1, dtype=torch.bool))
    mem.step(torch.randn(B, D), torch.ones(B, dtype=torch.bool))
    with pytest.raises(ValueError, match="reset"):
        mem.step(torch.randn(B + 1, D), torch.ones(B + 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="episode_start"):
        mem.step(torch.randn(B, D), torch.ones(B))
