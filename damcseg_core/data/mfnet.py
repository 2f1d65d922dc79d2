"""MFNet (Ha et al., IROS 2017): 1569 aligned RGB-thermal urban frames, 480x640, 9 classes.

On-disk layout (the release of the MFNet authors)::

    root/images/<name>.png     4 channels, 8-bit: R, G, B, thermal
    root/labels/<name>.png     8-bit MFNet class ids 0..8
    root/{train,val,test,test_day,test_night}.txt   one <name> per line (no extension)

File names end in ``D`` (day) or ``N`` (night), e.g. ``00001D``; that letter, or the
``test_day``/``test_night`` list a frame comes from, gives the condition tag.

MFNet classes map to Cityscapes train ids where one has the same meaning; the rest are ignored
(255), so a model trained on our label space is scored only where both agree:

==========  ====  ================================================
MFNet id    name  train id
==========  ====  ================================================
0           unlabeled   255
1           car         13 (car)
2           person      11 (person)
3           bike        18 (bicycle; MFNet "bike" is bicycles with riders)
4           curve       255 (a kerb line; no Cityscapes class)
5           car_stop    255 (wheel stopper; no Cityscapes class)
6           guardrail   255 (Cityscapes guard rail is itself ignored)
7           color_cone  255 (no Cityscapes class)
8           bump        255 (speed bump; part of road but labelled apart)
==========  ====  ================================================

MFNet has no instance masks, so samples carry no boxes (``meta["has_boxes"] = False``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from damcseg_core.data.base import DatasetBase
from damcseg_core.data.classes import IGNORE_INDEX
from damcseg_core.data.io_utils import (
    make_sample,
    read_image,
    require_dir,
    require_file,
    require_files,
)

__all__ = ["MFNET_CLASSES", "MFNET_TO_TRAIN_ID", "MFNetConfig", "MFNetDataset"]

MFNET_CLASSES = ("unlabeled", "car", "person", "bike", "curve", "car_stop", "guardrail", "color_cone", "bump")
MFNET_TO_TRAIN_ID = np.full(256, IGNORE_INDEX, dtype=np.uint8)
"""256-entry lookup MFNet class id -> Cityscapes train id (table in the module docstring)."""
MFNET_TO_TRAIN_ID[1] = 13  # car
MFNET_TO_TRAIN_ID[2] = 11  # person
MFNET_TO_TRAIN_ID[3] = 18  # bike -> bicycle
SPLITS = ("train", "val", "test", "test_day", "test_night")
MODALITIES = ("rgb", "thermal")


@dataclasses.dataclass
class MFNetConfig:
    """Options of :class:`MFNetDataset` (registry spec ``mfnet:/root,split=test_night``)."""

    root: str = ""  # dataset root holding images/, labels/ and the split lists
    split: str = "train"  # train, val, test, test_day or test_night
    size: tuple[int, int] | None = None  # output (H, W); None keeps 480x640
    modalities: tuple[str, ...] | None = None  # subset of rgb, thermal; None = both


def _condition(name: str, split: str) -> str:
    if split == "test_day" or name.endswith("D"):
        return "day"
    if split == "test_night" or name.endswith("N"):
        return "night"
    return "unknown"


class MFNetDataset(DatasetBase):
    """MFNet RGB-T frames as canonical samples (``rgb`` and ``thermal`` in [0, 1]).

    Raises:
        DatasetFormatError: A folder or the split list is missing, the list is empty, or an image
            is not a 4-channel 8-bit PNG.
    """

    dataset_name = "mfnet"
    title, split_names, modality_names = "MFNet", SPLITS, MODALITIES

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        size: str | Sequence[int] | None = None,
        modalities: Sequence[str] | None = None,
    ) -> None:
        super().__init__(root, split, size, modalities)
        wanted = self.requested_modalities or MODALITIES
        self.use_rgb, self.use_thermal = "rgb" in wanted, "thermal" in wanted
        require_dir(self.root / "images", "MFNet 4-channel RGB-T PNGs images/<name>.png")
        require_dir(self.root / "labels", "MFNet label PNGs labels/<name>.png")
        listing = require_file(self.root / f"{split}.txt", f"the MFNet {split} split list ({split}.txt)")
        names = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
        self.frames = require_files(names, listing, "<name> lines")

    @classmethod
    def from_config(cls, cfg: MFNetConfig) -> MFNetDataset:
        """Build from an :class:`MFNetConfig`."""
        return cls(cfg.root, cfg.split, cfg.size, cfg.modalities)

    def _load(self, name: str) -> dict[str, Any]:
        img_path = self.root / "images" / f"{name}.png"
        rgbt = read_image(img_path, what="MFNet RGB-T image (R, G, B, thermal)", channels=4)
        ids = read_image(self.root / "labels" / f"{name}.png", what="MFNet label ids", channels=1)
        meta = {"dataset": self.dataset_name, "sequence": self.split, "frame": name, "path": str(img_path)}
        return make_sample(
            rgb=np.ascontiguousarray(rgbt[:, :, :3]) if self.use_rgb else None,
            thermal=np.ascontiguousarray(rgbt[:, :, 3]) if self.use_thermal else None,
            semantic=MFNET_TO_TRAIN_ID[ids],
            condition=_condition(name, self.split),
            meta=meta,
            size=self.size,
        )
