"""Test-wide settings: DDS on loopback, an isolated ROS domain, the Fast DDS profile, GPU/ROS markers."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import pytest

from damcseg_ros.fastdds import ensure_large_image_profile

# Every process started from the tests keeps DDS discovery and traffic on 127.0.0.1.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
# A per-run domain so that parallel test runs on one machine do not see each other.
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
# The large-image Fast DDS profile in the variable this Fast DDS reads (FASTRTPS_... on Jazzy's
# Fast DDS 2, FASTDDS_... on Kilted's Fast DDS 3), before any rclpy.init in this process; node
# subprocesses inherit it. damcseg_ros.fastdds is the one policy (tools/env.sh applies it too).
ensure_large_image_profile()


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def _ros_interfaces_available() -> tuple[bool, str]:
    try:
        import rclpy  # noqa: F401
        import vision_msgs.msg  # noqa: F401

        import damcseg_ros.msg  # noqa: F401
    except Exception as exc:  # ImportError, or the typesupport failing to load
        return False, f"{type(exc).__name__}: {exc}"
    return True, ""


# A test module outside test/ros that imports ROS packages (rclpy, *_msgs, our generated
# damcseg_ros.msg) or the distro-dependent parts (the Fast DDS policy, the CompressedImage codec):
# `make test-ros` (CI on Jazzy + 3.12) runs these with test/ros, selected by the ros_types marker.
_ROS_TYPES = re.compile(
    r"^\s*(?:from|import)\s+(?:rclpy|\w+_msgs|damcseg_ros\.(?:msg|fastdds|compressed))\b"
    r"|importorskip\(\s*[\"'](?:rclpy|\w+_msgs)",
    re.MULTILINE,
)


@functools.cache
def _uses_ros_types(path: Path) -> bool:
    try:
        return bool(_ROS_TYPES.search(path.read_text()))
    except OSError:
        return False


def pytest_collection_modifyitems(config, items):
    ros_ok, why = _ros_interfaces_available()
    require_ros = os.environ.get("DAMCSEG_REQUIRE_ROS") == "1"
    cuda = _cuda_available()
    for item in items:
        if "ros" in item.path.parts[-3:-1]:  # everything under test/ros talks to rclpy
            item.add_marker(pytest.mark.ros)
        elif "launch" in item.path.parts[-3:-1] or _uses_ros_types(item.path):
            item.add_marker(pytest.mark.ros_types)
        if "gpu" in item.keywords and not cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if "ros" in item.keywords and not ros_ok:
            if require_ros:
                # Under `make test` the interfaces were just built: not finding them is a bug.
                raise pytest.UsageError(f"ROS interfaces not importable under make test ({why})")
            item.add_marker(
                pytest.mark.skip(reason=f"ROS interfaces not importable ({why}); run via `make test`")
            )
