"""The scripted drive of the demo: one minute through day, dusk, night and fog, with faults.

The drive alternates empty and crowded road stretches, loses the thermal camera for a while at
night, and has a short depth glitch (frames of all-invalid depth) at dusk, so that the demo's
report shows the completion network, the scene-complexity categories and the sensor states at
work. Everything is deterministic from the seed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from damcseg_core.data.synthetic import SyntheticDrive, SyntheticFrame, SyntheticWorldConfig

__all__ = ["DEPTH_GLITCH", "THERMAL_DROPOUT", "demo_drive_config", "demo_drive_frames", "demo_dropouts"]

# Fractions of the drive's length (the demo runs ~60 s, tests a few seconds).
CONDITION_PHASES = (("day", 0.0), ("dusk", 0.25), ("night", 0.5), ("fog", 0.75))
CROWD_PHASES = (
    (0.0, 0.05),
    (0.125, 0.9),
    (0.25, 0.15),
    (0.375, 1.0),
    (0.5, 0.1),
    (0.625, 0.85),
    (0.75, 0.2),
    (0.875, 0.9),
)
THERMAL_DROPOUT = (0.55, 0.70)  # thermal camera sends nothing (night)
DEPTH_GLITCH = (0.35, 0.38)  # depth frames arrive but every pixel is invalid (dusk)


def demo_drive_config(
    seconds: float,
    fps: float,
    size: tuple[int, int],
    seed: int,
    depth_model: str = "ideal",
    thermal_model: str = "ideal",
) -> SyntheticWorldConfig:
    """World config of the scripted drive: the condition and crowd schedules scaled to its length.

    ``depth_model`` (ideal | lidar | stereo | mix) and ``thermal_model`` (ideal | realistic) pick
    the sensor models of :mod:`damcseg_core.data.synthetic.sensors`.
    """
    if seconds <= 0 or fps <= 0:
        raise ValueError(f"seconds and fps must be positive, got {seconds} and {fps}")
    n = max(1, round(seconds * fps))
    return SyntheticWorldConfig(
        size=tuple(size),
        seed=seed,
        fps=fps,
        conditions=("day",),
        condition_schedule=[(round(f * n), c) for c, f in CONDITION_PHASES],
        crowd_schedule=[(round(f * n), d) for f, d in CROWD_PHASES],
        depth_model=depth_model,
        thermal_model=thermal_model,
    )


def demo_dropouts(seconds: float) -> dict[str, list[tuple[float, float]]]:
    """Sensor dropout windows in seconds since the first frame, for ``write_drive_bag``."""
    return {"thermal": [(THERMAL_DROPOUT[0] * seconds, THERMAL_DROPOUT[1] * seconds)]}


def demo_drive_frames(
    seconds: float,
    fps: float,
    size: tuple[int, int],
    seed: int,
    depth_model: str = "ideal",
    thermal_model: str = "ideal",
) -> Iterator[SyntheticFrame]:
    """Frames of the scripted drive (sensor models as :func:`demo_drive_config`), depth glitch applied."""
    cfg = demo_drive_config(seconds, fps, size, seed, depth_model, thermal_model)
    drive = SyntheticDrive(cfg)
    n = max(1, round(seconds * fps))
    glitch = range(round(DEPTH_GLITCH[0] * n), round(DEPTH_GLITCH[1] * n))
    for i in range(n):
        frame = drive.frame(i)
        if i in glitch:
            frame = dataclasses.replace(frame, depth=np.zeros_like(frame.depth))
        yield frame
