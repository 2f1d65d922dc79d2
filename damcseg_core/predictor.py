"""Predictor: numpy frames in, a typed :class:`PredictionResult` out (``docs/interfaces.md``).

This is what the ROS node, the demo and evaluation call. It owns everything between raw
sensor arrays and the model:

1. **Checks** the input dict (keys from ``MODALITIES``, dtypes, shapes) with messages that
   say how to fix the input.
2. **Converts** to canonical units: rgb ``uint8 HxWx3 -> [0, 1]``; depth metres with
   NaN/inf/negative -> 0 (invalid); thermal full-scale normalised float.
3. **Aligns** modalities: depth / thermal of another size than the reference frame (rgb, else
   depth, else thermal) are resized to it (nearest for depth, so no fake depths are blended
   across object borders; bilinear for thermal).
4. **Resizes** to the model's configured ``input_size`` keeping the aspect ratio: the frame is
   scaled by ``min(H_in / H, W_in / W)`` (bilinear + antialias for rgb/thermal, nearest for
   depth), then padded at the bottom/right to the next multiple of 32 (edge replication for
   rgb/thermal so the padding adds no edges; depth padded with 0 = invalid).
5. **Maps back**: logits are cropped to the unpadded area and bilinearly resized to the input
   resolution before the arg-max (:func:`upsampled_argmax` interpolates only where neighbouring
   source pixels disagree, which gives the same mask); boxes are divided by the scale and
   clipped to the image.

The forward pass runs on :func:`optimize_for_inference`'s copy of the model (BatchNorm folded
into the convolutions); ``Predictor.model`` is the model as given.

``inference_ms`` is the wall time of the model forward pass alone (pre/post-processing not
included; CUDA is synchronised before reading the clock).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from damcseg_core import MODALITIES
from damcseg_core.data.classes import CITYSCAPES_CLASSES, IGNORE_INDEX

__all__ = ["PredictionResult", "Predictor", "fold_batchnorm", "optimize_for_inference", "upsampled_argmax"]


@dataclasses.dataclass
class PredictionResult:
    """One frame's prediction, all at input resolution (``docs/interfaces.md``).

    Attributes:
        mask: ``HxW`` uint8 Cityscapes train ids (255 = unknown).
        boxes: ``[N, 4]`` float32 xyxy pixels.
        scores: ``[N]`` float32 detection scores.
        labels: ``[N]`` int64 train ids.
        scene_score: scene complexity S (eq. 5).
        target_density / occlusion / edge_density: its parts D, O, E.
        category: 0 simple, 1 moderate, 2 complex.
        branch_weights: ``(3,)`` float32 image-level (alpha, beta, gamma) after DSAF.
        modality_weights: ``(3,)`` float32 reliability of (rgb, depth, thermal).
        present: modalities given.
        completed: modalities whose features the model predicted (MCN).
        inference_ms: model forward time in milliseconds.
        class_names: the 19 class names, indexed by train id.
    """

    mask: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    scene_score: float
    target_density: float
    occlusion: float
    edge_density: float
    category: int
    branch_weights: np.ndarray
    modality_weights: np.ndarray
    present: tuple[str, ...]
    completed: tuple[str, ...]
    inference_ms: float
    class_names: tuple[str, ...] = CITYSCAPES_CLASSES


def _as_tensor(arr: np.ndarray) -> torch.Tensor:
    """Wrap ``arr`` without a copy when possible.

    Read-only arrays (zero-copy views of ROS message buffers) are copied first: torch cannot
    wrap them without a warning, and the copy is cheap next to the float conversion that follows.
    """
    arr = np.ascontiguousarray(arr)
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


def _bilinear_taps(
    n_in: int, n_out: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices ``i0, i1`` and weight ``lam`` of ``i1`` per output index, as
    ``F.interpolate(mode="bilinear", align_corners=False)`` computes them."""
    src = ((torch.arange(n_out, dtype=torch.float32, device=device) + 0.5) * (n_in / n_out) - 0.5).clamp_min(
        0
    )
    i0 = src.long().clamp_max(n_in - 1)
    i1 = (i0 + 1).clamp_max(n_in - 1)
    return i0, i1, src - i0


