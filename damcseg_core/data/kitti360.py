"""KITTI-360 (Liao et al., TPAMI 2022): rectified left camera images with 2D semantic labels.

On-disk layout (official download scripts)::

    root/data_2d_raw/<drive>_sync/image_00/data_rect/%010d.png                 8-bit RGB
    root/data_2d_semantics/train/<drive>_sync/image_00/semantic/%010d.png      8-bit label ids
    root/data_2d_semantics/train/<drive>_sync/image_00/instance/%010d.png      16-bit id*1000+k
    root/data_2d_semantics/train/2013_05_28_drive_{train,val}_frames.txt        split lists

A split list holds one ``<image path> <semantic path>`` pair per line, relative to the root.
``split=all`` instead pairs every semantic PNG found with its raw image.

KITTI-360 label ids follow the Cityscapes labelId convention (kitti360Scripts
``helpers/labels.py``) plus extra ids, three of which have a train id there: garage (34) ->
building, gate (35) -> fence, smallpole (37) -> pole; the others are ignored. The dataset has
no dense 2D depth (LiDAR only), so samples hold ``rgb`` only. Recorded in daytime: condition
``day``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from damcseg_core.data.base import DatasetBase
from damcseg_core.data.classes import LABEL_ID_TO_TRAIN_ID
from damcseg_core.data.io_utils import (
    DatasetFormatError,
    instances_from_id_map,
    make_sample,
    read_image,
    require_dir,
    require_file,
    require_files,
)

__all__ = ["KITTI360_TO_TRAIN_ID", "Kitti360Config", "Kitti360Dataset"]

KITTI360_TO_TRAIN_ID = LABEL_ID_TO_TRAIN_ID.copy()
"""256-entry lookup KITTI-360 label id -> Cityscapes train id (kitti360Scripts labels.py)."""
KITTI360_TO_TRAIN_ID[34] = 2  # garage -> building
KITTI360_TO_TRAIN_ID[35] = 4  # gate -> fence
KITTI360_TO_TRAIN_ID[37] = 5  # smallpole -> pole
SPLITS = ("train", "val", "all")


@dataclasses.dataclass
class Kitti360Config:
    """Options of :class:`Kitti360Dataset` (registry spec ``kitti360:/root,split=val``)."""

    root: str = ""  # dataset root holding data_2d_raw/ and data_2d_semantics/
    split: str = "train"  # train or val (official frame lists), or all (every labelled frame)
    size: tuple[int, int] | None = None  # output (H, W); None keeps 376x1408


class Kitti360Dataset(DatasetBase):
    """KITTI-360 labelled frames (``image_00``) as canonical samples with ``rgb`` only.

    Raises:
        DatasetFormatError: A folder or split list is missing, a listed file does not exist, or
            the split holds no frames.
    """

    dataset_name = "kitti360"
    title, split_names = "KITTI-360", SPLITS

    def __init__(
        self, root: str | Path, split: str = "train", size: str | Sequence[int] | None = None
    ) -> None:
        super().__init__(root, split, size)
        require_dir(self.root / "data_2d_raw", "KITTI-360 images data_2d_raw/<drive>_sync/image_00/data_rect")
        sem_root = require_dir(
            self.root / "data_2d_semantics" / "train",
            "KITTI-360 labels data_2d_semantics/train/<drive>_sync/image_00/semantic",
        )
        if split == "all":
            pattern = "*/image_00/semantic/*.png"
            sems = require_files(sorted(sem_root.glob(pattern)), sem_root, pattern)
            self.frames = [(self._raw_for(p), p) for p in sems]
        else:
            listing = require_file(
                sem_root / f"2013_05_28_drive_{split}_frames.txt",
                f"the KITTI-360 {split} split list (or use split=all to take every labelled frame)",
            )
            self.frames = []
            for n, line in enumerate(listing.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split()
                if len(parts) != 2:
                    raise DatasetFormatError(
                        f"{listing}:{n}: expected '<image path> <semantic path>', got {line!r}"
                    )
                self.frames.append((self.root / parts[0], self.root / parts[1]))
            require_files(self.frames, listing, "<image> <semantic> lines")

    @classmethod
    def from_config(cls, cfg: Kitti360Config) -> Kitti360Dataset:
        """Build from a :class:`Kitti360Config`."""
        return cls(cfg.root, cfg.split, cfg.size)

    def _raw_for(self, sem_path: Path) -> Path:
        drive = sem_path.parents[2].name
        return self.root / "data_2d_raw" / drive / "image_00" / "data_rect" / sem_path.name

    def _load(self, frame: tuple[Path, Path]) -> dict[str, Any]:
        img_path, sem_path = frame
        rgb = read_image(img_path, what="KITTI-360 rectified RGB image", channels=3)
        label_ids = read_image(sem_path, what="KITTI-360 semantic label ids", channels=1)
        semantic = KITTI360_TO_TRAIN_ID[label_ids]
        inst_path = sem_path.parent.parent / "instance" / sem_path.name
        instance = labels = None
        if inst_path.is_file():
            ids = read_image(inst_path, what="KITTI-360 instance ids", channels=1, dtype=np.uint16)
            instance, labels = instances_from_id_map(ids, KITTI360_TO_TRAIN_ID)
        meta = {
            "dataset": self.dataset_name,
            "sequence": sem_path.parents[2].name,
            "frame": int(sem_path.stem) if sem_path.stem.isdigit() else sem_path.stem,
            "path": str(img_path),
        }
        return make_sample(
            rgb=rgb,
            semantic=semantic,
            instance=instance,
            labels=labels,
            condition="day",
            meta=meta,
            size=self.size,
        )
