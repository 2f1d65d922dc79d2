"""Segmentation loss L_seg of the DSJL (DAMCSeg paper, Sec. III.C.3).

``L_seg = w_ce * CE + w_boundary * L_boundary + w_dice * L_dice + w_tiny * L_tiny
+ w_occ * L_occ``, every term computed on the ``[B, C, H, W]`` logits against the train-id
label map ``[B, H, W]`` (255 = ignore; ignored pixels never contribute to any term). ``ce_k``
below is the per-pixel cross-entropy ``-log softmax(logits)[label]``.

* **CE**: mean of ``ce_k`` over valid (non-ignored) pixels.
* **Boundary-aware** (``L_boundary``): a valid pixel is an *edge* pixel if a valid pixel in its
  3x3 neighbourhood has another label; the *band* is every valid pixel within
  ``boundary_radius`` pixels (Chebyshev distance, by max-pool dilation of the edge map) of an
  edge pixel. ``L_boundary`` = mean of ``ce_k`` over the band (0 when there is none), so band
  pixels are counted once more, with extra weight ``w_boundary``, on top of CE.
* **Dice** (``L_dice``): softmax probabilities ``p`` and one-hot labels ``g`` over valid
  pixels of the whole batch; for each class present in the labels,
  ``1 - (2 sum p_c g_c + 1) / (sum p_c + sum g_c + 1)``; mean over those classes.
* **Tiny-target-focused** (``L_tiny``): objects are the instances of the ``instance`` map and
  their visible area is counted on that map (so it follows the augmentation). Pixels of
  *small* objects (area < ``small_area``, 1024 px: the paper's small-object metric) get weight
  1, pixels of *tiny* objects (area < ``tiny_area``, 100 px: the paper's tiny-target recall)
  get ``tiny_weight``; ``L_tiny = sum(w * ce_k) / sum(w)`` over those pixels (0 if none).
* **Occluded-region-aware** (``L_occ``): pixels of objects whose occlusion ratio
  (``1 - visible / amodal`` from the sample) exceeds ``occlusion_threshold`` (0.5), plus
  the visible pixels of *any* partly occluded object (ratio > 0) that lie within
  ``boundary_radius`` pixels of another object's pixels (where the occluder meets it);
  ``L_occ`` = mean of ``ce_k`` over the union (0 if empty).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from damcseg_core.data.classes import IGNORE_INDEX

__all__ = [
    "SegmentationLossConfig",
    "boundary_band",
    "dice_loss",
    "object_pixel_weights",
    "segmentation_loss",
]


@dataclasses.dataclass
class SegmentationLossConfig:
    """Weights and thresholds of L_seg (see the module docstring for each term)."""

    ce_weight: float = 1.0  # weight of the plain cross-entropy
    boundary_weight: float = 1.0  # weight of the boundary-band cross-entropy
    boundary_radius: int = 3  # band half-width in pixels around label edges
    dice_weight: float = 0.5  # weight of the multi-class soft Dice loss
    tiny_weight: float = 1.0  # weight of the small/tiny-object term
    tiny_area: int = 100  # objects below this visible area (px) are tiny (paper: tiny recall)
    small_area: int = 1024  # objects below this visible area (px) are small (paper: small mIoU)
    tiny_pixel_weight: float = 3.0  # per-pixel weight of tiny objects inside the tiny term
    occlusion_weight: float = 1.0  # weight of the occluded-region term
    occlusion_threshold: float = 0.5  # objects more occluded than this count in full

    def __post_init__(self) -> None:
        if self.boundary_radius < 0:
            raise ValueError(f"boundary_radius must be >= 0, got {self.boundary_radius}")
        if not 0 < self.tiny_area <= self.small_area:
            raise ValueError(f"need 0 < tiny_area <= small_area, got {self.tiny_area}, {self.small_area}")


def _masked_mean(
    values: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    w = mask.to(values.dtype) if weights is None else weights * mask.to(values.dtype)
    denom = w.sum()
    # A zero (not NaN) when the region is empty, still connected to the graph; abs() turns
    # the -0.0 of a negative sum into 0.0 so logs read cleanly.
    return (values * w).sum() / denom.clamp_min(1e-12) if denom > 0 else values.sum().mul(0.0).abs()


def _max_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Max over the ``(2r+1)^2`` window of every pixel of ``[B, H, W]`` (outside the image: ignored).

    Exactly the max-pool with stride 1 and padding ``r``, computed as a square max is separable:
    ``2r`` shifted element-wise maxima along W, then along H (an order of magnitude faster than
    ``F.max_pool2d`` on the CPU, and it keeps integer dtypes).
    """
    if radius <= 0:
        return x
    fill = float("-inf") if x.is_floating_point() else torch.iinfo(x.dtype).min
    h, w = x.shape[-2:]
    k = 2 * radius + 1
    p = x.new_full((*x.shape[:-1], w + 2 * radius), fill)
    p[..., radius : radius + w] = x
    out = p[..., 0:w].clone()
    for d in range(1, k):
        torch.maximum(out, p[..., d : d + w], out=out)
    p = x.new_full((*x.shape[:-2], h + 2 * radius, w), fill)
    p[..., radius : radius + h, :] = out
    out = p[..., 0:h, :].clone()
    for d in range(1, k):
        torch.maximum(out, p[..., d : d + h, :], out=out)
    return out


