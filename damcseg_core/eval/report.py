"""Write an evaluation's ``metrics.json``, a self-contained HTML report and a Markdown report.

The HTML file needs nothing next to it: plots are matplotlib PNGs embedded as base64. It holds
the headline table (every protocol), the condition x protocol tables (mIoU with bootstrap
intervals, paired differences, key-class IoU and the fusion weights; see
:mod:`damcseg_core.eval.conditions`), per-class IoU bars, the robustness bars across protocols,
the per-condition and per-complexity tables, example overlays (RGB | prediction | ground truth)
and the histogram of predicted scene-complexity scores. ``report.md`` holds the headline and the
condition x protocol tables, ready to paste into a README or an issue.

Both reports name the fusion and scene quantities as the paper does: omega_m (written ω_m) the
modality reliability weight (eq. 1), S the scene complexity (eq. 5) and D its target density.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from damcseg_core.data.classes import CITYSCAPES_CLASSES, colorize
from damcseg_core.eval.evaluator import EvaluationResult, to_jsonable

__all__ = [
    "REPORT_STYLE",
    "SYMBOLS",
    "bar_chart_html",
    "condition_tables",
    "figure_html",
    "metrics_table",
    "overlay_html",
    "render_html",
    "render_markdown",
    "scene_histogram_html",
    "write_report",
]

REPORT_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
)
"""CSS shared by every HTML report we write (evaluation, demo drive)."""

METRIC_COLUMNS = (
    ("num_images", "images", False),
    ("miou", "mIoU %", True),
    ("boundary_f", "Boundary F %", True),
    ("small_miou", "Small obj mIoU %", True),
    ("tiny_recall", "Tiny recall %", True),
    ("occluded_recall", "Occluded recall %", True),
    ("det_map_50", "mAP@0.5 %", True),
    ("det_map", "mAP@[.5:.95] %", True),
    ("det_map_50_small", "mAP@0.5 100-1024 px %", True),
    ("det_map_50_large", "mAP@0.5 >=1024 px %", True),
    ("det_recall_50", "Det recall@0.5 %", True),
    ("det_boxes_per_frame", "boxes/frame", False),
    ("det_valid_gt_per_frame", "valid objects/frame", False),
    ("det_fp_per_frame", "FP/frame", False),
    ("fps", "FPS", False),
)


SYMBOLS = (
    "Symbols as in the paper: ω_m = reliability weight of modality m in the fusion (eq. 1, "
    "mean over heads and pixels; 0 when the fusion did not see m), S = scene complexity "
    "(eq. 5, 0.4 D + 0.3 O + 0.3 E), D = target density."
)
"""The legend at the top of every evaluation report."""

MARKDOWN_COLUMNS = ("num_images", "miou", "boundary_f", "small_miou", "tiny_recall", "occluded_recall",
                    "det_map_50", "det_boxes_per_frame")  # fmt: skip
"""The headline columns of ``report.md`` (the HTML report shows all of METRIC_COLUMNS)."""

Table = tuple[str, str, list[str], list[list[str]]]
"""A report table: title, note (may be empty), header cells, rows of cells."""


def format_metric(value: Any, percent: bool) -> str:
    """A table cell: percent or plain, one decimal; undefined (None or NaN) as a dash."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{100 * value:.1f}" if percent else f"{value:.1f}"


def _count(value: int | None) -> str:
    return "unknown" if value is None else f"{value:,}"


def metrics_table(rows: dict[str, dict[str, Any]], first: str) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label, _ in METRIC_COLUMNS)
    body = []
    for name, values in rows.items():
        cells = "".join(f"<td>{format_metric(values.get(key), pct)}</td>" for key, _, pct in METRIC_COLUMNS)
        body.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    return f"<table><tr><th>{html.escape(first)}</th>{head}</tr>{''.join(body)}</table>"


