#!/usr/bin/env python3
"""Is checkpoint B better than A? mIoU of each on the same frames, and B - A paired.

    python tools/compare_checkpoints.py --data synthetic:frames=48,size=256x512,seed=1001 \\
        damcseg_core/weights/damcseg_edge.pt runs/probe/no_crf.pt [more.pt ...] [--out cmp.json]

Every checkpoint runs through the :class:`~damcseg_core.inference.Predictor` (what the node runs)
on every frame of ``--data``, with all its sensors or under ``--protocol`` (``missing:depth``: the
same dropped camera for every checkpoint). Per checkpoint: mIoU (the definition of
:class:`~damcseg_core.eval.segmentation_metrics.SegmentationIoU`) with a 90% percentile bootstrap
interval over frames. Per checkpoint after the first: the difference to the first, on the *same*
resampled frames (so frames that are hard for both do not widen it), marked ``*`` when the
interval excludes 0, and the per-class IoU differences. The interval is test-set noise only, not
training-seed noise. Use a validation seed to choose and the held-out seeds to report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from damcseg_core.data.classes import CITYSCAPES_CLASSES
from damcseg_core.data.registry import build_dataset
from damcseg_core.eval.conditions import (
    bootstrap_counts,
    iou_from_confusion,
    miou_from_confusion,
    percentile_interval,
)
from damcseg_core.eval.evaluator import sample_to_inputs
from damcseg_core.eval.protocols import Protocol, build_protocol, sample_rng
from damcseg_core.eval.segmentation_metrics import SegmentationIoU
from damcseg_core.inference import load_predictor


def frame_confusions(checkpoint: str, data, protocol: Protocol | None = None) -> np.ndarray:
    """``[frames, C, C + 1]`` confusion matrices of ``checkpoint``'s masks on ``data``.

    ``protocol`` (e.g. ``missing:depth``) perturbs every frame first, seeded per frame exactly as
    ``damcseg-eval`` does (seed 0), so every checkpoint sees the same perturbed frames.
    """
    predictor = load_predictor("torch", checkpoint=checkpoint)
    probe = SegmentationIoU()
    out = []
    for i in range(len(data)):
        s = data[i] if protocol is None else protocol(data[i], sample_rng(0, i))
        out.append(probe.sample_stats(predictor.predict(sample_to_inputs(s)).mask, s["semantic"].numpy()))
    return np.stack(out).astype(np.float64)


def compare(confusions: dict[str, np.ndarray], boots: int, seed: int = 0) -> dict:
    """Point values, intervals and paired differences to the first entry of ``confusions``."""
    names = list(confusions)
    n = len(confusions[names[0]])
    counts = bootstrap_counts(n, boots, np.random.default_rng(seed))  # [boots, n], shared by all
    resampled = {k: miou_from_confusion(np.einsum("rn,nij->rij", counts, v)) for k, v in confusions.items()}
    totals = {k: v.sum(0) for k, v in confusions.items()}
    points = {k: float(miou_from_confusion(t)) for k, t in totals.items()}
    base = names[0]
    out: dict = {"frames": n, "boots": boots, "base": base, "checkpoints": {}}
    for k in names:
        row = {"miou": points[k], "interval_90": percentile_interval(resampled[k]).tolist()}
        if k != base:
            diff = resampled[k] - resampled[base]
            lo, hi = percentile_interval(diff).tolist()
            per_class = iou_from_confusion(totals[k]) - iou_from_confusion(totals[base])
            row["minus_base"] = {
                "point": points[k] - points[base],
                "interval_90": [lo, hi],
                "outside_noise": bool(lo > 0 or hi < 0),
                "iou_per_class": {c: None if np.isnan(v) else float(v) for c, v in zip(CITYSCAPES_CLASSES, per_class)},
            }  # fmt: skip
        out["checkpoints"][k] = row
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", help="two or more checkpoints; the first is the base")
    ap.add_argument(
        "--data", required=True, help="dataset spec, e.g. synthetic:frames=48,size=256x512,seed=1001"
    )
    ap.add_argument("--boots", type=int, default=500, help="bootstrap resamples over frames (default 500)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch's default)")
    ap.add_argument(
        "--protocol",
        default="full",
        help="sensor protocol applied to every frame first, as in damcseg-eval (default full; e.g. "
        "missing:depth compares the checkpoints' completion of a dropped depth camera)",
    )
    ap.add_argument("--out", type=Path, help="write the comparison (JSON) here")
    args = ap.parse_args(argv)
    try:
        protocol = build_protocol(args.protocol)
    except ValueError as e:
        ap.error(f"--protocol: {e}")
    if not protocol.use_completion:
        ap.error(
            f"--protocol {args.protocol}: the Predictor always runs the MCN; compare absent:<m> "
            "with damcseg-eval --protocol completion instead"
        )
    if len(args.checkpoints) < 2:
        ap.error("give at least two checkpoints (the first is the base the others are compared with)")
    if len(set(args.checkpoints)) != len(args.checkpoints):
        ap.error(f"a checkpoint is listed twice: {args.checkpoints}")
    missing = [c for c in args.checkpoints if not Path(c).is_file()]
    if missing:
        ap.error(f"no such checkpoint file: {', '.join(missing)}")
    if args.boots < 1 or args.threads < 0:
        ap.error(f"--boots must be >= 1 and --threads >= 0, got {args.boots} and {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = build_dataset(args.data)
    result = compare({c: frame_confusions(c, data, protocol) for c in args.checkpoints}, args.boots)
    result["data"] = args.data
    result["protocol"] = protocol.name
    for name, row in result["checkpoints"].items():
        lo, hi = row["interval_90"]
        line = f"{name}: mIoU {100 * row['miou']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
        if "minus_base" in row:
            d = row["minus_base"]
            star = " *" if d["outside_noise"] else ""
            line += f", minus base {100 * d['point']:+.1f} [{100 * d['interval_90'][0]:+.1f}, {100 * d['interval_90'][1]:+.1f}]{star}"
        print(line)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
