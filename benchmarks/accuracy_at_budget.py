#!/usr/bin/env python3
"""Accuracy at budget (#15, #17): a peer a CPU user would pick instead, trained on the same
synthetic data for the same compute as the shipped model, scored with our metrics.

    . tools/env.sh
    python benchmarks/accuracy_at_budget.py --peer fcos_rgb --budget-min 120 --out runs/peers/fcos_rgb
    python benchmarks/accuracy_at_budget.py --peer fcos_rgb --out runs/peers/fcos_rgb --eval-only \\
        --result benchmarks/results/accuracy_at_budget_fcos_rgb.json

Peers (torchvision, random init, nothing downloaded):

* ``fcos_rgb`` / ``fcos_stacked``: FCOS on a MobileNetV3-Large FPN (strides 8-64: the stride 8,
  16, 32 stages plus a max-pooled P6), BatchNorm trained (torchvision's default
  ``FrozenBatchNorm2d`` would freeze random statistics). Batch 4 of full 256x512 frames with a
  horizontal flip. Targets are the *valid* objects of :mod:`damcseg_core.data.targets` (the rule
  our detector trains and is scored with); FCOS has no ignore regions, so the rest are dropped.
* ``lraspp_rgb`` / ``lraspp_stacked``: LRASPP-MobileNetV3-Large, plain cross-entropy, batch 8 of
  random 128x256 crops with a horizontal flip.

``*_stacked`` is naive early fusion: depth and thermal as two extra input channels, normalised
by our own :class:`~damcseg_core.models.encoders.ModalityNormalizer` (depth ``clip(d, 0, 80) / 80``
standardised, invalid pixels 0; thermal standardised), the stem convolution widened to 5 channels.

**Budget.** The shipped ``damcseg_edge`` trained for 120 minutes of 2 cores (edge_v2 48 min +
edge_v3 72 min, data from the same packed caches). A peer gets the same *CPU time*: training
stops when the process's CPU time reaches ``budget_min x threads`` minutes. CPU time, not wall
time, so that another job on the machine does not shorten the peer's training (on a quiet
machine the two agree: the process keeps its ``--threads`` cores busy). Validation and
checkpointing are not counted. The learning rate follows a cosine over the budget fraction spent
(AdamW, linear warm-up), so a run that is interrupted resumes on the same schedule
(``last.pt`` every ``--ckpt-every-min`` minutes of CPU time).

**Selection and scoring.** The model is validated on the validation seed at 25/50/75/100% of the
budget; ``best.pt`` is the best validation point (mAP@0.5 or mIoU), as our ``best.pt`` is.
Held-out sets (seed 2024 48 frames, seed 2025 200 frames) are scored once, with the metric
classes our evaluation uses (:class:`~damcseg_core.eval.detection_metrics.DetectionMAP` with the
COCO protocol, every detection down to score 0.05 and at most 100 per image;
:class:`~damcseg_core.eval.segmentation_metrics.SegmentationIoU`), with a 90% bootstrap interval
over frames, for the whole set and per ``condition`` tag of the frames (day / dusk / night / fog;
#17 asks for a larger lead at night than overall), each with ``ours - peer`` on the same
resampled frames.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._common import cpu_model
from damcseg_core.data.classes import CITYSCAPES_CLASSES, IGNORE_INDEX, NUM_CLASSES
from damcseg_core.data.registry import build_dataset
from damcseg_core.data.targets import valid_objects
from damcseg_core.eval.conditions import percentile_interval, row_order, row_rng
from damcseg_core.eval.detection_metrics import DetectionMAP
from damcseg_core.eval.segmentation_metrics import SegmentationIoU
from damcseg_core.inference import default_checkpoint
from damcseg_core.models.config import NormalizationConfig
from damcseg_core.models.encoders import ModalityNormalizer
from damcseg_core.train.trainer import build_train_set

PEERS = ("fcos_rgb", "fcos_stacked", "lraspp_rgb", "lraspp_stacked")
TRAIN_SPEC = (
    "synthetic:frames=4000,size=256x512,seed=2,cache=runs/cache/synthetic_f4000_256x512_s2 ; "
    "synthetic:frames=2000,size=256x512,seed=3,depth=mix,lidar_fraction=0.5,thermal=realistic,"
    "cache=runs/cache/real_f2000_s3"
)  # the shipped model's training data (config/train/edge_v2.yaml, edge_v3.yaml)
VAL_SPEC = "synthetic:frames=48,size=256x512,seed=1001"
TEST_SPECS = ("synthetic:frames=48,size=256x512,seed=2024", "synthetic:frames=200,size=256x512,seed=2025")
AP_SCORE_THRESHOLD = 0.05
AP_MAX_DETECTIONS = 100
VAL_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
RECIPES = {  # batch, crop (None: full frame), learning rate, weight decay, warm-up steps
    "fcos": {"batch": 4, "crop": None, "lr": 1e-3, "weight_decay": 1e-4, "warmup": 200},
    "lraspp": {"batch": 8, "crop": (128, 256), "lr": 1e-3, "weight_decay": 1e-4, "warmup": 200},
}


def _family(peer: str) -> str:
    return peer.split("_")[0]


def _in_channels(peer: str) -> int:
    return 5 if peer.endswith("_stacked") else 3


def _widen_stem(features: torch.nn.Module, in_ch: int) -> None:
    """Give MobileNetV3's first convolution ``in_ch`` input channels (random init)."""
    stem = next(iter(features.children()))  # Conv2dNormActivation: conv, norm, activation
    old = stem[0]
    stem[0] = torch.nn.Conv2d(
        in_ch, old.out_channels, old.kernel_size, old.stride, old.padding, bias=old.bias is not None
    )


