"""Detection loss L_det of the DSJL (DAMCSeg paper, Sec. III.C.3): targets, assignment, losses.

Targets (:func:`build_targets`): per image, the ground-truth objects of a detection class are
split by the valid-object rule of :mod:`damcseg_core.data.targets` into **valid** boxes (the
detector must find them) and **ignore regions** (tiny or heavily occluded fragments: no loss
either way). Labels that are not detection classes are dropped.

Assignment (its own function, tested on hand-built cases; ``matches[j]`` is the GT index for a
positive anchor, ``-1`` negative, ``-2`` ignored):

* ``assigner="atss"`` (default), ATSS (Zhang et al., CVPR 2020): for each valid GT, the
  ``atss_topk`` anchors per pyramid level whose centres are nearest to the GT centre are the
  candidates; those with ``IoU >= mean + std`` of the candidates' IoUs *and* their centre inside
  the GT are positive. The threshold adapts to the object: a 10 px pedestrian whose best anchor
  IoU is 0.1 still gets the anchors that fit it best, a large car gets only the good ones, so
  small objects are not starved by a fixed IoU of 0.5 and large ones are not flooded. We chose it
  over FCOS centre sampling because it keeps the anchor head (and its ONNX graph) and has no
  per-level size ranges to tune to this data's box distribution. An anchor that qualifies for
  several GTs goes to the one it overlaps most (quality, never write order); a GT left without
  any positive then takes its best candidate that is unowned or whose owner keeps another
  positive, so every valid GT has at least one positive.
* ``assigner="max_iou"``: the RetinaNet rule (``positive_iou`` / ``negative_iou``, each GT's
  best anchor forced positive, ties resolved by IoU), kept for comparison.

Anchors whose centre lies inside an ignore region and that are not positive are ignored.

Losses, normalised by ``max(1, number of positive anchors in the batch)``:

* classification: ``torchvision.ops.sigmoid_focal_loss`` (alpha 0.25, gamma 2) over all
  non-ignored anchors and classes;
* box: ``box_loss`` (``"diou"`` by default: ``torchvision.ops.distance_box_iou_loss``, whose
  centre-distance term still pulls a small box's centre when it lies inside a large prediction,
  where GIoU's gradient vanishes) on the decoded boxes, plus ``l1_weight`` times smooth-L1 on the
  ``BoxCoder(weights=(1, 1, 1, 1))`` deltas, which keeps a size gradient in log space.

``L_det = cls_weight * focal + box_weight * (box + l1_weight * l1)``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import (
    box_iou,
    complete_box_iou_loss,
    distance_box_iou_loss,
    generalized_box_iou_loss,
    sigmoid_focal_loss,
)

from damcseg_core.data.classes import DETECTION_TRAIN_IDS
from damcseg_core.data.targets import DEFAULT_MAX_OCCLUSION, DEFAULT_MIN_AREA, valid_objects

__all__ = [
    "DetectionLossConfig",
    "DetectionTargets",
    "assign_atss",
    "build_targets",
    "detection_loss",
    "match_anchors",
    "matched_predictions",
    "train_ids_to_det_classes",
]

_BOX_CODER = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0), bbox_xform_clip=math.log(1000.0 / 16))
_BOX_LOSSES = {
    "giou": generalized_box_iou_loss,
    "diou": distance_box_iou_loss,
    "ciou": complete_box_iou_loss,
}


@dataclasses.dataclass
class DetectionLossConfig:
    """Targets, assignment and weights of L_det."""

    assigner: str = "atss"  # "atss" (adaptive, level-aware) or "max_iou" (RetinaNet thresholds)
    atss_topk: int = 9  # ATSS candidates per pyramid level and GT
    focal_alpha: float = 0.25  # focal loss positive-class weight (RetinaNet)
    focal_gamma: float = 2.0  # focal loss focusing exponent
    positive_iou: float = 0.5  # max_iou: anchors with IoU >= this to their best GT are positives
    negative_iou: float = 0.4  # max_iou: anchors with best IoU < this are negatives; in between ignored
    min_area: float = DEFAULT_MIN_AREA  # valid-object rule: visible pixels; smaller objects are ignored
    max_occlusion: float = DEFAULT_MAX_OCCLUSION  # valid-object rule: more occluded objects are ignored
    box_loss: str = "diou"  # "diou", "ciou" or "giou" on the decoded boxes
    l1_weight: float = 1.0  # smooth-L1 on the encoded deltas (0 disables)
    cls_weight: float = 1.0  # weight of the focal classification term
    box_weight: float = 1.0  # weight of the box terms

    def __post_init__(self) -> None:
        if not 0.0 <= self.negative_iou <= self.positive_iou <= 1.0:
            raise ValueError(
                f"need 0 <= negative_iou <= positive_iou <= 1, got {self.negative_iou}, {self.positive_iou}"
            )
        if self.assigner not in ("atss", "max_iou"):
            raise ValueError(f"assigner must be 'atss' or 'max_iou', got {self.assigner!r}")
        if self.box_loss not in _BOX_LOSSES:
            raise ValueError(f"box_loss must be one of {sorted(_BOX_LOSSES)}, got {self.box_loss!r}")
        if self.atss_topk < 1:
            raise ValueError(f"atss_topk must be >= 1, got {self.atss_topk}")


@dataclasses.dataclass
class DetectionTargets:
    """Assignment of one image: valid GT ``boxes [N, 4]``, their detection ``classes [N]`` and
    train-id ``labels [N]``, and ``matches [A]`` (GT index, ``-1`` negative, ``-2`` ignored)."""

    boxes: torch.Tensor
    classes: torch.Tensor
    labels: torch.Tensor
    matches: torch.Tensor


def train_ids_to_det_classes(labels: torch.Tensor) -> torch.Tensor:
    """Map train ids to detection class indices ``k``; ids that are not detected map to -1."""
    lut = torch.full((256,), -1, dtype=torch.int64, device=labels.device)
    lut[torch.tensor(DETECTION_TRAIN_IDS, device=labels.device)] = torch.arange(
        len(DETECTION_TRAIN_IDS), device=labels.device
    )
    return lut[labels.long().clamp(0, 255)]


def _centres(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def _ignore_anchors(matches: torch.Tensor, anchors: torch.Tensor, ignore_boxes: torch.Tensor | None) -> None:
    """Mark negatives whose centre lies inside an ignore region as ignored (in place)."""
    if ignore_boxes is None or ignore_boxes.numel() == 0:
        return
    c = _centres(anchors)
    ib = ignore_boxes.reshape(-1, 4).to(c)
    inside = (
        (c[:, None, 0] >= ib[None, :, 0])
        & (c[:, None, 0] <= ib[None, :, 2])
        & (c[:, None, 1] >= ib[None, :, 1])
        & (c[:, None, 1] <= ib[None, :, 3])
    ).any(dim=1)
    matches[inside & (matches == -1)] = -2


def _resolve(quality: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """Anchors -> GT by highest quality, then give every starving GT one candidate.

    Args:
        quality: ``[N, A]`` the IoU where anchor ``j`` qualifies for GT ``i``, else ``-1``.
        candidates: ``[N, C]`` anchor indices a starving GT may take, best first; it takes the
            first that is unowned or whose owner keeps another positive.
    """
    n = quality.shape[0]
    best_q, best_gt = quality.max(dim=0)
    matches = torch.where(best_q >= 0, best_gt, torch.full_like(best_gt, -1))
    owned = torch.bincount(matches[matches >= 0], minlength=n)
    starving = torch.nonzero(owned == 0).flatten().tolist()
    if starving:
        owned_l = owned.tolist()
        match_l = matches.tolist()
        for g in starving:
            for a in candidates[g].tolist():
                owner = match_l[a]
                if owner < 0 or (owner != g and owned_l[owner] > 1):
                    if owner >= 0:
                        owned_l[owner] -= 1
                    match_l[a] = g
                    owned_l[g] += 1
                    break
        matches = torch.tensor(match_l, dtype=torch.int64, device=quality.device)
    return matches


def assign_atss(
    gt_boxes: torch.Tensor,
    anchors: torch.Tensor,
    anchor_levels: torch.Tensor | None = None,
    topk: int = 9,
    ignore_boxes: torch.Tensor | None = None,
) -> torch.Tensor:
    """ATSS assignment (see the module docstring).

    Args:
        gt_boxes: ``[N, 4]`` xyxy valid GT boxes.
        anchors: ``[A, 4]`` xyxy anchors.
        anchor_levels: ``[A]`` pyramid level of each anchor (levels contiguous, as the head emits
            them); ``None`` treats all anchors as one level.
        topk: candidates per level and GT.
        ignore_boxes: ``[M, 4]`` ignore regions.

    Returns:
        ``[A]`` int64 matches: GT index ``>= 0``, ``-1`` negative, ``-2`` ignored.
    """
    num_anchors = anchors.shape[0]
    device = anchors.device
    if gt_boxes.numel() == 0:
        matches = torch.full((num_anchors,), -1, dtype=torch.int64, device=device)
        _ignore_anchors(matches, anchors, ignore_boxes)
        return matches
    gt_boxes = gt_boxes.reshape(-1, 4).to(anchors)
    ca, cg = _centres(anchors), _centres(gt_boxes)
    dist = torch.cdist(cg, ca)  # [N, A]
    iou = box_iou(gt_boxes, anchors)  # [N, A]
    if anchor_levels is None:
        bounds = [0, num_anchors]
    else:
        counts = torch.bincount(anchor_levels.to(device), minlength=1).tolist()
        bounds = [0]
        for c in counts:
            bounds.append(bounds[-1] + c)
    cands = []
    for s, e in itertools.pairwise(bounds):
        if e > s:
            cands.append(dist[:, s:e].topk(min(topk, e - s), dim=1, largest=False).indices + s)
    cand = torch.cat(cands, dim=1)  # [N, C]
    cand_iou = iou.gather(1, cand)
    thr = cand_iou.mean(dim=1, keepdim=True) + (cand_iou.std(dim=1, keepdim=True) if cand.shape[1] > 1 else 0)
    cc = ca[cand]  # [N, C, 2]
    inside = (
        (cc[..., 0] > gt_boxes[:, None, 0])
        & (cc[..., 0] < gt_boxes[:, None, 2])
        & (cc[..., 1] > gt_boxes[:, None, 1])
        & (cc[..., 1] < gt_boxes[:, None, 3])
    )
    pos = (cand_iou >= thr) & inside
    quality = torch.full_like(iou, -1.0)
    quality.scatter_(1, cand, torch.where(pos, cand_iou, torch.full_like(cand_iou, -1.0)))
    # A starving GT's fallback order: highest IoU first, nearest centre among equal IoUs.
    key = cand_iou - 1e-6 * dist.gather(1, cand) / (dist.max() + 1)
    order = cand.gather(1, key.argsort(dim=1, descending=True))
    matches = _resolve(quality, order)
    _ignore_anchors(matches, anchors, ignore_boxes)
    return matches


def match_anchors(
    gt_boxes: torch.Tensor,
    anchors: torch.Tensor,
    positive_iou: float = 0.5,
    negative_iou: float = 0.4,
    ignore_boxes: torch.Tensor | None = None,
) -> torch.Tensor:
    """RetinaNet max-IoU assignment (``assigner="max_iou"``; see the module docstring).

    Args:
        gt_boxes: ``[N, 4]`` xyxy.
        anchors: ``[A, 4]`` xyxy.
        positive_iou / negative_iou: the thresholds.
        ignore_boxes: ``[M, 4]`` ignore regions.

    Returns:
        ``[A]`` int64: the matched GT index ``>= 0`` for positives, ``-1`` for negatives and
        ``-2`` for ignored anchors.
    """
    num_anchors = anchors.shape[0]
    if gt_boxes.numel() == 0:
        matches = torch.full((num_anchors,), -1, dtype=torch.int64, device=anchors.device)
        _ignore_anchors(matches, anchors, ignore_boxes)
        return matches
    iou = box_iou(gt_boxes, anchors)  # [N, A]
    quality = torch.where(iou >= positive_iou, iou, torch.full_like(iou, -1.0))
    # Each GT's best anchors qualify too (low-quality matches); an anchor shared by several GTs
    # goes to the GT it overlaps most.
    gt_best = iou.max(dim=1, keepdim=True).values
    quality = torch.where((iou == gt_best) & (gt_best > 0), iou, quality)
    order = iou.argsort(dim=1, descending=True)
    matches = _resolve(quality, order)
    best_iou = iou.max(dim=0).values
    neg = matches < 0
    matches[neg & (best_iou >= negative_iou)] = -2
    _ignore_anchors(matches, anchors, ignore_boxes)
    return matches


def build_targets(
    anchors: torch.Tensor,
    gt_boxes: list[torch.Tensor],
    gt_labels: list[torch.Tensor],
    cfg: DetectionLossConfig | None = None,
    anchor_levels: torch.Tensor | None = None,
    gt_areas: list[torch.Tensor] | None = None,
    gt_occlusion: list[torch.Tensor] | None = None,
) -> list[DetectionTargets]:
    """Valid boxes, ignore regions and the anchor assignment of every image of a batch.

    Args:
        anchors: ``[A, 4]`` xyxy anchors.
        gt_boxes / gt_labels: per image ``[N, 4]`` boxes and ``[N]`` train ids.
        cfg: assignment settings and the valid-object rule.
        anchor_levels: ``[A]`` pyramid level per anchor (ATSS).
        gt_areas / gt_occlusion: per image ``[N]`` visible areas and occluded fractions
            (``None``: box areas, not occluded).
    """
    cfg = cfg or DetectionLossConfig()
    out = []
    for i in range(len(gt_boxes)):
        boxes = gt_boxes[i].to(anchors.device, anchors.dtype).reshape(-1, 4)
        labels = gt_labels[i].to(anchors.device).reshape(-1).long()
        classes = train_ids_to_det_classes(labels)
        areas = gt_areas[i].to(anchors.device) if gt_areas is not None else None
        occ = gt_occlusion[i].to(anchors.device) if gt_occlusion is not None else None
        is_det = (classes >= 0) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        valid = is_det & valid_objects(boxes, areas, occ, cfg.min_area, cfg.max_occlusion)
        ignore = boxes[is_det & ~valid]
        boxes, classes, labels = boxes[valid], classes[valid], labels[valid]
        if cfg.assigner == "atss":
            matches = assign_atss(boxes, anchors, anchor_levels, cfg.atss_topk, ignore)
        else:
            matches = match_anchors(boxes, anchors, cfg.positive_iou, cfg.negative_iou, ignore)
        out.append(DetectionTargets(boxes=boxes, classes=classes, labels=labels, matches=matches))
    return out


def detection_loss(
    cls_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    anchors: torch.Tensor,
    gt_boxes: list[torch.Tensor] | None,
    gt_labels: list[torch.Tensor] | None,
    cfg: DetectionLossConfig | None = None,
    *,
    anchor_levels: torch.Tensor | None = None,
    gt_areas: list[torch.Tensor] | None = None,
    gt_occlusion: list[torch.Tensor] | None = None,
    targets: list[DetectionTargets] | None = None,
) -> dict[str, torch.Tensor]:
    """L_det for a batch.

    Args:
        cls_logits: ``[B, A, K]`` class logits.
        box_deltas: ``[B, A, 4]`` regression outputs.
        anchors: ``[A, 4]`` xyxy anchors.
        gt_boxes: per image ``[N, 4]`` xyxy pixel boxes (unused when ``targets`` is given).
        gt_labels: per image ``[N]`` Cityscapes train ids.
        cfg: weights, thresholds and the valid-object rule.
        anchor_levels / gt_areas / gt_occlusion: see :func:`build_targets`.
        targets: a precomputed :func:`build_targets` result (the DSJL shares it with L_align).

    Returns:
        ``det_cls`` (normalised focal loss), ``det_box`` (normalised box loss incl. the L1 term),
        ``det_num_pos`` (positives per image, a detached statistic) and ``det`` (the weighted sum).
    """
    cfg = cfg or DetectionLossConfig()
    b = cls_logits.shape[0]
    anchors = anchors.to(cls_logits.dtype)
    if targets is None:
        if gt_boxes is None or gt_labels is None or len(gt_boxes) != b or len(gt_labels) != b:
            n_boxes = None if gt_boxes is None else len(gt_boxes)
            n_labels = None if gt_labels is None else len(gt_labels)
            raise ValueError(f"need {b} per-image gt_boxes/gt_labels, got {n_boxes}/{n_labels}")
        targets = build_targets(anchors, gt_boxes, gt_labels, cfg, anchor_levels, gt_areas, gt_occlusion)
    if len(targets) != b:
        raise ValueError(f"need {b} per-image targets, got {len(targets)}")
    box_fn = _BOX_LOSSES[cfg.box_loss]
    cls_sum = cls_logits.new_zeros(())
    box_sum = cls_logits.new_zeros(())
    num_pos = 0
    for i, t in enumerate(targets):
        matches = t.matches
        pos = matches >= 0
        valid = matches >= -1
        target = torch.zeros_like(cls_logits[i])
        target[pos, t.classes[matches[pos]]] = 1.0
        cls_sum = cls_sum + sigmoid_focal_loss(
            cls_logits[i][valid], target[valid], cfg.focal_alpha, cfg.focal_gamma, reduction="sum"
        )
        if pos.any():
            gt = t.boxes[matches[pos]].to(box_deltas.dtype)
            deltas = box_deltas[i][pos]
            decoded = _BOX_CODER.decode_single(deltas, anchors[pos])
            box_sum = box_sum + box_fn(decoded, gt, reduction="sum")
            if cfg.l1_weight > 0:
                target_deltas = _BOX_CODER.encode_single(gt, anchors[pos])
                l1 = F.smooth_l1_loss(deltas, target_deltas, beta=1.0 / 9, reduction="sum")
                box_sum = box_sum + cfg.l1_weight * l1
        num_pos += int(pos.sum())
    norm = max(1, num_pos)
    det_cls = cls_sum / norm
    det_box = box_sum / norm
    return {
        "det_cls": det_cls,
        "det_box": det_box,
        "det_num_pos": torch.tensor(num_pos / max(1, b), device=cls_logits.device),
        "det": cfg.cls_weight * det_cls + cfg.box_weight * det_box,
    }


def matched_predictions(
    box_deltas: torch.Tensor, anchors: torch.Tensor, targets: list[DetectionTargets]
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per image, the detector's box for each valid GT that has a positive anchor.

    Returns:
        Per image ``(pred_boxes [P, 4], gt_boxes [P, 4], labels [P])``: for each matched GT the
        decoded box (with gradient) of its positive anchor whose prediction overlaps it most.
    """
    out = []
    anchors = anchors.to(box_deltas.dtype)
    for i, t in enumerate(targets):
        pos = torch.nonzero(t.matches >= 0).flatten()
        if pos.numel() == 0:
            empty = box_deltas.new_zeros(0, 4)
            out.append((empty, empty, t.labels.new_zeros(0)))
            continue
        gt_idx = t.matches[pos]
        pred = _BOX_CODER.decode_single(box_deltas[i][pos], anchors[pos])
        with torch.no_grad():
            q = box_iou(pred, t.boxes.to(pred.dtype)).gather(1, gt_idx[:, None]).squeeze(1)
            # Best positive per GT: sort by (GT, quality) and keep the last of each GT.
            order = torch.argsort(gt_idx.double() * 4.0 + q.double().clamp(0, 1))
            g_sorted = gt_idx[order]
            last = torch.ones_like(g_sorted, dtype=torch.bool)
            last[:-1] = g_sorted[1:] != g_sorted[:-1]
            pick = order[last]
        g = gt_idx[pick]
        out.append((pred[pick], t.boxes[g], t.labels[g]))
    return out
