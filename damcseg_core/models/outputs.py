"""Typed outputs of a DAMCSeg model: one type in eval mode, one in train mode.

The return type never depends on the configuration (see ``docs/interfaces.md``): eval mode
returns :class:`DamcsegOutput`, train mode :class:`DamcsegTrainOutput`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from damcseg_core.models.scene_complexity import SceneComplexity

__all__ = ["DamcsegOutput", "DamcsegTrainOutput"]


@dataclasses.dataclass
class DamcsegOutput:
    """Eval-mode prediction for a batch of ``B`` frames of size ``H x W``.

    Attributes:
        seg_logits: ``[B, 19, H, W]`` fused (DSAF) and CRF-refined class logits.
        boxes: per image ``[N, 4]`` xyxy pixel boxes after NMS.
        scores: per image ``[N]`` detection scores in [0, 1].
        labels: per image ``[N]`` int64 Cityscapes train ids (one of ``DETECTION_TRAIN_IDS``).
        scene: scene complexity ``S, D, O, E`` ``[B]`` and ``category`` ``[B]`` (0/1/2).
        branch_weights: ``[B, 3]`` image-level (alpha, beta, gamma) after DSAF.
        target_branch_weights: per image ``[N, 3]`` per-target (alpha, beta, gamma).
        modality_weights: ``[B, 3]`` mean reliability weight of (rgb, depth, thermal); a
            completed modality has one too: how much its MCN-predicted features were trusted.
        present: modalities given as input, in ``MODALITIES`` order.
        completed: modalities whose features the MCN predicted, in ``MODALITIES`` order.
    """

    seg_logits: torch.Tensor
    boxes: list[torch.Tensor]
    scores: list[torch.Tensor]
    labels: list[torch.Tensor]
    scene: SceneComplexity
    branch_weights: torch.Tensor
    target_branch_weights: list[torch.Tensor]
    modality_weights: torch.Tensor
    present: tuple[str, ...]
    completed: tuple[str, ...]


@dataclasses.dataclass
class DamcsegTrainOutput:
    """Train-mode outputs: the raw tensors the DSJL (eq. 4) and the completion loss need.

    Attributes:
        seg_logits: ``[B, 19, H, W]`` fused (DSAF) and CRF-refined logits.
        branch_logits: ``global``/``local``/``post`` ``[B, 19, H, W]`` logits of each path;
            ``local`` and ``post`` are only meaningful where their coverage is 1.
        local_coverage: ``[B, 1, H, W]`` 1 where a local-path ROI was pasted, else 0.
        post_coverage: ``[B, 1, H, W]`` 1 inside any box used by the post-processing path.
        cls_logits: ``[B, A, 10]`` detection class logits (sigmoid / focal loss), class ``k``
            = train id ``DETECTION_TRAIN_IDS[k]``.
        box_deltas: ``[B, A, 4]`` regression of each anchor, torchvision
            ``BoxCoder(weights=(1, 1, 1, 1))`` encoding.
        anchors: ``[A, 4]`` xyxy pixel anchors, same for every image of the batch.
        completion: modality -> (predicted, real) features for modalities present in the batch
            but dropped via ``drop``; ``real`` is detached (a stop-gradient target).
        modality_weights: ``[B, 3]`` mean reliability of (rgb, depth, thermal).
        boxes: per image ``[N, 4]`` post-processed detections (detached), for the alignment loss.
        scores: per image ``[N]``.
        labels: per image ``[N]`` train ids.
        roi_boxes: per image boxes the local and post paths used (detections, or the
            ``roi_boxes`` given to ``forward``).
        scene: scene complexity of each image.
        branch_weights: ``[B, 3]`` image-level DSAF weights.
        target_branch_weights: per image ``[N, 3]`` per-target DSAF weights for ``roi_boxes``.
        gate_cost: scalar expected compute of the local-branch gates (a loss term can push it down).
        present: modalities given as input.
        completed: modalities whose features the MCN predicted (missing or dropped).
        anchor_levels: ``[A]`` int64 pyramid level index (0 = finest) of each anchor, for the
            level-aware (ATSS) assignment of the detection loss; ``None`` = one level.
        lmmf: the ``LMMFFeatures`` of the step (per-sample ``completed_mask``, the fused
            features and the no-gradient ``teacher_fused`` / ``distill_mask`` of the
            distillation loss); ``None`` = not given.
    """

    seg_logits: torch.Tensor
    branch_logits: dict[str, torch.Tensor]
    local_coverage: torch.Tensor
    post_coverage: torch.Tensor
    cls_logits: torch.Tensor
    box_deltas: torch.Tensor
    anchors: torch.Tensor
    completion: dict[str, tuple[torch.Tensor, torch.Tensor]]
    modality_weights: torch.Tensor
    boxes: list[torch.Tensor]
    scores: list[torch.Tensor]
    labels: list[torch.Tensor]
    roi_boxes: list[torch.Tensor]
    scene: SceneComplexity
    branch_weights: torch.Tensor
    target_branch_weights: list[torch.Tensor]
    gate_cost: torch.Tensor
    present: tuple[str, ...]
    completed: tuple[str, ...]
    anchor_levels: torch.Tensor | None = None
    lmmf: Any = None
