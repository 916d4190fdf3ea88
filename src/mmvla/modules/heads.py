"""Action heads: map fused features to a chunk of k future actions (in normalised units).

Every head shares one interface so a policy swaps them by name:

    loss(fused, target, mask) -> scalar      target (B, k, A) normalised, mask (B, k) True = valid
    predict(fused, generator=None) -> (B, k, A)

``regression`` (MSE/L1, the design source's choice), ``bins`` (256 bins per dimension with
cross-entropy, RT-1/OpenVLA style) and ``flow`` (a flow-matching action expert over the chunk,
conditioned on the fused tokens, π₀/SmolVLA style).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmvla.core.registry import Registry
from mmvla.modules.fusion.base import FusionOutput

# kind -> head class, filled by the @ACTION_HEADS.register decorators below.
ACTION_HEADS: Registry[type[ActionHead]] = Registry("action head")


@dataclass
class HeadConfig:
    """Action-head hyper-parameters.

    Attributes:
        kind: "regression", "bins" or "flow".
        dim: width D of the fused features.
        action_dim: A, numbers per action.
        chunk_size: k, future actions predicted at once (action chunking).
        hidden: MLP hidden width.
        loss: "mse" or "l1" (regression only).
        num_bins: bins per dimension over [-bin_range, bin_range] (bins only).
        bin_range: half-width of the binned interval in normalised units (bins only).
        flow_steps: Euler integration steps at run time (flow only; may be changed after training).
        flow_layers: cross-attention blocks of the flow action expert.
    """

    kind: str = "regression"
    dim: int = 128
    action_dim: int = 7
    chunk_size: int = 4
    hidden: int = 256
    loss: str = "l1"
    num_bins: int = 256
    bin_range: float = 1.0
    flow_steps: int = 10
    flow_layers: int = 2

    def __post_init__(self) -> None:
        if self.kind not in ACTION_HEADS:
            raise ValueError(
                f"HeadConfig.kind: unknown action head {self.kind!r}; available: {', '.join(ACTION_HEADS)}"
            )
        if self.loss not in ("mse", "l1"):
            raise ValueError(f"HeadConfig.loss must be 'mse' or 'l1', got {self.loss!r}")
        for name in ("dim", "action_dim", "chunk_size", "hidden", "flow_steps", "flow_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"HeadConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_bins < 2 or self.bin_range <= 0:
            raise ValueError(
                f"HeadConfig: need num_bins >= 2 and bin_range > 0, got {self.num_bins}, {self.bin_range}"
            )


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, d_out)
    )


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of per-element losses x (B, k, ...) over valid chunk steps mask (B, k)."""
    while mask.dim() < x.dim():
        mask = mask.unsqueeze(-1)
    w = mask.to(x.dtype).expand_as(x)
    return (x * w).sum() / w.sum().clamp_min(1.0)


class ActionHead(nn.Module):
    """Base class of the action heads."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def loss(self, fused: FusionOutput, target: Tensor, mask: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def predict(
        self, fused: FusionOutput, generator: torch.Generator | None = None
    ) -> Tensor:  # pragma: no cover
        raise NotImplementedError


@ACTION_HEADS.register("regression")
class RegressionHead(ActionHead):
    """MLP on the pooled fused vector: (B, D) -> (B, k, A), trained with MSE or L1."""

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__(cfg)
        self.mlp = _mlp(cfg.dim, cfg.hidden, cfg.chunk_size * cfg.action_dim)

    def predict(self, fused: FusionOutput, generator: torch.Generator | None = None) -> Tensor:
        B = fused.pooled.shape[0]
        return self.mlp(fused.pooled).view(B, self.cfg.chunk_size, self.cfg.action_dim)  # (B, k, A)

    def loss(self, fused: FusionOutput, target: Tensor, mask: Tensor) -> Tensor:
        pred = self.predict(fused)
        err = F.mse_loss(pred, target, reduction="none") if self.cfg.loss == "mse" else (pred - target).abs()
        return _masked_mean(err, mask)


@ACTION_HEADS.register("bins")
class BinsHead(ActionHead):
    """Each action dimension discretised into ``num_bins`` uniform bins over [-r, r]; cross-entropy.

    Decoding takes the expected bin centre under the softmax (smooth, and exact for a one-hot).
    """

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__(cfg)
        self.mlp = _mlp(cfg.dim, cfg.hidden, cfg.chunk_size * cfg.action_dim * cfg.num_bins)
        r, n = cfg.bin_range, cfg.num_bins
        self.centres: Tensor
        self.register_buffer("centres", torch.linspace(-r, r, n), persistent=False)  # (n,)

    def logits(self, fused: FusionOutput) -> Tensor:
        """(B, k, A, num_bins) logits."""
        B = fused.pooled.shape[0]
        c = self.cfg
        return self.mlp(fused.pooled).view(B, c.chunk_size, c.action_dim, c.num_bins)

    def to_bins(self, x: Tensor) -> Tensor:
        """Normalised values (...) -> nearest bin index (...) long, values beyond ±r clipped."""
        r, n = self.cfg.bin_range, self.cfg.num_bins
        idx = torch.round((x.clamp(-r, r) + r) / (2 * r) * (n - 1))
        return idx.long()

    def predict(self, fused: FusionOutput, generator: torch.Generator | None = None) -> Tensor:
        probs = self.logits(fused).float().softmax(-1)  # (B, k, A, n)
        return probs @ self.centres  # (B, k, A)

    def loss(self, fused: FusionOutput, target: Tensor, mask: Tensor) -> Tensor:
        logits = self.logits(fused).float()
        ce = F.cross_entropy(logits.flatten(0, 2), self.to_bins(target).flatten(), reduction="none")
        return _masked_mean(ce.view(target.shape), mask)


def _time_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of flow time t (B,) in [0, 1] -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    ang = t.float()[:, None] * freqs[None] * 1000.0
    emb = torch.cat([ang.sin(), ang.cos()], dim=-1)
    return F.pad(emb, (0, dim - emb.shape[-1]))


class _FlowBlock(nn.Module):
    """Action tokens attend to themselves, then to the fused tokens; each with a pre-norm residual."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm3 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, ctx: Tensor, ctx_keep: Tensor) -> Tensor:
        # x (B, k, D), ctx (B, N, D), ctx_keep (B, N) True = keep
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, need_weights=False)[0]
        # nn.MultiheadAttention's key_padding_mask means True = ignore: convert here, at the boundary.
        # A row with no valid context token keeps one (zeros) so softmax stays finite.
        keep = ctx_keep.clone()
        keep[~keep.any(-1), 0] = True
        h = self.norm2(x)
        x = x + self.cross_attn(h, ctx, ctx, key_padding_mask=~keep, need_weights=False)[0]
        return x + self.mlp(self.norm3(x))