def _undefined(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _pct(value: Any, signed: bool = False) -> str:
    if _undefined(value):
        return "–"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _with_interval(value: Any, interval: Any, signed: bool = False) -> str:
    text = _pct(value, signed)
    if interval is None or _undefined(value) or any(_undefined(v) for v in interval):
        return text
    return f"{text} [{_pct(interval[0], signed)}, {_pct(interval[1], signed)}]"


def _plain(value: Any, digits: int = 2) -> str:
    return "–" if _undefined(value) else f"{value:.{digits}f}"


def condition_tables(table: dict[str, Any]) -> list[Table]:
    """The condition x protocol tables of ``metrics["condition_table"]``
    (:meth:`~damcseg_core.eval.conditions.ConditionTable.compute`), values in percent."""
    boot = table["bootstrap"]
    rows, cells, counts = table["rows"], table["cells"], table["counts"]
    protocols = list(table["protocols"])
    labels = [table["protocols"][p]["label"] for p in protocols]
    conf = f"{100 * boot['confidence']:.0f}%"
    noise = (
        f"[{conf} bootstrap interval over frames, {boot['resamples']} resamples, seed {boot['seed']}]"
        if boot["resamples"]
        else "(no bootstrap: --bootstrap 0)"
    )
    out: list[Table] = [
        (
            "mIoU % by condition and protocol",
            noise,
            ["condition", "frames", *labels],
            [
                [
                    row,
                    str(counts[row]),
                    *(
                        _with_interval(cells[row][p]["miou"], cells[row][p]["miou_interval"])
                        for p in protocols
                    ),
                ]
                for row in rows
            ],
        )
    ]
    comps = table["comparisons"]
    key = ", ".join(table["key_classes"])
    for metric, title in (("miou", "mIoU"), ("key_miou", f"mean IoU of {key}")):
        if not comps or (metric == "key_miou" and not table["key_classes"]):
            continue
        header = ["condition"]
        for c in comps:
            header.append(c["label"])
            if metric == "miou" and "recovery" in c["cells"][rows[-1]]:
                header.append(f"{c['label'].split(':')[0]}: gap recovered")
        body = []
        for row in rows:
            line = [row]
            for c in comps:
                d = c["cells"][row]
                text = _with_interval(d[f"{metric}_diff"], d[f"{metric}_diff_interval"], signed=True)
                line.append(f"{text} *" if d[f"{metric}_outside_noise"] else text)
                if metric == "miou" and "recovery" in d:
                    line.append(
                        "–" if _undefined(d["recovery"]) else f"{round(100 * d['recovery'])}%"
                    )  # no "-0%"
            body.append(line)
        out.append(
            (
                f"Paired differences, {title} (points)",
                f"{noise}; * = the interval of the paired difference excludes 0 (outside the noise)"
                + (
                    "; gap recovered = (completed - zero-filled) / (all - zero-filled), where "
                    "all - zero-filled is outside the noise"
                    if metric == "miou" and any("recovery" in c["cells"][rows[-1]] for c in comps)
                    else ""
                ),
                header,
                body,
            )
        )
    omega = [f"ω_{m}" for m in table["modalities"]]
    body = []
    for row in rows:
        for p, label in zip(protocols, labels):
            cell = cells[row][p]
            body.append(
                [
                    row,
                    label,
                    *(_pct(cell["iou"][c]) for c in table["key_classes"]),
                    _with_interval(cell["key_miou"], cell["key_miou_interval"]),
                    *(_plain(cell["omega"][m]) for m in table["modalities"]),
                    _plain(cell["S"]),
                    _plain(cell["D"]),
                ]
            )
    out.append(
        (
            "Key classes (IoU %) and fusion weights by condition and protocol",
            f"mean of 4: mean IoU of {key} {noise}; ω_m, S, D: means over the frames",
            ["condition", "protocol", *table["key_classes"], "mean of 4", *omega, "S", "D"],
            body,
        )
    )
    checks = _omega_checks_table(table, noise)
    if checks is not None:
        out.append(checks)
    return out


def _signed_weight(check: dict[str, Any] | None) -> str:
    if check is None or _undefined(check["diff"]):
        return "–"
    text = f"{check['diff']:+.3f}"
    iv = check["interval"]
    if iv is not None and not any(_undefined(v) for v in iv):
        text += f" [{iv[0]:+.3f}, {iv[1]:+.3f}]"
    return f"{text} *" if check["outside_noise"] else text


def _omega_checks_table(table: dict[str, Any], noise: str) -> Table | None:
    """Mean ω of each condition minus the reference (day) row, and completed minus real ω."""
    checks = table.get("omega_checks") or {}
    ref, minus, comp = (
        checks.get("reference_row"),
        checks.get("minus_reference", {}),
        checks.get("completed_minus_real", {}),
    )
    if not minus and not comp:
        return None
    mods = table["modalities"]
    header = ["condition"]
    if minus:
        header += [f"ω_{m}: minus {ref}" for m in mods]
    comp_mods = [m for m in mods if any(m in comp.get(r, {}) for r in table["rows"])]
    header += [f"ω_{m}: completed - real" for m in comp_mods]
    body = []
    for row in table["rows"]:
        line = [row]
        if minus:
            line += [_signed_weight(minus.get(row, {}).get(m)) if row != ref else "0" for m in mods]
        line += [_signed_weight(comp.get(row, {}).get(m)) for m in comp_mods]
        body.append(line)
    return (
        "Fusion weights: by condition, and completed against real",
        f"{noise}; all sensors; minus {ref}: the rows hold different frames (unpaired: independent "
        "resamples); completed - real: ω_m with m completed by the MCN minus ω_m with m real, paired "
        "over the same frames; * = the interval excludes 0",
        header,
        body,
    )


def _table_markdown(table: Table) -> str:
    title, note, header, rows = table
    lines = [f"### {title}", ""]
    if note:
        lines += [note, ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _table_html(table: Table) -> str:
    title, note, header, rows = table
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    note_html = f"<p>{html.escape(note)}</p>" if note else ""
    return f"<h3>{html.escape(title)}</h3>{note_html}<table><tr>{head}</tr>{body}</table>"


def _summary(m: dict[str, Any]) -> str:
    return (
        f"{m['num_samples']} samples, {_count(m['model']['parameters'])} parameters, device "
        f"{m['model']['device']}, peak memory {m['memory']['peak_bytes'] / 2**20:.0f} MiB "
        f"({m['memory']['kind']}), seed {m['seed']}."
    )


def render_markdown(result: EvaluationResult) -> str:
    """``report.md``: the headline table of every protocol and the condition x protocol tables."""
    m = result.metrics
    protocols: dict[str, Any] = m["protocols"]
    columns = [c for c in METRIC_COLUMNS if c[0] in MARKDOWN_COLUMNS]
    headline: Table = (
        "All protocols",
        "",
        ["protocol", *(label for _, label, _ in columns)],
        [
            [name, *(format_metric(p["all"].get(k), pct) for k, _, pct in columns)]
            for name, p in protocols.items()
        ],
    )
    parts = [
        f"# DAMCSeg evaluation: {m['model']['name']}",
        "",
        _summary(m),
        "",
        SYMBOLS,
        "",
        _table_markdown(headline),
    ]
    if m.get("condition_table"):
        parts += ["", "## Condition x protocol"]
        for t in condition_tables(m["condition_table"]):
            parts += ["", _table_markdown(t)]
    return "\n".join(parts) + "\n"


def figure_html(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def bar_chart_html(labels: list[str], values: list[float | None], title: str, ylabel: str) -> str:
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    fig = Figure(figsize=(max(6.0, 0.45 * len(labels)), 3.2))
    ax = fig.add_subplot()
    heights = [np.nan if v is None else 100 * v for v in values]
    ax.bar(range(len(labels)), heights, color="#3b6ea5")
    for i, h in enumerate(heights):
        if np.isnan(h):  # undefined (e.g. class absent), distinct from a measured 0
            ax.text(i, 1, "n/a", ha="center", va="bottom", fontsize=7, color="grey", rotation=90)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return figure_html(fig)


def scene_histogram_html(scores: list[float]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 3.0))
    ax = fig.add_subplot()
    ax.hist(scores, bins=20, range=(0.0, max(1.0, max(scores))), color="#7a5195")
    ax.set_xlabel("scene complexity score S")
    ax.set_ylabel("frames")
    ax.set_title("Predicted scene complexity")
    return figure_html(fig)


def overlay_html(example: dict[str, Any]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.0, 2.6))
    panels = [
        (
            "RGB",
            example["rgb"] if example["rgb"] is not None else np.zeros((*example["prediction"].shape, 3)),
        ),
        (f"prediction ({example['protocol']})", colorize(example["prediction"])),
        ("ground truth", colorize(example["ground_truth"])),
    ]
    for i, (title, image) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        ax.imshow(np.clip(image, 0, 1) if image.dtype != np.uint8 else image)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{example['title']} [{example['condition']}]", fontsize=9)
    return figure_html(fig)


def render_html(result: EvaluationResult) -> str:
    """The self-contained HTML report of one evaluation."""
    m = result.metrics
    protocols: dict[str, Any] = m["protocols"]
    first = next(iter(protocols))
    main = protocols[first]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>DAMCSeg evaluation</title>"
        f"<style>{REPORT_STYLE}</style></head><body>",
        f"<h1>DAMCSeg evaluation: {html.escape(str(m['model']['name']))}</h1>",
        f"<p>{html.escape(_summary(m))}</p>",
        f"<p>{html.escape(SYMBOLS)}</p>",
        "<h2>All protocols</h2>",
        metrics_table({name: p["all"] for name, p in protocols.items()}, "protocol"),
    ]
    if m.get("condition_table"):
        parts.append("<h2>Condition x protocol</h2>")
        parts += [_table_html(t) for t in condition_tables(m["condition_table"])]
    parts += [
        "<h2>Robustness across protocols</h2>",
        bar_chart_html(
            list(protocols), [p["all"]["miou"] for p in protocols.values()], "mIoU per protocol", "mIoU %"
        ),
        f"<h2>Per-class IoU ({html.escape(first)})</h2>",
        bar_chart_html(
            list(CITYSCAPES_CLASSES),
            main["all"]["iou_per_class"],
            "IoU per class (n/a: absent from GT and prediction)",
            "IoU %",
        ),
        f"<h2>Per condition ({html.escape(first)})</h2>",
        metrics_table(main["condition"], "condition"),
        f"<h2>Per predicted scene complexity ({html.escape(first)})</h2>",
        metrics_table(main["complexity"], "complexity"),
    ]
    if main.get("S"):
        parts += ["<h2>Scene complexity</h2>", scene_histogram_html(main["S"])]
    if result.examples:
        parts.append("<h2>Examples</h2>")
        parts += [overlay_html(e) for e in result.examples]
    parts += [
        "<h2>Metric settings</h2>",
        f"<pre>{html.escape(json.dumps(m['metric_config'], indent=2))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(result: EvaluationResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.html`` and ``report.md`` into ``out_dir`` (created if needed).

    Returns:
        ``{"metrics": path, "html": path, "markdown": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.json"
    # allow_nan=False: a NaN slipping past to_jsonable would write invalid JSON.
    metrics_path.write_text(json.dumps(to_jsonable(result.metrics), indent=2, allow_nan=False))
    html_path = out / "report.html"
    html_path.write_text(render_html(result), encoding="utf-8")
    md_path = out / "report.md"
    md_path.write_text(render_markdown(result), encoding="utf-8")
    return {"metrics": metrics_path, "html": html_path, "markdown": md_path}
