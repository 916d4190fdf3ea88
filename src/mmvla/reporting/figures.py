"""Figures: attention over image patches, joint embedding projections, training curves, success charts.

- :func:`attention_heatmaps` / :func:`plot_attention_overlay`: the design source's cross-attention plots,
  drawn on the camera frame: for each instruction word, where in the image it attends (one panel per word).
- :func:`embedding_projection` / :func:`plot_embeddings`: t-SNE (scikit-learn or openTSNE), UMAP
  (umap-learn) or PCA of vision and language embeddings fitted jointly, coloured by modality and by the
  object's colour (marker = shape).
- :func:`plot_training_curves`: the columns of a ``log.csv`` (``mmvla train`` or ``mmvla pretrain``).
- :func:`success_bar_chart`: success per design and split with error bars.

Every figure is drawn on a private Agg canvas (no pyplot state, no display needed) and written atomically
(PNG bytes in memory, then :func:`mmvla.core.io.atomic_write_bytes`).

Attention weights come from a dedicated recording path (vit-pytorch's ``recorder.py`` idea): the chosen
:class:`~mmvla.modules.attention.MultiHeadAttention` gets a ``recorder`` list for one forward pass, which
makes it take its slow path (explicit softmax, the same output up to float rounding) and keep the weights.
The model's parameters and code are untouched.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmvla.core.io import atomic_write_bytes
from mmvla.modules.vision import KEYPOINT_POOLS

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mmvla.modules.attention import MultiHeadAttention
    from mmvla.policy import VLAPolicy

HEATMAP_FUSIONS = ("cross_attention", "hierarchical", "transformer")
PROJECTIONS = ("tsne", "umap", "pca")
MODALITY_COLOURS = {"vision": "#1f77b4", "language": "#ff7f0e"}
SHAPE_MARKERS = {"cube": "s", "cylinder": "o", "slab": "D"}


# ---------------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    """A matplotlib Figure on its own Agg canvas (no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Render ``fig`` to PNG in memory and write it atomically to ``path`` (parents created)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


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
    from mmvla.modules.fusion.cross_attention import CrossAttentionFusion, CrossModalLayer
    from mmvla.modules.fusion.hierarchical import HierarchicalFusion
    from mmvla.modules.fusion.transformer import TransformerFusion

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
    from mmvla.modules.language import WordTokenizer, split_words

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
    from mmvla.policy.observation import observation_to_batch, validate_observation

    cfg = policy.cfg
    candidates = _attention_sites(policy)
    if not candidates:
        raise ValueError(
            f"attention_heatmaps: fusion {cfg.fusion!r} has no language-to-vision attention to show; "
            f"use a policy with one of: {', '.join(HEATMAP_FUSIONS)}"
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
    from mmvla.policy.observation import observation_to_batch, validate_observation

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
        cond = policy.language(texts).pooled if policy.vision.cfg.condition else None  # (1, D)
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


def attention_overlay_figure(
    maps: AttentionMaps, *, alpha: float = 0.5, cmap: str = "jet", columns: int = 4
) -> Figure:
    """The camera frame, then one panel per word with its heatmap overlaid (upsampled to the frame).

    Each word panel spans its colour map from its own minimum to its maximum (so weak structure stays
    visible); the title gives the word and the peak as a multiple of uniform attention (``max · h · w``),
    which says how strong it is. The image keeps its aspect (``h / w == H / W``).
    """
    L = len(maps.words)
    panels = L + 1
    cols = max(1, min(columns, panels))
    rows = math.ceil(panels / cols)
    H, W = maps.frame.shape[:2]
    side = 2.4
    fig = _figure(cols * side, rows * side * H / W + 0.6)
    up = maps.upsampled()  # (L, H, W)
    h, w = maps.grid
    for k in range(rows * cols):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.axis("off")
        if k >= panels:
            continue
        ax.imshow(maps.frame, interpolation="nearest")
        if k == 0:
            ax.set_title(f"{maps.camera} camera", fontsize=9)
            continue
        heat = up[k - 1]
        ax.imshow(
            heat,
            cmap=cmap,
            alpha=alpha,
            vmin=float(heat.min()),
            vmax=float(heat.max()),
            interpolation="nearest",
        )
        peak = float(maps.heatmaps[k - 1].max()) * h * w
        ax.set_title(f"{maps.words[k - 1]}  (peak {peak:.1f}×)", fontsize=9)
    heads = "" if maps.layer.startswith("vision keypoints") else ", heads averaged"
    fig.suptitle(f'"{maps.instruction}" — {maps.fusion}, {maps.layer}{heads}', fontsize=10)
    return fig


def plot_attention_overlay(
    maps: AttentionMaps,
    path: str | os.PathLike[str],
    *,
    alpha: float = 0.5,
    cmap: str = "jet",
    columns: int = 4,
    dpi: int = 110,
) -> Path:
    """:func:`attention_overlay_figure` written atomically as a PNG to ``path``."""
    return save_figure(attention_overlay_figure(maps, alpha=alpha, cmap=cmap, columns=columns), path, dpi)


def attention_overlay_for_checkpoint(
    checkpoint: str | os.PathLike[str],
    *,
    camera: str | None = None,
    instruction: str | None = None,
    seed: int = 0,
    layer: int = -1,
) -> Figure:
    """Attention overlay of a saved policy on a fresh simulator frame (for reports).

    Loads the policy (``VLAPolicy.from_pretrained``), resets the tabletop with the policy's cameras and
    image size (split "all", the families of the policy's instructions) at ``seed`` (and
    ``instruction`` when given), and draws :func:`attention_overlay_figure` of the reset observation.
    Policies without word → patch attention but with an instruction-conditioned trunk (the demo
    recipe) get :func:`keypoint_heatmaps` instead.

    Args:
        checkpoint: a policy directory (``config.json`` + weights).
        camera: camera to show; default "front" when the policy reads it, else its first camera.
        instruction: a canonical instruction; default: the one the environment draws at ``seed``.
        seed: environment seed (the frame is reproducible).
        layer: see :func:`attention_heatmaps`.
    Raises:
        ValueError: neither language → vision attention nor a conditioned trunk.
    """
    from mmvla.policy import VLAPolicy
    from mmvla.sim.tabletop.env import TabletopEnv
    from mmvla.sim.tabletop.tasks import FAMILIES, parse_instruction

    policy = VLAPolicy.from_pretrained(checkpoint)
    cfg = policy.cfg
    use_keypoints = not _attention_sites(policy) or cfg.vision_tokens != "all"
    if use_keypoints and not policy.vision.cfg.condition:
        raise ValueError(
            f"attention_overlay_for_checkpoint: fusion {cfg.fusion!r} has no language-to-vision attention "
            f"and the vision trunk is not instruction-conditioned; use a policy with one of: "
            f"{', '.join(HEATMAP_FUSIONS)}, or VisionConfig.condition"
        )
    families = set()
    for text in [*cfg.instructions, *([instruction] if instruction else [])]:
        try:
            families.add(parse_instruction(text).family)
        except ValueError:
            continue
    env = TabletopEnv(
        cameras=cfg.cameras,
        image_size=cfg.image_size,
        split="all",
        families=tuple(f for f in FAMILIES if f in families) or ("pick", "push"),
    )
    try:
        obs, _ = env.reset(seed=seed, options={"instruction": instruction} if instruction else None)
    finally:
        env.close()
    cam = camera or ("front" if "front" in cfg.cameras else cfg.cameras[0])
    if use_keypoints:
        return attention_overlay_figure(keypoint_heatmaps(policy, obs, camera=cam))
    return attention_overlay_figure(attention_heatmaps(policy, obs, camera=cam, layer=layer))


# ---------------------------------------------------------------------------------------------------
# Embedding projections
# ---------------------------------------------------------------------------------------------------


@dataclass
class Projection:
    """A 2-D projection of vision and language embeddings fitted jointly.

    Attributes:
        vision: (N_v, 2) coordinates of the vision rows. text: (N_t, 2) of the language rows.
        method: the method actually used (``"tsne"``, ``"umap"`` or ``"pca"``).
        note: why a different method than the one asked for was used ("" when none).
    """

    vision: np.ndarray
    text: np.ndarray
    method: str
    note: str = ""


def available_projections() -> list[str]:
    """Projection methods usable here: ``"pca"`` always, ``"tsne"`` with scikit-learn or openTSNE, ``"umap"`` with umap-learn."""
    import importlib.util

    out = []
    if importlib.util.find_spec("sklearn") or importlib.util.find_spec("openTSNE"):
        out.append("tsne")
    if importlib.util.find_spec("umap"):
        out.append("umap")
    return [*out, "pca"]


def _pca(x: np.ndarray) -> np.ndarray:
    """(N, E) -> (N, 2) principal components (signs fixed: largest-magnitude loading positive)."""
    xc = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    comps = vt[:2]  # (2, E)
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    out = xc @ (comps * signs[:, None]).T  # (N, k)
    if out.shape[1] < 2:
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    """(N, E) -> (N, 2) t-SNE: scikit-learn if installed, else openTSNE (ImportError when neither)."""
    perplexity = float(max(2.0, min(30.0, (len(x) - 1) / 3.0)))
    try:
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        # One OpenMP thread: scikit-learn's OpenMP runtime next to torch's spins for 100x longer on a
        # busy machine (measured: 49 s instead of 0.3 s for 20 points on 2 shared cores).
        with threadpool_limits(limits=1):
            return np.asarray(
                TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
            )
    except ImportError:
        from openTSNE import TSNE as OpenTSNE

        return np.asarray(OpenTSNE(n_components=2, perplexity=perplexity, random_state=seed).fit(x))


def embedding_projection(
    vision_emb: Tensor | np.ndarray, text_emb: Tensor | np.ndarray, method: str = "tsne", seed: int = 0
) -> Projection:
    """Project L2-normalised vision and language embeddings to 2-D with one joint fit.

    Both sets are normalised row-wise, stacked ((N_v + N_t, E)) and projected together, so distances
    between modalities are meaningful (the modality gap shows as two separated clouds).

    Args:
        vision_emb: (N_v, E). text_emb: (N_t, E).
        method: ``"tsne"`` (scikit-learn, else openTSNE; perplexity ``min(30, (N - 1) / 3)``), ``"umap"``
            (umap-learn) or ``"pca"``. When the requested library is not installed, PCA is used and
            :attr:`Projection.note` says so (a warning is also issued).
        seed: random state of t-SNE / UMAP.
    Returns:
        :class:`Projection` with (N_v, 2) and (N_t, 2) coordinates.
    """
    if method not in PROJECTIONS:
        raise ValueError(f"embedding_projection: method must be one of {PROJECTIONS}, got {method!r}")
    v = np.asarray(torch.as_tensor(vision_emb).detach().cpu().double())
    t = np.asarray(torch.as_tensor(text_emb).detach().cpu().double())
    if v.ndim != 2 or t.ndim != 2 or v.shape[1] != t.shape[1]:
        raise ValueError(f"embedding_projection: need (N, E) inputs, got {v.shape} and {t.shape}")
    if len(v) + len(t) < 3:
        raise ValueError("embedding_projection: need at least 3 rows in total")
    x = np.concatenate([v, t]) / np.maximum(
        np.linalg.norm(np.concatenate([v, t]), axis=1, keepdims=True), 1e-12
    )
    used, note = method, ""
    try:
        if method == "tsne":
            y = _tsne(x, seed)
        elif method == "umap":
            import umap

            y = np.asarray(
                umap.UMAP(n_components=2, n_neighbors=min(15, len(x) - 1), random_state=seed).fit_transform(x)
            )
        else:
            y = _pca(x)
    except ImportError:
        lib = "scikit-learn or openTSNE" if method == "tsne" else "umap-learn"
        used, note = "pca", f"{method} unavailable (install {lib}); PCA shown instead"
        warnings.warn(f"embedding_projection: {note}", stacklevel=2)
        y = _pca(x)
    return Projection(vision=y[: len(v)], text=y[len(v) :], method=used, note=note)


def _colour_shape(label: str) -> tuple[str | None, str | None]:
    """The first colour word and the first shape word of a label ("pick up the red cube" -> red, cube)."""
    from mmvla.sim.tabletop.tasks import COLOURS, SHAPES

    words = label.lower().split()
    colour = next((w for w in words if w in COLOURS), None)
    shape = next((w for w in words if w in SHAPES), None)
    return colour, shape


def plot_embeddings(
    vision_emb: Tensor | np.ndarray,
    text_emb: Tensor | np.ndarray,
    path: str | os.PathLike[str],
    *,
    vision_labels: Sequence[str] | None = None,
    text_labels: Sequence[str] | None = None,
    method: str = "tsne",
    seed: int = 0,
    title: str | None = None,
    dpi: int = 110,
) -> Projection:
    """Joint 2-D projection of both modalities' embeddings, saved as a PNG.

    Left panel: coloured by modality (frames blue dots, instructions orange triangles). Right panel (when
    labels are given): coloured by the object's colour and marked by its shape, both parsed from the
    labels (the first colour and shape word, i.e. the target of a canonical instruction); frames small
    and translucent, instructions large with a black edge.

    Args:
        vision_emb: (N_v, E) frame embeddings. text_emb: (N_t, E) instruction embeddings.
        path: PNG to write.
        vision_labels: N_v strings naming what each frame shows (e.g. its instruction).
        text_labels: N_t strings (e.g. the instructions).
        method, seed: see :func:`embedding_projection`.
        title: figure title (default: the method, plus the fallback note if any).
    Returns:
        the :class:`Projection` drawn.
    """
    from matplotlib.lines import Line2D

    from mmvla.sim.tabletop.tasks import COLOUR_RGBA

    proj = embedding_projection(vision_emb, text_emb, method=method, seed=seed)
    labelled = vision_labels is not None and text_labels is not None
    if labelled and (
        len(vision_labels or ()) != len(proj.vision) or len(text_labels or ()) != len(proj.text)
    ):
        raise ValueError("plot_embeddings: one label per embedding row is needed for each modality")
    fig = _figure(11.0 if labelled else 5.5, 5.0)
    ax = fig.add_subplot(1, 2 if labelled else 1, 1)
    ax.scatter(
        proj.vision[:, 0],
        proj.vision[:, 1],
        s=14,
        c=MODALITY_COLOURS["vision"],
        alpha=0.6,
        label=f"vision ({len(proj.vision)})",
    )
    ax.scatter(
        proj.text[:, 0],
        proj.text[:, 1],
        s=40,
        c=MODALITY_COLOURS["language"],
        marker="^",
        alpha=0.9,
        label=f"language ({len(proj.text)})",
    )
    ax.set_title("by modality", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    if labelled:
        ax2 = fig.add_subplot(1, 2, 2)
        for coords, labels, big in ((proj.vision, vision_labels, False), (proj.text, text_labels, True)):
            parsed = [_colour_shape(s) for s in labels or ()]
            for shape in sorted({s for _, s in parsed}, key=lambda s: s or ""):
                rows = [i for i, (_, s) in enumerate(parsed) if s == shape]
                colours = [
                    COLOUR_RGBA[c][:3] if c is not None else (0.5, 0.5, 0.5)
                    for c in (parsed[i][0] for i in rows)
                ]
                ax2.scatter(
                    coords[rows, 0],
                    coords[rows, 1],
                    s=70 if big else 16,
                    c=colours,
                    marker=SHAPE_MARKERS.get(shape or "", "x"),
                    alpha=0.95 if big else 0.55,
                    edgecolors="black" if big else "none",
                    linewidths=1.2 if big else 0.0,
                )
        handles = [
            Line2D([], [], ls="", marker=m, color="grey", label=s, markersize=7)
            for s, m in SHAPE_MARKERS.items()
        ] + [
            Line2D([], [], ls="", marker="o", color="grey", alpha=0.55, label="frame", markersize=5),
            Line2D(
                [],
                [],
                ls="",
                marker="o",
                color="grey",
                markeredgecolor="black",
                label="instruction",
                markersize=9,
            ),
        ]
        ax2.legend(handles=handles, fontsize=8, loc="best")
        ax2.set_title("by object colour (fill) and shape (marker)", fontsize=10)
        ax2.set_xticks([])
        ax2.set_yticks([])
    name = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}[proj.method]
    fig.suptitle(
        title
        or f"{name} of vision and language embeddings (joint fit)" + (f" — {proj.note}" if proj.note else ""),
        fontsize=11,
    )
    save_figure(fig, path, dpi)
    return proj


def plot_pretrain_embeddings(
    pretrain_dir: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    which: str = "after",
    method: str = "tsne",
    seed: int = 0,
) -> Projection:
    """:func:`plot_embeddings` of ``mmvla pretrain``'s evaluation embeddings (``which`` = "before" / "after")."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    if which not in ("before", "after"):
        raise ValueError(f"plot_pretrain_embeddings: which must be 'before' or 'after', got {which!r}")
    file = Path(pretrain_dir) / "eval_embeddings.safetensors"
    tensors = load_file(str(file))
    with safe_open(str(file), framework="pt") as f:
        meta = f.metadata() or {}
    instructions = json.loads(meta["instructions"])
    idx = tensors["instruction_index"].tolist()
    return plot_embeddings(
        tensors[f"{which}.image"],
        tensors[f"{which}.text"],
        path,
        vision_labels=[instructions[i] for i in idx],
        text_labels=instructions,
        method=method,
        seed=seed,
        title=f"pre-trained encoders ({which} training): held-out frames and instructions",
    )


# ---------------------------------------------------------------------------------------------------
# Training curves and success charts
# ---------------------------------------------------------------------------------------------------


def read_csv_columns(path: str | os.PathLike[str]) -> dict[str, list[float]]:
    """A CSV log as numeric columns (name -> values); empty or non-numeric cells become NaN."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: the log has no rows")
    out: dict[str, list[float]] = {}
    for name in rows[0]:
        vals = []
        for r in rows:
            try:
                vals.append(float(r[name]))
            except (TypeError, ValueError):
                vals.append(float("nan"))
        out[name] = vals
    return out


def _panels(cols: dict[str, list[float]], columns: Sequence[str] | None) -> list[tuple[str, list[str]]]:
    """(title, column names) per panel: losses together, gradient norms together, the rest one each."""
    if columns is not None:
        missing = [c for c in columns if c not in cols]
        if missing:
            raise ValueError(f"plot_training_curves: column(s) {missing} not in the log ({', '.join(cols)})")
        return [(c, [c]) for c in columns]

    def useful(c: str) -> bool:
        v = np.asarray(cols[c], dtype=float)
        return bool(np.isfinite(v).any()) and not bool(np.all(v[np.isfinite(v)] == 0))

    names = [c for c in cols if c not in ("step", "elapsed_s") and useful(c)]
    loss = [c for c in names if c.startswith("loss")]
    grad = [c for c in names if c.startswith("grad")]
    panels = []
    if loss:
        panels.append(("loss", loss))
    if grad:
        panels.append(("gradient norm", grad))
    titles = {
        "lr": "learning rate",
        "logit_scale": "logit scale exp(s) (clamped)",
        "batch_acc": "batch top-1 accuracy (any positive)",
        "samples_per_s": "samples / s",
    }
    panels += [(titles.get(c, c), [c]) for c in names if c not in loss and c not in grad]
    return panels


def training_curves_figure(
    log: Mapping[str, Sequence[float]], *, columns: Sequence[str] | None = None, title: str | None = None
) -> Figure:
    """Curves of a log's columns (name -> values, e.g. :func:`mmvla.training.trainer.read_log`) against ``step``.

    Default panels: every loss column together (log scale when positive), every ``grad*`` column
    together (the per-module norms show modality balance), then each remaining column (learning rate,
    logit scale, batch accuracy, throughput) alone; empty and all-zero columns and ``elapsed_s`` are
    skipped. ``columns`` picks the columns instead (one panel each).
    """
    cols = {k: list(v) for k, v in log.items() if len(v)}
    if "step" not in cols:
        raise ValueError("training_curves_figure: the log has no 'step' column")
    panels = _panels(cols, columns)
    if not panels:
        raise ValueError("training_curves_figure: nothing to plot")
    ncol = min(3, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig = _figure(4.2 * ncol, 3.0 * nrow + 0.4)
    step = np.asarray(cols["step"], dtype=float)
    for k, (name, names) in enumerate(panels):
        ax = fig.add_subplot(nrow, ncol, k + 1)
        positive = True
        for c in names:
            v = np.asarray(cols[c], dtype=float)
            positive = positive and bool(np.all(v[np.isfinite(v)] > 0))
            ax.plot(step[: len(v)], v, label=c, lw=1.3)
        if positive and (name in ("loss", "gradient norm")):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        if len(names) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title or "training curves", fontsize=11)
    fig.tight_layout()
    return fig


def plot_training_curves(
    log_csv: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """:func:`training_curves_figure` of a ``log.csv`` (``mmvla train`` or ``mmvla pretrain``), saved as PNG."""
    cols = read_csv_columns(log_csv)
    if "step" not in cols:
        raise ValueError(f"{log_csv}: the log has no 'step' column")
    name = f"{Path(log_csv).parent.name}/{Path(log_csv).name}"
    fig = training_curves_figure(cols, columns=columns, title=title or f"training curves: {name}")
    return save_figure(fig, path, dpi)


def success_bar_chart(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    splits: Sequence[str] | None = None,
    title: str = "success rate",
    dpi: int = 110,
) -> Path:
    """Grouped bars: success per row (design, head, ...) and split, with error bars and value labels.

    Args:
        rows: one mapping per bar group: ``"name"``; ``"success"``: ``{split: rate in [0, 1]}``; optional
            ``"ci95"``: ``{split: [low, high]}`` (e.g. Wilson intervals, as :func:`mmvla.evaluation.evaluate.summarise`
            writes) or ``"spread"``: ``{split: ± half-width}`` (e.g. the spread over seeds). An
            evaluation's metrics dict plus a ``"name"`` is a valid row.
        path: PNG to write.
        splits: splits to draw, in order (default: every split of the rows, first-seen order).
    """
    if not rows:
        raise ValueError("success_bar_chart: no rows")
    for r in rows:
        if "name" not in r or not isinstance(r.get("success"), Mapping):
            raise ValueError("success_bar_chart: each row needs 'name' and a 'success' mapping {split: rate}")
    if splits is None:
        splits = list(dict.fromkeys(s for r in rows for s in r["success"]))
    n, k = len(rows), len(splits)
    width = 0.8 / max(k, 1)
    fig = _figure(max(5.0, 1.0 + 0.9 * n * max(1, k) * 0.6), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(n)
    for j, split in enumerate(splits):
        rates = np.array([float(r["success"].get(split, np.nan)) for r in rows])
        err = np.full((2, n), np.nan)
        for i, r in enumerate(rows):
            ci = (r.get("ci95") or {}).get(split)
            spread = (r.get("spread") or {}).get(split)
            if ci is not None:
                err[:, i] = [rates[i] - float(ci[0]), float(ci[1]) - rates[i]]
            elif spread is not None:
                err[:, i] = [float(spread), float(spread)]
        pos = x - 0.4 + width * (j + 0.5)
        has_err = bool(np.isfinite(err).any())
        bars = ax.bar(
            pos,
            np.nan_to_num(rates),
            width,
            label=split,
            yerr=np.clip(np.nan_to_num(err), 0, None) if has_err else None,
            capsize=3,
        )
        for b, v in zip(bars, rates, strict=True):
            if np.isfinite(v):
                ax.text(
                    b.get_x() + b.get_width() / 2,
                    0.01,
                    f"{v:.0%}",
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                )
    ax.set_xticks(x)
    ax.set_xticklabels(
        [str(r["name"]) for r in rows], rotation=30 if n > 4 else 0, ha="right" if n > 4 else "center"
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate")
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    if k > 1 or splits:
        ax.legend(fontsize=8, title="split", title_fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi)
