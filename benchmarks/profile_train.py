"""Where the time of a training step goes (issue #17): data, augmentation, collate, model, losses.

Runs steps of the real :class:`~damcseg_core.train.trainer.Trainer` pipeline (its dataset,
``_Augmented`` view, ``StepBatchSampler``, ``DataLoader``, collate and ``train_step``) for a
training config (default ``config/train/edge_det_interim_joint.yaml``: damcseg_edge, batch 8 of
128x256 crops from 256x512 frames) and splits every step into

* ``data``: the base dataset's ``__getitem__`` (on-the-fly rendering, or a packed-cache read),
* ``augment``: ``Augmenter`` (flip, scale/crop, colour jitter, occlusion, object refresh),
* ``collate``,
* ``forward``: the model's forward,
* ``loss:targets`` (detection targets + ATSS assignment), ``loss:det`` (focal + box),
  ``loss:seg``, ``loss:align`` (matched predictions + alignment), ``loss:completion``,
  ``loss:other`` (the rest of ``DSJLoss``: auxiliary CE, sums),
* ``backward``, ``optimizer`` (``zero_grad`` + ``step``), ``step:other`` (the rest of
  ``train_step``: device moves, modality dropout, RoI boxes, gradient clipping).

Contenders run as separate processes, **interleaved** round-robin (each round runs every
contender on the same steps, so the same batches), because the machine may be shared: report the
medians and the ratio, not the absolute times.

* ``baseline``: the scenes rendered on the fly (the ``data.train`` spec without ``cache=``),
  with the code of ``--baseline-rev`` for the files that the throughput work rewrote
  (``BASELINE_FILES``; everything else, model included, is the working tree's), or all of
  ``damcseg_core`` at that revision with ``--baseline-all`` (the whole pipeline before the work),
  or the working tree's code when no revision is given;
* ``cache``: the same spec read from a packed cache (``--cache``, built on first use), the
  working tree's code;
* ``cache+bf16`` (``--bf16``): as ``cache`` with the forward under
  ``torch.autocast("cpu", dtype=torch.bfloat16)`` (backward follows the autocast graph);
* ``cache+cl`` (``--channels-last``): as ``cache`` with the model and its image inputs in
  ``torch.channels_last`` memory format;
* ``cache+bf16+cl`` (both flags): both at once.

The result (machine, medians per phase, ratio, optionally the top ops of ``torch.profiler``) is
printed and written to ``benchmarks/results/profile_train_<date>.md``.

Usage::

    python benchmarks/profile_train.py --steps 6 --rounds 3 --baseline-rev 586db0c --bf16
    python benchmarks/profile_train.py --frames 256 --steps 4 --rounds 2 --torch-profile
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASELINE_FILES = (
    "damcseg_core/losses/alignment.py",
    "damcseg_core/losses/segmentation.py",
    "damcseg_core/train/augment.py",
)
"""Files whose ``--baseline-rev`` version the baseline contender runs (the rewritten hot code)."""
PHASES = (
    "data",
    "augment",
    "collate",
    "forward",
    "loss:targets",
    "loss:det",
    "loss:seg",
    "loss:align",
    "loss:completion",
    "loss:other",
    "backward",
    "optimizer",
    "step:other",
    "total",
)
_MARK = "PROFILE_TRAIN_JSON "


# ---------------------------------------------------------------------- worker (one contender)
def _worker(job: dict[str, Any]) -> dict[str, Any]:
    """Run ``job["warmup"] + job["steps"]`` training steps from ``job["start"]``; per-step phase times."""
    if job.get("code_root"):
        sys.path.insert(0, job["code_root"])
    import torch
    from torch.utils.data import DataLoader

    import damcseg_core
    import damcseg_core.losses.dsjl as dsjl
    from damcseg_core.config import load_yaml
    from damcseg_core.train.config import TrainConfig
    from damcseg_core.train.trainer import StepBatchSampler, Trainer

    cfg = load_yaml(TrainConfig, job["config"], job.get("overrides", []))
    cfg.init_from = None
    cfg.progress = False
    cfg.threads = job["threads"]
    cfg.data.train = job["spec"]
    cfg.data.val = None
    cfg.out_dir = tempfile.mkdtemp(prefix="profile_train_")
    trainer = Trainer(cfg)
    if job.get("mode") == "autocast":
        out = _autocast_check(trainer, job["iters"])
        shutil.rmtree(cfg.out_dir, ignore_errors=True)
        return out

    acc: dict[str, float] = defaultdict(float)

    def timed(name: str, fn: Any) -> Any:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[name] += time.perf_counter() - t

        return run

    class _Proxy:
        """Times ``__getitem__`` / ``__call__`` of the wrapped dataset / augmenter."""

        def __init__(self, inner: Any, name: str) -> None:
            self.inner, self.name = inner, name

        def __len__(self) -> int:
            return len(self.inner)

        def __getitem__(self, i: Any) -> Any:
            return timed(self.name, self.inner.__getitem__)(i)

        def __call__(self, *args: Any) -> Any:
            return timed(self.name, self.inner)(*args)

        def __getattr__(self, key: str) -> Any:
            return getattr(self.inner, key)

    view = trainer.train_set
    view.base = _Proxy(view.base, "data")
    view.augmenter = _Proxy(view.augmenter, "augment")
    collate_fn = timed("collate", trainer.collate_fn)
    forward = trainer.model.forward
    if job.get("channels_last"):
        trainer.model.to(memory_format=torch.channels_last)
        plain = forward

        def forward(inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            inputs = {k: v.contiguous(memory_format=torch.channels_last) for k, v in inputs.items()}
            return plain(inputs, *args, **kwargs)

    if job.get("bf16"):

        def forward_bf16(*args: Any, **kwargs: Any) -> Any:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return forward(*args, **kwargs)

        trainer.model.forward = timed("forward", forward_bf16)
    else:
        trainer.model.forward = timed("forward", forward)
    for fn_name, phase in (
        ("build_targets", "loss:targets"),
        ("detection_loss", "loss:det"),
        ("segmentation_loss", "loss:seg"),
        ("matched_predictions", "loss:align"),
        ("matched_alignment_loss", "loss:align"),
        ("alignment_loss", "loss:align"),
        ("completion_loss", "loss:completion"),
    ):
        if hasattr(dsjl, fn_name):
            setattr(dsjl, fn_name, timed(phase, getattr(dsjl, fn_name)))
    dsjl.DSJLoss.__call__ = timed("loss:all", dsjl.DSJLoss.__call__)
    trainer._backward = timed("backward", trainer._backward)
    trainer.optimizer.step = timed("optimizer", trainer.optimizer.step)
    trainer.optimizer.zero_grad = timed("optimizer", trainer.optimizer.zero_grad)
    train_step = timed("train_step", trainer.train_step)

    start, warmup, steps = job["start"], job["warmup"], job["steps"]
    extra = 1 if job.get("torch_profile") else 0
    sampler = StepBatchSampler(
        len(trainer.train_set), cfg.batch_size, cfg.seed, start, start + warmup + steps + extra
    )
    loader = DataLoader(trainer.train_set, batch_sampler=sampler, collate_fn=collate_fn, num_workers=0)
    records: list[dict[str, float]] = []
    table = ""
    it = iter(loader)
    for k in range(warmup + steps + extra):
        prof = None
        if k == warmup + steps:  # the extra step, under torch.profiler
            prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            prof.__enter__()
        acc.clear()
        t0 = time.perf_counter()
        batch = next(it)
        trainer.step = start + k
        trainer._enter_stage(trainer.step)
        train_step(batch)
        total = time.perf_counter() - t0
        if prof is not None:
            prof.__exit__(None, None, None)
            table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
            continue
        if k < warmup:
            continue
        loss_parts = sum(acc[p] for p in PHASES if p.startswith("loss:"))
        rec = {p: acc[p] for p in PHASES if p not in ("total", "loss:other", "step:other")}
        rec["loss:other"] = max(0.0, acc["loss:all"] - loss_parts)
        inner = acc["forward"] + acc["loss:all"] + acc["backward"] + acc["optimizer"]
        rec["step:other"] = max(0.0, acc["train_step"] - inner)
        rec["total"] = total
        records.append(rec)
    shutil.rmtree(cfg.out_dir, ignore_errors=True)
    return {
        "records": records,
        "torch_profile": table,
        "damcseg_core": str(Path(damcseg_core.__file__).parent),
        "num_train": len(trainer.train_set),
    }


def _autocast_check(trainer: Any, iters: int) -> dict[str, Any]:
    """Model forward and backward (with the real DSJL) in fp32, under CPU bf16 autocast and in
    channels_last, alternating every iteration in this one process on one fixed batch, so that
    load hits all alike."""
    import torch
    from torch.utils.data import DataLoader

    from damcseg_core import MODALITIES
    from damcseg_core.train.trainer import StepBatchSampler

    cfg = trainer.cfg
    sampler = StepBatchSampler(len(trainer.train_set), cfg.batch_size, cfg.seed, 0, 1)
    batch = next(iter(DataLoader(trainer.train_set, batch_sampler=sampler, collate_fn=trainer.collate_fn)))
    inputs = {m: batch[m] for m in MODALITIES if m in batch}
    trainer._enter_stage(0)
    trainer.model.train()
    variants = ("fp32", "bf16", "channels_last")
    times: dict[str, dict[str, list[float]]] = {v: {"forward": [], "backward": []} for v in variants}
    losses: dict[str, float] = {}
    cl_inputs = {k: v.contiguous(memory_format=torch.channels_last) for k, v in inputs.items()}
    for i in range(len(variants) * (iters + 1)):
        variant = variants[i % len(variants)]
        fmt = torch.channels_last if variant == "channels_last" else torch.contiguous_format
        trainer.model.to(memory_format=fmt)
        torch.manual_seed(0)
        trainer.optimizer.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16"):
            out = trainer.model(cl_inputs if variant == "channels_last" else inputs)
        t1 = time.perf_counter()
        loss = trainer.loss(out, batch)["total"]
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        if i >= len(variants):  # first round: warm-up
            times[variant]["forward"].append(t1 - t0)
            times[variant]["backward"].append(t3 - t2)
        losses[variant] = float(loss.detach())
    return {"autocast": times, "losses": losses}


# ---------------------------------------------------------------------- parent
def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _baseline_tree(rev: str, into: Path, whole: bool = False) -> Path:
    """The working tree's ``damcseg_core`` with ``BASELINE_FILES`` as of ``rev`` (``whole``: all of it)."""
    if whole:
        archive = subprocess.run(
            ["git", "archive", rev, "damcseg_core"], cwd=ROOT, capture_output=True, check=False
        )
        if archive.returncode != 0:
            raise SystemExit(f"profile_train: git archive {rev} failed: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
        return into
    shutil.copytree(
        ROOT / "damcseg_core", into / "damcseg_core", ignore=shutil.ignore_patterns("__pycache__")
    )
    for rel in BASELINE_FILES:
        text = subprocess.run(
            ["git", "show", f"{rev}:{rel}"], cwd=ROOT, capture_output=True, text=True, check=False
        )
        if text.returncode != 0:
            raise SystemExit(
                f"profile_train: git show {rev}:{rel} failed: {text.stderr.strip()}; pass a revision of this repo"
            )
        (into / rel).write_text(text.stdout)
    return into


def _run_worker(job: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]), MKL_NUM_THREADS=str(job["threads"]))
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    for line in proc.stdout.splitlines():
        if line.startswith(_MARK):
            return json.loads(line[len(_MARK) :])
    raise SystemExit(
        f"profile_train: the {job['name']} worker failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    )


def _median_ms(values: list[float]) -> float:
    return 1000.0 * statistics.median(values) if values else float("nan")


def _machine(threads: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(threads)
    from damcseg_core.train.hardware import machine_record

    return machine_record()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--config", default=str(ROOT / "config/train/edge_det_interim_joint.yaml"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--frames", type=int, default=4000, help="scenes of the training spec (default 4000)")
    p.add_argument("--seed", type=int, default=2, help="seed of the training spec (default 2)")
    p.add_argument(
        "--cache", default=None, help="packed cache (default runs/cache/synthetic_f<frames>_256x512_s<seed>)"
    )
    p.add_argument("--steps", type=int, default=6, help="measured steps per contender and round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured steps per worker")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--baseline-rev", default=None, help="git revision of BASELINE_FILES for the baseline")
    p.add_argument(
        "--baseline-all",
        action="store_true",
        help="the baseline runs all of damcseg_core as of --baseline-rev (model, trainer, optimizer too)",
    )
    p.add_argument("--bf16", action="store_true", help="add the cache+bf16 contender (CPU autocast)")
    p.add_argument("--channels-last", action="store_true", help="add the cache+cl contender (channels_last)")
    p.add_argument(
        "--autocast-iters",
        type=int,
        default=0,
        help="also time model forward/backward fp32 vs bf16 autocast, alternating in one process (N pairs)",
    )
    p.add_argument("--torch-profile", action="store_true", help="top ops of torch.profiler for one step")
    p.add_argument(
        "--out", default=None, help="result file (default benchmarks/results/profile_train_<date>.md)"
    )
    args = p.parse_args(argv)
    if args.worker:
        print(_MARK + json.dumps(_worker(json.loads(args.worker))), flush=True)
        return 0

    spec = f"synthetic:frames={args.frames},size=256x512,seed={args.seed}"
    cache = args.cache or f"runs/cache/synthetic_f{args.frames}_256x512_s{args.seed}"
    if not Path(cache).is_absolute():
        cache = str(ROOT / cache)
    machine = _machine(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="profile_train_code_"))
    try:
        return _profile(args, argv, spec, cache, machine, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _profile(
    args: argparse.Namespace,
    argv: list[str] | None,
    spec: str,
    cache: str,
    machine: dict[str, Any],
    tmp: Path,
) -> int:
    code_root = str(_baseline_tree(args.baseline_rev, tmp, args.baseline_all)) if args.baseline_rev else None
    # Build (or check) the cache once, outside the timed rounds.
    t_cache = time.perf_counter()
    _run_worker({"name": "cache build", "config": args.config, "overrides": args.set, "threads": args.threads,
                 "spec": f"{spec},cache={cache}", "start": 0, "warmup": 0, "steps": 0})  # fmt: skip
    t_cache = time.perf_counter() - t_cache
    contenders = {
        "baseline": {"spec": spec, "code_root": code_root},
        "cache": {"spec": f"{spec},cache={cache}"},
    }
    if args.bf16:
        contenders["cache+bf16"] = {"spec": f"{spec},cache={cache}", "bf16": True}
    if args.channels_last:
        contenders["cache+cl"] = {"spec": f"{spec},cache={cache}", "channels_last": True}
    if args.bf16 and args.channels_last:
        contenders["cache+bf16+cl"] = {"spec": f"{spec},cache={cache}", "bf16": True, "channels_last": True}
    names = list(contenders)
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    round_totals: dict[str, list[float]] = {n: [] for n in names}
    tables: dict[str, str] = {}
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            job = {
                "name": name, "config": args.config, "overrides": args.set, "threads": args.threads,
                "start": r * (args.steps + args.warmup), "warmup": args.warmup, "steps": args.steps,
                "torch_profile": args.torch_profile and r == args.rounds - 1, **contenders[name],
            }  # fmt: skip
            out = _run_worker(job)
            results[name].extend(out["records"])
            round_totals[name].append(_median_ms([x["total"] for x in out["records"]]))
            if out["torch_profile"]:
                tables[name] = out["torch_profile"]
            print(
                f"round {r + 1}/{args.rounds} {name:>11}: median step {round_totals[name][-1]:.0f} ms",
                flush=True,
            )
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()

    med = {n: {ph: _median_ms([x[ph] for x in results[n]]) for ph in PHASES} for n in names}
    base = names[0]
    lines = [
        f"# Training-step profile ({datetime.date.today().isoformat()})",
        "",
        f"`python benchmarks/profile_train.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        "",
        f"Config `{Path(args.config).relative_to(ROOT) if Path(args.config).is_relative_to(ROOT) else args.config}`"
        f"{' with ' + ', '.join(args.set) if args.set else ''}; train spec `{spec}`; "
        f"{args.rounds} interleaved rounds x {args.steps} measured steps (+{args.warmup} warm-up) per contender, "
        "every contender on the same batches; medians over all measured steps, in ms.",
        "",
        f"Machine: {machine['cpu_model']}, {machine['logical_cpus']} logical CPUs "
        f"({machine['physical_cores']} cores, {machine['available_cpus']} available), torch threads {args.threads}, "
        f"torch {machine['torch']}, bf16: amx_bf16={machine['bf16']['amx_bf16']} "
        f"avx512_bf16={machine['bf16']['avx512_bf16']} (torch CPU capability {machine['bf16']['torch_cpu_capability']}). "
        f"Load average {load_before[0]:.2f} before, {load_after[0]:.2f} after ({wall:.0f} s): "
        "the machine is shared, compare the ratios, not the absolute times.",
        "",
        f"Code: working tree at {_git('rev-parse', '--short', 'HEAD')}"
        f"{' (uncommitted changes)' if _git('status', '--porcelain', '--untracked-files=no') else ''}"
        + (
            f"; baseline runs all of `damcseg_core` as of `{args.baseline_rev}` (model, trainer, optimizer, data, losses)."
            if args.baseline_rev and args.baseline_all
            else f"; baseline runs {', '.join(f'`{f}`' for f in BASELINE_FILES)} as of `{args.baseline_rev}`."
            if args.baseline_rev
            else "; every contender runs the working tree's code."
        ),
        "",
        "Contenders: "
        + "; ".join(
            {
                "baseline": "**baseline**: scenes rendered on the fly",
                "cache": f"**cache**: packed cache `{Path(cache).name}` (memory-mapped; building it took {t_cache:.0f} s "
                "incl. start-up, or was already there)",
                "cache+bf16": "**cache+bf16**: as cache, forward under `torch.autocast('cpu', dtype=torch.bfloat16)`",
                "cache+cl": "**cache+cl**: as cache, model and inputs in `torch.channels_last`",
                "cache+bf16+cl": "**cache+bf16+cl**: both",
            }[n]
            for n in names
        ),
        "",
        "| phase | " + " | ".join(names) + " | " + " | ".join(f"{base} / {n}" for n in names[1:]) + " |",
        "|---|" + "---:|" * (2 * len(names) - 1),
    ]
    for ph in PHASES:
        cells = [f"{med[n][ph]:.1f}" for n in names]
        ratios = [f"{med[base][ph] / med[n][ph]:.2f}x" if med[n][ph] > 0.05 else "-" for n in names[1:]]
        label = f"**{ph}**" if ph == "total" else ph
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    lines += [
        "",
        "Phase medians need not add up to the median total. Median step per round (ms): "
        + "; ".join(f"{n} {', '.join(f'{v:.0f}' for v in round_totals[n])}" for n in names),
        "",
        "**Step speed-up** (median total, same batches): "
        + ", ".join(
            f"{n} {med[base]['total'] / med[n]['total']:.2f}x ({1000.0 / med[n]['total']:.2f} steps/s vs "
            f"{1000.0 / med[base]['total']:.2f})"
            for n in names[1:]
        ),
    ]
    if args.autocast_iters:
        job = {"name": "autocast", "mode": "autocast", "iters": args.autocast_iters, "config": args.config,
               "overrides": args.set, "threads": args.threads, "spec": f"{spec},cache={cache}"}  # fmt: skip
        res = _run_worker(job)
        t = res["autocast"]
        rows = {v: {k: _median_ms(t[v][k]) for k in ("forward", "backward")} for v in t}
        for v in rows:
            rows[v]["forward+backward"] = _median_ms(
                [a + b for a, b in zip(t[v]["forward"], t[v]["backward"])]
            )
        lines += [
            "",
            f"## bf16 autocast and channels_last on this CPU: model forward + DSJL backward, {args.autocast_iters} rounds",
            "",
            "One process, one fixed batch; fp32, `torch.autocast('cpu', dtype=torch.bfloat16)` (forward only;",
            "the losses run in fp32) and `channels_last` (model and inputs) alternating every iteration; medians in ms.",
            "",
            "| | fp32 | bf16 | channels_last | fp32 / bf16 | fp32 / channels_last |",
            "|---|---:|---:|---:|---:|---:|",
            *[
                f"| {k} | {rows['fp32'][k]:.1f} | {rows['bf16'][k]:.1f} | {rows['channels_last'][k]:.1f} | "
                f"{rows['fp32'][k] / rows['bf16'][k]:.2f}x | {rows['fp32'][k] / rows['channels_last'][k]:.2f}x |"
                for k in ("forward", "backward", "forward+backward")
            ],
            "",
            "Total loss on that batch: "
            + ", ".join(f"{v} {res['losses'][v]:.4f}" for v in ("fp32", "bf16", "channels_last"))
            + ".",
        ]
    for n, table in tables.items():
        lines += [
            "",
            f"## torch.profiler, one step of {n} (top 25 by self CPU time)",
            "",
            "```",
            table.strip(),
            "```",
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = (
        Path(args.out)
        if args.out
        else ROOT / f"benchmarks/results/profile_train_{datetime.date.today().isoformat()}.md"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