def _channel_argmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(dim=0)`` for ``[K, ...]``: a running max over K contiguous maps.

    ``argmax`` along the outer, strided dimension is several times slower on CPU; strict ``>``
    keeps the first maximal class on ties, as ``argmax`` does.
    """
    best = logits[0].clone()
    idx = torch.zeros(logits.shape[1:], dtype=torch.int64, device=logits.device)
    for c in range(1, logits.shape[0]):
        better = logits[c] > best
        best = torch.maximum(best, logits[c])
        idx.masked_fill_(better, c)
    return idx


def upsampled_argmax(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(logits[None], size, mode="bilinear").argmax(1)[0]`` without up-sampling all K maps.

    A bilinear output pixel is a convex combination of its 4 source pixels' logit vectors; when
    those 4 agree on the arg-max class ``c``, ``c`` is also the arg-max of the combination
    (``l_i[c] >= l_i[k]`` for every corner ``i`` survives the weighted sum). So only output pixels
    whose corners disagree (class borders, a few % of the frame) are interpolated, over all K
    classes; the rest copy the source arg-max. The result equals the full up-sampling except for
    exact ties between two classes (float rounding of the weights).

    Args:
        logits: ``[K, h, w]`` float logits.
        size: output ``(H, W)``.

    Returns:
        ``[H, W]`` int64 class indices.
    """
    k, h, w = logits.shape
    if (h, w) == tuple(size):
        return _channel_argmax(logits)
    out_h, out_w = size
    dev = logits.device
    y0, y1, ly = _bilinear_taps(h, out_h, dev)
    x0, x1, lx = _bilinear_taps(w, out_w, dev)
    src = _channel_argmax(logits)  # [h, w]
    # The 2x2 block (y..y+1, x..x+1), edge-replicated, of every source pixel: one arg-max class?
    right = torch.cat([src[:, 1:], src[:, -1:]], dim=1)
    down = torch.cat([src[1:], src[-1:]], dim=0)
    diag = torch.cat([right[1:], right[-1:]], dim=0)
    mixed = (src != right) | (src != down) | (src != diag)
    # Mark mixed blocks with -1 and pick every output pixel's block with two 1-D gathers.
    idx = src.masked_fill(mixed, -1).index_select(0, y0).index_select(1, x0)
    ys, xs = (idx < 0).nonzero(as_tuple=True)
    if ys.numel():
        # Per-pixel bilinear blend of the 4 corner vectors, as rows [M, K] (arg-max along rows is fast).
        flat = logits.reshape(k, h * w).t()
        a0, a1, wy = y0[ys] * w, y1[ys] * w, ly[ys, None]
        b0, b1, wx = x0[xs], x1[xs], lx[xs, None]
        top = flat[a0 + b0] * (1 - wx) + flat[a0 + b1] * wx
        bottom = flat[a1 + b0] * (1 - wx) + flat[a1 + b1] * wx
        idx[ys, xs] = (top * (1 - wy) + bottom * wy).argmax(dim=1)
    return idx


