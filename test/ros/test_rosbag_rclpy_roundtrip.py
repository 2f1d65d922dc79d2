"""Bags written by damcseg_core.data.rosbag_io (via rosbags) hold bytes that rclpy reads as-is."""

from __future__ import annotations

import os
import types

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import numpy as np
import pytest

try:
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import String
except ImportError as exc:  # pragma: no cover - depends on the environment
    pytest.skip(
        f"rclpy / sensor_msgs not importable ({exc}); install the ros-* wheels", allow_module_level=True
    )

from damcseg_core.data.rosbag_io import (
    DEFAULT_TOPICS,
    FRAME_IDS,
    bag_typestore,
    image_from_msg,
    iter_bag_messages,
    write_drive_bag,
)

pytestmark = pytest.mark.ros

H, W = 6, 8
STAMP = 1_700_000_000_123_456_789


def _frame(depth_m: float = 12.345) -> types.SimpleNamespace:
    rng = np.random.default_rng(7)
    instance = np.zeros((H, W), np.int32)
    instance[1:3, 2:5] = 1
    return types.SimpleNamespace(
        rgb=rng.integers(0, 256, (H, W, 3), np.uint8),
        depth=np.full((H, W), depth_m, np.float32),
        thermal=rng.integers(0, 65536, (H, W), np.uint16),
        semantic=rng.integers(0, 19, (H, W)).astype(np.uint8),
        instance=instance,
        boxes=np.array([[2, 1, 5, 3]], np.float32),
        labels=np.array([13]),
        occlusion=np.array([0.4], np.float32),
        condition="dusk",
        stamp_ns=STAMP,
        frame_index=0,
        sequence="s",
    )


@pytest.fixture(scope="module", params=["sqlite3", "mcap"])
def bag_messages(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "bag"
    frame = _frame()
    write_drive_bag(path, [frame], storage=request.param, depth_encoding="16UC1")
    return frame, {m.topic: m for m in iter_bag_messages(path, deserialize=False)}


@pytest.mark.parametrize(
    ("topic", "encoding", "frame_id", "expected"),
    [
        (DEFAULT_TOPICS.rgb, "rgb8", FRAME_IDS["rgb"], lambda f: f.rgb),
        (DEFAULT_TOPICS.depth, "16UC1", FRAME_IDS["depth"], lambda f: np.full((H, W), 12345, np.uint16)),
        (DEFAULT_TOPICS.thermal, "mono16", FRAME_IDS["thermal"], lambda f: f.thermal),
        (DEFAULT_TOPICS.semantic, "mono8", FRAME_IDS["rgb"], lambda f: f.semantic),
        (DEFAULT_TOPICS.instance, "16UC1", FRAME_IDS["rgb"], lambda f: f.instance.astype(np.uint16)),
    ],
    ids=["rgb", "depth", "thermal", "semantic", "instance"],
)
def test_image_bytes_deserialize_with_rclpy(bag_messages, topic, encoding, frame_id, expected):
    frame, msgs = bag_messages
    msg = deserialize_message(msgs[topic].raw, Image)
    want = np.ascontiguousarray(expected(frame))
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (H, W, encoding, 0)
    assert msg.step == W * want.itemsize * (3 if want.ndim == 3 else 1)
    assert msg.header.frame_id == frame_id
    assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == STAMP
    assert bytes(msg.data) == want.astype(want.dtype.newbyteorder("<")).tobytes()


def test_camera_info_and_condition_deserialize_with_rclpy(bag_messages):
    _, msgs = bag_messages
    info = deserialize_message(msgs[DEFAULT_TOPICS.thermal_info].raw, CameraInfo)
    assert (info.height, info.width, info.header.frame_id) == (H, W, FRAME_IDS["thermal"])
    assert info.k[0] == pytest.approx(4.0) and info.k[2] == pytest.approx(3.5) and info.k[8] == 1.0
    assert list(info.p[:3]) == list(info.k[:3]) and info.distortion_model == "plumb_bob"
    assert deserialize_message(msgs[DEFAULT_TOPICS.condition].raw, String).data == "dusk"


def test_detections_deserialize_with_real_vision_msgs(bag_messages):
    vision_msgs = pytest.importorskip("vision_msgs.msg", reason="vision_msgs not built (run `make` first)")
    _, msgs = bag_messages
    arr = deserialize_message(msgs[DEFAULT_TOPICS.objects].raw, vision_msgs.Detection2DArray)
    (det,) = arr.detections
    assert (det.id, det.results[0].hypothesis.class_id, det.results[0].hypothesis.score) == ("1", "13", 1.0)
    assert (det.bbox.center.position.x, det.bbox.center.position.y) == (3.5, 2.0)
    assert (det.bbox.size_x, det.bbox.size_y) == (3.0, 2.0)
    assert arr.header.frame_id == FRAME_IDS["rgb"]


def test_rclpy_bytes_read_back_with_rosbags():
    data = np.arange(H * W, dtype=np.uint16).reshape(H, W)
    msg = Image(height=H, width=W, encoding="mono16", is_bigendian=0, step=2 * W, data=data.tobytes())
    msg.header.frame_id = "camera_thermal_optical_frame"
    store = bag_typestore()
    back = store.deserialize_cdr(serialize_message(msg), "sensor_msgs/msg/Image")
    arr, enc = image_from_msg(back)
    assert enc == "mono16" and np.array_equal(arr, data) and back.header.frame_id == msg.header.frame_id
