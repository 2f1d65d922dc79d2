#!/usr/bin/env python3
"""Choose a checkpoint's detection score threshold on a VALIDATION seed (never a held-out one).

    python tools/choose_score_threshold.py runs/edge_det_interim/best.pt \\
        --data synthetic:frames=48,size=256x512,seed=1001 --out runs/threshold.json

Runs the model once with a low candidate threshold (0.05), then for each threshold on a grid
keeps the boxes scoring at least that much and measures, on the valid objects at IoU 0.5
(:mod:`damcseg_core.data.targets` rule, ignore regions neither TP nor FP): precision, recall,
F1, mAP@0.5 and boxes per frame against valid objects per frame. The threshold with the best F1
is the one a driving stack wants (each published box is a claim); it is printed and written to
``--out``. Ship it with ``tools/ship_checkpoint.py SRC DST --set detection.score_threshold=T``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from damcseg_core.checkpoint import load_model
from damcseg_core.data.registry import build_dataset
from damcseg_core.eval.detection_metrics import DetectionMAP
from damcseg_core.eval.evaluator import sample_to_inputs
from damcseg_core.inference import load_predictor

GRID = np.round(np.arange(0.1, 0.801, 0.05), 2)


def sweep(records: list[tuple], thresholds: np.ndarray) -> list[dict]:
    """One row of detection statistics per threshold over ``(boxes, scores, labels, gt...)``."""
    rows = []
    for t in thresholds:
        m = DetectionMAP()
        for boxes, scores, labels, gt_boxes, gt_labels, areas, occ in records:
            keep = scores >= t
            m.update(boxes[keep], scores[keep], labels[keep], gt_boxes, gt_labels, areas, occ)
        r = m.compute()
        matched = r["recall_50"] * r["valid_gt_per_frame"]
        fp = r["fp_per_frame"]
        precision = matched / (matched + fp) if matched + fp > 0 else float("nan")
        recall = r["recall_50"]
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        rows.append(
            {"threshold": float(t), "precision": precision, "recall": recall, "f1": f1,
             "map_50": r["map_50"], "boxes_to_gt": r["boxes_to_gt"], "fp_per_frame": fp}
        )  # fmt: skip
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--data", default="synthetic:frames=48,size=256x512,seed=1001")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    seed = args.data.rsplit("seed=", 1)[-1].split(",")[0] if "seed=" in args.data else ""
    if seed in ("2024", "2025"):
        ap.error(f"seed {seed} is a held-out set (reporting only); choose on a validation seed such as 1001")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_model(args.checkpoint)
    predictor = load_predictor(
        "torch", model=model, detection={"score_threshold": 0.05, "max_detections": 100}, optimize=False
    )
    data = build_dataset(args.data)
    records = []
    for i in range(len(data)):
        s = data[i]
        p = predictor.predict(sample_to_inputs(s))
        records.append(
            (np.asarray(p.boxes), np.asarray(p.scores), np.asarray(p.labels), s["boxes"].numpy(),
             s["labels"].numpy(), s["areas"].numpy(), s["occlusion"].numpy())
        )  # fmt: skip
    rows = sweep(records, GRID)
    best = max(rows, key=lambda r: r["f1"])
    print(f"{'thr':>5} {'prec':>6} {'rec':>6} {'F1':>6} {'mAP50':>6} {'box/gt':>6} {'FP/fr':>6}")
    for r in rows:
        mark = "  <- best F1" if r is best else ""
        print(
            f"{r['threshold']:5.2f} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} "
            f"{r['map_50']:6.3f} {r['boxes_to_gt']:6.2f} {r['fp_per_frame']:6.2f}{mark}"
        )
    if args.out:
        args.out.write_text(json.dumps({"data": args.data, "chosen": best, "rows": rows}, indent=2))
    print(f"chosen detection.score_threshold = {best['threshold']:.2f} (best F1 on {args.data})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
