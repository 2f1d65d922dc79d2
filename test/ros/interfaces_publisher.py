"""Helper process for test_interfaces.py: publishes one of each of our interface messages.

Run as a separate process so the test proves the messages cross a process boundary over DDS
(loopback only: the test environment sets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST).
"""

from __future__ import annotations

import sys

import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from vision_msgs.msg import (
    BoundingBox2D,
    Detection2D,
    Detection2DArray,
    LabelInfo,
    ObjectHypothesisWithPose,
    VisionClass,
)

from damcseg_ros.msg import SceneComplexity


def build_messages(stamp_sec: int) -> tuple[SceneComplexity, Detection2DArray, LabelInfo]:
    sc = SceneComplexity()
    sc.header.stamp.sec = stamp_sec
    sc.header.frame_id = "camera_rgb_optical_frame"
    sc.score, sc.target_density, sc.occlusion, sc.edge_density = 0.55, 0.5, 0.25, 0.9
    sc.category = SceneComplexity.CATEGORY_MODERATE
    sc.num_targets = 7
    sc.global_weight, sc.local_weight, sc.post_weight = 0.5, 0.375, 0.25
    sc.rgb_weight, sc.depth_weight, sc.thermal_weight = 0.75, 0.5, 0.125
    sc.rgb_present, sc.depth_present, sc.thermal_present = True, True, False
    sc.thermal_completed = True

    det = Detection2D()
    det.header = sc.header
    hyp = ObjectHypothesisWithPose()
    hyp.hypothesis.class_id = "person"
    hyp.hypothesis.score = 0.875
    det.results.append(hyp)
    det.bbox = BoundingBox2D()
    det.bbox.center.position.x, det.bbox.center.position.y = 120.5, 64.25
    det.bbox.center.theta = 0.0
    det.bbox.size_x, det.bbox.size_y = 10.0, 30.0
    det.id = "3"
    arr = Detection2DArray(header=sc.header, detections=[det])

    info = LabelInfo(header=sc.header, threshold=0.3)
    info.class_map = [
        VisionClass(class_id=11, class_name="person"),
        VisionClass(class_id=13, class_name="car"),
    ]
    return sc, arr, info


def main() -> None:
    rclpy.init()
    node = rclpy.create_node("damcseg_interfaces_publisher")
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    pubs = [
        node.create_publisher(SceneComplexity, "test/scene_complexity", 10),
        node.create_publisher(Detection2DArray, "test/detections", 10),
        node.create_publisher(LabelInfo, "test/label_info", latched),
    ]
    msgs = build_messages(stamp_sec=42)
    pubs[2].publish(msgs[2])  # latched: published once, late subscribers still get it

    def tick():
        pubs[0].publish(msgs[0])
        pubs[1].publish(msgs[1])

    node.create_timer(0.05, tick)
    print("READY", flush=True)
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
