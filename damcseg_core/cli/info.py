"""``damcseg-info``: parameters per module, GFLOPs and (optionally) CPU latency of a variant.

Example:
    damcseg-info --model damcseg_edge --size 256x512 --rois 10 --latency-runs 10 --threads 2

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (one multiply-add = 2
FLOPs; convolutions and matrix products only, element-wise ops are not counted) for one eval
forward of a batch of 1 with the chosen modalities. A randomly initialised model detects
nothing at the paper's 0.3 threshold, so ``--rois`` synthetic boxes are given as ROIs to
count the local and post-processing paths at that many targets.

``--latency-runs N`` times N eval forwards (after 3 warm-up runs) under ``torch.inference_mode``
with ``--threads`` intra-op threads and prints the median and the minimum in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from damcseg_core import MODALITIES

__all__ = ["count_flops", "count_parameters", "main", "measure_latency", "parse_size", "synthetic_inputs"]


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``HxW`` (e.g. ``256x512``); both must be positive multiples of 32."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 256x512, got '{text}'") from None
    if h <= 0 or w <= 0 or h % 32 or w % 32:
        raise argparse.ArgumentTypeError(
            f"size {h}x{w}: height and width must be positive multiples of 32 "
            f"(e.g. {max(32, -(-h // 32) * 32)}x{max(32, -(-w // 32) * 32)})"
        )
    return h, w


def count_parameters(model: torch.nn.Module, depth: int = 1) -> dict[str, int]:
    """Parameters per sub-module name down to ``depth`` levels (``'total'`` included)."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        key = ".".join(name.split(".")[:depth])
        counts[key] = counts.get(key, 0) + p.numel()
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def synthetic_rois(n: int, height: int, width: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``n`` boxes on a grid covering the image (batch of one), labelled as cars."""
    if n == 0:
        return [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.int64)]
    cols = max(1, round((n * width / height) ** 0.5))
    rows = -(-n // cols)
    bh, bw = height / rows, width / cols
    boxes = [[c * bw, r * bh, (c + 1) * bw, (r + 1) * bh] for r in range(rows) for c in range(cols)][:n]
    return [torch.tensor(boxes)], [torch.full((n,), 13, dtype=torch.int64)]


def synthetic_inputs(
    size: tuple[int, int], modalities: tuple[str, ...] = MODALITIES
) -> dict[str, torch.Tensor]:
    """A reproducible random batch of one frame in canonical units."""
    h, w = size
    gen = torch.Generator().manual_seed(0)
    inputs = {
        "rgb": torch.rand(1, 3, h, w, generator=gen),
        "depth": torch.rand(1, 1, h, w, generator=gen) * 40.0,
        "thermal": torch.rand(1, 1, h, w, generator=gen),
    }
    return {m: inputs[m] for m in modalities}


def measure_latency(
    model: torch.nn.Module,
    size: tuple[int, int],
    modalities: tuple[str, ...] = MODALITIES,
    rois: int = 10,
    runs: int = 10,
    threads: int = 2,
) -> list[float]:
    """Wall times (ms) of ``runs`` eval forwards with ``threads`` intra-op threads.

    The previous thread count is restored afterwards.
    """
    inputs = synthetic_inputs(size, modalities)
    boxes, labels = synthetic_rois(rois, *size)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    model.eval()
    times = []
    try:
        with torch.inference_mode():
            for i in range(runs + 3):
                start = time.perf_counter()
                model(inputs, roi_boxes=boxes, roi_labels=labels)
                if i >= 3:  # the first runs pay for allocator warm-up
                    times.append((time.perf_counter() - start) * 1000.0)
    finally:
        torch.set_num_threads(previous)
    return times


def count_flops(
    model: torch.nn.Module, size: tuple[int, int], modalities: tuple[str, ...] = MODALITIES, rois: int = 10
) -> tuple[int, dict[str, int]]:
    """Total FLOPs of one eval forward and FLOPs per top-level sub-module."""
    h, w = size
    inputs = synthetic_inputs(size, modalities)
    boxes, labels = synthetic_rois(rois, h, w)
    model.eval()
    counter = FlopCounterMode(display=False, depth=3)
    with torch.inference_mode(), counter:
        model(inputs, roi_boxes=boxes, roi_labels=labels)
    # Containers such as the encoders' ModuleDict never run forward themselves, so their
    # FLOPs are only recorded one level deeper; count the shallowest level seen per child.
    shallow: dict[str, dict[int, int]] = {}
    for name, ops in counter.get_flop_counts().items():
        parts = name.split(".")
        if len(parts) >= 2:
            by_depth = shallow.setdefault(parts[1], {})
            by_depth[len(parts)] = by_depth.get(len(parts), 0) + sum(ops.values())
    per_module = {child: by_depth[min(by_depth)] for child, by_depth in shallow.items()}
    return counter.get_total_flops(), per_module


def main(argv: list[str] | None = None) -> int:
    """Print parameters per module and GFLOPs; returns the process exit code."""
    from damcseg_core.models import build_model, list_models

    parser = argparse.ArgumentParser(prog="damcseg-info", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, choices=list_models(), help="registered model variant")
    parser.add_argument(
        "--size", type=parse_size, default=None, help="input HxW (default: the variant's input_size)"
    )
    parser.add_argument(
        "--modalities", default=",".join(MODALITIES), help="comma-separated subset of rgb,depth,thermal"
    )
    parser.add_argument("--rois", type=int, default=10, help="synthetic ROIs for the local/post paths")
    parser.add_argument("--latency-runs", type=int, default=0, help="also time this many forwards (0 = skip)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op CPU threads for the latency runs")
    args = parser.parse_args(argv)
    modalities = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    bad = [m for m in modalities if m not in MODALITIES]
    if bad or not modalities:
        parser.error(
            f"--modalities must be a non-empty subset of {','.join(MODALITIES)}, got '{args.modalities}'"
        )
    if args.rois < 0 or args.latency_runs < 0 or args.threads < 1:
        parser.error("--rois and --latency-runs must be >= 0 and --threads >= 1")

    model = build_model(args.model)
    size = args.size or tuple(model.config.input_size)
    params = count_parameters(model)
    total_flops, flops = count_flops(model, size, modalities, args.rois)
    print(f"{args.model} at {size[0]}x{size[1]}, modalities {','.join(modalities)}, {args.rois} ROIs")
    print(f"{'module':<16}{'params (M)':>12}{'GFLOPs':>10}")
    for name, n in params.items():
        if name == "total":
            continue
        print(f"{name:<16}{n / 1e6:>12.3f}{flops.get(name, 0) / 1e9:>10.3f}")
    print(f"{'total':<16}{params['total'] / 1e6:>12.3f}{total_flops / 1e9:>10.3f}")
    if args.latency_runs:
        times = measure_latency(model, size, modalities, args.rois, args.latency_runs, args.threads)
        print(
            f"latency ({args.threads} threads, {len(times)} runs): median {statistics.median(times):.1f} ms, "
            f"min {min(times):.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
