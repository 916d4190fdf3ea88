"""Figures: drawn from what they are given (arrays, logs, result dicts); nothing here runs a model.

- :func:`attention_overlay_figure` / :func:`plot_attention_overlay`: the design source's cross-attention
  plots, drawn on the camera frame: for each instruction word, where in the image it attends (one panel
  per word). The maps come from :mod:`mmvla.evaluation.inspect`.
- :func:`embedding_projection` / :func:`plot_embeddings`: t-SNE (scikit-learn or openTSNE), UMAP
  (umap-learn) or PCA of vision and language embeddings fitted jointly, coloured by modality and by the
  object's colour (marker = shape); :func:`plot_pretrain_embeddings` for ``mmvla pretrain``'s output.
- :func:`training_curves_figure` / :func:`plot_training_curves`: the columns of a ``log.csv``
  (``mmvla train`` or ``mmvla pretrain``).
- :func:`success_bar_figure` / :func:`success_bar_chart`: success per design and split with error bars;
  :func:`comparison_chart_png` for a comparison.
- :func:`ablation_figure`, :func:`routing_figure`, :func:`gradient_balance_figure`: the modality
  diagnostics (:mod:`mmvla.evaluation.diagnostics`), written by :func:`write_diagnostics_figures`.

Every figure is drawn on a private Agg canvas (no pyplot state, no display needed); :func:`figure_png`
renders one to PNG bytes and :func:`save_figure` writes them atomically
(:func:`mmvla.core.io.atomic_write_bytes`).
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from mmvla.core.io import atomic_write_bytes
from mmvla.core.keys import BLIND_CONTROLS, SPLITS
from mmvla.core.logs import read_log
from mmvla.core.stats import wilson_interval
from mmvla.evaluation.diagnostics import ENCODER_GROUPS, MODULE_GROUPS
from mmvla.sim.tabletop.tasks import COLOUR_RGBA, COLOURS, SHAPES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mmvla.evaluation.inspect import AttentionMaps

PROJECTIONS = ("tsne", "umap", "pca")
MODALITY_COLOURS = {"vision": "#1f77b4", "language": "#ff7f0e"}
SHAPE_MARKERS = {"cube": "s", "cylinder": "o", "slab": "D"}


# ---------------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    """A matplotlib Figure on its own Agg canvas (no pyplot, no global backend switch)."""
    # function-local: matplotlib is imported only when a figure is drawn
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """``fig`` rendered to PNG bytes (``dpi`` dots per inch, tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Render ``fig`` to PNG in memory (:func:`figure_png`) and write it atomically to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, figure_png(fig, dpi))
    return path


# ---------------------------------------------------------------------------------------------------
# Attention heatmaps
# ---------------------------------------------------------------------------------------------------


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
    try:  # function-local: scikit-learn and openTSNE are optional
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        # One OpenMP thread: scikit-learn's OpenMP runtime next to torch's spins for 100x longer on a
        # busy machine (measured: 49 s instead of 0.3 s for 20 points on 2 shared cores).
        with threadpool_limits(limits=1):
            return np.asarray(
                TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
            )
    except ImportError:
        from openTSNE import TSNE as OpenTSNE  # optional: t-SNE when scikit-learn is absent

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
            import umap  # function-local: umap-learn is optional

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
    # function-local: matplotlib is imported only when drawing; importing mmvla.sim imports MuJoCo
    from matplotlib.lines import Line2D

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
    cols = read_log(log_csv)
    if "step" not in cols:
        raise ValueError(f"{log_csv}: the log has no 'step' column")
    name = f"{Path(log_csv).parent.name}/{Path(log_csv).name}"
    fig = training_curves_figure(cols, columns=columns, title=title or f"training curves: {name}")
    return save_figure(fig, path, dpi)


