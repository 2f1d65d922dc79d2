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

The forward pass runs on :func:`~damcseg_core.inference.batchnorm.optimize_for_inference`'s copy
of the model (BatchNorm folded into the convolutions); ``Predictor.model`` is the model as given.

``inference_ms`` is the wall time of the model forward pass alone (pre/post-processing not
included; CUDA is synchronised before reading the clock).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from damcseg_core import MODALITIES
from damcseg_core.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX
from damcseg_core.inference.batchnorm import optimize_for_inference
from damcseg_core.inference.kernels import upsampled_argmax

__all__ = ["PredictionResult", "Predictor"]


@dataclasses.dataclass
class PredictionResult:
    """One frame's prediction, all at input resolution (``docs/interfaces.md``).

    The scene and fusion quantities carry the paper's names, and keep them on the way out:
    ``FrameRecord`` and the reports use the same ones (the ``SceneComplexity`` message keeps its
    older field names, mapped in ``msg/SceneComplexity.msg``).

    Attributes:
        mask: ``HxW`` uint8 class ids (train ids, 255 = unknown).
        boxes: ``[N, 4]`` float32 xyxy pixels.
        scores: ``[N]`` float32 detection scores.
        labels: ``[N]`` int64 class ids.
        S: scene complexity (eq. 5), ``0.4 D + 0.3 O + 0.3 E``.
        D: target density; O: occlusion; E: edge density (its parts, each in [0, 1]).
        category: 0 simple, 1 moderate, 2 complex.
        alpha / beta / gamma: image-level branch weights after DSAF (global, local, depth-prior).
        omega: ``(3,)`` float32 modality reliability weights in ``MODALITIES`` order (eq. 1).
        present: modalities given.
        completed: modalities the model filled in (MCN features, or a depth image with
            ``completion.depth_image``).
        inference_ms: model forward time in milliseconds.
        class_names: the class names of the model, indexed by class id.
    """

    mask: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    S: float
    D: float
    O: float  # noqa: E741 - the paper's name
    E: float
    category: int
    alpha: float
    beta: float
    gamma: float
    omega: np.ndarray
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


class Predictor:
    """Runs a DAMCSeg model on numpy frames (see the module docstring for the steps).

    Build one with :func:`damcseg_core.inference.load_predictor` (checkpoint, variant, ONNX export
    or model object); the constructor takes a ready model.

    Args:
        model: a DAMCSeg model or an :class:`~damcseg_core.export.OnnxRuntimeModel` (it is put in
            eval mode and moved to ``device``).
        device: torch device to run on.
        min_confidence: pixels whose top class probability is below this get label 255
            ("unknown"); 0 keeps every pixel labelled.
        optimize: run an :func:`~damcseg_core.inference.batchnorm.optimize_for_inference` copy of
            ``model`` (same outputs up to float rounding). Changing ``model``'s weights afterwards
            needs a new Predictor.
        class_names: names of the mask / label ids; default the model's own ``class_names``
            (checkpoints and ONNX exports carry them), else the Cityscapes train ids.
        palette: ``[K, 3]`` uint8 colours of the classes; default the model's ``palette``, else
            the Cityscapes palette.
        label: how logs and ``/diagnostics`` name the model (default its config name).

    Attributes:
        class_names / palette: as above, always set.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        device: str | torch.device = "cpu",
        min_confidence: float = 0.0,
        optimize: bool = True,
        class_names: Sequence[str] | None = None,
        palette: Any = None,
        label: str | None = None,
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
        names = class_names if class_names is not None else getattr(model, "class_names", None)
        self.class_names: tuple[str, ...] = tuple(names) if names is not None else CITYSCAPES_CLASSES
        colours = palette if palette is not None else getattr(model, "palette", None)
        if colours is None and len(self.class_names) == len(CITYSCAPES_CLASSES):
            colours = CITYSCAPES_PALETTE
        self.palette: np.ndarray | None = None if colours is None else np.asarray(colours, dtype=np.uint8)
        self.label = label or str(getattr(self.config, "name", type(model).__name__))

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "cpu",
        expected_name: str | None = None,
        **kwargs: Any,
    ) -> Predictor:
        """``load_predictor(checkpoint=path, ...)``: a trained model from a damcseg checkpoint.

        Raises:
            FileNotFoundError: no file at ``path``.
            damcseg_core.checkpoint.CheckpointError: a corrupt or foreign file, a wrong variant,
                or weights that do not fit the stored config (a ``ValueError``).
        """
        from damcseg_core.inference.loading import load_predictor

        return load_predictor(checkpoint=path, device=device, expected_name=expected_name, **kwargs)

    @classmethod
    def from_name(
        cls, name: str, seed: int = 0, device: str | torch.device = "cpu", **kwargs: Any
    ) -> Predictor:
        """``load_predictor(model=name, seed=seed, ...)``: a randomly initialised registered
        variant (demos, tests, latency checks), reproducible without touching the global RNG."""
        from damcseg_core.inference.loading import load_predictor

        return load_predictor(model=name, seed=seed, device=device, **kwargs)

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
        alpha, beta, gamma = (float(v) for v in out.alpha_beta_gamma[0].float().cpu())
        return PredictionResult(
            mask=mask,
            boxes=boxes.numpy().astype(np.float32),
            scores=out.scores[0].float().cpu().numpy().astype(np.float32),
            labels=out.labels[0].cpu().numpy().astype(np.int64),
            S=float(scene.S[0]),
            D=float(scene.D[0]),
            O=float(scene.O[0]),
            E=float(scene.E[0]),
            category=int(scene.category[0]),
            alpha=alpha,
            beta=beta,
            gamma=gamma,
            omega=out.omega[0].float().cpu().numpy().astype(np.float32),
            present=tuple(out.present),
            completed=tuple(out.completed),
            inference_ms=inference_ms,
            class_names=self.class_names,
        )
