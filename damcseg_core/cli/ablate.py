"""``damcseg-ablate``: train and evaluate the paper's Table IV ablation rows under one budget.

Example:
    OMP_NUM_THREADS=1 damcseg-ablate --config config/ablation/table4_cpu.yaml --out runs/ablation/table4_cpu
    damcseg-ablate --config config/ablation/table4_cpu.yaml --out runs/ablation/table4_cpu --resume
    damcseg-ablate --config config/ablation/smoke.yaml --out /tmp/abl --rows baseline,complete

The experiment (config, training, evaluation, FPS, table) is
:func:`damcseg_core.train.ablation.run_ablation`; this module only parses the command line.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from damcseg_core.config import ConfigError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="damcseg-ablate",
        description="Train and evaluate the Table IV ablation rows under one budget; write table.md/json.",
    )
    p.add_argument("--config", required=True, help="ablation YAML, e.g. config/ablation/table4_cpu.yaml")
    p.add_argument(
        "--out", required=True, help="output folder (one sub-folder per row, table.md, table.json)"
    )
    p.add_argument("--rows", help="comma-separated subset of the config's rows (default: all)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip rows already finished with the same config; continue interrupted ones from last.pt",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 2 bad config, rows or checkpoint)."""
    from damcseg_core.checkpoint import CheckpointError

    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    command = "damcseg-ablate " + shlex.join(argv)
    try:
        from damcseg_core.train.ablation import run_ablation

        return run_ablation(args.config, args.out, args.rows, args.resume, command)
    except (ConfigError, CheckpointError, FileNotFoundError) as exc:
        print(f"damcseg-ablate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
