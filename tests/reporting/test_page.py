"""The HTML report: self-contained, faithful to the numbers it shows, and rendered by headless Chromium."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from mmvla.core.io import atomic_write_json
from mmvla.core.logs import read_log
from mmvla.evaluation.compare import CompareConfig, build_comparison
from mmvla.evaluation.diagnostics import _drops, write_diagnostics
from mmvla.evaluation.evaluate import EpisodeResult, summarise
from mmvla.evaluation.video import write_episode_gif
from mmvla.modules.contrastive import alignment_metrics, modality_gap
from mmvla.reporting.figures import write_diagnostics_figures
from mmvla.reporting.page import write_report
from mmvla.training.trainer import LOG_FIELDS

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: `apt-get install -y chromium`, see scripts/install-chromium.sh)",
)


# ------------------------------------------------------------------------ a synthetic run directory
def _episodes(rate: float, n: int = 8) -> list[EpisodeResult]:
    out = []
    for split in ("train", "unseen"):
        for i in range(n):
            fam = "pick" if i % 2 else "push"
            out.append(
                EpisodeResult(
                    split, i, fam, "pick up the red cube", "pick up the red cube", i < rate * n, 20 + i
                )
            )
    return out


def _comparison_results() -> list[dict]:
    res = []
    for name, k in (("film", 7), ("early", 2)):
        res.append(
            {
                "variant": f"fusion-{name}",
                "axis": "fusion",
                "name": name,
                "seed": 0,
                "run_dir": f"runs/fusion-{name}-seed0",
                "params": {"total": 1000, "trainable": 1000, "frozen_external": 0},
                "latency": {"p50_ms": 1.5, "p99_ms": 2.5},
                "train": {"train_s": 12.0},
                "success": {"train": k / 8, "unseen": (k // 2) / 8},
                "counts": {
                    "train": {"successes": k, "episodes": 8},
                    "unseen": {"successes": k // 2, "episodes": 8},
                },
                "controls": {},
            }
        )
    return res


def _pretrain_metrics(g: torch.Generator) -> tuple[dict, dict]:
    """Metrics computed with the library's functions on random embeddings (2 rounds, 6 instructions)."""
    img = torch.randn(12, 16, generator=g)  # (R·N, E), round r holds rows r·6 .. r·6+5
    txt = torch.randn(6, 16, generator=g)  # (N, E)
    per_round = [alignment_metrics(img[r * 6 : (r + 1) * 6], txt, ks=(1, 5)).as_dict() for r in range(2)]
    m = {k: float(np.mean([p[k] for p in per_round])) for k in per_round[0]}
    m.update(modality_gap(img, txt).as_dict())
    m.update({"candidates": 6.0, "frames": 12.0})
    return {"all": m}, m


