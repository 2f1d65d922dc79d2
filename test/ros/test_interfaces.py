"""Our messages and the vision_msgs ones: exact definitions, and delivery between processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from vision_msgs import msg as vm  # noqa: E402

from damcseg_ros.msg import SceneComplexity  # noqa: E402

HERE = Path(__file__).resolve().parent

# vision_msgs 4.x (ROS 2 Humble .. Kilted), field for field.
VISION_MSGS_4X = {
    "Point2D": {"x": "double", "y": "double"},
    "Pose2D": {"position": "vision_msgs/Point2D", "theta": "double"},
    "BoundingBox2D": {"center": "vision_msgs/Pose2D", "size_x": "double", "size_y": "double"},
    "ObjectHypothesis": {"class_id": "string", "score": "double"},
    "ObjectHypothesisWithPose": {
        "hypothesis": "vision_msgs/ObjectHypothesis",
        "pose": "geometry_msgs/PoseWithCovariance",
    },
    "Detection2D": {
        "header": "std_msgs/Header",
        "results": "sequence<vision_msgs/ObjectHypothesisWithPose>",
        "bbox": "vision_msgs/BoundingBox2D",
        "id": "string",
    },
    "Detection2DArray": {"header": "std_msgs/Header", "detections": "sequence<vision_msgs/Detection2D>"},
    "VisionClass": {"class_id": "uint16", "class_name": "string"},
    "LabelInfo": {
        "header": "std_msgs/Header",
        "class_map": "sequence<vision_msgs/VisionClass>",
        "threshold": "float",
    },
}


@pytest.mark.parametrize("name", sorted(VISION_MSGS_4X))
def test_vision_msgs_fields_match_upstream_4x(name):
    assert getattr(vm, name).get_fields_and_field_types() == VISION_MSGS_4X[name]


def test_scene_complexity_definition():
    fields = SceneComplexity.get_fields_and_field_types()
    assert fields["header"] == "std_msgs/Header"
    assert {k: fields[k] for k in ("score", "target_density", "occlusion", "edge_density")} == dict.fromkeys(
        ("score", "target_density", "occlusion", "edge_density"), "float"
    )
    assert fields["category"] == "uint8"
    for mod in ("rgb", "depth", "thermal"):
        assert fields[f"{mod}_weight"] == "float"
        assert fields[f"{mod}_present"] == "boolean"
        assert fields[f"{mod}_completed"] == "boolean"
    for branch in ("global", "local", "post"):
        assert fields[f"{branch}_weight"] == "float"
    assert (
        SceneComplexity.CATEGORY_SIMPLE,
        SceneComplexity.CATEGORY_MODERATE,
        SceneComplexity.CATEGORY_COMPLEX,
    ) == (
        0,
        1,
        2,
    )


@pytest.fixture
def publisher_process():
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "interfaces_publisher.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_messages_cross_process_boundary_intact(publisher_process):
    rclpy.init()
    node = rclpy.create_node("damcseg_interfaces_listener")
    got: dict[str, object] = {}
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    node.create_subscription(SceneComplexity, "test/scene_complexity", lambda m: got.setdefault("sc", m), 10)
    node.create_subscription(vm.Detection2DArray, "test/detections", lambda m: got.setdefault("det", m), 10)
    node.create_subscription(vm.LabelInfo, "test/label_info", lambda m: got.setdefault("info", m), latched)
    deadline = time.monotonic() + 30.0
    try:
        while len(got) < 3 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
            assert publisher_process.poll() is None, publisher_process.stderr.read()
    finally:
        node.destroy_node()
        rclpy.shutdown()
    assert set(got) == {"sc", "det", "info"}, f"received only {sorted(got)} within 30 s"

    sc = got["sc"]
    assert sc.header.stamp.sec == 42 and sc.header.frame_id == "camera_rgb_optical_frame"
    # float32 fields: 0.55 and 0.9 are not exact in float32, the others are.
    assert [sc.score, sc.target_density, sc.occlusion, sc.edge_density] == pytest.approx(
        [0.55, 0.5, 0.25, 0.9], abs=1e-6
    )
    assert sc.category == SceneComplexity.CATEGORY_MODERATE and sc.num_targets == 7
    assert (sc.global_weight, sc.local_weight, sc.post_weight) == (0.5, 0.375, 0.25)
    assert (sc.rgb_weight, sc.depth_weight, sc.thermal_weight) == (0.75, 0.5, 0.125)
    assert (sc.rgb_present, sc.depth_present, sc.thermal_present) == (True, True, False)
    assert (sc.rgb_completed, sc.depth_completed, sc.thermal_completed) == (False, False, True)

    det = got["det"].detections[0]
    assert det.header.stamp.sec == 42 and det.id == "3"
    assert det.results[0].hypothesis.class_id == "person" and det.results[0].hypothesis.score == 0.875
    assert (det.bbox.center.position.x, det.bbox.center.position.y, det.bbox.size_x, det.bbox.size_y) == (
        120.5,
        64.25,
        10.0,
        30.0,
    )

    info = got["info"]
    assert info.threshold == pytest.approx(0.3)
    assert [(c.class_id, c.class_name) for c in info.class_map] == [(11, "person"), (13, "car")]
