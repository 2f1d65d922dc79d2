"""Benchmark suite: DAMCSeg vs the segmentation models a user would pick instead, one process.

One command measures every case (``benchmarks/models.py``) at each input size, batch 1, with the
same intra-op thread count, and writes ``peers_<date>.md`` / ``.json`` to ``--out``::

    . tools/env.sh && pip install -e .[bench]   # peers: smp, transformers (optional extra)
    python benchmarks/run.py --sizes 256x512,512x1024 --threads 2 --out benchmarks/results/

Method (``benchmarks/README.md`` says more):

* latency: ``--warmup`` calls per case, then ``--iters`` rounds in which every case runs once,
  round-robin (A B C A B C ...), so a change of machine load hits all cases alike; median, p90
  and FPS = 1000 / median. The ratios are the result: each is computed from the medians of the
  same run (``value == median(b) / median(a)``), absolute times on a shared machine are noisy.
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on the same calls, 2 FLOPs per multiply-add,
  convolutions and matrix products only (element-wise ops not counted); for our models the mean
  over the input set (the local path's cost depends on the number of ROIs).
* achieved GFLOP/s = GFLOPs / median seconds, and as a fraction of this CPU's fp32 GEMM peak,
  measured in the same run (best of N ``torch.mm`` of 2048x2048, at the start and at the end).
* peak RSS: each case is built and run (2 warm-up + 2 calls) in a fresh subprocess and its
  peak RSS (``VmHWM``; ``ru_maxrss`` would inherit the parent's across exec) reported, so one model's memory does not hide another's; the ``baseline`` row is
  a child that imports everything and builds the frames but no model.

``--quick`` (tests): 64x128, 2 rounds, torchvision peers + damcseg_tiny only, no GEMM-sized peak.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import models as bm
from benchmarks._common import REPO, cpu_model
from damcseg_core.cli.info import parse_size

__all__ = ["compute_ratios", "gemm_peak", "main", "measure", "render_markdown"]

FULL_CASES = (
    *bm.PEER_CASES,
    "edge",
    "edge-no_rgb",
    "edge-no_depth",
    "edge-no_thermal",
    "edge-simple",
    "edge-simple-forced",
    "edge-complex",
    "edge-predictor",
    "paper",
    "paper-no_rgb",
    "paper-no_depth",
    "paper-no_thermal",
)
QUICK_CASES = (*bm.TORCHVISION_PEERS, "tiny", "tiny-no_thermal", "tiny-predictor")
LARGE_SKIP = ("paper-no_rgb", "paper-no_depth", "paper-no_thermal")
"""Not run above 256x512 by default (time budget of the full run; ``--cases`` runs them)."""
FULL_RSS = (*bm.PEER_CASES, "edge", "edge-predictor", "paper")
QUICK_RSS = ("lraspp_mbv3l",)
REFERENCE = "lraspp_mbv3l"

# (name, description, slower case, faster-or-reference case, goal on value, what value means)
RATIO_SPECS: tuple[tuple[str, str, str, str, float | None, str], ...] = (
    ("edge_fps_vs_lraspp", "damcseg_edge FPS / LRASPP-MBv3-L FPS", "lraspp_mbv3l", "edge", 1.0, "fps"),
    ("edge_fps_vs_segformer_b0", "damcseg_edge FPS / SegFormer-B0 FPS", "segformer_b0", "edge", 4.0, "fps"),
    ("paper_fps_vs_smp_dlv3p_r50", "damcseg_paper FPS / smp DeepLabV3+ R50 FPS", "smp_dlv3p_r50", "paper", 1.26,
     "fps"),
    ("edge_fps_vs_smp_dlv3p_mbv2", "damcseg_edge FPS / smp DeepLabV3+ MBv2 FPS", "smp_dlv3p_mbv2", "edge", None,
     "fps"),
    ("edge_fps_vs_dlv3_mbv3l", "damcseg_edge FPS / DeepLabV3-MBv3-L FPS", "dlv3_mbv3l", "edge", None, "fps"),
    *(
        (f"{base}_no_{m}_extra_latency", f"{base} with {m} missing: extra latency vs all three",
         f"{base}-no_{m}", base, 0.10, "extra")
        for base in ("edge", "paper", "tiny")
        for m in ("rgb", "depth", "thermal")
    ),
    ("gating_simple_vs_complex", "edge: FPS on simple scenes / FPS on complex scenes (gate decides)",
     "edge-complex", "edge-simple", 1.20, "fps"),
    ("gating_vs_forced_on_simple", "edge, simple scenes: FPS with the gate / FPS with all branches forced on",
     "edge-simple-forced", "edge-simple", None, "fps"),
    *(
        (f"{base}_predictor_extra_latency", f"{base}: Predictor.predict vs model forward, extra latency",
         f"{base}-predictor", base, None, "extra")
        for base in ("edge", "tiny")
    ),
    ("onnxruntime_fps_vs_torch_predictor", "edge Predictor: onnxruntime FPS / torch FPS",
     "edge-predictor", "edge-onnxruntime", None, "fps"),
)  # fmt: skip
"""For kind ``fps``: value = median(a) / median(b) (FPS of b over FPS of a), goal is a minimum.
For kind ``extra``: value = median(a) / median(b) - 1 (extra latency of a over b), goal is a maximum."""


# ---------------------------------------------------------------------- measuring
def gemm_peak(threads: int, n: int = 2048, reps: int = 8) -> dict[str, float]:
    """Best fp32 ``torch.mm`` GFLOP/s of ``n x n`` matrices with ``threads`` threads."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - start)
    return {"n": n, "reps": reps, "best_s": best, "gflops_per_s": 2.0 * n**3 / best / 1e9}