def success_bar_figure(
    rows: Sequence[Mapping[str, Any]], *, splits: Sequence[str] | None = None, title: str = "success rate"
) -> Figure:
    """Grouped bars: success per row (design, head, ...) and split, with error bars and value labels.

    Args:
        rows: one mapping per bar group: ``"name"``; ``"success"``: ``{split: rate in [0, 1]}``; optional
            ``"ci95"``: ``{split: [low, high]}`` (e.g. Wilson intervals, as :func:`mmvla.evaluation.evaluate.summarise`
            writes) or ``"spread"``: ``{split: ± half-width}`` (e.g. the spread over seeds). An
            evaluation's metrics dict plus a ``"name"`` is a valid row.
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
    return fig


def success_bar_chart(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    splits: Sequence[str] | None = None,
    title: str = "success rate",
    dpi: int = 110,
) -> Path:
    """:func:`success_bar_figure` written atomically as a PNG to ``path``."""
    return save_figure(success_bar_figure(rows, splits=splits, title=title), path, dpi)


def comparison_chart_png(comparison: Mapping[str, Any]) -> bytes:
    """PNG bytes of a comparison's success chart (``comparison.png``): :func:`success_bar_figure` with one
    bar group per design; train, unseen and the blind controls as bars with 95% Wilson intervals.

    Args:
        comparison: ``comparison.json`` (:func:`mmvla.evaluation.compare.build_comparison`).
    """
    multi = len({r["axis"] for r in comparison["variants"]}) > 1
    rows = []
    for r in comparison["variants"]:
        success = {s: v["pooled"]["success"] for s, v in r["success"].items()}
        ci = {s: v["pooled"]["ci95"] for s, v in r["success"].items()}
        for c, v in r.get("controls", {}).items():
            success[c.replace("_", " ")] = v["success"]
            ci[c.replace("_", " ")] = v["ci95"]
        rows.append(
            {"name": f"{r['axis']}: {r['name']}" if multi else r["name"], "success": success, "ci95": ci}
        )
    controls = [
        c.replace("_", " ") for c in BLIND_CONTROLS if all(c in r["controls"] for r in comparison["variants"])
    ]
    fig = success_bar_figure(
        rows, splits=[*SPLITS, *controls], title="success per design (pooled, 95% Wilson CI)"
    )
    return figure_png(fig)


# ---------------------------------------------------------------------------------------------------
# Modality diagnostics
# ---------------------------------------------------------------------------------------------------


def ablation_figure(diag: Mapping[str, Any]) -> Figure:
    """Success per condition, one panel per split, grouped by task family (and "all"), 95% Wilson bars.

    Args:
        diag: the diagnostics (:func:`mmvla.evaluation.diagnostics.run_diagnostics`).
    """
    from matplotlib import colormaps  # function-local: matplotlib is imported only when drawing

    conds = list(diag["conditions"])
    splits = list(diag["conditions"]["none"]["success"])
    fig = _figure(5.2 * len(splits), 3.6)
    axs = fig.subplots(1, len(splits), squeeze=False, sharey=True)
    width = 0.8 / len(conds)
    cmap = colormaps["tab10"]
    for ax, split in zip(axs[0], splits, strict=True):
        groups = ["all", *diag["conditions"]["none"]["per_family"][split]]
        for j, c in enumerate(conds):
            m = diag["conditions"][c]
            vals, lo, hi = [], [], []
            for g in groups:
                if g == "all":
                    v, n = m["success"][split], m["episodes"][split]
                else:
                    f = m["per_family"][split].get(g, {"success": 0.0, "episodes": 0})
                    v, n = f["success"], f["episodes"]
                a, b = wilson_interval(round(v * n), n)
                vals.append(v)
                lo.append(max(0.0, v - a))
                hi.append(max(0.0, b - v))
            x = np.arange(len(groups)) + (j - (len(conds) - 1) / 2) * width
            ax.bar(x, vals, width, yerr=[lo, hi], capsize=2, color=cmap(j % 10), label=c.replace("_", " "))
        ax.set_xticks(np.arange(len(groups)), groups)
        ax.set_title(f"{split} split")
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    axs[0][0].set_ylabel("success (95% CI)")
    axs[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle("success when a modality is removed")
    fig.tight_layout()
    return fig


def routing_figure(diag: Mapping[str, Any]) -> Figure | None:
    """Gate weight per modality and condition (gated), and/or the MoE router's mean expert probability
    per modality for the baseline (one heatmap per layer); None when the fusion exposes no routing."""
    routing = diag.get("routing")
    if not routing:
        return None
    mods = routing["modalities"]
    gate = {c: v for c, v in routing.get("gate_weights", {}).items() if v is not None}
    router = routing.get("router_probs_by_modality", {}).get("none")
    layers = len(router) if router else 0
    panels = (1 if gate else 0) + layers
    fig = _figure(4.2 * panels, 3.4)
    axs = fig.subplots(1, panels, squeeze=False)
    k = 0
    if gate:
        ax = axs[0][0]
        width = 0.8 / len(gate)
        for j, (c, w) in enumerate(gate.items()):
            ax.bar(
                np.arange(len(mods)) + (j - (len(gate) - 1) / 2) * width, w, width, label=c.replace("_", " ")
            )
        ax.set_xticks(np.arange(len(mods)), mods)
        ax.set_ylim(0, 1)
        ax.set_title("gate weight per modality")
        ax.legend(fontsize=6)
        k = 1
    for layer in range(layers):
        ax = axs[0][k + layer]
        arr = np.asarray(router[layer], dtype=float)  # (M, E)
        im = ax.imshow(arr, vmin=0, vmax=max(1e-6, float(np.nanmax(arr))), cmap="viridis", aspect="auto")
        ax.set_yticks(np.arange(len(mods)), mods)
        ax.set_xticks(np.arange(arr.shape[1]), [f"e{e}" for e in range(arr.shape[1])])
        ax.set_title(f"MoE layer {layer}: router prob.")
        for (i, e), v in np.ndenumerate(arr):
            ax.text(e, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def gradient_balance_figure(log: Mapping[str, Sequence[float]]) -> Figure | None:
    """Per-module gradient norm against step (log scale) and each encoder's share of the encoders'
    summed gradient norm (stacked); None when the log (:func:`mmvla.core.logs.read_log`) has no
    gradient columns."""
    groups = [g for g in MODULE_GROUPS if log.get(f"grad_{g}")]
    if not groups:
        return None
    step = np.asarray(log["step"], dtype=float)
    fig = _figure(10, 3.4)
    a, b = fig.subplots(1, 2)
    for g in groups:
        a.plot(step, np.maximum(np.asarray(log[f"grad_{g}"], dtype=float), 1e-12), label=g)
    a.set_yscale("log")
    a.set_xlabel("step")
    a.set_title("gradient norm per module")
    a.legend(fontsize=7)
    enc = [g for g in ENCODER_GROUPS if g in groups]
    norms = np.stack([np.asarray(log[f"grad_{g}"], dtype=float) for g in enc])  # (G, T)
    share = norms / np.maximum(norms.sum(0, keepdims=True), 1e-12)
    b.stackplot(step, share, labels=enc, alpha=0.85)
    b.set_ylim(0, 1)
    b.set_xlabel("step")
    b.set_title("encoder share of gradient norm (modality balance)")
    b.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def write_diagnostics_figures(
    diag: Mapping[str, Any], out_dir: str | os.PathLike[str], log: Mapping[str, Sequence[float]] | None = None
) -> list[Path]:
    """Write ``ablation.png``, ``routing.png`` and ``gradient_balance.png`` of the diagnostics to ``out_dir``
    (the last two when there is something to draw); returns the paths written.

    Args:
        diag: the diagnostics (:func:`mmvla.evaluation.diagnostics.run_diagnostics`, or its
            ``diagnostics.json``).
        out_dir: the diagnostics directory (next to ``diagnostics.json``).
        log: the training log's columns for the imbalance figure; default: the log the diagnostics read
            (``diag["log"]``), when there is one.
    """
    out = Path(out_dir)
    if log is None and diag.get("log") and Path(diag["log"]).is_file():
        log = read_log(diag["log"])
    figures = {
        "ablation.png": ablation_figure(diag),
        "routing.png": routing_figure(diag),
        "gradient_balance.png": gradient_balance_figure(log) if log is not None else None,
    }
    return [save_figure(fig, out / name) for name, fig in figures.items() if fig is not None]


# ---------------------------------------------------------------------------------------------------
# Contrastive pre-training
# ---------------------------------------------------------------------------------------------------


def write_pretrain_embedding_plots(pretrain_dir: str | os.PathLike[str], method: str | None = None) -> str:
    """Draw ``viz/embeddings_before.png`` and ``viz/embeddings_after.png`` of an ``mmvla pretrain`` output
    (:func:`plot_pretrain_embeddings`); returns the method used.

    Args:
        pretrain_dir: the directory holding ``eval_embeddings.safetensors``.
        method: projection method; default t-SNE when a t-SNE library is installed, else PCA.
    """
    out = Path(pretrain_dir)
    method = method or ("tsne" if "tsne" in available_projections() else "pca")
    for which in ("before", "after"):
        plot_pretrain_embeddings(out, out / "viz" / f"embeddings_{which}.png", which=which, method=method)
    return method


def shift_figure(table: Mapping[str, Any]) -> Figure:
    """Success vs severity, one line per shift axis (clean at severity 0), 95% Wilson intervals shaded.

    Args:
        table: :func:`mmvla.evaluation.shifts.shift_table`'s dict: ``{"clean": cell, "axes": {axis:
            {severity name: cell}}}``, a cell holding ``"success"``, ``"ci95"`` and ``"severity"`` (0..3).
    """
    fig = _figure(6.4, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    clean = table["clean"]
    for axis, by_sev in table["axes"].items():
        cells = sorted(by_sev.values(), key=lambda c: float(c["severity"]))
        x = [0.0, *(float(c["severity"]) for c in cells)]
        y = [float(clean["success"]), *(float(c["success"]) for c in cells)]
        lo = [float(clean["ci95"][0]), *(float(c["ci95"][0]) for c in cells)]
        hi = [float(clean["ci95"][1]), *(float(c["ci95"][1]) for c in cells)]
        (line,) = ax.plot(x, y, marker="o", label=axis.replace("_", " "))
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.08)
    ax.set_xticks([0, 1, 2, 3])
    ax.set_xticklabels(["clean", "mild", "medium", "strong"])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate")
    ax.set_title("success under distribution shift (same episodes per condition)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return fig


def shift_chart_png(table: Mapping[str, Any]) -> bytes:
    """:func:`shift_figure` as PNG bytes."""
    return figure_png(shift_figure(table))
