#!/usr/bin/env python3
"""Where does a missing sensor's mIoU go? Splits the gap between all sensors and the sensor missing.

    python tools/completion_gap.py --data synthetic:frames=48,size=256x512,seed=1001 \\
        [--checkpoint damcseg_core/weights/damcseg_edge.pt] [--modality depth thermal] [--out gap.json]

For each modality ``m`` the same frames run through the model (eval mode, fp32) under five
settings; every setting is scored on the final mask and on the global path alone (its logits
up-sampled, before DSAF, the depth prior and the CRF):

* ``all``: every sensor, real features;
* ``real-feat, no-raw``: real encoder features of ``m``, but the refinement (scene complexity,
  depth prior, CRF guide) does not see ``m``'s image: the best a feature completion can do, since
  the MCN completes features, never the raw image;
* ``mcn``: ``m`` missing, the MCN's features (the completion-flag path the node takes);
* ``mcn, raw``: the MCN's features, the refinement sees ``m``'s real image: what the refinement's
  loss of the raw image costs on top of the completion;
* ``zero-fill``: ``m``'s image replaced by zeros and marked present (a black frame);
* ``mcn, real boxes``: the MCN's features, but the refinement gets the detections of the
  all-sensor run (the depth-prior path and scene complexity take the boxes): what the detector's
  loss under completion costs the mask.

The recovery ``(mcn - zero-fill) / (all - zero-fill)`` (the completion issue's measure) is then
split into what the features recover and what only the raw image could. Every difference to
``mcn`` is paired over frames with a 90 % bootstrap interval (``*`` = outside it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from damcseg_core import MODALITIES
from damcseg_core.checkpoint import load_model
from damcseg_core.data.registry import build_dataset
from damcseg_core.eval.conditions import bootstrap_counts, miou_from_confusion, percentile_interval
from damcseg_core.eval.segmentation_metrics import SegmentationIoU
from damcseg_core.inference import default_checkpoint

SETTINGS = ("all", "real-feat, no-raw", "mcn", "mcn, raw", "zero-fill", "mcn, real boxes")


class _Frame:
    """One frame's passes, each run once and shared by the settings (and modalities) that use it.

    The all-sensor run is the same for every modality; the MCN's features of ``m`` serve "mcn",
    "mcn, raw" and "mcn, real boxes"; the global path reads only the fused features, so it runs
    once per feature set.
    """

    def __init__(self, model, inputs: dict[str, torch.Tensor]) -> None:
        self.model, self.inputs = model, inputs
        self.size = inputs[next(iter(inputs))].shape[-2:]
        self._full = None
        self._mcn: dict[str, tuple] = {}

    def _global(self, feats, head_inputs) -> np.ndarray:
        logits = self.model.forward_dense(feats, head_inputs).global_logits
        logits = F.interpolate(logits, size=self.size, mode="bilinear", align_corners=False)
        return logits.argmax(1)[0].numpy()

    def full(self) -> tuple:
        """``(features, output, global mask)`` of the all-sensor run."""
        if self._full is None:
            feats = self.model.forward_features(self.inputs)
            out = self.model.forward_head(feats, self.inputs)
            self._full = (feats, out, self._global(feats, self.inputs))
        return self._full

    def mcn(self, m: str) -> tuple:
        """``(features, global mask)`` with ``m`` missing and completed by the MCN."""
        if m not in self._mcn:
            rest = {k: v for k, v in self.inputs.items() if k != m}
            feats = self.model.forward_features(rest)
            self._mcn[m] = (feats, self._global(feats, rest))
        return self._mcn[m]

    def masks(self, m: str, setting: str) -> tuple[np.ndarray, np.ndarray]:
        """(final, global-path) label maps ``[H, W]`` under ``setting`` for modality ``m``."""
        model, inputs = self.model, self.inputs
        rest = {k: v for k, v in inputs.items() if k != m}
        if setting == "all":
            _, out, glob = self.full()
        elif setting == "zero-fill":
            zeroed = dict(inputs, **{m: torch.zeros_like(inputs[m])})
            feats = model.forward_features(zeroed)
            out, glob = model.forward_head(feats, zeroed), self._global(feats, zeroed)
        elif setting == "real-feat, no-raw":
            feats, _, glob = self.full()
            normalized = {k: v for k, v in feats.normalized.items() if k != m}
            out = model.forward_head(dataclasses.replace(feats, normalized=normalized), rest)
        elif setting == "mcn":
            feats, glob = self.mcn(m)
            out = model.forward_head(feats, rest)
        elif setting == "mcn, raw":
            feats, glob = self.mcn(m)
            normalized = dict(feats.normalized, **{m: model.normalizer(m, inputs[m])})
            present = tuple(k for k in MODALITIES if k in inputs)
            # completed_mask marks m as completed, which makes the head zero m's image for the
            # refinement (a dropped sensor's image must not leak); here it is meant to see it.
            no_drop = torch.zeros_like(feats.completed_mask)
            feats = dataclasses.replace(feats, normalized=normalized, present=present, completed_mask=no_drop)
            out = model.forward_head(feats, inputs)
        elif setting == "mcn, real boxes":
            _, full, _ = self.full()
            feats, glob = self.mcn(m)
            detections = (full.boxes, full.scores, full.labels)
            model.det_head.postprocess = lambda *args, **kwargs: detections  # this call only
            try:
                out = model.forward_head(feats, rest)
            finally:
                del model.det_head.postprocess  # back to the class's method
        else:
            raise ValueError(setting)
        return out.seg_logits.argmax(1)[0].numpy(), glob


def _masks(model, inputs: dict[str, torch.Tensor], m: str, setting: str) -> tuple[np.ndarray, np.ndarray]:
    """One setting on a frame of its own (what the tests call; :func:`main` shares a ``_Frame``)."""
    return _Frame(model, inputs).masks(m, setting)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--data", required=True, help="dataset spec, e.g. synthetic:frames=48,size=256x512,seed=1001"
    )
    p.add_argument("--checkpoint", default=str(default_checkpoint()))
    p.add_argument("--modality", nargs="+", default=["depth", "thermal"], choices=["rgb", "depth", "thermal"])
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint)
    data = build_dataset(args.data)
    probe = SegmentationIoU()
    conf = {(m, s, k): [] for m in args.modality for s in SETTINGS for k in ("final", "global")}
    with torch.inference_mode():
        for i in range(len(data)):
            sample = data[i]
            inputs = {k: sample[k][None].float() for k in MODALITIES if k in sample}
            lacking = [m for m in args.modality if m not in inputs]
            if lacking or len(inputs) < 2:
                p.error(
                    f"frame {i} of --data has {sorted(inputs)}; the gap of a sensor needs that sensor and at "
                    f"least one other: drop {lacking or sorted(inputs)} from --modality or use data with them"
                )
            target = sample["semantic"].numpy()
            frame = _Frame(model, inputs)
            for m in args.modality:
                for s in SETTINGS:
                    final, glob = frame.masks(m, s)
                    conf[(m, s, "final")].append(probe.sample_stats(final, target))
                    conf[(m, s, "global")].append(probe.sample_stats(glob, target))
    n = len(data)
    counts = bootstrap_counts(n, args.bootstrap, np.random.default_rng(0))
    result: dict = {"checkpoint": args.checkpoint, "data": args.data, "frames": n, "modalities": {}}
    for m in args.modality:
        rows = {}
        for k in ("final", "global"):
            stacks = {s: np.stack(conf[(m, s, k)]).astype(np.float64) for s in SETTINGS}
            point = {s: 100 * float(miou_from_confusion(v.sum(0))) for s, v in stacks.items()}
            boot = {
                s: 100 * miou_from_confusion(np.einsum("rn,nij->rij", counts, v)) for s, v in stacks.items()
            }
            gap = point["all"] - point["zero-fill"]
            rows[k] = {
                s: {
                    "miou": float(point[s]),
                    "minus_mcn": float(point[s] - point["mcn"]),
                    "minus_mcn_interval": percentile_interval(boot[s] - boot["mcn"]).tolist(),
                }
                for s in SETTINGS
            }
            rows[k]["recovery_mcn"] = (point["mcn"] - point["zero-fill"]) / gap if gap else None
            rows[k]["recovery_real_feat_no_raw"] = (
                (point["real-feat, no-raw"] - point["zero-fill"]) / gap if gap else None
            )
        result["modalities"][m] = rows
    for m, rows in result["modalities"].items():
        for k, r in rows.items():
            print(f"{m} ({k}):")
            for s in SETTINGS:
                lo, hi = r[s]["minus_mcn_interval"]
                star = "*" if lo > 0 or hi < 0 else " "
                print(
                    f"  {s:<20} {r[s]['miou']:5.1f}   - mcn {r[s]['minus_mcn']:+5.1f} [{lo:+.1f}, {hi:+.1f}]{star}"
                )
            share = {key: "n/a (no gap)" if r[key] is None else f"{r[key]:.0%}"
                     for key in ("recovery_mcn", "recovery_real_feat_no_raw")}  # fmt: skip
            print(f"  recovery: mcn {share['recovery_mcn']}, real features without the raw image "
                  f"{share['recovery_real_feat_no_raw']}")  # fmt: skip
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
