"""Evaluate a drive (a bag with ground truth) frame by frame, over time, and write an HTML report.

Two sources of predictions share one report:

* :func:`evaluate_drive` takes what the ROS node published during a live replay, as plain
  :class:`FrameRecord` s (``damcseg_ros.record_decoding`` decodes the recorded messages: this
  module knows no message type), and matches them to the input bag's ground truth by header
  stamp; latency is recorder receive time minus replay publish time (both wall clock).
* :func:`evaluate_bag_offline` (``damcseg-bag-eval``) runs the :class:`Predictor` over the bag
  directly, without DDS; latency is then the model's inference time.

The report shows metrics per condition and per sensor state, boxes per frame against the
ground-truth objects, timelines of the scene complexity S (D, O, E), the DSAF branch weights
alpha / beta / gamma, the modality weights omega and states, latency, and example overlays.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from damcseg_core import MODALITIES
from damcseg_core.data.classes import IGNORE_INDEX, NUM_CLASSES
from damcseg_core.data.rosbag_io import DEFAULT_TOPICS, BagTopics, read_bag_samples
from damcseg_core.data.targets import valid_objects
from damcseg_core.eval.evaluator import to_jsonable
from damcseg_core.eval.metrics import MetricSuite, timing_stats
from damcseg_core.eval.report import REPORT_STYLE, figure_html, metrics_table, overlay_html
from damcseg_core.eval.segmentation_metrics import SegmentationIoU

__all__ = ["FrameRecord", "evaluate_bag_offline", "evaluate_drive", "sensor_state", "write_drive_report"]


@dataclasses.dataclass
class FrameRecord:
    """What the system produced for one input frame, in the Predictor's names.

    ``mask`` is None when the frame was dropped; the scene fields are None when nothing about the
    scene was received for it. Built from a :class:`~damcseg_core.inference.PredictionResult`
    (:meth:`from_prediction`) or by ``damcseg_ros.record_decoding`` from recorded messages.
    """

    stamp_ns: int
    mask: np.ndarray | None = None  # HxW uint8 class ids
    boxes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 4), np.float32))  # xyxy
    scores: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    labels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    S: float | None = None  # scene complexity and its parts D, O, E
    D: float | None = None
    O: float | None = None  # noqa: E741 - the paper's name
    E: float | None = None
    category: int | None = None  # 0 simple, 1 moderate, 2 complex
    alpha: float | None = None  # DSAF branch weights: global, local, depth-prior
    beta: float | None = None
    gamma: float | None = None
    omega: np.ndarray | None = None  # (3,) modality weights in MODALITIES order
    num_targets: int | None = None  # detections that entered the scene estimate
    present: tuple[str, ...] = ()  # modalities the model received
    completed: tuple[str, ...] = ()  # modalities the completion network predicted
    latency_ms: float | None = None
    received_ns: int | None = None  # wall time the mask was received (live runs)

    @classmethod
    def from_prediction(cls, stamp_ns: int, result: Any, latency_ms: float | None = None) -> FrameRecord:
        """The record of one :class:`~damcseg_core.inference.PredictionResult`."""
        return cls(
            stamp_ns=stamp_ns, mask=result.mask, boxes=result.boxes, scores=result.scores,
            labels=result.labels, S=float(result.S), D=float(result.D), O=float(result.O),
            E=float(result.E), category=int(result.category), alpha=float(result.alpha),
            beta=float(result.beta), gamma=float(result.gamma),
            omega=np.asarray(result.omega, np.float32), num_targets=len(result.scores),
            present=tuple(result.present), completed=tuple(result.completed), latency_ms=latency_ms,
        )  # fmt: skip

    @property
    def has_scene(self) -> bool:
        """The scene quantities of the frame are known."""
        return self.S is not None


def sensor_state(record: FrameRecord) -> str:
    """A short name of which sensors fed the frame, e.g. ``all sensors`` or ``thermal completed``."""
    if not record.present:
        return "unknown"
    if record.completed:
        return " + ".join(record.completed) + " completed"
    return "all sensors" if set(record.present) == set(MODALITIES) else "+".join(record.present) + " only"


def _publish_times(publish_log: str | Path, topic: str) -> dict[int, int]:
    with open(publish_log, newline="") as f:
        return {int(row["bag_ns"]): int(row["wall_ns"]) for row in csv.DictReader(f) if row["topic"] == topic}


# ---------------------------------------------------------------------------------------------
# Evaluation and report
# ---------------------------------------------------------------------------------------------


def _pick_examples(records: dict[int, FrameRecord], all_sensors: int = 8, per_state: int = 2) -> set[int]:
    """Stamps of processed frames to draw: evenly spread over the drive for frames with every
    sensor (so each stretch of a drive, and so each condition, gets one), plus a few per unusual
    sensor state. Chosen from the records alone, so the bag is read only once."""
    by_state: dict[str, list[int]] = {}
    for stamp in sorted(records):
        if records[stamp].mask is not None:
            by_state.setdefault(sensor_state(records[stamp]), []).append(stamp)
    chosen: set[int] = set()
    for state, stamps in by_state.items():
        count = all_sensors if state == "all sensors" else per_state
        idx = np.linspace(0, len(stamps) - 1, num=min(count, len(stamps))).round().astype(int)
        chosen.update(stamps[i] for i in set(idx))
    return chosen


def _timeline_html(frames: list[dict[str, Any]]) -> str:
    from matplotlib.figure import Figure

    t0 = frames[0]["stamp_ns"]
    done = [f for f in frames if f["record"] is not None and f["record"].has_scene]
    t = np.array([(f["stamp_ns"] - t0) / 1e9 for f in done])
    fig = Figure(figsize=(11.0, 10.0))
    axes = fig.subplots(5, 1, sharex=True)
    # Condition bands behind every panel.
    colors = {"day": "#fff7d6", "dusk": "#ffe0c2", "night": "#d9dcef", "fog": "#e6e6e6"}
    spans, start = [], frames[0]
    for prev, cur in zip(frames, [*frames[1:], None]):
        if cur is None or cur["condition"] != start["condition"]:
            end = (cur or prev)["stamp_ns"]  # bands meet: a condition lasts until the next starts
            spans.append(((start["stamp_ns"] - t0) / 1e9, (end - t0) / 1e9, start["condition"]))
            start = cur
    for ax in axes:
        for a, b, cond in spans:
            ax.axvspan(a, b, color=colors.get(cond, "#ffffff"), zorder=0)
    for a, b, cond in spans:
        axes[0].text((a + b) / 2, 0.97, cond, ha="center", va="top", fontsize=8)
    if len(done):
        get = lambda key: np.array([getattr(f["record"], key) for f in done])  # noqa: E731
        axes[0].plot(t, get("S"), color="#222", lw=1.2, label="S")
        for key, c in (("D", "#1b9e77"), ("O", "#d95f02"), ("E", "#7570b3")):
            axes[0].plot(t, get(key), color=c, lw=0.7, alpha=0.8, label=key)
        axes[0].axhline(0.3, ls="--", color="grey", lw=0.7)
        axes[0].axhline(0.7, ls="--", color="grey", lw=0.7)
        axes[0].set_ylim(0, 1)
        axes[0].set_ylabel("scene complexity")
        axes[0].legend(loc="upper right", fontsize=7, ncol=4)
        for key, label, c in (
            ("alpha", "α global", "#3b6ea5"),
            ("beta", "β local", "#c0392b"),
            ("gamma", "γ post", "#27ae60"),
        ):
            axes[1].plot(t, get(key), color=c, lw=1.0, label=label)
        axes[1].set_ylabel("branch weight")
        axes[1].legend(loc="upper right", fontsize=7, ncol=3)
        omega = np.stack([f["record"].omega for f in done])
        for i, (m, c) in enumerate(zip(MODALITIES, ("#c0392b", "#2c3e50", "#e67e22"))):
            axes[2].plot(t, omega[:, i], color=c, lw=1.0, label=f"ω {m}")
        axes[2].set_ylim(0, 1)
        axes[2].set_ylabel("modality weight")
        axes[2].legend(loc="upper right", fontsize=7, ncol=3)
    # Sensor state strips: green = delivered, orange = completed by the model, red = missing.
    t_all = np.array([(f["stamp_ns"] - t0) / 1e9 for f in frames])
    for row, m in enumerate(MODALITIES):
        state = []
        for f in frames:
            rec = f["record"]
            if rec is None or not rec.has_scene:
                state.append("#bbbbbb")  # frame not processed (dropped)
            elif m in rec.completed:
                state.append("#f39c12")
            elif m in rec.present:
                state.append("#2ecc71")
            else:
                state.append("#e74c3c")
        axes[3].scatter(t_all, np.full(len(t_all), row), c=state, marker="|", s=120)
    axes[3].set_yticks(range(len(MODALITIES)), MODALITIES)
    axes[3].set_ylim(-0.7, len(MODALITIES) - 0.3)
    axes[3].set_ylabel("sensor state")
    axes[3].set_title(
        "green: delivered  orange: completed by MCN  red: missing  grey: frame dropped", fontsize=8
    )
    lat = [
        (f["stamp_ns"], f["record"].latency_ms)
        for f in frames
        if f["record"] is not None and f["record"].latency_ms is not None
    ]
    if lat:
        axes[4].plot([(s - t0) / 1e9 for s, _ in lat], [v for _, v in lat], ".", ms=3, color="#34495e")
    axes[4].set_ylabel("latency ms")
    axes[4].set_xlabel("drive time s")
    fig.tight_layout()
    return figure_html(fig)


def _latency_histogram_html(latencies: list[float]) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 3.0))
    ax = fig.add_subplot()
    ax.hist(latencies, bins=30, color="#34495e")
    ax.set_xlabel("latency ms")
    ax.set_ylabel("frames")
    ax.set_title("End-to-end latency")
    return figure_html(fig)


def write_drive_report(
    input_bag: str | Path,
    records: dict[int, FrameRecord],
    out_dir: str | Path,
    title: str,
    model_label: str,
    latency_kind: str,
    topics: BagTopics = DEFAULT_TOPICS,
) -> list[str]:
    """Match ``records`` to the ground truth of ``input_bag``; write ``drive_metrics.json`` and
    ``report.html`` into ``out_dir``; return a 6-line summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suite = MetricSuite()
    per_state: dict[str, SegmentationIoU] = {}
    frames: list[dict[str, Any]] = []
    examples_at = _pick_examples(records)
    gt_objects: list[int] = []  # valid detection objects (data.targets rule) of every processed frame
    t0: int | None = None
    examples = []
    for sample in read_bag_samples(input_bag, topics):
        stamp = sample["meta"]["stamp_ns"]
        t0 = stamp if t0 is None else t0
        rec = records.get(stamp)
        frames.append({"stamp_ns": stamp, "condition": sample["condition"], "record": rec})
        if rec is not None and rec.mask is not None:
            if "boxes" in sample:
                gt_objects.append(
                    int(valid_objects(sample["boxes"], sample.get("areas"), sample.get("occlusion")).sum())
                )
        if rec is None or rec.mask is None or not sample["meta"].get("has_labels", True):
            continue
        pred = SimpleNamespace(
            mask=rec.mask, boxes=rec.boxes, scores=rec.scores, labels=rec.labels,
            category=rec.category, S=rec.S, D=rec.D,
        )  # fmt: skip
        suite.update(sample, pred)
        state = sensor_state(rec)
        per_state.setdefault(state, SegmentationIoU(NUM_CLASSES, IGNORE_INDEX)).update(
            rec.mask, sample["semantic"]
        )
        if stamp in examples_at:
            rgb = sample.get("rgb")
            rgb = None if rgb is None else (np.asarray(rgb).transpose(1, 2, 0) * 255).astype(np.uint8)
            t_s = (stamp - t0) / 1e9
            examples.append({
                "rgb": rgb, "prediction": rec.mask, "ground_truth": np.asarray(sample["semantic"]),
                "protocol": state, "condition": sample["condition"],
                "title": f"t = {t_s:.1f} s, S = {float('nan') if rec.S is None else rec.S:.2f}",
            })  # fmt: skip

    if not frames:
        raise ValueError(f"{input_bag} holds no frames on the sensor topics; nothing to evaluate")
    metrics = suite.compute()
    processed = [f for f in frames if f["record"] is not None and f["record"].mask is not None]
    latencies = [f["record"].latency_ms for f in processed if f["record"].latency_ms is not None]
    lat = timing_stats(latencies) if latencies else {}
    state_counts: dict[str, int] = {}
    for f in processed:
        state_counts[sensor_state(f["record"])] = state_counts.get(sensor_state(f["record"]), 0) + 1
    categories = [f["record"].category for f in processed if f["record"].has_scene]
    boxes = {
        "published": float(np.mean([len(f["record"].scores) for f in processed])) if processed else None,
        "ground_truth_objects": float(np.mean(gt_objects)) if gt_objects else None,
    }
    result = {
        "title": title,
        "model": model_label,
        "frames_sent": len(frames),
        "frames_processed": len(processed),
        "frames_dropped": len(frames) - len(processed),
        "latency_kind": latency_kind,
        "latency": lat,
        "sensor_states": state_counts,
        "per_state_miou": {k: v.compute()["miou"] for k, v in per_state.items()},
        "boxes_per_frame": boxes,
        "scene_categories": {
            name: categories.count(i) for i, name in enumerate(("simple", "moderate", "complex"))
        },
        "metrics": metrics,
    }
    (out / "drive_metrics.json").write_text(json.dumps(to_jsonable(result), indent=2, allow_nan=False))

    miou = metrics["all"].get("miou")
    per_cond = ", ".join(
        f"{c} {100 * v['miou']:.1f}" for c, v in metrics["condition"].items() if v.get("miou") is not None
    )
    summary = [
        f"frames: {len(processed)}/{len(frames)} processed ({len(frames) - len(processed)} dropped by newest-wins)",
        f"mIoU {100 * miou:.1f}% overall; per condition: {per_cond}"
        if miou is not None
        else "mIoU: no labelled frames",
        (
            f"latency ({latency_kind}): p50 {lat['p50_ms']:.0f} ms, p90 {lat['p90_ms']:.0f} ms"
            if lat
            else "latency: n/a"
        ),
        "sensor states: " + ", ".join(f"{k} {v}" for k, v in sorted(state_counts.items())),
        "scene categories: " + ", ".join(f"{k} {v}" for k, v in result["scene_categories"].items()),
        (
            f"boxes per frame: {boxes['published']:.1f} published vs "
            f"{boxes['ground_truth_objects']:.1f} valid ground-truth objects (>= 100 px)"
            if processed and gt_objects
            else "boxes per frame: n/a"
        ),
    ]
    state_rows = {
        k: {"num_images": state_counts.get(k, 0), "miou": v} for k, v in result["per_state_miou"].items()
    }
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{REPORT_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>Model: {html.escape(model_label)}. Input: {html.escape(str(input_bag))}.</p>",
        "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in summary) + "</ul>",
        "<h2>Metrics per condition</h2>",
        metrics_table({"all": metrics["all"], **metrics["condition"]}, "condition"),
        "<h2>Metrics per sensor state</h2>",
        metrics_table(state_rows, "sensor state"),
        "<h2>Per predicted scene complexity</h2>",
        metrics_table(metrics["complexity"], "complexity"),
        "<h2>Timelines</h2>",
        _timeline_html(frames),
    ]
    if latencies:
        parts += [f"<h2>Latency ({html.escape(latency_kind)})</h2>", _latency_histogram_html(latencies)]
    if examples:
        parts.append("<h2>Examples: RGB | prediction | ground truth</h2>")
        parts += [overlay_html(e) for e in sorted(examples, key=lambda e: e["title"])]
    parts.append("</body></html>")
    (out / "report.html").write_text("\n".join(parts), encoding="utf-8")
    return summary


