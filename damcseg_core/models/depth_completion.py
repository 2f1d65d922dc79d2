"""Depth completion in image space: a missing depth sensor predicted as a depth *image*.

The MCN (eq. 3, :mod:`damcseg_core.models.completion`) predicts a missing modality's encoder
features. For depth that recovers little of the mIoU a dropped sensor costs (issue #16: 17-32 %
of the gap on three seeds), for two measured reasons: the stride-8 features it predicts are far
from what the downstream network was trained on, and the refinement (the depth-prior path, scene
complexity) reads the raw depth image, which a feature completion cannot give it. This module
completes where the rest of the network was trained instead: it predicts a dense depth image in
metres from the RGB and thermal encoder features plus the full-resolution images, and the model
then runs the real depth encoder, the detector and the depth-prior path on that image. Measured
on edge v6.2 (``docs/edge_v6_3/README.md``): +2.9 mIoU over the MCN with depth missing on
validation, +0.8 / +0.1 on the held-out seeds (inside the noise); the shipped model keeps it off.

Architecture: a small U-Net-style decoder. The stride-8 features of RGB and thermal
(``[B, 2C, H/8, W/8]``, zeros where a sensor is missing) pass two depthwise-separable residual
blocks (dilations 1 and 2), then three 2x up-sampling stages, each joined by a skip from a
shallow image branch (stride 2 and 4) on the normalised RGB + thermal images. The head gives two
maps at input resolution: log-depth and a validity logit (sky and beyond-range pixels are
"no return", 0 m, as a real depth camera reports them).

Its loss is :func:`damcseg_core.losses.completion.depth_completion_loss`.

Output: canonical depth ``[B, 1, H, W]`` in metres, 0 where the predicted validity is below
0.5: exactly what :class:`~damcseg_core.models.encoders.ModalityNormalizer` expects of a real
depth image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DENSE_FRACTION", "MIN_DEPTH", "DepthImageCompleter", "depth_from_raw"]

MIN_DEPTH = 0.5  # metres; the predicted log-depth is clamped to [log(MIN_DEPTH), log(max_depth)]
# A target depth image is "dense" (a depth camera, stereo) above this valid fraction; a lidar's
# projected rows are a few %. Only dense targets teach validity (sky) and encoder features.
DENSE_FRACTION = 0.3


def depth_from_raw(log_depth: torch.Tensor, valid_logit: torch.Tensor) -> torch.Tensor:
    """Canonical depth in metres from :meth:`DepthImageCompleter.forward_raw`: 0 where predicted invalid."""
    return torch.where(valid_logit > 0, log_depth.exp(), torch.zeros_like(log_depth))


def _conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _SeparableResidual(nn.Module):
    """Depthwise 3x3 (dilated) + pointwise 1x1, both with BatchNorm, and a residual connection."""

    def __init__(self, ch: int, dilation: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(ch, ch, 3, padding=dilation, dilation=dilation, groups=ch, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.pw = nn.Conv2d(ch, ch, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.dw(x)))
        return F.relu(x + self.bn2(self.pw(y)))


class DepthImageCompleter(nn.Module):
    """Predict a depth image (metres) from RGB / thermal encoder features and images.

    Args:
        feature_channels: channels ``C`` of one modality's encoder output (stride 8).
        max_depth: the normaliser's ``max_depth`` (metres); predictions are clamped to it.
        width: channels of the stride-8 trunk (the decoder halves it per stage).
    """

    def __init__(self, feature_channels: int, max_depth: float, width: int = 64) -> None:
        super().__init__()
        self.max_depth = float(max_depth)
        w1, w2, w4 = width // 4, width // 2, width  # stride 1-2 / 4 / 8
        self.image_s2 = _conv_bn(4, w1, stride=2)
        self.image_s4 = _conv_bn(w1, w2, stride=2)
        self.reduce = nn.Sequential(
            nn.Conv2d(2 * feature_channels, w4, 1, bias=False), nn.BatchNorm2d(w4), nn.ReLU(inplace=True)
        )
        self.trunk = nn.Sequential(_SeparableResidual(w4, 1), _SeparableResidual(w4, 2))
        self.up4 = _conv_bn(w4 + w2, w2)  # stride 4: trunk up-sampled + image_s4
        self.up2 = _conv_bn(w2 + w1, w1)  # stride 2: + image_s2
        self.head = nn.Conv2d(w1, 2, 3, padding=1)  # input resolution: log-depth, validity logit
        with torch.no_grad():  # start at a plausible mid-range depth, everything valid
            self.head.bias.copy_(torch.tensor([math.log(15.0), 2.0]))

    def forward_raw(
        self, rgb_feat: torch.Tensor, thermal_feat: torch.Tensor, image: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_depth, valid_logit)``, each ``[B, 1, H, W]``.

        Args:
            rgb_feat / thermal_feat: ``[B, C, H/8, W/8]`` encoder outputs (zeros for a missing one).
            image: ``[B, 4, H, W]`` normalised rgb | thermal (zeros for a missing one).
        """
        s2 = self.image_s2(image)
        s4 = self.image_s4(s2)
        x = self.trunk(self.reduce(torch.cat([rgb_feat, thermal_feat], dim=1)))
        x = F.interpolate(x, size=s4.shape[-2:], mode="bilinear", align_corners=False)
        x = self.up4(torch.cat([x, s4], dim=1))
        x = F.interpolate(x, size=s2.shape[-2:], mode="bilinear", align_corners=False)
        x = self.up2(torch.cat([x, s2], dim=1))
        x = F.interpolate(x, size=image.shape[-2:], mode="bilinear", align_corners=False)
        out = self.head(x)
        log_depth = out[:, :1].clamp(math.log(MIN_DEPTH), math.log(self.max_depth))
        return log_depth, out[:, 1:]

    def forward(
        self, rgb_feat: torch.Tensor, thermal_feat: torch.Tensor, image: torch.Tensor
    ) -> torch.Tensor:
        """Canonical depth ``[B, 1, H, W]`` in metres, 0 where predicted invalid."""
        return depth_from_raw(*self.forward_raw(rgb_feat, thermal_feat, image))
