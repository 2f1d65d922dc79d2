"""Shared helpers of the real-dataset loaders and the bag reader: strict image reading, label and
instance conversion, and assembly of the canonical sample dict of ``docs/interfaces.md``.

Every reader checks what it gets (file present, decodable, bit depth, channel count) and raises
:class:`DatasetFormatError` naming the file, what was expected and what was found, so a wrongly
unpacked dataset fails on the first sample with a message that says how to fix it, instead of
training on silently squashed 16-bit data (FIELD_NOTES, user complaint 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from damcseg_core.data.classes import DETECTION_TRAIN_IDS, IGNORE_INDEX

__all__ = [
    "DatasetFormatError",
    "FrameListDataset",
    "boxes_from_instances",
    "instances_from_id_map",
    "make_sample",
    "parse_size",
    "read_image",
    "require_dir",
    "require_file",
    "require_files",
    "resolve_modalities",
]

_DETECTION_LUT = np.zeros(256, dtype=bool)
_DETECTION_LUT[list(DETECTION_TRAIN_IDS)] = True


class DatasetFormatError(ValueError):
    """A dataset folder or file is missing or not in the expected format; the message names the path."""


def require_dir(path: str | Path, what: str, fix: str = "") -> Path:
    """Return ``path`` if it is a directory, else raise naming it, what it should hold and the fix."""
    path = Path(path)
    if not path.is_dir():
        hint = f"; {fix}" if fix else ""
        raise DatasetFormatError(f"missing folder {path} (expected {what}){hint}")
    return path


def require_file(path: str | Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise naming it and what it should be."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFormatError(f"missing file {path} (expected {what})")
    return path


def require_files(files: Sequence[Path], where: str | Path, pattern: str) -> list[Path]:
    """Raise when a split enumerated no files, naming the folder and the file pattern searched."""
    if not files:
        raise DatasetFormatError(
            f"no files matching {pattern!r} under {where}: the split is empty; check the dataset root "
            "and the split name"
        )
    return list(files)


_DTYPE_NAMES = {np.dtype(np.uint8): "8-bit", np.dtype(np.uint16): "16-bit"}


def read_image(
    path: str | Path,
    *,
    what: str,
    channels: int | tuple[int, ...],
    dtype: type | tuple[type, ...] = np.uint8,
) -> np.ndarray:
    """Read an image file exactly as stored, checking its bit depth and channel count.

    Colour images come back in RGB(A) order (OpenCV decodes to BGR(A)); single-channel images
    come back as ``HxW``.

    Args:
        path: Image file.
        what: What the file holds, for error messages (e.g. "Cityscapes disparity").
        channels: Allowed channel count(s), 1 meaning a plain ``HxW`` image.
        dtype: Allowed dtype(s): ``np.uint8`` and/or ``np.uint16``.

    Raises:
        DatasetFormatError: The file is missing, cannot be decoded, or has another bit depth or
            channel count than allowed.
    """
    path = require_file(path, what)
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetFormatError(f"cannot decode {path} as an image (expected {what})")
    allowed_ch = (channels,) if isinstance(channels, int) else tuple(channels)
    allowed_dt = tuple(np.dtype(d) for d in (dtype if isinstance(dtype, tuple) else (dtype,)))
    n_ch = 1 if img.ndim == 2 else img.shape[2]
    if img.dtype not in allowed_dt or n_ch not in allowed_ch:
        want = " or ".join(_DTYPE_NAMES.get(d, str(d)) for d in allowed_dt)
        found = _DTYPE_NAMES.get(img.dtype, str(img.dtype))
        raise DatasetFormatError(
            f"{path}: expected {what} as a {want} image with {' or '.join(map(str, allowed_ch))} "
            f"channel(s), found {found} with {n_ch} channel(s)"
        )
    if img.ndim == 3 and n_ch == 1:
        img = img[:, :, 0]
    elif n_ch == 3:
        img = img[:, :, ::-1]
    elif n_ch == 4:
        img = img[:, :, [2, 1, 0, 3]]
    return np.ascontiguousarray(img)


def resolve_modalities(
    requested: Sequence[str] | None, supported: Sequence[str], dataset: str
) -> tuple[str, ...] | None:
    """Check a user's modality selection against what a dataset provides.

    Returns ``None`` for "whatever is on disk" (``requested`` is ``None``), else the selection.

    Raises:
        ValueError: ``requested`` is empty or names a modality the dataset does not have.
    """
    if requested is None:
        return None
    requested = tuple(requested)
    bad = [m for m in requested if m not in supported]
    if not requested or bad:
        raise ValueError(
            f"{dataset} provides modalities {list(supported)}; got {list(requested)} "
            "(pick a non-empty subset, e.g. modalities=rgb+depth)"
        )
    return requested


def parse_size(value: str | Sequence[int] | None) -> tuple[int, int] | None:
    """Parse an output size ``"HxW"`` (or a 2-sequence) into ``(H, W)``; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"size must look like HxW (e.g. 256x512), got {value!r}")
        value = (int(parts[0]), int(parts[1]))
    if len(value) != 2 or min(int(v) for v in value) <= 0:
        raise ValueError(f"size must be two positive integers (H, W), got {value!r}")
    return int(value[0]), int(value[1])