def build_peer(peer: str, size: tuple[int, int]) -> torch.nn.Module:
    """The peer model, random init; ``size`` (H, W) is the frame size FCOS keeps (no resize)."""
    if peer not in PEERS:
        raise SystemExit(f"unknown --peer {peer!r}; choose one of {', '.join(PEERS)}")
    in_ch = _in_channels(peer)
    if _family(peer) == "fcos":
        from torchvision.models.detection import FCOS
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.backbone_utils import mobilenet_backbone
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        backbone = mobilenet_backbone(
            backbone_name="mobilenet_v3_large", weights=None, fpn=True, norm_layer=torch.nn.BatchNorm2d,
            trainable_layers=6, returned_layers=[2, 3, 4], extra_blocks=LastLevelMaxPool(),
        )  # fmt: skip
        if in_ch != 3:
            _widen_stem(backbone.body, in_ch)
        anchors = AnchorGenerator(sizes=((8,), (16,), (32,), (64,)), aspect_ratios=((1.0,),) * 4)
        return FCOS(
            backbone, num_classes=NUM_CLASSES, min_size=min(size), max_size=max(size),
            image_mean=[0.0] * in_ch, image_std=[1.0] * in_ch, anchor_generator=anchors,
            score_thresh=AP_SCORE_THRESHOLD, detections_per_img=AP_MAX_DETECTIONS,
        )  # fmt: skip
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    model = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)
    if in_ch != 3:
        _widen_stem(model.backbone, in_ch)
    return model


class Inputs:
    """Canonical sample tensors -> the peer's input (our normaliser; 3 or 5 channels)."""

    def __init__(self, peer: str) -> None:
        self.stacked = _in_channels(peer) == 5
        self.norm = ModalityNormalizer(NormalizationConfig())

    def __call__(self, sample: dict[str, Any]) -> torch.Tensor:
        rgb = self.norm("rgb", sample["rgb"][None].float())[0]
        if not self.stacked:
            return rgb
        depth = self.norm("depth", sample["depth"][None].float())[0, :1]  # drop the validity channel
        thermal = self.norm("thermal", sample["thermal"][None].float())[0]
        return torch.cat([rgb, depth, thermal], dim=0)


