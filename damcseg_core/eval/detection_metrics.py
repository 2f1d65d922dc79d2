"""COCO-style detection mAP (the protocol of ``pycocotools.COCOeval``, bbox), with ignore regions.

What it reproduces (``test_eval_detection.py`` checks it against pycocotools to 1e-4, crowd
regions and area ranges included):

* IoU of xyxy boxes without the "+1" pixel convention; against an ignore region the overlap
  is ``intersection / detection area`` (COCO's ``iscrowd`` rule).
* Ground-truth objects that fail the valid-object rule (:mod:`damcseg_core.data.targets`:
  visible area < ``min_area`` or occluded fraction > ``max_occlusion``) are ignore regions: they
  do not count as ground truth, and a detection matched to one is neither a true nor a false
  positive. ``min_area=0, max_occlusion=1`` turns the rule off.
* Per image and class, detections are sorted by score (stable) and cut to ``max_detections``
  (100); each detection is matched greedily, in score order, to the still unmatched valid
  ground-truth box of its class with the highest IoU ``>= t``, else to an ignore region.
* Per class, all images' detections are ranked by score; precision is made monotone
  (non-increasing in recall) and sampled at 101 recall points ``0, 0.01, ..., 1``; AP is the mean
  of those samples, 0 where the recall is never reached.
* ``map_50`` is the mean AP at ``t = 0.5``; ``map`` the mean over ``t = 0.50, 0.55, ..., 0.95``.
  Classes without valid ground truth in the whole set are left out of the means (COCO's ``-1``).
* Size buckets (COCO ``areaRng``, on the objects' visible area and the detections' box area):
  ``small`` = ``[min_area, small_area)`` and ``large`` = ``[small_area, inf)`` px, reported as
  ``map_50_small`` / ``map_small`` etc.; objects outside a bucket are ignored in it, and so are
  unmatched detections whose box area lies outside it.
* Counting statistics over all images (valid objects, IoU 0.5): ``recall_50`` (matched valid
  objects / valid objects), ``boxes_per_frame`` (detections handed in, i.e. what the node
  publishes), ``valid_gt_per_frame``, ``boxes_to_gt`` (their ratio) and ``fp_per_frame``
  (detections matching neither a valid object nor an ignore region).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from damcseg_core.data.targets import DEFAULT_MAX_OCCLUSION, DEFAULT_MIN_AREA, valid_objects
from damcseg_core.eval.segmentation_metrics import as_numpy

__all__ = ["IOU_THRESHOLDS", "RECALL_POINTS", "DetectionMAP", "box_iou", "box_iou_inter"]

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
"""COCO IoU thresholds 0.50:0.05:0.95."""
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
"""COCO's 101 recall sample points."""


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``[N, 4]`` and ``[M, 4]`` xyxy boxes, ``[N, M]`` float64."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    inter = box_iou_inter(a, b)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _ious(det: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """``[D, G]`` IoU; for crowd (ignore) ground truth ``intersection / detection area``."""
    iou = box_iou(det, gt)
    if crowd.any() and len(det):
        inter = box_iou_inter(det, gt[crowd])
        area = np.clip(det[:, 2] - det[:, 0], 0, None) * np.clip(det[:, 3] - det[:, 1], 0, None)
        with np.errstate(invalid="ignore", divide="ignore"):
            iou[:, crowd] = np.where(area[:, None] > 0, inter / area[:, None], 0.0)
    return iou


def box_iou_inter(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection areas of ``[N, 4]`` and ``[M, 4]`` xyxy boxes."""
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    return w * h


