"""launch/damcseg.launch.py under a real launch_pytest (a ROS 2 distro with launch installed).

conftest.py skips this module, naming the reason, where launch_pytest is missing (pip-only ROS)
or cannot run under the installed pytest (>= 8.4, ros2/launch#979; pytest 8.3.5 works). The
launch file's rules are tested without launch in test_launch_file.py and
test/unit/test_launch_args.py.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import launch_pytest
import pytest
from launch import LaunchDescription
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "damcseg.launch.py"


@launch_pytest.fixture
def launch_description():
    return LaunchDescription(
        [
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
                launch_arguments={"model": "damcseg_tiny", "namespace": "launchtest"}.items(),
            ),
            launch_pytest.actions.ReadyToTest(),
        ]
    )


@pytest.mark.launch(fixture=launch_description)
def test_launched_node_publishes_label_info():
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from vision_msgs.msg import LabelInfo

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    rclpy.init()
    node = rclpy.create_node("damcseg_launch_probe")
    got = []
    qos = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    node.create_subscription(LabelInfo, "/launchtest/damcseg/label_info", got.append, qos)
    try:
        deadline = time.monotonic() + 60
        while not got and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        assert got, "no LabelInfo from the launched node within 60 s"
        assert len(got[0].class_map) == 19
    finally:
        node.destroy_node()
        rclpy.shutdown()
