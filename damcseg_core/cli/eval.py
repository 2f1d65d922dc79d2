"""``damcseg-eval``: evaluate a model on a dataset under robustness protocols.

Example:
    damcseg-eval --checkpoint runs/a/best.pt --data cityscapes:/data/cityscapes,split=val \\
        --protocol full --protocol missing:depth --out eval/a
    damcseg-eval --model damcseg_tiny --data synthetic:frames=20 --protocol suite --out /tmp/e --limit 5

Writes ``metrics.json`` and a self-contained ``report.html`` into ``--out``. ``--protocol suite``
expands to the default sweep (full, each modality and pair missing, random missing at 0.1 / 0.2 /
0.5). Metric definitions: ``damcseg_core/eval/*.py`` module docstrings.
"""

from __future__ import annotations

import argparse
import sys

from damcseg_core.config import ConfigError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of ``damcseg-eval``."""
    from damcseg_core.eval.protocols import PROTOCOL_FORMS

    parser = argparse.ArgumentParser(
        prog="damcseg-eval",
        description=__doc__.split("\n\n")[0],
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
        help=f"robustness protocol, repeatable (default: full; 'suite' = default sweep). Forms: {'; '.join(PROTOCOL_FORMS)}",
    )
    parser.add_argument("--out", required=True, help="output folder for metrics.json and report.html")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
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
    from damcseg_core.eval.protocols import ROBUSTNESS_SUITE
    from damcseg_core.eval.report import write_report

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error(f"--limit must be >= 1, got {args.limit}")
    protocols: list[str] = []
    for p in args.protocol or ["full"]:
        for name in ROBUSTNESS_SUITE if p == "suite" else [p]:
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
        )
        result = evaluator.run(dataset, limit=args.limit)
    except (ConfigError, ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        print(f"damcseg-eval: error: {exc}", file=sys.stderr)
        return 2
    paths = write_report(result, args.out)
    for name, values in result.metrics["robustness"].items():
        miou = values["miou"]
        print(f"{name:28s} mIoU {'n/a' if miou is None else f'{100 * miou:.2f}'}")
    print(f"wrote {paths['metrics']} and {paths['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