@ACTION_HEADS.register("flow")
class FlowHead(ActionHead):
    """Flow-matching action expert over the chunk (π₀ style).

    Training: x0 ~ N(0, I), t ~ U(0, 1), x_t = (1 - t) x0 + t a, regress the velocity a - x0.
    Inference: integrate dx/dt = v(x, t) from noise with ``flow_steps`` Euler steps.
    The velocity network embeds the noisy chunk as k tokens (+ position + time) and conditions on the
    fused tokens by cross-attention and on the pooled vector by addition.
    """

    def __init__(self, cfg: HeadConfig) -> None:
        super().__init__(cfg)
        d = cfg.dim
        heads = 4 if d % 4 == 0 else 1
        self.inp = nn.Linear(cfg.action_dim, d)
        self.pos = nn.Parameter(torch.zeros(1, cfg.chunk_size, d))
        self.time = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.cond = nn.Linear(d, d)
        self.blocks = nn.ModuleList([_FlowBlock(d, heads, cfg.hidden) for _ in range(cfg.flow_layers)])
        self.norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, cfg.action_dim)
        nn.init.normal_(self.pos, std=0.02)

    def velocity(self, x: Tensor, t: Tensor, fused: FusionOutput) -> Tensor:
        """x (B, k, A) noisy chunk, t (B,) flow time -> (B, k, A) velocity."""
        cond = self.time(_time_embedding(t, self.cfg.dim)) + self.cond(fused.pooled)  # (B, D)
        h = self.inp(x) + self.pos + cond[:, None]  # (B, k, D)
        ctx = torch.cat([fused.tokens, fused.pooled[:, None]], dim=1)  # (B, N + 1, D)
        keep = torch.cat([fused.mask, torch.ones_like(fused.mask[:, :1])], dim=1)  # (B, N + 1)
        for block in self.blocks:
            h = block(h, ctx, keep)
        return self.out(self.norm(h))

    def loss(self, fused: FusionOutput, target: Tensor, mask: Tensor) -> Tensor:
        B = target.shape[0]
        x0 = torch.randn_like(target)
        t = torch.rand(B, device=target.device)
        xt = (1 - t)[:, None, None] * x0 + t[:, None, None] * target
        v = self.velocity(xt, t, fused)
        return _masked_mean(F.mse_loss(v, target - x0, reduction="none"), mask)

    def predict(self, fused: FusionOutput, generator: torch.Generator | None = None) -> Tensor:
        B, c = fused.pooled.shape[0], self.cfg
        x = torch.randn(B, c.chunk_size, c.action_dim, generator=generator, device=fused.pooled.device)
        dt = 1.0 / c.flow_steps
        for i in range(c.flow_steps):
            t = torch.full((B,), i * dt, device=x.device)
            x = x + dt * self.velocity(x, t, fused)
        return x


HEADS = ACTION_HEADS.names()  # ("regression", "bins", "flow")


def build_head(cfg: HeadConfig) -> ActionHead:
    """Instantiate the action head named by ``cfg.kind``."""
    return ACTION_HEADS.get(cfg.kind)(cfg)
