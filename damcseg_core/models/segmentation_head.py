"""Three-path segmentation head of DAMCSeg (paper Sec. III.C.2).

* **Global path** (:class:`GlobalPath`): a channel-pruned ASPP (rates 1, 6, 12, 18 plus image
  pooling) on the stride-32 segmentation features, then a DeepLabv3+-style decoder that adds
  the stride-16 and stride-8 features; logits are up-sampled to the input size.
* **Local path** (:class:`LocalPath`): every detected box is cropped from the normalised input
  modalities with ``torchvision.ops.roi_align`` at ``roi_size x roi_size`` (paper: 128) and run
  through a MobileNetV4 sub-network; the crop's stride-8 fused features (``roi_align`` of P3)
  are concatenated so a missing modality is still represented by its MCN-completed features.
  The DSAF engineer's :class:`~damcseg_core.models.branch_gating.LocalBranches` (edge / context
  / consistency branches behind a gate) turn this into per-ROI logits, which are resized to
  each box and pasted back into the image (overlapping ROIs are averaged).
* **Post-processing path** (:class:`DepthPriorPath`): depth priors refine box matching for
  occluded targets. Each box gets a reference depth (median of the valid depth inside it). A
  pixel inside one or more boxes is matched to the box whose reference depth explains the
  pixel's depth best, ``m_i(p) = exp(-0.5 * ((d(p) - d_i) / (tol * d_i))**2)``; where boxes
  overlap this hands each pixel to the target it belongs to (the nearer one when it occludes
  the other, the farther one where the farther target is visible around it) rather than to
  whichever box was drawn last. Pixels without a valid depth go to the nearest covering box.
  Without a depth input the boxes are ordered by their bottom edge (lower in the image =
  nearer, the ground-plane prior) and each pixel goes to the nearest covering box with
  ``m = 1``. The path's logits are the global logits plus ``strength * score * m`` on the
  matched box's class (``strength`` learnable, init ``post_strength``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from damcseg_core.models.branch_gating import BranchGateConfig, LocalBranches, LocalBranchOutput
from damcseg_core.models.config import SegmentationConfig
from damcseg_core.models.encoders import FEATURE_STRIDE, ConvBNAct, TimmTrunk, eval_layout

__all__ = [
    "ASPP",
    "DepthPriorPath",
    "GlobalPath",
    "LocalPath",
    "box_region_masks",
    "box_regions",
    "paste_rois",
]


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch (rate 1), dilated 3x3 branches, image pooling.

    The paper's "channel pruning" is the reduced width ``out_ch`` (``aspp_channels``); with
    ``separable`` the dilated branches are also depthwise-separable (edge variants).
    """

    def __init__(self, in_ch: int, out_ch: int, rates: tuple[int, ...], separable: bool = True) -> None:
        super().__init__()
        branches = []
        for rate in rates:
            if rate == 1:
                branches.append(ConvBNAct(in_ch, out_ch, kernel=1))
            elif not separable:
                branches.append(ConvBNAct(in_ch, out_ch, kernel=3, dilation=rate))
            else:
                branches.append(
                    nn.Sequential(
                        nn.Conv2d(in_ch, in_ch, 3, padding=rate, dilation=rate, groups=in_ch, bias=False),
                        ConvBNAct(in_ch, out_ch, kernel=1),
                    )
                )
        self.branches = nn.ModuleList(branches)
        # No BatchNorm on the 1x1 pooled branch: it would fail for batch size 1 in training.
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, out_ch, 1), nn.ReLU(inplace=True))
        self.project = ConvBNAct(out_ch * (len(rates) + 1), out_ch, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(outs, dim=1))


