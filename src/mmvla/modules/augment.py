"""Batched image augmentations on (B, 3, H, W) float images in [0, 1] (no torchvision).

- :func:`random_shift`: DrQ-style random shift: replicate-pad by ``pad`` pixels, crop back to H×W at a
  per-sample integer offset in ``[-pad, pad]`` (vectorised gather; exact pixel copies, no blur).
- :func:`color_jitter`: per-sample brightness, contrast and saturation factors.

Every random function takes an optional ``torch.Generator`` so a run is reproducible; numbers are
drawn on the generator's device and then moved to the images' device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R BT.601 luma weights (as PIL / torchvision use for grayscale).
_LUMA = (0.299, 0.587, 0.114)


def _check(images: Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(
            f"augment: images must be float (B, 3, H, W), got {images.dtype} {tuple(images.shape)}"
        )


def _uniform(
    n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    dev = generator.device if generator is not None else device
    u = torch.rand(n, generator=generator, device=dev)
    return (low + (high - low) * u).to(device)


def shift(images: Tensor, offsets: Tensor) -> Tensor:
    """Translate each image by an integer offset, filling with the replicated border.

    Args:
        images: (B, C, H, W) float.
        offsets: (B, 2) integer (dx, dy) in pixels: output pixel (y, x) = input pixel
            (clamp(y + dy), clamp(x + dx)). Zero offsets return the input unchanged.
    Returns:
        (B, C, H, W), same dtype and device.
    """
    b, _, h, w = images.shape
    if offsets.shape != (b, 2):
        raise ValueError(f"shift: offsets must be (B, 2) = ({b}, 2), got {tuple(offsets.shape)}")
    offsets = offsets.to(device=images.device, dtype=torch.long)
    pad = int(offsets.abs().max()) if b else 0
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate") if pad else images  # (B, C, H+2p, W+2p)
    rows = torch.arange(h, device=images.device)[None, :] + pad + offsets[:, 1:2]  # (B, H)
    cols = torch.arange(w, device=images.device)[None, :] + pad + offsets[:, 0:1]  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]  # (B, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_shift(images: Tensor, pad: int = 4, generator: torch.Generator | None = None) -> Tensor:
    """DrQ random shift: each image moved by independent integer (dx, dy) uniform in ``[-pad, pad]``.

    Equivalent to replicate-padding by ``pad`` and taking a random H×W crop.

    Args:
        images: (B, C, H, W) float. pad: maximum shift in pixels (0 = identity).
        generator: optional generator for reproducibility.
    Returns:
        (B, C, H, W); values are copies of input pixels, so the range is preserved.
    """
    if pad < 0:
        raise ValueError(f"random_shift: pad must be >= 0, got {pad}")
    if pad == 0:
        return images
    dev = generator.device if generator is not None else images.device
    offsets = torch.randint(-pad, pad + 1, (images.shape[0], 2), generator=generator, device=dev)
    return shift(images, offsets.to(images.device))


def grayscale(images: Tensor) -> Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) BT.601 luma."""
    w = images.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (images * w).sum(dim=1, keepdim=True)


def adjust(images: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor) -> Tensor:
    """Apply per-sample factors (each (B,), 1 = unchanged) in the order brightness, contrast, saturation.

    - brightness: ``x·f``;
    - contrast: blend with the image's mean luma: ``m + (x − m)·f``;
    - saturation: blend with the pixel's luma: ``g + (x − g)·f``;
    each step clamped to [0, 1]. Returns (B, 3, H, W).
    """
    _check(images)
    x = (images * brightness.view(-1, 1, 1, 1)).clamp(0.0, 1.0)
    mean = grayscale(x).mean(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
    x = (mean + (x - mean) * contrast.view(-1, 1, 1, 1)).clamp(0.0, 1.0)
    gray = grayscale(x)  # (B, 1, H, W)
    return (gray + (x - gray) * saturation.view(-1, 1, 1, 1)).clamp(0.0, 1.0)


def color_jitter(
    images: Tensor,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random per-sample colour jitter; each factor is uniform in ``[1 − s, 1 + s]``.

    Args:
        images: (B, 3, H, W) float in [0, 1].
        brightness, contrast, saturation: jitter strengths in [0, 1] (0 = off).
        generator: optional generator for reproducibility.
    Returns:
        (B, 3, H, W) in [0, 1].
    """
    _check(images)
    for name, s in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"color_jitter: {name} must be in [0, 1], got {s}")
    if brightness == contrast == saturation == 0.0:
        return images
    b, dev = images.shape[0], images.device
    fb = _uniform(b, 1 - brightness, 1 + brightness, generator, dev)
    fc = _uniform(b, 1 - contrast, 1 + contrast, generator, dev)
    fs = _uniform(b, 1 - saturation, 1 + saturation, generator, dev)
    return adjust(images, fb.to(images.dtype), fc.to(images.dtype), fs.to(images.dtype))


@dataclass
class AugmentConfig:
    """Training-time image augmentation.

    Attributes:
        shift_pad: maximum random shift in pixels (0 = off).
        brightness, contrast, saturation: colour jitter strengths in [0, 1] (0 = off).
    """

    shift_pad: int = 4
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2

    def __post_init__(self) -> None:
        if self.shift_pad < 0:
            raise ValueError(f"AugmentConfig: shift_pad must be >= 0, got {self.shift_pad}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"AugmentConfig: {name} must be in [0, 1], got {getattr(self, name)}")


def augment(images: Tensor, cfg: AugmentConfig, generator: torch.Generator | None = None) -> Tensor:
    """Random shift then colour jitter, per sample. (B, 3, H, W) in [0, 1] -> same."""
    x = random_shift(images, cfg.shift_pad, generator)
    if cfg.brightness or cfg.contrast or cfg.saturation:
        x = color_jitter(x, cfg.brightness, cfg.contrast, cfg.saturation, generator)
    return x