def _det_target(sample: dict[str, Any], flip: bool, width: int) -> dict[str, torch.Tensor]:
    keep = valid_objects(sample["boxes"], sample["areas"], sample["occlusion"])  # torch in, torch out
    boxes = sample["boxes"][keep].float().clone()
    if flip and len(boxes):
        boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    return {"boxes": boxes.reshape(-1, 4), "labels": sample["labels"][keep].long()}


def train_step(
    peer: str, model: torch.nn.Module, data: Any, to_input: Inputs, rng: np.random.Generator
) -> torch.Tensor:
    """One training loss on a random batch (horizontal flip; LRASPP: random crops)."""
    recipe = RECIPES[_family(peer)]
    idx = rng.integers(0, len(data), recipe["batch"])
    flips = rng.random(recipe["batch"]) < 0.5
    samples = [data[int(i)] for i in idx]
    if _family(peer) == "fcos":
        images, targets = [], []
        for s, f in zip(samples, flips):
            x = to_input(s)
            images.append(x.flip(-1) if f else x)
            targets.append(_det_target(s, bool(f), x.shape[-1]))
        losses = model(images, targets)
        return losses["classification"] + losses["bbox_regression"] + losses["bbox_ctrness"]
    xs, ys = [], []
    for s, f in zip(samples, flips):
        x, y = to_input(s), s["semantic"].long()
        h, w = y.shape
        ch, cw = min(recipe["crop"][0], h), min(recipe["crop"][1], w)
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        x, y = x[:, top : top + ch, left : left + cw], y[top : top + ch, left : left + cw]
        xs.append(x.flip(-1) if f else x)
        ys.append(y.flip(-1) if f else y)
    logits = model(torch.stack(xs))["out"]
    return F.cross_entropy(logits, torch.stack(ys), ignore_index=IGNORE_INDEX)


@torch.inference_mode()
def frame_stats(
    peer: str, model: torch.nn.Module, data: Any, to_input: Inputs, tags: list[str] | None = None
) -> list[Any]:
    """Per-frame metric statistics (bootstrappable) of ``model`` on ``data``; with ``tags``, each
    frame's ``condition`` tag (``unknown`` without one) is appended to it on the way."""
    model.eval()
    out: list[Any] = []
    if _family(peer) == "fcos":
        probe = DetectionMAP(max_detections=AP_MAX_DETECTIONS)
        for i in range(len(data)):
            s = data[i]
            if tags is not None:
                tags.append(str(s.get("condition", "unknown")))
            det = model([to_input(s)])[0]
            out.append(
                probe.sample_stats(
                    det["boxes"],
                    det["scores"],
                    det["labels"],
                    s["boxes"],
                    s["labels"],
                    s["areas"],
                    s["occlusion"],
                )
            )
    else:
        probe = SegmentationIoU()
        for i in range(len(data)):
            s = data[i]
            if tags is not None:
                tags.append(str(s.get("condition", "unknown")))
            pred = model(to_input(s)[None])["out"].argmax(1)[0]
            out.append(probe.sample_stats(pred.numpy(), s["semantic"].numpy()))
    model.train()
    return out


def summarise(peer: str, stats: list[Any], idx: np.ndarray) -> dict[str, Any]:
    """The metrics over the frames ``idx`` (fractions in [0, 1])."""
    if _family(peer) == "fcos":
        m = DetectionMAP(max_detections=AP_MAX_DETECTIONS)
        for i in idx:
            m.accumulate(stats[i])
        r = m.compute()
        keys = ("map_50", "map", "map_50_small", "map_50_large", "recall_50")
        return {k: r[k] for k in keys} | {"ap50_per_class": r["ap50_per_class"]}
    m = SegmentationIoU()
    for i in idx:
        m.accumulate(stats[i])
    r = m.compute()
    return {"miou": r["miou"], "iou_per_class": r["iou_per_class"]}


def headline(peer: str) -> str:
    return "map_50" if _family(peer) == "fcos" else "miou"


