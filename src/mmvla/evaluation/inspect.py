"""Inspect a trained policy: where it attends in the image, read out by running the model.

- :func:`attention_heatmaps`: the design source's cross-attention read-out: for each instruction word,
  where in one camera's image it attends (:class:`AttentionMaps`, one map per word).
- :func:`keypoint_heatmaps`: where the vision encoder's spatial-softmax keypoints look (the
  language-dependent attention of an instruction-conditioned trunk).
- :func:`attention_maps_for_checkpoint`: either, for a saved policy on a fresh simulator frame.
- :func:`report_attention_maps`: the maps a run's report shows (its attention checkpoint's, drawn once).

These functions return arrays; :mod:`mmvla.reporting.figures` draws them
(:func:`~mmvla.reporting.figures.attention_overlay_figure`, :func:`~mmvla.reporting.figures.plot_attention_overlay`).

Attention weights come from a dedicated recording path (vit-pytorch's ``recorder.py`` idea): the chosen
:class:`~mmvla.modules.attention.MultiHeadAttention` gets a ``recorder`` list for one forward pass, which
makes it take its slow path (explicit softmax, the same output up to float rounding) and keep the weights.
The model's parameters and code are untouched.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F

from mmvla.core.io import read_json
from mmvla.modules.attention import MultiHeadAttention
from mmvla.modules.fusion import ATTENTION_FUSIONS
from mmvla.modules.fusion.cross_attention import CrossAttentionFusion, CrossModalLayer
from mmvla.modules.fusion.hierarchical import HierarchicalFusion
from mmvla.modules.fusion.transformer import TransformerFusion
from mmvla.modules.language import WordTokenizer, split_words
from mmvla.modules.vision import KEYPOINT_POOLS
from mmvla.policy import VLAPolicy
from mmvla.policy.checkpoint import load_config
from mmvla.policy.observation import observation_to_batch, validate_observation
from mmvla.sim.registry import make_env
from mmvla.sim.tabletop.tasks import FAMILIES, parse_instruction

# ---------------------------------------------------------------------------------------------------
# Attention heatmaps
# ---------------------------------------------------------------------------------------------------


@dataclass
class AttentionMaps:
    """Where each instruction word attends in one camera's frame.

    Attributes:
        instruction: the instruction string.
        words: L labels, one per language token after the sentence summary (``"(unk)"`` marks a word
            outside the policy's vocabulary).
        heatmaps: (L, h, w) float64, word ``l``'s attention over the camera's ``h × w`` grid tokens
            (pooled token excluded), heads averaged, renormalised to sum to 1 over the patches.
        frame: (H, W, 3) uint8 camera image; ``h / w == H / W`` (token ``i`` covers row ``i // w``,
            column ``i % w`` of the image).
        camera: camera name.
        fusion: the policy's fusion design.
        layer: which attention module the weights come from, e.g. ``"layers[1].attn['language']"``.
        camera_share: (L,) fraction of each word's attention that fell on this camera's grid tokens
            before renormalisation (the rest went to pooled tokens, other cameras or other modalities).
    """

    instruction: str
    words: list[str]
    heatmaps: np.ndarray
    frame: np.ndarray
    camera: str
    fusion: str
    layer: str
    camera_share: np.ndarray

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the token grid."""
        return int(self.heatmaps.shape[1]), int(self.heatmaps.shape[2])

    def upsampled(self) -> np.ndarray:
        """(L, H, W) heatmaps bilinearly resized to the frame (cell centres aligned), for overlays."""
        H, W = self.frame.shape[:2]
        t = torch.from_numpy(self.heatmaps)[:, None].float()  # (L, 1, h, w)
        up = F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)  # (L, 1, H, W)
        return up[:, 0].double().numpy()


