"""``damcseg-train``: train a DAMCSeg model from a YAML config.

Example:
    damcseg-train --config config/train/edge_synthetic.yaml batch_size=2 out_dir=runs/try1
    torchrun --nproc_per_node 4 -m damcseg_core.cli.train --config config/train/paper.yaml

``key.sub=value`` overrides (values parsed as YAML) are applied on top of the file; unknown keys
fail with the valid ones listed. The run resumes automatically from ``out_dir/last.pt`` when it
exists (``--no-resume`` starts over; ``--resume PATH`` continues from a given checkpoint). Under
``torchrun`` the same command trains with DDP (see :mod:`damcseg_core.train.distributed`).
"""

from __future__ import annotations

import argparse
import json
import sys

from damcseg_core.checkpoint import CheckpointError
from damcseg_core.config import ConfigError, load_yaml

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="damcseg-train",
        description="Train DAMCSeg (DSJL, three-stage schedule) from a YAML config.",
    )
    p.add_argument("--config", required=True, help="training YAML, e.g. config/train/edge_synthetic.yaml")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--resume", metavar="PATH", help="continue from this checkpoint (default: out_dir/last.pt if present)"
    )
    group.add_argument(
        "--no-resume", action="store_true", help="start from scratch even if out_dir has last.pt"
    )
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. total_steps=100")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 ok, 2 bad config or checkpoint)."""
    args = build_parser().parse_args(argv)
    overrides = list(args.overrides)
    if args.resume:
        overrides.append(f"resume={args.resume}")
    elif args.no_resume:
        overrides.append("resume=never")
    try:
        from damcseg_core.train.config import TrainConfig
        from damcseg_core.train.trainer import Trainer

        cfg = load_yaml(TrainConfig, args.config, overrides)
        cfg.validate()
        summary = Trainer(cfg).fit()
    except (ConfigError, CheckpointError, FileNotFoundError) as exc:
        print(f"damcseg-train: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k != "rank_param_checksums"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