def _example_inputs(
    model: nn.Module,
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """All-modality inputs at the model's input size plus one ROI, so every path runs once."""
    h, w = (math.ceil(v / 32) * 32 for v in model.config.input_size)
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    inputs = {
        "rgb": torch.rand(1, 3, h, w, generator=gen),
        "depth": torch.rand(1, 1, h, w, generator=gen) * 40 + 1,
        "thermal": torch.rand(1, 1, h, w, generator=gen),
    }
    box = torch.tensor([[w * 0.25, h * 0.25, w * 0.5, h * 0.75]])
    return {k: v.to(dev) for k, v in inputs.items()}, [box.to(dev)], [torch.tensor([13], device=dev)]


def _conv_bn_pairs(model: nn.Module, run: Any) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, bn) pairs where the BatchNorm's input is always exactly that conv's output.

    Found by one traced forward (``run()``) rather than by module names, so timm blocks, the
    model's own conv blocks and any later refactoring are covered alike. A conv shared by several
    BatchNorms (the detection head's per-level norms) is not paired.
    """
    produced: dict[int, nn.Conv2d] = {}
    keep: list[torch.Tensor] = []  # keeps outputs alive so their ids stay unique during the trace
    seen: dict[nn.Module, set] = {}
    calls: dict[nn.Module, int] = {}

    def conv_hook(mod, _inp, out):
        produced[id(out)] = mod
        keep.append(out)
        calls[mod] = calls.get(mod, 0) + 1

    def bn_hook(mod, inp):
        seen.setdefault(mod, set()).add(produced.get(id(inp[0])))
        calls[mod] = calls.get(mod, 0) + 1

    handles = []
    for mod in model.modules():
        if type(mod) is nn.Conv2d:
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.BatchNorm2d):
            handles.append(mod.register_forward_pre_hook(bn_hook))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    pairs, used = [], set()
    for bn, convs in seen.items():
        (conv,) = convs if len(convs) == 1 else (None,)
        if conv is None or conv in used or calls[conv] != calls[bn]:
            continue
        if bn.running_mean is None or not bn.affine:
            continue
        used.add(conv)
        pairs.append((conv, bn))
    return pairs


def _replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for parent in root.modules():
        for name, child in list(parent.named_children()):
            if child is old:
                setattr(parent, name, new)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, run: Any = None) -> nn.Module:
    """Fold every eval-mode BatchNorm that directly follows a convolution into that convolution, in place.

    ``conv -> bn`` becomes one conv with ``w' = w * gamma / sqrt(var + eps)`` and
    ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``; the BatchNorm is replaced by its
    activation (timm's ``BatchNormAct2d``) or an identity. Only for inference: the folded model
    has a different ``state_dict`` and no batch statistics, so call it on a copy
    (:func:`optimize_for_inference` does) and never save or train the result.

    Args:
        model: a module in eval mode.
        run: a callable running one forward of ``model`` that reaches every conv; default: a
            DAMCSeg forward with all modalities and one ROI at ``model.config.input_size``.

    Returns:
        ``model`` itself.
    """
    if run is None:
        inputs, boxes, labels = _example_inputs(model)

        def run():
            return model(inputs, roi_boxes=boxes, roi_labels=labels)

    pairs = _conv_bn_pairs(model, run)
    for conv, bn in pairs:
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
        if type(bn) is nn.BatchNorm2d:
            _replace_module(model, bn, nn.Identity())
        else:  # timm BatchNormAct2d: batch_norm -> drop -> act; keep drop and act
            _replace_module(model, bn, nn.Sequential(bn.drop, bn.act))
    return model


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with BatchNorm folded into the convolutions and NHWC conv weights.

    ``copy(model)(inputs)`` gives the same outputs as ``model(inputs)`` up to float rounding
    (``test/unit/test_perf_equivalence.py``); ``model`` itself, its ``state_dict`` and checkpoints
    are untouched. Models without a DAMCSeg ``config`` or without BatchNorm (e.g. an ONNX Runtime
    wrapper) are returned as they are.
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        return model
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    fast = copy.deepcopy(model).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    fold_batchnorm(fast)
    return fast


class Predictor:
    """Runs a DAMCSeg model on numpy frames (see the module docstring for the steps).

    Args:
        model: a DAMCSeg model (it is put in eval mode and moved to ``device``).
        device: torch device to run on.
        min_confidence: pixels whose top class probability is below this get label 255
            ("unknown"); 0 keeps every pixel labelled.
        optimize: run an :func:`optimize_for_inference` copy of ``model`` (same outputs up to float
            rounding). Changing ``model``'s weights afterwards needs a new Predictor.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "cpu",
        min_confidence: float = 0.0,
        optimize: bool = True,
    ) -> None:
        if not 0.0 <= min_confidence < 1.0:
            raise ValueError(f"min_confidence must be in [0, 1), got {min_confidence}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        # The forward runs on an inference copy (BatchNorm folded); ``self.model`` stays the model
        # given, with its own parameters and state_dict (parameter counts, checkpoints).
        self._runner = optimize_for_inference(self.model) if optimize else self.model
        self.config = model.config
        self.input_size = tuple(self.config.input_size)
        self.min_confidence = min_confidence

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        expected_name: str | None = None,
        **kwargs: Any,
    ) -> Predictor:
        """Load a trained model from a checkpoint written by damcseg training.

        Loading (``torch.load(weights_only=True)``, checks, rebuild from ``model_config``) is
        :func:`damcseg_core.checkpoint.load_model`, the one loader every tool shares.

        Args:
            path: checkpoint file (``model_name``, ``model_config``, ``model`` ...).
            device: torch device.
            expected_name: the variant the caller needs (e.g. ``"damcseg_edge"``); another
                variant in the file is an error naming both.
            **kwargs: passed to :class:`Predictor` (e.g. ``min_confidence``).

        Raises:
            FileNotFoundError: no file at ``path``.
            damcseg_core.checkpoint.CheckpointError: a corrupt or foreign file, a wrong variant,
                or weights that do not fit the stored config (a ``ValueError``).
        """
        from damcseg_core.checkpoint import load_model

        return cls(load_model(path, device, expected_name=expected_name), device, **kwargs)

    @classmethod
    def from_name(
        cls, name: str, seed: int = 0, device: str | torch.device = "cpu", **kwargs: Any
    ) -> Predictor:
        """A randomly initialised registered variant (demos, tests, latency checks).

        The seed makes the weights reproducible without touching the global RNG state.
        """
        from damcseg_core.models import build_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(name)
        return cls(model, device, **kwargs)

    # ------------------------------------------------------------------ input handling
    @staticmethod
    def _check(inputs: dict[str, np.ndarray]) -> None:
        if not isinstance(inputs, dict) or not inputs:
            raise ValueError(f"predict() needs a non-empty dict with keys from {list(MODALITIES)}")
        unknown = sorted(set(inputs) - set(MODALITIES))
        if unknown:
            raise ValueError(f"unknown modality key(s) {unknown}; valid keys are {list(MODALITIES)}")
        for key, arr in inputs.items():
            if not isinstance(arr, np.ndarray):
                raise ValueError(f"'{key}' must be a numpy array, got {type(arr).__name__}")
        if "rgb" in inputs:
            rgb = inputs["rgb"]
            if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
                raise ValueError(
                    f"'rgb' must be an HxWx3 uint8 array in RGB order, got shape {rgb.shape} dtype {rgb.dtype}"
                )
        for key, hint in (
            ("depth", "float32 metres; convert 16UC1 millimetres with depth.astype(np.float32) / 1000"),
            ("thermal", "float32 in [0, 1]; divide raw counts by the encoding's full scale (255 or 65535)"),
        ):
            if key not in inputs:
                continue
            arr = inputs[key]
            if arr.ndim == 3 and arr.shape[2] == 1:
                arr = arr[..., 0]
            if arr.ndim != 2:
                raise ValueError(f"'{key}' must be an HxW array, got shape {arr.shape}")
            if not np.issubdtype(arr.dtype, np.floating):
                raise ValueError(f"'{key}' must be {hint}; got dtype {arr.dtype}")
        for key, arr in inputs.items():
            if min(arr.shape[:2]) < 1:
                raise ValueError(f"'{key}' is empty (shape {arr.shape})")

    def _to_tensors(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], tuple[int, int]]:
        """Canonical ``[1, C, H, W]`` tensors at the reference frame size."""
        ref_key = next(m for m in MODALITIES if m in inputs)
        ref_hw = tuple(inputs[ref_key].shape[:2])
        out = {}
        for m in MODALITIES:
            if m not in inputs:
                continue
            arr = inputs[m]
            if m == "rgb":
                t = _as_tensor(arr).permute(2, 0, 1).float().div_(255.0)
            else:
                arr = arr[..., 0] if arr.ndim == 3 else arr
                t = _as_tensor(arr.astype(np.float32, copy=False))[None]
                bad = ~torch.isfinite(t) | (
                    (t < 0) if m == "depth" else torch.zeros_like(t, dtype=torch.bool)
                )
                t = torch.where(bad, torch.zeros_like(t), t)
                if m == "thermal":
                    t = t.clamp_(0.0, 1.0)
            t = t[None]
            if tuple(t.shape[-2:]) != ref_hw:
                mode = "nearest" if m == "depth" else "bilinear"
                kwargs = {} if mode == "nearest" else {"align_corners": False}
                t = F.interpolate(t, size=ref_hw, mode=mode, **kwargs)
            out[m] = t
        return out, ref_hw

    def _resize_pad(
        self, tensors: dict[str, torch.Tensor], hw: tuple[int, int]
    ) -> tuple[dict[str, torch.Tensor], float, tuple[int, int]]:
        """Scale to fit ``input_size`` keeping aspect, pad to multiples of 32."""
        h, w = hw
        scale = min(self.input_size[0] / h, self.input_size[1] / w)
        rh, rw = max(1, round(h * scale)), max(1, round(w * scale))
        ph, pw = math.ceil(rh / 32) * 32, math.ceil(rw / 32) * 32
        out = {}
        for m, t in tensors.items():
            if (rh, rw) != (h, w):
                if m == "depth":
                    t = F.interpolate(t, size=(rh, rw), mode="nearest")
                else:
                    t = F.interpolate(
                        t, size=(rh, rw), mode="bilinear", align_corners=False, antialias=scale < 1
                    )
            pad = (0, pw - rw, 0, ph - rh)
            if pad != (0, 0, 0, 0):
                t = F.pad(t, pad) if m == "depth" else F.pad(t, pad, mode="replicate")
            out[m] = t.to(self.device)
        # Exact scale factors per axis (rounding makes them differ slightly from `scale`).
        return out, (rh / h, rw / w), (rh, rw)

    # ------------------------------------------------------------------ predict
    def predict(self, inputs: dict[str, np.ndarray]) -> PredictionResult:
        """Detect and segment one frame given as numpy arrays (any non-empty modality subset).

        Raises:
            ValueError: empty dict, unknown key, or an array with the wrong dtype/shape.
        """
        self._check(inputs)
        tensors, (h, w) = self._to_tensors(inputs)
        batch, (sy, sx), (rh, rw) = self._resize_pad(tensors, (h, w))
        with torch.inference_mode():
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            start = time.perf_counter()
            out = self._runner(batch)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            inference_ms = (time.perf_counter() - start) * 1000.0
            logits = out.seg_logits[0, :, :rh, :rw].float()
            if self.min_confidence > 0:
                logits = F.interpolate(logits[None], size=(h, w), mode="bilinear", align_corners=False)[0]
                # max() gives values and indices in one pass (faster than argmax over dim 0 on CPU).
                best, idx = logits.max(dim=0)
                # top softmax probability = 1 / sum_k exp(l_k - l_max)
                prob = (logits - best).exp_().sum(dim=0).reciprocal_()
                idx[prob < self.min_confidence] = IGNORE_INDEX
            else:
                idx = upsampled_argmax(logits, (h, w))
            mask = idx.to(torch.uint8).cpu().numpy()
            boxes = out.boxes[0].float().cpu()
            boxes = boxes / torch.tensor([sx, sy, sx, sy])
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        scene = out.scene
        return PredictionResult(
            mask=mask,
            boxes=boxes.numpy().astype(np.float32),
            scores=out.scores[0].float().cpu().numpy().astype(np.float32),
            labels=out.labels[0].cpu().numpy().astype(np.int64),
            scene_score=float(scene.S[0]),
            target_density=float(scene.D[0]),
            occlusion=float(scene.O[0]),
            edge_density=float(scene.E[0]),
            category=int(scene.category[0]),
            branch_weights=out.branch_weights[0].float().cpu().numpy().astype(np.float32),
            modality_weights=out.modality_weights[0].float().cpu().numpy().astype(np.float32),
            present=tuple(out.present),
            completed=tuple(out.completed),
            inference_ms=inference_ms,
        )
