"""Class definitions shared by data, model, evaluation and the ROS node.

We use the 19 Cityscapes *train ids* everywhere (255 = ignore / unknown), so that models trained
on the synthetic world, Cityscapes, KITTI-360 and Dark Zurich share one label space.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_PALETTE",
    "DETECTION_TRAIN_IDS",
    "IGNORE_INDEX",
    "LABEL_ID_TO_TRAIN_ID",
    "NUM_CLASSES",
    "colorize",
    "label_ids_to_train_ids",
]

IGNORE_INDEX = 255
"""Label value meaning "ignore / unknown" in every label map we produce or read."""

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
NUM_CLASSES = len(CITYSCAPES_CLASSES)

CITYSCAPES_PALETTE = np.array(
    [
        [128, 64, 128], [244, 35, 232], [70, 70, 70], [102, 102, 156], [190, 153, 153],
        [153, 153, 153], [250, 170, 30], [220, 220, 0], [107, 142, 35], [152, 251, 152],
        [70, 130, 180], [220, 20, 60], [255, 0, 0], [0, 0, 142], [0, 0, 70], [0, 60, 100],
        [0, 80, 100], [0, 0, 230], [119, 11, 32],
    ],
    dtype=np.uint8,
)  # fmt: skip

DETECTION_TRAIN_IDS: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
"""Train ids that are detected as objects (boxes): traffic light/sign and the 8 Cityscapes
instance classes. Detection class index ``k`` means train id ``DETECTION_TRAIN_IDS[k]``."""

# Official Cityscapes label table (cityscapesScripts labels.py): labelId -> trainId.
_LABEL_TO_TRAIN = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
    25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
LABEL_ID_TO_TRAIN_ID = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _label_id, _train_id in _LABEL_TO_TRAIN.items():
    LABEL_ID_TO_TRAIN_ID[_label_id] = _train_id


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map a Cityscapes ``labelIds`` image (uint8) to train ids; unlisted ids become 255."""
    return LABEL_ID_TO_TRAIN_ID[np.asarray(label_ids, dtype=np.uint8)]


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """Colour an ``HxW`` train-id map with the Cityscapes palette (ignore -> black), ``HxWx3`` uint8."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = CITYSCAPES_PALETTE
    return lut[np.asarray(train_ids, dtype=np.uint8)]
