"""DAMCSeg models: the registry/factory, config dataclasses and output types.

Example:
    >>> import torch
    >>> from damcseg_core.models import build_model
    >>> model = build_model("damcseg_tiny").eval()
    >>> out = model({"rgb": torch.rand(1, 3, 64, 128)})  # any non-empty subset of modalities
"""

from damcseg_core.models.config import ModelConfig
from damcseg_core.models.outputs import DamcsegOutput, DamcsegTrainOutput
from damcseg_core.models.registry import (
    build_model,
    build_model_from_config,
    get_config,
    list_models,
    register_model,
)

__all__ = [
    "DamcsegOutput",
    "DamcsegTrainOutput",
    "ModelConfig",
    "build_model",
    "build_model_from_config",
    "get_config",
    "list_models",
    "register_model",
]
