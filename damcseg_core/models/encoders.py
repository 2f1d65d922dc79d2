"""LMMF modal feature extraction (DAMCSeg paper, Sec. III.B.1).

* RGB branch: the first stages of a timm MobileNetV4 (paper: MobileNetV4-Large); its stride-8
  and deepest kept stage are projected to the LMMF width and summed at stride 8, FPN-style, so
  the branch keeps the deep stage's semantics without running it dilated at stride 8.
* Depth / thermal branches: four convolution blocks of widths ``64 -> 128 -> 256 -> 512``
  (paper), strides 2, 2, 2, 1 and dilated second convolutions (rates ``dilations``) to widen the
  receptive field for spatial structure without further down-sampling.

All three branches map their modality to the same feature space ``[B, C, H/8, W/8]`` with
``C = widths[-1]``, which is what modal attention (eq. 1-2) and the MCN (eq. 3) work in.
The model also normalises canonical inputs (``docs/interfaces.md`` units) itself, see
:class:`ModalityNormalizer`.
"""

from __future__ import annotations

import difflib

import timm
import torch
import torch.nn.functional as F
from torch import nn

from damcseg_core.models.config import EncoderConfig, NormalizationConfig

__all__ = [
    "EVAL_CHANNELS_LAST",
    "FEATURE_STRIDE",
    "ConvBNAct",
    "DilatedModalEncoder",
    "ModalityNormalizer",
    "RgbEncoder",
    "TimmTrunk",
    "create_timm_model",
    "depth_metres",
    "eval_layout",
    "modality_in_channels",
]

FEATURE_STRIDE = 8
"""Stride of the LMMF feature maps (fusion, completion and the backbone input)."""

EVAL_CHANNELS_LAST = True
"""Run the convolutional parts in channels-last (NHWC) memory layout in eval mode.

oneDNN's depthwise and 1x1 convolutions are 1.5-2.5x faster on NHWC activations on CPU (issue #9
profile); the values are the same, only the layout differs. Training keeps the default layout.
"""


