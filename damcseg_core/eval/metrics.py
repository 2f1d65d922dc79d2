"""The DAMCSeg metric suite (Sec. IV.A.2) and efficiency helpers.

:class:`MetricSuite` takes ``(sample dict, PredictionResult)`` pairs (``docs/interfaces.md``) and
keeps one set of accumulators per group: ``all``, each ``condition`` (day / dusk / night / fog /
a real set's own tag) and each *predicted* scene-complexity category (simple / moderate /
complex, from ``PredictionResult.category``; the datasets carry no complexity ground truth).
Per-image statistics are computed once and added to every group the image belongs to.

The metric definitions live in the modules that implement them:
:mod:`~damcseg_core.eval.segmentation_metrics` (mIoU), :mod:`~damcseg_core.eval.boundary`
(Boundary F), :mod:`~damcseg_core.eval.object_metrics` (small-object mIoU, tiny / occluded
recall) and :mod:`~damcseg_core.eval.detection_metrics` (mAP).
"""

from __future__ import annotations

import dataclasses
import resource
import sys
from typing import Any

import numpy as np

from damcseg_core.config import ConfigError
from damcseg_core.data.classes import IGNORE_INDEX, NUM_CLASSES
from damcseg_core.data.targets import DEFAULT_MAX_OCCLUSION, DEFAULT_MIN_AREA
from damcseg_core.eval.boundary import DEFAULT_TOLERANCE_RATIO, BoundaryFScore
from damcseg_core.eval.detection_metrics import DetectionMAP
from damcseg_core.eval.object_metrics import ObjectMetrics
from damcseg_core.eval.segmentation_metrics import SegmentationIoU, as_numpy

__all__ = [
    "COMPLEXITY_NAMES",
    "MetricConfig",
    "MetricGroup",
    "MetricSuite",
    "count_parameters",
    "peak_memory",
    "spearman",
    "timing_stats",
]

COMPLEXITY_NAMES = ("simple", "moderate", "complex")
"""Names of the scene-complexity categories 0, 1, 2."""


@dataclasses.dataclass
class MetricConfig:
    """Settings of every metric; the defaults are the definitions we report in the README."""

    num_classes: int = NUM_CLASSES  # size of the label space (train ids 0..C-1)
    ignore_index: int = IGNORE_INDEX  # ground-truth label that is not evaluated
    boundary_tolerance_px: float | None = None  # fixed BF tolerance in pixels; None = ratio
    boundary_tolerance_ratio: float = DEFAULT_TOLERANCE_RATIO  # BF tolerance / image diagonal
    small_area: int = 1024  # "small object": visible area below this, pixels
    tiny_area: int = 100  # "tiny target": visible area below this, pixels
    occlusion_threshold: float = 0.5  # "occluded object": occlusion ratio above this
    recall_coverage: float = 0.5  # object recalled if this fraction of its pixels has its class
    max_detections: int = 100  # detections per image and class kept for mAP
    det_min_area: float = DEFAULT_MIN_AREA  # valid-object rule for mAP: smaller objects are ignore regions
    det_max_occlusion: float = DEFAULT_MAX_OCCLUSION  # valid-object rule: more occluded objects are ignored


