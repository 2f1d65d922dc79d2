"""Shared EfficientNetV2 backbone with task-specific adaptation (DAMCSeg paper, Sec. III.C.1).

The LMMF module already turns each modality into stride-8 features, so the backbone takes the
fused stride-8 map and runs the EfficientNetV2 stages *below* stride 8 (the stride-16 and
stride-32 stages, which hold ~95 % of EfficientNetV2's parameters). Their blocks are split by
``shared_fraction`` (paper: 80 %): the first 80 % run once and are shared by detection and
segmentation; the last 20 % are duplicated, one copy per task, as task-specific adaptation
layers. EfficientNetV2's own stem and stride-2..8 stages would duplicate the LMMF encoders and
are dropped.

``forward`` returns two pyramids (detection, segmentation), each ``[P3, P4, P5]`` at strides
8, 16, 32; ``channels`` / ``reductions`` describe them so heads never hard-code widths.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from damcseg_core.models.config import BackboneConfig
from damcseg_core.models.encoders import FEATURE_STRIDE, ConvBNAct, create_timm_model, eval_layout

__all__ = ["SharedBackbone"]


class SharedBackbone(nn.Module):
    """EfficientNetV2 stride-16/32 stages, 80 % shared and 20 % duplicated per task.

    Args:
        in_channels: channels of the fused LMMF features (stride 8).
        cfg: backbone settings.
        pretrained: load timm weights (only where they are cached locally).

    Attributes:
        channels: ``[C_P3, C_P4, C_P5]`` of each returned pyramid.
        reductions: ``[8, 16, 32]``.
        num_shared_blocks / num_task_blocks: how the blocks were split.
    """

    def __init__(self, in_channels: int, cfg: BackboneConfig, pretrained: bool = False) -> None:
        super().__init__()
        kwargs = {}
        # Only pass multipliers that differ from 1: scaled variants (b1..b3) fix their own.
        if cfg.channel_multiplier != 1.0:
            kwargs["channel_multiplier"] = cfg.channel_multiplier
        if cfg.depth_multiplier != 1.0:
            kwargs["depth_multiplier"] = cfg.depth_multiplier
        if not pretrained and cfg.name.startswith("tf_"):
            # TF "same" padding only matters to match ported weights; symmetric padding is faster
            # on CPU and exports cleanly to ONNX.
            kwargs["pad_type"] = ""
        try:
            model = create_timm_model(cfg.name, pretrained, **kwargs)
        except TypeError as exc:
            raise ValueError(
                f"backbone '{cfg.name}' fixes its own channel/depth multipliers; leave "
                f"backbone.channel_multiplier/depth_multiplier at 1.0 or scale tf_efficientnetv2_b0 ({exc})"
            ) from exc
        stage_channels, stage_reductions = self._probe(model)
        first = next((i for i, r in enumerate(stage_reductions) if r > FEATURE_STRIDE), None)
        if first is None or first == 0 or stage_reductions[-1] != 32:
            raise ValueError(f"backbone '{cfg.name}' must have stages at strides 8, 16 and 32")
        self.input_proj = ConvBNAct(in_channels, stage_channels[first - 1], kernel=1)

        flat: list[tuple[int, nn.Module]] = []
        for stage in range(first, len(model.blocks)):
            flat += [(stage, block) for block in model.blocks[stage]]
        n_shared = max(1, min(len(flat) - 1, round(cfg.shared_fraction * len(flat))))
        self.num_shared_blocks = n_shared
        self.num_task_blocks = len(flat) - n_shared
        self._shared_stages = [s for s, _ in flat[:n_shared]]
        self._task_stages = [s for s, _ in flat[n_shared:]]
        self.shared = nn.ModuleList([b for _, b in flat[:n_shared]])
        task = [b for _, b in flat[n_shared:]]
        self.det_blocks = nn.ModuleList(task)
        # A deep copy keeps identical (e.g. pretrained) initial weights; the copies diverge in training.
        self.seg_blocks = nn.ModuleList(copy.deepcopy(task))
        self._p4_stage = max(i for i, r in enumerate(stage_reductions) if r == 16)
        self._p5_stage = len(stage_reductions) - 1
        self.channels = [in_channels, stage_channels[self._p4_stage], stage_channels[self._p5_stage]]
        self.reductions = [FEATURE_STRIDE, 16, 32]

    @staticmethod
    @torch.no_grad()
    def _probe(model: nn.Module) -> tuple[list[int], list[int]]:
        """Output channels and stride of every stage of a timm EfficientNet (one dummy pass)."""
        was_training = model.training
        model.eval()
        x = model.bn1(model.conv_stem(torch.zeros(1, 3, 64, 64)))
        channels, reductions = [], []
        for stage in model.blocks:
            x = stage(x)
            channels.append(x.shape[1])
            reductions.append(64 // x.shape[-1])
        model.train(was_training)
        return channels, reductions

    def _run(
        self, x: torch.Tensor, blocks: nn.ModuleList, stages: list[int], outs: dict[int, torch.Tensor]
    ) -> torch.Tensor:
        for stage, block in zip(stages, blocks):
            x = block(x)
            outs[stage] = x  # the last write per stage is that stage's output
        return x

    def forward(self, fused: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run the shared blocks once and the task-specific blocks per task.

        Args:
            fused: ``[B, C, H/8, W/8]`` fused LMMF features.

        Returns:
            ``(det_pyramid, seg_pyramid)``, each ``[P3, P4, P5]``; ``P3`` is ``fused`` itself.
        """
        shared_outs: dict[int, torch.Tensor] = {}
        fused = eval_layout(self, fused)
        x = self._run(self.input_proj(fused), self.shared, self._shared_stages, shared_outs)
        pyramids = []
        for blocks in (self.det_blocks, self.seg_blocks):
            outs = dict(shared_outs)
            self._run(x, blocks, self._task_stages, outs)
            pyramids.append([fused, outs[self._p4_stage], outs[self._p5_stage]])
        return pyramids[0], pyramids[1]
