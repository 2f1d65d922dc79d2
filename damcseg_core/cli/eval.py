"""``damcseg-eval``: evaluate a model on a dataset under robustness protocols.

Example:
    damcseg-eval --checkpoint runs/a/best.pt --data cityscapes:/data/cityscapes,split=val \\
        --protocol full --protocol missing:depth --out eval/a
    damcseg-eval --model damcseg_tiny --data synthetic:frames=20 --protocol suite --out /tmp/e --limit 5
    damcseg-eval --checkpoint damcseg_core/weights/damcseg_edge.pt \\
        --data synthetic:frames=48,size=256x512,seed=2024 --protocol completion --bootstrap 500 \\
        --out runs/eval_conditions

Writes ``metrics.json``, a self-contained ``report.html`` and ``report.md`` into ``--out``.
``--protocol suite`` expands to the default sweep (full, each modality and pair missing, random
missing at 0.1 / 0.2 / 0.5); ``--protocol completion`` to all sensors plus, for thermal, depth
and rgb, the sensor missing and completed by the MCN, zero-filled, and absent with the MCN off.

Every run also builds the condition x protocol table (rows: the data's conditions and ``all``;
per cell mIoU, IoU of person / rider / car / bicycle, mean omega per modality, S and D), with a
percentile bootstrap over frames (``--bootstrap`` resamples, ``--confidence`` coverage) and paired
differences completed - zero-filled, all - zero-filled and completed - absent on the same
resampled frames; a ``*`` marks a difference whose interval excludes 0. It is printed, and lies
in ``metrics.json`` (``condition_table``) and both reports. Metric definitions:
``damcseg_core/eval/*.py`` module docstrings (the table: ``damcseg_core/eval/conditions.py``).
"""

from __future__ import annotations

import argparse
import sys

from damcseg_core.config import ConfigError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``damcseg-eval``."""
    from damcseg_core.eval.conditions import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES
    from damcseg_core.eval.protocols import PROTOCOL_FORMS

    parser = argparse.ArgumentParser(
        prog="damcseg-eval",
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),  # the examples and what is written
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="damcseg checkpoint (.pt) written by damcseg-train")
    source.add_argument("--model", help="registered variant with random weights (e.g. damcseg_tiny)")
    parser.add_argument(
        "--data", required=True, help="dataset spec, e.g. cityscapes:/data/cityscapes,split=val"
    )
    parser.add_argument(
        "--protocol",
        action="append",
        help=f"robustness protocol, repeatable (default: full; 'suite' = default sweep; 'completion' = "
        f"full + missing / zero-fill / absent per modality). Forms: {'; '.join(PROTOCOL_FORMS)}",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_RESAMPLES,
        help=f"bootstrap resamples over frames for the condition x protocol table (default "
        f"{DEFAULT_RESAMPLES}; 0 = point values only)",
    )
    parser.add_argument(
        "--confidence",
        type=float,
        default=DEFAULT_CONFIDENCE,
        help=f"coverage of the bootstrap percentile intervals (default {DEFAULT_CONFIDENCE})",
    )
    parser.add_argument(
        "--bootstrap-seed", type=int, default=0, help="seed of the bootstrap resampling (default 0)"
    )
    parser.add_argument("--out", required=True, help="output folder for metrics.json and report.html")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    parser.add_argument(
        "--threads", type=int, default=0,
        help="CPU threads for torch (0 = torch's default, one per core); e.g. 1 beside a training run",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the protocols' random choices")
    parser.add_argument(
        "--boundary-tolerance-px",
        type=float,
        default=None,
        help="Boundary F match distance in pixels (default: 0.75%% of the image diagonal)",
    )
    parser.add_argument("--examples", type=int, default=4, help="example overlays in the report")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation; returns the exit code (0 ok, 2 bad arguments or inputs)."""
    from damcseg_core.eval.evaluator import Evaluator
    from damcseg_core.eval.metrics import MetricConfig
    from damcseg_core.eval.protocols import COMPLETION_SUITE, ROBUSTNESS_SUITE
    from damcseg_core.eval.report import condition_tables, write_report

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    if args.bootstrap < 0:
        parser.error(f"--bootstrap must be >= 0 resamples (0 = no intervals), got {args.bootstrap}")
    if not 0.0 < args.confidence < 1.0:
        parser.error(f"--confidence must be in (0, 1), e.g. 0.9, got {args.confidence}")
    if args.threads < 0:
        parser.error(f"--threads must be >= 1, or 0 for torch's default, got {args.threads}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    shortcuts = {"suite": ROBUSTNESS_SUITE, "completion": COMPLETION_SUITE}
    protocols: list[str] = []
    for p in args.protocol or ["full"]:
        for name in shortcuts.get(p, [p]):
            if name not in protocols:
                protocols.append(name)
    try:
        from damcseg_core.data.registry import build_dataset
        from damcseg_core.inference import load_predictor

        predictor = load_predictor(checkpoint=args.checkpoint, model=args.model, device=args.device)
        dataset = build_dataset(args.data)
        evaluator = Evaluator(
            predictor,
            protocols,
            MetricConfig(boundary_tolerance_px=args.boundary_tolerance_px),
            seed=args.seed,
            num_examples=args.examples,
            progress=not args.no_progress,
            bootstrap=args.bootstrap,
            confidence=args.confidence,
            bootstrap_seed=args.bootstrap_seed,
        )
        result = evaluator.run(dataset, limit=args.limit)
    except (ConfigError, ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        print(f"damcseg-eval: error: {exc}", file=sys.stderr)
        return 2
    paths = write_report(result, args.out)
    for name, values in result.metrics["robustness"].items():
        miou = values["miou"]
        print(f"{name:28s} mIoU {'n/a' if miou is None else f'{100 * miou:.2f}'}")
    for title, note, header, rows in condition_tables(result.metrics["condition_table"])[:2]:
        print(f"\n{title} {note}")
        print("\n".join(" | ".join(cells) for cells in [header, *rows]))
    print(f"wrote {paths['metrics']}, {paths['html']} and {paths['markdown']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