def eval_layout(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last layout when ``module`` is in eval mode (see :data:`EVAL_CHANNELS_LAST`)."""
    if EVAL_CHANNELS_LAST and not module.training and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def create_timm_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """``timm.create_model(name, num_classes=0)`` with errors that say what to change.

    Raises:
        ValueError: ``name`` is not a timm model (the message lists close names).
        RuntimeError: ``pretrained`` weights are not available offline.
    """
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        raise ValueError(f"'{name}' is not a timm model{f'; did you mean {close}' if close else ''}")
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except TypeError:
        raise  # wrong keyword arguments: callers turn these into config advice
    except Exception as exc:
        if not pretrained:
            raise
        raise RuntimeError(
            f"cannot load pretrained timm weights for '{name}' ({type(exc).__name__}: {exc}); put them in "
            "the Hugging Face / torch hub cache first or set pretrained: false"
        ) from exc


def modality_in_channels() -> dict[str, int]:
    """Network input channels per modality after :class:`ModalityNormalizer`."""
    # depth gets a validity channel so that "0 = invalid" is not confused with "very near".
    return {"rgb": 3, "depth": 2, "thermal": 1}


class ConvBNAct(nn.Sequential):
    """Conv2d -> BatchNorm -> activation (ReLU by default)."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        pad = dilation * (kernel - 1) // 2
        super().__init__(
            nn.Conv2d(in_ch, out_ch, kernel, stride, pad, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True) if act else nn.Identity(),
        )


def depth_metres(depth: torch.Tensor, max_depth: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth in metres clipped to ``[0, max_depth]`` with invalid pixels (0, negative, NaN/inf) set
    to 0, and the validity mask, both in ``depth``'s float dtype."""
    valid = torch.isfinite(depth) & (depth > 0)
    clean = torch.where(valid, depth, torch.zeros_like(depth)).clamp(max=max_depth)
    return clean, valid.to(depth.dtype)


class ModalityNormalizer(nn.Module):
    """Canonical units -> network inputs, per modality.

    * rgb ``[B,3,H,W]`` in [0, 1] -> ``(x - mean) / std``.
    * depth ``[B,1,H,W]`` metres -> 2 channels: normalised ``clip(d, 0, max_depth) / max_depth``
      (invalid pixels set to the mean so they carry no signal) and a 0/1 validity channel.
      NaN/inf/negative values are treated as invalid, like ``0``.
    * thermal ``[B,1,H,W]`` in [0, 1] -> ``(x - mean) / std``.
    """

    def __init__(self, cfg: NormalizationConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("rgb_mean", torch.tensor(cfg.rgb_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(cfg.rgb_std).view(1, 3, 1, 1), persistent=False)

    def depth_metres(self, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`depth_metres` with this normaliser's ``max_depth``."""
        return depth_metres(depth, self.cfg.max_depth)

    def forward(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        if modality == "rgb":
            return (x - self.rgb_mean) / self.rgb_std
        if modality == "depth":
            clean, valid = self.depth_metres(x)
            norm = (clean / self.cfg.max_depth - self.cfg.depth_mean) / self.cfg.depth_std
            return torch.cat([norm * valid, valid], dim=1)
        if modality == "thermal":
            return (x - self.cfg.thermal_mean) / self.cfg.thermal_std
        raise ValueError(f"unknown modality '{modality}'; valid: rgb, depth, thermal")


class TimmTrunk(nn.Module):
    """The stem and first ``num_stages`` stages of a timm EfficientNet-family model.

    timm's ``features_only`` keeps every stage even when only early outputs are requested, so
    the trunk rebuilds the classification model and keeps only ``conv_stem``, ``bn1`` and
    ``blocks[:num_stages]`` (no head): the dropped stages cost neither parameters nor time.

    Attributes:
        channels: output channels of each kept stage.
        reductions: stride of each kept stage.
    """

    def __init__(self, name: str, num_stages: int, in_chans: int = 3, pretrained: bool = False) -> None:
        super().__init__()
        model = create_timm_model(name, pretrained, in_chans=in_chans)
        if num_stages > len(model.blocks):
            raise ValueError(f"{name} has {len(model.blocks)} stages, asked for {num_stages}")
        self.conv_stem = model.conv_stem
        self.bn1 = model.bn1
        self.blocks = nn.ModuleList(model.blocks[:num_stages])
        # A dummy pass is the only robust way to read strides/channels of a truncated trunk.
        with torch.no_grad():
            was_training = self.training
            self.eval()
            feats = self.forward(torch.zeros(1, in_chans, 64, 64))
            self.train(was_training)
        self.channels = [f.shape[1] for f in feats]
        self.reductions = [64 // f.shape[-1] for f in feats]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.bn1(self.conv_stem(eval_layout(self, x)))
        out = []
        for stage in self.blocks:
            x = stage(x)
            out.append(x)
        return out


class RgbEncoder(nn.Module):
    """RGB branch: MobileNetV4 trunk, stride-8 and deepest stage fused to ``[B, C, H/8, W/8]``."""

    def __init__(self, cfg: EncoderConfig, pretrained: bool = False) -> None:
        super().__init__()
        self.trunk = TimmTrunk(cfg.rgb_backbone, cfg.rgb_stages, in_chans=3, pretrained=pretrained)
        if FEATURE_STRIDE not in self.trunk.reductions:
            raise ValueError(
                f"{cfg.rgb_backbone} with rgb_stages={cfg.rgb_stages} has no stride-{FEATURE_STRIDE} stage "
                f"(strides {self.trunk.reductions}); raise rgb_stages"
            )
        out = cfg.widths[-1]
        self.s8_index = self.trunk.reductions.index(FEATURE_STRIDE)
        self.proj_s8 = ConvBNAct(self.trunk.channels[self.s8_index], out, kernel=1, act=False)
        deep = len(self.trunk.channels) - 1
        self.proj_deep = (
            ConvBNAct(self.trunk.channels[deep], out, kernel=1, act=False) if deep != self.s8_index else None
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.trunk(x)
        y = self.proj_s8(feats[self.s8_index])
        if self.proj_deep is not None:
            deep = self.proj_deep(feats[-1])
            y = y + F.interpolate(deep, size=y.shape[-2:], mode="bilinear", align_corners=False)
        return self.act(y)


class _DilatedBlock(nn.Module):
    """Strided 3x3 conv, then a dilated (optionally depthwise-separable) 3x3 conv with a residual."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, dilation: int, separable: bool) -> None:
        super().__init__()
        self.down = ConvBNAct(in_ch, out_ch, 3, stride=stride)
        if separable:
            self.context = nn.Sequential(
                nn.Conv2d(out_ch, out_ch, 3, 1, dilation, dilation=dilation, groups=out_ch, bias=False),
                ConvBNAct(out_ch, out_ch, kernel=1, act=False),
            )
        else:
            self.context = ConvBNAct(out_ch, out_ch, 3, dilation=dilation, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A 1-channel input (thermal) is both NCHW- and NHWC-contiguous, so the encoder's
        # eval_layout cannot mark it NHWC and oneDNN runs the first block in NCHW; re-laying the
        # first output out (a no-op for every later block) ran the thermal encoder ~1.3x faster.
        x = eval_layout(self, self.down(x))
        return self.act(x + self.context(x))


class DilatedModalEncoder(nn.Module):
    """Depth / thermal branch: 4 dilated conv blocks, strides (2, 2, 2, 1) -> ``[B, C, H/8, W/8]``."""

    STRIDES = (2, 2, 2, 1)

    def __init__(self, in_chans: int, cfg: EncoderConfig) -> None:
        super().__init__()
        blocks = []
        prev = in_chans
        for width, stride, dilation in zip(cfg.widths, self.STRIDES, cfg.dilations):
            blocks.append(_DilatedBlock(prev, width, stride, dilation, cfg.separable))
            prev = width
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(eval_layout(self, x))
