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

All boxes of a batch are computed at once (:func:`batched_box_mask_iou`: one gather of every
region into a padded stack); the per-box functions :func:`soft_box_mask_iou` and
:func:`soft_box_mask_iou_differentiable` are the reference it is tested against.

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
    "batched_box_mask_iou",
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


def batched_box_mask_iou(
    probs: torch.Tensor,
    image: torch.Tensor,
    label: torch.Tensor,
    boxes: torch.Tensor,
    margin: float,
    temperature: float | None = None,
) -> torch.Tensor:
    """The soft box-vs-mask IoU of many boxes at once, ``[P]``.

    Box ``p`` is compared with ``probs[image[p], label[p]]``: for ``temperature=None`` exactly as
    :func:`soft_box_mask_iou` (hard box), otherwise as :func:`soft_box_mask_iou_differentiable`
    (box clipped to the image, logistic edges, gradient to ``boxes``). The regions of all boxes
    are read with one gather into a ``[P, Hmax, Wmax]`` stack (padding masked out), so the
    backward pass writes one gradient map instead of one full-size map per box.

    Args:
        probs: ``[B, C, H, W]`` class probabilities.
        image / label: ``[P]`` int64 image and class index of each box.
        boxes: ``[P, 4]`` xyxy pixel boxes.
        margin: Region around each box, as a fraction of its width/height per side.
        temperature: Softness of the box edges in pixels; ``None`` = a hard box.
    """
    h, w = probs.shape[-2:]
    dtype = probs.dtype
    if temperature is not None:
        boxes = torch.minimum(boxes.clamp_min(0.0), boxes.new_tensor([w, h, w, h]))
    # Region bounds in float64, as the per-box functions compute them with Python floats.
    bd = boxes.detach().double()
    x1, y1, x2, y2 = bd.unbind(1)
    bw, bh = x2 - x1, y2 - y1
    if temperature is not None:
        bw, bh = bw.clamp_min(1.0), bh.clamp_min(1.0)
    mx, my = margin * bw, margin * bh
    rx1 = (x1 - mx).trunc().clamp_min(0).long()
    ry1 = (y1 - my).trunc().clamp_min(0).long()
    rx2 = (x2 + mx + 0.999).trunc().clamp_max(w).long()
    ry2 = (y2 + my + 0.999).trunc().clamp_max(h).long()
    empty = (rx2 <= rx1) | (ry2 <= ry1)
    rh, rw = (ry2 - ry1).clamp_min(0), (rx2 - rx1).clamp_min(0)
    hmax, wmax = max(1, int(rh.max())), max(1, int(rw.max()))
    ar_y = torch.arange(hmax, device=probs.device)
    ar_x = torch.arange(wmax, device=probs.device)
    ys, xs = ry1[:, None] + ar_y, rx1[:, None] + ar_x  # [P, Hmax], [P, Wmax]
    in_y, in_x = ar_y < rh[:, None], ar_x < rw[:, None]
    inside = in_y[:, :, None] & in_x[:, None, :]  # [P, Hmax, Wmax]
    m = probs[
        image[:, None, None],
        label[:, None, None],
        ys.clamp_max(h - 1)[:, :, None],
        xs.clamp_max(w - 1)[:, None, :],
    ]
    # Probabilities are >= 0, so -1 padding never wins a max nor ties with a region pixel.
    m = torch.where(inside, m, torch.full_like(m, -1.0))
    px = m.amax(dim=1)  # [P, Wmax]: max over the region's rows, per column
    py = m.amax(dim=2)  # [P, Hmax]
    zero = torch.zeros((), dtype=dtype, device=probs.device)
    soft = torch.where(inside, py[:, :, None] * px[:, None, :], zero)
    cx, cy = xs.to(dtype) + 0.5, ys.to(dtype) + 0.5
    if temperature is None:
        b = boxes.to(dtype)
        bx = ((cx >= b[:, 0:1]) & (cx <= b[:, 2:3])).to(dtype)
        by = ((cy >= b[:, 1:2]) & (cy <= b[:, 3:4])).to(dtype)
    else:
        t = max(temperature, 1e-3)
        bx = torch.sigmoid((cx - boxes[:, 0:1]) / t) * torch.sigmoid((boxes[:, 2:3] - cx) / t)
        by = torch.sigmoid((cy - boxes[:, 1:2]) / t) * torch.sigmoid((boxes[:, 3:4] - cy) / t)
    hard = torch.where(inside, by[:, :, None] * bx[:, None, :], zero)
    inter = (soft * hard).sum(dim=(1, 2))
    union = soft.sum(dim=(1, 2)) + hard.sum(dim=(1, 2)) - inter
    iou = inter / union.clamp_min(1e-6)
    return torch.where(empty, zero, iou)


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
    device = seg_logits.device
    all_boxes = [b.reshape(-1, 4).to(device, probs.dtype) for b in boxes[: seg_logits.shape[0]]]
    all_labels = [lab.reshape(-1).to(device).long() for lab in labels[: seg_logits.shape[0]]]
    image = torch.cat(
        [torch.full((len(b),), i, dtype=torch.int64, device=device) for i, b in enumerate(all_boxes)]
        or [torch.zeros(0, dtype=torch.int64, device=device)]
    )
    box = torch.cat(all_boxes) if all_boxes else probs.new_zeros(0, 4)
    label = torch.cat(all_labels) if all_labels else image
    keep = (label >= 0) & (label < probs.shape[1]) & (box[:, 2] > box[:, 0]) & (box[:, 3] > box[:, 1])
    if not bool(keep.any()):
        zero = seg_logits.sum().mul(0.0).abs()
        return {"align": zero, "align_iou": torch.ones((), device=device)}
    iou = batched_box_mask_iou(probs, image[keep], label[keep], box[keep], cfg.margin)
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
    device = seg_logits.device
    preds = [pred.reshape(-1, 4) for pred, _, _ in matched]
    image = torch.cat(
        [torch.full((len(p),), i, dtype=torch.int64, device=device) for i, p in enumerate(preds)]
    )
    label = torch.cat([lab.reshape(-1).to(device).long() for _, _, lab in matched]) if matched else image
    box = torch.cat(preds) if preds else probs.new_zeros(0, 4)
    keep = (label >= 0) & (label < probs.shape[1]) & torch.isfinite(box).all(dim=1)
    # The first max_boxes usable boxes in batch order.
    idx = torch.nonzero(keep).flatten()[: cfg.max_boxes]
    if idx.numel() == 0:
        zero = seg_logits.sum().mul(0.0).abs()
        for pred, _, _ in matched:
            zero = zero + pred.sum().mul(0.0)
        return {"align": zero, "align_iou": torch.ones((), device=seg_logits.device)}
    iou = batched_box_mask_iou(probs, image[idx], label[idx], box[idx], cfg.margin, cfg.box_temperature)
    loss = alignment_penalty(iou, cfg.threshold, cfg.penalty).mean()
    return {"align": loss, "align_iou": iou.detach().mean()}
