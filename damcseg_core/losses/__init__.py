"""DAMCSeg training losses: the DSJL (paper eq. 4) and the MCN completion loss.

Example:
    >>> from damcseg_core.losses import DSJLoss, LossConfig
    >>> losses = DSJLoss(LossConfig(lambda1=1.0, lambda2=0.5))(train_output, batch)
"""

from damcseg_core.losses.alignment import AlignmentLossConfig, alignment_loss, alignment_penalty
from damcseg_core.losses.completion import CompletionLossConfig, completion_loss
from damcseg_core.losses.detection import DetectionLossConfig, detection_loss, match_anchors
from damcseg_core.losses.dsjl import DSJLoss, LossConfig
from damcseg_core.losses.segmentation import SegmentationLossConfig, segmentation_loss

__all__ = [
    "AlignmentLossConfig",
    "CompletionLossConfig",
    "DSJLoss",
    "DetectionLossConfig",
    "LossConfig",
    "SegmentationLossConfig",
    "alignment_loss",
    "alignment_penalty",
    "completion_loss",
    "detection_loss",
    "match_anchors",
    "segmentation_loss",
]