@dataclass
class _Site:
    """An attention module where language tokens query vision tokens.

    ``layout``: ``"cross"`` (queries = the language tokens, keys = ``context``: the other attending
    modalities concatenated in that order) or ``"joint"`` (self-attention over [one prefix token] + every
    modality in the fusion's sorted order).
    """

    name: str
    module: MultiHeadAttention
    layout: str
    context: tuple[str, ...] = ()


def _attention_sites(policy: VLAPolicy) -> list[_Site]:
    """The fusion's language → vision attention modules, in forward order (empty when it has none)."""
    fusion = policy.fusion

    def cross(prefix: str, layers: Sequence[Any]) -> list[_Site]:
        sites = []
        for i, layer in enumerate(layers):
            assert isinstance(layer, CrossModalLayer)
            if "language" in layer.names and "vision" in layer.names:
                ctx = tuple(m for m in layer.names if m != "language")
                attn = cast("MultiHeadAttention", layer.attn["language"])
                sites.append(_Site(f"{prefix}[{i}].attn['language']", attn, "cross", ctx))
        return sites

    if isinstance(fusion, TransformerFusion):
        return [
            _Site(f"blocks[{i}].attn", cast("MultiHeadAttention", b.attn), "joint")
            for i, b in enumerate(fusion.blocks)
        ]
    if isinstance(fusion, HierarchicalFusion):
        high = [
            _Site(f"high[{i}].attn", cast("MultiHeadAttention", b.attn), "joint")
            for i, b in enumerate(fusion.high)
        ]
        return cross("mid", list(fusion.mid)) + high
    if isinstance(fusion, CrossAttentionFusion):
        return cross("layers", list(fusion.layers))
    return []


def _word_labels(policy: VLAPolicy, instruction: str, n: int) -> list[str]:
    """Labels of the ``n`` language tokens after the sentence summary."""
    lang = policy.language
    tok = getattr(lang, "tokenizer", None)
    if isinstance(tok, WordTokenizer):
        words = [w if w in tok.index else f"{w} (unk)" for w in split_words(instruction)]
        if len(words) >= n:
            return words[:n]
    hf = getattr(lang, "hf_tokenizer", None)
    if hf is not None:
        pieces = hf.convert_ids_to_tokens(hf(instruction, truncation=True, max_length=256)["input_ids"])
        if len(pieces) == n:
            return [str(p) for p in pieces]
    return [f"token {i}" for i in range(n)]


@contextlib.contextmanager
def _inference(policy: VLAPolicy) -> Iterator[torch.device]:
    """Eval mode and no gradients for a read-out; the policy's mode is restored. Yields its device."""
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad():
            yield next(policy.parameters()).device
    finally:
        policy.train(was_training)


