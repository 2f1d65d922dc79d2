"""Profile ``damcseg_edge`` and the :class:`~damcseg_core.inference.Predictor` on the CPU (issue #9).

Everything is compared *in one process*, interleaved round-robin, so that load from other
processes on a shared machine hits every contender alike; the printed numbers are medians and
the ratios are what to compare across runs, never the absolute times.

Prints:

1. ``model(inputs)`` of ``damcseg_edge`` (rgb + depth + thermal, detection, DSAF, CRF) against
   torchvision LRASPP-MobileNetV3-Large (19 classes) at 256x512, and optionally SegFormer-B0
   (``--segformer``, transformers) — FPS ratios.
2. ``Predictor.predict`` end to end on numpy frames (``--predict-size``, default 480x640).
3. A per-stage breakdown of one eager forward (module hooks and wrappers around the stage
   functions that ``damcseg.py`` calls; nested stages are indented inside their parent).
4. Missing-modality overhead and simple- vs complex-scene latency (``--scenarios``).
5. Optionally the top ops of ``torch.profiler`` (``--torch-profile``).

Usage::

    python benchmarks/profile_edge.py --iters 15
    python benchmarks/profile_edge.py --iters 15 --scenarios --segformer
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import statistics
import time
import types
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

import damcseg_core.inference.predictor as predictor_module
import damcseg_core.models.encoders as encoders
from damcseg_core.checkpoint import load_model
from damcseg_core.data.registry import build_dataset
from damcseg_core.inference import default_checkpoint, load_predictor, optimize_for_inference

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = default_checkpoint()
MODALITIES = ("rgb", "depth", "thermal")


# ---------------------------------------------------------------------- timing helpers
CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds, robust to a loaded machine)


def _time(fn: Callable[[], object]) -> float:
    start = CLOCK()
    fn()
    return (CLOCK() - start) * 1000.0


def interleaved(contenders: dict[str, list[Callable[[], object]]], iters: int, warmup: int = 2) -> dict:
    """Round-robin: each round runs every contender once on each of its frames; medians per call (ms)."""
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(warmup):
        for fns in contenders.values():
            for fn in fns:
                fn()
    for _ in range(iters):
        for name, fns in contenders.items():
            for fn in fns:
                times[name].append(_time(fn))
    return {k: statistics.median(v) for k, v in times.items()}


class StageTimer:
    """Wall time of named stages of one forward (module hooks + function wrappers), nesting-aware."""

    def __init__(self) -> None:
        self.total: dict[str, float] = collections.defaultdict(float)
        self.depth: dict[str, int] = {}
        self.order: list[str] = []
        self._stack: list[tuple[str, float]] = []
        self._undo: list[Callable[[], None]] = []

    def _enter(self, name: str) -> None:
        if name not in self.depth:
            self.depth[name] = len(self._stack)
            self.order.append(name)
        self._stack.append((name, time.perf_counter()))

    def _exit(self) -> None:
        name, start = self._stack.pop()
        self.total[name] += (time.perf_counter() - start) * 1000.0

    def module(self, name: str, mod: torch.nn.Module) -> None:
        h1 = mod.register_forward_pre_hook(lambda *_: self._enter(name))
        h2 = mod.register_forward_hook(lambda *_: self._exit())
        self._undo += [h1.remove, h2.remove]

    def function(self, owner: object, attr: str, name: str) -> None:
        original = getattr(owner, attr)

        def wrapped(*args, **kwargs):
            self._enter(name)
            try:
                return original(*args, **kwargs)
            finally:
                self._exit()

        setattr(owner, attr, wrapped)
        if isinstance(owner, types.ModuleType):
            self._undo.append(lambda: setattr(owner, attr, original))
        else:  # an instance attribute shadowing the bound method: deleting it restores the method
            self._undo.append(lambda: delattr(owner, attr))

    @contextlib.contextmanager
    def enter(self, name: str):
        self._enter(name)
        try:
            yield
        finally:
            self._exit()

    def remove(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def reset(self) -> None:
        self.total.clear()


def instrument(model: torch.nn.Module) -> StageTimer:
    """Hook the stages of ``damcseg.py``'s forward without touching the file."""
    import damcseg_core.models.refinement as rf  # the refinement stage calls these by module name

    t = StageTimer()
    t.module("forward (total)", model)
    t.module("refinement (everything after the dense outputs)", model.refinement)
    for m in MODALITIES:
        t.module(f"encoder {m}", model.encoders[m])
    if model.completion is not None:
        t.module("MCN completion", model.completion)
    t.module("modal attention", model.attention)
    t.module("backbone", model.backbone)
    t.module("det head (BiFPN + nets)", model.det_head)
    t.function(model.det_head, "postprocess", "det postprocess (decode + NMS)")
    t.module("global path", model.global_path)
    t.function(rf, "estimate_scene_complexity", "scene complexity")
    t.function(model.refinement.dsaf, "target_features", "DSAF target features")
    t.module("DSAF weights (eq. 6-9)", model.refinement.dsaf)
    t.function(rf, "gate_features", "gate features")
    t.module("local path (roi_align + sub-net + branches)", model.local_path)
    t.module("local sub-net trunk", model.local_path.trunk)
    t.module("local branches (gated)", model.local_path.branches)
    t.function(rf, "paste_rois", "paste_rois")
    t.module("depth-prior path", model.refinement.post_path)
    t.function(model.refinement.dsaf, "weight_maps", "DSAF weight maps")
    t.function(model.refinement.dsaf, "fuse", "DSAF fuse")
    if model.refinement.crf is not None:
        t.module("CRF", model.refinement.crf)
    return t


