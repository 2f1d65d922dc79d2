"""Cityscapes (Cordts et al., CVPR 2016): RGB + depth from stereo disparity, fine labels, instances.

On-disk layout (as unpacked from the official zips)::

    root/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png   8-bit RGB
    root/gtFine/{split}/{city}/..._gtFine_labelIds.png                     8-bit labelIds
    root/gtFine/{split}/{city}/..._gtFine_instanceIds.png                  16-bit, id*1000+k
    root/disparity/{split}/{city}/..._disparity.png                        16-bit, d=(p-1)/256
    root/camera/{split}/{city}/..._camera.json                             baseline, fx

Depth is ``baseline * fx / d`` metres; ``p = 0`` (and ``p = 1``, d = 0) are invalid (depth 0).
Without a camera file the documented Cityscapes defaults are used (baseline 0.209313 m,
fx 2262.52 px, the values of most cities' calibration). Labels become the 19 train ids via the
official label table; ``instanceIds`` give instance masks and boxes of the detection classes.
Cityscapes was recorded in daytime only, so the condition tag is ``day``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from damcseg_core.data.base import DatasetBase
from damcseg_core.data.classes import LABEL_ID_TO_TRAIN_ID, label_ids_to_train_ids
from damcseg_core.data.io_utils import (
    DatasetFormatError,
    instances_from_id_map,
    make_sample,
    read_image,
    require_dir,
    require_files,
)

__all__ = [
    "DEFAULT_BASELINE_M",
    "DEFAULT_FX_PX",
    "CityscapesConfig",
    "CityscapesDataset",
    "disparity_to_depth",
]

DEFAULT_BASELINE_M = 0.209313
"""Stereo baseline used when a frame has no ``camera/*.json`` (Cityscapes calibration, metres)."""
DEFAULT_FX_PX = 2262.52
"""Focal length used when a frame has no ``camera/*.json`` (pixels, full 2048x1024 resolution)."""
SPLITS = ("train", "val", "test", "train_extra")
MODALITIES = ("rgb", "depth")


@dataclasses.dataclass
class CityscapesConfig:
    """Options of :class:`CityscapesDataset` (registry spec ``cityscapes:/root,split=val``)."""

    root: str = ""  # dataset root holding leftImg8bit/, gtFine/, disparity/, camera/
    split: str = "train"  # one of train, val, test, train_extra
    size: tuple[int, int] | None = None  # output (H, W); None keeps 1024x2048
    modalities: tuple[str, ...] | None = None  # subset of rgb, depth; None = what is on disk


def disparity_to_depth(raw: np.ndarray, baseline_m: float, fx_px: float) -> np.ndarray:
    """Convert a raw 16-bit Cityscapes disparity image to depth in metres (0 = invalid).

    Cityscapes stores ``p = 256 * d + 1`` for a disparity ``d`` in pixels and ``p = 0`` where
    stereo matching failed.
    """
    raw = np.asarray(raw, dtype=np.float64)
    disp = (raw - 1.0) / 256.0
    valid = (raw > 0) & (disp > 0)
    depth = np.zeros(raw.shape, dtype=np.float32)
    depth[valid] = (baseline_m * fx_px / disp[valid]).astype(np.float32)
    return depth


class CityscapesDataset(DatasetBase):
    """Cityscapes frames as canonical samples (``rgb``, ``depth`` where disparity exists).

    Args:
        root: Dataset root.
        split: ``train``, ``val``, ``test`` or ``train_extra``.
        size: Optional output ``(H, W)`` or ``"HxW"``.
        modalities: Subset of ``("rgb", "depth")``; ``None`` loads what is on disk. Asking for
            depth makes a missing ``disparity/{split}`` folder an error.

    Raises:
        DatasetFormatError: A required folder is missing or the split holds no images.
    """

    dataset_name = "cityscapes"
    title, split_names, modality_names = "Cityscapes", SPLITS, MODALITIES

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        size: str | Sequence[int] | None = None,
        modalities: Sequence[str] | None = None,
    ) -> None:
        super().__init__(root, split, size, modalities)
        wanted = self.requested_modalities
        img_dir = require_dir(
            self.root / "leftImg8bit" / split,
            f"Cityscapes RGB images leftImg8bit/{split}/<city>/*_leftImg8bit.png",
            "unpack leftImg8bit_trainvaltest.zip into the dataset root",
        )
        self.use_rgb = wanted is None or "rgb" in wanted
        disp_dir = self.root / "disparity" / split
        if wanted is not None and "depth" in wanted:
            require_dir(
                disp_dir,
                f"Cityscapes disparity/{split}/<city>/*_disparity.png",
                "unpack disparity_trainvaltest.zip",
            )
        self.use_depth = disp_dir.is_dir() and (wanted is None or "depth" in wanted)
        self.gt_dir = self.root / "gtFine" / split
        pattern = "*/*_leftImg8bit.png"
        self.frames = require_files(sorted(img_dir.glob(pattern)), img_dir, pattern)

    @classmethod
    def from_config(cls, cfg: CityscapesConfig) -> CityscapesDataset:
        """Build from a :class:`CityscapesConfig`."""
        return cls(cfg.root, cfg.split, cfg.size, cfg.modalities)

    def _paths(self, img_path: Path) -> dict[str, Path]:
        city = img_path.parent.name
        stem = img_path.name[: -len("_leftImg8bit.png")]
        return {
            "labels": self.gt_dir / city / f"{stem}_gtFine_labelIds.png",
            "instances": self.gt_dir / city / f"{stem}_gtFine_instanceIds.png",
            "disparity": self.root / "disparity" / self.split / city / f"{stem}_disparity.png",
            "camera": self.root / "camera" / self.split / city / f"{stem}_camera.json",
        }

    @staticmethod
    def _calibration(path: Path) -> tuple[float, float]:
        if not path.is_file():
            return DEFAULT_BASELINE_M, DEFAULT_FX_PX
        try:
            cam = json.loads(path.read_text())
            return float(cam["extrinsic"]["baseline"]), float(cam["intrinsic"]["fx"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetFormatError(
                f"{path}: expected Cityscapes camera JSON with extrinsic.baseline and intrinsic.fx ({exc})"
            ) from exc

    def _load(self, img_path: Path) -> dict[str, Any]:
        paths = self._paths(img_path)
        rgb = read_image(img_path, what="Cityscapes leftImg8bit RGB", channels=3) if self.use_rgb else None
        depth = None
        if self.use_depth:
            raw = read_image(
                paths["disparity"], what="Cityscapes 16-bit disparity", channels=1, dtype=np.uint16
            )
            depth = disparity_to_depth(raw, *self._calibration(paths["camera"]))
        semantic = None
        if paths["labels"].is_file():
            label_ids = read_image(paths["labels"], what="Cityscapes gtFine labelIds", channels=1)
            semantic = label_ids_to_train_ids(label_ids)
        instance = labels = None
        if paths["instances"].is_file():
            ids = read_image(
                paths["instances"],
                what="Cityscapes gtFine instanceIds",
                channels=1,
                dtype=(np.uint16, np.uint8),
            )
            instance, labels = instances_from_id_map(ids, LABEL_ID_TO_TRAIN_ID)
        city = img_path.parent.name
        meta = {
            "dataset": self.dataset_name,
            "sequence": city,
            "frame": img_path.name[: -len("_leftImg8bit.png")],
            "path": str(img_path),
        }
        return make_sample(
            rgb=rgb, depth=depth, semantic=semantic, instance=instance, labels=labels,
            condition="day", meta=meta, size=self.size,
        )  # fmt: skip
