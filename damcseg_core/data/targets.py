"""Which ground-truth objects a detector is asked to find (training) and scored on (evaluation).

The synthetic world (and the instance maps of real datasets) give a box for every visible
fragment of every object, down to single pixels: 30-45 boxes per 256x512 frame, most of them
under 16 px. A driving stack cannot use a 3-pixel box and no detector at stride 8 can localise
one, so asking for them only teaches the detector noise. The rule, shared by the detection loss
and :class:`~damcseg_core.eval.detection_metrics.DetectionMAP`:

* an object is **valid** when its visible area is at least ``min_area`` pixels *at label
  resolution* (default 100: the paper's tiny-target threshold) and its occluded fraction is at
  most ``max_occlusion`` (default 0.9: a sliver of a hidden object is not a box a planner can use);
* every other object is an **ignore region**: in training the anchors whose centre lies inside
  it are neither positive nor negative and it is never force-matched; in evaluation it is a COCO
  "crowd" region: a detection on it is neither a true nor a false positive.

Invalid objects stay in the segmentation targets and in the tiny-target recall metric.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

__all__ = ["DEFAULT_MAX_OCCLUSION", "DEFAULT_MIN_AREA", "ValidObjectRule", "valid_objects"]

DEFAULT_MIN_AREA = 100.0
"""Visible pixels an object needs to be a detection target (the paper's tiny threshold)."""
DEFAULT_MAX_OCCLUSION = 0.9
"""Largest occluded fraction of a detection target."""


@dataclasses.dataclass
class ValidObjectRule:
    """Thresholds of the valid-object rule (see the module docstring)."""

    min_area: float = DEFAULT_MIN_AREA  # visible pixels at label resolution; smaller objects are ignored
    max_occlusion: float = DEFAULT_MAX_OCCLUSION  # objects more occluded than this are ignored

    def __post_init__(self) -> None:
        if self.min_area < 0:
            raise ValueError(f"min_area must be >= 0 pixels, got {self.min_area}")
        if not 0.0 <= self.max_occlusion <= 1.0:
            raise ValueError(f"max_occlusion must be in [0, 1], got {self.max_occlusion}")


def _box_areas(boxes: Any) -> Any:
    return (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)


def valid_objects(
    boxes: Any,
    areas: Any | None = None,
    occlusion: Any | None = None,
    min_area: float = DEFAULT_MIN_AREA,
    max_occlusion: float = DEFAULT_MAX_OCCLUSION,
) -> Any:
    """Boolean mask of the valid objects (torch in -> torch out, numpy in -> numpy out).

    Args:
        boxes: ``[N, 4]`` xyxy boxes.
        areas: ``[N]`` visible pixel areas; ``None`` uses the box areas (an upper bound).
        occlusion: ``[N]`` occluded fractions; ``None`` means unknown (not occluded).
        min_area / max_occlusion: the rule's thresholds.
    """
    if torch.is_tensor(boxes):
        boxes = boxes.reshape(-1, 4)
        area = _box_areas(boxes) if areas is None else areas.reshape(-1).to(boxes.dtype)
        ok = (area >= min_area) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        if occlusion is not None:
            ok &= occlusion.reshape(-1).to(boxes.device) <= max_occlusion
        return ok
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    area = _box_areas(boxes) if areas is None else np.asarray(areas, dtype=np.float64).reshape(-1)
    ok = (area >= min_area) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if occlusion is not None:
        ok &= np.asarray(occlusion, dtype=np.float64).reshape(-1) <= max_occlusion
    return ok