# ---------------------------------------------------------------------- inputs
def model_inputs(frames: int, size: str, seed: int) -> list[dict]:
    ds = build_dataset(f"synthetic:frames={frames},size={size},seed={seed}")
    out = []
    for i in range(len(ds)):
        s = ds[i]
        out.append({"inputs": {m: s[m][None] for m in MODALITIES if m in s}, "boxes": len(s["boxes"])})
    return out


def numpy_frame(inputs: dict[str, torch.Tensor], hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """Canonical tensors -> Predictor numpy inputs at ``hw`` (sensor-like resolution)."""
    h, w = hw
    out = {}
    rgb = (inputs["rgb"][0].permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    out["rgb"] = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    out["depth"] = cv2.resize(inputs["depth"][0, 0].numpy(), (w, h), interpolation=cv2.INTER_NEAREST)
    out["thermal"] = cv2.resize(inputs["thermal"][0, 0].numpy(), (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def lraspp() -> torch.nn.Module:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=19).eval()


def segformer_b0() -> torch.nn.Module:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    cfg = SegformerConfig(num_labels=19)  # defaults are the B0 sizes
    return SegformerForSemanticSegmentation(cfg).eval()


# ---------------------------------------------------------------------- reports
def report_ratio(model, frames, args) -> None:
    base = lraspp()
    rgbs = [f["inputs"]["rgb"] for f in frames]
    contenders = {
        "damcseg_edge model(inputs)": [lambda x=f["inputs"]: model(x) for f in frames],
        "LRASPP-MBv3-L": [lambda x=x: base(x) for x in rgbs],
    }
    if args.segformer:
        sf = segformer_b0()
        contenders["SegFormer-B0"] = [lambda x=x: sf(pixel_values=x) for x in rgbs]
    med = interleaved(contenders, args.iters)
    ours = med["damcseg_edge model(inputs)"]
    print(f"\n== model forward, {args.size}, {len(frames)} frames x {args.iters} rounds, median ms ==")
    for k, v in med.items():
        print(f"  {k:32s} {v:8.1f} ms  {1000 / v:6.2f} FPS")
    print(f"  FPS ratio edge / LRASPP     = {med['LRASPP-MBv3-L'] / ours:.3f}  (goal >= 1.0)")
    if args.segformer:
        print(f"  FPS ratio edge / SegFormer  = {med['SegFormer-B0'] / ours:.3f}  (goal >= 4.0)")


def _full_upsample_argmax(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The Predictor's previous post-processing: all K maps up-sampled, then arg-max."""
    up = torch.nn.functional.interpolate(logits[None], size=size, mode="bilinear", align_corners=False)
    return up[0].max(dim=0)[1]


def report_before_after(model, frames, args) -> None:
    """The issue #9 changes against the previous code paths, interleaved in one process."""
    fast = optimize_for_inference(model)
    base = lraspp()
    hw = tuple(int(v) for v in args.predict_size.split("x"))
    nps = [numpy_frame(f["inputs"], hw) for f in frames]
    plain_pred, fast_pred = load_predictor(model=model, optimize=False), load_predictor(model=model)

    def with_layout(on: bool, fn: Callable[[], object]) -> Callable[[], object]:
        def call():
            encoders.EVAL_CHANNELS_LAST = on
            return fn()

        return call

    def old_predict(x):
        encoders.EVAL_CHANNELS_LAST = False
        predictor_module.upsampled_argmax = _full_upsample_argmax
        try:
            return plain_pred.predict(x)
        finally:
            predictor_module.upsampled_argmax = upsampled
            encoders.EVAL_CHANNELS_LAST = True

    upsampled = predictor_module.upsampled_argmax
    med = interleaved(
        {
            "model, before (NCHW)": [with_layout(False, lambda x=f["inputs"]: model(x)) for f in frames],
            "model + channels-last": [with_layout(True, lambda x=f["inputs"]: model(x)) for f in frames],
            "+ folded BN (Predictor's copy)": [
                with_layout(True, lambda x=f["inputs"]: fast(x)) for f in frames
            ],
            "LRASPP-MBv3-L": [lambda x=f["inputs"]["rgb"]: base(x) for f in frames],
            "predict, before": [lambda x=x: old_predict(x) for x in nps],
            "predict, after": [lambda x=x: fast_pred.predict(x) for x in nps],
        },
        args.iters,
    )
    encoders.EVAL_CHANNELS_LAST = True
    ref = med["LRASPP-MBv3-L"]
    print(
        f"\n== before / after, {len(frames)} frames x {args.iters} rounds, median ms, FPS ratio vs LRASPP =="
    )
    for k, v in med.items():
        print(f"  {k:32s} {v:8.1f} ms  ratio {ref / v:6.3f}")


def report_predictor(model, frames, args) -> None:
    hw = tuple(int(v) for v in args.predict_size.split("x"))
    pred = load_predictor(model=model)
    base = lraspp()
    nps = [numpy_frame(f["inputs"], hw) for f in frames]
    rgbs = [f["inputs"]["rgb"] for f in frames]
    med = interleaved(
        {
            "Predictor.predict": [lambda x=x: pred.predict(x) for x in nps],
            "damcseg_edge model(inputs)": [lambda x=f["inputs"]: model(x) for f in frames],
            "LRASPP-MBv3-L": [lambda x=x: base(x) for x in rgbs],
        },
        args.iters,
    )
    print(f"\n== Predictor.predict on {hw[0]}x{hw[1]} numpy frames (model at {args.size}), median ms ==")
    for k, v in med.items():
        print(f"  {k:32s} {v:8.1f} ms")
    print(f"  FPS ratio predict / LRASPP  = {med['LRASPP-MBv3-L'] / med['Predictor.predict']:.3f}")
    # Pre/post-processing split of one predict call.
    x = nps[0]
    t_all, t_pre, t_model = [], [], []
    for _ in range(max(5, args.iters // 2)):
        s = time.perf_counter()
        pred._check(x)
        tensors, (h, w) = pred._to_tensors(x)
        pred._resize_pad(tensors, (h, w))
        t_pre.append((time.perf_counter() - s) * 1000)
        res = pred.predict(x)
        t_all.append((time.perf_counter() - s) * 1000 - t_pre[-1])
        t_model.append(res.inference_ms)
    pre, tot, mod = (statistics.median(v) for v in (t_pre, t_all, t_model))
    print(f"  predict split: pre {pre:.1f} ms | model {mod:.1f} ms | post {tot - pre - mod:.1f} ms")


def report_stages(model, frames, args) -> None:
    timer = instrument(model)
    runs: dict[str, list[float]] = collections.defaultdict(list)
    for _ in range(2):  # warm-up
        for f in frames:
            model(f["inputs"])
    for _ in range(max(3, args.iters // 3)):
        for f in frames:
            timer.reset()
            model(f["inputs"])
            for k, v in timer.total.items():
                runs[k].append(v)
    order, depth = timer.order, timer.depth
    timer.remove()
    total = statistics.median(runs["forward (total)"])
    print(
        f"\n== per-stage breakdown of model(inputs), median over frames and rounds (ms, share of {total:.1f}) =="
    )
    top = 0.0
    for name in order:
        v = statistics.median(runs[name]) if len(runs[name]) else 0.0
        if depth[name] == 1:
            top += v
        print(f"  {'  ' * depth[name]}{name:48s} {v:7.2f} ms  {100 * v / total:5.1f} %")
    print(
        f"  {'  '}{'(untimed glue at top level)':48s} {total - top:7.2f} ms  {100 * (total - top) / total:5.1f} %"
    )


def report_scenarios(model, frames, args) -> None:
    """Missing modality overhead and simple vs complex scene latency with the gate's decisions."""
    subsets = {
        "all": MODALITIES,
        "no rgb": ("depth", "thermal"),
        "no depth": ("rgb", "thermal"),
        "no thermal": ("rgb", "depth"),
    }
    contenders = {
        name: [lambda x={m: f["inputs"][m] for m in keep}: model(x) for f in frames]
        for name, keep in subsets.items()
    }
    med = interleaved(contenders, args.iters)
    print("\n== missing-modality overhead (model forward, median ms) ==")
    for k, v in med.items():
        print(f"  {k:12s} {v:8.1f} ms  {100 * (v / med['all'] - 1):+6.1f} %")
    # Scene categories as the model sees them.
    cats, n_boxes = [], []
    for f in frames:
        out = model(f["inputs"])
        cats.append(int(out.scene.category[0]))
        n_boxes.append(len(out.boxes[0]))
    print("  frames: category", cats, "detections", n_boxes)
    simple = [f for f, n in zip(frames, n_boxes) if n == min(n_boxes)]
    complex_ = [f for f, n in zip(frames, n_boxes) if n == max(n_boxes)]
    med = interleaved(
        {
            "fewest boxes": [lambda x=f["inputs"]: model(x) for f in simple],
            "most boxes": [lambda x=f["inputs"]: model(x) for f in complex_],
        },
        args.iters,
    )
    print(
        f"  fewest-box frames ({min(n_boxes)}) {med['fewest boxes']:.1f} ms vs most-box frames "
        f"({max(n_boxes)}) {med['most boxes']:.1f} ms: simple {100 * (1 - med['fewest boxes'] / med['most boxes']):.1f} % faster"
    )


def report_torch_profile(model, frames, args) -> None:
    from torch.profiler import ProfilerActivity, profile

    for f in frames[:2]:
        model(f["inputs"])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for f in frames:
            model(f["inputs"])
    print(f"\n== torch.profiler, {len(frames)} forwards, top ops by self CPU time ==")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(CHECKPOINT))
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="256x512")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--iters", type=int, default=15, help="interleaved rounds (median over frames x rounds)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time; with --threads 1 it measures work, not the machine's load",
    )
    ap.add_argument("--predict-size", default="480x640")
    ap.add_argument("--segformer", action="store_true", help="also time SegFormer-B0 (transformers)")
    ap.add_argument("--scenarios", action="store_true", help="missing modalities and simple/complex scenes")
    ap.add_argument("--stages-optimized", action="store_true", help="break down the Predictor's folded copy")
    ap.add_argument("--before-after", action="store_true", help="issue #9 changes vs the previous paths")
    ap.add_argument("--torch-profile", action="store_true", help="print torch.profiler top ops")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--skip", default="", help="comma list of sections to skip: ratio,predict,stages")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    skip = set(filter(None, args.skip.split(",")))
    model = load_model(args.checkpoint, "cpu").eval()
    frames = model_inputs(args.frames, args.size, args.seed)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cv2 threads {cv2.getNumThreads()}")
    with torch.inference_mode():
        if "ratio" not in skip:
            report_ratio(model, frames, args)
        if "predict" not in skip:
            report_predictor(model, frames, args)
        if "stages" not in skip:
            report_stages(optimize_for_inference(model) if args.stages_optimized else model, frames, args)
        if args.before_after:
            report_before_after(model, frames, args)
        if args.scenarios:
            report_scenarios(model, frames, args)
        if args.torch_profile:
            report_torch_profile(model, frames, args)


if __name__ == "__main__":
    main()
