"""Render docs/synthetic_preview.png: the synthetic world's sensor models side by side.

    python tools/render_synthetic_preview.py                     # writes docs/synthetic_preview.png
    python tools/render_synthetic_preview.py --out /tmp/p.png --seed 5 --frame 40

One scene (one drive, one frame) under day, night and fog, two rows per condition:

    RGB            | depth: ideal       | depth: lidar (returns 3x3) | depth: stereo
    labels + boxes | thermal: ideal     | thermal: realistic         | |thermal ideal - realistic|

Depth in turbo (red near, blue 80 m, black invalid), thermal in inferno over -20..45 C, the
difference in grey over 0..5 K. Every panel is the very same scene: the sensor models only change
what the sensors report (see damcseg_core/data/synthetic/sensors.py).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import cv2
import numpy as np

from damcseg_core.data.synthetic import SyntheticDrive, SyntheticWorldConfig
from damcseg_core.data.synthetic.folder import caption, depth_panel, label_panel, thermal_panel

CONDITIONS = ("day", "night", "fog")


def sensor_rows(seed: int, frame: int, size: tuple[int, int], conditions=CONDITIONS) -> np.ndarray:
    """The preview image (RGB, uint8) described in the module docstring."""
    base = SyntheticWorldConfig(size=size, seed=seed, crowd=(0.8, 0.8))
    drives = {
        (d, t): SyntheticDrive(dataclasses.replace(base, depth_model=d, thermal_model=t))
        for d, t in (("ideal", "ideal"), ("lidar", "realistic"), ("stereo", "ideal"))
    }
    h = size[0]
    vsep = np.full((h, 2, 3), 255, np.uint8)
    rows = []
    for cond in conditions:
        ideal = drives["ideal", "ideal"].frame(frame, condition=cond)
        lidar = drives["lidar", "realistic"].frame(frame, condition=cond)
        stereo = drives["stereo", "ideal"].frame(frame, condition=cond)
        diff = np.abs(lidar.thermal.astype(np.float32) - ideal.thermal.astype(np.float32)) / 100.0
        diff_img = np.repeat((np.clip(diff / 5.0, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=2)
        top = [
            caption(ideal.rgb, f"{cond}: RGB"),
            caption(depth_panel(ideal.depth), "depth ideal"),
            caption(depth_panel(lidar.depth, dilate=3), f"lidar {100 * (lidar.depth > 0).mean():.1f}% valid"),
            caption(depth_panel(stereo.depth), f"stereo {100 * (stereo.depth > 0).mean():.0f}% valid"),
        ]
        bottom = [
            caption(label_panel(ideal), "labels"),
            caption(thermal_panel(ideal.thermal), "thermal ideal"),
            caption(thermal_panel(lidar.thermal), "thermal realistic"),
            caption(diff_img, "|ideal - realistic| 0..5 K"),
        ]
        for panels in (top, bottom):
            line = []
            for p in panels:
                line += [p, vsep]
            rows.append(np.concatenate(line[:-1], axis=1))
            rows.append(np.full((2, rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("docs/synthetic_preview.png"))
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--frame", type=int, default=40)
    p.add_argument("--size", default="256x512", help="HxW")
    args = p.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    img = sensor_rows(args.seed, args.frame, size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), img[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise SystemExit(f"could not write {args.out}")
    print(f"wrote {args.out} ({img.shape[1]}x{img.shape[0]})")


if __name__ == "__main__":
    main()