def _dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Binary dilation of ``[B, H, W]`` bool by a ``(2r+1)^2`` square (max filter)."""
    if radius <= 0:
        return mask
    return _max_filter(mask.to(torch.uint8), radius) > 0


def boundary_band(labels: torch.Tensor, radius: int) -> torch.Tensor:
    """Valid pixels within ``radius`` px of a label edge (see module docstring), ``[B, H, W]`` bool."""
    valid = labels != IGNORE_INDEX
    lab = labels.long()
    hi = _max_filter(torch.where(valid, lab, -1), 1)
    lo = -_max_filter(-torch.where(valid, lab, 256), 1)
    edge = valid & ((hi > lab) | (lo < lab))
    return _dilate(edge, radius) & valid


def dice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-class soft Dice over the classes present in ``labels`` (ignore honoured).

    Computed without a one-hot tensor: ``sum p_c g_c`` is the probability of the labelled class
    summed per class (a scatter-add), ``sum g_c`` a bincount, ``sum p_c`` one batched GEMV.
    """
    valid = labels != IGNORE_INDEX
    b, c = logits.shape[:2]
    probs = torch.softmax(logits, dim=1)
    lab = torch.where(valid, labels.long(), 0)
    vf = valid.to(probs.dtype)
    p_true = probs.gather(1, lab[:, None])[:, 0] * vf  # [B, H, W]
    inter = probs.new_zeros(c).scatter_add(0, lab.flatten(), p_true.flatten())
    count = torch.bincount(lab[valid], minlength=c).to(probs.dtype)
    psum = torch.bmm(probs.reshape(b, c, -1), vf.reshape(b, -1, 1)).sum(dim=(0, 2))
    denom = psum + count
    present = count > 0
    if not present.any():
        return logits.sum().mul(0.0).abs()
    dice = 1.0 - (2.0 * inter + 1.0) / (denom + 1.0)
    return dice[present].mean()


