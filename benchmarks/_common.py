"""What the benchmark scripts share: the repo root, the machine description, the node teardown.

The model to load comes from ``damcseg_core.inference`` (``default_checkpoint``, ``load_predictor``)
and the Fast DDS profile from ``damcseg_ros.fastdds`` (``ensure_large_image_profile``): the one
policy each, never a copy here. Run the scripts with the project environment
(``. tools/env.sh``, which puts the repo on ``PYTHONPATH``), e.g. ``python benchmarks/run.py``.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["REPO", "cpu_model", "stop_node"]

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def stop_node(proc: subprocess.Popen, log: Any, executor: Any, node: Any, context: Any) -> None:
    """Stop the node subprocess (terminate, then kill) and tear down this process's rclpy side."""
    import rclpy

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    log.close()
    executor.shutdown(timeout_sec=2.0)
    node.destroy_node()
    rclpy.try_shutdown(context=context)
