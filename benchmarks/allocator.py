"""Does :func:`damcseg_core.inference.tune_allocator` pay? Fresh processes with and without it.

The allocator's state is per process, so each measurement is a new Python process (as the node
is) that builds the cases of ``benchmarks/models.py`` and times them interleaved round-robin;
processes alternate plain / tuned (``--pairs`` of each) so that a drift of the machine hits both
alike. Reports, per case, the median over all rounds of all processes of a mode, the speed-up
tuned / plain, and LRASPP-MBv3-L / edge in each mode (the ratio the speed goal is about).

    python benchmarks/allocator.py --pairs 2 --rounds 10 --out benchmarks/results/
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, cpu_model

CASES = ("lraspp_mbv3l", "edge", "edge-predictor")


def child(mode: str, cases: list[str], rounds: int, threads: int, size: tuple[int, int]) -> dict:
    """One process: tune (or not), build the cases, time them interleaved; per-case call times."""
    message = "allocator left as it is (plain)"
    if mode == "tuned":
        from damcseg_core.inference import tune_allocator

        applied, message = tune_allocator()
        if not applied:
            raise SystemExit(f"tune_allocator did not apply: {message}")
    import torch

    from benchmarks import models as bm

    torch.set_num_threads(threads)
    benches = {name: bm.build_case(name, size) for name in cases}
    times: dict[str, list[float]] = {name: [] for name in cases}
    with torch.inference_mode():
        for r in range(rounds + 1):  # round 0 warms up
            for name, bench in benches.items():
                for i in range(bench.n_inputs):
                    start = time.perf_counter()
                    bench.step(i)
                    if r:
                        times[name].append((time.perf_counter() - start) * 1000.0)
    return {"mode": mode, "message": message, "times_ms": times}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=2, help="plain/tuned process pairs (default 2)")
    ap.add_argument("--rounds", type=int, default=10, help="timed rounds over the frame set per process")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", default="256x512", help="HxW")
    ap.add_argument("--cases", default=",".join(CASES), help="comma list of benchmarks/models.py cases")
    ap.add_argument("--out", type=Path, help="folder for allocator_<date>.md/.json")
    ap.add_argument("--child", choices=("plain", "tuned"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c]
    size = tuple(int(v) for v in args.size.lower().split("x"))
    if args.child:
        print(json.dumps(child(args.child, cases, args.rounds, args.threads, size)))
        return 0
    if args.pairs < 1 or args.rounds < 1:
        ap.error("--pairs and --rounds must be >= 1")
    started = time.time()
    runs: list[dict] = []
    for _ in range(args.pairs):
        for mode in ("plain", "tuned"):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--rounds", str(args.rounds),
                   "--threads", str(args.threads), "--size", args.size, "--cases", ",".join(cases)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=dict(os.environ))
            if out.returncode:
                sys.stderr.write(out.stderr)
                return out.returncode
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(
                f"{mode}: "
                + ", ".join(f"{c} {statistics.median(runs[-1]['times_ms'][c]):.1f} ms" for c in cases)
            )
    med = {
        mode: {
            c: statistics.median([t for r in runs if r["mode"] == mode for t in r["times_ms"][c]])
            for c in cases
        }
        for mode in ("plain", "tuned")
    }
    lines = [
        f"# glibc allocator tuning, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `python benchmarks/allocator.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        f"- machine: {cpu_model()}, {os.cpu_count()} cores; torch threads {args.threads}; input {args.size}",
        f"- {args.pairs} plain / tuned process pairs, alternating; {args.rounds} rounds each after one warm-up",
        f"- tuned: {next(r['message'] for r in runs if r['mode'] == 'tuned')}",
        f"- wall time: {time.time() - started:.0f} s",
        "",
        "| case | plain median ms | tuned median ms | speed-up tuned / plain |",
        "|---|---|---|---|",
    ]
    for c in cases:
        lines.append(
            f"| `{c}` | {med['plain'][c]:.1f} | {med['tuned'][c]:.1f} | {med['plain'][c] / med['tuned'][c]:.2f}x |"
        )
    if "lraspp_mbv3l" in cases:
        lines += ["", "| ratio vs LRASPP-MBv3-L (FPS) | plain | tuned |", "|---|---|---|"]
        for c in cases:
            if c != "lraspp_mbv3l":
                ratios = [med[m]["lraspp_mbv3l"] / med[m][c] for m in ("plain", "tuned")]
                lines.append(f"| `{c}` | {ratios[0]:.2f}x | {ratios[1]:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"allocator_{datetime.date.today():%Y-%m-%d}"
        stem.with_suffix(".md").write_text(text)
        stem.with_suffix(".json").write_text(json.dumps({"median_ms": med, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
