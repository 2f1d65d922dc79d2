"""Fast DDS profile for camera-size images, applied by our own entry points.

Fast DDS writes samples for same-host subscribers into the *publishing* process's shared-memory
segment, 512 KB by default; best-effort images larger than that (640x480 rgb8 is 0.9 MB), or
rgb + depth + thermal published back to back, are silently dropped
(``benchmarks/results/dds_large_images.md``). ``config/fastdds_large_images.xml`` adds a 16 MB
segment. ``tools/env.sh``, the launch file, the demo and the tests export it; the node, replay and
recorder entry points call :func:`ensure_large_image_profile` before ``rclpy.init`` so that a
process started on its own gets it too. A profile the user set is never replaced.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

__all__ = ["PROFILE_FILE_NAME", "PROFILE_VARIABLES", "ensure_large_image_profile", "large_image_profile"]

PROFILE_FILE_NAME = "fastdds_large_images.xml"
# Fast DDS 3 (Kilted and later) reads the first, Fast DDS 2 (Humble, Iron, Jazzy) the second.
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
_FASTDDS2_DISTROS = ("humble", "iron", "jazzy")


def large_image_profile() -> Path | None:
    """The profile file: the installed package share if there is one, else this source tree's."""
    candidates = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            candidates.append(Path(get_package_share_directory("damcseg_ros")) / "config" / PROFILE_FILE_NAME)
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    candidates.append(Path(__file__).resolve().parents[1] / "config" / PROFILE_FILE_NAME)
    return next((p for p in candidates if p.is_file()), None)


def ensure_large_image_profile(environ: MutableMapping[str, str] | None = None) -> str | None:
    """Point Fast DDS at our profile unless another middleware or a user profile is configured.

    Args:
        environ: the environment to change (default ``os.environ``; must run before ``rclpy.init``).

    Returns:
        The variable that was set, or None when nothing was changed.
    """
    env = os.environ if environ is None else environ
    rmw = env.get("RMW_IMPLEMENTATION", "")
    if rmw and not rmw.startswith("rmw_fastrtps"):
        return None
    if any(env.get(var) for var in PROFILE_VARIABLES):
        return None
    profile = large_image_profile()
    if profile is None:
        return None
    var = PROFILE_VARIABLES[1] if env.get("ROS_DISTRO", "") in _FASTDDS2_DISTROS else PROFILE_VARIABLES[0]
    env[var] = str(profile)
    return var
