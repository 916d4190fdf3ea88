"""mmvla.reporting.figures: the PNG helper, attention overlays of given maps, projections, training curves,
success and comparison charts and the diagnostics figures."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from mmvla.core.logs import read_log
from mmvla.evaluation.inspect import AttentionMaps
from mmvla.reporting import figures as viz


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def _maps(words: int = 3, grid: tuple[int, int] = (4, 4), size: int = 32) -> AttentionMaps:
    """Attention maps as :mod:`mmvla.evaluation.inspect` returns them, made up: (L, h, w) summing to 1."""
    rng = np.random.default_rng(0)
    heat = rng.random((words, *grid))
    return AttentionMaps(
        instruction="pick up the red cube",
        words=["pick", "up", "the", "red", "cube"][:words],
        heatmaps=heat / heat.sum(axis=(1, 2), keepdims=True),
        frame=rng.integers(0, 255, (size, size * grid[1] // grid[0], 3), dtype=np.uint8),
        camera="front",
        fusion="cross_attention",
        layer="layers[1].attn['language']",
        camera_share=np.full(words, 0.5),
    )


# ------------------------------------------------------------------------------- saving and overlays


def test_figure_png_and_save_figure(tmp_path) -> None:
    fig = viz.training_curves_figure({"step": [1.0, 2.0], "loss": [2.0, 1.0]})
    png = viz.figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert viz.save_figure(fig, tmp_path / "sub" / "f.png").read_bytes() == png
    assert not list((tmp_path / "sub").glob(".*"))  # no temporary file left behind


def test_overlay_png(tmp_path) -> None:
    maps = _maps(words=5)
    fig = viz.attention_overlay_figure(maps)
    assert len(fig.axes) == 8 and sum(ax.has_data() for ax in fig.axes) == 6  # frame + one per word
    out = viz.plot_attention_overlay(maps, tmp_path / "sub" / "overlay.png")
    w, h = _png_size(out)
    assert w > 300 and h > 100
    assert not list((tmp_path / "sub").glob(".*"))  # no temporary file left behind


# ------------------------------------------------------------------------------- projections


def test_pca_projection_is_an_isometry_on_a_plane() -> None:
    # unit vectors in a 2-D subspace stay in a 2-D affine plane after centring: PCA keeps all distances
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(8, 2)))[0]  # (8, 2) orthonormal
    ang = rng.uniform(0, 2 * np.pi, 12)
    pts = np.stack([np.cos(ang), np.sin(ang)], 1) @ basis.T  # (12, 8), unit norm
    proj = viz.embedding_projection(pts[:7], pts[7:], method="pca")
    assert proj.method == "pca" and proj.note == ""
    y = np.concatenate([proj.vision, proj.text])
    d_in = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    d_out = np.linalg.norm(y[:, None] - y[None], axis=-1)
    np.testing.assert_allclose(d_out, d_in, atol=1e-9)


def test_projection_falls_back_to_pca_with_a_note(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap -> ImportError
    x = torch.randn(10, 6)
    with pytest.warns(UserWarning, match="umap unavailable"):
        proj = viz.embedding_projection(x[:6], x[6:], method="umap")
    assert proj.method == "pca" and "umap-learn" in proj.note
    with pytest.raises(ValueError, match="method"):
        viz.embedding_projection(x[:6], x[6:], method="lda")


@pytest.mark.slow
def test_tsne_projection_when_available() -> None:
    if "tsne" not in viz.available_projections():
        pytest.skip("neither scikit-learn nor openTSNE is installed")
    x = torch.randn(20, 8)
    proj = viz.embedding_projection(x[:12], x[12:], method="tsne")
    assert proj.method == "tsne" and proj.vision.shape == (12, 2) and proj.text.shape == (8, 2)


def test_plot_embeddings_png(tmp_path) -> None:
    torch.manual_seed(0)
    labels = ["pick up the red cube", "push the green slab to the left", "pick up the blue cylinder"]
    v = torch.randn(9, 8)
    t = torch.randn(3, 8)
    proj = viz.plot_embeddings(
        v,
        t,
        tmp_path / "emb.png",
        vision_labels=[labels[i % 3] for i in range(9)],
        text_labels=labels,
        method="pca",
    )
    assert proj.vision.shape == (9, 2)
    assert _png_size(tmp_path / "emb.png")[0] > 500
    viz.plot_embeddings(v, t, tmp_path / "emb_plain.png", method="pca")
    assert _png_size(tmp_path / "emb_plain.png")[0] > 200
    with pytest.raises(ValueError, match="one label per embedding row"):
        viz.plot_embeddings(
            v, t, tmp_path / "bad.png", vision_labels=labels, text_labels=labels, method="pca"
        )


# ------------------------------------------------------------------------------- curves and charts


def test_training_curves_train_and_pretrain_logs(tmp_path) -> None:
    train_log = tmp_path / "train.csv"
    train_log.write_text(
        "step,loss,loss_action,loss_aux,lr,grad_norm,grad_vision,grad_language,samples_per_s,elapsed_s\n"
        + "".join(f"{s},{1 / s},{1 / s},0.0,0.001,{s},{s},{2 * s},100,{s}\n" for s in range(1, 6))
    )
    assert _png_size(viz.plot_training_curves(train_log, tmp_path / "train.png"))[0] > 500
    panels = viz._panels(read_log(train_log), None)
    assert panels[0] == ("loss", ["loss", "loss_action"])  # the all-zero aux loss is skipped
    assert panels[1] == ("gradient norm", ["grad_norm", "grad_vision", "grad_language"])
    pre_log = tmp_path / "pre.csv"
    pre_log.write_text("step,loss,logit_scale,batch_acc\n1,3.0,14.3,0.1\n2,2.5,15.0,0.3\n")
    viz.plot_training_curves(pre_log, tmp_path / "pre.png", columns=["loss", "logit_scale"])
    with pytest.raises(ValueError, match="nope"):
        viz.plot_training_curves(pre_log, tmp_path / "x.png", columns=["nope"])


def test_success_bar_chart(tmp_path) -> None:
    rows = [
        {
            "name": "film",
            "success": {"train": 0.8, "unseen": 0.4},
            "ci95": {"train": [0.7, 0.9], "unseen": [0.3, 0.5]},
        },
        {"name": "cross_attention", "success": {"train": 0.6, "unseen": 0.5}, "spread": {"train": 0.05}},
    ]
    out = viz.success_bar_chart(rows, tmp_path / "bars.png", title="success per design")
    assert _png_size(out)[0] > 300
    with pytest.raises(ValueError, match="'success' mapping"):
        viz.success_bar_chart([{"name": "x"}], tmp_path / "bad.png")


def test_training_curves_figure_of_a_log() -> None:
    log = {"step": [1.0, 2.0], "loss": [2.0, 1.0], "lr": [1e-3, 1e-3], "grad_proprio": []}
    fig = viz.training_curves_figure(log)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "learning rate"]
    with pytest.raises(ValueError, match="no 'step'"):
        viz.training_curves_figure({"step": [], "loss": []})
