"""BiFPN feature pyramid (EfficientDet, Tan et al. 2020), as used by the DAMCSeg detection head.

Weighted bidirectional fusion with "fast normalised fusion": every node computes
``conv(sum_i w_i * x_i / (sum_i w_i + eps))`` with learnable ``w_i >= 0`` (ReLU), followed by a
depthwise-separable 3x3 convolution with BatchNorm. Levels above the backbone's deepest one
(P6, P7) are made by 1x1 projection and stride-2 max pooling, as in EfficientDet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BiFPN", "SeparableConvBN", "resize_to"]


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest up-sampling or 3x3/2 max-pool down-sampling of ``x`` to spatial ``size``."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if h > size[0] or w > size[1]:
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        if tuple(x.shape[-2:]) == tuple(size):
            return x
    return F.interpolate(x, size=size, mode="nearest")


class SeparableConvBN(nn.Sequential):
    """Depthwise 3x3 -> pointwise 1x1 -> BatchNorm (EfficientDet's BiFPN / head conv)."""

    def __init__(self, channels: int, out_channels: int | None = None, norm: bool = True) -> None:
        out_channels = out_channels or channels
        super().__init__(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
            nn.Conv2d(channels, out_channels, 1, bias=not norm),
            nn.BatchNorm2d(out_channels) if norm else nn.Identity(),
        )


class _FusionNode(nn.Module):
    """One BiFPN node: fast normalised weighted sum of its inputs, SiLU, separable conv."""

    def __init__(self, channels: int, num_inputs: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.ones(num_inputs))
        self.conv = SeparableConvBN(channels)
        self.act = nn.SiLU()

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        w = F.relu(self.weights)
        w = w / (w.sum() + 1e-4)
        x = sum(wi * xi for wi, xi in zip(w, inputs))
        return self.conv(self.act(x))


class _BiFPNLayer(nn.Module):
    def __init__(self, channels: int, num_levels: int) -> None:
        super().__init__()
        self.top_down = nn.ModuleList([_FusionNode(channels, 2) for _ in range(num_levels - 1)])
        # Middle levels fuse 3 inputs (input, top-down, bottom-up); the top level fuses 2.
        self.bottom_up = nn.ModuleList(
            [_FusionNode(channels, 3 if i < num_levels - 1 else 2) for i in range(1, num_levels)]
        )

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        n = len(feats)
        td = [None] * n
        td[-1] = feats[-1]
        for i in range(n - 2, -1, -1):
            size = feats[i].shape[-2:]
            td[i] = self.top_down[i]([feats[i], resize_to(td[i + 1], size)])
        out = [td[0]]
        for i in range(1, n):
            size = feats[i].shape[-2:]
            down = resize_to(out[-1], size)
            inputs = [feats[i], td[i], down] if i < n - 1 else [feats[i], down]
            out.append(self.bottom_up[i - 1](inputs))
        return out


class BiFPN(nn.Module):
    """Project backbone levels P3..P5 to ``channels``, add pooled levels up to ``max_level``, fuse.

    Args:
        in_channels: channels of the backbone pyramid ``[P3, P4, P5]``.
        channels: BiFPN width.
        repeats: stacked BiFPN layers.
        min_level / max_level: pyramid levels produced (``min_level >= 3``).
    """

    def __init__(
        self, in_channels: list[int], channels: int, repeats: int, min_level: int = 3, max_level: int = 7
    ) -> None:
        super().__init__()
        if min_level < 3 or min_level > 5:
            raise ValueError(f"BiFPN min_level must be in 3..5 (backbone gives P3..P5), got {min_level}")
        self.min_level = min_level
        self.max_level = max_level
        backbone_levels = list(range(3, 6))
        self.lateral = nn.ModuleDict()
        for level, ch in zip(backbone_levels, in_channels):
            if min_level <= level <= max_level:
                self.lateral[str(level)] = nn.Sequential(
                    nn.Conv2d(ch, channels, 1, bias=False), nn.BatchNorm2d(channels)
                )
        # P6 projects P5 when P5 itself is below min_level, so every extra level is channels-wide.
        self.extra_in = nn.Sequential(
            nn.Conv2d(in_channels[-1], channels, 1, bias=False), nn.BatchNorm2d(channels)
        )
        self.layers = nn.Sequential(
            *[_BiFPNLayer(channels, max_level - min_level + 1) for _ in range(repeats)]
        )

    def forward(self, pyramid: list[torch.Tensor]) -> list[torch.Tensor]:
        feats = []
        for level in range(self.min_level, self.max_level + 1):
            if level <= 5:
                feats.append(self.lateral[str(level)](pyramid[level - 3]))
            elif level == 6:
                feats.append(F.max_pool2d(self.extra_in(pyramid[-1]), 3, 2, 1))
            else:
                feats.append(F.max_pool2d(feats[-1], 3, 2, 1))
        return self.layers(feats)
