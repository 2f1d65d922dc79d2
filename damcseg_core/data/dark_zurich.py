"""Dark Zurich (Sakaridis et al., ICCV 2019): the same Zurich drives at day, twilight and night.

On-disk layout (``Dark_Zurich_train_anon`` / ``Dark_Zurich_val_anon`` zips)::

    root/rgb_anon/{split}/{day,twilight,night}/GOPRxxxx/GOPRxxxx_frame_NNNNNN_rgb_anon.png
    root/gt/{split}/night/GOPRxxxx/GOPRxxxx_frame_NNNNNN_gt_labelTrainIds.png   (val only)

Ground truth exists only for the night val (and withheld test) frames and is already in
Cityscapes train ids. Frames without a label file get an all-255 label map and
``meta["has_labels"] = False``. Condition from the folder: day -> ``day``, twilight -> ``dusk``,
night -> ``night``. RGB only; no instances (``meta["has_boxes"] = False``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from damcseg_core.data.base import DatasetBase
from damcseg_core.data.io_utils import (
    make_sample,
    read_image,
    require_dir,
    require_files,
)

__all__ = ["CONDITION_TAGS", "DarkZurichConfig", "DarkZurichDataset"]

CONDITION_TAGS = {"day": "day", "twilight": "dusk", "night": "night"}
"""Dark Zurich folder -> our condition tag."""
SPLITS = ("train", "val", "val_ref", "test")


@dataclasses.dataclass
class DarkZurichConfig:
    """Options of :class:`DarkZurichDataset` (registry spec ``darkzurich:/root,split=val``)."""

    root: str = ""  # dataset root holding rgb_anon/ and gt/
    split: str = "val"  # train, val, val_ref or test
    size: tuple[int, int] | None = None  # output (H, W); None keeps 1080x1920
    conditions: tuple[str, ...] | None = None  # subset of day, twilight, night; None = all on disk


class DarkZurichDataset(DatasetBase):
    """Dark Zurich frames as canonical samples (``rgb``; labels where the split has them).

    Raises:
        DatasetFormatError: ``rgb_anon/{split}`` is missing, or the selection holds no frames.
    """

    dataset_name = "darkzurich"
    title, split_names, condition_names = "Dark Zurich", SPLITS, tuple(CONDITION_TAGS)

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        size: str | Sequence[int] | None = None,
        conditions: Sequence[str] | None = None,
    ) -> None:
        super().__init__(root, split, size, conditions=conditions)
        img_root = require_dir(
            self.root / "rgb_anon" / split,
            f"Dark Zurich images rgb_anon/{split}/<day|twilight|night>/GOPRxxxx/*_rgb_anon.png",
            f"unpack Dark_Zurich_{split}_anon.zip into the dataset root",
        )
        wanted = tuple(conditions) if conditions else tuple(CONDITION_TAGS)
        pattern = "GOPR*/*_rgb_anon.png"
        frames = [p for c in wanted for p in sorted((img_root / c).glob(pattern))]
        self.frames = require_files(frames, img_root, f"<{'|'.join(wanted)}>/{pattern}")

    @classmethod
    def from_config(cls, cfg: DarkZurichConfig) -> DarkZurichDataset:
        """Build from a :class:`DarkZurichConfig`."""
        return cls(cfg.root, cfg.split, cfg.size, cfg.conditions)

    def _load(self, img_path: Path) -> dict[str, Any]:
        folder = img_path.parents[1].name
        stem = img_path.name[: -len("_rgb_anon.png")]
        gt_path = (
            self.root / "gt" / self.split / folder / img_path.parent.name / f"{stem}_gt_labelTrainIds.png"
        )
        rgb = read_image(img_path, what="Dark Zurich RGB image", channels=3)
        semantic = None
        if gt_path.is_file():
            semantic = read_image(gt_path, what="Dark Zurich labelTrainIds", channels=1)
        meta = {
            "dataset": self.dataset_name,
            "sequence": img_path.parent.name,
            "frame": stem,
            "path": str(img_path),
        }
        return make_sample(
            rgb=rgb, semantic=semantic, condition=CONDITION_TAGS[folder], meta=meta, size=self.size
        )
