"""The probes behind edge v6.3's choice (issue #16): depth predicted as an image for the v6.2 network.

    python docs/edge_v6_3/probe_dic.py train --steps 2000 --out runs/dic/dc_a.pt
    python docs/edge_v6_3/probe_dic.py train --steps 1000 --init runs/dic/dc_a.pt --feat-weight 2 \\
        --lr 1e-3 --out runs/dic/dc_b.pt
    python docs/edge_v6_3/probe_dic.py eval --out runs/dic/dc_b.pt    # seed 1001: all / MCN / image

Same losses and data as ``damcseg-train-depth`` (which trained the shipped completer), with its own
sampler; ``eval`` hands the predicted image to the unchanged v6.2 model as if it were the sensor's.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from damcseg_core import MODALITIES
from damcseg_core.checkpoint import load_model
from damcseg_core.data.registry import build_dataset
from damcseg_core.eval.conditions import (
    bootstrap_counts,
    iou_from_confusion,
    miou_from_confusion,
    percentile_interval,
)
from damcseg_core.eval.segmentation_metrics import SegmentationIoU
from damcseg_core.losses.completion import depth_completion_loss
from damcseg_core.models.depth_completion import DepthImageCompleter
from damcseg_core.train.depth_completion import depth_feature_loss

BASE = "runs/edge_v6_2_shipped.pt"  # v6.2 as shipped (docs/edge_v6_3/train.sh writes it)
TRAIN = [
    "synthetic:frames=4000,size=256x512,seed=2,cache=runs/cache/synthetic_f4000_256x512_s2",
    "synthetic:frames=2000,size=256x512,seed=3,depth=mix,lidar_fraction=0.5,thermal=realistic,"
    "cache=runs/cache/real_f2000_s3",
]


def _features(model, rgb, thermal, keep_rgb, keep_th):
    n = model.normalizer
    image = torch.cat([n("rgb", rgb) * keep_rgb, n("thermal", thermal) * keep_th], 1)
    fr = model.encoders["rgb"](n("rgb", rgb)) * keep_rgb
    ft = model.encoders["thermal"](n("thermal", thermal)) * keep_th
    return fr, ft, image


def _completer(model, width):
    return DepthImageCompleter(model.config.encoder.widths[-1], model.config.normalization.max_depth, width)


def train(a) -> None:
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    model = load_model(BASE).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    dc = _completer(model, a.width)
    if a.init:
        dc.load_state_dict(torch.load(a.init))
    data = [build_dataset(s) for s in TRAIN]
    w = np.array([len(d) for d in data], float)
    w /= w.sum()
    opt = torch.optim.AdamW(dc.parameters(), lr=a.lr, weight_decay=1e-4)
    t0 = time.time()
    for step in range(a.steps):
        cosine = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / a.steps))
        for g in opt.param_groups:
            g["lr"] = a.lr * cosine * min(1, (step + 1) / 50)
        frames = []
        for _ in range(a.batch):
            d = data[rng.choice(len(data), p=w)]
            s = d[int(rng.integers(len(d)))]
            flip = rng.random() < 0.5
            frames.append({k: (s[k].flip(-1) if flip else s[k]).float() for k in MODALITIES})
        x = {k: torch.stack([f[k] for f in frames]) for k in MODALITIES}
        u = torch.rand(a.batch)
        keep_rgb = (u >= 0.1).float().view(-1, 1, 1, 1)
        keep_th = ((u < 0.1) | (torch.rand(a.batch) >= 0.2)).float().view(-1, 1, 1, 1)
        with torch.no_grad():
            fr, ft, image = _features(model, x["rgb"], x["thermal"], keep_rgb, keep_th)
        dc.train()
        log_depth, valid_logit = dc.forward_raw(fr, ft, image)
        l1, bce = depth_completion_loss(log_depth, valid_logit, x["depth"])
        loss = l1 + bce
        if a.feat_weight > 0:
            pred = torch.where(valid_logit > 0, log_depth.exp(), torch.zeros_like(log_depth))
            loss = loss + a.feat_weight * depth_feature_loss(model, pred, x["depth"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0:
            print(json.dumps({"step": step, "l1": l1.item(), "s": round(time.time() - t0, 1)}), flush=True)
    torch.save(dc.state_dict(), a.out)


def evaluate(a) -> None:
    model = load_model(BASE).eval()
    dc = _completer(model, a.width)
    dc.load_state_dict(torch.load(a.out))
    dc.eval()
    data, probe = build_dataset(a.data), SegmentationIoU()
    conf = {"all": [], "mcn": [], "image": []}
    one = torch.ones(1, 1, 1, 1)
    with torch.inference_mode():
        for i in range(len(data)):
            s = data[i]
            x = {k: s[k][None].float() for k in MODALITIES}
            depth = dc(*_features(model, x["rgb"], x["thermal"], one, one))
            outs = {
                "all": model(x),
                "mcn": model({k: v for k, v in x.items() if k != "depth"}),
                "image": model(dict(x, depth=depth)),
            }
            for k, o in outs.items():
                conf[k].append(probe.sample_stats(o.seg_logits.argmax(1)[0].numpy(), s["semantic"].numpy()))
    st = {k: np.stack(v).astype(np.float64) for k, v in conf.items()}
    counts = bootstrap_counts(len(data), 1000, np.random.default_rng(0))
    boot = {k: 100 * miou_from_confusion(np.einsum("rn,nij->rij", counts, v)) for k, v in st.items()}
    for k, v in st.items():
        lo, hi = percentile_interval(boot[k] - boot["mcn"])
        iou = np.round(100 * iou_from_confusion(v.sum(0)), 1).tolist()
        print(
            f"{k:6s} {100 * miou_from_confusion(v.sum(0)):5.1f} - mcn [{lo:+.1f}, {hi:+.1f}] per class {iou}"
        )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["train", "eval"])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--feat-weight", type=float, default=0.0)
    p.add_argument("--init", default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/dic/dc.pt")
    p.add_argument("--data", default="synthetic:frames=48,size=256x512,seed=1001")
    args = p.parse_args()
    torch.set_num_threads(2)
    train(args) if args.cmd == "train" else evaluate(args)