def attention_heatmaps(
    policy: VLAPolicy, observation: Mapping[str, Any], camera: str = "front", layer: int = -1
) -> AttentionMaps:
    """Per-word attention of the instruction over one camera's image patches.

    The policy encodes the observation as usual; the fusion runs once with the chosen attention module
    recording its weights (see the module docstring). From the (B=1, H, Nq, Nk) weights the text-query →
    vision-key block is taken: queries = the instruction's word tokens (the sentence-summary token is
    skipped), keys = the chosen camera's grid tokens of the first (finest) scale (its pooled token
    excluded); heads are averaged and each word's row is renormalised to sum to 1 over the patches.

    Args:
        policy: a policy whose fusion has language → vision attention: ``cross_attention`` (the language
            side of each cross-modal layer), ``transformer`` (joint self-attention blocks) or
            ``hierarchical`` (mid-level cross-attention layers, then high-level blocks).
        observation: one observation as for :meth:`VLAPolicy.act` (uint8 (H, W, 3) per camera, "state",
            "instruction").
        camera: one of the policy's cameras.
        layer: index into those attention modules in forward order; -1 (default) = the last layer.
    Returns:
        :class:`AttentionMaps` with (L, h, w) heatmaps, each summing to 1.
    Raises:
        ValueError: the fusion has no language → vision attention (film, early, late, gated, moe), the
            camera is not the policy's, the policy has no grid tokens (``vision_tokens="pooled"``), or
            ``layer`` is out of range.
    """
    cfg = policy.cfg
    candidates = _attention_sites(policy)
    if not candidates:
        raise ValueError(
            f"attention_heatmaps: fusion {cfg.fusion!r} has no language-to-vision attention to show; "
            f"use a policy with one of: {', '.join(ATTENTION_FUSIONS)}"
        )
    if camera not in cfg.cameras:
        raise ValueError(f"attention_heatmaps: camera {camera!r} is not one of the policy's {cfg.cameras}")
    if cfg.vision_tokens != "all":
        raise ValueError(
            "attention_heatmaps: the policy gives the fusion no image-grid tokens "
            f"(vision_tokens={cfg.vision_tokens!r}), so there is no attention over patches to draw"
        )
    if not -len(candidates) <= layer < len(candidates):
        raise ValueError(
            f"attention_heatmaps: layer {layer} out of range for {len(candidates)} attention layers "
            f"({', '.join(c.name for c in candidates)})"
        )
    validate_observation(observation, cfg.cameras, cfg.image_size, cfg.state_dim)
    site = candidates[layer]
    name, module = site.name, site.module
    with _inference(policy) as dev:
        images, texts, state = observation_to_batch(observation, cfg.cameras)
        images = {k: v.to(dev) for k, v in images.items()}
        tokens = policy.encode(images, texts, state.to(dev))
        grids = policy.vision.output_grids(*images[camera].shape[-2:])
        module.recorder = []
        try:
            policy.fusion(tokens)
            recorded = list(module.recorder)
        finally:
            module.recorder = None
    if len(recorded) != 1:
        raise RuntimeError(f"attention_heatmaps: {name} ran {len(recorded)} times, expected once")
    weights = recorded[0][0].double().mean(dim=0)  # (Nq, Nk), heads averaged

    n = {m: int(t.shape[1]) for m, t in tokens.tokens.items()}
    n_words = n["language"] - 1  # after the sentence summary
    h, w = grids[0]
    per_cam = n["vision"] // len(cfg.cameras)  # 1 + N tokens per camera
    cam_start = cfg.cameras.index(camera) * per_cam + 1  # skip the camera's pooled token
    if site.layout == "cross":
        q0 = 1
        k0 = sum(n[m] for m in site.context[: site.context.index("vision")]) + cam_start
    else:
        order = list(policy.fusion.cfg.modalities)
        offsets = {m: 1 + sum(n[o] for o in order[: order.index(m)]) for m in order}  # +1: CLS / low token
        q0 = offsets["language"] + 1
        k0 = offsets["vision"] + cam_start
    block = weights[q0 : q0 + n_words, k0 : k0 + h * w]  # (L, h·w)
    share = block.sum(dim=1)  # (L,)
    if bool((share <= 0).any()):
        raise RuntimeError(f"attention_heatmaps: a word put no attention on camera {camera!r}'s patches")
    heat = (block / share[:, None]).reshape(n_words, h, w)  # (L, h, w), rows sum to 1
    frame = np.ascontiguousarray(observation[camera])
    return AttentionMaps(
        instruction=str(observation["instruction"]),
        words=_word_labels(policy, str(observation["instruction"]), n_words),
        heatmaps=heat.cpu().numpy(),
        frame=frame,
        camera=camera,
        fusion=cfg.fusion,
        layer=name,
        camera_share=share.cpu().numpy(),
    )