def _match(
    iou: np.ndarray, thresholds: np.ndarray, gt_ignore: np.ndarray, crowd: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy COCO matching; ``iou`` is ``[D, G]`` with detections in score order and ground
    truth sorted non-ignored first.

    Returns:
        ``tp [T, D]`` (matched a non-ignored GT), ``det_ignore [T, D]`` (matched an ignored GT)
        and ``gt_matched [T, G]``.
    """
    num_det, num_gt = iou.shape
    tp = np.zeros((len(thresholds), num_det), dtype=bool)
    det_ignore = np.zeros((len(thresholds), num_det), dtype=bool)
    gt_matched = np.zeros((len(thresholds), num_gt), dtype=bool)
    for ti, t in enumerate(thresholds):
        taken = gt_matched[ti]
        for d in range(num_det):
            best, best_iou = -1, min(t, 1 - 1e-10)
            for g in range(num_gt):
                if taken[g] and not crowd[g]:
                    continue
                if best > -1 and not gt_ignore[best] and gt_ignore[g]:
                    break  # a valid match is never traded for an ignore region
                # ">=" keeps COCO's tie rule: among equal IoUs the later ground truth wins.
                if iou[d, g] >= best_iou:
                    best, best_iou = g, iou[d, g]
            if best >= 0:
                taken[best] = True
                if gt_ignore[best]:
                    det_ignore[ti, d] = True
                else:
                    tp[ti, d] = True
    return tp, det_ignore, gt_matched


_RANGES = ("all", "small", "large")


class DetectionMAP:
    """Streaming COCO-style box mAP (see the module docstring for the protocol).

    Args:
        max_detections: detections kept per image and class, highest scores first.
        iou_thresholds: IoU thresholds; the first must be 0.5 for ``map_50``.
        min_area / max_occlusion: the valid-object rule; smaller or more occluded objects are
            ignore regions (``min_area=0, max_occlusion=1``: every object counts).
        small_area: boundary between the ``small`` and ``large`` buckets, pixels.
    """

    def __init__(
        self,
        max_detections: int = 100,
        iou_thresholds: np.ndarray = IOU_THRESHOLDS,
        min_area: float = DEFAULT_MIN_AREA,
        max_occlusion: float = DEFAULT_MAX_OCCLUSION,
        small_area: float = 1024.0,
    ) -> None:
        self.max_detections = max_detections
        self.iou_thresholds = np.asarray(iou_thresholds, dtype=np.float64)
        self.min_area, self.max_occlusion, self.small_area = float(min_area), float(max_occlusion), small_area
        self.area_ranges = {
            "all": (0.0, np.inf),
            "small": (self.min_area, float(small_area)),
            "large": (float(small_area), np.inf),
        }
        # range -> class -> list of (scores [D], true-positive flags [T, D], ignored flags [T, D])
        # per image, and range -> class -> valid GT count.
        self._dets: dict[str, dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]] = {
            r: {} for r in _RANGES
        }
        self._num_gt: dict[str, dict[int, int]] = {r: {} for r in _RANGES}
        self._counts = np.zeros(5, dtype=np.int64)  # images, detections, valid GT, matched GT, FPs

    def sample_stats(
        self,
        boxes: Any,
        scores: Any,
        labels: Any,
        gt_boxes: Any,
        gt_labels: Any,
        gt_areas: Any = None,
        gt_occlusion: Any = None,
    ) -> dict[str, Any]:
        """Per-image statistics for :meth:`accumulate`.

        Raises:
            ValueError: boxes, scores and labels disagree in length (or the ground truth does).
        """
        boxes = as_numpy(boxes).astype(np.float64).reshape(-1, 4)
        scores = as_numpy(scores).astype(np.float64).reshape(-1)
        labels = as_numpy(labels).astype(np.int64).reshape(-1)
        gt_boxes = as_numpy(gt_boxes).astype(np.float64).reshape(-1, 4)
        gt_labels = as_numpy(gt_labels).astype(np.int64).reshape(-1)
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError(
                f"detections disagree: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels"
            )
        if len(gt_boxes) != len(gt_labels):
            raise ValueError(f"ground truth disagrees: {len(gt_boxes)} boxes, {len(gt_labels)} labels")
        box_area = np.clip(gt_boxes[:, 2] - gt_boxes[:, 0], 0, None) * np.clip(
            gt_boxes[:, 3] - gt_boxes[:, 1], 0, None
        )
        areas = box_area if gt_areas is None else as_numpy(gt_areas).astype(np.float64).reshape(-1)
        occ = None if gt_occlusion is None else as_numpy(gt_occlusion).astype(np.float64).reshape(-1)
        crowd_all = ~valid_objects(gt_boxes, areas, occ, self.min_area, self.max_occlusion)
        det_area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
        stats: dict[str, Any] = {r: {} for r in _RANGES}
        matched_valid = fps = 0
        for c in np.union1d(labels, gt_labels):
            d = np.flatnonzero(labels == c)
            d = d[np.argsort(-scores[d], kind="mergesort")][: self.max_detections]
            g_all = np.flatnonzero(gt_labels == c)
            for r, (lo, hi) in self.area_ranges.items():
                crowd = crowd_all[g_all]
                ignore = crowd | (areas[g_all] < lo) | (areas[g_all] > hi)
                order = np.argsort(ignore, kind="mergesort")  # non-ignored first
                g = g_all[order]
                ig, cr = ignore[order], crowd[order]
                iou = _ious(boxes[d], gt_boxes[g], cr)
                tp, det_ig, gt_m = _match(iou, self.iou_thresholds, ig, cr)
                outside = (det_area[d] < lo) | (det_area[d] > hi)
                det_ig |= ~tp & ~det_ig & outside[None, :]
                stats[r][int(c)] = (scores[d], tp, det_ig, int((~ig).sum()))
                if r == "all":
                    matched_valid += int(gt_m[0][~ig].sum())
                    fps += int((~tp[0] & ~det_ig[0]).sum())
        valid_gt = int((~crowd_all).sum())
        stats["counts"] = np.array([1, len(boxes), valid_gt, matched_valid, fps], dtype=np.int64)
        return stats

    def accumulate(self, stats: dict[str, Any]) -> None:
        """Add the output of :meth:`sample_stats`."""
        for r in _RANGES:
            for c, (scores, tp, det_ig, num_gt) in stats[r].items():
                self._dets[r].setdefault(c, []).append((scores, tp, det_ig))
                self._num_gt[r][c] = self._num_gt[r].get(c, 0) + num_gt
        self._counts += stats["counts"]

    def update(
        self,
        boxes: Any,
        scores: Any,
        labels: Any,
        gt_boxes: Any,
        gt_labels: Any,
        gt_areas: Any = None,
        gt_occlusion: Any = None,
    ) -> None:
        """Add one image: predicted xyxy ``boxes [N,4]``, ``scores [N]``, ``labels [N]``, the
        ground truth ``gt_boxes [M,4]``, ``gt_labels [M]`` and optionally the objects' visible
        ``gt_areas [M]`` (default: box areas) and occluded fractions ``gt_occlusion [M]``."""
        self.accumulate(self.sample_stats(boxes, scores, labels, gt_boxes, gt_labels, gt_areas, gt_occlusion))

    def _average_precision(self, r: str, c: int) -> np.ndarray:
        """``[T]`` AP of class ``c`` (which has valid ground truth) in area range ``r``."""
        parts = self._dets[r][c]
        scores = np.concatenate([p[0] for p in parts])
        tp = np.concatenate([p[1] for p in parts], axis=1)
        ig = np.concatenate([p[2] for p in parts], axis=1)
        order = np.argsort(-scores, kind="mergesort")
        tp, ig = tp[:, order], ig[:, order]
        tps = np.cumsum(tp & ~ig, axis=1, dtype=np.float64)
        fps = np.cumsum(~tp & ~ig, axis=1, dtype=np.float64)
        ap = np.zeros(len(self.iou_thresholds))
        for ti in range(len(self.iou_thresholds)):
            keep = ~ig[ti]
            t_tp, t_fp = tps[ti][keep], fps[ti][keep]
            recall = t_tp / self._num_gt[r][c]
            precision = t_tp / np.maximum(t_tp + t_fp, np.spacing(1))
            precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
            idx = np.searchsorted(recall, RECALL_POINTS, side="left")
            sampled = np.zeros(len(RECALL_POINTS))
            ok = idx < len(precision)
            sampled[ok] = precision[idx[ok]]
            ap[ti] = sampled.mean()
        return ap

    def compute(self) -> dict[str, Any]:
        """Return ``map`` (mean over IoU 0.5:0.95), ``map_50``, ``map_75``, the same per size
        bucket (``map_small``, ``map_50_small``, ``map_large``, ``map_50_large``), ``ap_per_class``
        (``{train id: AP@[.5:.95]}``, classes with valid ground truth only), ``ap50_per_class``,
        ``num_gt`` (valid objects) and the counting statistics of the module docstring."""
        out: dict[str, Any] = {}
        t75 = np.flatnonzero(np.isclose(self.iou_thresholds, 0.75))
        for r in _RANGES:
            classes = sorted(c for c, n in self._num_gt[r].items() if n > 0)
            suffix = "" if r == "all" else f"_{r}"
            if not classes:
                out.update({f"map{suffix}": float("nan"), f"map_50{suffix}": float("nan")})
                if r == "all":
                    out.update(
                        {"map_75": float("nan"), "ap_per_class": {}, "ap50_per_class": {}, "num_gt": 0}
                    )
                continue
            ap = np.stack([self._average_precision(r, c) for c in classes])  # [K, T]
            out[f"map{suffix}"] = float(ap.mean())
            out[f"map_50{suffix}"] = float(ap[:, 0].mean())
            if r == "all":
                out["map_75"] = float(ap[:, t75[0]].mean()) if len(t75) else float("nan")
                out["ap_per_class"] = {int(c): float(v) for c, v in zip(classes, ap.mean(axis=1))}
                out["ap50_per_class"] = {int(c): float(v) for c, v in zip(classes, ap[:, 0])}
                out["num_gt"] = int(sum(self._num_gt[r].values()))
        images, dets, valid_gt, matched, fps = (int(v) for v in self._counts)
        n = max(images, 1)
        out["recall_50"] = matched / valid_gt if valid_gt else float("nan")
        out["boxes_per_frame"] = dets / n if images else float("nan")
        out["valid_gt_per_frame"] = valid_gt / n if images else float("nan")
        out["boxes_to_gt"] = dets / valid_gt if valid_gt else float("nan")
        out["fp_per_frame"] = fps / n if images else float("nan")
        return out
