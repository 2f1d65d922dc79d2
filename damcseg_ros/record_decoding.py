"""Recorded node outputs -> plain :class:`~damcseg_core.eval.drive_report.FrameRecord` s.

The report code in ``damcseg_core`` knows no ROS message: this module is the one place that
reads the node's own messages back (``~/segmentation`` Image, ``~/detections``
Detection2DArray, ``~/scene_complexity`` SceneComplexity, ``~/label_info`` LabelInfo) and turns
them into records in the Predictor's names (S, D, O, E, alpha/beta/gamma, omega). A renamed
message field fails here, next to the messages, and nowhere else.

Works on message objects of any origin (rclpy or the ``rosbags`` deserialiser): only field
access is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from damcseg_core import MODALITIES
from damcseg_core.data.classes import CITYSCAPES_CLASSES, IGNORE_INDEX
from damcseg_core.eval.drive_report import FrameRecord

__all__ = ["apply_detections", "apply_scene", "mask_from_image", "read_node_outputs"]

OUTPUTS = ("segmentation", "detections", "scene_complexity")
"""The node's per-frame output topics (relative to its namespace) that make up a record."""


def _stamp(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def mask_from_image(msg: Any) -> np.ndarray:
    """The ``HxW`` uint8 class-id mask of a ``mono8`` Image (row padding dropped)."""
    if msg.encoding != "mono8":
        raise ValueError(f"segmentation output must be mono8, got {msg.encoding!r}")
    rows = np.asarray(msg.data, dtype=np.uint8).reshape(msg.height, msg.step)
    return rows[:, : msg.width].copy()


def apply_detections(record: FrameRecord, msg: Any, class_names: Sequence[str] = CITYSCAPES_CLASSES) -> None:
    """Fill boxes (xyxy from centre/size), scores and labels of ``record`` from a Detection2DArray.

    ``class_id`` is a class name (resolved through ``class_names``) or an id as text; anything
    else becomes 255.
    """
    name_to_id = {name: i for i, name in enumerate(class_names)}
    boxes, scores, labels = [], [], []
    for det in msg.detections:
        if not det.results:
            continue
        hyp = det.results[0].hypothesis
        cid = hyp.class_id
        labels.append(name_to_id.get(cid, int(cid) if cid.isdigit() else IGNORE_INDEX))
        cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
        w, h = det.bbox.size_x, det.bbox.size_y
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        scores.append(hyp.score)
    record.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    record.scores = np.asarray(scores, np.float32)
    record.labels = np.asarray(labels, np.int64)


def apply_scene(record: FrameRecord, msg: Any) -> None:
    """Fill the scene fields of ``record`` from a SceneComplexity (field map: msg/SceneComplexity.msg)."""
    record.S, record.D, record.O, record.E = (
        float(msg.score), float(msg.target_density), float(msg.occlusion), float(msg.edge_density)
    )  # fmt: skip
    record.category, record.num_targets = int(msg.category), int(msg.num_targets)
    record.alpha, record.beta, record.gamma = (
        float(msg.global_weight), float(msg.local_weight), float(msg.post_weight)
    )  # fmt: skip
    record.omega = np.array([getattr(msg, f"{m}_weight") for m in MODALITIES], np.float32)
    record.present = tuple(m for m in MODALITIES if getattr(msg, f"{m}_present"))
    record.completed = tuple(m for m in MODALITIES if getattr(msg, f"{m}_completed"))


def read_node_outputs(output_bag: str | Path, node_name: str = "damcseg") -> dict[int, FrameRecord]:
    """Group the recorded outputs of the node by the stamp of the frame they describe.

    Detections' class names are resolved with the node's recorded ``~/label_info`` (the model's
    classes) when the bag has it, else with the Cityscapes names.

    Returns:
        stamp -> record, ``received_ns`` = the bag (receive) time of the mask.
    """
    from rosbags.highlevel import AnyReader

    ns = f"/{node_name.strip('/')}"
    records: dict[int, FrameRecord] = {}
    detections: list[tuple[FrameRecord, Any]] = []
    class_names: Sequence[str] = CITYSCAPES_CLASSES
    with AnyReader([Path(output_bag)]) as reader:  # types come from the bag's own definitions
        for conn, timestamp, raw in reader.messages():
            name = conn.topic[len(ns) + 1 :] if conn.topic.startswith(ns + "/") else ""
            if name == "label_info":
                info = reader.deserialize(raw, conn.msgtype)
                names = {int(c.class_id): c.class_name for c in info.class_map}
                class_names = [names.get(i, str(i)) for i in range(max(names, default=-1) + 1)]
                continue
            if name not in OUTPUTS:
                continue
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = _stamp(msg.header)
            rec = records.setdefault(stamp, FrameRecord(stamp_ns=stamp))
            if name == "segmentation":
                rec.mask = mask_from_image(msg)
                rec.received_ns = int(timestamp)
            elif name == "detections":
                detections.append((rec, msg))  # decoded once the label_info is known
            else:
                apply_scene(rec, msg)
    for rec, msg in detections:
        apply_detections(rec, msg, class_names)
    return records