class MetricGroup:
    """All accumulators of one group of images (one row of the per-condition table)."""

    def __init__(self, config: MetricConfig) -> None:
        c = config
        self.segmentation = SegmentationIoU(c.num_classes, c.ignore_index)
        self.boundary = BoundaryFScore(
            c.num_classes, c.ignore_index, c.boundary_tolerance_px, c.boundary_tolerance_ratio
        )
        self.objects = ObjectMetrics(
            c.num_classes, c.ignore_index, c.small_area, c.tiny_area, c.occlusion_threshold, c.recall_coverage
        )
        self.detection = DetectionMAP(
            c.max_detections,
            min_area=c.det_min_area,
            max_occlusion=c.det_max_occlusion,
            small_area=c.small_area,
        )
        self.num_images = 0
        self.inference_ms: list[float] = []
        self.S_values: list[float] = []  # scene complexity S per image (eq. 5)
        self.D_values: list[float] = []  # its object-density term D per image
        self.valid_objects: list[int] = []  # valid detection objects per image (for D vs count)

    def compute(self) -> dict[str, Any]:
        """Every metric of the group in one flat dict (fractions in [0, 1], NaN = undefined)."""
        out: dict[str, Any] = {"num_images": self.num_images}
        out.update(self.segmentation.compute())
        out.update(self.boundary.compute())
        out.update(self.objects.compute())
        out.update({f"det_{k}": v for k, v in self.detection.compute().items()})
        out.update(timing_stats(self.inference_ms))
        # Does the density term D follow the number of objects? (Spearman rank correlation.)
        out["D_objects_spearman"] = spearman(self.D_values, self.valid_objects)
        return out


