"""Launch the damcseg node (ROS 2 Humble / Jazzy / Kilted) with config/damcseg.yaml.

Example::

    ros2 launch damcseg_ros damcseg.launch.py checkpoint:=/models/damcseg_edge.pt device:=cuda \\
        backend:=onnxruntime onnx_path:=/models/damcseg_edge_onnx \\
        rgb_topic:=/camera/color/image_raw depth_topic:=/camera/depth/image_rect_raw \\
        thermal_topic:=/flir/image_raw namespace:=front

Arguments left empty keep the value of the config file. Without the launch package (pip-only
machines) run the same node directly::

    python -m damcseg_ros.node --ros-args --params-file config/damcseg.yaml -p checkpoint:=...
"""

from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "damcseg_ros"

# name -> (default, description). Empty defaults mean "keep the config file's value".
ARGUMENTS: dict[str, tuple[str, str]] = {
    "config_file": (
        os.path.join(get_package_share_directory(PACKAGE), "config", "damcseg.yaml"),
        "YAML parameter file (/**: ros__parameters: form) for the node.",
    ),
    "checkpoint": ("", "damcseg checkpoint (.pt); empty: the config file's value / package default."),
    "model": ("", "Random-init variant for bring-up only (e.g. damcseg_tiny); outputs are meaningless."),
    "namespace": ("", "Namespace of the node and of its relative topics (e.g. front)."),
    "node_name": ("damcseg", "Name of the node."),
    "device": ("", "Torch device: cpu, cuda or cuda:N; empty: the config file's value."),
    "backend": ("", "Inference backend: torch or onnxruntime; empty: the config file's value."),
    "onnx_path": (
        "",
        "Folder written by damcseg-export (backend onnxruntime); empty: the config file's value.",
    ),
    "use_sim_time": ("false", "Use /clock (rosbag replay with --clock, simulators)."),
    "rgb_topic": ("rgb/image", "Topic of the RGB camera images (remaps rgb/image)."),
    "depth_topic": ("depth/image", "Topic of the registered depth images (remaps depth/image)."),
    "thermal_topic": ("thermal/image", "Topic of the registered thermal images (remaps thermal/image)."),
    "log_level": ("info", "Logger level: debug, info, warn, error."),
}


def _node(context, *args, **kwargs):
    """Build the Node action from the resolved arguments (only non-empty ones override the YAML)."""
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    overrides = {
        key: value[key] for key in ("checkpoint", "model", "device", "backend", "onnx_path") if value[key]
    }
    overrides["use_sim_time"] = value["use_sim_time"].strip().lower() in ("true", "1", "yes")
    remaps = [(f"{m}/image", value[f"{m}_topic"]) for m in ("rgb", "depth", "thermal")]
    remaps += [
        (f"{m}/camera_info", _camera_info_topic(value[f"{m}_topic"])) for m in ("rgb", "depth", "thermal")
    ]
    return [
        Node(
            package=PACKAGE,
            executable="damcseg_node",
            name=value["node_name"],
            namespace=value["namespace"],
            parameters=[value["config_file"], overrides],
            remappings=remaps,
            arguments=["--ros-args", "--log-level", value["log_level"]],
            output="screen",
            emulate_tty=True,
        )
    ]


def _camera_info_topic(image_topic: str) -> str:
    """camera_info sibling of an image topic, as image_transport names it (.../image_raw -> .../camera_info)."""
    head, _, _ = image_topic.rpartition("/")
    return f"{head}/camera_info" if head else "camera_info"


def _fastdds_profile() -> list[SetEnvironmentVariable]:
    """Our Fast DDS profile (16 MB shared-memory segment) for the node, unless the user set a profile.

    With Fast DDS's 512 KB default segment, best-effort images over ~0.5 MB are silently dropped by
    the *publishing* process: this covers the node's own outputs (colour overlay); camera drivers
    started elsewhere need the same variable (see README). Fast DDS 2.x (Humble, Jazzy) reads
    FASTRTPS_DEFAULT_PROFILES_FILE, Fast DDS 3 (Kilted and later) FASTDDS_DEFAULT_PROFILES_FILE.
    """
    if os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE"):
        return []
    profile = os.path.join(get_package_share_directory(PACKAGE), "config", "fastdds_large_images.xml")
    if not os.path.isfile(profile):
        return []
    fastdds2 = os.environ.get("ROS_DISTRO", "") in ("humble", "iron", "jazzy")
    var = "FASTRTPS_DEFAULT_PROFILES_FILE" if fastdds2 else "FASTDDS_DEFAULT_PROFILES_FILE"
    return [SetEnvironmentVariable(var, profile)]


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and start the node."""
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in ARGUMENTS.items()
    ]
    return LaunchDescription([*declared, *_fastdds_profile(), OpaqueFunction(function=_node)])
