"""``damcseg-train-depth``: add a trained depth image completer to a checkpoint (issue #16).

Example:
    damcseg-train-depth --init damcseg_core/weights/damcseg_edge.pt --out runs/dic/edge.pt \\
        --data "synthetic:frames=4000,size=256x512,seed=2,cache=runs/cache/synthetic_f4000_256x512_s2"

See :mod:`damcseg_core.train.depth_completion` for what it trains and why on whole frames.
"""

from __future__ import annotations

import sys

from damcseg_core.train.depth_completion import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
