"""A self-contained HTML report of a run: success tables, training curves and rollout clips, images inlined."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

from mmvla.io import atomic_write_text, read_json


def _png_data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _file_data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def training_curve_figure(log: dict[str, list[float]]) -> Any:
    """Loss (log scale) and learning rate against step, from :func:`mmvla.train.read_log` columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3))
    a.plot(log["step"], log["loss"], label="loss")
    if log.get("loss_action"):
        a.plot(log["step"], log["loss_action"], label="action loss", alpha=0.7)
    a.set_yscale("log")
    a.set_xlabel("step")
    a.legend()
    a.set_title("training loss")
    groups = [
        k for k in ("grad_vision", "grad_language", "grad_proprio", "grad_fusion", "grad_head") if log.get(k)
    ]
    for k in groups:
        b.plot(log["step"], log[k], label=k.removeprefix("grad_"))
    b.set_yscale("log")
    b.set_xlabel("step")
    b.set_title("gradient norm per module (modality balance)")
    if groups:
        b.legend(fontsize=7)
    fig.tight_layout()
    return fig


def success_table_html(metrics: dict[str, Any], title: str) -> str:
    """HTML table of success per split and family with 95% Wilson intervals."""
    rows = []
    for split, rate in metrics["success"].items():
        lo, hi = metrics["ci95"][split]
        rows.append(
            f"<tr><td>{split}</td><td>all</td><td>{rate:.1%}</td><td>[{lo:.2f}, {hi:.2f}]</td><td>{metrics['episodes'][split]}</td></tr>"
        )
        for fam, m in metrics["per_family"][split].items():
            flo, fhi = m["ci95"]
            rows.append(
                f"<tr><td></td><td>{html.escape(fam)}</td><td>{m['success']:.1%}</td><td>[{flo:.2f}, {fhi:.2f}]</td><td>{m['episodes']}</td></tr>"
            )
    head = "<tr><th>split</th><th>family</th><th>success</th><th>95% CI</th><th>episodes</th></tr>"
    return f"<h3>{html.escape(title)}</h3><table>{head}{''.join(rows)}</table>"


def write_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Write ``run_dir/report.html`` from what the run directory holds.

    Reads (each optional): ``log.csv``; ``eval*/metrics.json`` (one table each, named by folder);
    ``eval/videos/*.gif`` (up to 6 clips); ``summary.json`` (key facts shown at the top).
    """
    from mmvla.train import read_log

    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory not found: {run}")
    parts = [f"<h1>mmvla run: {html.escape(run.name)}</h1>"]
    if (run / "summary.json").is_file():
        summary = read_json(run / "summary.json", "run summary")
        items = "".join(
            f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in summary.items()
        )
        parts.append(f"<ul>{items}</ul>")
    for metrics_path in sorted(run.glob("eval*/metrics.json")):
        parts.append(success_table_html(read_json(metrics_path, "metrics"), metrics_path.parent.name))
    if (run / "log.csv").is_file():
        import matplotlib.pyplot as plt

        fig = training_curve_figure(read_log(run / "log.csv"))
        parts.append(f'<h3>training</h3><img alt="training curves" src="{_png_data_uri(fig)}">')
        plt.close(fig)
    clips = sorted(run.glob("eval*/videos/*.gif"))[:6]
    if clips:
        imgs = "".join(
            f'<figure><img alt="{html.escape(c.stem)}" src="{_file_data_uri(c, "image/gif")}"><figcaption>{html.escape(c.stem)}</figcaption></figure>'
            for c in clips
        )
        parts.append(f"<h3>rollouts</h3><div class='clips'>{imgs}</div>")
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px}.clips{display:flex;flex-wrap:wrap;gap:8px}"
        "figure{margin:0}figcaption{font-size:11px}"
    )
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>mmvla report</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
    path = Path(out) if out else run / "report.html"
    atomic_write_text(path, page)
    return path
