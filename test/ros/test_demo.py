"""The README's main command, shortened: synthetic bag -> live node -> recorded outputs -> report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_short_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "damcseg_ros.demo", "--out", str(out), "--seconds", "4", "--fps", "5",
         "--size", "64x128", "--model", "damcseg_tiny"],
        env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    logs = "".join(
        (out / f).read_text() for f in ("node.log", "recorder.log", "replay.log") if (out / f).exists()
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in proc.stdout
    assert "report:" in proc.stdout and (out / "report.html").is_file()
    html = (out / "report.html").read_text()
    for section in ("Metrics per condition", "Metrics per sensor state", "Timelines", "Examples"):
        assert section in html
    metrics = json.loads((out / "drive_metrics.json").read_text())
    assert metrics["frames_sent"] == 20
    # The node keeps up with a 5 Hz stream of tiny frames, newest-wins may drop a few.
    assert metrics["frames_processed"] >= 10, metrics
    # Thermal drops out from 55% to 70% of the drive: those frames are completed by the model.
    assert metrics["sensor_states"].get("thermal completed", 0) >= 1, metrics["sensor_states"]
    assert metrics["sensor_states"].get("all sensors", 0) >= 5, metrics["sensor_states"]
    assert set(metrics["metrics"]["condition"]) <= {"day", "dusk", "night", "fog"}
    assert metrics["latency"]["p50_ms"] > 0
