"""On-disk layout of synthetic datasets, its loader, and the preview picture.

Layout written by :func:`write_synthetic_folder` (``damcseg-make-synthetic``)::

    DIR/meta.json                 {"format": "damcseg-synthetic/1", "size": [H, W], "intrinsics": 3x3,
                                   "frames": N, "conditions": [...], "depth_scale_m": 0.002,
                                   "thermal": "counts = 100 * kelvin", "depth_models": [...],
                                   "thermal_models": [...], "camera_height_m", "hfov_deg", "seed"}
    DIR/rgb/000000.png            8-bit RGB
    DIR/depth/000000.png          16-bit depth in units of depth_scale_m = 2 mm, 0 = invalid
                                  (2 mm, not REP 118's 1 mm, so the lidar's 120 m range fits 16 bits);
                                  sparse for lidar frames (0 where no return)
    DIR/thermal/000000.png        16-bit radiometric counts (100 * kelvin)
    DIR/semantic/000000.png       8-bit Cityscapes train ids, 255 = ignore
    DIR/instance/000000.png       16-bit, 0 = none, k = object k-1 of the json
    DIR/objects/000000.json       {"boxes": [[x1,y1,x2,y2]...], "labels": [...], "occlusion": [...],
                                   "areas": [...], "condition", "stamp_ns", "sequence", "frame", "crowd",
                                   "depth_model", "thermal_model"}

Folders written before the sensor models existed lack the two model keys; their frames read back
as ``ideal``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from damcseg_core import MODALITIES
from damcseg_core.data.classes import colorize
from damcseg_core.data.io_utils import (
    DatasetFormatError,
    FrameListDataset,
    make_sample,
    read_image,
    require_dir,
    require_file,
    resolve_modalities,
)
from damcseg_core.data.synthetic.drive import SyntheticFrame
from damcseg_core.data.synthetic.world import kelvin_counts

__all__ = [
    "FORMAT",
    "SyntheticFolderConfig",
    "SyntheticFolderDataset",
    "caption",
    "depth_panel",
    "label_panel",
    "preview_grid",
    "thermal_panel",
    "write_frame",
    "write_synthetic_folder",
]

FORMAT = "damcseg-synthetic/1"
DEPTH_SCALE_M = 0.002
_FOLDERS = ("rgb", "depth", "thermal", "semantic", "instance", "objects")


def _imwrite(path: Path, img: np.ndarray) -> None:
    if img.ndim == 3:
        img = img[:, :, ::-1]  # OpenCV writes BGR
    if not cv2.imwrite(str(path), np.ascontiguousarray(img)):
        raise OSError(f"could not write {path}")


def write_frame(root: str | Path, index: int, frame: SyntheticFrame) -> None:
    """Write one frame as ``{index:06d}`` files into the layout under ``root`` (folders must exist)."""
    root = Path(root)
    name = f"{index:06d}"
    _imwrite(root / "rgb" / f"{name}.png", frame.rgb)
    units = np.round(np.nan_to_num(frame.depth, nan=0.0, posinf=0.0) / DEPTH_SCALE_M)
    # Beyond the 16-bit range is beyond any sensor: invalid, not clipped to a wrong distance.
    units = np.where((units > 0) & (units <= 65535), units, 0).astype(np.uint16)
    _imwrite(root / "depth" / f"{name}.png", units)
    _imwrite(root / "thermal" / f"{name}.png", frame.thermal)
    _imwrite(root / "semantic" / f"{name}.png", frame.semantic)
    if len(frame.labels) > 65535:
        raise ValueError("more than 65535 objects do not fit the 16-bit instance PNG")
    _imwrite(root / "instance" / f"{name}.png", frame.instance.astype(np.uint16))
    objects = {
        "boxes": frame.boxes.tolist(),
        "labels": frame.labels.tolist(),
        "occlusion": frame.occlusion.tolist(),
        "areas": frame.areas.tolist(),
        "condition": frame.condition,
        "stamp_ns": int(frame.stamp_ns),
        "sequence": frame.sequence,
        "frame": int(frame.frame_index),
        "crowd": float(frame.crowd),
        "depth_model": frame.depth_model,
        "thermal_model": frame.thermal_model,
    }
    (root / "objects" / f"{name}.json").write_text(json.dumps(objects))


def write_synthetic_folder(
    root: str | Path,
    frames: Iterable[SyntheticFrame],
    meta: dict[str, Any] | None = None,
    progress: bool = False,
    total: int | None = None,
) -> list[SyntheticFrame]:
    """Write frames to ``root`` in the documented layout and return the first frame of each condition.

    Args:
        root: Output folder (created; existing files with the same names are overwritten).
        frames: Frames to write, numbered 0, 1, ... in this order.
        meta: Extra entries for ``meta.json`` (seed, camera height, ...).
        progress: Show a tqdm progress bar.
        total: Number of frames, for the progress bar.

    Returns:
        Up to one frame per condition (in order of appearance), for a preview.
    """
    root = Path(root)
    for sub in _FOLDERS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, total=total, desc="synthetic frames", unit="frame")
    examples: dict[str, SyntheticFrame] = {}
    conditions: list[str] = []
    models: dict[str, list[str]] = {"depth_models": [], "thermal_models": []}
    n = 0
    size = intrinsics = None
    for i, frame in enumerate(frames):
        write_frame(root, i, frame)
        if frame.condition not in examples:
            examples[frame.condition] = frame
        if frame.condition not in conditions:
            conditions.append(frame.condition)
        for key, value in (("depth_models", frame.depth_model), ("thermal_models", frame.thermal_model)):
            if value not in models[key]:
                models[key].append(value)
        size, intrinsics = list(frame.semantic.shape), frame.intrinsics.tolist()
        n = i + 1
    info = {
        "format": FORMAT,
        "frames": n,
        "size": size,
        "intrinsics": intrinsics,
        "conditions": conditions,
        "depth_scale_m": DEPTH_SCALE_M,
        "thermal": "counts = 100 * kelvin (0.01 K per count)",
        **models,
        **(meta or {}),
    }
    (root / "meta.json").write_text(json.dumps(info, indent=2))
    return list(examples.values())


@dataclasses.dataclass
class SyntheticFolderConfig:
    """Options of :class:`SyntheticFolderDataset` (registry spec ``synthetic-folder:/path``)."""

    root: str = ""  # folder written by damcseg-make-synthetic
    modalities: list[str] | None = None  # subset of rgb/depth/thermal; None = all three
    size: tuple[int, int] | None = None  # output (H, W); None keeps the stored size


class SyntheticFolderDataset(FrameListDataset):
    """Reads the layout of :func:`write_synthetic_folder` back into canonical sample dicts."""

    dataset_name = "synthetic-folder"

    def __init__(
        self,
        root: str | Path,
        modalities: Sequence[str] | None = None,
        size: str | Sequence[int] | None = None,
    ) -> None:
        super().__init__(size)
        self.root = require_dir(
            root, "a synthetic dataset", "create one with damcseg-make-synthetic --out DIR"
        )
        meta_path = require_file(
            self.root / "meta.json", "the dataset description written by damcseg-make-synthetic"
        )
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{meta_path} is not valid JSON: {exc}") from exc
        if self.meta.get("format") != FORMAT:
            raise DatasetFormatError(f"{meta_path}: format {self.meta.get('format')!r} is not {FORMAT!r}")
        self.modalities = resolve_modalities(modalities, MODALITIES, "synthetic-folder") or MODALITIES
        for sub in (*self.modalities, "semantic", "instance", "objects"):
            require_dir(self.root / sub, f"{sub} files of the synthetic layout")
        self.frames = list(range(int(self.meta["frames"])))

    @classmethod
    def from_config(cls, cfg: SyntheticFolderConfig) -> SyntheticFolderDataset:
        """Build from a :class:`SyntheticFolderConfig` (used by the dataset registry)."""
        return cls(cfg.root, cfg.modalities, cfg.size)

    def _load(self, index: int) -> dict[str, Any]:
        name = f"{index:06d}"
        obj_path = require_file(self.root / "objects" / f"{name}.json", "object list of the frame")
        objects = json.loads(obj_path.read_text())
        arrays: dict[str, np.ndarray | None] = {m: None for m in MODALITIES}
        if "rgb" in self.modalities:
            arrays["rgb"] = read_image(self.root / "rgb" / f"{name}.png", what="synthetic RGB", channels=3)
        if "depth" in self.modalities:
            units = read_image(
                self.root / "depth" / f"{name}.png", what="synthetic depth", channels=1, dtype=np.uint16
            )
            arrays["depth"] = units.astype(np.float32) * np.float32(
                self.meta.get("depth_scale_m", DEPTH_SCALE_M)
            )
        if "thermal" in self.modalities:
            arrays["thermal"] = read_image(
                self.root / "thermal" / f"{name}.png",
                what="synthetic thermal counts",
                channels=1,
                dtype=np.uint16,
            )
        semantic = read_image(self.root / "semantic" / f"{name}.png", what="synthetic train ids", channels=1)
        instance = read_image(
            self.root / "instance" / f"{name}.png", what="synthetic instances", channels=1, dtype=np.uint16
        )
        return make_sample(
            **arrays,
            semantic=semantic,
            instance=instance.astype(np.int32),
            labels=np.asarray(objects["labels"], np.int64),
            occlusion=np.asarray(objects["occlusion"], np.float32),
            condition=objects["condition"],
            meta={
                "dataset": "synthetic-folder",
                "sequence": objects["sequence"],
                "frame": objects["frame"],
                "stamp_ns": objects["stamp_ns"],
                "depth_model": objects.get("depth_model", "ideal"),
                "thermal_model": objects.get("thermal_model", "ideal"),
                "path": str(self.root / "rgb" / f"{name}.png"),
            },
            size=self.size,
        )


def depth_panel(depth: np.ndarray, max_depth: float = 80.0, dilate: int = 1) -> np.ndarray:
    """Depth as a turbo colour image (near = red, far = blue), black where invalid.

    ``dilate > 1`` grows every valid pixel to a ``dilate x dilate`` square (nearest value wins),
    so that sparse lidar returns stay visible when the picture is scaled down.
    """
    depth = np.nan_to_num(np.asarray(depth, np.float32), nan=0.0, posinf=0.0)
    if dilate > 1:
        inv = np.where(depth > 0, -depth, -np.inf).astype(np.float32)
        grown = -cv2.dilate(inv, np.ones((dilate, dilate), np.uint8))
        depth = np.where(depth > 0, depth, np.where(np.isfinite(grown), grown, 0.0)).astype(np.float32)
    d = np.clip(depth / max_depth, 0, 1)
    dcol = cv2.applyColorMap((255 - d * 255).astype(np.uint8), cv2.COLORMAP_TURBO)[:, :, ::-1].copy()
    dcol[depth <= 0] = 0
    return dcol


def thermal_panel(thermal: np.ndarray, lo_c: float = -20.0, hi_c: float = 45.0) -> np.ndarray:
    """Thermal counts (100 * kelvin) as an inferno colour image over ``lo_c .. hi_c`` Celsius."""
    lo, hi = kelvin_counts(lo_c), kelvin_counts(hi_c)
    t = np.clip((thermal.astype(np.float32) - lo) / (hi - lo), 0, 1)
    return np.ascontiguousarray(
        cv2.applyColorMap((t * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[:, :, ::-1]
    )


def label_panel(frame: SyntheticFrame) -> np.ndarray:
    """Semantic colours with the object boxes drawn in white."""
    lab = np.ascontiguousarray(colorize(frame.semantic))
    for box in frame.boxes.astype(int):
        cv2.rectangle(lab, (box[0], box[1]), (box[2] - 1, box[3] - 1), (255, 255, 255), 1)
    return lab


def caption(img: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``img`` with ``text`` in its top-left corner (the input stays untouched)."""
    out = np.ascontiguousarray(img).copy()
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
    return out


def preview_grid(frames: Sequence[SyntheticFrame], max_depth: float = 80.0) -> np.ndarray:
    """One row per frame: RGB | depth (turbo, black = invalid) | thermal (inferno, -20..45 C) | labels + boxes.

    Sparse (lidar) depth is drawn with its returns dilated to 3x3 pixels. Returns an ``HxWx3``
    uint8 RGB image.
    """
    rows = []
    for f in frames:
        dcol = depth_panel(f.depth, max_depth, dilate=3 if f.depth_model == "lidar" else 1)
        rgb = caption(f.rgb, f"{f.condition} #{f.frame_index} n={len(f.labels)}")
        sep = np.full((f.rgb.shape[0], 2, 3), 255, np.uint8)
        rows.append(
            np.concatenate([rgb, sep, dcol, sep, thermal_panel(f.thermal), sep, label_panel(f)], axis=1)
        )
        rows.append(np.full((2, rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)