def object_pixel_weights(
    instance: torch.Tensor,
    occlusion: list[torch.Tensor] | None,
    cfg: SegmentationLossConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel weights of the tiny and occlusion terms.

    Args:
        instance: ``[B, H, W]`` instance map (0 = background, ``k`` = object ``k-1``).
        occlusion: per image ``[N]`` occlusion ratios, or ``None`` when unknown.
        cfg: thresholds.

    Returns:
        ``(tiny_w, occ_mask)``: float ``[B, H, W]`` weights of the tiny term (0 outside small
        objects) and bool ``[B, H, W]`` pixels of the occlusion term.
    """
    device = instance.device
    inst = instance.long()
    b = inst.shape[0]
    if inst.numel() == 0:
        return torch.zeros(inst.shape, device=device), torch.zeros(
            inst.shape, dtype=torch.bool, device=device
        )
    # Object k of image i is entry offset[i] + k of one id space for the whole batch
    # (offset[i] + 0 is that image's background).
    n = inst.reshape(b, -1).amax(dim=1)  # [B] objects per image
    sizes = n + 1
    offset = torch.cumsum(sizes, 0) - sizes
    gid = inst + offset[:, None, None]
    total = int(sizes.sum())
    area = torch.bincount(gid.flatten(), minlength=total).float()
    per_obj = torch.zeros(total, device=device)
    per_obj[(area > 0) & (area < cfg.small_area)] = 1.0
    per_obj[(area > 0) & (area < cfg.tiny_area)] = cfg.tiny_pixel_weight
    per_obj[offset] = 0.0
    tiny_w = per_obj[gid]
    occ_mask = torch.zeros(inst.shape, dtype=torch.bool, device=device)
    if occlusion is None:
        return tiny_w, occ_mask
    n_list = n.tolist()
    active = [n_list[i] > 0 and len(occlusion[i]) > 0 for i in range(b)]
    if not any(active):
        return tiny_w, occ_mask
    occ = torch.zeros(total, device=device)
    starts = offset.tolist()
    for i in range(b):
        if active[i]:
            ratios = occlusion[i].to(device, torch.float32).reshape(-1)
            m = min(n_list[i], ratios.numel())
            occ[starts[i] + 1 : starts[i] + 1 + m] = ratios[:m]
    occ_px = occ[gid]
    heavy = occ_px > cfg.occlusion_threshold
    # Visible pixels of partly occluded objects within boundary_radius of another object
    # (the occluder): the max/min object id in the window differs from the pixel's own.
    obj = inst > 0
    big = int(n.max()) + 1  # above every id: the image's own n + 1 or the batch's, same result
    hi = _max_filter(torch.where(obj, inst, -1), cfg.boundary_radius)
    lo = -_max_filter(-torch.where(obj, inst, big), cfg.boundary_radius)
    near_other = obj & ((hi > inst) | (lo < inst))
    other = near_other & (occ_px > 0)
    keep = torch.tensor(active, device=device)[:, None, None]
    occ_mask = (heavy | other) & keep
    return tiny_w, occ_mask


def segmentation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    instance: torch.Tensor | None = None,
    occlusion: list[torch.Tensor] | None = None,
    cfg: SegmentationLossConfig | None = None,
) -> dict[str, torch.Tensor]:
    """L_seg and its parts.

    Args:
        logits: ``[B, C, H, W]`` class logits.
        labels: ``[B, H, W]`` train ids, 255 = ignore.
        instance: ``[B, H, W]`` instance map, or ``None`` (tiny and occlusion terms are then 0).
        occlusion: per image ``[N]`` occlusion ratios of the instances.
        cfg: weights and thresholds.

    Returns:
        ``seg_ce``, ``seg_boundary``, ``seg_dice``, ``seg_tiny``, ``seg_occlusion`` and their
        weighted sum ``seg``.
    """
    cfg = cfg or SegmentationLossConfig()
    if logits.shape[-2:] != labels.shape[-2:]:
        raise ValueError(
            f"logits {tuple(logits.shape[-2:])} and labels {tuple(labels.shape[-2:])} must share H, W"
        )
    labels = labels.long()
    valid = labels != IGNORE_INDEX
    ce = F.cross_entropy(logits, torch.where(valid, labels, 0), reduction="none")  # [B, H, W]
    out = {
        "seg_ce": _masked_mean(ce, valid),
        "seg_boundary": _masked_mean(ce, boundary_band(labels, cfg.boundary_radius)),
        "seg_dice": dice_loss(logits, labels),
    }
    if instance is not None:
        tiny_w, occ_mask = object_pixel_weights(instance.to(logits.device), occlusion, cfg)
        out["seg_tiny"] = _masked_mean(ce, valid, tiny_w)
        out["seg_occlusion"] = _masked_mean(ce, valid & occ_mask)
    else:
        out["seg_tiny"] = ce.sum().mul(0.0).abs()
        out["seg_occlusion"] = ce.sum().mul(0.0).abs()
    out["seg"] = (
        cfg.ce_weight * out["seg_ce"]
        + cfg.boundary_weight * out["seg_boundary"]
        + cfg.dice_weight * out["seg_dice"]
        + cfg.tiny_weight * out["seg_tiny"]
        + cfg.occlusion_weight * out["seg_occlusion"]
    )
    return out
