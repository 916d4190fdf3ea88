"""The training loop's optimisation glue against hand-worked values: weight-decay groups, gradient
clipping and the EMA of the weights.

One short ``train()`` run is watched from the outside: a recording subclass of the policy keeps the
gradients as backward leaves them (before clipping) and a recording AdamW keeps what it is handed (the
gradients after clipping, the groups) and the weights after each step. The references are computed here
in float64: ``g * min(1, c / (|g| + 1e-6))`` for clipping, ``e <- d e + (1 - d) w`` for the EMA, and
AdamW's decoupled decay ``w <- w (1 - lr wd)`` on a toy module whose groups are listed by hand.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from vla_testdata import small_policy_dict

import mmvla.training.trainer as train_module
from mmvla.core.logs import read_log
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.training.config import TrainConfig
from mmvla.training.trainer import param_groups, train

CLIP, DECAY, WD, STEPS = 0.01, 0.75, 0.123, 3  # DECAY != 0.5: d and 1 - d must differ


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.embed = nn.Embedding(5, 4)
        self.scale = nn.Parameter(torch.ones(()))
        self.frozen = nn.Parameter(torch.ones(2, 2), requires_grad=False)


def test_weight_decay_groups_on_a_module_listed_by_hand():
    toy = _Toy()
    groups = param_groups(toy, 0.5)
    names = {id(p): n for n, p in toy.named_parameters()}
    by_decay = {g["weight_decay"]: sorted(names[id(p)] for p in g["params"]) for g in groups}
    assert by_decay == {
        0.5: ["embed.weight", "linear.weight"],
        0.0: ["linear.bias", "norm.bias", "norm.weight", "scale"],
    }
    # AdamW with zero gradients moves nothing but the decayed weights: w <- w * (1 - lr * wd).
    before = {n: p.detach().double().clone() for n, p in toy.named_parameters()}
    for p in toy.parameters():
        p.grad = torch.zeros_like(p)
    torch.optim.AdamW(groups, lr=0.1).step()
    for n, p in toy.named_parameters():
        factor = 1 - 0.1 * 0.5 if n in by_decay[0.5] else 1.0
        torch.testing.assert_close(p.detach().double(), before[n] * factor, rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def watched_run(tiny_dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 3-step run with EMA 0.75, clipping at 0.01 and weight decay 0.123, watched from the outside."""
    seen: dict[str, Any] = {"policy": [], "raw": [], "clipped": [], "after": [], "groups": None}

    class RecordingPolicy(VLAPolicy):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            seen["policy"].append(self)
            self._raw: dict[str, torch.Tensor] = {}
            for name, p in self.named_parameters():
                p.register_post_accumulate_grad_hook(
                    lambda p, name=name: self._raw.__setitem__(name, p.grad.detach().double().clone())
                )

    class RecordingAdamW(torch.optim.AdamW):
        def __init__(self, params: Any, **kwargs: Any) -> None:
            super().__init__(params, **kwargs)
            policy = seen["policy"][0]
            self.names = {id(p): n for n, p in policy.named_parameters()}
            seen["groups"] = [
                (g["weight_decay"], sorted(self.names[id(p)] for p in g["params"])) for g in self.param_groups
            ]
            seen["initial"] = {n: p.detach().double().clone() for n, p in policy.named_parameters()}

        def step(self, closure: Any = None) -> Any:
            policy = seen["policy"][0]
            seen["raw"].append(dict(policy._raw))
            seen["clipped"].append(
                {
                    self.names[id(p)]: p.grad.detach().double().clone()
                    for g in self.param_groups
                    for p in g["params"]
                }
            )
            out = super().step(closure)
            seen["after"].append({n: p.detach().double().clone() for n, p in policy.named_parameters()})
            return out

    mp = pytest.MonkeyPatch()
    mp.setattr(train_module, "VLAPolicy", RecordingPolicy)
    mp.setattr(torch.optim, "AdamW", RecordingAdamW)
    try:
        cfg = TrainConfig(
            steps=STEPS,
            batch_size=4,
            warmup_steps=1,
            lr=1e-2,
            ema_decay=DECAY,
            grad_clip=CLIP,
            weight_decay=WD,
            log_every=1,
            checkpoint_every=100,
            device="cpu",
            threads=1,
        )
        out = tmp_path_factory.mktemp("optim") / "run"
        train(tiny_dataset, out, PolicyConfig.from_dict(small_policy_dict()), cfg, progress=False)
    finally:
        mp.undo()
    seen["run"] = out
    return seen


def test_training_uses_the_configured_decay_groups(watched_run):
    groups = dict(watched_run["groups"])
    assert set(groups) == {WD, 0.0}
    decayed, plain = set(groups[WD]), set(groups[0.0])
    policy = watched_run["policy"][0]
    assert decayed | plain == {n for n, p in policy.named_parameters() if p.requires_grad}
    # Matrices decay; biases and LayerNorm gains do not (found by module type and name, not by rank).
    norms = {
        f"{mn}.{pn}"
        for mn, m in policy.named_modules()
        if isinstance(m, nn.LayerNorm)
        for pn, _ in m.named_parameters(recurse=False)
    }
    biases = {n for n, _ in policy.named_parameters() if n.endswith(".bias")}
    assert norms and biases and norms | biases <= plain
    assert "camera_embed" in decayed  # (C, D): a matrix
    assert any(n.endswith("weight") and n.startswith("head.") for n in decayed)


def test_gradients_are_clipped_to_the_configured_norm(watched_run):
    assert len(watched_run["raw"]) == len(watched_run["clipped"]) == STEPS
    log = read_log(watched_run["run"] / "log.csv")
    for step, (raw, clipped) in enumerate(zip(watched_run["raw"], watched_run["clipped"], strict=True)):
        norm = math.sqrt(sum(float(g.square().sum()) for g in raw.values()))
        assert norm > 10 * CLIP  # clipping is active in this run
        assert log["grad_norm"][step] == pytest.approx(norm, rel=1e-4)  # the log reports the raw norm
        factor = min(1.0, CLIP / (norm + 1e-6))
        assert set(clipped) == set(raw)
        for name, g in raw.items():
            torch.testing.assert_close(clipped[name], g * factor, rtol=1e-5, atol=1e-12, msg=name)


def test_ema_is_the_decayed_average_of_the_weights(watched_run):
    ema = {n: p.detach().double().clone() for n, p in watched_run["initial"].items()}  # e_0 = w_0
    for after in watched_run["after"]:
        for n in ema:
            ema[n] = DECAY * ema[n] + (1 - DECAY) * after[n]
    saved = load_file(str(Path(watched_run["run"]) / "policy" / "model.safetensors"))
    last = watched_run["after"][-1]
    assert max(float((ema[n] - last[n]).abs().max()) for n in ema) > 1e-4  # EMA != the last weights
    for n, want in ema.items():
        torch.testing.assert_close(saved[n].double(), want, rtol=1e-5, atol=1e-7, msg=n)
