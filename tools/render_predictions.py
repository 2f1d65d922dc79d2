#!/usr/bin/env python3
"""Render RGB | prediction | ground truth for one synthetic scene per condition (docs/predictions.png).

    python tools/render_predictions.py [--checkpoint damcseg_core/weights/damcseg_edge.pt] [--out docs/predictions.png]

The scenes come from the synthetic test seed (2024), which training never sees (it uses seeds 1
and 1001). Each row is titled with its condition, the frame's mIoU and the predicted S.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from damcseg_core.data.classes import IGNORE_INDEX, NUM_CLASSES, colorize
from damcseg_core.data.synthetic import SyntheticDrive, SyntheticWorldConfig
from damcseg_core.eval.segmentation_metrics import SegmentationIoU
from damcseg_core.inference import default_checkpoint, load_predictor

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=default_checkpoint())
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "predictions.png")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()

    predictor = load_predictor(checkpoint=args.checkpoint)
    drive = SyntheticDrive(SyntheticWorldConfig(size=(256, 512), seed=args.seed, crowd=(0.5, 1.0)))
    rows = []
    for i, condition in enumerate(("day", "dusk", "night", "fog")):
        frame = drive.frame(40 + 25 * i, condition=condition)
        res = predictor.predict({"rgb": frame.rgb, "depth": frame.depth, "thermal": frame.thermal / 65535.0})
        iou = SegmentationIoU(NUM_CLASSES, IGNORE_INDEX)
        iou.update(res.mask, frame.semantic)
        panels = [frame.rgb, colorize(res.mask), colorize(frame.semantic)]
        row = np.concatenate(
            [np.pad(p, ((0, 0), (0, 4), (0, 0)), constant_values=255) for p in panels], axis=1
        )
        text = f"{condition}: mIoU {100 * iou.compute()['miou']:.1f}%, S {res.S:.2f}, {len(res.boxes)} boxes"
        cv2.putText(row, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1, cv2.LINE_AA)
        rows.append(np.pad(row, ((0, 4), (0, 0), (0, 0)), constant_values=255))
    header = np.full((24, rows[0].shape[1], 3), 255, np.uint8)
    for x, label in zip((6, 522, 1038), ("RGB", "prediction", "ground truth")):
        cv2.putText(header, label, (x, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    image = np.concatenate([header, *rows], axis=0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
