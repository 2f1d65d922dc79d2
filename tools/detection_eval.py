#!/usr/bin/env python3
"""Detection and scene-complexity numbers of one or more checkpoints, with bootstrap error bars.

    python tools/detection_eval.py --checkpoint runs/edge_v1_shipped.pt --checkpoint damcseg_core/weights/damcseg_edge.pt \\
        --data synthetic:frames=48,size=256x512,seed=2024 --data synthetic:frames=200,size=256x512,seed=2025 \\
        --out docs/detection_eval.json

For every (checkpoint, data set): mAP@0.5 and mAP@[.5:.95] over valid objects (the rule of
:mod:`damcseg_core.data.targets`; smaller / heavily occluded objects are ignore regions),
mAP@0.5 for 100-1024 px and >= 1024 px objects, recall@0.5, published boxes per frame against
valid objects per frame, false positives per frame, the Spearman correlation of the scene
term D with the number of valid objects, and the share of frames per scene category. Each
number comes with a 90% interval from ``--boots`` bootstrap resamples of the frames. Prints a
Markdown table (the README's) and writes every number to ``--out``.

Two passes per frame, as detection benchmarks separate them:

* **AP** (``map*`` keys, ``ap50_per_class``) integrates the precision-recall curve, so it is
  computed on every detection down to ``--ap-score-threshold`` (default 0.05, at most 100 per
  image: the COCO protocol; torchvision's FCOS peers keep 0.2 / 100).
* **The operating point** (recall, boxes/frame, FP/frame, the D correlation, categories, and
  ``map_50_operating`` for comparison with numbers reported before this split) uses the
  checkpoint's own ``detection.score_threshold``: what the node publishes on ``~/detections``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from damcseg_core.data.registry import build_dataset
from damcseg_core.eval.detection_metrics import DetectionMAP
from damcseg_core.eval.evaluator import sample_to_inputs
from damcseg_core.eval.metrics import spearman
from damcseg_core.inference import load_predictor

AP_KEYS = ("map_50", "map", "map_50_small", "map_50_large")
OPERATING_KEYS = ("recall_50", "boxes_per_frame", "valid_gt_per_frame", "fp_per_frame")
AP_MAX_DETECTIONS = 100


def _summary(
    ap_stats: list[dict], op_stats: list[dict], d_values: list[float], counts: list[int], idx: np.ndarray
) -> dict[str, float]:
    ap, op = DetectionMAP(), DetectionMAP()
    for i in idx:
        ap.accumulate(ap_stats[i])
        op.accumulate(op_stats[i])
    ra, ro = ap.compute(), op.compute()
    out = {k: ra[k] for k in AP_KEYS} | {k: ro[k] for k in OPERATING_KEYS}
    out["map_50_operating"] = ro["map_50"]
    out["D_objects_spearman"] = spearman([d_values[i] for i in idx], [counts[i] for i in idx])
    return out


def evaluate(checkpoint: str, spec: str, boots: int, seed: int = 0, ap_threshold: float = 0.05) -> dict:
    """All numbers of one checkpoint on one data set (point values and bootstrap intervals)."""
    predictor = load_predictor("torch", checkpoint=checkpoint)
    operating = predictor.model.config.detection.score_threshold
    if ap_threshold > operating:
        raise SystemExit(
            f"--ap-score-threshold {ap_threshold} is above {checkpoint}'s operating threshold {operating}; "
            "AP needs the low-score detections too: pass a lower value"
        )
    ap_predictor = load_predictor(
        "torch", checkpoint=checkpoint,
        detection={"score_threshold": ap_threshold, "max_detections": AP_MAX_DETECTIONS},
    )  # fmt: skip
    data = build_dataset(spec)
    probe = DetectionMAP()
    ap_stats, op_stats, d_values, counts, categories = [], [], [], [], []
    for i in range(len(data)):
        s = data[i]
        inputs = sample_to_inputs(s)
        gt = (s["boxes"], s["labels"], s["areas"], s["occlusion"])
        p = predictor.predict(inputs)
        op_stats.append(probe.sample_stats(p.boxes, p.scores, p.labels, *gt))
        a = ap_predictor.predict(inputs)
        ap_stats.append(probe.sample_stats(a.boxes, a.scores, a.labels, *gt))
        d_values.append(float(p.D))
        counts.append(int(op_stats[-1]["counts"][2]))
        categories.append(int(p.category))
    n = len(op_stats)
    point = _summary(ap_stats, op_stats, d_values, counts, np.arange(n))
    rng = np.random.default_rng(seed)
    samples = [_summary(ap_stats, op_stats, d_values, counts, rng.integers(0, n, n)) for _ in range(boots)]
    interval = {
        k: [
            float(np.nanpercentile([s[k] for s in samples], 5)),
            float(np.nanpercentile([s[k] for s in samples], 95)),
        ]
        for k in point
    }
    cats = np.bincount(np.asarray(categories), minlength=3) / n
    return {
        "checkpoint": checkpoint, "data": spec, "frames": n, "point": point, "interval_90": interval,
        "operating_score_threshold": operating, "ap_score_threshold": ap_threshold,
        "ap_max_detections": AP_MAX_DETECTIONS,
        "category_share": {"simple": float(cats[0]), "moderate": float(cats[1]), "complex": float(cats[2])},
        "ap50_per_class": {str(k): v for k, v in _per_class(ap_stats).items()},
    }  # fmt: skip


def _per_class(stats: list[dict]) -> dict[int, float]:
    m = DetectionMAP()
    for st in stats:
        m.accumulate(st)
    return m.compute()["ap50_per_class"]


def _cell(res: dict, key: str, pct: bool) -> str:
    v, (lo, hi) = res["point"][key], res["interval_90"][key]
    f = 100.0 if pct else 1.0
    return f"{f * v:.1f} [{f * lo:.1f}, {f * hi:.1f}]" if pct else f"{v:.2f} [{lo:.2f}, {hi:.2f}]"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", action="append", required=True)
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--boots", type=int, default=200)
    ap.add_argument("--out", type=Path)
    ap.add_argument(
        "--ap-score-threshold", type=float, default=0.05,
        help="score threshold of the AP pass (default 0.05; the operating point keeps the checkpoint's)",
    )  # fmt: skip
    args = ap.parse_args(argv)
    results = [
        evaluate(c, d, args.boots, ap_threshold=args.ap_score_threshold)
        for d in args.data
        for c in args.checkpoint
    ]
    print(f"AP columns: detections with score >= {args.ap_score_threshold}, <= {AP_MAX_DETECTIONS} per image; "
          "the rest at each checkpoint's operating threshold")  # fmt: skip
    print("| checkpoint | data | mAP@0.5 % | mAP@[.5:.95] % | mAP@0.5 100-1024 px % | mAP@0.5 >=1024 px % | "
          "mAP@0.5 at the operating threshold % | recall@0.5 % | boxes/frame | valid objects/frame | FP/frame | "
          "Spearman(D, objects) | simple/moderate/complex |")  # fmt: skip
    print("|" + "---|" * 13)
    for r in results:
        cs = r["category_share"]
        print(
            f"| {Path(r['checkpoint']).name} | {r['data']} | {_cell(r, 'map_50', True)} | {_cell(r, 'map', True)} | "
            f"{_cell(r, 'map_50_small', True)} | {_cell(r, 'map_50_large', True)} | "
            f"{_cell(r, 'map_50_operating', True)} | {_cell(r, 'recall_50', True)} | "
            f"{_cell(r, 'boxes_per_frame', False)} | {r['point']['valid_gt_per_frame']:.2f} | "
            f"{_cell(r, 'fp_per_frame', False)} | {_cell(r, 'D_objects_spearman', False)} | "
            f"{cs['simple']:.2f}/{cs['moderate']:.2f}/{cs['complex']:.2f} |"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
