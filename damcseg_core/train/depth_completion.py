"""Train the depth image completer of a trained model (``completion.depth_image``, issue #16).

    damcseg-train-depth --init damcseg_core/weights/damcseg_edge.pt --out runs/dic/edge.pt \\
        --data "synthetic:frames=4000,size=256x512,seed=2,cache=runs/cache/synthetic_f4000_256x512_s2"

The network the completer feeds stays exactly as it is (frozen, eval mode): the completer learns
to predict the depth image from the frozen RGB and thermal encoders' features and the images,
with the log-depth L1 + validity loss of
:func:`~damcseg_core.losses.completion.depth_completion_loss` against the sensor's depth image,
plus (``--feature-weight``) a feature-matching term: the frozen depth encoder's output on the
predicted image against its output on the real one (:func:`depth_feature_loss`). The pixel loss
alone gives images 7 % off in depth that recover nothing over the MCN on validation (seed 1001:
50.7 vs 51.0 mIoU with depth missing); with the feature term +2.9 [+1.1, +4.6] there, but only
+0.8 / +0.1 (inside the noise) on the held-out seeds 2024 / 2025 (``docs/edge_v6_3/README.md``):
depth edges, thin structures and the extent of large vehicles matter to the encoder far more
than the mean error says.

It trains on **whole frames at the model's input size** (random horizontal flips), not on the
zoomed crops of ``damcseg-train``: a camera's depth depends on where a pixel sits in the frame
(the road plane below the horizon), which a zoomed crop moves. Each sample drops rgb or thermal
with a small probability (never both), so the completer also serves the rgb-only and thermal-only
subsets.

The output is a full checkpoint: the init checkpoint's weights bit-identical, its config with
``completion.depth_image`` set, and the completer's weights; ``train_config`` records these
arguments, the steps/s and the machine. ``--out`` + ``.state`` holds the resume state (completer,
optimizer, step, sampler); a rerun of the same command continues from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from damcseg_core import MODALITIES
from damcseg_core.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from damcseg_core.losses.completion import depth_completion_loss
from damcseg_core.models.depth_completion import DENSE_FRACTION, depth_from_raw
from damcseg_core.train.hardware import machine_record

__all__ = [
    "DepthTrainArgs",
    "build_parser",
    "depth_feature_loss",
    "main",
    "train_depth_completer",
    "with_depth_completer",
]


@dataclasses.dataclass
class DepthTrainArgs:
    """What :func:`train_depth_completer` needs (the CLI's arguments)."""

    init: str
    data: list[str]
    out: str
    steps: int = 2000
    batch_size: int = 4
    lr: float = 2e-3
    width: int = 64
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    rgb_drop: float = 0.1
    thermal_drop: float = 0.2
    feature_weight: float = 0.0
    seed: int = 0
    threads: int = 2
    log_every: int = 50
    ckpt_every: int = 250

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be >= 1, got {self.steps} and {self.batch_size}")
        if not (
            0 <= self.rgb_drop < 1 and 0 <= self.thermal_drop < 1 and self.rgb_drop + self.thermal_drop < 1
        ):
            raise ValueError(
                f"rgb_drop and thermal_drop must be in [0, 1) with a sum below 1, got "
                f"{self.rgb_drop} and {self.thermal_drop}"
            )
        if self.feature_weight < 0:
            raise ValueError(f"feature_weight must be >= 0 (0 = pixel loss only), got {self.feature_weight}")
        if not self.data:
            raise ValueError("give at least one --data spec, e.g. synthetic:frames=4000,size=256x512,seed=2")


def with_depth_completer(path: str | Path, width: int) -> torch.nn.Module:
    """The model of checkpoint ``path`` rebuilt with a depth image completer of ``width``.

    Every weight of the checkpoint is loaded unchanged; the completer is newly initialised unless
    the checkpoint already has one of that width (then it is kept, to continue training it).
    """
    from damcseg_core.models import build_model_from_config

    base = load_model(path)
    cfg = base.config
    if cfg.completion.depth_image not in (0, width):
        raise CheckpointError(
            f"{path} already has a depth image completer of width {cfg.completion.depth_image}; "
            f"pass --width {cfg.completion.depth_image} or start from a checkpoint without one"
        )
    cfg = dataclasses.replace(cfg, completion=dataclasses.replace(cfg.completion, depth_image=width))
    model = build_model_from_config(cfg)
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    if unexpected or any(not k.startswith("depth_completer.") for k in missing):
        raise CheckpointError(
            f"{path}: weights do not fit (unexpected {unexpected[:3]}, missing {missing[:3]})"
        )
    return model.eval()


def depth_feature_loss(model: torch.nn.Module, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Normalised feature error of the model's depth encoder on a predicted vs the real depth image.

    ``||E(p) - E(t)||^2 / ||E(t)||^2`` over the samples whose target is dense (a lidar's rows give
    features of a sparse image, which a dense prediction should not imitate); 0 when none is.
    ``E`` is ``model.encoders["depth"]`` after ``model.normalizer``, run as it is (eval mode in
    :func:`train_depth_completer`); the target pass carries no gradient.
    """
    dense = (torch.isfinite(target) & (target > 0)).flatten(1).float().mean(1) > DENSE_FRACTION
    if not bool(dense.any()):
        return predicted.sum() * 0.0
    encoder = model.encoders["depth"]
    with torch.no_grad():
        real = encoder(model.normalizer("depth", target[dense]))
    got = encoder(model.normalizer("depth", predicted[dense]))
    return (got - real).pow(2).mean() / real.pow(2).mean().clamp_min(1e-6)


def _lr(args: DepthTrainArgs, step: int) -> float:
    cosine = 0.5 * (1 + math.cos(math.pi * step / args.steps))
    warm = min(1.0, (step + 1) / max(1, args.warmup_steps))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * cosine) * warm


def _inputs_of(model: torch.nn.Module, x: dict[str, torch.Tensor]):
    """``(encoded, normalized)`` rgb and thermal: the completer's inputs (frozen, no gradient)."""
    with torch.no_grad():
        normalized = {m: model.normalizer(m, x[m]) for m in ("rgb", "thermal")}
        encoded = {m: model.encoders[m](normalized[m]) for m in ("rgb", "thermal")}
    return encoded, normalized


def train_depth_completer(args: DepthTrainArgs) -> dict[str, Any]:
    """Train (or resume) and write ``args.out``; returns the summary that goes into ``train_config``."""
    from damcseg_core.data.registry import build_dataset

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = with_depth_completer(args.init, args.width)
    for p in model.parameters():
        p.requires_grad_(False)
    dc = model.depth_completer
    for p in dc.parameters():
        p.requires_grad_(True)
    datasets = [build_dataset(spec) for spec in args.data]
    weights = np.array([len(d) for d in datasets], dtype=np.float64)
    weights /= weights.sum()
    opt = torch.optim.AdamW(dc.parameters(), lr=args.lr, weight_decay=1e-4)
    rng = np.random.default_rng(args.seed)
    state_path = Path(str(args.out) + ".state")
    start, elapsed = 0, 0.0
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        if state["args"] != dataclasses.asdict(args):
            raise CheckpointError(
                f"{state_path} was written by a run with other arguments; delete it to start over"
            )
        dc.load_state_dict(state["completer"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["sampler"]
        start, elapsed = state["step"], state["elapsed_s"]
        print(f"damcseg-train-depth: resuming at step {start}", flush=True)
    d_idx, r_idx = MODALITIES.index("depth"), MODALITIES.index("rgb")
    t_idx = MODALITIES.index("thermal")
    t0 = time.perf_counter() - elapsed
    for step in range(start, args.steps):
        for g in opt.param_groups:
            g["lr"] = _lr(args, step)
        frames = []
        for _ in range(args.batch_size):
            d = datasets[rng.choice(len(datasets), p=weights)]
            sample = d[int(rng.integers(len(d)))]
            flip = bool(rng.random() < 0.5)
            frames.append({m: (sample[m].flip(-1) if flip else sample[m]).float() for m in MODALITIES})
        x = {m: torch.stack([f[m] for f in frames]) for m in MODALITIES}
        u = torch.from_numpy(rng.random(args.batch_size))
        keep = torch.ones(args.batch_size, len(MODALITIES), dtype=torch.bool)
        keep[:, r_idx] = u >= args.rgb_drop
        keep[:, t_idx] = (u < args.rgb_drop) | (u >= args.rgb_drop + args.thermal_drop)
        keep[:, d_idx] = False
        encoded, normalized = _inputs_of(model, x)
        dc.train()
        log_depth, valid_logit = model._depth_image(encoded, normalized, keep, raw=True)
        l1, bce = depth_completion_loss(log_depth, valid_logit, x["depth"])
        loss = l1 + bce
        feat = torch.zeros(())
        if args.feature_weight > 0:
            feat = depth_feature_loss(model, depth_from_raw(log_depth, valid_logit), x["depth"])
            loss = loss + args.feature_weight * feat
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        l1, bce, feat = l1.detach(), bce.detach(), feat.detach()
        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            rate = (done - start) / max(1e-9, time.perf_counter() - t0 - elapsed)
            rec = {"step": done, "depth_l1": round(l1.item(), 4), "validity_bce": round(bce.item(), 4),
                   "feature": round(feat.item(), 4),
                   "lr": _lr(args, step), "steps_per_s": round(rate, 3)}  # fmt: skip
            print(json.dumps(rec), flush=True)
        if done % args.ckpt_every == 0 and done < args.steps:
            state_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(
                {"args": dataclasses.asdict(args), "completer": dc.state_dict(), "optimizer": opt.state_dict(),
                 "sampler": rng.bit_generator.state, "step": done, "elapsed_s": time.perf_counter() - t0},
                state_path,
            )  # fmt: skip
    model.eval()
    wall = time.perf_counter() - t0
    summary = {
        "command": "damcseg-train-depth",
        "args": dataclasses.asdict(args),
        "wall_s": round(wall, 1),
        "steps_per_s": round(args.steps / wall, 3) if wall > 0 else None,
        "machine": machine_record(),
        "init_checkpoint_step": load_checkpoint(args.init).get("step"),
    }
    summary = json.loads(json.dumps(summary, default=str))  # plain data: checkpoints load weights_only
    save_checkpoint(args.out, model, step=args.steps, train_config=summary)
    state_path.unlink(missing_ok=True)
    return summary


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    defaults = {f.name: f.default for f in dataclasses.fields(DepthTrainArgs)}
    p = argparse.ArgumentParser(prog="damcseg-train-depth", description=__doc__.split("\n")[0])
    p.add_argument("--init", required=True, help="trained checkpoint to add the completer to")
    p.add_argument("--data", required=True, nargs="+", help="training dataset specs (frames with depth)")
    p.add_argument("--out", required=True, help="checkpoint to write (resume state next to it)")
    helps = {
        "steps": "optimizer steps",
        "batch_size": "whole frames per step",
        "width": "the completer's stride-8 width (model.completion.depth_image)",
        "warmup_steps": "linear learning-rate warm-up",
        "seed": "seeds the completer's init and the sampler",
        "threads": "torch CPU threads",
        "log_every": "print a JSON line every N steps",
        "ckpt_every": "write the resume state every N steps",
        "lr": "peak AdamW learning rate (cosine to lr x min_lr_ratio)",
        "min_lr_ratio": "final learning rate as a fraction of --lr",
        "rgb_drop": "probability a sample drops rgb (thermal alone in)",
        "thermal_drop": "probability a sample drops thermal (rgb alone in)",
        "feature_weight": "weight of the frozen depth encoder's feature error (0 = pixel loss only)",
    }
    for name, text in helps.items():
        default = defaults[name]
        kind = float if isinstance(default, float) else int
        p.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=default, help=f"{text} (default {default})"
        )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 ok, 2 bad arguments or checkpoint."""
    ns = build_parser().parse_args(argv)
    try:
        args = DepthTrainArgs(**vars(ns))
        summary = train_depth_completer(args)
    except (ValueError, FileNotFoundError) as exc:  # CheckpointError is a ValueError
        print(f"damcseg-train-depth: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("wall_s", "steps_per_s")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
