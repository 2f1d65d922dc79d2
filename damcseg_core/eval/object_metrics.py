"""Object-level segmentation metrics: small-object mIoU, tiny-target and occluded-object recall.

DAMCSeg Sec. IV.A.2 names "Small target mIoU (area < 1024 pixels)", "Tiny target recall (area <
100 pixels)" and "Occluded object recall" without defining them; these are our definitions (they
go into the README). Objects come from the sample dict (``docs/interfaces.md``): object ``k`` is
row ``k-1`` of ``labels`` / ``occlusion`` and its visible pixels are ``instance == k``.

* **Visible area** of an object = its pixel count in the ``instance`` map. Objects with no visible
  pixel are skipped by every metric here (nothing of them can be segmented).
* **Small-object IoU** (visible area ``< small_area`` = 1024 px): the evaluation region ``R`` is the
  tight box around the object's visible pixels (inclusive min/max rows and columns of
  ``instance == k``), minus pixels whose ground truth is ignore (255) and minus pixels of *other*
  objects of the same class (a correct prediction of a neighbouring car is not an error on this
  car). Inside ``R``: ``G = (instance == k)``, ``P = (pred == label_k)``,
  ``IoU = |P & G| / |P | G|``. IoUs are averaged per class, and ``small_miou`` is the mean over the
  classes that have at least one small object.
* **Recall rule** (shared by tiny and occluded recall): an object is *recalled* when at least
  ``coverage`` (default 0.5) of its visible pixels are predicted with its class. We chose the mask
  rule over box matching because it scores the segmentation itself and works for every dataset
  with instance maps, including models without a detection head.
* **Tiny-target recall**: recall over objects with visible area ``< tiny_area`` (100 px).
* **Occluded-object recall**: recall over objects with ``occlusion > occlusion_threshold`` (0.5),
  any size; ``occlusion = 1 - visible / amodal area`` as the dataset provides it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy import ndimage

from damcseg_core.data.classes import IGNORE_INDEX, NUM_CLASSES
from damcseg_core.eval.segmentation_metrics import as_numpy

__all__ = ["ObjectMetrics", "ObjectRecord", "object_records"]


@dataclasses.dataclass(frozen=True)
class ObjectRecord:
    """What the object metrics need to know about one ground-truth object in one image."""

    label: int  # train id
    area: int  # visible pixels
    occlusion: float  # 1 - visible / amodal area
    coverage: float  # fraction of visible pixels predicted with the object's class
    small_iou: float  # box-region IoU (module docstring); NaN when not small or all ignored


def object_records(
    pred: Any,
    semantic: Any,
    instance: Any,
    labels: Any,
    occlusion: Any | None = None,
    small_area: int = 1024,
    ignore_index: int = IGNORE_INDEX,
) -> list[ObjectRecord]:
    """Measure every visible ground-truth object of one image.

    Args:
        pred: ``HxW`` predicted train ids.
        semantic: ``HxW`` ground-truth train ids (255 ignore).
        instance: ``HxW`` object index map (0 = none, ``k`` = row ``k-1`` of ``labels``).
        labels: ``[N]`` train id per object.
        occlusion: ``[N]`` occlusion ratio per object; ``None`` = all 0 (unknown).
        small_area: objects with fewer visible pixels get a ``small_iou``.
        ignore_index: ground-truth ignore label.

    Raises:
        ValueError: shapes differ, or ``instance`` refers to an object beyond ``labels``.
    """
    pred = as_numpy(pred)
    semantic = as_numpy(semantic)
    instance = as_numpy(instance).astype(np.int64)
    labels = as_numpy(labels).reshape(-1).astype(np.int64)
    n = len(labels)
    occ = np.zeros(n) if occlusion is None else as_numpy(occlusion).reshape(-1).astype(np.float64)
    if not (pred.shape == semantic.shape == instance.shape):
        raise ValueError(
            f"pred {pred.shape}, semantic {semantic.shape} and instance {instance.shape} must have one "
            "HxW shape"
        )
    if len(occ) != n:
        raise ValueError(f"occlusion has {len(occ)} entries but labels has {n}; give one per object")
    max_id = int(instance.max()) if instance.size else 0
    if max_id > n:
        raise ValueError(
            f"instance map refers to object {max_id} but labels has only {n} rows; the instance map "
            "must use k = row k-1 of labels (docs/interfaces.md)"
        )
    if n == 0:
        return []
    areas = np.bincount(instance.reshape(-1), minlength=n + 1)[1:]
    slices = ndimage.find_objects(instance, max_label=n)
    records = []
    for k, sl in enumerate(slices, start=1):
        if sl is None:  # no visible pixel
            continue
        label = int(labels[k - 1])
        inst = instance[sl]
        gt = inst == k
        hit = pred[sl] == label
        coverage = float((hit & gt).sum()) / float(areas[k - 1])
        small_iou = float("nan")
        if areas[k - 1] < small_area:
            # Other objects of the same class inside the box are neither object nor background.
            inst_labels = np.concatenate([[-1], labels])[inst]
            region = (semantic[sl] != ignore_index) & ~((inst != 0) & (inst != k) & (inst_labels == label))
            p = hit & region
            g = gt & region
            union = float((p | g).sum())
            if union > 0:  # 0 when the whole object is ignore in the semantic map
                small_iou = float((p & g).sum()) / union
        records.append(ObjectRecord(label, int(areas[k - 1]), float(occ[k - 1]), coverage, small_iou))
    return records


class ObjectMetrics:
    """Streaming small-object mIoU, tiny-target recall and occluded-object recall.

    Args:
        num_classes: number of classes (per-class small IoU).
        ignore_index: ground-truth ignore label.
        small_area: visible-area bound of "small" objects (exclusive), pixels.
        tiny_area: visible-area bound of "tiny" objects (exclusive), pixels.
        occlusion_threshold: objects with ``occlusion >`` this are "occluded".
        coverage: fraction of an object's visible pixels that must carry its class to recall it.

    Raises:
        ValueError: a threshold out of range.
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        ignore_index: int = IGNORE_INDEX,
        small_area: int = 1024,
        tiny_area: int = 100,
        occlusion_threshold: float = 0.5,
        coverage: float = 0.5,
    ) -> None:
        if small_area <= 0 or tiny_area <= 0:
            raise ValueError(f"small_area and tiny_area must be > 0 pixels, got {small_area}, {tiny_area}")
        if not 0.0 <= occlusion_threshold < 1.0:
            raise ValueError(f"occlusion_threshold must be in [0, 1), got {occlusion_threshold}")
        if not 0.0 < coverage <= 1.0:
            raise ValueError(f"coverage must be in (0, 1], got {coverage}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.small_area = small_area
        self.tiny_area = tiny_area
        self.occlusion_threshold = occlusion_threshold
        self.coverage = coverage
        self.small_iou_sum = np.zeros(num_classes, dtype=np.float64)
        self.small_count = np.zeros(num_classes, dtype=np.int64)
        self.tiny = [0, 0]  # [recalled, total]
        self.occluded = [0, 0]

    def sample_stats(
        self, pred: Any, semantic: Any, instance: Any, labels: Any, occlusion: Any | None = None
    ) -> list[ObjectRecord]:
        """Per-image object records (see :func:`object_records`)."""
        return object_records(pred, semantic, instance, labels, occlusion, self.small_area, self.ignore_index)

    def accumulate(self, records: list[ObjectRecord]) -> None:
        """Add the output of :meth:`sample_stats`."""
        for r in records:
            recalled = int(r.coverage >= self.coverage)
            if not np.isnan(r.small_iou) and 0 <= r.label < self.num_classes:
                self.small_iou_sum[r.label] += r.small_iou
                self.small_count[r.label] += 1
            if r.area < self.tiny_area:
                self.tiny[0] += recalled
                self.tiny[1] += 1
            if r.occlusion > self.occlusion_threshold:
                self.occluded[0] += recalled
                self.occluded[1] += 1

    def update(
        self, pred: Any, semantic: Any, instance: Any, labels: Any, occlusion: Any | None = None
    ) -> None:
        """Add one image (arguments as in :func:`object_records`)."""
        self.accumulate(self.sample_stats(pred, semantic, instance, labels, occlusion))

    def compute(self) -> dict[str, Any]:
        """Return ``small_miou``, ``small_iou_per_class`` (NaN = no small object of that class),
        ``tiny_recall``, ``occluded_recall`` (NaN when no such object) and the object counts."""
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = np.where(
                self.small_count > 0, self.small_iou_sum / np.maximum(self.small_count, 1), np.nan
            )
        has = self.small_count > 0
        return {
            "small_miou": float(per_class[has].mean()) if has.any() else float("nan"),
            "small_iou_per_class": [float(v) for v in per_class],
            "num_small_objects": int(self.small_count.sum()),
            "tiny_recall": self.tiny[0] / self.tiny[1] if self.tiny[1] else float("nan"),
            "num_tiny_objects": self.tiny[1],
            "occluded_recall": self.occluded[0] / self.occluded[1] if self.occluded[1] else float("nan"),
            "num_occluded_objects": self.occluded[1],
        }
