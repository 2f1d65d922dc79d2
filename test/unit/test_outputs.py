"""PredictionResult -> messages: mask bytes, overlay, PNG, detections, LabelInfo, SceneComplexity."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs not built (source tools/env.sh)")
pytest.importorskip("damcseg_ros.msg", reason="damcseg_ros interfaces not built (source tools/env.sh)")

from std_msgs.msg import Header

from damcseg_core.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from damcseg_ros import outputs


@dataclasses.dataclass
class Result:
    """The PredictionResult fields the outputs read (docs/interfaces.md)."""

    mask: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    S: float = 0.55
    D: float = 0.25
    O: float = 0.5  # noqa: E741
    E: float = 0.75
    category: int = 1
    alpha: float = 0.5
    beta: float = 0.3
    gamma: float = 0.2
    omega: np.ndarray = dataclasses.field(default_factory=lambda: np.array([0.6, 0.1, 0.3], np.float32))
    present: tuple[str, ...] = ("rgb", "depth")
    completed: tuple[str, ...] = ("thermal",)
    inference_ms: float = 12.0
    class_names: tuple[str, ...] = CITYSCAPES_CLASSES


HEADER = Header(frame_id="cam_front")
HEADER.stamp.sec, HEADER.stamp.nanosec = 1234, 567


def result(n_boxes: int = 3) -> Result:
    mask = (np.arange(6 * 10).reshape(6, 10) % 20).astype(np.uint8)
    mask[mask == 19] = 255
    boxes = np.array([[0, 0, 10, 6], [2.5, 1.0, 4.5, 5.0], [3, 3, 4, 4]], np.float32)[:n_boxes]
    return Result(
        mask, boxes, np.array([0.9, 0.5, 0.1], np.float32)[:n_boxes], np.array([13, 11, 18])[:n_boxes]
    )


def test_mask_image_bytes_equal_the_array_and_header_is_copied():
    res = result()
    msg = outputs.mask_image(res.mask, HEADER)
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("mono8", 6, 10, 10)
    assert bytes(msg.data) == res.mask.tobytes()
    assert msg.header.frame_id == "cam_front"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (1234, 567)


def test_compressed_mask_is_lossless_png():
    res = result()
    msg = outputs.compressed_mask(res.mask, HEADER)
    assert msg.format == "mono8; png compressed"
    assert bytes(msg.data[:8]) == b"\x89PNG\r\n\x1a\n"
    decoded = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, res.mask)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_overlay_blends_palette_over_rgb(alpha):
    mask = np.array([[0, 13, 255]], np.uint8)
    rgb = np.full((1, 3, 3), 100, np.uint8)
    out = outputs.overlay(mask, rgb, alpha)
    expected = np.round(alpha * CITYSCAPES_PALETTE[[0, 13]].astype(float) + (1 - alpha) * 100)
    np.testing.assert_array_equal(out[0, :2], expected)
    np.testing.assert_array_equal(out[0, 2], [100, 100, 100])  # unknown keeps the camera colour


def test_overlay_without_rgb_is_plain_palette():
    mask = np.array([[0, 255]], np.uint8)
    out = outputs.overlay(mask, None, 0.5)
    np.testing.assert_array_equal(out[0], [CITYSCAPES_PALETTE[0], [0, 0, 0]])
    msg = outputs.color_image(mask, None, 0.5, HEADER)
    assert (msg.encoding, msg.step) == ("rgb8", 6)


def test_overlay_uses_the_model_palette_and_its_class_count():
    palette = np.array([[10, 20, 30], [40, 50, 60]], np.uint8)  # a two-class model
    mask = np.array([[0, 1, 2]], np.uint8)
    out = outputs.overlay(mask, np.full((1, 3, 3), 100, np.uint8), 1.0, palette)
    np.testing.assert_array_equal(out[0], [[10, 20, 30], [40, 50, 60], [100, 100, 100]])


@pytest.mark.parametrize(
    ("threshold", "kept"),
    [(0.0, [0, 1, 2]), (0.3, [0, 1]), (0.5, [0, 1]), (0.95, [])],
)
def test_detections_filtered_by_score(threshold, kept):
    msg = outputs.detections(result(), HEADER, threshold)
    assert [d.id for d in msg.detections] == [str(i) for i in kept]
    assert msg.header.frame_id == "cam_front"


@pytest.mark.parametrize(
    ("index", "center", "size", "name", "score"),
    [
        (0, (5.0, 3.0), (10.0, 6.0), "car", 0.9),
        (1, (3.5, 3.0), (2.0, 4.0), "person", 0.5),
        (2, (3.5, 3.5), (1.0, 1.0), "bicycle", 0.1),
    ],
)
def test_detection_bbox_center_size_and_hypothesis(index, center, size, name, score):
    det = outputs.detections(result(), HEADER, 0.0).detections[index]
    assert (det.bbox.center.position.x, det.bbox.center.position.y) == pytest.approx(center)
    assert (det.bbox.size_x, det.bbox.size_y) == pytest.approx(size)
    assert det.bbox.center.theta == 0.0
    assert len(det.results) == 1
    assert det.results[0].hypothesis.class_id == name
    assert det.results[0].hypothesis.score == pytest.approx(score)
    assert det.header.stamp.sec == 1234


def test_detection_class_id_as_numeric_text():
    msg = outputs.detections(result(), HEADER, 0.0, class_id_format="id")
    assert [d.results[0].hypothesis.class_id for d in msg.detections] == ["13", "11", "18"]


def test_no_detections_gives_empty_array_with_header():
    msg = outputs.detections(result(n_boxes=0), HEADER, 0.0)
    assert list(msg.detections) == []
    assert msg.header.frame_id == "cam_front"


def test_label_info_maps_ids_to_cityscapes_names():
    msg = outputs.label_info(CITYSCAPES_CLASSES, 0.3, HEADER)
    assert [(c.class_id, c.class_name) for c in msg.class_map][:3] == [
        (0, "road"),
        (1, "sidewalk"),
        (2, "building"),
    ]
    assert [c.class_id for c in msg.class_map] == list(range(19))
    assert msg.class_map[13].class_name == "car"
    assert msg.class_map[18].class_name == "bicycle"
    assert msg.threshold == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("score", 0.55),
        ("target_density", 0.25),
        ("occlusion", 0.5),
        ("edge_density", 0.75),
        ("category", 1),
        ("num_targets", 3),
        ("global_weight", 0.5),
        ("local_weight", 0.3),
        ("post_weight", 0.2),
        ("rgb_weight", 0.6),
        ("depth_weight", 0.1),
        ("thermal_weight", 0.3),
        ("rgb_present", True),
        ("depth_present", True),
        ("thermal_present", False),
        ("rgb_completed", False),
        ("depth_completed", False),
        ("thermal_completed", True),
    ],
)
def test_scene_complexity_field_mapping(field, expected):
    msg = outputs.scene_complexity(result(), HEADER, num_targets=3)
    assert getattr(msg, field) == pytest.approx(expected)
    assert msg.header.frame_id == "cam_front"


@pytest.mark.parametrize(
    ("state", "completed", "enabled", "level", "message"),
    [
        ("ok", False, True, 0, "ok"),
        ("ok", True, True, 1, "completed by the model"),
        ("late", False, True, 1, "late"),
        ("missing", True, True, 2, "missing: no data for 3.0 s"),
        ("missing", False, False, 0, "disabled by parameter"),
    ],
)
def test_sensor_status_levels(state, completed, enabled, level, message):
    from damcseg_ros.diagnostics import sensor_status
    from damcseg_ros.sync import SensorState

    st = sensor_status("thermal", SensorState(state), 8.0, 3.0, 10, 2, 1, completed, enabled=enabled)
    assert st.name == "damcseg: thermal input"
    assert st.level == bytes([level])
    assert message in st.message
    values = {kv.key: kv.value for kv in st.values}
    assert values["rate_hz"] == "8.000"
    assert (values["received"], values["dropped"], values["invalid"]) == ("10", "2", "1")
    assert values["state"] == (state if enabled else "disabled")


@pytest.mark.parametrize(
    ("times", "now", "rate"),
    [([0.0, 0.1, 0.2, 0.3], 0.3, 10.0), ([0.0], 0.0, 0.0), ([0.0, 0.5, 1.0], 5.0, 0.0)],  # last: all stale
)
def test_rate_meter(times, now, rate):
    from damcseg_ros.diagnostics import RateMeter

    meter = RateMeter(window=2.0)
    for t in times:
        meter.tick(t)
    assert meter.rate(now) == pytest.approx(rate)


def test_pipeline_status_reports_numbers_model_and_device():
    from damcseg_ros.diagnostics import PipelineStats, pipeline_status

    stats = PipelineStats(frames=5, processing_ms=12.5, latency_ms=40.25, dropped=2, invalid=1)
    st = pipeline_status(stats, "damcseg_edge.pt", "cuda:0", active=True)
    values = {kv.key: kv.value for kv in st.values}
    assert st.name == "damcseg: pipeline" and st.level == b"\x00"
    assert values["processing_ms"] == "12.500" and values["latency_ms"] == "40.250"
    assert (values["dropped"], values["invalid"], values["model"], values["device"]) == (
        "2",
        "1",
        "damcseg_edge.pt",
        "cuda:0",
    )
    stats.last_error = "RuntimeError: boom"
    assert pipeline_status(stats, "m", "cpu", active=True).level == b"\x02"