class GlobalPath(nn.Module):
    """ASPP on P5 + decoder with P4 and P3 -> logits ``[B, K, H, W]``."""

    def __init__(self, in_channels: list[int], cfg: SegmentationConfig, num_classes: int) -> None:
        super().__init__()
        c3, c4, c5 = in_channels
        a, d = cfg.aspp_channels, cfg.decoder_channels
        self.aspp = ASPP(c5, a, cfg.aspp_rates, cfg.aspp_separable)
        self.proj4 = ConvBNAct(c4, d, kernel=1)
        self.fuse4 = ConvBNAct(a + d, d, kernel=3)
        self.proj3 = ConvBNAct(c3, d, kernel=1)
        self.fuse3 = ConvBNAct(2 * d, d, kernel=3)
        self.classifier = nn.Conv2d(d, num_classes, 1)

    def forward(
        self, pyramid: list[torch.Tensor], out_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (logits at ``out_size``, stride-8 decoder features)."""
        # Default layout on purpose: the dilated separable ASPP is ~12 % slower in channels-last (issue #9).
        p3, p4, p5 = (p.contiguous() for p in pyramid)
        x = self.aspp(p5)
        x = F.interpolate(x, size=p4.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse4(torch.cat([x, self.proj4(p4)], dim=1))
        x = F.interpolate(x, size=p3.shape[-2:], mode="bilinear", align_corners=False)
        feats = self.fuse3(torch.cat([x, self.proj3(p3)], dim=1))
        logits = F.interpolate(self.classifier(feats), size=out_size, mode="bilinear", align_corners=False)
        # The per-pixel code downstream (DSAF, CRF) is written for the default layout.
        return logits.contiguous(), feats


def box_regions(box: torch.Tensor, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Integer pixel region ``(y0, y1, x0, x1)`` covered by an xyxy box, or None when empty."""
    x0 = max(0, min(width, math.floor(float(box[0]))))
    y0 = max(0, min(height, math.floor(float(box[1]))))
    x1 = max(0, min(width, math.ceil(float(box[2]))))
    y1 = max(0, min(height, math.ceil(float(box[3]))))
    if x1 <= x0 or y1 <= y0:
        return None
    return y0, y1, x0, x1


def box_region_masks(boxes: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Vectorised :func:`box_regions`: ``(regions [N, 4] int64 y0 y1 x0 x1, masks [N, H, W] bool)``.

    ``masks[i]`` is the region of box ``i`` (all False for an empty region).
    """
    b = boxes.detach().reshape(-1, 4).double()
    x0 = b[:, 0].floor().clamp(0, width).long()
    y0 = b[:, 1].floor().clamp(0, height).long()
    x1 = b[:, 2].ceil().clamp(0, width).long()
    y1 = b[:, 3].ceil().clamp(0, height).long()
    ys = torch.arange(height, device=boxes.device)
    xs = torch.arange(width, device=boxes.device)
    in_y = (ys[None] >= y0[:, None]) & (ys[None] < y1[:, None])
    in_x = (xs[None] >= x0[:, None]) & (xs[None] < x1[:, None])
    return torch.stack([y0, y1, x0, x1], 1), in_y[:, :, None] & in_x[:, None, :]


def paste_rois(
    roi_logits: torch.Tensor, boxes: list[torch.Tensor], batch: int, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize each ROI's logits to its box and paste into the image, averaging overlaps.

    Each ROI is bilinearly resized to its integer region (:func:`box_regions`,
    ``F.interpolate(align_corners=False)``); all regions are then added into the canvas with one
    ``index_add`` over their flattened pixel indices. Two things keep the backward pass linear
    in the pasted pixels (issue #17 profile, ~190 ground-truth ROIs per training batch): the ROIs
    are taken with one ``split`` (a slice per ROI makes autograd allocate a zero gradient of the
    whole ROI batch for every ROI), and nothing is pasted in place (an in-place paste per ROI
    makes autograd copy the whole canvas per ROI).

    Args:
        roi_logits: ``[N_total, K, h, w]`` for all boxes of all images, in image order.
        boxes: per image ``[N_b, 4]`` xyxy pixel boxes.

    Returns:
        ``logits [B, K, H, W]`` (0 outside every box) and ``coverage [B, 1, H, W]`` in {0, 1}.
    """
    k = roi_logits.shape[1]
    device = roi_logits.device
    values, index = [], []
    rois = roi_logits.split(1) if roi_logits.shape[0] else ()
    i = 0
    for b, img_boxes in enumerate(boxes):
        for box in img_boxes.reshape(-1, 4):
            region = box_regions(box, height, width)
            if region is not None:
                y0, y1, x0, x1 = region
                patch = F.interpolate(rois[i], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False)
                values.append(patch[0].flatten(1).t())  # [pixels, K]
                rows = torch.arange(y0, y1, device=device)[:, None] * width + torch.arange(
                    x0, x1, device=device
                )
                index.append(rows.flatten() + b * height * width)
            i += 1
    total = roi_logits.new_zeros(batch * height * width, k)
    count = roi_logits.new_zeros(batch * height * width)
    if values:
        flat = torch.cat(index)
        total = total.index_add(0, flat, torch.cat(values))
        count = count.index_add(0, flat, torch.ones(len(flat), device=device, dtype=count.dtype))
    total = total.view(batch, height, width, k).permute(0, 3, 1, 2)
    count = count.view(batch, 1, height, width)
    return (total / count.clamp(min=1)).contiguous(), (count > 0).to(roi_logits.dtype)


class LocalPath(nn.Module):
    """ROI crops -> MobileNetV4 sub-network (+ ROI of P3) -> gated local branches -> pasted logits.

    Args:
        image_channels: channels of the normalised modality stack that ROIs are cropped from.
        feature_channels: channels of the stride-8 features (P3) also pooled per ROI.
        cfg: segmentation settings (``roi_size``, ``local_backbone``, ``local_stages`` ...).
        num_classes: segmentation classes.
        gate_in_features: width of the gate inputs given to :class:`LocalBranches`.
        gate_cfg: settings of the gate and the three local branches.
        pretrained: load timm weights for the sub-network (never downloads here).
    """

    def __init__(
        self,
        image_channels: int,
        feature_channels: int,
        cfg: SegmentationConfig,
        num_classes: int,
        gate_in_features: int,
        gate_cfg: BranchGateConfig | None = None,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        self.roi_size = cfg.roi_size
        self.trunk = TimmTrunk(
            cfg.local_backbone, cfg.local_stages, in_chans=image_channels, pretrained=pretrained
        )
        self.reduction = self.trunk.reductions[-1]
        if cfg.roi_size % self.reduction:
            raise ValueError(
                f"roi_size {cfg.roi_size} must be divisible by the local sub-network stride {self.reduction}"
            )
        self.out_size = cfg.roi_size // self.reduction
        self.merge = ConvBNAct(self.trunk.channels[-1] + feature_channels, cfg.local_channels, kernel=1)
        self.branches = LocalBranches(cfg.local_channels, num_classes, gate_in_features, gate_cfg)

    def forward(
        self,
        image: torch.Tensor,
        p3: torch.Tensor,
        boxes: list[torch.Tensor],
        gate_inputs: torch.Tensor,
        force_all: bool = False,
    ) -> LocalBranchOutput:
        """Run the local branches on every box.

        Args:
            image: ``[B, C_img, H, W]`` normalised modality stack.
            p3: ``[B, C, H/8, W/8]`` stride-8 features.
            boxes: per image ``[N_b, 4]`` xyxy boxes (at least one box in total).
            gate_inputs: ``[N_total, F]`` gate inputs of all boxes, image order.
            force_all: run every branch regardless of the gate (training).

        Returns:
            The :class:`LocalBranchOutput` of all ROIs (logits ``[N_total, K, h, w]``).
        """
        rois = [b.to(image.dtype) for b in boxes]
        crops = roi_align(
            image, rois, output_size=self.roi_size, spatial_scale=1.0, sampling_ratio=2, aligned=True
        )
        local = self.trunk(crops)[-1]
        ctx = roi_align(
            p3,
            rois,
            output_size=self.out_size,
            spatial_scale=1.0 / FEATURE_STRIDE,
            sampling_ratio=2,
            aligned=True,
        )
        merged = self.merge(torch.cat([local, eval_layout(self, ctx)], dim=1))
        out = self.branches(merged, gate_inputs, force_all=force_all)
        out.logits = out.logits.contiguous()  # paste_rois works on the default layout
        return out


class DepthPriorPath(nn.Module):
    """Post-processing path: depth-ordered box matching added to the global logits (module docstring)."""

    def __init__(self, strength: float, depth_tolerance: float) -> None:
        super().__init__()
        if strength <= 0 or depth_tolerance <= 0:
            raise ValueError("post_strength and depth_tolerance must be > 0")
        # Stored as log so the learned strength stays positive.
        self.log_strength = nn.Parameter(torch.tensor(math.log(strength)))
        self.tolerance = depth_tolerance

    @staticmethod
    def reference_depths(
        boxes: torch.Tensor, depth: torch.Tensor | None, valid: torch.Tensor | None, height: int
    ) -> torch.Tensor:
        """Reference depth of each box: median valid depth inside it, else the ground-plane proxy.

        The proxy ``height / y_bottom`` grows with distance like depth does for objects standing
        on a flat ground plane seen by a forward-looking camera. The median is the lower middle
        value for an even count (as ``torch.median``).
        """
        proxy = height / boxes[:, 3].clamp(min=1.0)
        if depth is None or len(boxes) == 0:
            return proxy
        regions, _ = box_region_masks(boxes, height, depth.shape[-1])
        ref = proxy.clone()
        # One crop per box: sorting only the box's own pixels (a full-frame [N, H*W] sort was
        # the path's largest cost); torch.median is the lower middle value, as documented.
        for i, (y0, y1, x0, x1) in enumerate(regions.tolist()):
            crop = depth[0, y0:y1, x0:x1]
            values = crop[valid[0, y0:y1, x0:x1] > 0]
            if values.numel():
                ref[i] = values.median().to(ref.dtype)
        return ref

    def forward(
        self,
        global_logits: torch.Tensor,
        boxes: list[torch.Tensor],
        scores: list[torch.Tensor],
        class_ids: list[torch.Tensor],
        depth: torch.Tensor | None,
        depth_valid: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return post-path logits ``[B, K, H, W]`` and coverage ``[B, 1, H, W]``.

        Each pixel goes to the covering box with the best depth match; on a tie the nearer box
        (smaller reference depth, or later in the far-to-near order) wins. All boxes of an image
        are matched at once (``[N, H, W]`` tensors).

        Args:
            global_logits: ``[B, K, H, W]`` logits of the global path.
            boxes / scores / class_ids: per image boxes, scores and segmentation class ids.
            depth: ``[B, 1, H, W]`` metres (invalid = 0) or None when no depth was given.
            depth_valid: ``[B, 1, H, W]`` 0/1 validity of ``depth``.
        """
        b_, k, h, w = global_logits.shape
        coverage = global_logits.new_zeros(b_, 1, h, w)
        # Inference adds each pixel's boost into one copy of the logits; training keeps the
        # out-of-place form autograd differentiates w.r.t. the learned strength.
        out = None if torch.is_grad_enabled() else global_logits.clone()
        boost = global_logits.new_zeros(b_, k, h, w) if out is None else None
        strength = self.log_strength.exp()
        for b in range(b_):
            n = boxes[b].shape[0]
            if n == 0:
                continue
            d_img = None if depth is None else depth[b]
            v_img = None if depth_valid is None else depth_valid[b]
            bx = boxes[b].detach().float()
            ref = self.reference_depths(bx, d_img, v_img, h)
            # Far-to-near visit order; the last-visited among equal matches wins (the nearer).
            order = torch.argsort(ref, descending=True)
            _, masks = box_region_masks(bx[order], h, w)  # [N, H, W]
            if d_img is None:
                match = torch.ones(n, h, w, device=global_logits.device)
            else:
                r = ref[order][:, None, None]
                sigma = self.tolerance * r.clamp(min=1e-3)
                match = torch.exp(-0.5 * ((d_img[0][None] - r) / sigma) ** 2)
                # No valid depth at the pixel: prefer the nearest box (ties go to later = nearer).
                match = torch.where(v_img[0][None] > 0, match, torch.ones_like(match))
            match = torch.where(masks, match, torch.full_like(match, -1.0))
            best = match.max(dim=0).values
            position = torch.arange(n, device=match.device)[:, None, None]
            owner = torch.where(masks & (match == best[None]), position, -1).max(dim=0).values  # [H, W]
            covered = owner >= 0
            owner = owner.clamp(min=0)
            won = match.gather(0, owner[None])[0]
            score = scores[b].detach().reshape(-1).float()[order].to(match.device)
            weight = torch.where(covered, won * score[owner], torch.zeros_like(won))
            cls = class_ids[b].reshape(-1).to(match.device)[order]
            owner_cls = torch.where(covered, cls[owner], torch.zeros_like(owner))
            coverage[b, 0] = covered.to(coverage.dtype)
            if out is None:
                boost[b].scatter_(0, owner_cls.unsqueeze(0), weight.unsqueeze(0).to(boost.dtype))
            else:  # the same sums: every other class gets + 0.0, which leaves it bit-identical
                out[b].scatter_add_(0, owner_cls.unsqueeze(0), (strength * weight).unsqueeze(0).to(out.dtype))
        if out is not None:
            return out, coverage
        return global_logits + strength * boost, coverage
