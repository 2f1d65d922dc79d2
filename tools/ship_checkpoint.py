#!/usr/bin/env python3
"""Strip a training checkpoint to what inference needs and write it where the package looks.

    python tools/ship_checkpoint.py runs/edge_synthetic_fast/last.pt damcseg_core/weights/damcseg_edge.pt \
        [--set detection.score_threshold=0.35 ...]

Keeps the weights, the model config, the step, the best metric and the training config (so the
shipped file still says how it was made); drops the optimizer, schedule and RNG state, which only
resuming needs. ``--set section.key=value`` changes model-config values that do not change the
weights' shapes (post-processing settings chosen on a validation seed, e.g. the detection score
threshold from ``tools/choose_score_threshold.py``), or turns a module off
(``refinement.use_crf=false``: its weights are left out, and the tool says which). An override
that would need weights the checkpoint lacks, or of other shapes, is refused. The result loads
with ``damcseg_core.checkpoint.load_model``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from damcseg_core.checkpoint import load_checkpoint, load_model, save_checkpoint
from damcseg_core.config import deep_merge, from_dict, to_dict
from damcseg_core.models import build_model_from_config
from damcseg_core.models.config import ModelConfig


def _nested(key: str, value: str) -> dict:
    out: dict = yaml.safe_load(value)
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model-config override")
    args = ap.parse_args(argv)
    src, dst = args.src, args.dst
    ckpt = load_checkpoint(src)
    model = load_model(src)
    if args.set:
        cfg = to_dict(model.config)
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                ap.error(f"--set needs KEY=VALUE, got {item!r}")
            cfg = deep_merge(cfg, _nested(key, value))
        try:
            new = build_model_from_config(from_dict(ModelConfig, cfg))
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"--set {' '.join(args.set)}: not a valid model config: {exc}") from exc
        state = model.state_dict()
        target = new.state_dict()
        missing = sorted(set(target) - set(state))
        reshaped = sorted(k for k in target.keys() & state.keys() if target[k].shape != state[k].shape)
        if missing or reshaped:
            bad = (missing + reshaped)[:4]
            raise SystemExit(
                f"--set {' '.join(args.set)} changes the network ({len(missing)} tensors the checkpoint "
                f"lacks, {len(reshaped)} of another shape, e.g. {bad}); --set only changes settings "
                "that keep the weights or turns a module off: train a checkpoint with that config instead"
            )
        dropped = sorted(set(state) - set(target))
        new.load_state_dict({k: v for k, v in state.items() if k in target})
        if dropped:
            print(f"left out {len(dropped)} tensors of the modules the override turns off: {dropped[:6]}")
        model = new.eval()
    save_checkpoint(
        dst,
        model,
        step=ckpt.get("step", 0),
        best_metric=ckpt.get("best_metric"),
        train_config=ckpt.get("train_config"),
    )
    load_model(dst)  # proves the shipped file rebuilds the model on its own
    print(f"wrote {dst} ({dst.stat().st_size / 2**20:.1f} MiB, step {ckpt.get('step')})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
