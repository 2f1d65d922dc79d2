"""Detection loss L_det of the DSJL (DAMCSeg paper, Sec. III.C.3): focal classification + GIoU.

Definition, for a batch with anchors ``a_j`` (shared by all images) and ground-truth boxes
``g_i`` with detection class ``k_i`` (the index of the GT train id in ``DETECTION_TRAIN_IDS``):

* **Matching** (RetinaNet rules): ``IoU_ij = box_iou(g_i, a_j)``. Anchor ``j`` is *positive*
  for ``i* = argmax_i IoU_ij`` if ``IoU_i*j >= 0.5``, *negative* if ``max_i IoU_ij < 0.4`` and
  *ignored* in between. Each GT's best anchor (all anchors tying for it) is forced positive for
  that GT, so no object goes unmatched. GT labels that are not detection classes are dropped.
* **Classification**: ``torchvision.ops.sigmoid_focal_loss`` (alpha 0.25, gamma 2) over all
  non-ignored anchors and all ``K`` classes, target one-hot of ``k_i*`` for positives and all
  zeros for negatives, summed and divided by ``max(1, number of positive anchors in the batch)``.
* **Box regression**: the positives' ``box_deltas`` are decoded with torchvision
  ``BoxCoder(weights=(1, 1, 1, 1))`` against their anchors, and
  ``torchvision.ops.generalized_box_iou_loss(decoded, g_i*)`` is summed over positives and
  divided by the same ``max(1, #positives)``.

``L_det = cls_weight * focal + box_weight * giou``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_iou, generalized_box_iou_loss, sigmoid_focal_loss

from damcseg_core.data.classes import DETECTION_TRAIN_IDS

__all__ = ["DetectionLossConfig", "detection_loss", "match_anchors", "train_ids_to_det_classes"]

_BOX_CODER = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip=math.log(1000.0 / 16))


@dataclasses.dataclass
class DetectionLossConfig:
    """Weights and thresholds of L_det."""

    focal_alpha: float = 0.25  # focal loss positive-class weight (RetinaNet)
    focal_gamma: float = 2.0  # focal loss focusing exponent
    positive_iou: float = 0.5  # anchors with IoU >= this to their best GT are positives
    negative_iou: float = 0.4  # anchors with best IoU < this are negatives; in between ignored
    cls_weight: float = 1.0  # weight of the focal classification term
    box_weight: float = 1.0  # weight of the GIoU box term

    def __post_init__(self) -> None:
        if not 0.0 <= self.negative_iou <= self.positive_iou <= 1.0:
            raise ValueError(
                f"need 0 <= negative_iou <= positive_iou <= 1, got {self.negative_iou}, {self.positive_iou}"
            )


def train_ids_to_det_classes(labels: torch.Tensor) -> torch.Tensor:
    """Map train ids to detection class indices ``k``; ids that are not detected map to -1."""
    lut = torch.full((256,), -1, dtype=torch.int64, device=labels.device)
    lut[torch.tensor(DETECTION_TRAIN_IDS, device=labels.device)] = torch.arange(
        len(DETECTION_TRAIN_IDS), device=labels.device
    )
    return lut[labels.long().clamp(0, 255)]


def match_anchors(
    gt_boxes: torch.Tensor, anchors: torch.Tensor, positive_iou: float = 0.5, negative_iou: float = 0.4
) -> torch.Tensor:
    """Assign every anchor to a GT box (see module docstring).

    Args:
        gt_boxes: ``[N, 4]`` xyxy.
        anchors: ``[A, 4]`` xyxy.

    Returns:
        ``[A]`` int64: the matched GT index ``>= 0`` for positives, ``-1`` for negatives and
        ``-2`` for ignored anchors.
    """
    num_anchors = anchors.shape[0]
    if gt_boxes.numel() == 0:
        return torch.full((num_anchors,), -1, dtype=torch.int64, device=anchors.device)
    iou = box_iou(gt_boxes, anchors)  # [N, A]
    best_iou, best_gt = iou.max(dim=0)
    matches = best_gt.clone()
    matches[best_iou < positive_iou] = -2
    matches[best_iou < negative_iou] = -1
    # Low-quality matches: each GT keeps the anchors with its highest IoU (ties included).
    gt_best = iou.max(dim=1, keepdim=True).values
    gt_idx, anchor_idx = torch.nonzero((iou == gt_best) & (gt_best > 0), as_tuple=True)
    matches[anchor_idx] = gt_idx
    return matches


def detection_loss(
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    gt_boxes: list[torch.Tensor],
    gt_labels: list[torch.Tensor],
    cfg: DetectionLossConfig | None = None,
) -> dict[str, torch.Tensor]:
    """L_det for a batch.

    Args:
        cls_logits: ``[B, A, K]`` class logits.
        box_deltas: ``[B, A, 4]`` regression outputs.
        anchors: ``[A, 4]`` xyxy anchors.
        gt_boxes: per image ``[N, 4]`` xyxy pixel boxes.
        gt_labels: per image ``[N]`` Cityscapes train ids.
        cfg: weights and thresholds.

    Returns:
        ``det_cls`` (normalised focal loss), ``det_box`` (normalised GIoU loss) and ``det``
        (their weighted sum).
    """
    cfg = cfg or DetectionLossConfig()
    b = cls_logits.shape[0]
    if len(gt_boxes) != b or len(gt_labels) != b:
        raise ValueError(f"need {b} per-image gt_boxes/gt_labels, got {len(gt_boxes)}/{len(gt_labels)}")
    anchors = anchors.to(cls_logits.dtype)
    cls_sum = cls_logits.new_zeros(())
    box_sum = cls_logits.new_zeros(())
    num_pos = 0
    for i in range(b):
        boxes = gt_boxes[i].to(cls_logits.device, anchors.dtype).reshape(-1, 4)
        classes = train_ids_to_det_classes(gt_labels[i].to(cls_logits.device).reshape(-1))
        keep = (classes >= 0) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, classes = boxes[keep], classes[keep]
        matches = match_anchors(boxes, anchors, cfg.positive_iou, cfg.negative_iou)
        pos = matches >= 0
        valid = matches >= -1
        target = torch.zeros_like(cls_logits[i])
        target[pos, classes[matches[pos]]] = 1.0
        cls_sum = cls_sum + sigmoid_focal_loss(
            cls_logits[i][valid], target[valid], cfg.focal_alpha, cfg.focal_gamma, reduction="sum"
        )
        if pos.any():
            decoded = _BOX_CODER.decode_single(box_deltas[i][pos], anchors[pos])
            box_sum = box_sum + generalized_box_iou_loss(decoded, boxes[matches[pos]], reduction="sum")
        num_pos += int(pos.sum())
    norm = max(1, num_pos)
    det_cls = cls_sum / norm
    det_box = box_sum / norm
    return {
        "det_cls": det_cls,
        "det_box": det_box,
        "det": cfg.cls_weight * det_cls + cfg.box_weight * det_box,
    }