def count_gflops(bench: bm.Bench) -> float:
    """Mean GFLOPs of ``flop_step`` over the bench's input set (2 FLOPs per multiply-add).

    This pass over every input is also the first warm-up of the case.
    """
    totals = []
    for i in range(bench.n_inputs):
        counter = FlopCounterMode(display=False)
        with counter:
            bench.flop_step(i)
        totals.append(counter.get_total_flops())
    return float(np.mean(totals)) / 1e9


def measure(
    names: list[str], size: tuple[int, int], iters: int, warmup: int, n_frames: int, log=print
) -> tuple[dict[str, dict], dict[str, str]]:
    """Build, count and time ``names`` at ``size``, interleaved round-robin.

    Returns:
        ``(rows, skipped)``: per case name its numbers (``times_ms`` included); per case that
        could not be built, why.
    """
    benches: dict[str, bm.Bench] = {}
    skipped: dict[str, str] = {}
    for name in names:
        try:
            benches[name] = bm.build_case(name, size, n_frames)
        except bm.CaseUnavailable as exc:
            skipped[name] = str(exc)
        except Exception as exc:  # a broken optional backend must not stop the suite
            skipped[name] = f"failed: {type(exc).__name__}: {exc}"
            log(traceback.format_exc())
    for name, why in skipped.items():
        log(f"  {name}: {why}")
    rows: dict[str, dict] = {}
    for name, bench in benches.items():
        rows[name] = {
            **bm.case_info(name),
            "note": bench.note,
            "model_size": f"{bench.model_size[0]}x{bench.model_size[1]}" if bench.model_size else None,
            "params_m": sum(p.numel() for p in bench.module.parameters()) / 1e6,
            "gflops": count_gflops(bench),
            "times_ms": [],
            "probe": [],
        }
    order = list(benches)
    for r in range(warmup):
        for name in order:
            benches[name].step(r)
            if benches[name].probe:
                benches[name].probe()
    t0 = time.perf_counter()
    for r in range(iters):
        for name in order:
            bench = benches[name]
            start = time.perf_counter()
            bench.step(r)
            rows[name]["times_ms"].append((time.perf_counter() - start) * 1000.0)
            if bench.probe:
                rows[name]["probe"].append(bench.probe())
        log(f"  round {r + 1}/{iters} done ({time.perf_counter() - t0:.0f} s)")
    for row in rows.values():
        t = np.asarray(row["times_ms"])
        row["median_ms"] = float(np.median(t))
        row["p90_ms"] = float(np.percentile(t, 90))
        row["fps"] = 1000.0 / row["median_ms"]
        row["gflops_per_s"] = row["gflops"] / (row["median_ms"] / 1000.0)
        probes = row.pop("probe")
        if probes:
            keys = sorted({k for p in probes for k in p})
            row["per_call"] = {k: float(np.mean([p.get(k, 0.0) for p in probes])) for k in keys}
    return rows, skipped


