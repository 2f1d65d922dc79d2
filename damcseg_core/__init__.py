"""DAMCSeg core: multi-modal (RGB / depth / thermal) detection + segmentation in pure PyTorch.

This package never imports ROS (rclpy, *_msgs, cv_bridge); ``test/unit/test_no_ros_import.py``
enforces it. The public entry points below are imported on first use, so ``import damcseg_core``
stays cheap (no torch import until one is touched)::

    from damcseg_core import Predictor, build_model, load_model, load_predictor
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

MODALITIES = ("rgb", "depth", "thermal")
"""Fixed modality keys used everywhere; a missing key means "sensor absent"."""

_LAZY = {
    "build_model": "damcseg_core.models",
    "load_model": "damcseg_core.checkpoint",
    "Predictor": "damcseg_core.inference",
    "PredictionResult": "damcseg_core.inference",
    "load_predictor": "damcseg_core.inference",
}

__all__ = [
    "MODALITIES",
    "PredictionResult",
    "Predictor",
    "__version__",
    "build_model",
    "load_model",
    "load_predictor",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'damcseg_core' has no attribute {name!r}")
