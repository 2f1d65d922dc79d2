"""Per-pixel segmentation metrics: confusion matrix, per-class IoU and mIoU (DAMCSeg Sec. IV.A.2).

Definitions (these go into the README):

* ``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` over all evaluated pixels of the dataset (one confusion
  matrix summed over every image, as the Cityscapes benchmark does), not averaged per image.
* Pixels whose ground truth is ``ignore_index`` (255) or outside ``[0, num_classes)`` are not
  evaluated at all.
* A prediction outside ``[0, num_classes)`` (the Predictor's 255 = "unknown") on an evaluated pixel
  is a false negative of the ground-truth class and a false positive of no class.
* A class absent from both ground truth and prediction has ``0 / 0``: its IoU is ``NaN`` and it is
  left out of the mean (``mIoU = nanmean``), so a label space larger than the test set's content
  does not pull the mean down. A class present only in the prediction has IoU 0 and counts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from damcseg_core.data.classes import IGNORE_INDEX, NUM_CLASSES

__all__ = ["SegmentationIoU", "as_numpy", "confusion_matrix"]


def as_numpy(array: Any) -> np.ndarray:
    """Return ``array`` (numpy array, torch tensor or nested sequence) as a numpy array, on the CPU."""
    if hasattr(array, "detach"):  # torch.Tensor without importing torch here
        return array.detach().cpu().numpy()
    return np.asarray(array)


def confusion_matrix(
    pred: Any, target: Any, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Confusion matrix of one label map pair.

    Args:
        pred: predicted class ids, any integer shape.
        target: ground-truth class ids, same shape as ``pred``.
        num_classes: number of classes ``C``.
        ignore_index: ground-truth value that is not evaluated.

    Returns:
        ``[C, C + 1]`` int64 matrix; row = ground truth, column = prediction, and the extra last
        column counts evaluated pixels predicted as "unknown" (outside ``[0, C)``).

    Raises:
        ValueError: ``pred`` and ``target`` differ in shape.
    """
    pred = as_numpy(pred)
    target = as_numpy(target)
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction shape {pred.shape} differs from ground-truth shape {target.shape}; "
            "resize the prediction to the label resolution (nearest) before evaluating"
        )
    target = target.reshape(-1).astype(np.int64)
    pred = pred.reshape(-1).astype(np.int64)
    valid = (target >= 0) & (target < num_classes) & (target != ignore_index)
    target = target[valid]
    pred = pred[valid]
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    counts = np.bincount(target * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1)


class SegmentationIoU:
    """Streaming per-class IoU / mIoU / pixel accuracy from a summed confusion matrix.

    Args:
        num_classes: number of classes.
        ignore_index: ground-truth label that is skipped.

    Example:
        >>> m = SegmentationIoU(num_classes=2)
        >>> m.update(np.array([[0, 1]]), np.array([[0, 0]]))
        >>> m.compute()["iou_per_class"]
        [0.5, 0.0]
    """

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    def sample_stats(self, pred: Any, target: Any) -> np.ndarray:
        """Per-image statistics (the confusion matrix), to add to several accumulators."""
        return confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def accumulate(self, stats: np.ndarray) -> None:
        """Add the output of :meth:`sample_stats`."""
        self.confusion += stats

    def update(self, pred: Any, target: Any) -> None:
        """Add one predicted / ground-truth label map pair (any matching shapes)."""
        self.accumulate(self.sample_stats(pred, target))

    def compute(self) -> dict[str, Any]:
        """Return ``miou``, ``iou_per_class`` (NaN for absent classes), ``pixel_accuracy`` and
        ``num_pixels`` (evaluated pixels). Values are fractions in [0, 1]."""
        c = self.num_classes
        tp = np.diag(self.confusion[:, :c]).astype(np.float64)
        gt_total = self.confusion.sum(axis=1).astype(np.float64)  # TP + FN (incl. "unknown")
        pred_total = self.confusion[:, :c].sum(axis=0).astype(np.float64)  # TP + FP
        union = gt_total + pred_total - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
        num_pixels = int(gt_total.sum())
        present = ~np.isnan(iou)
        return {
            "miou": float(iou[present].mean()) if present.any() else float("nan"),
            "iou_per_class": [float(v) for v in iou],
            "pixel_accuracy": float(tp.sum() / num_pixels) if num_pixels else float("nan"),
            "num_pixels": num_pixels,
        }
