"""End to end: the node process (damcseg_tiny, random weights) on synced RGB/D/T frames over loopback.

One node serves the whole module (start-up dominates the run time). The tests run in file
order: outputs of the full sensor set first, then thermal stopped mid-run and resumed.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs not built (source tools/env.sh)")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import CompressedImage, Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from damcseg_core.data.classes import CITYSCAPES_CLASSES
from damcseg_ros.msg import SceneComplexity

pytestmark = [pytest.mark.ros, pytest.mark.slow]

SCORE_THRESHOLD = 0.05
MISSING_AFTER = 1.2
OUTPUTS = {
    "mask": (Image, "/damcseg/segmentation"),
    "color": (Image, "/damcseg/segmentation/color"),
    "compressed": (CompressedImage, "/damcseg/segmentation/compressed"),
    "detections": (Detection2DArray, "/damcseg/detections"),
    "scene": (SceneComplexity, "/damcseg/scene_complexity"),
}


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


@pytest.fixture(scope="module")
def system(kit, ros_context, tmp_path_factory):
    """Node process + frame publisher + collectors on every output; torn down whatever happens."""
    node = ros_context
    proc = kit.NodeProcess(
        [
            "-p", "model:=damcseg_tiny",
            "-p", "publish_compressed:=true",
            "-p", f"score_threshold:={SCORE_THRESHOLD}",
            "-p", f"sync.missing_after:={MISSING_AFTER}",
            "-p", "diagnostics_period:=0.25",
            "-p", "use_camera_info:=true",
        ],
        tmp_path_factory.mktemp("node") / "node.log",
    )  # fmt: skip
    collectors = {k: kit.Collector(node, t, topic, kit.reliable_qos()) for k, (t, topic) in OUTPUTS.items()}
    collectors["diagnostics"] = kit.Collector(node, DiagnosticArray, "/diagnostics", kit.reliable_qos())
    frames = kit.FramePublisher(node, rate=8.0)
    try:
        proc.wait_for_output(lambda: collectors["scene"].msgs, "output")
        yield {"proc": proc, "frames": frames, **collectors}
    finally:
        frames.destroy()
        rc = proc.stop()
        print(f"node exit code {rc}; log:\n{proc.log()}")


def common_stamp(kit, system, keys) -> int:
    """A stamp for which every output in ``keys`` has arrived."""

    def find():
        sets = [system[k].stamps() for k in keys]
        both = set.intersection(*sets)
        return max(both) if both else None

    return kit.wait_for(find, 20.0, f"one stamp on all of {list(keys)}")


def by_stamp(collector, stamp):
    return next(m for m in list(collector.msgs) if stamp_ns(m) == stamp)


def test_every_output_carries_the_rgb_header_of_a_sent_frame(kit, system):
    stamp = common_stamp(kit, system, OUTPUTS)
    assert stamp in system["frames"].stamps
    for key in OUTPUTS:
        assert by_stamp(system[key], stamp).header.frame_id == "rgb_optical", key


def test_mask_is_mono8_class_ids_at_input_size(kit, system):
    stamp = common_stamp(kit, system, ["mask", "compressed", "color"])
    mask_msg = by_stamp(system["mask"], stamp)
    assert (mask_msg.encoding, mask_msg.height, mask_msg.width, mask_msg.step) == (
        "mono8",
        kit.HEIGHT,
        kit.WIDTH,
        kit.WIDTH,
    )
    mask = np.frombuffer(bytes(mask_msg.data), np.uint8).reshape(kit.HEIGHT, kit.WIDTH)
    assert set(np.unique(mask).tolist()) <= set(range(19)) | {255}
    png = by_stamp(system["compressed"], stamp)
    assert png.format == "mono8; png compressed"
    decoded = cv2.imdecode(np.frombuffer(bytes(png.data), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(decoded, mask)  # lossless: same class ids
    color = by_stamp(system["color"], stamp)
    assert (color.encoding, color.height, color.width) == ("rgb8", kit.HEIGHT, kit.WIDTH)


def test_detections_arrive_per_frame_and_lie_inside_the_image(kit, system):
    # damcseg_tiny with random weights rarely detects anything, so the box checks below may see no
    # boxes; the bbox centre/size arithmetic is covered exactly in test/unit/test_outputs.py.
    stamp = common_stamp(kit, system, ["detections", "mask"])
    assert by_stamp(system["detections"], stamp).header.frame_id == "rgb_optical"
    dets = [d for msg in list(system["detections"].msgs) for d in msg.detections]
    for d in dets:
        cx, cy, sx, sy = d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y
        assert sx >= 0 and sy >= 0
        assert -1e-3 <= cx - sx / 2 and cx + sx / 2 <= kit.WIDTH + 1e-3
        assert -1e-3 <= cy - sy / 2 and cy + sy / 2 <= kit.HEIGHT + 1e-3
        assert d.results[0].hypothesis.class_id in CITYSCAPES_CLASSES
        assert SCORE_THRESHOLD <= d.results[0].hypothesis.score <= 1.0


def test_scene_complexity_is_plausible_with_all_sensors(kit, system):
    # Sensors start in "missing" until data flows; the first frame after that may lack the
    # sensors whose messages came a few ms after RGB, so wait for a full one.
    msg = kit.wait_for(
        lambda: next(
            (m for m in reversed(system["scene"].msgs) if m.depth_present and m.thermal_present), None
        ),
        10.0,
        "SceneComplexity of a frame with all sensors",
    )
    assert 0.0 <= msg.score <= 1.0
    for field in ("target_density", "occlusion", "edge_density"):
        assert 0.0 <= getattr(msg, field) <= 1.0, field
    assert msg.category in (0, 1, 2)
    assert (msg.rgb_present, msg.depth_present, msg.thermal_present) == (True, True, True)
    assert (msg.rgb_completed, msg.depth_completed, msg.thermal_completed) == (False, False, False)
    weights = (msg.global_weight, msg.local_weight, msg.post_weight)
    assert all(0.0 <= w <= 1.0 for w in weights)


def test_label_info_reaches_a_late_subscriber(kit, system, ros_context):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    qos = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    late = kit.Collector(
        ros_context, LabelInfo, "/damcseg/label_info", qos
    )  # node has been active for a while
    try:
        msg = kit.wait_for(lambda: late.msgs and late.msgs[0], 10.0, "LabelInfo on a late subscription")
        assert [(c.class_id, c.class_name) for c in msg.class_map] == list(enumerate(CITYSCAPES_CLASSES))
        assert msg.threshold == pytest.approx(SCORE_THRESHOLD)
    finally:
        ros_context.destroy_subscription(late.sub)


def latest_status(system, name):
    for arr in reversed(list(system["diagnostics"].msgs)):
        for status in arr.status:
            if status.name == name:
                return status
    return None


def values(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def test_diagnostics_report_ok_sensors_and_pipeline(kit, system):
    # Diagnostics start before the first frame (sensors are "ok" during their start-up grace
    # period, with rate 0): wait until the pipeline has processed a frame and rates settled.
    def settled():
        pipe = latest_status(system, "damcseg: pipeline")
        rgb = latest_status(system, "damcseg: rgb input")
        return pipe and rgb and int(values(pipe)["frames"]) > 3 and float(values(rgb)["rate_hz"]) > 2.0

    kit.wait_for(settled, 15.0, "diagnostics after a few processed frames")
    for m in ("rgb", "depth", "thermal"):
        status = latest_status(system, f"damcseg: {m} input")
        v = values(status)
        assert status.level == DiagnosticStatus.OK, status.message
        assert v["state"] == "ok"
        assert 2.0 < float(v["rate_hz"]) < 20.0  # published at 8 Hz
        assert float(v["age_s"]) < 1.0
    pipe = values(latest_status(system, "damcseg: pipeline"))
    assert pipe["model"] == "damcseg_tiny (random init)"
    assert pipe["device"] == "cpu"
    assert float(pipe["processing_ms"]) > 0
    assert float(pipe["latency_ms"]) > 0


def test_invalid_image_is_counted_and_explained(kit, system, ros_context):
    pub = ros_context.create_publisher(Image, "/rgb/image", kit.sensor_qos())
    bad = Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8))
    bad.header.stamp = ros_context.get_clock().now().to_msg()
    try:

        def counted():
            pub.publish(bad)
            s = latest_status(system, "damcseg: rgb input")
            return s is not None and int(values(s)["invalid"]) > 0 and s

        kit.wait_for(counted, 10.0, "invalid count on the rgb input status")
        assert int(values(latest_status(system, "damcseg: pipeline"))["invalid"]) > 0
        log = system["proc"].log()
        assert "dropping rgb image: rgb image has unsupported encoding 'yuv422'" in log
        assert "supported for rgb: rgb8, bgr8, rgba8, bgra8, mono8" in log
        # A valid image with a negative stamp (broken driver) is dropped and counted, not fatal.
        neg = Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(12))
        neg.header.stamp.sec = -5
        dropped = int(values(latest_status(system, "damcseg: rgb input"))["dropped"])

        def dropped_more():
            pub.publish(neg)
            return int(values(latest_status(system, "damcseg: rgb input"))["dropped"]) > dropped

        kit.wait_for(dropped_more, 10.0, "negative stamp counted as dropped")
        assert system["proc"].proc.poll() is None
    finally:
        ros_context.destroy_publisher(pub)


def test_camera_info_of_another_size_is_warned_once(kit, system, ros_context):
    from sensor_msgs.msg import CameraInfo

    pub = ros_context.create_publisher(CameraInfo, "/rgb/camera_info", kit.reliable_qos(1))
    text = f"rgb/camera_info is 20x10 but rgb/image is {kit.WIDTH}x{kit.HEIGHT}; check the remapping"
    try:

        def warned():
            pub.publish(CameraInfo(width=20, height=10))
            return text in system["proc"].log()

        kit.wait_for(warned, 10.0, "camera_info size warning")
        time.sleep(0.5)  # more frames with the same mismatch
        assert system["proc"].log().count(text) == 1
    finally:
        ros_context.destroy_publisher(pub)


def test_thermal_dropout_keeps_outputs_flowing_and_recovers(kit, system):
    frames, scene = system["frames"], system["scene"]
    frames.enabled["thermal"] = False
    stopped_at = frames.stamps[-1]
    # Outputs keep flowing without thermal, and say so.
    no_thermal = kit.wait_for(
        lambda: [m for m in list(scene.msgs) if stamp_ns(m) > stopped_at and not m.thermal_present],
        20.0,
        "SceneComplexity without thermal",
    )
    assert all(m.rgb_present and m.depth_present for m in no_thermal)
    assert all(m.thermal_completed for m in no_thermal)  # the MCN predicted the thermal features
    # Diagnostics: thermal goes WARN (late) then ERROR (missing after MISSING_AFTER s), others stay OK.

    def thermal_error():
        s = latest_status(system, "damcseg: thermal input")
        return s.level == DiagnosticStatus.ERROR and s

    status = kit.wait_for(thermal_error, 10.0, "thermal input ERROR")
    assert values(status)["state"] == "missing"
    thermal_levels = [
        (st.level, values(st)["state"])
        for arr in list(system["diagnostics"].msgs)
        for st in arr.status
        if st.name == "damcseg: thermal input"
    ]
    assert (DiagnosticStatus.WARN, "late") in thermal_levels  # WARN first, before ERROR
    assert latest_status(system, "damcseg: rgb input").level == DiagnosticStatus.OK
    count = len(scene.msgs)
    kit.wait_for(lambda: len(scene.msgs) >= count + 3, 10.0, "outputs while thermal is missing")
    # Thermal returns: OK again, and frames include it.
    frames.enabled["thermal"] = True
    resumed_at = frames.stamps[-1]
    kit.wait_for(
        lambda: [m for m in list(scene.msgs) if stamp_ns(m) > resumed_at and m.thermal_present],
        20.0,
        "SceneComplexity with thermal again",
    )
    status = kit.wait_for(
        lambda: (
            (s := latest_status(system, "damcseg: thermal input")) and s.level == DiagnosticStatus.OK and s
        ),
        10.0,
        "thermal input OK again",
    )
    assert values(status)["state"] == "ok"
    log = system["proc"].log()
    assert log.count("thermal input: late -> missing") == 1  # logged once, not per frame
    assert "thermal input: missing -> ok" in log or "thermal input: late -> ok" in log
