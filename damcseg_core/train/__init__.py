"""DAMCSeg training: config dataclasses, augmentations, the three-stage schedule and the trainer.

Example:
    >>> from damcseg_core.config import load_yaml
    >>> from damcseg_core.train import TrainConfig, Trainer
    >>> Trainer(load_yaml(TrainConfig, "config/train/tiny_smoke.yaml")).fit()
"""

from damcseg_core.train.augment import Augmenter, sample_modality_subset
from damcseg_core.train.config import AugmentConfig, DataConfig, OptimConfig, StageConfig, TrainConfig
from damcseg_core.train.schedule import StageSchedule, assign_groups, build_optimizer
from damcseg_core.train.trainer import StepBatchSampler, Trainer

__all__ = [
    "AugmentConfig",
    "Augmenter",
    "DataConfig",
    "OptimConfig",
    "StageConfig",
    "StageSchedule",
    "StepBatchSampler",
    "TrainConfig",
    "Trainer",
    "assign_groups",
    "build_optimizer",
    "sample_modality_subset",
]
