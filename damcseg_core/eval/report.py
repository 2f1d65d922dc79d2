"""Write an evaluation's ``metrics.json`` and a self-contained HTML report.

The HTML file needs nothing next to it: plots are matplotlib PNGs embedded as base64. It holds
the headline table (every protocol), per-class IoU bars, the robustness bars across protocols,
the per-condition and per-complexity tables, example overlays (RGB | prediction | ground truth)
and the histogram of predicted scene-complexity scores.
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
    "bar_chart_html",
    "figure_html",
    "metrics_table",
    "overlay_html",
    "render_html",
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
        f"<p>{m['num_samples']} samples, {_count(m['model']['parameters'])} parameters, device "
        f"{html.escape(m['model']['device'])}, peak memory {m['memory']['peak_bytes'] / 2**20:.0f} MiB "
        f"({html.escape(m['memory']['kind'])}), seed {m['seed']}.</p>",
        "<h2>All protocols</h2>",
        metrics_table({name: p["all"] for name, p in protocols.items()}, "protocol"),
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
    """Write ``metrics.json`` and ``report.html`` into ``out_dir`` (created if needed).

    Returns:
        ``{"metrics": path, "html": path}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / "metrics.json"
    # allow_nan=False: a NaN slipping past to_jsonable would write invalid JSON.
    metrics_path.write_text(json.dumps(to_jsonable(result.metrics), indent=2, allow_nan=False))
    html_path = out / "report.html"
    html_path.write_text(render_html(result), encoding="utf-8")
    return {"metrics": metrics_path, "html": html_path}
