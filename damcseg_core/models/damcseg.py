"""DAMCSeg: Dynamic Adaptive Multi-Modal Collaborative Semantic Segmentation.

Liao, Ding, Huang, "DAMCSeg: Dynamic Adaptive Multi-Modal Collaborative Semantic
Segmentation" (paper in ``/work/shared/paper``). This module only wires the parts together:

    inputs (any subset of rgb/depth/thermal, canonical units)
      -> ModalityNormalizer -> LMMF encoders (Sec. III.B.1)
      -> MCN completes missing modalities (eq. 3) -> modal adaptive attention (eq. 1-2)
      -> shared EfficientNetV2 backbone, 80 % shared / 20 % per task (Sec. III.C.1)
      -> detection head (BiFPN) -> boxes
      -> segmentation head: global (ASPP) | local (ROI, gated branches) | post (depth prior)
      -> scene complexity (eq. 5) + DSAF weights (eq. 6-9) -> weighted fusion -> CRF (Sec. III.E)

Eval mode returns :class:`DamcsegOutput`, train mode :class:`DamcsegTrainOutput`, whatever the
configuration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from damcseg_core import MODALITIES
from damcseg_core.models.backbone import SharedBackbone
from damcseg_core.models.branch_gating import GATE_IN_FEATURES, gate_features
from damcseg_core.models.completion import ModalCompletionNetwork
from damcseg_core.models.config import ModelConfig
from damcseg_core.models.crf import MeanFieldCRF
from damcseg_core.models.detection_head import DetectionHead
from damcseg_core.models.dsaf import DSAF, DSAFWeights
from damcseg_core.models.encoders import (
    DilatedModalEncoder,
    ModalityNormalizer,
    RgbEncoder,
    modality_in_channels,
)
from damcseg_core.models.modal_attention import ConcatFusion, ModalAdaptiveAttention
from damcseg_core.models.outputs import DamcsegOutput, DamcsegTrainOutput
from damcseg_core.models.scene_complexity import (
    SceneComplexity,
    estimate_scene_complexity,
    initial_branch_weights,
)
from damcseg_core.models.segmentation_head import DepthPriorPath, GlobalPath, LocalPath, paste_rois

__all__ = [
    "DAMCSeg",
    "DenseOutputs",
    "LMMFFeatures",
    "RefineParts",
    "RefineResult",
    "check_inputs",
    "guide_image",
    "refine",
]


def _next_multiple(x: int, m: int = 32) -> int:
    return (x + m - 1) // m * m


def check_inputs(inputs: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    """Validate a batch of canonical model inputs and return ``(B, H, W)``.

    Raises:
        ValueError: empty dict, unknown key, wrong rank/channels/dtype, mismatched sizes, or H/W
            not multiples of 32 (the message names the padded size to use).
    """
    if not isinstance(inputs, dict) or not inputs:
        raise ValueError(f"inputs must be a non-empty dict with keys from {list(MODALITIES)}")
    unknown = sorted(set(inputs) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown modality key(s) {unknown}; valid keys are {list(MODALITIES)}")
    channels = {"rgb": 3, "depth": 1, "thermal": 1}
    shape = None
    for m in MODALITIES:
        if m not in inputs:
            continue
        x = inputs[m]
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != channels[m]:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"'{m}' must be a [B,{channels[m]},H,W] tensor, got {got}")
        if not x.is_floating_point():
            raise ValueError(
                f"'{m}' must be floating point in canonical units (docs/interfaces.md), got {x.dtype}"
            )
        here = (x.shape[0], x.shape[2], x.shape[3])
        if shape is not None and here != shape:
            raise ValueError(f"all modalities must share batch and size; '{m}' is {here}, expected {shape}")
        shape = here
    b, h, w = shape
    if h % 32 or w % 32:
        raise ValueError(
            f"height and width must be multiples of 32, got {h}x{w}; pad to "
            f"{_next_multiple(h)}x{_next_multiple(w)} (the Predictor does this for you)"
        )
    return b, h, w


def _shape(inputs: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    """``(B, H, W)`` of inputs that :func:`check_inputs` has already accepted."""
    x = next(iter(inputs.values()))
    return x.shape[0], x.shape[2], x.shape[3]


@dataclasses.dataclass
class LMMFFeatures:
    """What :meth:`DAMCSeg.forward_features` returns.

    Attributes:
        normalized: modality -> normalised network input of every modality some sample uses;
            zeros for the samples that drop it (a per-sample ``drop`` mask).
        encoded: modality -> encoder features ``[B, C, H/8, W/8]`` of every given modality
            (dropped ones included, computed without gradient, as completion targets).
        completed_feats: modality -> features of all three modalities after the MCN.
        fused: ``[B, C, H/8, W/8]`` fused features (eq. 2).
        modality_weights: ``[B, 3]`` mean reliability per modality.
        present / completed: modality name tuples in ``MODALITIES`` order; ``completed`` holds
            every modality the MCN predicted for at least one sample.
        completed_mask: ``[B, 3]`` bool, ``True`` where a sample's features of that modality are
            an MCN prediction (missing, or dropped for training).
        teacher_fused: ``[B, C, H/8, W/8]`` fusion of the *real* encoder features of every given
            modality (no gradient), the distillation target for samples that dropped a given
            modality; ``None`` when no sample dropped one.
        distill_mask: ``[B]`` bool, the samples ``teacher_fused`` is a target for (``None`` with it).
    """

    normalized: dict[str, torch.Tensor]
    encoded: dict[str, torch.Tensor]
    completed_feats: dict[str, torch.Tensor]
    fused: torch.Tensor
    modality_weights: torch.Tensor
    present: tuple[str, ...]
    completed: tuple[str, ...]
    completed_mask: torch.Tensor | None = None
    teacher_fused: torch.Tensor | None = None
    distill_mask: torch.Tensor | None = None


@dataclasses.dataclass
class DenseOutputs:
    """What :meth:`DAMCSeg.forward_dense` returns: the fixed-shape tensors :func:`refine` needs.

    These are the outputs of the exported ONNX graph (``damcseg_core.export``), ``anchors``
    aside (a constant the onnxruntime backend rebuilds from the config).

    Attributes:
        cls_logits: ``[B, A, K_det]`` raw detection class logits.
        box_deltas: ``[B, A, 4]`` raw box regression.
        anchors: ``[A, 4]`` xyxy anchors.
        global_logits: ``[B, K, H/s, W/s]`` global-path logits at the work resolution.
        seg_feature: ``[B, C, H/8, W/8]`` stride-8 segmentation features (P3, local-path context).
        image_stack: ``[B, 6, H, W]`` normalised rgb|depth(+valid)|thermal, zeros where unused.
        modality_weights: ``[B, 3]`` mean reliability per modality.
        anchor_levels: ``[A]`` pyramid level index of each anchor (training only; the onnxruntime
            backend leaves it ``None``).
    """

    cls_logits: torch.Tensor
    box_deltas: torch.Tensor
    anchors: torch.Tensor
    global_logits: torch.Tensor
    seg_feature: torch.Tensor
    image_stack: torch.Tensor
    modality_weights: torch.Tensor
    anchor_levels: torch.Tensor | None = None


class DAMCSeg(nn.Module):
    """The full DAMCSeg model; build it with :func:`damcseg_core.models.build_model`.

    Args:
        cfg: the model configuration (kept as ``self.config``).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        width = cfg.encoder.widths[-1]
        in_ch = modality_in_channels()
        self.normalizer = ModalityNormalizer(cfg.normalization)
        self.encoders = nn.ModuleDict(
            {
                "rgb": RgbEncoder(cfg.encoder, pretrained=cfg.pretrained),
                "depth": DilatedModalEncoder(in_ch["depth"], cfg.encoder),
                "thermal": DilatedModalEncoder(in_ch["thermal"], cfg.encoder),
            }
        )
        if cfg.fusion.mode == "lmmf":
            self.completion = ModalCompletionNetwork(
                width, cfg.completion.hidden, cfg.completion.layers, cfg.completion.output
            )
            self.attention = ModalAdaptiveAttention(width, cfg.fusion.heads, cfg.fusion.completion_flag)
        else:  # ablation baseline: no MCN, no attention (missing modalities are zeros)
            self.completion = None
            self.attention = ConcatFusion(width)
        self.backbone = SharedBackbone(width, cfg.backbone, pretrained=cfg.pretrained)
        self.det_head = DetectionHead(self.backbone.channels, cfg.detection, cfg.num_det_classes)
        self.global_path = GlobalPath(self.backbone.channels, cfg.segmentation, cfg.num_classes)
        self.local_path = LocalPath(
            sum(in_ch.values()), width, cfg.segmentation, cfg.num_classes,
            GATE_IN_FEATURES, cfg.refinement.gate, pretrained=cfg.pretrained,
        )  # fmt: skip
        self.post_path = DepthPriorPath(cfg.segmentation.post_strength, cfg.segmentation.depth_tolerance)
        self.dsaf = DSAF(cfg.refinement.dsaf)
        self.crf = MeanFieldCRF.from_config(cfg.refinement.crf) if cfg.refinement.use_crf else None

    # ------------------------------------------------------------------ features
    def forward_features(
        self,
        inputs: dict[str, torch.Tensor],
        drop: tuple[str, ...] | set[str] | torch.Tensor = (),
    ) -> LMMFFeatures:
        """LMMF: normalise, encode, complete missing modalities, fuse.

        Args:
            inputs: modality -> batched canonical tensor (see :func:`check_inputs`).
            drop: what to treat as missing for completion training. Either modality names
                present in ``inputs`` (the whole batch drops them), or a ``[B, 3]`` bool *keep*
                mask in ``MODALITIES`` order (``True`` = the sample keeps the modality; see
                :func:`damcseg_core.train.modality_dropout.sample_keep_mask`). A dropped
                modality is still encoded from its real input, without gradient, as completion
                and distillation target; the sample gets the MCN prediction instead, present
                samples keep the encoder output bit-identically.

        Raises:
            ValueError: invalid inputs, ``drop`` naming an absent modality or all of them, or a
                mask of the wrong shape/dtype, keeping an absent modality, or with an empty row.
        """
        b, _, _ = check_inputs(inputs)
        present = tuple(m for m in MODALITIES if m in inputs)
        if isinstance(drop, torch.Tensor):
            keep = self._check_keep_mask(drop, b, present)
        else:
            drop = set(drop)
            bad = sorted(drop - set(inputs))
            if bad:
                raise ValueError(f"drop={sorted(drop)} names modalities not in the inputs: {bad}")
            if not [m for m in present if m not in drop]:
                raise ValueError(f"drop={sorted(drop)} would remove every input modality; keep at least one")
            keep = None if not drop else torch.tensor([m in present and m not in drop for m in MODALITIES])
            if keep is not None:
                keep = keep.expand(b, -1)
        if keep is None:  # the static path: the exported graphs and inference take it
            return self._features_static(inputs, present)
        return self._features_masked(inputs, present, keep)

    @staticmethod
    def _check_keep_mask(keep: torch.Tensor, b: int, present: tuple[str, ...]) -> torch.Tensor:
        n = len(MODALITIES)
        if keep.dtype != torch.bool or tuple(keep.shape) != (b, n):
            raise ValueError(
                f"a drop mask must be a [{b}, {n}] bool keep-mask in {list(MODALITIES)} order, "
                f"got {tuple(keep.shape)} {keep.dtype}"
            )
        host = keep.detach().cpu()
        absent = [m for i, m in enumerate(MODALITIES) if m not in present and bool(host[:, i].any())]
        if absent:
            raise ValueError(f"the keep-mask keeps {absent}, which are not in the inputs; set them False")
        empty = torch.nonzero(~host.any(dim=1)).flatten().tolist()
        if empty:
            raise ValueError(f"the keep-mask drops every modality of samples {empty}; keep at least one")
        return host

    def _features_static(self, inputs: dict[str, torch.Tensor], present: tuple[str, ...]) -> LMMFFeatures:
        """Every sample uses every given modality; the MCN completes the absent ones."""
        normalized = {m: self.normalizer(m, inputs[m]) for m in present}
        encoded = {m: self.encoders[m](normalized[m]) for m in present}
        ref = encoded[present[0]]
        flags = ref.new_tensor([float(m not in present) for m in MODALITIES]).expand(ref.shape[0], -1)
        if self.completion is not None:
            completed_feats, completed = self.completion(dict(encoded))
        else:
            completed_feats, completed = dict(encoded), ()
        fused, weights = self.attention(completed_feats, flags if completed else None)
        return LMMFFeatures(
            normalized=normalized,
            encoded=encoded,
            completed_feats=completed_feats,
            fused=fused,
            modality_weights=weights,
            present=present,
            completed=completed,
            completed_mask=(flags > 0) if completed else torch.zeros_like(flags, dtype=torch.bool),
        )

    def _features_masked(
        self, inputs: dict[str, torch.Tensor], present: tuple[str, ...], keep: torch.Tensor
    ) -> LMMFFeatures:
        """Per-sample keep mask (training): see :meth:`forward_features`."""
        kept_by_all = {m: bool(keep[:, i].all()) for i, m in enumerate(MODALITIES)}
        kept_by_any = {m: bool(keep[:, i].any()) for i, m in enumerate(MODALITIES)}
        dropped = tuple(m for m in present if not kept_by_all[m])  # real input, dropped somewhere
        normalized = {m: self.normalizer(m, inputs[m]) for m in present}
        encoded: dict[str, torch.Tensor] = {}
        for m in present:
            if kept_by_any[m]:  # one pass on the whole batch; dropped samples get no gradient below
                encoded[m] = self.encoders[m](normalized[m])
            else:
                with torch.no_grad():
                    encoded[m] = self.encoders[m](normalized[m])
        ref = encoded[present[0]]
        dev_keep = keep.to(ref.device)
        targets = {m: (encoded[m].detach() if m in dropped else encoded[m]) for m in present}
        used = {m: encoded[m] for m in present if kept_by_any[m]}
        if self.completion is not None:
            completed_feats = self.completion.complete_masked(used, dev_keep)
            completed_mask = ~dev_keep
        else:  # ConcatFusion baseline: a dropped modality is zeros
            zero = ref.new_zeros(())
            completed_feats = {
                m: f if kept_by_all[m] else torch.where(dev_keep[:, i, None, None, None], f, zero)
                for i, m in enumerate(MODALITIES)
                if (f := used.get(m)) is not None
            }
            completed_mask = torch.zeros_like(dev_keep)
        completed = tuple(m for i, m in enumerate(MODALITIES) if bool(completed_mask[:, i].any()))
        flags = completed_mask.to(ref.dtype) if completed else None
        fused, weights = self.attention(completed_feats, flags)
        teacher, distill = None, None
        if dropped and self.completion is not None:
            # Teacher: the same attention on the real features of every given modality (the MCN
            # only for modalities the batch lacks altogether), no gradient.
            have = torch.tensor([m in present for m in MODALITIES]).expand_as(keep)
            with torch.no_grad():
                real = {m: encoded[m] for m in present}
                if len(present) < len(MODALITIES):
                    real = self.completion.complete_masked(real, have.to(ref.device))
                t_flags = (~have).to(ref.device, ref.dtype) if len(present) < len(MODALITIES) else None
                teacher, _ = self.attention(real, t_flags)
            teacher = teacher.detach()
            distill = (have & ~keep).any(dim=1).to(ref.device)
        for i, m in enumerate(MODALITIES):  # a sample's dropped input must not reach the head
            if m in normalized and not kept_by_all[m]:
                if kept_by_any[m]:
                    normalized[m] = normalized[m] * dev_keep[:, i, None, None, None].to(normalized[m].dtype)
                else:
                    del normalized[m]
        return LMMFFeatures(
            normalized=normalized,
            encoded=targets,
            completed_feats=completed_feats,
            fused=fused,
            modality_weights=weights,
            present=present,
            completed=completed,
            completed_mask=completed_mask,
            teacher_fused=teacher,
            distill_mask=distill,
        )

    def _image_stack(
        self, normalized: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """``[B, 6, H, W]`` normalised rgb|depth(+valid)|thermal, zeros for absent modalities."""
        like = next(iter(inputs.values()))
        b, _, h, w = like.shape
        parts = []
        for m, c in modality_in_channels().items():
            parts.append(normalized[m] if m in normalized else like.new_zeros(b, c, h, w))
        return torch.cat(parts, dim=1)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        inputs: dict[str, torch.Tensor],
        drop: tuple[str, ...] | set[str] | torch.Tensor = (),
        roi_boxes: list[torch.Tensor] | None = None,
        roi_labels: list[torch.Tensor] | None = None,
    ) -> DamcsegOutput | DamcsegTrainOutput:
        """Detect and segment a batch.

        Args:
            inputs: modality -> ``[B, C, H, W]`` canonical tensors (any non-empty subset).
            drop: modality names the whole batch drops, or a ``[B, 3]`` bool keep-mask (each
                sample its own subset), for completion training (see :meth:`forward_features`).
            roi_boxes: optional per image ``[N, 4]`` xyxy boxes (e.g. ground truth in training)
                that the local and post-processing paths use instead of the detections.
            roi_labels: per image ``[N]`` train ids of ``roi_boxes`` (required with them).

        Returns:
            :class:`DamcsegOutput` in eval mode, :class:`DamcsegTrainOutput` in train mode.
        """
        feats = self.forward_features(inputs, drop)
        return self.forward_head(feats, inputs, roi_boxes, roi_labels)

    def forward_dense(self, feats: LMMFFeatures, inputs: dict[str, torch.Tensor]) -> DenseOutputs:
        """The fixed-shape part of the head: backbone, raw detection outputs, global path.

        This (with :meth:`forward_features`) is what ``damcseg_core.export`` puts into the
        ONNX graph; everything data-dependent happens in :func:`refine`.
        """
        _, h, w = _shape(inputs)  # validated once, by forward_features
        det_pyr, seg_pyr = self.backbone(feats.fused)
        cls_logits, box_deltas, anchors, anchor_levels = self.det_head(det_pyr)
        st = self.config.segmentation.fusion_stride
        global_logits, _ = self.global_path(seg_pyr, (h // st, w // st))
        return DenseOutputs(
            cls_logits=cls_logits,
            box_deltas=box_deltas,
            anchors=anchors,
            anchor_levels=anchor_levels,
            global_logits=global_logits,
            seg_feature=seg_pyr[0],
            image_stack=self._image_stack(feats.normalized, inputs),
            modality_weights=feats.modality_weights,
        )

    @staticmethod
    def _refine_inputs(
        feats: LMMFFeatures, inputs: dict[str, torch.Tensor], used: tuple[str, ...]
    ) -> dict[str, torch.Tensor]:
        """``inputs`` as the refinement stage may see them: a sensor dropped for a sample is zeros.

        With per-sample modality dropout a modality is in ``used`` when any sample keeps it; the
        samples that drop it must not hand its real image to the CRF guide, scene complexity or
        the depth prior (zero depth is "no return"; :func:`guide_image` takes the mask and falls back per sample).
        """
        mask = feats.completed_mask
        if mask is None or not bool(mask.any()):
            return inputs
        out = dict(inputs)
        for j, m in enumerate(MODALITIES):
            if m in used and bool(mask[:, j].any()):
                keep = (~mask[:, j]).to(inputs[m].dtype).view(-1, 1, 1, 1)
                out[m] = inputs[m] * keep
        return out

    def _run_local(
        self, image: torch.Tensor, p3: torch.Tensor, boxes: list[torch.Tensor], gates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Local-path runner for :func:`refine`: ``(roi_logits [N,K,h,w], gate_cost)``."""
        out = self.local_path(image, p3, boxes, gates)
        return out.logits, out.gate_cost

    def forward_head(
        self,
        feats: LMMFFeatures,
        inputs: dict[str, torch.Tensor],
        roi_boxes: list[torch.Tensor] | None = None,
        roi_labels: list[torch.Tensor] | None = None,
    ) -> DamcsegOutput | DamcsegTrainOutput:
        """Backbone, detection, the three segmentation paths, DSAF fusion and CRF.

        Args:
            feats: output of :meth:`forward_features` for ``inputs``.
            inputs: the canonical inputs (scene complexity, CRF guide and depth priors use them).
            roi_boxes / roi_labels: see :meth:`forward`.
        """
        _, h, w = _shape(inputs)  # validated once, by forward_features
        used = tuple(m for m in feats.present if m in feats.normalized)
        dense = self.forward_dense(feats, inputs)
        r = refine(
            self,
            dense,
            self._refine_inputs(feats, inputs, used),
            used,
            self._run_local,
            roi_boxes,
            roi_labels,
            feats.completed_mask,
        )
        if not self.training:
            return r.to_output(feats.modality_weights, feats.present, feats.completed)
        completion = {
            m: (feats.completed_feats[m], feats.encoded[m]) for m in feats.completed if m in feats.encoded
        }
        st = self.config.segmentation.fusion_stride
        branch_logits = {"global": dense.global_logits, "local": r.local_logits, "post": r.post_logits}
        local_cov, post_cov = r.local_coverage, r.post_coverage
        if st > 1:  # the losses work at input resolution
            branch_logits = {
                k: F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False)
                for k, v in branch_logits.items()
            }
            local_cov = F.interpolate(local_cov, size=(h, w), mode="nearest")
            post_cov = F.interpolate(post_cov, size=(h, w), mode="nearest")
        return DamcsegTrainOutput(
            seg_logits=r.seg_logits,
            branch_logits=branch_logits,
            local_coverage=local_cov,
            post_coverage=post_cov,
            cls_logits=dense.cls_logits,
            box_deltas=dense.box_deltas,
            anchors=dense.anchors,
            anchor_levels=dense.anchor_levels,
            completion=completion,
            modality_weights=feats.modality_weights,
            boxes=r.boxes,
            scores=r.scores,
            labels=r.labels,
            roi_boxes=r.roi_boxes,
            scene=r.scene,
            branch_weights=r.branch_weights.image_weights,
            target_branch_weights=r.branch_weights.target_weights,
            gate_cost=r.gate_cost,
            present=feats.present,
            completed=feats.completed,
            lmmf=feats,
        )


# ---------------------------------------------------------------------- refinement stage
LocalRunner = Callable[
    [torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor], tuple[torch.Tensor, torch.Tensor]
]


class RefineParts(Protocol):
    """What :func:`refine` needs of a model: the config and the small, weight-light modules.

    :class:`DAMCSeg` is one; the onnxruntime backend builds a light one from the ONNX metadata.
    """

    config: ModelConfig
    normalizer: ModalityNormalizer
    det_head: DetectionHead
    dsaf: DSAF
    post_path: DepthPriorPath
    crf: MeanFieldCRF | None


@dataclasses.dataclass
class RefineResult:
    """What :func:`refine` returns (work-resolution branch maps are kept for the losses)."""

    seg_logits: torch.Tensor
    boxes: list[torch.Tensor]
    scores: list[torch.Tensor]
    labels: list[torch.Tensor]
    roi_boxes: list[torch.Tensor]
    scene: SceneComplexity
    branch_weights: DSAFWeights
    local_logits: torch.Tensor
    local_coverage: torch.Tensor
    post_logits: torch.Tensor
    post_coverage: torch.Tensor
    gate_cost: torch.Tensor

    def to_output(
        self, modality_weights: torch.Tensor, present: tuple[str, ...], completed: tuple[str, ...]
    ) -> DamcsegOutput:
        """The eval-mode :class:`DamcsegOutput`."""
        return DamcsegOutput(
            seg_logits=self.seg_logits,
            boxes=self.boxes,
            scores=self.scores,
            labels=self.labels,
            scene=self.scene,
            branch_weights=self.branch_weights.image_weights,
            target_branch_weights=self.branch_weights.target_weights,
            modality_weights=modality_weights,
            present=present,
            completed=completed,
        )


def guide_image(
    parts: RefineParts,
    inputs: dict[str, torch.Tensor],
    used: tuple[str, ...],
    dropped: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[B, 3, H, W]`` in [0, 1] for scene complexity and the CRF: rgb, else thermal, else depth.

    ``dropped`` (``[B, 3]`` bool, ``MODALITIES`` order; per-sample modality dropout) makes the
    choice per sample: a sample that dropped the preferred sensor takes the next one it kept.
    """

    def image(m: str) -> torch.Tensor:
        if m == "rgb":
            return inputs["rgb"].clamp(0, 1)
        if m == "thermal":
            return inputs["thermal"].clamp(0, 1).expand(-1, 3, -1, -1)
        clean, _ = parts.normalizer.depth_metres(inputs["depth"])
        return (clean / parts.config.normalization.max_depth).expand(-1, 3, -1, -1)

    order = [m for m in ("rgb", "thermal", "depth") if m in used]
    guide = image(order[0])
    if dropped is None or not bool(dropped.any()):
        return guide
    chosen = ~dropped[:, MODALITIES.index(order[0])]
    for m in order[1:]:
        take = ~dropped[:, MODALITIES.index(m)] & ~chosen
        if bool(take.any()):
            guide = torch.where(take.view(-1, 1, 1, 1), image(m), guide)
        chosen = chosen | take
    return guide


def refine(
    parts: RefineParts,
    dense: DenseOutputs,
    inputs: dict[str, torch.Tensor],
    used: tuple[str, ...],
    run_local: LocalRunner,
    roi_boxes: list[torch.Tensor] | None = None,
    roi_labels: list[torch.Tensor] | None = None,
    dropped: torch.Tensor | None = None,
) -> RefineResult:
    """The data-dependent rest of the head, shared by the PyTorch and onnxruntime backends.

    Detection post-processing (top-k, NMS), scene complexity (Canny, box statistics), DSAF
    weights, the local path on a data-dependent number of ROIs (``run_local``), the depth-prior
    path, paste-back, fusion and the CRF (whose kernel radius depends on ``S``).

    Args:
        parts: config plus the light modules (see :class:`RefineParts`).
        dense: the fixed-shape outputs (:meth:`DAMCSeg.forward_dense` or an ONNX graph).
        inputs: the canonical inputs.
        used: modalities fed to the network (present and not dropped), ``MODALITIES`` order.
        run_local: ``(image_stack, seg_feature, boxes, gate_inputs) -> (roi_logits, gate_cost)``.
        roi_boxes / roi_labels: see :meth:`DAMCSeg.forward`.
        dropped: optional ``[B, 3]`` bool, a sensor dropped for a sample (see :func:`guide_image`).
    """
    b, h, w = check_inputs(inputs)
    device = dense.global_logits.device
    boxes, scores, labels = parts.det_head.postprocess(
        dense.cls_logits, dense.box_deltas, dense.anchors, (h, w)
    )

    if roi_boxes is not None:
        if roi_labels is None or len(roi_boxes) != b or len(roi_labels) != b:
            raise ValueError(f"roi_boxes and roi_labels must both be lists of {b} per-image tensors")
        use_boxes = [r.to(device, torch.float32).reshape(-1, 4) for r in roi_boxes]
        use_labels = [lab.to(device, torch.int64).reshape(-1) for lab in roi_labels]
        use_scores = [torch.ones(len(r), device=device) for r in use_boxes]
        k = parts.config.num_classes
        for i, (bx, lab) in enumerate(zip(use_boxes, use_labels)):
            if len(bx) != len(lab) or ((lab < 0) | (lab >= k)).any():
                raise ValueError(
                    f"image {i}: roi_labels must hold one train id in [0, {k}) per roi box; "
                    f"got {len(lab)} labels {lab.tolist()[:5]} for {len(bx)} boxes"
                )
    else:
        use_boxes, use_labels, use_scores = boxes, labels, scores
    cap = parts.config.segmentation.max_rois
    use_boxes = [x[:cap] for x in use_boxes]
    use_labels = [x[:cap] for x in use_labels]
    use_scores = [x[:cap] for x in use_scores]

    # The three paths, DSAF and the CRF run at the work resolution H/s x W/s (s =
    # fusion_stride); only the final logits are up-sampled to the input size.
    st = parts.config.segmentation.fusion_stride
    hw, ww = h // st, w // st
    work_boxes = [bx / st for bx in use_boxes] if st > 1 else use_boxes
    global_logits = dense.global_logits
    guide = guide_image(parts, inputs, used, dropped)
    depth = inputs["depth"] if "depth" in used else None
    depth_m, depth_valid = parts.normalizer.depth_metres(depth) if depth is not None else (None, None)
    scene: SceneComplexity = estimate_scene_complexity(
        guide, use_boxes, use_scores, depth_m, parts.config.refinement.scene
    )
    if st > 1:
        guide = F.avg_pool2d(guide, st)
        if depth_m is not None:  # nearest sampling keeps real depths (no blending across borders)
            depth_m, depth_valid = depth_m[..., ::st, ::st], depth_valid[..., ::st, ::st]
    probs = torch.softmax(global_logits, dim=1)
    sizes, ambiguity = parts.dsaf.target_features(probs, work_boxes)
    dsaf_w = parts.dsaf(initial_branch_weights(scene.category).to(probs), sizes, ambiguity)

    local_logits = torch.zeros_like(global_logits)
    local_cov = global_logits.new_zeros(b, 1, hw, ww)
    gate_cost = global_logits.new_zeros(())
    if sum(len(x) for x in use_boxes):
        gates = gate_features(sizes, ambiguity, scene.S, use_scores, scene.box_edge_density)
        roi_logits, gate_cost = run_local(dense.image_stack, dense.seg_feature, use_boxes, gates)
        local_logits, local_cov = paste_rois(roi_logits, work_boxes, b, hw, ww)
    post_logits, post_cov = parts.post_path(
        global_logits, work_boxes, use_scores, use_labels, depth_m, depth_valid
    )
    maps = parts.dsaf.weight_maps(dsaf_w.image_weights, work_boxes, dsaf_w.target_weights, hw, ww)
    fused = parts.dsaf.fuse(global_logits, local_logits, local_cov, post_logits, post_cov, maps)
    seg_logits = parts.crf(fused, guide, scene.S) if parts.crf is not None else fused
    if st > 1:
        seg_logits = F.interpolate(seg_logits, size=(h, w), mode="bilinear", align_corners=False)
    return RefineResult(
        seg_logits=seg_logits,
        boxes=boxes,
        scores=scores,
        labels=labels,
        roi_boxes=use_boxes,
        scene=scene,
        branch_weights=dsaf_w,
        local_logits=local_logits,
        local_coverage=local_cov,
        post_logits=post_logits,
        post_coverage=post_cov,
        gate_cost=gate_cost,
    )
