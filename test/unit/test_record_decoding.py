"""Node messages -> FrameRecord: what the node publishes is read back in the Predictor's names."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("vision_msgs")
from types import SimpleNamespace

from std_msgs.msg import Header

from damcseg_core.data.classes import CITYSCAPES_CLASSES
from damcseg_core.eval.drive_report import FrameRecord
from damcseg_ros import outputs, record_decoding

HEADER = Header(frame_id="cam")


def result(n_boxes: int = 3) -> SimpleNamespace:
    """A PredictionResult look-alike with distinct values everywhere."""
    mask = (np.arange(6 * 10).reshape(6, 10) % 20).astype(np.uint8)
    boxes = np.array([[0, 0, 10, 6], [2.5, 1.0, 4.5, 5.0], [3, 3, 4, 4]], np.float32)[:n_boxes]
    return SimpleNamespace(
        mask=mask, boxes=boxes, scores=np.array([0.9, 0.5, 0.1], np.float32)[:n_boxes],
        labels=np.array([13, 11, 18])[:n_boxes], S=0.55, D=0.25, O=0.5, E=0.75, category=1,
        alpha=0.5, beta=0.3, gamma=0.2, omega=np.array([0.6, 0.1, 0.3], np.float32),
        present=("rgb", "depth"), completed=("thermal",), class_names=CITYSCAPES_CLASSES,
    )  # fmt: skip


def test_scene_message_round_trips_to_the_prediction_record():
    res = result()
    rec = FrameRecord(stamp_ns=1)
    record_decoding.apply_scene(rec, outputs.scene_complexity(res, HEADER, num_targets=3))
    want = FrameRecord.from_prediction(1, res)
    for name in ("S", "D", "O", "E", "alpha", "beta", "gamma"):
        assert getattr(rec, name) == pytest.approx(getattr(want, name)), name
    assert (rec.category, rec.num_targets, rec.present, rec.completed) == (
        1, 3, ("rgb", "depth"), ("thermal",)
    )  # fmt: skip
    assert rec.omega.tolist() == pytest.approx(want.omega.tolist())


@pytest.mark.parametrize("fmt", ["name", "id"])
def test_detections_round_trip_with_either_class_id_format(fmt):
    res = result()
    rec = FrameRecord(stamp_ns=1)
    record_decoding.apply_detections(rec, outputs.detections(res, HEADER, 0.0, fmt))
    np.testing.assert_allclose(rec.boxes, res.boxes, atol=1e-5)
    assert rec.labels.tolist() == res.labels.tolist()
    assert rec.scores.tolist() == pytest.approx(res.scores.tolist())


def test_detections_use_the_model_class_names():
    res = result(n_boxes=1)
    res.class_names = ("a", "b") + ("x",) * 12  # id 13 -> "x"
    rec = FrameRecord(stamp_ns=1)
    record_decoding.apply_detections(rec, outputs.detections(res, HEADER, 0.0), class_names=["x"])
    assert rec.labels.tolist() == [0]


def test_mask_image_round_trips():
    res = result()
    np.testing.assert_array_equal(
        record_decoding.mask_from_image(outputs.mask_image(res.mask, HEADER)), res.mask
    )
