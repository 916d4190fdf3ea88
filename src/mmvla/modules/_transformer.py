"""A minimal pre-norm transformer encoder block shared by the patch (ViT) and text encoders.

Kept private and small on purpose: the project's general attention (slow path with weights, heatmaps)
lives in :mod:`mmvla.modules.attention`; encoders only need the fast path with a key keep-mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SelfAttention(nn.Module):
    """Multi-head self-attention on ``F.scaled_dot_product_attention`` with a key keep-mask.

    Inputs:
        x: (B, N, D) tokens.
        mask: optional (B, N) bool, True = keep (valid key). Padding queries still get finite outputs.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SelfAttention: dim={dim} not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        # q, k, v: (B, H, N, Dh)
        attn_mask = None
        if mask is not None:
            attn_mask = mask[:, None, None, :]  # (B, 1, 1, N), True = attend
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0
        )  # (B, H, N, Dh)
        return self.out(y.transpose(1, 2).reshape(b, n, d))  # (B, N, D)


class EncoderBlock(nn.Module):
    """Pre-norm block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``.

    Inputs:
        x: (B, N, D); mask: optional (B, N) bool keep-mask. Returns (B, N, D).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln1(x), mask)  # (B, N, D)
        return x + self.mlp(self.ln2(x))  # (B, N, D)


def sincos_1d(positions: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of 1-D positions.

    Args:
        positions: (N,) float positions (any units).
        dim: embedding width, even.
    Returns:
        (N, dim) float32: ``[sin(p * w_k), cos(p * w_k)]`` with ``w_k = max_period^(-k / (dim/2))``.
    """
    if dim % 2:
        raise ValueError(f"sincos_1d: dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-torch.arange(half, dtype=torch.float32) * (torch.log(torch.tensor(max_period)) / half))
    angles = positions.float()[:, None] * freqs[None, :]  # (N, half)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)  # (N, dim)
