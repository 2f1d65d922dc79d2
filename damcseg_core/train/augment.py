"""Paired training augmentations (DAMCSeg paper Sec. IV.A.4) and modality dropout.

Every geometric transform moves all modalities and every label together: ``semantic`` and
``instance`` maps, ``boxes``, and the per-object ``labels`` / ``occlusion`` / ``areas`` rows.
After the geometry, objects are re-derived from the instance map: each object's box becomes
the tight box of its visible pixels and its area their count, objects that left the frame are
removed and the instance ids renumbered (``k`` = row ``k-1``, as in ``docs/interfaces.md``).
Objects without any instance pixels to begin with (datasets with boxes only) keep their
geometrically transformed, clipped box.

Order: horizontal flip -> scale with crop/pad to the training size (or tiny-target zoom
instead) -> colour jitter (RGB only) -> random occlusion -> sensor fault. Every random choice comes from the
``torch.Generator`` passed in, so a sample's augmentation is a function of its seed (resume
and DDP reproduce it exactly).

* **Scale** ``s ~ U(scale_min, scale_max)`` relative to the scale that makes the frame cover the
  training size; then a random crop (padding where the scaled frame is smaller: images with 0,
  ``semantic`` with 255, ``instance`` with 0).
* **Tiny-target zoom** ("super-resolution enhancement"): with probability ``tiny_zoom``, if the
  frame holds an object smaller than ``tiny_zoom_area`` px, scale by ``tiny_zoom_factor`` times
  the cover scale and crop around that object (random jitter, kept inside the frame), so the
  network sees tiny targets magnified.
* **Colour jitter**: brightness, contrast, saturation, hue (torchvision semantics) on ``rgb``.
* **Random occlusion**: 1..``occlusion_max_rects`` rectangles set to 0 on every modality (for
  depth, 0 means invalid); labels are kept, so the model learns to segment behind occluders.
* **Sensor fault** (``sensor_fault``): one present modality, drawn uniformly, becomes an all-zero
  frame that is still marked present (labels kept) - a camera that publishes black frames, or a
  depth sensor that returns no valid pixel. Unlike modality dropout the model is not told that the
  sensor failed, so it must learn not to trust a blank frame (the ``zero-fill:<m>`` protocol of
  :mod:`damcseg_core.eval.protocols` measures exactly this). Edge v5, trained without occlusion or
  this fault, fell to 1.5 mIoU with a black thermal frame.
* **Modality dropout** lives in :mod:`damcseg_core.train.modality_dropout` (per-sample keep
  masks, subset weights, schedule); :func:`sample_modality_subset` is the old one-draw-per-batch
  interface kept for compatibility.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from damcseg_core import MODALITIES
from damcseg_core.data.classes import IGNORE_INDEX
from damcseg_core.train.config import AugmentConfig
from damcseg_core.train.modality_dropout import ALL_SUBSETS, sample_keep_mask

__all__ = [
    "ALL_SUBSETS",
    "Augmenter",
    "color_jitter",
    "generator_for",
    "hflip",
    "random_occlusion",
    "refresh_objects",
    "resize_crop",
    "sample_modality_subset",
    "seed_for",
    "sensor_fault",
]

_PIXEL_KEYS = ("rgb", "depth", "thermal", "semantic", "instance")


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _chance(g: torch.Generator, p: float) -> bool:
    return p > 0 and float(torch.rand((), generator=g)) < p


def _size(sample: dict[str, Any]) -> tuple[int, int]:
    h, w = sample["semantic"].shape[-2:]
    return int(h), int(w)


def _object_boxes(instance: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight xyxy boxes ``[n, 4]`` and pixel counts ``[n]`` of objects ``1..n`` of an instance map."""
    ids = instance.long().flatten()
    w = instance.shape[-1]
    counts = torch.bincount(ids, minlength=n + 1)[1 : n + 1].float()
    boxes = torch.zeros(n, 4)
    fg = ids > 0
    if fg.any() and n > 0:
        idx = ids[fg] - 1
        flat = torch.nonzero(fg).flatten()
        ys, xs = (flat // w).float(), (flat % w).float()
        big = float(instance.numel())
        x1 = torch.full((n,), big).scatter_reduce(0, idx, xs, "amin")
        y1 = torch.full((n,), big).scatter_reduce(0, idx, ys, "amin")
        x2 = torch.full((n,), -1.0).scatter_reduce(0, idx, xs + 1, "amax")
        y2 = torch.full((n,), -1.0).scatter_reduce(0, idx, ys + 1, "amax")
        boxes = torch.stack([x1, y1, x2, y2], dim=1)
    return boxes, counts


def refresh_objects(sample: dict[str, Any], had_pixels: torch.Tensor) -> dict[str, Any]:
    """Re-derive per-object rows from the (transformed) instance map (see module docstring).

    Args:
        sample: sample whose ``boxes`` were transformed geometrically.
        had_pixels: ``[N]`` bool, whether each object had instance pixels before augmenting.
    """
    n = sample["boxes"].shape[0]
    if n == 0:
        return sample
    tight, counts = _object_boxes(sample["instance"], n)
    geo = sample["boxes"]
    has = counts > 0
    geo_ok = (geo[:, 2] > geo[:, 0]) & (geo[:, 3] > geo[:, 1])
    keep = has | (~had_pixels & geo_ok)
    boxes = torch.where(has[:, None], tight, geo)
    areas = torch.where(has, counts, sample["areas"].float() if "areas" in sample else counts)
    remap = torch.zeros(n + 1, dtype=torch.int64)
    remap[1:][keep] = torch.arange(1, int(keep.sum()) + 1)
    sample["instance"] = remap[sample["instance"].long()].to(torch.int32)
    sample["boxes"] = boxes[keep].float()
    for key in ("labels", "occlusion"):
        if key in sample:
            sample[key] = sample[key][keep]
    sample["areas"] = areas[keep].float()
    return sample


def hflip(sample: dict[str, Any]) -> dict[str, Any]:
    """Mirror every per-pixel tensor left-right and the boxes with them."""
    _, w = _size(sample)
    for key in _PIXEL_KEYS:
        if key in sample:
            sample[key] = sample[key].flip(-1)
    if sample["boxes"].numel():
        b = sample["boxes"].clone()
        sample["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], dim=1)
    return sample


def _source_index(in_size: int, out_size: int, start: int, stop: int) -> torch.Tensor:
    """Source pixel of scaled pixels ``start..stop-1`` under ``F.interpolate(mode="nearest")``.

    The same float32 arithmetic as ATen (``floor(i * (in / out))``, clamped), so indexing with it
    equals interpolating the whole frame and cropping (tested against ``F.interpolate``).
    """
    scale = torch.tensor(float(in_size), dtype=torch.float32) / out_size
    i = torch.arange(start, stop, dtype=torch.float32)
    return (i * scale).floor().long().clamp_max(in_size - 1)


def _linear_weights(
    in_size: int, out_size: int, start: int, stop: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Neighbours and weights of scaled pixels ``start..stop-1`` under bilinear, ``align_corners=False``."""
    scale = torch.tensor(float(in_size), dtype=torch.float32) / out_size
    i = torch.arange(start, stop, dtype=torch.float32)
    real = (scale * (i + 0.5) - 0.5).clamp_min(0.0)
    i0 = real.long().clamp_max(in_size - 1)
    lam = (real - i0.float()).clamp(0.0, 1.0)
    i1 = i0 + (i0 < in_size - 1).long()
    return i0, i1, 1.0 - lam, lam


def _resize_window(
    x: torch.Tensor, size: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int], bilinear: bool
) -> torch.Tensor:
    """Rows ``rows`` and columns ``cols`` of ``x [C, H, W]`` resized to ``size``, computing only those.

    Nearest is exactly ``F.interpolate`` then crop. Bilinear (upscaling, no antialias) follows the
    same formula; ATen's kernel may fuse multiply-adds, so values can differ from it by float
    rounding (< 1e-4 on [0, 1] images, far below the 1/255 step of the uint8 source).
    """
    (h, w), (sh, sw) = x.shape[-2:], size
    if not bilinear:
        return x[:, _source_index(h, sh, *rows)][:, :, _source_index(w, sw, *cols)]
    y0, y1, wy0, wy1 = _linear_weights(h, sh, *rows)
    x0, x1, wx0, wx1 = _linear_weights(w, sw, *cols)
    r0, r1 = x[:, y0], x[:, y1]
    t0 = r0[:, :, x0] * wx0 + r0[:, :, x1] * wx1
    t1 = r1[:, :, x0] * wx0 + r1[:, :, x1] * wx1
    return t0 * wy0[:, None] + t1 * wy1[:, None]


def resize_crop(
    sample: dict[str, Any], scale: float, out_size: tuple[int, int], offset: tuple[int, int]
) -> dict[str, Any]:
    """Scale the frame by ``scale`` and take the ``out_size`` window at ``offset`` (y, x).

    The window may extend past the scaled frame (negative offset or small frame): those pixels
    are padding (0 for images and ``instance``, 255 for ``semantic``). Boxes are scaled, shifted
    and clipped to the window.

    Only the window is computed: label maps and depth (nearest) exactly as resizing the whole
    frame and cropping; RGB and thermal (bilinear) too when shrinking (antialiased, the whole
    frame is resized as it is small), and up to float rounding when enlarging.
    """
    h, w = _size(sample)
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    oh, ow = out_size
    oy, ox = offset
    # Source (scaled) and destination ranges of the overlap.
    sy0, sx0 = max(0, oy), max(0, ox)
    sy1, sx1 = min(sh, oy + oh), min(sw, ox + ow)
    overlap = sy1 > sy0 and sx1 > sx0
    for key in _PIXEL_KEYS:
        if key not in sample:
            continue
        x = sample[key]
        label = key in ("semantic", "instance")
        x3 = x[None].float() if label else x.float()
        fill = IGNORE_INDEX if key == "semantic" else 0
        out = torch.full((x3.shape[0], oh, ow), float(fill))
        if overlap:
            bilinear = not (label or key == "depth")
            if bilinear and scale < 1:
                r = F.interpolate(
                    x3[None], size=(sh, sw), mode="bilinear", align_corners=False, antialias=True
                )[0]
                r = r[:, sy0:sy1, sx0:sx1]
            else:
                r = _resize_window(x3, (sh, sw), (sy0, sy1), (sx0, sx1), bilinear)
            out[:, sy0 - oy : sy1 - oy, sx0 - ox : sx1 - ox] = r
        sample[key] = out[0].to(x.dtype) if label else out.to(x.dtype)
    if sample["boxes"].numel():
        b = sample["boxes"] * torch.tensor([sw / w, sh / h, sw / w, sh / h]) - torch.tensor([ox, oy, ox, oy])
        b[:, 0::2] = b[:, 0::2].clamp(0, ow)
        b[:, 1::2] = b[:, 1::2].clamp(0, oh)
        sample["boxes"] = b
    return sample


def color_jitter(rgb: torch.Tensor, g: torch.Generator, cfg: AugmentConfig) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter of a ``[3, H, W]`` image in [0, 1]."""
    out = TF.adjust_brightness(rgb, _uniform(g, 1 - cfg.brightness, 1 + cfg.brightness))
    out = TF.adjust_contrast(out, _uniform(g, 1 - cfg.contrast, 1 + cfg.contrast))
    out = TF.adjust_saturation(out, _uniform(g, 1 - cfg.saturation, 1 + cfg.saturation))
    if cfg.hue > 0:
        out = TF.adjust_hue(out, _uniform(g, -cfg.hue, cfg.hue))
    return out.clamp(0, 1)


def random_occlusion(sample: dict[str, Any], g: torch.Generator, cfg: AugmentConfig) -> dict[str, Any]:
    """Zero 1..``occlusion_max_rects`` random rectangles on every modality (labels kept)."""
    h, w = _size(sample)
    n = 1 + int(torch.randint(cfg.occlusion_max_rects, (), generator=g))
    for _ in range(n):
        rh = max(1, int(_uniform(g, 0.05, cfg.occlusion_max_frac) * h))
        rw = max(1, int(_uniform(g, 0.05, cfg.occlusion_max_frac) * w))
        y = int(torch.randint(0, h - rh + 1, (), generator=g))
        x = int(torch.randint(0, w - rw + 1, (), generator=g))
        for m in MODALITIES:
            if m in sample:
                sample[m] = sample[m].clone()
                sample[m][:, y : y + rh, x : x + rw] = 0
    return sample


def sensor_fault(sample: dict[str, Any], g: torch.Generator) -> dict[str, Any]:
    """Replace one present modality, drawn uniformly, by zeros; it stays present (labels kept)."""
    present = [m for m in MODALITIES if m in sample]
    if not present:
        return sample
    m = present[int(torch.randint(len(present), (), generator=g))]
    sample[m] = torch.zeros_like(sample[m])
    return sample


def sample_modality_subset(g: torch.Generator, present: tuple[str, ...], p: float) -> tuple[str, ...]:
    """Modalities to keep for one whole batch (the old per-batch modality dropout).

    With probability ``p`` one of the 7 non-empty subsets of ``MODALITIES`` is drawn uniformly
    and intersected with ``present`` (subsets keeping nothing present are excluded); otherwise
    every present modality is kept. Never returns an empty tuple. A thin wrapper of
    :func:`~damcseg_core.train.modality_dropout.sample_keep_mask` (uniform over 7 subsets = drop
    with probability ``6p/7`` to one of the 6 proper subsets); new code should use that
    per-sample mask.

    Raises:
        ValueError: ``present`` is empty.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p is a probability and must be in [0, 1], got {p}")
    cfg = dataclasses.replace(AugmentConfig(), modality_dropout=p * 6 / 7, modality_dropout_mode="batch")
    row = sample_keep_mask(g, 1, present, cfg)[0]
    return tuple(m for m, k in zip(MODALITIES, row.tolist()) if k)


class Augmenter:
    """Applies the configured augmentations to one sample dict.

    Args:
        cfg: augmentation settings.
        out_size: training size (H, W).
        train: ``False`` only fits the frame to ``out_size`` (cover scale, centre crop).
    """

    def __init__(self, cfg: AugmentConfig, out_size: tuple[int, int], train: bool = True) -> None:
        self.cfg = cfg
        self.out_size = out_size
        self.train = train

    def __call__(self, sample: dict[str, Any], g: torch.Generator) -> dict[str, Any]:
        """Augment ``sample`` (a shallow copy is modified and returned)."""
        s = dict(sample)
        cfg = self.cfg
        h, w = _size(s)
        oh, ow = self.out_size
        n = s["boxes"].shape[0]
        had = torch.bincount(s["instance"].long().flatten(), minlength=n + 1)[1 : n + 1] > 0
        cover = max(oh / h, ow / w)
        if not self.train:
            sh, sw = round(h * cover), round(w * cover)
            s = resize_crop(s, cover, self.out_size, ((sh - oh) // 2, (sw - ow) // 2))
            return refresh_objects(s, had)
        if _chance(g, cfg.hflip):
            s = hflip(s)
        tiny = None
        if _chance(g, cfg.tiny_zoom) and n:
            areas = torch.bincount(s["instance"].long().flatten(), minlength=n + 1)[1 : n + 1]
            cand = torch.nonzero((areas > 0) & (areas < cfg.tiny_zoom_area)).flatten()
            if len(cand):
                tiny = int(cand[int(torch.randint(len(cand), (), generator=g))])
        if tiny is not None:
            scale = cover * cfg.tiny_zoom_factor
            bx1, by1, bx2, by2 = (float(v) for v in _object_boxes(s["instance"], n)[0][tiny])
            cx = (bx1 + bx2) / 2 * scale + _uniform(g, -0.25, 0.25) * ow
            cy = (by1 + by2) / 2 * scale + _uniform(g, -0.25, 0.25) * oh
            sh, sw = round(h * scale), round(w * scale)
            oy = int(min(max(cy - oh / 2, 0), max(0, sh - oh)))
            ox = int(min(max(cx - ow / 2, 0), max(0, sw - ow)))
        else:
            scale = cover * _uniform(g, cfg.scale_min, cfg.scale_max)
            sh, sw = round(h * scale), round(w * scale)
            oy = int(torch.randint(min(0, sh - oh), max(0, sh - oh) + 1, (), generator=g))
            ox = int(torch.randint(min(0, sw - ow), max(0, sw - ow) + 1, (), generator=g))
        s = resize_crop(s, scale, self.out_size, (oy, ox))
        if "rgb" in s and _chance(g, cfg.color_jitter):
            s["rgb"] = color_jitter(s["rgb"], g, cfg)
        if _chance(g, cfg.occlusion):
            s = random_occlusion(s, g, cfg)
        if _chance(g, cfg.sensor_fault):  # draws nothing at 0: older configs stay bit-identical
            s = sensor_fault(s, g)
        return refresh_objects(s, had)


def seed_for(seed: int, *indices: int) -> int:
    """A 63-bit seed derived from a base seed and integer indices (step, rank, position...)."""
    x = seed & 0xFFFFFFFFFFFF
    for i in indices:
        x = (x * 1_000_003 + int(i) + 0x9E3779B9) % (2**61 - 1)
    return int(x)


def generator_for(seed: int, *indices: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`seed_for`."""
    return torch.Generator().manual_seed(seed_for(seed, *indices))