def instances_from_id_map(id_map: np.ndarray, label_to_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split a Cityscapes-style instance id image into an instance map and per-object train ids.

    Cityscapes ``*_instanceIds.png`` and KITTI-360 ``instance/*.png`` store ``labelId * 1000 + k``
    for pixels of a countable object and the bare ``labelId`` (< 1000) for everything else. Only
    objects whose train id is a detection class become instances.

    Args:
        id_map: ``HxW`` integer image as stored.
        label_to_train: 256-entry lookup table labelId -> train id.

    Returns:
        ``instance`` int32 ``HxW`` (0 = none, ``k`` = object ``k-1``) and ``labels`` int64 ``[N]``,
        objects ordered by their stored id.
    """
    id_map = np.asarray(id_map).astype(np.int64)
    instance = np.zeros(id_map.shape, dtype=np.int32)
    ids = np.unique(id_map[id_map >= 1000])
    label_ids = np.clip(ids // 1000, 0, 255)
    train = label_to_train[label_ids].astype(np.int64)
    keep = _DETECTION_LUT[train]
    labels = []
    for obj_id, train_id in zip(ids[keep], train[keep]):
        labels.append(train_id)
        instance[id_map == obj_id] = len(labels)
    return instance, np.asarray(labels, dtype=np.int64)


def boxes_from_instances(instance: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (xyxy, exclusive right/bottom edge) and pixel areas of objects ``1..n`` of ``instance``.

    Objects without a pixel get a zero box and zero area.
    """
    boxes = np.zeros((n, 4), dtype=np.float32)
    areas = np.zeros(n, dtype=np.float32)
    if n == 0:
        return boxes, areas
    ys, xs = np.nonzero(instance)
    ks = instance[ys, xs].astype(np.int64) - 1
    valid = (ks >= 0) & (ks < n)
    ys, xs, ks = ys[valid], xs[valid], ks[valid]
    areas[:] = np.bincount(ks, minlength=n)[:n]
    x1 = np.full(n, np.inf)
    y1 = np.full(n, np.inf)
    x2 = np.full(n, -np.inf)
    y2 = np.full(n, -np.inf)
    np.minimum.at(x1, ks, xs)
    np.minimum.at(y1, ks, ys)
    np.maximum.at(x2, ks, xs + 1)
    np.maximum.at(y2, ks, ys + 1)
    has = areas > 0
    boxes[has] = np.stack([x1, y1, x2, y2], axis=1)[has]
    return boxes, areas


def _nearest_index(src: int, dst: int) -> np.ndarray:
    # Half-pixel centres: output pixel i samples source pixel floor((i + 0.5) * src / dst).
    return np.minimum(((np.arange(dst) + 0.5) * src / dst).astype(np.int64), src - 1)


def _resize(img: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    if nearest:
        # One explicit sampling for every nearest resize (labels, instances, depth), so that a
        # pixel keeps its class, its instance and its depth together; any dtype works.
        return img[_nearest_index(img.shape[0], h)][:, _nearest_index(img.shape[1], w)]
    # INTER_AREA avoids aliasing when shrinking; linear when enlarging.
    interp = cv2.INTER_AREA if h < img.shape[0] and w < img.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def _thermal_to_unit(thermal: np.ndarray) -> np.ndarray:
    if thermal.dtype == np.uint16:
        return thermal.astype(np.float32) / 65535.0
    if thermal.dtype == np.uint8:
        return thermal.astype(np.float32) / 255.0
    out = np.asarray(thermal, dtype=np.float32)
    if np.nanmin(out, initial=0.0) < 0.0 or np.nanmax(out, initial=0.0) > 1.0:
        raise ValueError(
            "thermal given as floats must already be full-scale normalised to [0, 1]; pass the raw "
            "uint8/uint16 counts instead"
        )
    return out


def make_sample(
    *,
    rgb: np.ndarray | None = None,
    depth: np.ndarray | None = None,
    thermal: np.ndarray | None = None,
    semantic: np.ndarray | None = None,
    instance: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    occlusion: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    condition: str = "unknown",
    meta: dict[str, Any] | None = None,
    size: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Assemble the canonical sample dict (``docs/interfaces.md``) from numpy arrays.

    Args:
        rgb: ``HxWx3`` uint8, RGB order.
        depth: ``HxW`` float metres; NaN, inf, negative and 0 all become 0 (invalid).
        thermal: ``HxW`` uint16 or uint8 counts (divided by the full scale), or floats in [0, 1].
        semantic: ``HxW`` train ids (255 ignore); ``None`` means "no labels": all 255 and
            ``meta["has_labels"] = False``.
        instance: ``HxW`` int, ``k`` = object ``k-1`` of ``labels``. When given, boxes and areas
            are computed from it (after resizing), so they always enclose the visible pixels.
        labels: ``[N]`` train ids of the objects; ``None`` means no box ground truth
            (``meta["has_boxes"] = False``).
        occlusion: ``[N]`` occluded fraction; ``None`` means unknown (0).
        boxes: ``[N,4]`` xyxy, used only when ``instance`` is ``None`` (scaled with the image).
        condition: Condition tag.
        meta: Extra metadata (dataset, sequence, frame, stamp_ns, path).
        size: Optional output ``(H, W)``: images resized (area/linear), depth and labels nearest.

    Raises:
        ValueError: No modality given, or a modality with an unexpected shape.
    """
    mods = {"rgb": rgb, "depth": depth, "thermal": thermal}
    if all(v is None for v in mods.values()):
        raise ValueError("a sample needs at least one of rgb, depth, thermal")
    ref = next(v for v in (semantic, rgb, depth, thermal) if v is not None)
    src_hw = tuple(ref.shape[:2])
    out_hw = tuple(size) if size is not None else src_hw
    meta = dict(meta or {})
    sample: dict[str, Any] = {}
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
        rgb = _resize(rgb, out_hw, nearest=False)
        sample["rgb"] = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255.0
    if depth is not None:
        depth = np.asarray(depth, dtype=np.float32)
        if depth.ndim != 2:
            raise ValueError(f"depth must be HxW metres, got shape {depth.shape}")
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
        sample["depth"] = torch.from_numpy(_resize(depth, out_hw, nearest=True)).unsqueeze(0)
    if thermal is not None:
        thermal = np.asarray(thermal)
        if thermal.ndim != 2:
            raise ValueError(f"thermal must be HxW, got shape {thermal.shape}")
        unit = _resize(_thermal_to_unit(thermal), out_hw, nearest=False)
        sample["thermal"] = torch.from_numpy(np.clip(unit, 0.0, 1.0)).unsqueeze(0)
    sample["present"] = torch.tensor([v is not None for v in mods.values()], dtype=torch.bool)

    if semantic is None:
        meta.setdefault("has_labels", False)
        sem = np.full(out_hw, IGNORE_INDEX, dtype=np.uint8)
    else:
        meta.setdefault("has_labels", True)
        sem = _resize(np.asarray(semantic).astype(np.uint8), out_hw, nearest=True)
    sample["semantic"] = torch.from_numpy(sem.astype(np.int64))

    if labels is None:
        meta.setdefault("has_boxes", False)
        labels = np.zeros(0, dtype=np.int64)
        instance = None
        boxes = None
        occlusion = None
    else:
        meta.setdefault("has_boxes", True)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = len(labels)
    occ = np.zeros(n, dtype=np.float32) if occlusion is None else np.array(occlusion, dtype=np.float32)
    if occ.shape != (n,):
        raise ValueError(f"occlusion must have one value per object ({n}), got shape {occ.shape}")
    if instance is not None:
        inst = _resize(np.asarray(instance).astype(np.int32), out_hw, nearest=True)
        bx, areas = boxes_from_instances(inst, n)
        # Objects that lost every pixel in the resize are dropped and the rest renumbered, so
        # that instance k is always row k-1 of boxes.
        keep = areas > 0
        if not keep.all():
            remap = np.zeros(n + 1, dtype=np.int32)
            remap[1:][keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
            inst = remap[np.clip(inst, 0, n)]
            bx, areas, labels, occ = bx[keep], areas[keep], labels[keep], occ[keep]
    else:
        inst = np.zeros(out_hw, dtype=np.int32)
        bx = np.zeros((n, 4), np.float32) if boxes is None else np.asarray(boxes, np.float32).reshape(n, 4)
        bx = bx * np.array([out_hw[1] / src_hw[1], out_hw[0] / src_hw[0]] * 2, dtype=np.float32)
        areas = ((bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1])).astype(np.float32)
    sample["instance"] = torch.from_numpy(np.ascontiguousarray(inst, dtype=np.int32))
    sample["boxes"] = torch.from_numpy(np.ascontiguousarray(bx, dtype=np.float32)).reshape(-1, 4)
    sample["labels"] = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    sample["occlusion"] = torch.from_numpy(np.ascontiguousarray(occ, dtype=np.float32))
    sample["areas"] = torch.from_numpy(np.ascontiguousarray(areas, dtype=np.float32))
    sample["condition"] = condition
    sample["meta"] = meta
    return sample


class FrameListDataset(torch.utils.data.Dataset):
    """Base of the file-based loaders: a list of frame records, each loaded into a sample on access.

    Subclasses fill ``self.frames`` in ``__init__`` (failing early on a missing folder or an empty
    split) and implement ``_load(frame) -> sample``.
    """

    dataset_name = "dataset"

    def __init__(self, size: str | Sequence[int] | None = None) -> None:
        self.size = parse_size(size)
        self.frames: list[Any] = []

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self.frames) <= index < len(self.frames):
            raise IndexError(f"{self.dataset_name} index {index} out of range for {len(self.frames)} frames")
        return self._load(self.frames[index])

    def _load(self, frame: Any) -> dict[str, Any]:
        raise NotImplementedError
