"""Detection-segmentation alignment loss L_align of the DSJL (DAMCSeg paper, Sec. III.C.3).

The paper "calculates the IoU between the detection bounding box and the segmentation mask"
and adds a penalty when ``IoU < 0.7``. A box and a mask are different shapes (a person fills
only part of its box), so we compare the box with the *box the mask spans*, made soft and
differentiable with respect to the segmentation probabilities:

For a box ``b = (x1, y1, x2, y2)`` with train id ``c``:

1. ``R`` is ``b`` enlarged by ``margin`` times its width/height on every side, clipped to the
   image ("inside and around" the box); pixels outside ``R`` do not take part.
2. ``m(y, x) = softmax(seg_logits)[c]`` on ``R``; its projections ``p_x(x) = max_y m(y, x)``
   and ``p_y(y) = max_x m(y, x)`` give the soft mask box ``M(y, x) = p_y(y) * p_x(x)``
   (for a binary mask this is exactly the indicator of the mask's bounding box).
3. ``B(y, x) = 1`` where the pixel centre ``(x + 0.5, y + 0.5)`` lies inside ``b``.
4. ``IoU = sum(M B) / (sum M + sum B - sum M B)`` over ``R``.
5. ``loss_b = (1 - IoU) + penalty * max(0, threshold - IoU)`` with ``threshold = 0.7``.

``L_align`` is the mean of ``loss_b`` over all boxes of the batch (0 without boxes).

Which boxes (``boxes``):

* ``"matched"`` (default): the detector's *predicted* box of each valid ground-truth object
  (the decoded box of its best positive anchor, chosen by IoU with the object), against the
  segmentation of that object's class around it. Here the box indicator of step 3 is soft,
  ``B(y, x) = s((x + 0.5 - x1) / t) s((x2 - x - 0.5) / t) s((y + 0.5 - y1) / t) s((y2 - y - 0.5) / t)``
  with the logistic ``s`` and ``t = box_temperature`` pixels, so the gradient reaches the box
  regression *and* the segmentation: the detector and the mask constrain each other, which is
  the paper's joint link. Boxes are clipped to the image and at most ``max_boxes`` per batch are
  used (the rest are a random-free prefix: objects in batch order).
* ``"gt"``: the ground-truth boxes (a pure constraint on the segmentation; no detector gradient).
* ``"detections"``: the model's (detached) post-processed detections, the paper's test-time
  notion of agreement.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

__all__ = [
    "AlignmentLossConfig",
    "alignment_loss",
    "alignment_penalty",
    "matched_alignment_loss",
    "soft_box_mask_iou",
    "soft_box_mask_iou_differentiable",
]


@dataclasses.dataclass
class AlignmentLossConfig:
    """Settings of L_align."""

    threshold: float = 0.7  # paper: extra penalty below this IoU
    penalty: float = 1.0  # slope of the extra penalty: + penalty * (threshold - IoU)
    margin: float = 0.25  # region around each box, as a fraction of its width/height per side
    boxes: Literal["matched", "gt", "detections"] = "matched"  # which boxes meet the mask (see above)
    box_temperature: float = 1.0  # "matched": softness of the box edges, pixels
    max_boxes: int = 64  # "matched": boxes per batch (bounds the cost of the per-box crops)


def alignment_penalty(iou: torch.Tensor, threshold: float = 0.7, penalty: float = 1.0) -> torch.Tensor:
    """``(1 - iou) + penalty * max(0, threshold - iou)``, elementwise."""
    return (1.0 - iou) + penalty * torch.clamp(threshold - iou, min=0.0)


def soft_box_mask_iou(prob: torch.Tensor, box: torch.Tensor, margin: float) -> torch.Tensor:
    """Soft IoU between ``box`` and the box spanned by the class probability map ``prob [H, W]``."""
    h, w = prob.shape
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    rx1, ry1 = max(0, int(x1 - mx)), max(0, int(y1 - my))
    rx2, ry2 = min(w, int(x2 + mx + 0.999)), min(h, int(y2 + my + 0.999))
    if rx2 <= rx1 or ry2 <= ry1:
        return prob.sum().mul(0.0).abs()
    m = prob[ry1:ry2, rx1:rx2]
    xs = torch.arange(rx1, rx2, device=prob.device, dtype=prob.dtype) + 0.5
    ys = torch.arange(ry1, ry2, device=prob.device, dtype=prob.dtype) + 0.5
    bx = ((xs >= x1) & (xs <= x2)).to(prob.dtype)
    by = ((ys >= y1) & (ys <= y2)).to(prob.dtype)
    soft = m.amax(dim=0)[None, :] * m.amax(dim=1)[:, None]  # p_y(y) * p_x(x)
    hard = by[:, None] * bx[None, :]
    inter = (soft * hard).sum()
    union = soft.sum() + hard.sum() - inter
    return inter / union.clamp_min(1e-6)


def alignment_loss(
    seg_logits: torch.Tensor,
    boxes: list[torch.Tensor],
    labels: list[torch.Tensor],
    cfg: AlignmentLossConfig | None = None,
) -> dict[str, torch.Tensor]:
    """L_align for a batch.

    Args:
        seg_logits: ``[B, C, H, W]`` segmentation logits.
        boxes: per image ``[N, 4]`` xyxy pixel boxes.
        labels: per image ``[N]`` train ids of the boxes.
        cfg: settings.

    Returns:
        ``align`` (the loss) and ``align_iou`` (mean soft IoU, detached; 1 without boxes).
    """
    cfg = cfg or AlignmentLossConfig()
    probs = torch.softmax(seg_logits, dim=1)
    ious = []
    for i in range(seg_logits.shape[0]):
        img_boxes = boxes[i].reshape(-1, 4)
        img_labels = labels[i].reshape(-1)
        for box, label in zip(img_boxes, img_labels):
            c = int(label)
            if not 0 <= c < probs.shape[1] or box[2] <= box[0] or box[3] <= box[1]:
                continue
            ious.append(soft_box_mask_iou(probs[i, c], box, cfg.margin))
    if not ious:
        zero = seg_logits.sum().mul(0.0).abs()
        return {"align": zero, "align_iou": torch.ones((), device=seg_logits.device)}
    iou = torch.stack(ious)
    loss = alignment_penalty(iou, cfg.threshold, cfg.penalty).mean()
    return {"align": loss, "align_iou": iou.detach().mean()}


def soft_box_mask_iou_differentiable(
    prob: torch.Tensor, box: torch.Tensor, margin: float, temperature: float = 1.0
) -> torch.Tensor:
    """Soft IoU of a differentiable ``box [4]`` with the box spanned by ``prob [H, W]``.

    Like :func:`soft_box_mask_iou`, but the box indicator has logistic edges of width
    ``temperature`` pixels, so the IoU has a gradient with respect to the box coordinates.
    """
    h, w = prob.shape
    lim = box.new_tensor([w, h, w, h])
    box = torch.minimum(box.clamp_min(0.0), lim)
    x1, y1, x2, y2 = (float(v) for v in box.detach())
    mx, my = margin * max(x2 - x1, 1.0), margin * max(y2 - y1, 1.0)
    rx1, ry1 = max(0, int(x1 - mx)), max(0, int(y1 - my))
    rx2, ry2 = min(w, int(x2 + mx + 0.999)), min(h, int(y2 + my + 0.999))
    if rx2 <= rx1 or ry2 <= ry1:
        return (prob.sum() + box.sum()).mul(0.0)
    m = prob[ry1:ry2, rx1:rx2]
    xs = torch.arange(rx1, rx2, device=prob.device, dtype=prob.dtype) + 0.5
    ys = torch.arange(ry1, ry2, device=prob.device, dtype=prob.dtype) + 0.5
    t = max(temperature, 1e-3)
    bx = torch.sigmoid((xs - box[0]) / t) * torch.sigmoid((box[2] - xs) / t)
    by = torch.sigmoid((ys - box[1]) / t) * torch.sigmoid((box[3] - ys) / t)
    soft = m.amax(dim=0)[None, :] * m.amax(dim=1)[:, None]
    hard = by[:, None] * bx[None, :]
    inter = (soft * hard).sum()
    union = soft.sum() + hard.sum() - inter
    return inter / union.clamp_min(1e-6)


def matched_alignment_loss(
    seg_logits: torch.Tensor,
    matched: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    cfg: AlignmentLossConfig | None = None,
) -> dict[str, torch.Tensor]:
    """L_align on the detector's predicted boxes (``boxes="matched"``; see the module docstring).

    Args:
        seg_logits: ``[B, C, H, W]`` segmentation logits.
        matched: per image ``(pred_boxes [P, 4], gt_boxes [P, 4], labels [P])``: the predicted box
            of each matched object (with gradient), its GT box and its train id.
        cfg: settings.

    Returns:
        ``align`` and ``align_iou`` (mean soft IoU, detached; 1 without boxes).
    """
    cfg = cfg or AlignmentLossConfig()
    probs = torch.softmax(seg_logits, dim=1)
    ious = []
    for i, (pred, _gt, labels) in enumerate(matched):
        for box, label in zip(pred, labels.tolist()):
            if len(ious) >= cfg.max_boxes:
                break
            if not 0 <= label < probs.shape[1] or not torch.isfinite(box).all():
                continue
            ious.append(
                soft_box_mask_iou_differentiable(probs[i, label], box, cfg.margin, cfg.box_temperature)
            )
    if not ious:
        zero = seg_logits.sum().mul(0.0).abs()
        for pred, _, _ in matched:
            zero = zero + pred.sum().mul(0.0)
        return {"align": zero, "align_iou": torch.ones((), device=seg_logits.device)}
    iou = torch.stack(ious)
    loss = alignment_penalty(iou, cfg.threshold, cfg.penalty).mean()
    return {"align": loss, "align_iou": iou.detach().mean()}
