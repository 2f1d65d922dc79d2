"""Inference: numpy frames in, one typed :class:`PredictionResult` out, for every back-end.

The only part of ``damcseg_core`` that ``damcseg_ros`` needs::

    from damcseg_core.inference import load_predictor

    predictor = load_predictor("torch", checkpoint="model.pt", device="cpu")
    result = predictor.predict({"rgb": rgb, "depth": depth})

* ``loading``: :func:`load_predictor` (checkpoint / variant / model / ONNX export, the shipped
  default checkpoint, detection overrides);
* ``predictor``: :class:`Predictor` (checks, units, resize/pad, mapping back) and
  :class:`PredictionResult`;
* ``kernels``: post-processing (arg-max of bilinearly up-sampled logits);
* ``batchnorm``: BatchNorm folding for the Predictor's inference copy of the model;
* ``allocator``: :func:`tune_allocator`, glibc malloc settings that keep freed tensor memory
  for reuse (process-wide: the node calls it, a library user may).
"""

from damcseg_core.inference.allocator import tune_allocator
from damcseg_core.inference.batchnorm import fold_batchnorm, optimize_for_inference
from damcseg_core.inference.kernels import upsampled_argmax
from damcseg_core.inference.loading import (
    BACKENDS,
    DETECTION_KEYS,
    default_checkpoint,
    load_predictor,
    packaged_checkpoints,
    release_memory,
    resolve_model_source,
)
from damcseg_core.inference.predictor import PredictionResult, Predictor

__all__ = [
    "BACKENDS",
    "DETECTION_KEYS",
    "PredictionResult",
    "Predictor",
    "default_checkpoint",
    "fold_batchnorm",
    "load_predictor",
    "optimize_for_inference",
    "packaged_checkpoints",
    "release_memory",
    "resolve_model_source",
    "tune_allocator",
    "upsampled_argmax",
]
