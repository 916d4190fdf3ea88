"""One self-contained HTML page per run: why a policy works, with every image inlined.

:func:`write_report` reads whatever a run directory holds (each part optional) and writes
``report.html`` with no external resource (images are ``data:`` URIs, styles inline, no scripts):

* ``summary.json`` (from ``mmvla demo``): key facts at the top;
* ``comparison.json`` (from ``mmvla compare``): the comparison table, the winner per axis with its
  confidence interval, and the success bar chart (``comparison.png`` or redrawn). For a comparison the
  winner's first run (``runs/<winner>-seed<k>/``) supplies the tables, curves and clips below;
* ``eval*/metrics.json``: success per split and task family with 95% Wilson intervals;
* ``log.csv``: training curves (loss, per-module gradient norms);
* ``diagnostics/diagnostics.json`` and its PNGs (from :mod:`mmvla.evaluation.diagnostics`): success drop per
  removed modality, routing weights, gradient balance;
* ``pretrain.json`` (here or in a sub-directory, from ``mmvla pretrain``): recall@k both directions and
  the modality gap before/after contrastive pre-training (each number also in a ``data-value``
  attribute at full precision);
* ``viz/*.png`` (here or in a sub-directory; from :mod:`mmvla.reporting.figures`): attention overlays, embedding plots
  and other figures. A pre-training directory without plots gets its t-SNE plot of the evaluation
  embeddings drawn here; the attention overlay of an attention-fusion checkpoint needs the model and is
  drawn before the page (:func:`mmvla.evaluation.inspect.report_attention_maps`, by ``mmvla report``);
* ``eval*/shift.json`` and ``eval*/shift/`` (from ``mmvla eval --shift``): the robustness table, a chart
  of success vs severity per axis, the first front-camera frame of each shift at each severity, and a
  gallery of failed beside successful episodes (clean and shifted, same seed) chosen by outcome;
* ``eval*/videos/*.gif``: rollout clips (up to 6).

The page only reads the run directory: it runs neither a model nor the simulator.
"""

from __future__ import annotations

import base64
import contextlib
import html
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mmvla.core.io import atomic_write_text, read_json
from mmvla.core.keys import BLIND_CONTROLS
from mmvla.core.logs import read_log
from mmvla.reporting.figures import (
    comparison_chart_png,
    figure_png,
    plot_pretrain_embeddings,
    shift_chart_png,
    training_curves_figure,
)

MAX_CLIPS = 6
MAX_VIZ = 12


# ------------------------------------------------------------------------ small helpers
def _png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


