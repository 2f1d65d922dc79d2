"""``damcseg-export``: export a checkpoint to a folder of ONNX graphs for the onnxruntime backend.

Example:
    damcseg-export --checkpoint damcseg_core/weights/damcseg_edge.pt --out model_onnx
    damcseg-export --checkpoint best.pt --out model_onnx --size 256x512 --modalities rgb,depth \\
        --modalities rgb --check 4

``--out`` is a folder: one ``dense_<subset>.onnx`` per modality subset (every non-empty subset
unless ``--modalities`` is given, repeatable) plus ``local.onnx``; each file carries the model
config and variant in its metadata. ``--check N`` runs PyTorch and onnxruntime side by side on
N synthetic frames per exported subset and fails (exit 1) outside the parity tolerance
(docs/deployment.md).
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["build_parser", "main"]


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 256x512 (HxW), got {text!r}") from None
    if h < 32 or w < 32 or h % 32 or w % 32:
        raise argparse.ArgumentTypeError(f"size must be multiples of 32, got {h}x{w}; e.g. 256x512")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``damcseg-export``."""
    parser = argparse.ArgumentParser(
        prog="damcseg-export",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--checkpoint", required=True, help="damcseg checkpoint (.pt) to export")
    parser.add_argument("--out", required=True, help="output folder (dense_<subset>.onnx files + local.onnx)")
    parser.add_argument(
        "--size",
        type=_size,
        default=None,
        help="HxW the graphs are made for (default: the checkpoint's input_size)",
    )
    parser.add_argument(
        "--modalities",
        action="append",
        default=None,
        help="modality subset to export, e.g. rgb,depth (repeatable; default: all 7 non-empty subsets)",
    )
    parser.add_argument(
        "--expected-model", default=None, help="fail unless the checkpoint holds this variant"
    )
    parser.add_argument(
        "--check",
        type=int,
        default=0,
        metavar="N",
        help="parity check on N synthetic frames per subset (0: off)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic frames of --check")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Export (and optionally check); returns the exit code (0 ok, 1 parity failure, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.check < 0:
        parser.error(f"--check must be >= 0, got {args.check}")
    if args.out.endswith(".onnx"):
        parser.error(
            f"--out is a folder (one dense_<subset>.onnx per modality subset plus local.onnx), got "
            f"{args.out!r}; use e.g. --out {args.out[: -len('.onnx')] or 'model'}_onnx"
        )
    from damcseg_core.checkpoint import CheckpointError, load_model
    from damcseg_core.config import ConfigError
    from damcseg_core.export import OnnxExportError, OnnxRuntimeModel, export_onnx, parse_subset
    from damcseg_core.export.onnx_export import ALL_SUBSETS
    from damcseg_core.export.parity import run_parity

    try:
        subsets = ALL_SUBSETS if args.modalities is None else [parse_subset(s) for s in args.modalities]
        model = load_model(args.checkpoint, "cpu", expected_name=args.expected_model)
        name = model.config.name
        size = args.size or tuple(model.config.input_size)
        paths = export_onnx(model, args.out, size=size, modalities=subsets, model_name=name)
    except (CheckpointError, ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"damcseg-export: error: {exc}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"wrote {p}")
    print(f"{name} at {size[0]}x{size[1]}: {len(paths) - 1} modality subset(s) + local.onnx in {args.out}")
    if not args.check:
        return 0
    try:
        runtime = OnnxRuntimeModel(args.out)
    except (ImportError, OnnxExportError, FileNotFoundError) as exc:
        print(f"damcseg-export: error: {exc}", file=sys.stderr)
        return 2
    reports = run_parity(model, runtime, subsets, args.check, size, seed=args.seed)
    ok = True
    for subset, report in reports.items():
        ok &= report.ok
        print(f"parity {'+'.join(subset):20s} {report.summary()}")
    print("parity OK" if ok else "parity FAILED (tolerances: docs/deployment.md)")
    return 0 if ok else 1