def make_run(root: Path) -> tuple[Path, dict]:
    run = root / "run"
    metrics = summarise(_episodes(0.5))
    atomic_write_json(run / "eval" / "metrics.json", {**metrics, "control": "none"})
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (32, 64, 3), dtype=np.uint8) for _ in range(4)]
    write_episode_gif(run / "eval" / "videos" / "train_0_ok.gif", frames, "pick up the red cube", True)
    write_episode_gif(
        run / "eval" / "videos" / "unseen_1_fail.gif", frames[::-1], "push the blue slab", False
    )
    (run / "log.csv").parent.mkdir(parents=True, exist_ok=True)
    with (run / "log.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        w.writeheader()
        for i, step in enumerate(range(25, 225, 25)):
            row = dict.fromkeys(LOG_FIELDS, 1.0)
            row.update({"step": step, "loss": 1.0 / (i + 1), "grad_vision": 0.5 + i, "grad_language": 0.1})
            w.writerow(row)
    cfg = CompareConfig(fusions=("film", "early"))
    atomic_write_json(run / "comparison.json", build_comparison(_comparison_results(), cfg, run))
    conds = {"none": summarise(_episodes(0.5)), "blank_images": summarise(_episodes(0.125))}
    diag = {
        "checkpoint": "run/policy",
        "fusion": "gated",
        "modalities": ["language", "proprio", "vision"],
        "conditions": conds,
        "drop": {"blank_images": _drops(conds["none"], conds["blank_images"])},
        "routing": {
            "modalities": ["language", "proprio", "vision"],
            "gate_weights": {"none": [0.2, 0.1, 0.7]},
        },
        "gradient_balance": None,
    }
    write_diagnostics(diag, run / "diagnostics")
    write_diagnostics_figures(diag, run / "diagnostics", read_log(run / "log.csv"))
    g = torch.Generator().manual_seed(0)
    before, _ = _pretrain_metrics(g)
    after, _ = _pretrain_metrics(g)
    atomic_write_json(
        run / "pretrain" / "pretrain.json",
        {"steps": 5, "eval": {"instructions": 6, "rounds": 2}, "metrics": {"before": before, "after": after}},
    )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.imshow(rng.random((4, 8)))
    (run / "viz").mkdir()
    fig.savefig(run / "viz" / "attention_overlay.png")
    plt.close(fig)
    return run, {"before": before, "after": after, "eval": metrics}


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.refs: list[tuple[str, str, str]] = []  # (tag, attribute, value) of every link-like attribute
        self.tags: list[str] = []
        self.pretrain: dict[tuple[str, str], list[float]] = {}
        self._row: tuple[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for k in ("src", "href", "srcset", "poster", "data"):
            if k in a:
                self.refs.append((tag, k, a[k]))
        if tag == "tr" and "data-split" in a:
            self._row = (a["data-split"], a["data-when"])
            self.pretrain[self._row] = []
        elif tag == "tr":
            self._row = None
        if tag == "td" and self._row is not None and "data-value" in a:
            self.pretrain[self._row].append(float(a["data-value"]))


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run, truth = make_run(tmp_path_factory.mktemp("report"))
    return write_report(run), truth


def test_report_is_self_contained(report):
    path, _ = report
    page = _Page()
    page.feed(path.read_text())
    assert len(page.imgs) >= 8  # comparison chart, curves, 3 diagnostics figures, viz png, 2 clips
    assert all(src.startswith(("data:image/png;base64,", "data:image/gif;base64,")) for src in page.imgs)
    for tag, attr, value in page.refs:  # nothing fetched from anywhere: only data URIs and in-page anchors
        assert value.startswith(("data:", "#")), (tag, attr, value[:60])
    assert not {"script", "link", "iframe", "object", "embed"} & set(page.tags)
    text = path.read_text()
    for heading in ("Comparison of designs", "Success", "Training", "Modality diagnostics", "Rollouts"):
        assert heading in text
    assert "film ★" in text  # the winner of the comparison is marked


def test_report_numbers_equal_the_library_functions(report):
    path, truth = report
    page = _Page()
    page.feed(path.read_text())
    cols = (
        "recall_i2t@1",
        "recall_i2t@5",
        "recall_t2i@1",
        "recall_t2i@5",
        "modality_gap",
        "gap_to_variance_ratio",
    )
    for when in ("before", "after"):
        shown = page.pretrain[("all", when)]
        assert shown == [truth[when]["all"][k] for k in cols]  # exact: repr round-trips floats
    text = path.read_text()
    assert f'data-value="{truth["eval"]["success"]["train"]!r}"' in text


@needs_chromium
def test_report_renders_in_headless_chromium(report, tmp_path):
    path, _ = report
    n_img = path.read_text().count("<img ")
    # A copy with a check that runs after every image has loaded: the report itself has no scripts.
    probe = tmp_path / "probe.html"
    check = (
        "<pre id='mmvla-check'></pre><script>window.addEventListener('load',()=>{"
        "document.getElementById('mmvla-check').textContent=JSON.stringify([...document.images].map("
        "i=>({data:i.src.startsWith('data:image/'),w:i.naturalWidth,h:i.naturalHeight,ok:i.complete})));});"
        "</script>"
    )
    probe.write_text(path.read_text().replace("</body>", check + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", probe.as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert dom.returncode == 0, dom.stderr[-2000:]
    start = dom.stdout.index('<pre id="mmvla-check">') + len('<pre id="mmvla-check">')
    images = json.loads(dom.stdout[start : dom.stdout.index("</pre>", start)])
    assert len(images) == n_img
    assert all(i["data"] and i["ok"] and i["w"] > 0 and i["h"] > 0 for i in images), images

    shot = tmp_path / "report_screenshot.png"
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run(
            [
                CHROMIUM,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--screenshot={shot}",
                "--window-size=1200,2000",
                path.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape == (2000, 1200, 3)
    assert img.std() > 10 and (img < 250).mean() > 0.02  # not a blank page: text, tables and figures
    dest = os.environ.get("MMVLA_REPORT_SCREENSHOT")
    if dest:  # e.g. benchmarks/results/report_screenshot.png, kept as an artifact
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, dest)


def test_report_of_an_empty_directory(tmp_path):
    path = write_report(tmp_path)
    assert "Nothing to report yet" in path.read_text()
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "missing")


def test_report_command_draws_an_attention_overlay_for_an_attention_checkpoint(tmp_path):
    from mmvla.cli import main
    from mmvla.core.keys import ACTION_KEY, STATE_KEY
    from mmvla.policy import PolicyConfig, VLAPolicy
    from mmvla.policy.normalize import Normalizer

    cfg = PolicyConfig(
        image_size=32,
        dim=32,
        instructions=("pick up the red cube", "push the blue slab to the left"),
        fusion="cross_attention",
        fusion_options={"num_heads": 2, "num_layers": 1},
        head={"kind": "regression", "chunk_size": 2, "hidden": 32},
    )
    stats = {
        STATE_KEY: {"mean": [0.0] * 5, "std": [1.0] * 5},
        ACTION_KEY: {"mean": [0.0] * 7, "std": [1.0] * 7},
    }
    norm = Normalizer(stats, {STATE_KEY: "mean_std", ACTION_KEY: "mean_std"})
    VLAPolicy(cfg, norm).save_pretrained(tmp_path / "run" / "policy")
    assert (
        write_report(tmp_path / "run") and not (tmp_path / "run" / "viz").exists()
    )  # the page runs no model
    assert main(["report", "--run", str(tmp_path / "run")]) == 0
    path = tmp_path / "run" / "report.html"
    overlay = tmp_path / "run" / "viz" / "attention_overlay_policy.png"
    assert overlay.is_file()
    page = _Page()
    page.feed(path.read_text())
    assert len(page.imgs) == 1 and page.imgs[0].startswith("data:image/png;base64,")
    assert "attention overlay policy" in path.read_text()
    mtime = overlay.stat().st_mtime_ns
    assert main(["report", "--run", str(tmp_path / "run")]) == 0  # drawn once: the next report reuses it
    assert overlay.stat().st_mtime_ns == mtime