_MIME = {".png": "image/png", ".gif": "image/gif", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def _file_data_uri(path: Path, mime: str | None = None) -> str:
    mime = mime or _MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def _e(x: Any) -> str:
    return html.escape(str(x))


def _img(uri: str, alt: str, caption: str | None = None) -> str:
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{_e(alt)}" src="{uri}">{cap}</figure>'


def _num(value: float, fmt: str) -> str:
    """A table cell showing ``value`` formatted, with the exact value in ``data-value``."""
    return f'<td data-value="{value!r}">{format(value, fmt)}</td>'


def _section(sid: str, title: str, body: str) -> tuple[str, str, str]:
    return sid, title, f'<section id="{sid}"><h2>{_e(title)}</h2>{body}</section>'


# ------------------------------------------------------------------------ sections
def success_table_html(metrics: Mapping[str, Any], title: str) -> str:
    """HTML table of success per split and family with 95% Wilson intervals."""
    rows = []
    for split, rate in metrics["success"].items():
        lo, hi = metrics["ci95"][split]
        rows.append(
            f"<tr><td>{_e(split)}</td><td>all</td>{_num(rate, '.1%')}<td>[{lo:.2f}, {hi:.2f}]</td>"
            f"<td>{metrics['episodes'][split]}</td></tr>"
        )
        for fam, m in metrics["per_family"][split].items():
            flo, fhi = m["ci95"]
            rows.append(
                f"<tr><td></td><td>{_e(fam)}</td>{_num(m['success'], '.1%')}<td>[{flo:.2f}, {fhi:.2f}]</td>"
                f"<td>{m['episodes']}</td></tr>"
            )
    head = "<tr><th>split</th><th>family</th><th>success</th><th>95% CI</th><th>episodes</th></tr>"
    control = metrics.get("control", "none")
    note = f" (control: {_e(control)})" if control not in (None, "none") else ""
    return f"<h3>{_e(title)}{note}</h3><table>{head}{''.join(rows)}</table>"


def wordings_html(section: Mapping[str, Any]) -> str:
    """HTML table: success per wording set (canonical vs held-out words, ...) and split, side by side,
    with 95% Wilson intervals and the exact McNemar test against the first set on the same episodes."""
    names = list(section)
    splits = list(section[names[0]]["success"])
    head = "<tr><th>wordings</th>" + "".join(
        f"<th>{_e(s)}</th><th>95% CI</th><th>kept</th><th>paired p</th>" for s in splits
    )
    rows = []
    for name in names:
        m = section[name]
        cells = []
        for split in splits:
            lo, hi = m["ci95"][split]
            kept = m["retained"][split]
            pair = m["paired"][split]
            cells.append(
                f"{_num(m['success'][split], '.1%')}<td>[{lo:.2f}, {hi:.2f}]</td>"
                f"<td>{'-' if kept is None else f'{kept:.0%}'}</td>"
                f"<td title='only first {pair['only_first']}, only this {pair['only_second']}'>"
                f"{pair['p_value']:.3g}</td>"
            )
        rows.append(f"<tr><td>{_e(name)}</td>{''.join(cells)}</tr>")
    note = (
        f"<p>Same episodes (seeds) for every set; <i>kept</i> = success / success with {_e(names[0])} "
        "wordings; <i>paired p</i> = exact McNemar test against it. Held-out wordings use words no "
        "training wording contains (mmvla.sim.tabletop.wordings); everyday wordings put shades, sizes, "
        "shape adjectives and common verbs around known words (mmvla.sim.tabletop.everyday).</p>"
    )
    return f"<table>{head}</tr>{''.join(rows)}</table>{note}"


def comparison_html(comparison: Mapping[str, Any], chart_uri: str | None) -> str:
    """The comparison table (★ = winner of its axis), the winner statements and the chart."""
    winners = {a: w for a, w in comparison.get("winners", {}).items() if w}
    head = (
        "<tr><th>axis</th><th>design</th><th>train success</th><th>unseen success</th>"
        "<th>unseen 95% CI (pooled)</th><th>params</th><th>latency p50 / p99 (ms)</th><th>train (s)</th>"
        "<th>blank images</th><th>wrong instruction</th></tr>"
    )
    rows = []
    for r in comparison["variants"]:

        def rate(split: str, r: Mapping[str, Any] = r) -> str:
            s = r["success"].get(split)
            if not s:
                return "<td>-</td>"
            spread = f" ± {s['std']:.1%}" if len(s["per_seed"]) > 1 else ""
            return f'<td data-value="{s["mean"]!r}">{s["mean"]:.1%}{spread}</td>'

        unseen = r["success"].get("unseen")
        ci = f"[{unseen['pooled']['ci95'][0]:.2f}, {unseen['pooled']['ci95'][1]:.2f}]" if unseen else "-"
        win = winners.get(r["axis"], {}).get("name") == r["name"]
        ctrl = "".join(
            _num(r["controls"][c]["success"], ".1%") if c in r["controls"] else "<td>-</td>"
            for c in BLIND_CONTROLS
        )
        rows.append(
            f"<tr{' class=win' if win else ''}><td>{_e(r['axis'])}</td><td>{_e(r['name'])}{' ★' if win else ''}</td>"
            f"{rate('train')}{rate('unseen')}<td>{ci}</td><td>{r['params']['total']:,}</td>"
            f"<td>{r['latency_ms']['p50']:.1f} / {r['latency_ms']['p99']:.1f}</td><td>{r['train_s']:.0f}</td>{ctrl}</tr>"
        )
    s = comparison.get("settings", {})
    settings = (
        f"<p class=note>Seeds {_e(s.get('seeds'))}, {_e(s.get('steps'))} training steps, "
        f"{_e(s.get('eval_episodes'))} evaluation episodes per split and seed, blind controls "
        f"{_e(s.get('controls'))} episodes per split and seed. Success: mean ± sample standard deviation "
        "over seeds; CI: 95% Wilson interval of the pooled episodes. Latency: <code>policy.act()</code> at "
        "batch 1 on one thread. Train: the steps at the median steady-state throughput of the run's log "
        "(its first window, with one-off start-up costs, excluded). Controls: success pooled over both "
        "splits (a policy that uses both "
        "modalities should fail them).</p>"
    )
    statements = "".join(f"<li><b>{_e(a)}</b>: {_e(w['statement'])}</li>" for a, w in winners.items())
    chart = (
        _img(chart_uri, "success per design", "success per design (pooled, 95% Wilson CI)")
        if chart_uri
        else ""
    )
    return f"<ul>{statements}</ul><table>{head}{''.join(rows)}</table>{settings}{chart}"


def diagnostics_html(diag_dir: Path) -> str:
    """Success drop per removed modality (per split and family), routing weights and the figures."""
    diag = read_json(diag_dir / "diagnostics.json", "diagnostics")
    conds = list(diag["conditions"])
    base = diag["conditions"]["none"]
    head = "<tr><th>condition</th><th>split</th><th>success</th><th>drop</th><th>drop per family</th></tr>"
    rows = []
    for c in conds:
        m = diag["conditions"][c]
        for split, rate in m["success"].items():
            d = diag["drop"].get(c, {}).get(split, {})
            fam = ", ".join(f"{_e(f)} {v:+.0%}" for f, v in d.items() if f != "all")
            drop = _num(d["all"], "+.1%") if "all" in d else "<td></td>"
            rows.append(
                f"<tr><td>{_e(c)}</td><td>{_e(split)}</td>{_num(rate, '.1%')}{drop}<td>{fam}</td></tr>"
            )
    parts = [
        f"<p class=note>Checkpoint <code>{_e(diag['checkpoint'])}</code> ({_e(diag['fusion'])} fusion), "
        f"{_e(max(base['episodes'].values(), default=0))} episodes per split and condition; drop = baseline success − success with "
        "the modality removed (the safety layer's blank-camera fallback is off for these rollouts).</p>",
        f"<table>{head}{''.join(rows)}</table>",
    ]
    routing = diag.get("routing") or {}
    gate = {c: w for c, w in (routing.get("gate_weights") or {}).items() if w is not None}
    if gate:
        mods = routing["modalities"]
        ghead = "<tr><th>condition</th>" + "".join(f"<th>{_e(m)}</th>" for m in mods) + "</tr>"
        grows = "".join(
            f"<tr><td>{_e(c)}</td>" + "".join(_num(v, ".3f") for v in w) + "</tr>" for c, w in gate.items()
        )
        parts.append(f"<h3>gate weights (mean over the rollouts)</h3><table>{ghead}{grows}</table>")
    bal = diag.get("gradient_balance")
    if bal and bal.get("encoder_share"):
        share = ", ".join(f"{_e(g)} {s:.0%}" for g, s in bal["encoder_share"].items())
        parts.append(
            f"<p>Gradient share of the encoders over the {_e(bal['window'])}: {share}"
            + (f"; dominant: <b>{_e(bal['dominant'])}</b>" if bal.get("dominant") else "")
            + "</p>"
        )
    for name, cap in (
        ("ablation.png", "success when a modality is removed"),
        ("routing.png", "routing weights"),
        ("gradient_balance.png", "modality imbalance during training"),
    ):
        if (diag_dir / name).is_file():
            parts.append(_img(_file_data_uri(diag_dir / name), cap, cap))
    return "".join(parts)


def pretrain_html(pretrain: Mapping[str, Any]) -> str:
    """Recall@1/5 both directions and the modality gap, before and after pre-training, per split."""
    metrics = pretrain.get("metrics", {})
    cols = [
        ("recall_i2t@1", "image→text R@1"),
        ("recall_i2t@5", "image→text R@5"),
        ("recall_t2i@1", "text→image R@1"),
        ("recall_t2i@5", "text→image R@5"),
        ("modality_gap", "modality gap"),
        ("gap_to_variance_ratio", "gap / variance"),
    ]
    head = (
        "<tr><th>split</th><th></th><th>candidates</th>"
        + "".join(f"<th>{_e(t)}</th>" for _, t in cols)
        + "</tr>"
    )
    rows = []
    splits = list(dict.fromkeys([*metrics.get("before", {}), *metrics.get("after", {})]))
    for split in splits:
        for when in ("before", "after"):
            m = metrics.get(when, {}).get(split)
            if not m:
                continue
            cells = "".join(_num(float(m[k]), ".3f") if k in m else "<td>-</td>" for k, _ in cols)
            rows.append(
                f"<tr data-split='{_e(split)}' data-when='{when}'><td>{_e(split) if when == 'before' else ''}</td>"
                f"<td>{when}</td><td>{int(m.get('candidates', 0))}</td>{cells}</tr>"
            )
    facts = (
        f"<p class=note>{_e(pretrain.get('steps'))} steps; evaluation set: "
        f"{_e(pretrain.get('eval', {}).get('instructions'))} instructions "
        f"({_e(pretrain.get('eval', {}).get('unseen_instructions'))} unseen compositions), "
        f"{_e(pretrain.get('eval', {}).get('rounds'))} rounds. Modality gap: distance between the centroids of "
        "the L2-normalised image and text embeddings (raw gap first, then its ratio to the within-modality "
        "spread).</p>"
    )
    return f"{facts}<table class=pretrain>{head}{''.join(rows)}</table>"


# ------------------------------------------------------------------------ discovery
def shift_html(eval_dir: Path) -> str:
    """The shift suite of one evaluation directory: table, chart, example frames, gallery by outcome."""
    res = read_json(eval_dir / "shift.json", "shift suite")
    table = res["table"]
    c = table["clean"]
    rows = [
        f"<tr><td>clean</td><td></td><td>{c['success']:.0%}</td>"
        f"<td>[{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]</td><td></td><td></td></tr>"
    ]
    for axis, by_sev in table["axes"].items():
        for name, m in by_sev.items():
            kept = "-" if m["retained"] is None else f"{m['retained']:.0%}"
            p = m["paired"]
            rows.append(
                f"<tr><td>{_e(axis)}</td><td>{_e(name)}</td><td>{m['success']:.0%}</td>"
                f"<td>[{m['ci95'][0]:.2f}, {m['ci95'][1]:.2f}]</td><td>{kept}</td>"
                f"<td>{p['only_clean']} / {p['only_shifted']} (p = {p['p_value']:.3g})</td></tr>"
            )
    html_ = (
        f"<p>{_e(res.get('episodes_per_cell'))} episodes per cell, the same seeds in every condition "
        f"({_e(round(float(res.get('seconds', 0))))} s). <i>lost / won</i>: episodes only the clean run / only "
        "the shifted run solved; <i>p</i>: exact McNemar test on those pairs.</p>"
        "<table><tr><th>axis</th><th>severity</th><th>success</th><th>95% CI</th><th>retained</th>"
        "<th>lost / won</th></tr>"
        + "".join(rows)
        + "</table>"
        + _img(_png_data_uri(shift_chart_png(table)), "success vs severity")
    )
    images = res.get("images", {})
    frames = images.get("frames", {})
    if frames:
        html_ += "<h3>What the policy sees (front camera, first frame, same seed)</h3><div class=figs>"
        for key, name in frames.items():
            path = eval_dir / "shift" / "frames" / name
            if path.is_file():
                html_ += _img(_file_data_uri(path), key, key.replace("/", " "))
        html_ += "</div>"
    gallery = images.get("gallery", [])
    if gallery:
        html_ += "<h3>Gallery by outcome: clean beside shifted, first and last frame</h3>"
        for g in gallery:
            cap = (
                f"{g['axis']} {g['severity']} ({g['outcome'].replace('_', ' ')}), seed {g['seed']}: "
                f"clean {'ok' if g['clean_success'] else 'fail'}, shifted {'ok' if g['shifted_success'] else 'fail'}"
                f" — told “{g['given_instruction']}”"
            )
            imgs = "".join(
                _img(_file_data_uri(eval_dir / "shift" / "gallery" / g["images"][k]), k, k.replace("_", " "))
                for k in ("clean_first", "clean_last", "shifted_first", "shifted_last")
                if k in g["images"] and (eval_dir / "shift" / "gallery" / g["images"][k]).is_file()
            )
            html_ += f"<p>{_e(cap)}</p><div class=figs>{imgs}</div>"
    return html_


def focus_run(run: Path, comparison: Mapping[str, Any] | None) -> Path:
    """The directory whose tables, curves and clips are shown: the run, or a comparison's winner run."""
    if comparison is None:
        return run
    winners = [w for w in comparison.get("winners", {}).values() if w]
    for w in winners:
        row = next((r for r in comparison["variants"] if r["variant"] == w["variant"]), None)
        for d in row["runs"] if row else []:
            p = Path(d)
            if not p.is_absolute():
                p = run / p
            if p.is_dir():
                return p
    return run


def _viz_pngs(dirs: Iterable[Path]) -> list[Path]:
    found: list[Path] = []
    for d in dirs:
        for p in [*sorted(d.glob("viz/*.png")), *sorted(d.glob("*/viz/*.png"))]:
            if p not in found and "runs" not in p.relative_to(d).parts:
                found.append(p)
    return found[:MAX_VIZ]


def _ensure_embedding_plots(run: Path) -> None:
    """Draw ``viz/embeddings_after.png`` (:func:`mmvla.reporting.figures.plot_pretrain_embeddings`) in the run
    and each sub-directory that holds pre-training embeddings but no figure under ``viz/`` yet."""
    for pre in [run, *sorted(p for p in run.iterdir() if p.is_dir())]:
        if (pre / "eval_embeddings.safetensors").is_file() and not list(pre.glob("viz/*.png")):
            with contextlib.suppress(ValueError, RuntimeError, ImportError):
                plot_pretrain_embeddings(pre, pre / "viz" / "embeddings_after.png", which="after")


def training_curves_uri(log_csv: Path) -> str | None:
    """Training curves of ``log_csv`` (:func:`mmvla.reporting.figures.training_curves_figure`) as a PNG data
    URI; None when the log has nothing to plot."""
    try:
        fig = training_curves_figure(read_log(log_csv))
    except ValueError:
        return None
    return _png_data_uri(figure_png(fig))


# ------------------------------------------------------------------------ the page
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "td:first-child,th:first-child,td:nth-child(2){text-align:left}tr.win{background:#eef7ee}"
    ".clips,.figs{display:flex;flex-wrap:wrap;gap:10px}figure{margin:.3em 0}img{max-width:100%}"
    "figcaption{font-size:12px;color:#555}.note{font-size:13px;color:#444}nav a{margin-right:1em}"
    "code{background:#f4f4f4;padding:0 3px}"
)


