"""The one Fast DDS profile policy of the project: which XML, in which variable, or nothing.

Fast DDS writes samples for same-host subscribers into the *publishing* process's shared-memory
segment, 512 KB by default; best-effort images larger than that (640x480 rgb8 is 0.9 MB), or
rgb + depth + thermal published back to back, are silently dropped
(``benchmarks/results/dds_large_images.md``). ``config/fastdds_large_images.xml`` adds a 16 MB
segment.

:func:`profile_setting` decides, from the environment and the installed middleware:

* another RMW than Fast DDS (``RMW_IMPLEMENTATION=rmw_cyclonedds_cpp``, zenoh, ...): nothing;
* a profile the user set in either variable: nothing (it is never replaced);
* otherwise the variable *this* Fast DDS reads: Fast DDS 2 (Humble, Iron, Jazzy) reads
  ``FASTRTPS_DEFAULT_PROFILES_FILE``, Fast DDS 3 (Kilted and later) ``FASTDDS_DEFAULT_PROFILES_FILE``
  (Fast DDS 2 silently ignores the other name: on Jazzy 9 of 20 camera frames arrived with the
  profile in ``FASTDDS_...``, 20 of 20 in ``FASTRTPS_...``). The major version comes from the
  installed Fast DDS wheel where there is one (pip-installed ROS: ``ros-fastrtps`` 2.14 on Jazzy,
  ``ros-fastdds`` 3.2 on Kilted), else from ``ROS_DISTRO`` (a sourced ROS 2 install).

Every entry point applies it the same way: ``tools/env.sh`` (``python -m damcseg_ros.fastdds``
prints the ``export`` line), the launch file, the demo, the tests' conftest, benchmarks, and the
node, replay and recorder, which call :func:`ensure_large_image_profile` before ``rclpy.init``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping, MutableMapping
from importlib import metadata
from pathlib import Path

__all__ = [
    "FASTDDS2_DISTROS",
    "PROFILE_FILE_NAME",
    "PROFILE_VARIABLES",
    "ensure_large_image_profile",
    "fastdds_major",
    "installed_fastdds_major",
    "large_image_profile",
    "profile_setting",
    "profile_variable",
]

PROFILE_FILE_NAME = "fastdds_large_images.xml"
# Fast DDS 3 (Kilted and later) reads the first, Fast DDS 2 (Humble, Iron, Jazzy) the second.
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
FASTDDS2_DISTROS = ("foxy", "galactic", "humble", "iron", "jazzy")
"""ROS 2 distros whose Fast DDS is 2.x (Kilted moved to Fast DDS 3)."""


FASTDDS_WHEELS = ("ros-fastdds", "ros-fastrtps")
"""The Fast DDS library's wheel: ``ros-fastdds`` 3.x (Kilted), ``ros-fastrtps`` 2.x (Jazzy)."""
LOOKUP = -1
"""``installed=`` default: look the wheel up (None: behave as if no wheel were installed)."""


def installed_fastdds_major() -> int | None:
    """Major version of the pip-installed Fast DDS library wheel, None without one."""
    for wheel in FASTDDS_WHEELS:
        try:
            return int(metadata.version(wheel).split(".")[0])
        except (metadata.PackageNotFoundError, ValueError):
            continue
    return None


def fastdds_major(environ: Mapping[str, str] | None = None, installed: int | None = LOOKUP) -> int:
    """The Fast DDS major version this environment runs: 2 or 3.

    Args:
        environ: the environment (default ``os.environ``); its ``ROS_DISTRO`` decides when no
            Fast DDS wheel is installed (a sourced ROS 2 install).
        installed: the wheel's major version; default: looked up; None: no wheel (for tests).
    """
    env = os.environ if environ is None else environ
    major = installed_fastdds_major() if installed == LOOKUP else installed
    if major is not None:
        return 2 if major <= 2 else 3
    return 2 if env.get("ROS_DISTRO", "").strip().lower() in FASTDDS2_DISTROS else 3


def profile_variable(major: int) -> str:
    """The environment variable Fast DDS ``major`` reads its default XML profile from."""
    return PROFILE_VARIABLES[1] if major <= 2 else PROFILE_VARIABLES[0]


def large_image_profile() -> Path | None:
    """The profile file: the installed package share if there is one, else this source tree's.

    The same XML serves Fast DDS 2 and 3 (one SHM transport descriptor with ``segment_size`` and a
    default participant profile using it: the elements exist with the same meaning in both).
    """
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


def profile_setting(
    environ: Mapping[str, str] | None = None, installed: int | None = LOOKUP
) -> tuple[str, str] | None:
    """The policy: ``(variable, profile path)`` to set in ``environ``, or None to leave it alone.

    None when another middleware is selected, when the user set a profile in either variable, or
    when no profile file is found.
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
    return profile_variable(fastdds_major(env, installed)), str(profile)


def ensure_large_image_profile(
    environ: MutableMapping[str, str] | None = None, installed: int | None = LOOKUP
) -> str | None:
    """Apply :func:`profile_setting` to ``environ`` (default ``os.environ``; before ``rclpy.init``).

    Returns:
        The variable that was set, or None when nothing was changed.
    """
    env = os.environ if environ is None else environ
    setting = profile_setting(env, installed)
    if setting is None:
        return None
    var, path = setting
    env[var] = path
    return var


def main(argv: list[str] | None = None) -> int:
    """``python -m damcseg_ros.fastdds --shell``: the ``export`` line for sh (empty: nothing to set)."""
    parser = argparse.ArgumentParser(prog="python -m damcseg_ros.fastdds", description=main.__doc__)
    parser.add_argument("--shell", action="store_true", help="print `export VAR=path` for eval in sh")
    args = parser.parse_args(argv)
    setting = profile_setting()
    if setting is None:
        return 0
    var, path = setting
    print(f"export {var}={shlex.quote(path)}" if args.shell else f"{var}={path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
