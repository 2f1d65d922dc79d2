"""EfficientDet-style detection head of DAMCSeg (paper Sec. III.C.2): BiFPN + class/box nets.

* Anchors: per pyramid level ``l`` (stride ``s = 2**l``), ``num_scales`` octave scales
  ``anchor_scale * s * 2**(k / num_scales)`` times ``aspect_ratios`` (height / width), centred
  at ``(x + 0.5) * s``. Order: level, row, column, scale, ratio, matching the head outputs.
* Box regression uses torchvision ``BoxCoder(weights=(1, 1, 1, 1))``.
* Post-processing: sigmoid scores, candidates above ``score_threshold``, top ``pre_nms_top_k``,
  NMS at ``nms_iou`` (paper 0.5), at most ``max_detections`` per image. NMS is class-agnostic
  by default (``torchvision.ops.nms``): sigmoid scores are per class, so one object often
  scores for two classes (rider / person, car / truck) and class-wise NMS
  (``class_agnostic_nms=False``, ``batched_nms``) would publish both stacked boxes. Labels are
  returned as Cityscapes train ids.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import batched_nms, clip_boxes_to_image, nms, remove_small_boxes

from damcseg_core.data.classes import DETECTION_TRAIN_IDS
from damcseg_core.models.bifpn import BiFPN, SeparableConvBN
from damcseg_core.models.config import DetectionConfig
from damcseg_core.models.encoders import eval_layout

__all__ = ["DetectionHead", "anchor_level_index", "make_anchors"]


def make_anchors(
    feature_sizes: list[tuple[int, int]],
    levels: list[int],
    anchor_scale: float,
    num_scales: int,
    aspect_ratios: tuple[float, ...],
    device: torch.device | None = None,
) -> torch.Tensor:
    """All anchors ``[A, 4]`` (xyxy pixels) for the given feature map sizes, in head output order."""
    out = []
    for (h, w), level in zip(feature_sizes, levels):
        stride = 2**level
        sizes = []
        for k in range(num_scales):
            base = anchor_scale * stride * 2 ** (k / num_scales)
            for ratio in aspect_ratios:
                sizes.append((base / math.sqrt(ratio), base * math.sqrt(ratio)))
        wh = torch.tensor(sizes, dtype=torch.float32, device=device)  # [n, 2]
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) * stride
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) * stride
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        centres = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2)  # [h*w, 1, 2]
        half = wh.unsqueeze(0) / 2
        out.append(torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 4))
    return torch.cat(out, dim=0)


def anchor_level_index(
    feature_sizes: list[tuple[int, int]], anchors_per_location: int, device: torch.device | None = None
) -> torch.Tensor:
    """``[A]`` int64 pyramid-level index (0 = finest) of every anchor, in :func:`make_anchors` order."""
    counts = torch.tensor([h * w * anchors_per_location for h, w in feature_sizes], device=device)
    return torch.repeat_interleave(torch.arange(len(feature_sizes), device=device), counts)


class _HeadNet(nn.Module):
    """Shared separable-conv tower with per-level BatchNorm, then a prediction conv."""

    def __init__(
        self, channels: int, repeats: int, num_levels: int, out_per_anchor: int, anchors: int
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                           nn.Conv2d(channels, channels, 1, bias=False)) for _ in range(repeats)]
        )  # fmt: skip
        self.norms = nn.ModuleList(
            [nn.ModuleList([nn.BatchNorm2d(channels) for _ in range(repeats)]) for _ in range(num_levels)]
        )
        self.act = nn.SiLU()
        self.pred = SeparableConvBN(channels, anchors * out_per_anchor, norm=False)
        self.out_per_anchor = out_per_anchor

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        outs = []
        for level, x in enumerate(feats):
            for conv, norm in zip(self.convs, self.norms[level]):
                x = self.act(norm(conv(x)))
            y = self.pred(x)
            b, _, h, w = y.shape
            # [B, A_l*K, h, w] -> [B, h*w*A_l, K]: row, column, anchor order (matches make_anchors).
            outs.append(y.permute(0, 2, 3, 1).reshape(b, h * w * (y.shape[1] // self.out_per_anchor), -1))
        return torch.cat(outs, dim=1)


class DetectionHead(nn.Module):
    """BiFPN + class and box nets + anchors + post-processing.

    Args:
        in_channels: channels of the detection pyramid ``[P3, P4, P5]`` from the backbone.
        cfg: detection settings.
        num_classes: detection classes (``len(DETECTION_TRAIN_IDS)``).
    """

    def __init__(self, in_channels: list[int], cfg: DetectionConfig, num_classes: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.levels = list(range(cfg.min_level, cfg.max_level + 1))
        self.anchors_per_loc = cfg.num_scales * len(cfg.aspect_ratios)
        self.bifpn = BiFPN(in_channels, cfg.bifpn_channels, cfg.bifpn_repeats, cfg.min_level, cfg.max_level)
        c = cfg.bifpn_channels
        self.class_net = _HeadNet(c, cfg.head_repeats, len(self.levels), num_classes, self.anchors_per_loc)
        self.box_net = _HeadNet(c, cfg.head_repeats, len(self.levels), 4, self.anchors_per_loc)
        # Focal-loss prior (RetinaNet): start with every anchor at p = 0.01 "object".
        nn.init.constant_(self.class_net.pred[1].bias, -math.log((1 - 0.01) / 0.01))
        nn.init.zeros_(self.box_net.pred[1].bias)
        self.box_coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
        self.register_buffer(
            "train_ids", torch.tensor(DETECTION_TRAIN_IDS, dtype=torch.int64), persistent=False
        )
        self._anchor_cache: dict[tuple, torch.Tensor] = {}

    def anchors(self, feature_sizes: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
        """Anchors for these level sizes (cached per size and device)."""
        key = (tuple(feature_sizes), str(device))
        if key not in self._anchor_cache:
            if len(self._anchor_cache) >= 16:  # multi-scale training: keep the cache bounded
                self._anchor_cache.pop(next(iter(self._anchor_cache)))
            self._anchor_cache[key] = make_anchors(
                feature_sizes,
                self.levels,
                self.cfg.anchor_scale,
                self.cfg.num_scales,
                self.cfg.aspect_ratios,
                device,
            )
        return self._anchor_cache[key]

    def forward(
        self, pyramid: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``cls_logits [B, A, K]``, ``box_deltas [B, A, 4]``, ``anchors [A, 4]`` and
        ``anchor_levels [A]`` (pyramid level index of each anchor, for level-aware assignment)."""
        feats = self.bifpn([eval_layout(self, p) for p in pyramid])
        cls_logits = self.class_net(feats)
        box_deltas = self.box_net(feats)
        sizes = [tuple(f.shape[-2:]) for f in feats]
        anchors = self.anchors(sizes, cls_logits.device)
        levels = anchor_level_index(sizes, self.anchors_per_loc, cls_logits.device)
        return cls_logits, box_deltas, anchors, levels

    @torch.no_grad()
    def postprocess(
        self,
        cls_logits: torch.Tensor,
        box_deltas: torch.Tensor,
        anchors: torch.Tensor,
        image_size: tuple[int, int],
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Decode, threshold and NMS detections.

        Returns:
            Per image: boxes ``[N, 4]`` xyxy (clipped to ``image_size``), scores ``[N]`` and
            labels ``[N]`` (Cityscapes train ids), sorted by decreasing score.
        """
        cfg = self.cfg
        boxes_out, scores_out, labels_out = [], [], []
        k = self.num_classes
        for logits, deltas in zip(cls_logits, box_deltas):
            scores = torch.sigmoid(logits.float()).flatten()
            keep = torch.nonzero(scores > cfg.score_threshold).squeeze(1)
            if keep.numel() > cfg.pre_nms_top_k:
                keep = keep[scores[keep].topk(cfg.pre_nms_top_k).indices]
            anchor_idx = torch.div(keep, k, rounding_mode="floor")
            cls_idx = keep % k
            boxes = self.box_coder.decode_single(deltas[anchor_idx].float(), anchors[anchor_idx])
            boxes = clip_boxes_to_image(boxes, image_size)
            s = scores[keep]
            valid = remove_small_boxes(boxes, 1.0)
            boxes, s, cls_idx = boxes[valid], s[valid], cls_idx[valid]
            if cfg.class_agnostic_nms:
                kept = nms(boxes, s, cfg.nms_iou)[: cfg.max_detections]
            else:
                kept = batched_nms(boxes, s, cls_idx, cfg.nms_iou)[: cfg.max_detections]
            boxes_out.append(boxes[kept])
            scores_out.append(s[kept])
            labels_out.append(self.train_ids[cls_idx[kept]])
        return boxes_out, scores_out, labels_out
