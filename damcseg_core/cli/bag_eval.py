"""``damcseg-bag-eval``: run the model over a rosbag2 with ground truth, without DDS, and report.

The fast path for large evaluation sets: frames are read straight from the bag (sqlite3 or mcap)
with ``rosbags``, grouped by header stamp, fed to the :class:`Predictor`, and scored against the
bag's ground-truth topics; the HTML report is the same as the live demo's.

Examples::

    damcseg-bag-eval runs/demo/input_bag --out runs/bag_eval
    damcseg-bag-eval my_drive/ --checkpoint runs/edge/best.pt --rgb /cam/front/image_raw \\
        --depth /cam/front/depth --thermal /flir/image_raw --semantic /labels/semantic
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from damcseg_core.data.rosbag_io import DEFAULT_TOPICS

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="damcseg-bag-eval", description=__doc__.splitlines()[0])
    parser.add_argument("bag", type=Path, help="rosbag2 directory with sensor and ground-truth topics")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="checkpoint (default: the shipped damcseg_edge.pt)")
    source.add_argument("--model", help="registered variant with random weights (tests only)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("runs/bag_eval"), help="report folder")
    for field in dataclasses.fields(DEFAULT_TOPICS):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            default=field.default,
            help=f"topic (default {field.default})",
        )
    args = parser.parse_args(argv)

    if not args.bag.exists():
        parser.error(f"bag not found: {args.bag}")
    from damcseg_core.eval.drive_report import evaluate_bag_offline
    from damcseg_core.inference import load_predictor

    topics = type(DEFAULT_TOPICS)(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(DEFAULT_TOPICS)}
    )
    try:
        predictor = load_predictor(checkpoint=args.checkpoint, model=args.model, device=args.device)
        summary = evaluate_bag_offline(args.bag, predictor, args.out, predictor.label, topics)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        print(f"damcseg-bag-eval: error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {args.out / 'report.html'}")
    for line in summary:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
