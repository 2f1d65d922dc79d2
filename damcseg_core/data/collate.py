"""Batching of canonical sample dicts (``docs/interfaces.md``) for ``torch.utils.data.DataLoader``.

Per-pixel tensors are stacked; per-object tensors stay lists because every image has its own
number of objects. A batch must be homogeneous in its modalities and size: a model run cannot
mix "rgb+depth" and "rgb" samples in one tensor, so mixing them is an error, not a silent drop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from damcseg_core import MODALITIES

__all__ = ["PER_OBJECT_KEYS", "PER_PIXEL_KEYS", "collate"]

PER_PIXEL_KEYS: tuple[str, ...] = ("semantic", "instance")
"""Label maps stacked to ``[B,H,W]`` (modalities are stacked to ``[B,C,H,W]``)."""
PER_OBJECT_KEYS: tuple[str, ...] = ("boxes", "labels", "occlusion", "areas")
"""Per-object tensors kept as lists of length ``B``."""


def _modalities(sample: dict[str, Any]) -> tuple[str, ...]:
    return tuple(m for m in MODALITIES if m in sample)


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Turn a list of sample dicts into one batch dict.

    Returns:
        ``rgb``/``depth``/``thermal`` ``[B,C,H,W]`` (the modalities every sample has), ``present``
        ``[B,3]`` bool, ``semantic`` int64 ``[B,H,W]``, ``instance`` int32 ``[B,H,W]``, ``boxes``,
        ``labels``, ``occlusion``, ``areas`` as lists of ``B`` tensors, ``condition`` list of str,
        ``meta`` list of dicts.

    Raises:
        ValueError: Empty batch, samples with different modality sets, or different image sizes
            (the message names the first offending sample and how to fix it).
    """
    if not samples:
        raise ValueError("collate got an empty batch; the DataLoader needs at least one sample")
    first = samples[0]
    mods = _modalities(first)
    if not mods:
        raise ValueError("sample 0 has none of the modalities rgb, depth, thermal")
    size = tuple(first["semantic"].shape[-2:])
    for i, s in enumerate(samples[1:], start=1):
        if _modalities(s) != mods:
            raise ValueError(
                f"sample {i} has modalities {list(_modalities(s))} but sample 0 has {list(mods)}; a batch must "
                "share one modality set (drop modalities per batch, not per sample, or batch by modality set)"
            )
        other = tuple(s["semantic"].shape[-2:])
        if other != size:
            raise ValueError(
                f"sample {i} is {other[0]}x{other[1]} but sample 0 is {size[0]}x{size[1]}; resize or crop all "
                "samples of a batch to one size (e.g. the dataset's size= option)"
            )
    batch: dict[str, Any] = {}
    for m in mods:
        shapes = {tuple(s[m].shape[-2:]) for s in samples}
        if shapes != {size}:
            raise ValueError(
                f"{m} images have sizes {sorted(shapes)} but the labels are {size[0]}x{size[1]}; every modality "
                "must be registered to the label map"
            )
        batch[m] = torch.stack([s[m] for s in samples])
    batch["present"] = torch.stack([s["present"] for s in samples])
    for key in PER_PIXEL_KEYS:
        batch[key] = torch.stack([s[key] for s in samples])
    for key in PER_OBJECT_KEYS:
        batch[key] = [s[key] for s in samples]
    batch["condition"] = [s["condition"] for s in samples]
    batch["meta"] = [s["meta"] for s in samples]
    return batch
