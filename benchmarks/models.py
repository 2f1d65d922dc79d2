"""What the benchmark suite runs: peers (random init, no downloads) and our cases.

Every case is built by :func:`build_case` into a :class:`Bench`: a module (for parameters), a
``step(i)`` that runs one timed call on input ``i`` of a fixed input set, and
``flop_step(i)`` the same call to count FLOPs with. Peers get one ``[1, 3, H, W]`` tensor; our
models get realistic synthetic rgb / depth / thermal frames (``damcseg_core.data.synthetic``)
so detection, scene complexity, branch gating, DSAF, the local path and the CRF do real work.

Case names (``CASE_NAMES``):

* peers: ``lraspp_mbv3l`` / ``dlv3_mbv3l`` (torchvision), ``smp_dlv3p_mbv2`` /
  ``smp_dlv3p_r50`` (segmentation_models_pytorch DeepLabV3+), ``segformer_b0`` (transformers,
  a ``SegformerConfig`` equal to nvidia/mit-b0; logits up-sampled to the input size as the
  other peers do inside their forward). All with 19 classes.
* ours, model forward ``model(inputs)`` under ``torch.inference_mode()`` (what the peers'
  numbers are compared with): ``edge`` (shipped checkpoint), ``edge-no_<m>`` (modality ``m``
  missing), ``paper`` / ``paper-no_<m>`` (random weights: no checkpoint exists; random weights
  detect nothing, so the frame's ground-truth boxes are given as ROIs to make the local and post
  paths do the work a trained model would), ``tiny`` / ``tiny-no_thermal`` (quick mode).
* gating (edge, shipped checkpoint): ``edge-simple`` (sparse day scenes, the gate decides),
  ``edge-simple-forced`` (same frames, every branch on every ROI: the gate threshold is set to
  1e-9 after building), ``edge-complex`` (crowded scenes, the gate decides).
* ``edge-predictor``: ``Predictor.predict`` on numpy frames (checks, conversion, resize/pad to the
  model's ``input_size``, forward, logits back to the input size, arg-max, boxes): what the ROS
  node calls.
* ``edge-onnxruntime``: ``damcseg_core.export`` (when installed) through the Predictor.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from damcseg_core import MODALITIES
from damcseg_core.inference import default_checkpoint, load_predictor

__all__ = [
    "CASE_NAMES",
    "EDGE_CHECKPOINT",
    "PEER_CASES",
    "Bench",
    "CaseUnavailable",
    "build_case",
    "case_info",
    "check_installed",
    "frame_set",
]

EDGE_CHECKPOINT = default_checkpoint()
BENCH_EXTRA = "pip install -e .[bench]"
NUM_CLASSES = 19
FRAME_SEED = 2024
FRAMES_PER_SET = 4

# Synthetic frame sets (registry spec options without size): mixed conditions and crowd for the
# headline numbers, nearly empty day scenes vs full crowds for the gating comparison.
FRAME_SETS = {
    "mixed": "",
    "simple": ",crowd=0+0,conditions=day",
    "complex": ",crowd=1+1,conditions=day+dusk",
}


class CaseUnavailable(RuntimeError):
    """A case cannot be built here (a peer package or the ONNX backend is not installed)."""


@dataclasses.dataclass
class Bench:
    """One built case.

    Attributes:
        module: the ``nn.Module`` whose parameters are counted.
        step: runs one timed call on input ``i`` (modulo the input set).
        flop_step: the same work, for ``FlopCounterMode`` (the Predictor's numpy work has no FLOPs
            counted; its model forward does).
        n_inputs: size of the input set ``step`` cycles through.
        note: what was run (weights, inputs).
        probe: optional callable returning per-call facts of the last step (ROIs, branch use).
        model_size: ``(H, W)`` the model runs at when the case resizes its input (the
            Predictor resizes to the model's ``input_size``); None: at the input size.
    """

    module: torch.nn.Module
    step: Callable[[int], Any]
    flop_step: Callable[[int], Any]
    n_inputs: int
    note: str
    probe: Callable[[], dict[str, float]] | None = None
    model_size: tuple[int, int] | None = None  # where the model runs when not at the input size


# ---------------------------------------------------------------------- peers
def _need(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise CaseUnavailable(f"not installed: {package} ({BENCH_EXTRA})")


def _lraspp() -> torch.nn.Module:
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)


def _dlv3_mbv3() -> torch.nn.Module:
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    return deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False
    )


def _smp_dlv3p(encoder: str) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        _need("segmentation_models_pytorch")
        import segmentation_models_pytorch as smp

        return smp.DeepLabV3Plus(encoder_name=encoder, encoder_weights=None, classes=NUM_CLASSES)

    return build


class _SegformerFullRes(torch.nn.Module):
    """SegFormer returns H/4 logits; up-sample to the input size like the other peers do."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        # nvidia/mit-b0, written out so nothing is fetched.
        cfg = SegformerConfig(
            num_channels=3,
            num_encoder_blocks=4,
            depths=[2, 2, 2, 2],
            sr_ratios=[8, 4, 2, 1],
            hidden_sizes=[32, 64, 160, 256],
            patch_sizes=[7, 3, 3, 3],
            strides=[4, 2, 2, 2],
            num_attention_heads=[1, 2, 5, 8],
            mlp_ratios=[4, 4, 4, 4],
            decoder_hidden_size=256,
            num_labels=NUM_CLASSES,
        )
        self.net = SegformerForSemanticSegmentation(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(pixel_values=x).logits
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _segformer_b0() -> torch.nn.Module:
    _need("transformers")
    return _SegformerFullRes()


PEERS: dict[str, tuple[str, Callable[[], torch.nn.Module]]] = {
    "lraspp_mbv3l": ("torchvision LRASPP MobileNetV3-Large", _lraspp),
    "dlv3_mbv3l": ("torchvision DeepLabV3 MobileNetV3-Large", _dlv3_mbv3),
    "smp_dlv3p_mbv2": ("smp DeepLabV3+ MobileNetV2", _smp_dlv3p("mobilenet_v2")),
    "smp_dlv3p_r50": ("smp DeepLabV3+ ResNet50", _smp_dlv3p("resnet50")),
    "segformer_b0": ("SegFormer-B0 (transformers)", _segformer_b0),
}
PEER_CASES = tuple(PEERS)
TORCHVISION_PEERS = ("lraspp_mbv3l", "dlv3_mbv3l")


def check_installed(name: str) -> None:
    """Raise :class:`CaseUnavailable` when peer ``name``'s package is missing."""
    package = {"smp_dlv3p_mbv2": "segmentation_models_pytorch", "smp_dlv3p_r50": "segmentation_models_pytorch",
               "segformer_b0": "transformers"}.get(name, "torchvision")  # fmt: skip
    _need(package)


def _peer_bench(name: str, size: tuple[int, int]) -> Bench:
    _, build = PEERS[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build().eval()
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))

    def step(i: int) -> Any:
        with torch.inference_mode():
            out = net(x)
        return out["out"] if isinstance(out, dict) else out

    return Bench(net, step, step, 1, "random init, [1,3,H,W] input")


# ---------------------------------------------------------------------- ours
_FRAME_CACHE: dict[tuple[str, tuple[int, int]], list[dict[str, Any]]] = {}


def frame_set(kind: str, size: tuple[int, int], n: int = FRAMES_PER_SET) -> list[dict[str, Any]]:
    """``n`` synthetic samples (canonical tensors, boxes, labels) of one :data:`FRAME_SETS` kind."""
    key = (kind, size, n)
    if key not in _FRAME_CACHE:
        from damcseg_core.data.registry import build_dataset

        spec = f"synthetic:frames={n},size={size[0]}x{size[1]},seed={FRAME_SEED}{FRAME_SETS[kind]}"
        ds = build_dataset(spec)
        _FRAME_CACHE[key] = [ds[i] for i in range(len(ds))]
    return _FRAME_CACHE[key]


def _load_edge() -> tuple[torch.nn.Module, str]:
    from damcseg_core.checkpoint import load_model

    if EDGE_CHECKPOINT.is_file():
        return load_model(EDGE_CHECKPOINT, "cpu", expected_name="damcseg_edge"), "shipped checkpoint"
    from damcseg_core.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model("damcseg_edge").eval(), "RANDOM init (no checkpoint found)"


def _random_model(name: str) -> torch.nn.Module:
    from damcseg_core.models import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model(name).eval()


def _branch_probe(model: torch.nn.Module) -> Callable[[], dict[str, float]]:
    """Count ROIs and branch evaluations of the last forward (hook on the gated branches)."""
    seen: dict[str, float] = {}

    def hook(_mod: Any, _inp: Any, out: Any) -> None:
        active = out.active
        seen["rois"] = float(active.shape[0])
        seen["branch_evals"] = float(active.sum())

    model.local_path.branches.register_forward_hook(hook)

    def probe() -> dict[str, float]:
        facts = {"rois": 0.0, "branch_evals": 0.0, **seen}
        seen.clear()
        return facts

    return probe


def _ours_forward_bench(
    model: torch.nn.Module,
    size: tuple[int, int],
    frames_kind: str,
    modalities: tuple[str, ...],
    gt_rois: bool,
    note: str,
    n_frames: int,
) -> Bench:
    frames = frame_set(frames_kind, size, n_frames)
    inputs = [{m: f[m][None] for m in modalities} for f in frames]
    rois = [([f["boxes"]], [f["labels"]]) if gt_rois else (None, None) for f in frames]
    last: dict[str, float] = {}

    def step(i: int) -> Any:
        k = i % len(inputs)
        with torch.inference_mode():
            out = model(inputs[k], roi_boxes=rois[k][0], roi_labels=rois[k][1])
        last["category"] = float(out.scene.category[0])
        last["detections"] = float(len(out.boxes[0]))
        return out

    gate = _branch_probe(model)

    def probe() -> dict[str, float]:
        return {**last, **gate()}

    return Bench(model, step, step, len(inputs), note, probe)


def _predictor_bench(
    predictor: Any,
    size: tuple[int, int],
    note: str,
    n_frames: int,
    torch_model: torch.nn.Module | None = None,
) -> Bench:
    """``Predictor.predict`` on numpy frames; FLOPs of ``torch_model`` (default the predictor's)."""
    torch_model = predictor.model if torch_model is None else torch_model
    frames = frame_set("mixed", size, n_frames)
    arrays = [
        {
            "rgb": (f["rgb"].permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8),
            "depth": f["depth"][0].numpy().astype(np.float32),
            "thermal": f["thermal"][0].numpy().astype(np.float32),
        }
        for f in frames
    ]
    h_in, w_in = predictor.input_size
    model_inputs = [{m: F.interpolate(f[m][None], size=(h_in, w_in)) for m in MODALITIES} for f in frames]

    def step(i: int) -> Any:
        return predictor.predict(arrays[i % len(arrays)])

    def flop_step(i: int) -> Any:
        with torch.inference_mode():
            return torch_model(model_inputs[i % len(model_inputs)])

    note = f"{note}; model runs at {h_in}x{w_in}"
    return Bench(torch_model, step, flop_step, len(arrays), note, model_size=(h_in, w_in))


def _modalities_without(missing: str | None) -> tuple[str, ...]:
    return tuple(m for m in MODALITIES if m != missing)


def _parse_ours(name: str) -> tuple[str, str | None]:
    """``edge-no_depth`` -> (``edge``, ``depth``); ``edge`` -> (``edge``, None)."""
    base, _, rest = name.partition("-")
    if rest.startswith("no_"):
        return base, rest[3:]
    return base, None


OURS_BASES = ("edge", "paper", "tiny")
OURS_FIXED = (
    "edge-simple",
    "edge-simple-forced",
    "edge-complex",
    "edge-predictor",
    "tiny-predictor",
    "edge-onnxruntime",
)
CASE_NAMES = (
    *PEER_CASES,
    *(f"{b}{s}" for b in OURS_BASES for s in ("", *(f"-no_{m}" for m in MODALITIES))),
    *OURS_FIXED,
)


def case_info(name: str) -> dict[str, str]:
    """Group and a human label of a case name."""
    if name in PEERS:
        return {"group": "peer", "label": PEERS[name][0]}
    if name in OURS_FIXED:
        label = {
            "edge-simple": "damcseg_edge, simple scenes, gate decides",
            "edge-simple-forced": "damcseg_edge, simple scenes, all branches forced on",
            "edge-complex": "damcseg_edge, complex scenes, gate decides",
            "edge-predictor": "damcseg_edge Predictor.predict (numpy in, mask out)",
            "tiny-predictor": "damcseg_tiny Predictor.predict (numpy in, mask out)",
            "edge-onnxruntime": "damcseg_edge via onnxruntime (Predictor)",
        }[name]
        return {"group": "gating" if "simple" in name or "complex" in name else "ours", "label": label}
    base, missing = _parse_ours(name)
    label = f"damcseg_{base}, " + (f"{missing} missing" if missing else "rgb+depth+thermal")
    return {"group": "ours", "label": label}


def build_case(name: str, size: tuple[int, int], n_frames: int = FRAMES_PER_SET) -> Bench:
    """Build one case at input ``size`` (H, W).

    Raises:
        CaseUnavailable: the case's package is not installed ("not installed: ...").
        KeyError: an unknown case name (the message lists the valid ones).
    """
    if name not in CASE_NAMES:
        raise KeyError(f"unknown case {name!r}; valid: {', '.join(CASE_NAMES)}")
    if name in PEERS:
        return _peer_bench(name, size)
    if name in ("edge-simple", "edge-simple-forced", "edge-complex"):
        model, weights = _load_edge()
        kind = "complex" if name == "edge-complex" else "simple"
        if name.endswith("forced"):
            # The config checks threshold in (0, 1) when built; set afterwards, every gate
            # probability passes and every branch runs on every ROI through the eval code path.
            model.local_path.branches.cfg.threshold = 1e-9
        return _ours_forward_bench(
            model, size, kind, MODALITIES, False, f"{weights}, {kind} frames", n_frames
        )
    if name == "edge-predictor":
        model, weights = _load_edge()
        return _predictor_bench(load_predictor(model=model), size, f"{weights}, numpy frames", n_frames)
    if name == "tiny-predictor":
        predictor = load_predictor(model=_random_model("damcseg_tiny"))
        return _predictor_bench(predictor, size, "RANDOM init, numpy frames", n_frames)
    if name == "edge-onnxruntime":
        return _onnxruntime_bench(size, n_frames)
    base, missing = _parse_ours(name)
    modalities = _modalities_without(missing)
    if base == "edge":
        model, weights = _load_edge()
        return _ours_forward_bench(model, size, "mixed", modalities, False, weights, n_frames)
    model = _random_model(f"damcseg_{base}")
    gt = base == "paper"
    note = "RANDOM init" + (", ground-truth boxes as ROIs" if gt else "")
    return _ours_forward_bench(model, size, "mixed", modalities, gt, note, n_frames)


def _onnxruntime_bench(size: tuple[int, int], n_frames: int) -> Bench:
    """damcseg_edge exported to ONNX and run by onnxruntime through the Predictor."""
    if importlib.util.find_spec("damcseg_core.export") is None:
        raise CaseUnavailable("skipped: damcseg_core.export (ONNX backend) is not in this checkout")
    try:
        import onnxruntime

        from damcseg_core.export import export_onnx
    except ImportError as exc:
        raise CaseUnavailable(f"skipped: {exc} ({BENCH_EXTRA})") from exc
    import tempfile

    model, weights = _load_edge()
    folder = Path(tempfile.mkdtemp(prefix="damcseg_bench_onnx_"))
    # One graph: all three modalities at the model's input size (what the Predictor feeds).
    export_onnx(model, folder, modalities=[MODALITIES])
    note = f"{weights}, exported graph run by onnxruntime {onnxruntime.__version__}, numpy frames"
    # Parameters and FLOPs are those of the exported torch model.
    return _predictor_bench(
        load_predictor("onnxruntime", onnx_path=folder), size, note, n_frames, torch_model=model
    )