def rss_child(name: str, size: tuple[int, int], threads: int, n_frames: int) -> dict[str, Any]:
    """Run in a fresh process: build ``name`` (or nothing for ``baseline``), run it, report peak RSS."""
    torch.set_num_threads(threads)
    if name == "baseline":
        bm.frame_set("mixed", size, n_frames)
    else:
        bench = bm.build_case(name, size, n_frames)
        for i in range(4):
            bench.step(i)
    return {"case": name, "rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """This process's peak RSS in MB.

    ``VmHWM`` belongs to the memory image and starts afresh at ``exec``; ``ru_maxrss`` does not
    (Linux keeps the parent's high-water mark across fork + exec), so a child started by a big
    parent would report the parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_rss(names: list[str], size: tuple[int, int], threads: int, n_frames: int, log=print) -> dict:
    """Peak RSS (MB) of each case in its own subprocess (``baseline``: no model)."""
    out: dict[str, float | str] = {}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    for name in ["baseline", *names]:
        cmd = [sys.executable, "-m", "benchmarks.run", "--rss-child", name, "--sizes", f"{size[0]}x{size[1]}",
               "--iters", "1", "--threads", str(threads), "--frames", str(n_frames)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode == 0 and lines:
            out[name] = json.loads(lines[-1])["rss_mb"]
        else:
            out[name] = f"failed (rc {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
        log(f"  rss {name}: {out[name]}")
    return out


# ---------------------------------------------------------------------- ratios and report
def compute_ratios(rows: dict[str, dict], size: str = "") -> dict[str, dict]:
    """Every :data:`RATIO_SPECS` entry whose two cases were measured, from their medians.

    A pair whose models run at different sizes (the Predictor resizes to the model's
    ``input_size``; the forward rows run at the benchmark ``size``) is left out: it would compare
    different work.
    """
    ratios = {}
    for key, text, a, b, goal, kind in RATIO_SPECS:
        if a not in rows or b not in rows:
            continue
        if size and (rows[a].get("model_size") or size) != (rows[b].get("model_size") or size):
            continue
        q = rows[a]["median_ms"] / rows[b]["median_ms"]
        value = q if kind == "fps" else q - 1.0
        met = None if goal is None else (value >= goal if kind == "fps" else value <= goal)
        ta, tb = rows[a].get("times_ms", []), rows[b].get("times_ms", [])
        # Same-round pairs (a and b ran back to back): a second estimate, less sensitive to load swings.
        paired = float(np.median(np.asarray(ta) / np.asarray(tb))) if ta and len(ta) == len(tb) else None
        if paired is not None and kind == "extra":
            paired -= 1.0
        ratios[key] = {
            "text": text,
            "a": a,
            "b": b,
            "kind": kind,
            "formula": f"median({a}) / median({b})" + (" - 1" if kind == "extra" else ""),
            "value": value,
            "paired": paired,
            "goal": goal,
            "met": met,
        }
    return ratios


def machine_info(threads: int) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores_nproc": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": threads,
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS", "unset"),
        "packages": _package_versions(),
        "git": _git_state(),
    }


def _git_state() -> dict[str, Any]:
    """Commit and locally modified files (read-only git): the numbers belong to this tree."""

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    modified = [ln[3:] for ln in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "modified": modified}


def _package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for pkg in ("torchvision", "segmentation-models-pytorch", "transformers", "onnxruntime", "timm"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return versions


def _fmt(v: Any, spec: str = ".1f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) else ("-" if v is None else str(v))


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:+.1f}%"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def render_markdown(result: dict) -> str:
    """The results file: machine, command, per-size tables, ratios and goals."""
    m = result["machine"]
    peak = result["gemm_peak_gflops_per_s"]
    lines = [
        f"# DAMCSeg vs peers, {result['date']}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"- machine: {m['cpu']}, {m['cores_nproc']} cores (nproc), {m['platform']}",
        f"- torch {m['torch']}, " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()),
        f"- threads: torch.set_num_threads({m['threads']}) for every case; batch 1; fp32",
        *([f"- allocator: {m['allocator']}"] if "allocator" in m else []),
        f"- tree: commit {m['git']['commit']}"
        + (
            f", with local changes to {', '.join(m['git']['modified'])}"
            if m["git"]["modified"]
            else ", clean"
        ),
        f"- load average at start: {result['loadavg_start']}; at end: {result['loadavg_end']}",
        f"- fp32 GEMM peak (best torch.mm {result['gemm'][0]['n']}^2, start / end): "
        + " / ".join(f"{g['gflops_per_s']:.1f}" for g in result["gemm"])
        + f" GFLOP/s; the max, {peak:.1f}, is the reference",
        f"- wall time of the whole run: {result['wall_s']:.0f} s",
        "",
    ]
    for size_key, block in result["sizes"].items():
        lines += [
            f"## {size_key} (H x W), {block['iters']} interleaved rounds after {block['warmup']} warm-up",
            "",
            "| case | what | params (M) | GFLOPs | median ms | p90 ms | FPS | FPS vs LRASPP | GFLOP/s "
            "| % GEMM peak | peak RSS MB | per call: ROIs / branch evals / scene category |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in block["rows"].items():
            vs = r["fps_vs_lraspp"]
            pc = r.get("per_call", {})
            gate = (
                f"{pc['rois']:.1f} / {pc['branch_evals']:.1f} / {pc['category']:.2f}" if "rois" in pc else ""
            )
            rss = block["rss_mb"].get(name)
            lines.append(
                f"| `{name}` | {r['label']} ({r['note']}) | {r['params_m']:.2f} | {r['gflops']:.2f} "
                f"| {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['fps']:.2f} | {_fmt(vs, '.2f')} "
                f"| {r['gflops_per_s']:.1f} | {100 * r['gflops_per_s'] / peak:.1f} | {_fmt(rss, '.0f')} | {gate} |"
            )
        if "baseline" in block["rss_mb"]:
            lines.append(
                f"\nPeak RSS of a child that imports everything and builds the frames, no model: "
                f"{_fmt(block['rss_mb']['baseline'], '.0f')} MB."
            )
        if block["skipped"]:
            lines.append("")
        for name, why in block["skipped"].items():
            lines.append(f"- `{name}`: {why}")
        lines += [
            "",
            "| ratio | formula | value | same-round pairs | goal | met |",
            "|---|---|---|---|---|---|",
        ]
        for r in block["ratios"].values():
            if r["goal"] is None:
                goal = ""
            elif r["kind"] == "extra":
                goal = f"<= {100 * r['goal']:+.0f}%"
            else:
                goal = f">= {r['goal']:.2f}x"
            value, paired = (
                (_pct(r["value"]), _pct(r["paired"]))
                if r["kind"] == "extra"
                else (_x(r["value"]), _x(r["paired"]))
            )
            met = "" if r["met"] is None else ("met" if r["met"] else "NOT met")
            lines.append(f"| {r['text']} | `{r['formula']}` | {value} | {paired} | {goal} | {met} |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------- CLI
def _iters_for(spec: str, sizes: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """``15`` or ``256x512:15,512x1024:5`` -> rounds per size."""
    if ":" not in spec:
        return dict.fromkeys(sizes, int(spec))
    table = {parse_size(k): int(v) for k, v in (p.split(":") for p in spec.split(","))}
    missing = [s for s in sizes if s not in table]
    if missing:
        raise argparse.ArgumentTypeError(f"--iters names no count for {missing}")
    return table


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="256x512,512x1024", help="comma-separated HxW (multiples of 32)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads for every case")
    ap.add_argument(
        "--out", default=str(REPO / "benchmarks" / "results"), help="folder for peers_<date>.md/.json"
    )
    ap.add_argument("--iters", default="256x512:15,512x1024:5", help="rounds: N or HxW:N,HxW:N")
    ap.add_argument(
        "--warmup", type=int, default=1, help="untimed calls per case after the FLOP-counting pass"
    )
    ap.add_argument("--frames", type=int, default=bm.FRAMES_PER_SET, help="synthetic frames per input set")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all of the mode)")
    ap.add_argument(
        "--backends", default="torch", help="torch[,onnxruntime]: onnxruntime adds edge-onnxruntime"
    )
    ap.add_argument(
        "--rss",
        choices=("main", "first", "none"),
        default="main",
        help="peak RSS subprocesses at every size (main), at the first size only (first), or none",
    )
    ap.add_argument(
        "--quick", action="store_true", help="tiny sizes, 2 rounds, torchvision peers + damcseg_tiny"
    )
    ap.add_argument("--tag", default="", help="suffix of the result file names")
    ap.add_argument(
        "--render",
        default="",
        help="re-write the .md of a results .json (ratios recomputed), measure nothing",
    )
    ap.add_argument(
        "--allocator",
        choices=("tuned", "plain"),
        default="tuned",
        help="tuned (default): damcseg_core.inference.tune_allocator() before any case, as the node "
        "does at configure, for every case alike; plain: glibc's defaults (benchmarks/allocator.py "
        "compares the two in fresh processes)",
    )
    ap.add_argument("--rss-child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.command = shlex.join(["python", "benchmarks/run.py", *(sys.argv[1:] if argv is None else argv)])
    if args.quick:
        if args.sizes == ap.get_default("sizes"):
            args.sizes = "64x128"
        if args.iters == ap.get_default("iters"):
            args.iters = "2"
        args.warmup = min(args.warmup, 1)
        args.frames = min(args.frames, 2)
    try:
        args.size_list = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
        args.iters_by_size = _iters_for(args.iters, args.size_list)
    except argparse.ArgumentTypeError as exc:
        ap.error(str(exc))
    if args.threads < 1 or args.warmup < 0 or args.frames < 1:
        ap.error("--threads and --frames must be >= 1, --warmup >= 0")
    args.backend_list = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in args.backend_list if b not in ("torch", "onnxruntime")]
    if bad:
        ap.error(f"--backends takes torch and/or onnxruntime, got {bad}")
    if args.cases:
        args.case_list = [c.strip() for c in args.cases.split(",") if c.strip()]
    else:
        args.case_list = list(QUICK_CASES if args.quick else FULL_CASES)
    # --backends onnxruntime adds its case to an explicit --cases list too (it used to be
    # dropped there without a word).
    if "onnxruntime" in args.backend_list and "edge-onnxruntime" not in args.case_list:
        args.case_list.append("edge-onnxruntime")
    unknown = [c for c in args.case_list if c not in bm.CASE_NAMES]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; valid: {', '.join(bm.CASE_NAMES)}")
    return args


def run(args: argparse.Namespace, log=print) -> dict:
    """The whole suite; returns the result dict (``main`` writes it to ``--out``)."""
    t_start = time.perf_counter()
    loadavg_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    previous_threads = torch.get_num_threads()
    try:
        return _run(args, t_start, loadavg_start, log)
    finally:
        torch.set_num_threads(previous_threads)


def _run(args: argparse.Namespace, t_start: float, loadavg_start: str, log=print) -> dict:
    torch.set_num_threads(args.threads)
    allocator = "glibc defaults (--allocator plain)"
    if getattr(args, "allocator", "tuned") == "tuned":
        from damcseg_core.inference import tune_allocator

        allocator = tune_allocator()[1]
    log(f"allocator: {allocator}")
    gemm_n, gemm_reps = (256, 3) if args.quick else (2048, 8)
    gemm = [gemm_peak(args.threads, gemm_n, gemm_reps)]
    log(f"GEMM peak: {gemm[0]['gflops_per_s']:.1f} GFLOP/s")
    sizes = {}
    for size in args.size_list:
        key = f"{size[0]}x{size[1]}"
        names = list(args.case_list)
        size_skipped = {}
        if not args.cases and size[0] * size[1] > 256 * 512:
            size_skipped = {
                c: "not run at this size by default (time budget; --cases runs it)" for c in LARGE_SKIP
            }
            names = [c for c in names if c not in LARGE_SKIP]
        log(f"{key}: {len(names)} cases, {args.iters_by_size[size]} rounds")
        rows, skipped = measure(names, size, args.iters_by_size[size], args.warmup, args.frames, log)
        skipped.update(size_skipped)
        ref = rows.get(REFERENCE)
        for row in rows.values():
            row["fps_vs_lraspp"] = ref["median_ms"] / row["median_ms"] if ref else None
        peers_missing = [c for c in bm.PEER_CASES if c not in args.case_list]
        for peer in peers_missing if args.quick else ():
            try:
                bm.check_installed(peer)
                skipped[peer] = "not measured in --quick mode"
            except bm.CaseUnavailable as exc:
                skipped[peer] = str(exc)
        sizes[key] = {
            "iters": args.iters_by_size[size],
            "warmup": args.warmup,
            "rows": rows,
            "skipped": skipped,
            "ratios": compute_ratios(rows, key),
            "rss_mb": {},
        }
    gemm.append(gemm_peak(args.threads, gemm_n, gemm_reps))
    if args.rss != "none":
        rss_cases = [c for c in (QUICK_RSS if args.quick else FULL_RSS) if c in args.case_list]
        for size in args.size_list if args.rss == "main" else args.size_list[:1]:
            key = f"{size[0]}x{size[1]}"
            measured = [c for c in rss_cases if c in sizes[key]["rows"]]
            sizes[key]["rss_mb"] = measure_rss(measured, size, args.threads, args.frames, log)
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": args.command,
        "machine": {**machine_info(args.threads), "allocator": allocator},
        "loadavg_start": loadavg_start,
        "loadavg_end": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
        "gemm": gemm,
        "gemm_peak_gflops_per_s": max(g["gflops_per_s"] for g in gemm),
        "flops_convention": "FlopCounterMode, 2 FLOPs per multiply-add, conv + matmul only",
        "quick": bool(args.quick),
        "sizes": sizes,
        "wall_s": time.perf_counter() - t_start,
    }
    return result


def write_results(result: dict, out: str | Path, tag: str = "") -> tuple[Path, Path]:
    """``peers_<date><tag>.md`` and ``.json`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"peers_{result['date'][:10]}{tag}"
    md, js = out / f"{stem}.md", out / f"{stem}.json"
    md.write_text(render_markdown(result))
    js.write_text(json.dumps(result, indent=1))
    return md, js


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child, args.size_list[0], args.threads, args.frames)))
        return 0
    if args.render:
        js = Path(args.render)
        result = json.loads(js.read_text())
        for key, block in result["sizes"].items():
            block["ratios"] = compute_ratios(block["rows"], key)
        js.write_text(json.dumps(result, indent=1))
        js.with_suffix(".md").write_text(render_markdown(result))
        print(render_markdown(result))
        return 0
    result = run(args)
    md, js = write_results(result, args.out, args.tag)
    print(render_markdown(result))
    print(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