class MetricSuite:
    """Accumulate all DAMCSeg metrics, overall and per condition / complexity group.

    Args:
        config: metric settings; ``None`` uses the defaults.

    Example:
        >>> suite = MetricSuite()
        >>> for sample in dataset:
        ...     suite.update(sample, predictor.predict(to_inputs(sample)))
        >>> suite.compute()["all"]["miou"]
    """

    def __init__(self, config: MetricConfig | None = None) -> None:
        self.config = config or MetricConfig()
        if self.config.tiny_area > self.config.small_area:
            raise ConfigError(
                f"tiny_area ({self.config.tiny_area}) must not exceed small_area ({self.config.small_area})"
            )
        self.groups: dict[str, MetricGroup] = {}
        self._probe = MetricGroup(self.config)  # computes per-image stats once for all groups

    def _group(self, key: str) -> MetricGroup:
        if key not in self.groups:
            self.groups[key] = MetricGroup(self.config)
        return self.groups[key]

    def update(self, sample: dict[str, Any], prediction: Any) -> None:
        """Add one image.

        Args:
            sample: a sample dict with at least ``semantic``; ``instance``, ``labels``,
                ``occlusion`` and ``boxes`` enable the object and detection metrics (skipped when
                ``meta["has_boxes"]`` is False); ``condition`` picks the condition group.
            prediction: a ``PredictionResult`` (or any object with ``mask``, ``boxes``, ``scores``,
                ``labels``, optionally ``category``, ``S``, ``D`` and ``inference_ms``).

        Raises:
            ValueError: no ``semantic`` in the sample, or the mask's size differs from it.
        """
        if "semantic" not in sample:
            raise ValueError(
                f"sample has no 'semantic' ground truth (keys: {sorted(sample)}); evaluation needs labelled data"
            )
        semantic = as_numpy(sample["semantic"])
        mask = as_numpy(prediction.mask)
        if mask.shape != semantic.shape:
            raise ValueError(
                f"prediction mask {mask.shape} and ground truth {semantic.shape} differ in size; the "
                "Predictor returns masks at input resolution, so feed it the sample's own images"
            )
        probe = self._probe
        seg = probe.segmentation.sample_stats(mask, semantic)
        bnd = probe.boundary.sample_stats(mask, semantic)
        meta = sample.get("meta") or {}
        has_objects = "instance" in sample and "labels" in sample and meta.get("has_boxes", True) is not False
        objs = (
            probe.objects.sample_stats(
                mask, semantic, sample["instance"], sample["labels"], sample.get("occlusion")
            )
            if has_objects
            else None
        )
        det = None
        if has_objects and "boxes" in sample:
            det = probe.detection.sample_stats(
                prediction.boxes,
                prediction.scores,
                prediction.labels,
                sample["boxes"],
                sample["labels"],
                sample.get("areas"),
                sample.get("occlusion"),
            )
        keys = ["all", f"condition/{sample.get('condition', 'unknown')}"]
        category = getattr(prediction, "category", None)
        if category is not None and 0 <= int(category) < len(COMPLEXITY_NAMES):
            keys.append(f"complexity/{COMPLEXITY_NAMES[int(category)]}")
        for key in keys:
            group = self._group(key)
            group.num_images += 1
            group.segmentation.accumulate(seg)
            group.boundary.accumulate(bnd)
            if objs is not None:
                group.objects.accumulate(objs)
            if det is not None:
                group.detection.accumulate(det)
            if getattr(prediction, "inference_ms", None) is not None:
                group.inference_ms.append(float(prediction.inference_ms))
            if getattr(prediction, "S", None) is not None:
                group.S_values.append(float(prediction.S))
            if getattr(prediction, "D", None) is not None and det is not None:
                group.D_values.append(float(prediction.D))
                group.valid_objects.append(int(det["counts"][2]))

    def compute(self) -> dict[str, Any]:
        """Return ``{"all": {...}, "condition": {name: {...}}, "complexity": {name: {...}},
        "S": [...]}``; each inner dict is :meth:`MetricGroup.compute`."""
        out: dict[str, Any] = {"all": {}, "condition": {}, "complexity": {}}
        for key, group in sorted(self.groups.items()):
            values = group.compute()
            if key == "all":
                out["all"] = values
            else:
                kind, name = key.split("/", 1)
                out[kind][name] = values
        out["S"] = list(self.groups["all"].S_values) if "all" in self.groups else []
        return out


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation of two equal-length sequences (average ranks for ties); NaN
    for fewer than 3 pairs or a constant sequence."""
    if len(a) != len(b) or len(a) < 3:
        return float("nan")

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=np.float64)
        for v in np.unique(x):  # ties share their mean rank
            tie = x == v
            r[tie] = r[tie].mean()
        return r

    ra, rb = ranks(np.asarray(a, dtype=np.float64)), ranks(np.asarray(b, dtype=np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def timing_stats(inference_ms: list[float]) -> dict[str, float]:
    """``mean_ms``, ``p50_ms``, ``p90_ms`` and ``fps = 1000 / mean_ms`` of per-frame timings.

    FPS is that of the timed part alone (for a ``PredictionResult`` the model forward pass).
    Empty input gives NaNs.
    """
    if not len(inference_ms):
        nan = float("nan")
        return {"mean_ms": nan, "p50_ms": nan, "p90_ms": nan, "fps": nan}
    t = np.asarray(inference_ms, dtype=np.float64)
    mean = float(t.mean())
    return {
        "mean_ms": mean,
        "p50_ms": float(np.percentile(t, 50)),
        "p90_ms": float(np.percentile(t, 90)),
        "fps": 1000.0 / mean if mean > 0 else float("inf"),
    }


def count_parameters(model: Any, trainable_only: bool = False) -> int:
    """Number of parameters of a ``torch.nn.Module`` (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) in seen or (trainable_only and not p.requires_grad):
            continue
        seen.add(id(p))
        total += p.numel()
    return total


def peak_memory(device: Any = "cpu") -> dict[str, Any]:
    """Peak memory in bytes, with what was measured.

    On CUDA: ``torch.cuda.max_memory_allocated(device)`` (tensors allocated by torch since the
    last ``reset_peak_memory_stats``). On CPU: the peak resident set size of the *whole process*
    (``resource.getrusage``), so it includes Python, the dataset and everything loaded before the
    evaluation; it only ever grows.

    Returns:
        ``{"peak_bytes": int, "kind": "cuda_max_allocated" | "process_peak_rss"}``.
    """
    if str(device).startswith("cuda"):
        import torch

        return {"peak_bytes": int(torch.cuda.max_memory_allocated(device)), "kind": "cuda_max_allocated"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kibibytes, macOS bytes.
    return {"peak_bytes": int(rss if sys.platform == "darwin" else rss * 1024), "kind": "process_peak_rss"}