def keypoint_heatmaps(
    policy: VLAPolicy, observation: Mapping[str, Any], camera: str = "front", top: int = 4
) -> AttentionMaps:
    """Where the vision encoder's spatial-softmax keypoints look in one camera's frame.

    With an instruction-conditioned trunk (``VisionConfig.condition``) these maps are the policy's
    language-dependent attention over the image: the keypoints that track the named object move with
    the instruction. The ``top`` most concentrated maps (highest peak) of the finest scale are returned.

    Args:
        policy: a policy whose vision pool is ``"spatial_softmax"`` or ``"keypoints"``.
        observation: one observation as for :meth:`VLAPolicy.act`.
        camera: one of the policy's cameras.
        top: how many keypoint maps to return (1 .. K).
    Returns:
        :class:`AttentionMaps` with ``words`` = keypoint labels, ``heatmaps`` (top, h, w) summing to 1 each.
    Raises:
        ValueError: the pool has no keypoints, the camera is not the policy's, or ``top`` is out of range.
    """
    cfg = policy.cfg
    if camera not in cfg.cameras:
        raise ValueError(f"keypoint_heatmaps: camera {camera!r} is not one of the policy's {cfg.cameras}")
    pool = policy.vision.pool
    if pool.kind not in KEYPOINT_POOLS:
        raise ValueError("keypoint_heatmaps: the policy's vision pool has no spatial-softmax keypoints")
    validate_observation(observation, cfg.cameras, cfg.image_size, cfg.state_dim)
    with _inference(policy) as dev:
        images, texts, _ = observation_to_batch(observation, cfg.cameras)
        x = images[camera].to(dev).float() / 255.0  # (1, 3, H, W)
        trunk_text = policy.trunk_texts(policy.read_instructions(texts))  # what the trunk reads
        cond = policy.language(trunk_text).pooled if policy.vision.cfg.condition else None  # (1, D)
        out = policy.vision(x, cond)
        maps = pool.maps(out.tokens, out.grids)[0][0].double()  # (K, h, w), finest scale
    K = maps.shape[0]
    if not 1 <= top <= K:
        raise ValueError(f"keypoint_heatmaps: top must be in 1..{K}, got {top}")
    order = torch.argsort(maps.flatten(1).max(dim=1).values, descending=True)[:top]
    return AttentionMaps(
        instruction=str(observation["instruction"]),
        words=[f"keypoint {int(k)}" for k in order],
        heatmaps=maps[order].cpu().numpy(),
        frame=np.ascontiguousarray(observation[camera]),
        camera=camera,
        fusion=cfg.fusion,
        layer="vision keypoints" + (" (instruction-conditioned)" if policy.vision.cfg.condition else ""),
        camera_share=np.ones(top),
    )


def attention_maps_for_checkpoint(
    checkpoint: str | os.PathLike[str],
    *,
    camera: str | None = None,
    instruction: str | None = None,
    seed: int = 0,
    layer: int = -1,
) -> AttentionMaps:
    """Attention maps of a saved policy on a fresh simulator frame (for reports).

    Loads the policy (``VLAPolicy.from_pretrained``), resets the tabletop with the policy's cameras and
    image size (split "all", the families of the policy's instructions) at ``seed`` (and
    ``instruction`` when given), and returns :func:`attention_heatmaps` of the reset observation
    (drawn by :func:`mmvla.reporting.figures.attention_overlay_figure`). Policies without word → patch
    attention but with an instruction-conditioned trunk (the demo recipe) get :func:`keypoint_heatmaps`
    instead.

    Args:
        checkpoint: a policy directory (``config.json`` + weights).
        camera: camera to show; default "front" when the policy reads it, else its first camera.
        instruction: a canonical instruction; default: the one the environment draws at ``seed``.
        seed: environment seed (the frame is reproducible).
        layer: see :func:`attention_heatmaps`.
    Raises:
        ValueError: neither language → vision attention nor a conditioned trunk.
    """
    policy = VLAPolicy.from_pretrained(checkpoint)
    cfg = policy.cfg
    use_keypoints = not _attention_sites(policy) or cfg.vision_tokens != "all"
    if use_keypoints and not policy.vision.cfg.condition:
        raise ValueError(
            f"attention_maps_for_checkpoint: fusion {cfg.fusion!r} has no language-to-vision attention "
            f"and the vision trunk is not instruction-conditioned; use a policy with one of: "
            f"{', '.join(ATTENTION_FUSIONS)}, or VisionConfig.condition"
        )
    families = set()
    for text in [*cfg.instructions, *([instruction] if instruction else [])]:
        try:
            families.add(parse_instruction(text).family)
        except ValueError:
            continue
    env = make_env(
        "tabletop",
        cameras=cfg.cameras,
        image_size=cfg.image_size,
        split="all",
        families=tuple(f for f in FAMILIES if f in families) or ("pick", "push", "place"),
    )
    try:
        obs, _ = env.reset(seed=seed, options={"instruction": instruction} if instruction else None)
    finally:
        env.close()
    cam = camera or ("front" if "front" in cfg.cameras else cfg.cameras[0])
    if use_keypoints:
        return keypoint_heatmaps(policy, obs, camera=cam)
    return attention_heatmaps(policy, obs, camera=cam, layer=layer)


