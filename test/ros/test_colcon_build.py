"""The package builds with colcon from a clean workspace, as a user's ROS 2 workspace would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_FILES = (
    "package.xml",
    "CMakeLists.txt",
    "msg",
    "damcseg_core",
    "damcseg_ros",
    "scripts",
    "launch",
    "config",
)


@pytest.mark.slow
def test_colcon_build_from_clean_workspace(tmp_path: Path):
    colcon = Path(sys.executable).with_name("colcon")
    if not colcon.exists():
        colcon = shutil.which("colcon")
    assert colcon, "colcon not found next to the interpreter or on PATH; run `make setup`"
    src = tmp_path / "ws" / "src"
    pkg = src / "damcseg_ros"
    pkg.mkdir(parents=True)
    for name in PACKAGE_FILES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, pkg / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, pkg / name)
    # Where vision_msgs is missing (pip-only ROS), the workspace gets our compat copy too.
    shutil.copytree(ROOT / "compat" / "vision_msgs", src / "vision_msgs")

    venv = Path(sys.prefix)
    env = dict(os.environ)
    # Build against the ROS from the venv only, not against the repository's install/ tree.
    env["AMENT_PREFIX_PATH"] = env["CMAKE_PREFIX_PATH"] = str(venv)
    env.pop("COLCON_PREFIX_PATH", None)
    out = subprocess.run(
        [str(colcon), "build", "--event-handlers", "console_direct-",
         "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"],
        cwd=tmp_path / "ws", env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "Finished <<< vision_msgs" in out.stdout and "Finished <<< damcseg_ros" in out.stdout, out.stdout

    install = tmp_path / "ws" / "install" / "damcseg_ros"
    site = install / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert (install / "lib" / "damcseg_ros" / "damcseg_node").stat().st_mode & 0o111, "node not executable"
    assert (install / "share" / "damcseg_ros" / "package.xml").is_file()
    assert (install / "share" / "damcseg_ros" / "launch").is_dir()
    assert (install / "share" / "damcseg_ros" / "config").is_dir()
    assert (site / "damcseg_ros" / "msg" / "_scene_complexity.py").is_file()
    assert (site / "damcseg_core" / "config.py").is_file()
    assert (site / "damcseg_ros" / "__init__.py").read_text() == (
        ROOT / "damcseg_ros" / "__init__.py"
    ).read_text()