def ours_stats(peer: str, checkpoint: str | Path, data: Any) -> list[Any]:
    """Per-frame statistics of our checkpoint (all sensors) on ``data``, for the peer's metric.

    Detection AP uses every detection down to :data:`AP_SCORE_THRESHOLD` (at most
    :data:`AP_MAX_DETECTIONS`), as ``tools/detection_eval.py`` and the peer do.
    """
    from damcseg_core.eval.evaluator import sample_to_inputs
    from damcseg_core.inference import load_predictor

    det = _family(peer) == "fcos"
    override = {"score_threshold": AP_SCORE_THRESHOLD, "max_detections": AP_MAX_DETECTIONS} if det else None
    predictor = load_predictor("torch", checkpoint=checkpoint, detection=override)
    probe: Any = DetectionMAP(max_detections=AP_MAX_DETECTIONS) if det else SegmentationIoU()
    out: list[Any] = []
    for i in range(len(data)):
        s = data[i]
        p = predictor.predict(sample_to_inputs(s))
        if det:
            gt = (s["boxes"], s["labels"], s["areas"], s["occlusion"])
            out.append(probe.sample_stats(p.boxes, p.scores, p.labels, *gt))
        else:
            out.append(probe.sample_stats(p.mask, s["semantic"].numpy()))
    return out


def score(
    peer: str, model: torch.nn.Module, spec: str, to_input: Inputs, boots: int,
    ours: str | Path | None = None, seed: int = 0,
) -> dict:  # fmt: skip
    """Point values and 90% bootstrap intervals over frames of ``model`` on ``spec``; with
    ``ours`` (a checkpoint) the same for it and for ``ours - peer`` on the same resampled frames."""
    data = build_dataset(spec)
    tags: list[str] = []
    runs = {"peer": frame_stats(peer, model, data, to_input, tags)}
    if ours is not None:
        runs["ours"] = ours_stats(peer, ours, data)
    n = len(data)
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, n, n) for _ in range(boots)]
    key = headline(peer)
    res: dict[str, Any] = {"data": spec, "frames": n}
    for name, stats in runs.items():
        point = summarise(peer, stats, np.arange(n))
        resampled = [summarise(peer, stats, idx) for idx in draws]
        scalar = [k for k, v in point.items() if not isinstance(v, (list, dict))]
        interval = {k: _interval([r[k] for r in resampled]) for k in scalar}
        res[name] = {"point": point, "interval_90": interval, "resampled": [r[key] for r in resampled]}
    if ours is not None:
        diff = np.asarray(res["ours"]["resampled"]) - np.asarray(res["peer"]["resampled"])
        res["ours_minus_peer"] = {
            "point": res["ours"]["point"][key] - res["peer"]["point"][key],
            "interval_90": _interval(diff),
        }
    for name in runs:
        del res[name]["resampled"]
    res["by_condition"] = by_condition(peer, runs, tags, boots, seed)
    return res


def by_condition(
    peer: str, runs: dict[str, list[Any]], tags: list[str], boots: int, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """The headline metric per ``condition`` tag (day / dusk / night / fog): point value and 90%
    bootstrap interval over the tag's frames for each run, and ``ours - peer`` on the same
    resampled frames. A tag's draws are seeded by ``(seed, tag)``, so they do not depend on the
    other tags; a tag with a single frame gets point values only (one frame has no spread)."""
    key = headline(peer)
    out: dict[str, dict[str, Any]] = {}
    for tag in row_order(tags)[:-1]:  # the condition rows of the evaluation's table, without "all"
        idx = np.flatnonzero(np.asarray(tags) == tag)
        rng = row_rng(seed, tag)
        draws = [idx[rng.integers(0, len(idx), len(idx))] for _ in range(boots if len(idx) > 1 else 0)]
        row: dict[str, Any] = {"frames": len(idx)}
        resampled = {}
        for name, stats in runs.items():
            point = summarise(peer, stats, idx)
            resampled[name] = np.asarray([summarise(peer, stats, d)[key] for d in draws])
            row[name] = {"point": point, "interval_90": _interval(resampled[name]) if draws else None}
        if "ours" in runs:
            row["ours_minus_peer"] = {
                "point": row["ours"]["point"][key] - row["peer"]["point"][key],
                "interval_90": _interval(resampled["ours"] - resampled["peer"]) if draws else None,
            }
        out[tag] = row
    return out


def _interval(values: Any) -> list[float]:
    """The 90% percentile interval (:func:`~damcseg_core.eval.conditions.percentile_interval`)."""
    return [float(v) for v in percentile_interval(np.asarray(values), 0.9)]


def _lr(step: int, spent: float, recipe: dict[str, Any]) -> float:
    warm = min(1.0, (step + 1) / recipe["warmup"])
    return recipe["lr"] * warm * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(spent, 1.0))))