def write_report(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, draw: bool = True
) -> Path:
    """Write ``run_dir/report.html`` (or ``out``) from what the run directory holds; returns its path.

    See the module docstring for the files read; every one is optional and every image is inlined.
    With ``draw`` (default), pre-training embedding plots the run lacks are first written under ``viz/``.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"run directory not found: {run}")
    sections: list[tuple[str, str, str]] = []
    top: list[str] = []
    if (run / "summary.json").is_file():
        summary = read_json(run / "summary.json", "run summary")
        top.append(
            "<ul>" + "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in summary.items()) + "</ul>"
        )

    comparison = (
        read_json(run / "comparison.json", "comparison") if (run / "comparison.json").is_file() else None
    )
    if comparison is not None:
        if (run / "comparison.png").is_file():
            chart = _file_data_uri(run / "comparison.png")
        else:
            chart = _png_data_uri(comparison_chart_png(comparison))
        sections.append(_section("comparison", "Comparison of designs", comparison_html(comparison, chart)))
    focus = focus_run(run, comparison)
    where = "" if focus == run else f" — winner run {focus.name}"

    evals = {p.parent.name: read_json(p, "metrics") for p in sorted(focus.glob("eval*/metrics.json"))}
    tables = [success_table_html(m, name) for name, m in evals.items()]
    if tables:
        sections.append(_section("success", f"Success{where}", "".join(tables)))
    worded = [m for m in evals.values() if "wordings" in m]
    if worded:
        sections.append(
            _section(
                "language",
                f"Language: how instructions are worded{where}",
                wordings_html(worded[0]["wordings"]),
            )
        )

    shifted = sorted(focus.glob("eval*/shift.json"))
    if shifted:
        sections.append(_section("shift", f"Distribution shift{where}", shift_html(shifted[0].parent)))

    uri = training_curves_uri(focus / "log.csv") if (focus / "log.csv").is_file() else None
    if uri is not None:
        sections.append(_section("training", f"Training{where}", _img(uri, "training curves")))

    diag_dirs = [
        d for d in (run / "diagnostics", focus / "diagnostics") if (d / "diagnostics.json").is_file()
    ]
    if diag_dirs:
        sections.append(_section("diagnostics", "Modality diagnostics", diagnostics_html(diag_dirs[0])))

    pre = [p for p in (run / "pretrain.json", *sorted(run.glob("*/pretrain.json"))) if p.is_file()]
    if pre:
        body = "".join(
            (f"<h3>{_e(p.parent.name)}</h3>" if len(pre) > 1 else "")
            + pretrain_html(read_json(p, "pretrain"))
            for p in pre
        )
        sections.append(_section("pretrain", "Contrastive pre-training: alignment", body))

    if draw:
        _ensure_embedding_plots(run)
    figs = [(_file_data_uri(p), p.stem.replace("_", " ")) for p in _viz_pngs(dict.fromkeys([run, focus]))]
    if figs:
        body = "<div class=figs>" + "".join(_img(uri, cap, cap) for uri, cap in figs) + "</div>"
        sections.append(_section("viz", "Attention and embeddings", body))

    clips = sorted(focus.glob("eval*/videos/*.gif"))[:MAX_CLIPS]
    if clips:
        body = (
            "<div class=clips>" + "".join(_img(_file_data_uri(c), c.stem, c.stem) for c in clips) + "</div>"
        )
        sections.append(_section("rollouts", f"Rollouts{where}", body))

    nav = "<nav>" + "".join(f'<a href="#{sid}">{_e(t)}</a>' for sid, t, _ in sections) + "</nav>"
    body = (
        "".join(top)
        + (nav if sections else "<p>Nothing to report yet.</p>")
        + "".join(s for _, _, s in sections)
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>mmvla report: {_e(run.name)}</title><style>{STYLE}</style></head>"
        f"<body><h1>mmvla report: {_e(run.resolve().name)}</h1>{body}</body></html>"
    )
    path = Path(out) if out else run / "report.html"
    atomic_write_text(path, page)
    return path