def evaluate_drive(
    input_bag: str | Path,
    records: dict[int, FrameRecord],
    publish_log: str | Path,
    out_dir: str | Path,
    model_label: str = "",
    topics: BagTopics = DEFAULT_TOPICS,
) -> list[str]:
    """Evaluate a live run: the node's outputs (as records) against the input bag's ground truth.

    Args:
        records: stamp -> record with ``received_ns`` set (``damcseg_ros.record_decoding``).
        publish_log: the replay's CSV of publish wall times; latency = received - published.
    """
    published = _publish_times(publish_log, topics.rgb)
    for stamp, rec in records.items():
        if rec.received_ns is not None and stamp in published:
            rec.latency_ms = (rec.received_ns - published[stamp]) / 1e6
    return write_drive_report(
        input_bag, records, out_dir, "DAMCSeg demo drive (live ROS 2 replay)", model_label,
        "replay publish -> mask received", topics,
    )  # fmt: skip


def evaluate_bag_offline(
    bag: str | Path,
    predictor: Any,
    out_dir: str | Path,
    model_label: str = "",
    topics: BagTopics = DEFAULT_TOPICS,
) -> list[str]:
    """``damcseg-bag-eval``: run ``predictor`` over every frame of ``bag`` (no DDS) and report."""
    from damcseg_core.eval.evaluator import sample_to_inputs

    records: dict[int, FrameRecord] = {}
    for sample in read_bag_samples(bag, topics):
        res = predictor.predict(sample_to_inputs(sample))
        stamp = sample["meta"]["stamp_ns"]
        records[stamp] = FrameRecord.from_prediction(stamp, res, latency_ms=float(res.inference_ms))
    return write_drive_report(
        bag,
        records,
        out_dir,
        "DAMCSeg bag evaluation (offline, no DDS)",
        model_label,
        "model inference",
        topics,
    )
