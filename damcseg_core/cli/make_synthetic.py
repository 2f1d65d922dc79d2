"""``damcseg-make-synthetic``: write a synthetic multi-modal dataset to disk, plus a preview.

Example:
    damcseg-make-synthetic --out data/synth --frames 200 --size 256x512 --conditions day,night,fog
    damcseg-make-synthetic --out data/real --frames 200 --depth mix --lidar-fraction 0.5 --thermal realistic
    damcseg-make-synthetic --format packed --out runs/cache/s2 --frames 4000 --size 256x512 --seed 2

By default every frame is an independent scene (conditions and crowd densities drawn per
frame, as :class:`damcseg_core.data.synthetic.SyntheticDataset`). With ``--drive`` the frames
are one temporally coherent drive whose condition changes at even intervals through the listed
conditions. ``--depth`` (ideal, lidar, stereo, mix) and ``--thermal`` (ideal, realistic) pick the
sensor models of :mod:`damcseg_core.data.synthetic.sensors` (default ideal). The layout is documented in :mod:`damcseg_core.data.synthetic.folder`; read it back
with ``SyntheticFolderDataset(DIR)`` or the dataset spec ``synthetic-folder:DIR``.

``--format packed`` writes instead the memory-mapped training cache of
:mod:`damcseg_core.data.synthetic.packed` (independent scenes only, rendered by ``--workers``
processes): ``SyntheticPackedDataset(DIR)`` / ``synthetic-packed:DIR`` read back exactly the
samples of the spec ``synthetic:frames=N,size=HxW,seed=S,...`` with the same options, which a
training config may also name as ``synthetic:...,cache=DIR`` to reuse it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2

from damcseg_core.config import ConfigError
from damcseg_core.data.synthetic import (
    CONDITIONS,
    DEPTH_MODELS,
    THERMAL_MODELS,
    SyntheticDataset,
    SyntheticDrive,
    SyntheticFrame,
    SyntheticWorldConfig,
    preview_grid,
    write_synthetic_folder,
    write_synthetic_packed,
)

__all__ = ["build_parser", "main"]


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) >= 16 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HxW with both at least 16, e.g. 256x512; got {text!r}")
    return int(parts[0]), int(parts[1])


def _conditions(text: str) -> list[str]:
    items = [c.strip() for c in text.split(",") if c.strip()]
    bad = [c for c in items if c not in CONDITIONS]
    if not items or bad:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {','.join(CONDITIONS)} (e.g. day,night); got {text!r}"
        )
    return items


def _crowd(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected LO,HI densities in [0, 1], e.g. 0.2,0.9; got {text!r}"
        ) from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise argparse.ArgumentTypeError(f"expected 0 <= LO <= HI <= 1, e.g. 0.2,0.9; got {text!r}")
    return lo, hi


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    p = argparse.ArgumentParser(prog="damcseg-make-synthetic", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--frames", required=True, type=_positive, help="number of frames to write")
    p.add_argument("--size", type=_size, default=(256, 512), help="image size HxW (default 256x512)")
    p.add_argument(
        "--conditions", type=_conditions, default=list(CONDITIONS), help="comma list of day,dusk,night,fog"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical files")
    p.add_argument("--crowd", type=_crowd, default=(0.0, 1.0), help="density range LO,HI in [0, 1]")
    p.add_argument("--drive", action="store_true", help="one coherent drive instead of independent scenes")
    p.add_argument("--fps", type=float, default=10.0, help="frame rate of --drive (default 10)")
    p.add_argument(
        "--depth", choices=DEPTH_MODELS, default="ideal", help="depth sensor model (default ideal)"
    )
    p.add_argument(
        "--thermal", choices=THERMAL_MODELS, default="ideal", help="thermal camera model (default ideal)"
    )
    p.add_argument(
        "--lidar-fraction",
        type=float,
        default=0.5,
        help="--depth mix: share of lidar frames, 0..1 (default 0.5)",
    )
    p.add_argument(
        "--format",
        choices=("folder", "packed"),
        default="folder",
        help="folder: PNG + JSON per frame (default); packed: memory-mapped training cache",
    )
    p.add_argument(
        "--workers", type=int, default=0, help="--format packed: rendering processes (default: one per core)"
    )
    p.add_argument("--preview", type=Path, default=None, help="preview PNG (default OUT/preview.png)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def _frames(args: argparse.Namespace) -> Iterator[SyntheticFrame]:
    if args.drive:
        step = max(1, args.frames // len(args.conditions))
        schedule = [(k * step, c) for k, c in enumerate(args.conditions)]
        cfg = SyntheticWorldConfig(
            size=args.size, seed=args.seed, conditions=tuple(args.conditions[:1]), condition_schedule=schedule,
            crowd=args.crowd, fps=args.fps, depth_model=args.depth, thermal_model=args.thermal,
            lidar_fraction=args.lidar_fraction,
        )  # fmt: skip
        yield from SyntheticDrive(cfg).frames(args.frames)
    else:
        ds = SyntheticDataset(
            args.frames, args.seed, args.size, args.conditions, args.crowd,
            depth=args.depth, thermal=args.thermal, lidar_fraction=args.lidar_fraction,
        )  # fmt: skip
        for i in range(len(ds)):
            yield ds.frame(i)


def _write_packed(args: argparse.Namespace) -> list[SyntheticFrame]:
    if args.drive:
        raise ConfigError(
            "--format packed caches independent scenes (what synthetic:... specs train on); drop --drive, "
            "or write the drive with --format folder"
        )
    ds = SyntheticDataset(
        args.frames, args.seed, args.size, args.conditions, args.crowd,
        depth=args.depth, thermal=args.thermal, lidar_fraction=args.lidar_fraction,
    )  # fmt: skip
    if args.out.exists():
        raise ConfigError(f"--out {args.out} exists; remove it or pick another folder for the packed cache")
    write_synthetic_packed(args.out, ds.config, workers=args.workers, progress=not args.no_progress)
    return [ds.frame(i) for i in range(min(4, args.frames))]


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.format == "packed":
        try:
            examples = _write_packed(args)
        except ConfigError as exc:
            print(f"damcseg-make-synthetic: error: {exc}", file=sys.stderr)
            return 2
        preview = args.preview or args.out / "preview.png"
        preview.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(preview), preview_grid(examples)[:, :, ::-1])
        spec = (
            f"synthetic:frames={args.frames},size={args.size[0]}x{args.size[1]},seed={args.seed},"
            f"cache={args.out}"
        )
        print(
            f"wrote the packed cache of {args.frames} scenes to {args.out} (preview: {preview}); "
            f"train on it with {spec} (plus the same conditions/crowd/sensor options) or synthetic-packed:{args.out}"
        )
        return 0
    try:
        examples = write_synthetic_folder(
            args.out,
            _frames(args),
            meta={
                "seed": args.seed,
                "crowd": list(args.crowd),
                "drive": args.drive,
                "camera_height_m": 1.5,
                "hfov_deg": 90.0,
                "depth": args.depth,
                "thermal_model": args.thermal,
                "lidar_fraction": args.lidar_fraction,
            },
            progress=not args.no_progress,
            total=args.frames,
        )
    except ConfigError as exc:
        print(f"damcseg-make-synthetic: error: {exc}", file=sys.stderr)
        return 2
    preview = args.preview or args.out / "preview.png"
    preview.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(preview), preview_grid(examples[:4])[:, :, ::-1])
    print(f"wrote {args.frames} frames to {args.out} (preview: {preview})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
