"""Moved to :mod:`damcseg_core.inference` (this path stays because README documents it)."""

from damcseg_core.inference import PredictionResult, Predictor  # noqa: F401