def _save(path: Path, **state: Any) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(args: argparse.Namespace) -> None:
    """Train (or resume) ``args.peer`` until its CPU-time budget is spent."""
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    data = build_train_set(args.train)
    size = tuple(data[0]["rgb"].shape[-2:])
    model = build_peer(args.peer, size)
    to_input = Inputs(args.peer)
    recipe = RECIPES[_family(args.peer)]
    opt = torch.optim.AdamW(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    rng = np.random.default_rng(args.seed)
    budget_s = args.budget_min * 60.0 * args.threads
    step, used, wall, history, best = 0, 0.0, 0.0, [], -1.0
    last = out / "last.pt"
    if last.is_file():
        st = torch.load(last, map_location="cpu", weights_only=False)
        if st["peer"] != args.peer or st["budget_s"] != budget_s:
            raise SystemExit(
                f"{last} is a {st['peer']} run with a {st['budget_s'] / 60 / args.threads:.1f}-min budget; "
                f"use another --out for {args.peer} at {args.budget_min} min, or delete it to start over"
            )
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        rng.bit_generator.state = st["rng"]
        torch.set_rng_state(st["torch_rng"])
        step, used, wall, history, best = st["step"], st["cpu_s"], st["wall_s"], st["history"], st["best"]
        print(f"resumed {args.peer} at step {step}, {used / budget_s:.1%} of the budget", flush=True)
    val = build_dataset(args.val)
    model.train()
    next_val = [f for f in VAL_FRACTIONS if f * budget_s > used + 1e-6]
    next_ckpt = used + args.ckpt_every_min * 60.0 * args.threads
    running: list[float] = []
    while used < budget_s:
        c0, w0 = time.process_time(), time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = _lr(step, used / budget_s, recipe)
        loss = train_step(args.peer, model, data, to_input, rng)
        if not torch.isfinite(loss):
            raise SystemExit(f"non-finite loss at step {step}; last.pt holds the state before it")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        step += 1
        used += time.process_time() - c0
        wall += time.perf_counter() - w0
        running.append(loss.item())
        if step % args.log_every == 0:
            print(
                f"step {step} loss {np.mean(running):.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"budget {used / budget_s:.1%} {step / max(wall, 1e-9):.2f} steps/s",
                flush=True,
            )
            running = []
        crossed = [f for f in next_val if used >= f * budget_s - 1e-6]
        if crossed:  # one validation even when a step crosses several points (tiny budgets)
            next_val = [f for f in next_val if f not in crossed]
            frac = max(crossed)
            metric = summarise(args.peer, frame_stats(args.peer, model, val, to_input), np.arange(len(val)))
            value = float(metric[headline(args.peer)])
            history.append({"fraction": frac, "step": step, "cpu_s": used, "wall_s": wall, "val": value})
            print(f"val {headline(args.peer)} {value:.4f} at step {step} ({frac:.0%})", flush=True)
            if value > best:
                best = value
                _save(out / "best.pt", model=model.state_dict(), step=step, val=value)
        if used >= next_ckpt or used >= budget_s:
            next_ckpt = used + args.ckpt_every_min * 60.0 * args.threads
            _save(
                last, model=model.state_dict(), opt=opt.state_dict(), rng=rng.bit_generator.state,
                torch_rng=torch.get_rng_state(), step=step, cpu_s=used, wall_s=wall, history=history,
                best=best, peer=args.peer, budget_s=budget_s,
            )  # fmt: skip
    print(f"done: {step} steps, {used / 60:.1f} CPU-min, {wall / 60:.1f} wall-min", flush=True)


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Score ``best.pt`` on the held-out sets; the run's record."""
    last = torch.load(args.out / "last.pt", map_location="cpu", weights_only=False)
    best = torch.load(args.out / "best.pt", map_location="cpu", weights_only=False)
    size = tuple(build_dataset(args.val)[0]["rgb"].shape[-2:])
    model = build_peer(args.peer, size)
    model.load_state_dict(best["model"])
    to_input = Inputs(args.peer)
    ours = None if args.ours == "none" else (args.ours or default_checkpoint())
    results = [score(args.peer, model, spec, to_input, args.boots, ours) for spec in args.test]
    return {
        "peer": args.peer, "recipe": RECIPES[_family(args.peer)], "budget_min": args.budget_min,
        "threads": args.threads, "ours": None if ours is None else str(ours), "steps": last["step"], "cpu_min": last["cpu_s"] / 60.0,
        "wall_min": last["wall_s"] / 60.0, "steps_per_s": last["step"] / max(last["wall_s"], 1e-9),
        "best_step": best["step"], "val_history": last["history"], "train": args.train, "val": args.val,
        "machine": {"cpu": cpu_model(), "python": platform.python_version(), "torch": torch.__version__},
        "classes": list(CITYSCAPES_CLASSES), "results": results,
        "command": " ".join(["python", "benchmarks/accuracy_at_budget.py", *args.argv]),
    }  # fmt: skip


def _pct(v: float, interval: list[float]) -> str:
    return f"{100 * v:.1f} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", required=True, choices=PEERS)
    ap.add_argument(
        "--budget-min", type=float, default=120.0, help="minutes of --threads cores (default 120)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="run folder (last.pt, best.pt)")
    ap.add_argument("--train", default=TRAIN_SPEC)
    ap.add_argument("--val", default=VAL_SPEC)
    ap.add_argument(
        "--test", action="append", help=f"held-out spec (repeatable; default {' and '.join(TEST_SPECS)})"
    )
    ap.add_argument("--boots", type=int, default=200)
    ap.add_argument(
        "--ours", help="our checkpoint scored on the same frames (default: the shipped one; 'none': skip)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--ckpt-every-min", type=float, default=5.0)
    ap.add_argument("--eval-only", action="store_true", help="score an existing run's best.pt")
    ap.add_argument("--result", type=Path, help="write the run's record (JSON) here")
    args = ap.parse_args(argv)
    args.argv = list(argv)
    args.test = args.test or list(TEST_SPECS)
    if args.budget_min <= 0:
        ap.error(f"--budget-min must be > 0, got {args.budget_min}")
    torch.set_num_threads(args.threads)
    if not args.eval_only:
        train(args)
    elif not (args.out / "best.pt").is_file():
        raise SystemExit(f"--eval-only: no {args.out / 'best.pt'}; train first (drop --eval-only)")
    record = evaluate(args)
    k = headline(args.peer)
    for r in record["results"]:
        line = f"{r['data']}: {k} {args.peer} {_pct(r['peer']['point'][k], r['peer']['interval_90'][k])}"
        if "ours" in r:
            line += f", ours {_pct(r['ours']['point'][k], r['ours']['interval_90'][k])}"
            line += (
                f", ours - peer {_pct(r['ours_minus_peer']['point'], r['ours_minus_peer']['interval_90'])}"
            )
        print(line)
        for tag, row in r["by_condition"].items():
            if "ours" in row and row["ours_minus_peer"]["interval_90"] is not None:
                print(
                    f"  {tag} ({row['frames']} frames): {args.peer} "
                    f"{_pct(row['peer']['point'][k], row['peer']['interval_90'])}, ours "
                    f"{_pct(row['ours']['point'][k], row['ours']['interval_90'])}, ours - peer "
                    f"{_pct(row['ours_minus_peer']['point'], row['ours_minus_peer']['interval_90'])}"
                )
    if args.result:
        args.result.parent.mkdir(parents=True, exist_ok=True)
        args.result.write_text(json.dumps(record, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
