"""COCO-style detection mAP@0.5 and mAP@[.5:.95] (the protocol of ``pycocotools.COCOeval``, bbox).

What it reproduces (``test_eval_detection.py`` checks it against pycocotools to 1e-4):

* IoU of xyxy boxes without the "+1" pixel convention.
* Per image and class, detections are sorted by score (stable) and cut to ``max_detections``
  (100); each detection is matched greedily, in score order, to the still unmatched ground-truth
  box of its class with the highest IoU ``>= t``.
* Per class, all images' detections are ranked by score; precision is made monotone
  (non-increasing in recall) and sampled at 101 recall points ``0, 0.01, ..., 1``; AP is the mean
  of those samples, 0 where the recall is never reached.
* ``map_50`` is the mean AP at ``t = 0.5``; ``map`` the mean over ``t = 0.50, 0.55, ..., 0.95``.
  Classes without ground truth in the whole set are left out of the means (COCO's ``-1``); a
  class with ground truth and no detection has AP 0. All areas count (COCO ``areaRng='all'``);
  there are no crowd boxes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from damcseg_core.eval.segmentation_metrics import as_numpy

__all__ = ["IOU_THRESHOLDS", "RECALL_POINTS", "DetectionMAP", "box_iou"]

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
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _match(iou: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Greedy COCO matching; ``iou`` is ``[D, G]`` with detections in score order.

    Returns:
        ``[T, D]`` bool, True where the detection is a true positive at threshold ``t``.
    """
    num_det, num_gt = iou.shape
    tp = np.zeros((len(thresholds), num_det), dtype=bool)
    for ti, t in enumerate(thresholds):
        taken = np.zeros(num_gt, dtype=bool)
        for d in range(num_det):
            best, best_iou = -1, min(t, 1 - 1e-10)
            for g in range(num_gt):
                # ">=" keeps COCO's tie rule: among equal IoUs the later ground truth wins.
                if not taken[g] and iou[d, g] >= best_iou:
                    best, best_iou = g, iou[d, g]
            if best >= 0:
                taken[best] = True
                tp[ti, d] = True
    return tp


class DetectionMAP:
    """Streaming COCO-style box mAP (see the module docstring for the protocol).

    Args:
        max_detections: detections kept per image and class, highest scores first.
        iou_thresholds: IoU thresholds; the first must be 0.5 for ``map_50``.
    """

    def __init__(self, max_detections: int = 100, iou_thresholds: np.ndarray = IOU_THRESHOLDS) -> None:
        self.max_detections = max_detections
        self.iou_thresholds = np.asarray(iou_thresholds, dtype=np.float64)
        # class -> list of (scores [D], true-positive flags [T, D]) per image, and GT counts.
        self._scores: dict[int, list[np.ndarray]] = {}
        self._tps: dict[int, list[np.ndarray]] = {}
        self._num_gt: dict[int, int] = {}

    def sample_stats(
        self, boxes: Any, scores: Any, labels: Any, gt_boxes: Any, gt_labels: Any
    ) -> dict[int, tuple[np.ndarray, np.ndarray, int]]:
        """Per-image ``{class: (scores, tp [T, D], num_gt)}``.

        Raises:
            ValueError: boxes, scores and labels disagree in length.
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
        stats = {}
        for c in np.union1d(labels, gt_labels):
            d = np.flatnonzero(labels == c)
            d = d[np.argsort(-scores[d], kind="mergesort")][: self.max_detections]
            g = np.flatnonzero(gt_labels == c)
            tp = _match(box_iou(boxes[d], gt_boxes[g]), self.iou_thresholds)
            stats[int(c)] = (scores[d], tp, len(g))
        return stats

    def accumulate(self, stats: dict[int, tuple[np.ndarray, np.ndarray, int]]) -> None:
        """Add the output of :meth:`sample_stats`."""
        for c, (scores, tp, num_gt) in stats.items():
            self._scores.setdefault(c, []).append(scores)
            self._tps.setdefault(c, []).append(tp)
            self._num_gt[c] = self._num_gt.get(c, 0) + num_gt

    def update(self, boxes: Any, scores: Any, labels: Any, gt_boxes: Any, gt_labels: Any) -> None:
        """Add one image: predicted xyxy ``boxes [N,4]``, ``scores [N]``, ``labels [N]`` and the
        ground truth ``gt_boxes [M,4]``, ``gt_labels [M]``."""
        self.accumulate(self.sample_stats(boxes, scores, labels, gt_boxes, gt_labels))

    def _average_precision(self, c: int) -> np.ndarray:
        """``[T]`` AP of class ``c`` (which has ground truth)."""
        scores = np.concatenate(self._scores[c])
        tp = np.concatenate(self._tps[c], axis=1)
        order = np.argsort(-scores, kind="mergesort")
        tp = tp[:, order]
        tps = np.cumsum(tp, axis=1, dtype=np.float64)
        fps = np.cumsum(~tp, axis=1, dtype=np.float64)
        ap = np.zeros(len(self.iou_thresholds))
        for ti in range(len(self.iou_thresholds)):
            recall = tps[ti] / self._num_gt[c]
            precision = tps[ti] / np.maximum(tps[ti] + fps[ti], np.spacing(1))
            precision = np.maximum.accumulate(precision[::-1])[::-1]  # monotone envelope
            idx = np.searchsorted(recall, RECALL_POINTS, side="left")
            sampled = np.zeros(len(RECALL_POINTS))
            ok = idx < len(precision)
            sampled[ok] = precision[idx[ok]]
            ap[ti] = sampled.mean()
        return ap

    def compute(self) -> dict[str, Any]:
        """Return ``map`` (mean over IoU 0.5:0.95), ``map_50``, ``map_75``, ``ap_per_class``
        (``{train id: AP@[.5:.95]}``, classes with ground truth only) and ``num_gt``."""
        classes = sorted(c for c, n in self._num_gt.items() if n > 0)
        if not classes:
            return {
                "map": float("nan"),
                "map_50": float("nan"),
                "map_75": float("nan"),
                "ap_per_class": {},
                "num_gt": 0,
            }
        ap = np.stack([self._average_precision(c) for c in classes])  # [K, T]
        t75 = np.flatnonzero(np.isclose(self.iou_thresholds, 0.75))
        return {
            "map": float(ap.mean()),
            "map_50": float(ap[:, 0].mean()),
            "map_75": float(ap[:, t75[0]].mean()) if len(t75) else float("nan"),
            "ap_per_class": {int(c): float(v) for c, v in zip(classes, ap.mean(axis=1))},
            "num_gt": int(sum(self._num_gt.values())),
        }
