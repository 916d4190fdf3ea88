"""Rollout clips: frames with the instruction drawn on them, written as GIF (Pillow, no ffmpeg needed)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mmvla.core.io import atomic_write_bytes


def annotate_frames(
    frames: Sequence[np.ndarray], text: str, success: bool | None = None, scale: int = 3
) -> list[Image.Image]:
    """Upscale (nearest) uint8 (H, W, 3) frames by ``scale`` and draw ``text`` in a caption bar."""
    out = []
    for i, f in enumerate(frames):
        img = Image.fromarray(np.asarray(f, dtype=np.uint8)).resize(
            (f.shape[1] * scale, f.shape[0] * scale), Image.Resampling.NEAREST
        )
        canvas = Image.new("RGB", (img.width, img.height + 16), (0, 0, 0))
        canvas.paste(img, (0, 16))
        draw = ImageDraw.Draw(canvas)
        draw.text((3, 2), text, fill=(255, 255, 255))
        if success is not None and i == len(frames) - 1:
            draw.text(
                (img.width - 40, 2),
                "OK" if success else "FAIL",
                fill=(80, 255, 80) if success else (255, 80, 80),
            )
        out.append(canvas)
    return out


def write_episode_gif(
    path: str | os.PathLike[str],
    frames: Sequence[np.ndarray],
    text: str,
    success: bool | None = None,
    fps: int = 10,
) -> Path:
    """Write an annotated GIF of ``frames`` (uint8 (H, W, 3)) atomically; returns the path."""
    if not frames:
        raise ValueError("write_episode_gif: no frames")
    imgs = annotate_frames(frames, text, success)
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=int(1000 / fps), loop=0)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