# ---------------------------------------------------------------------------------------------------
# The maps a run's report shows
# ---------------------------------------------------------------------------------------------------


def attention_checkpoints(
    run_dir: str | os.PathLike[str], focus: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Policy checkpoints of a run with language → vision attention (fusion in ``ATTENTION_FUSIONS``).

    Order: the focus run's (``focus``, default ``run_dir``), the run's own, then, for a comparison
    (``run_dir/comparison.json``), the first run of each attention design, best unseen success first.
    """
    run = Path(run_dir)
    focus = Path(focus) if focus is not None else run
    dirs = [focus, run]
    if (run / "comparison.json").is_file():
        comparison = read_json(run / "comparison.json", "comparison")
        rows = [r for r in comparison.get("variants", []) if r.get("name") in ATTENTION_FUSIONS]
        rows.sort(key=lambda r: -r["success"].get("unseen", {}).get("mean", 0.0))
        dirs += [Path(d) if Path(d).is_absolute() else run / d for r in rows for d in r.get("runs", [])[:1]]
    return [
        d / "policy"
        for d in dict.fromkeys(dirs)
        if (d / "policy" / "config.json").is_file()
        and load_config(d / "policy")[0].fusion in ATTENTION_FUSIONS
    ]


def report_attention_maps(
    run_dir: str | os.PathLike[str], focus: str | os.PathLike[str] | None = None
) -> dict[Path, AttentionMaps]:
    """The attention overlay a run's report shows, not drawn yet: ``{PNG path: maps}`` (0 or 1 entry).

    Empty when the run (or ``focus``) already holds an attention figure (``viz/*attention*.png`` or
    ``*/viz/*attention*.png``, outside ``runs/``), when no checkpoint has language → vision attention,
    or when the first one's maps cannot be computed. Else the maps of the first of
    :func:`attention_checkpoints` (:func:`attention_maps_for_checkpoint`), keyed by
    ``run_dir/viz/attention_overlay_<run name | "policy">.png``. The caller draws them with
    :func:`mmvla.reporting.figures.plot_attention_overlay` before writing the report (``mmvla report``
    and the pipeline do).

    Args:
        run_dir: the run (or comparison) directory.
        focus: the run whose tables the report shows (:func:`mmvla.reporting.page.focus_run`: for a
            comparison, its winner's first run); default ``run_dir``.
    """
    run = Path(run_dir)
    roots = dict.fromkeys([run, Path(focus) if focus is not None else run])
    for d in roots:
        for p in [*d.glob("viz/*.png"), *d.glob("*/viz/*.png")]:
            if "attention" in p.stem and "runs" not in p.relative_to(d).parts:
                return {}
    for ckpt in attention_checkpoints(run, focus)[:1]:
        name = ckpt.parent.name if ckpt.parent != run else "policy"
        try:
            maps = attention_maps_for_checkpoint(ckpt)
        except (ValueError, RuntimeError):
            return {}
        return {run / "viz" / f"attention_overlay_{name}.png": maps}
    return {}
