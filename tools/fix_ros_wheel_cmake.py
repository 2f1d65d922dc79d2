#!/usr/bin/env python3
"""Point the ROS 2 wheels' exported CMake files at this interpreter's include directories.

The PyPI ``ros-*`` wheels were built in a manylinux container, and their
``*__rosidl_generator_pyExport.cmake`` files name that container's Python and numpy include
directories (``/opt/python/cp311-cp311/...``). Building any interface package against them then
fails with "includes non-existent path". This rewrites those strings in ``<prefix>/share`` to
this interpreter's real paths. Idempotent; run again after installing more ``ros-*-msgs`` wheels.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy

_BUILD_PREFIX = re.compile(r"/opt/python/cp3\d+-cp3\d+")


def fix(prefix: Path) -> int:
    py_include = sysconfig.get_paths()["include"]
    np_include = numpy.get_include()
    changed = 0
    for path in (prefix / "share").rglob("*.cmake"):
        text = path.read_text()
        if "/opt/python/" not in text:
            continue
        new = re.sub(
            _BUILD_PREFIX.pattern + r"/lib/python3\.\d+/site-packages/numpy/_core/include", np_include, text
        )
        new = re.sub(_BUILD_PREFIX.pattern + r"/include/python3\.\d+", py_include, new)
        if new != text:
            path.write_text(new)
            changed += 1
    return changed


if __name__ == "__main__":
    prefix = Path(sys.argv[1] if len(sys.argv) > 1 else sys.prefix)
    print(f"fix_ros_wheel_cmake: rewrote {fix(prefix)} file(s) under {prefix / 'share'}")
