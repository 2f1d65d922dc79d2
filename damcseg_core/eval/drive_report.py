"""Evaluate a drive (a bag with ground truth) frame by frame, over time, and write an HTML report.

Two sources of predictions share one report:

* :func:`evaluate_drive` reads what the ROS node published during a live replay (an output bag
  recorded by ``damcseg_ros.recorder``) and matches it to the input bag's ground truth by header
  stamp; latency is recorder receive time minus replay publish time (both wall clock).
* :func:`evaluate_bag_offline` (``damcseg-bag-eval``) runs the :class:`Predictor` over the bag
  directly, without DDS; latency is then the model's inference time.

The report shows metrics per condition and per sensor state, timelines of the scene complexity S,
the DSAF branch weights, the modality weights and states, latency, and example overlays.
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
from rosbags.highlevel import AnyReader

from damcseg_core import MODALITIES
from damcseg_core.data.classes import CITYSCAPES_CLASSES, IGNORE_INDEX, NUM_CLASSES
from damcseg_core.data.rosbag_io import DEFAULT_TOPICS, BagTopics, read_bag_samples
from damcseg_core.eval.evaluator import to_jsonable
from damcseg_core.eval.metrics import MetricSuite, timing_stats
from damcseg_core.eval.report import REPORT_STYLE, figure_html, metrics_table, overlay_html
from damcseg_core.eval.segmentation_metrics import SegmentationIoU

__all__ = ["FrameRecord", "evaluate_bag_offline", "evaluate_drive", "write_drive_report"]

_NAME_TO_ID = {name: i for i, name in enumerate(CITYSCAPES_CLASSES)}


@dataclasses.dataclass
class FrameRecord:
    """What the system produced for one input frame (``mask`` is None when it was dropped)."""

    stamp_ns: int
    mask: np.ndarray | None = None  # HxW uint8 train ids
    boxes: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    labels: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    scene: dict[str, Any] = dataclasses.field(default_factory=dict)  # S, D, O, E, category, weights
    present: tuple[str, ...] = ()  # modalities the model received
    completed: tuple[str, ...] = ()  # modalities the completion network predicted
    latency_ms: float | None = None


def sensor_state(record: FrameRecord) -> str:
    """A short name of which sensors fed the frame, e.g. ``all sensors`` or ``thermal completed``."""
    if not record.present:
        return "unknown"
    if record.completed:
        return " + ".join(record.completed) + " completed"
    return "all sensors" if set(record.present) == set(MODALITIES) else "+".join(record.present) + " only"


# ---------------------------------------------------------------------------------------------
# Reading the node's outputs
# ---------------------------------------------------------------------------------------------


def _stamp(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _mask_from_image(msg: Any) -> np.ndarray:
    if msg.encoding != "mono8":
        raise ValueError(f"segmentation output must be mono8, got {msg.encoding!r}")
    rows = np.asarray(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    return rows[:, : msg.width].copy()


def _detections(msg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes, scores, labels = [], [], []
    for det in msg.detections:
        if not det.results:
            continue
        hyp = det.results[0].hypothesis
        cid = hyp.class_id
        label = _NAME_TO_ID.get(cid, int(cid) if cid.isdigit() else IGNORE_INDEX)
        cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
        w, h = det.bbox.size_x, det.bbox.size_y
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        scores.append(hyp.score)
        labels.append(label)
    return (
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(scores, np.float32),
        np.asarray(labels, np.int64),
    )


def _scene(msg: Any) -> tuple[dict[str, Any], tuple[str, ...], tuple[str, ...]]:
    scene = {
        "S": msg.score, "D": msg.target_density, "O": msg.occlusion, "E": msg.edge_density,
        "category": int(msg.category), "num_targets": int(msg.num_targets),
        "alpha": msg.global_weight, "beta": msg.local_weight, "gamma": msg.post_weight,
        **{f"w_{m}": getattr(msg, f"{m}_weight") for m in MODALITIES},
    }  # fmt: skip
    present = tuple(m for m in MODALITIES if getattr(msg, f"{m}_present"))
    completed = tuple(m for m in MODALITIES if getattr(msg, f"{m}_completed"))
    return scene, present, completed


def read_node_outputs(output_bag: str | Path, node_name: str = "damcseg") -> dict[int, FrameRecord]:
    """Group the recorded outputs of the node by the stamp of the frame they describe.

    Returns:
        stamp -> record; ``latency_ms`` holds the receive wall time (ns) of the mask until
        :func:`evaluate_drive` turns it into a latency.
    """
    ns = f"/{node_name.strip('/')}"
    records: dict[int, FrameRecord] = {}
    with AnyReader([Path(output_bag)]) as reader:  # types come from the bag's own definitions
        for conn, timestamp, raw in reader.messages():
            if not conn.topic.startswith(ns + "/"):
                continue
            name = conn.topic[len(ns) + 1 :]
            if name not in ("segmentation", "detections", "scene_complexity"):
                continue
            msg = reader.deserialize(raw, conn.msgtype)
            rec = records.setdefault(_stamp(msg.header), FrameRecord(stamp_ns=_stamp(msg.header)))
            if name == "segmentation":
                rec.mask = _mask_from_image(msg)
                rec.latency_ms = float(timestamp)  # receive wall time for now
            elif name == "detections":
                rec.boxes, rec.scores, rec.labels = _detections(msg)
            else:
                rec.scene, rec.present, rec.completed = _scene(msg)
    return records


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
    done = [f for f in frames if f["record"] is not None and f["record"].scene]
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
        get = lambda key: np.array([f["record"].scene[key] for f in done])  # noqa: E731
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
        for m, c in zip(MODALITIES, ("#c0392b", "#2c3e50", "#e67e22")):
            axes[2].plot(t, get(f"w_{m}"), color=c, lw=1.0, label=f"ω {m}")
        axes[2].set_ylim(0, 1)
        axes[2].set_ylabel("modality weight")
        axes[2].legend(loc="upper right", fontsize=7, ncol=3)
    # Sensor state strips: green = delivered, orange = completed by the model, red = missing.
    t_all = np.array([(f["stamp_ns"] - t0) / 1e9 for f in frames])
    for row, m in enumerate(MODALITIES):
        state = []
        for f in frames:
            rec = f["record"]
            if rec is None or not rec.scene:
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
    ``report.html`` into ``out_dir``; return a 5-line summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suite = MetricSuite()
    per_state: dict[str, SegmentationIoU] = {}
    frames: list[dict[str, Any]] = []
    examples_at = _pick_examples(records)
    t0: int | None = None
    examples = []
    for sample in read_bag_samples(input_bag, topics):
        stamp = sample["meta"]["stamp_ns"]
        t0 = stamp if t0 is None else t0
        rec = records.get(stamp)
        frames.append({"stamp_ns": stamp, "condition": sample["condition"], "record": rec})
        if rec is None or rec.mask is None or not sample["meta"].get("has_labels", True):
            continue
        pred = SimpleNamespace(
            mask=rec.mask, boxes=rec.boxes, scores=rec.scores, labels=rec.labels,
            category=rec.scene.get("category"), scene_score=rec.scene.get("S"),
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
                "title": f"t = {t_s:.1f} s, S = {rec.scene.get('S', float('nan')):.2f}",
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
    categories = [f["record"].scene.get("category") for f in processed if f["record"].scene]
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
    output_bag: str | Path,
    publish_log: str | Path,
    out_dir: str | Path,
    node_name: str = "damcseg",
    model_label: str = "",
    topics: BagTopics = DEFAULT_TOPICS,
) -> list[str]:
    """Evaluate a live run: the node's recorded outputs against the input bag's ground truth."""
    records = read_node_outputs(output_bag, node_name)
    published = _publish_times(publish_log, topics.rgb)
    for stamp, rec in records.items():
        received = rec.latency_ms
        rec.latency_ms = None
        if received is not None and stamp in published:
            rec.latency_ms = (received - published[stamp]) / 1e6
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
        records[stamp] = FrameRecord(
            stamp_ns=stamp, mask=res.mask, boxes=res.boxes, scores=res.scores, labels=res.labels,
            scene={
                "S": res.scene_score, "D": res.target_density, "O": res.occlusion, "E": res.edge_density,
                "category": int(res.category), "alpha": float(res.branch_weights[0]),
                "beta": float(res.branch_weights[1]), "gamma": float(res.branch_weights[2]),
                **{f"w_{m}": float(w) for m, w in zip(MODALITIES, res.modality_weights)},
            },
            present=tuple(res.present), completed=tuple(res.completed), latency_ms=float(res.inference_ms),
        )  # fmt: skip
    return write_drive_report(
        bag,
        records,
        out_dir,
        "DAMCSeg bag evaluation (offline, no DDS)",
        model_label,
        "model inference",
        topics,
    )
