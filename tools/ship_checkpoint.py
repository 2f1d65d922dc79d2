#!/usr/bin/env python3
"""Strip a training checkpoint to what inference needs and write it where the package looks.

    python tools/ship_checkpoint.py runs/edge_synthetic_fast/last.pt damcseg_core/weights/damcseg_edge.pt

Keeps the weights, the model config, the step, the best metric and the training config (so the
shipped file still says how it was made); drops the optimizer, schedule and RNG state, which only
resuming needs. The result loads with ``damcseg_core.checkpoint.load_model``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from damcseg_core.checkpoint import load_checkpoint, load_model, save_checkpoint


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst = Path(argv[0]), Path(argv[1])
    ckpt = load_checkpoint(src)
    model = load_model(src)
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
