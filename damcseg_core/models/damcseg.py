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
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from damcseg_core import MODALITIES
from damcseg_core.models.backbone import SharedBackbone
from damcseg_core.models.branch_gating import GATE_IN_FEATURES
from damcseg_core.models.completion import ModalCompletionNetwork
from damcseg_core.models.config import ModelConfig
from damcseg_core.models.depth_completion import DepthImageCompleter, depth_from_raw
from damcseg_core.models.detection_head import DetectionHead
from damcseg_core.models.encoders import (
    DilatedModalEncoder,
    ModalityNormalizer,
    RgbEncoder,
    modality_in_channels,
)
from damcseg_core.models.modal_attention import ConcatFusion, ModalAdaptiveAttention
from damcseg_core.models.outputs import (
    DamcsegOutput,
    DamcsegTrainOutput,
    DenseOutputs,
    RefineResult,
    check_inputs,
    input_shape,
)
from damcseg_core.models.refinement import RefinementHead, upgrade_state_dict
from damcseg_core.models.segmentation_head import GlobalPath, LocalPath

__all__ = [
    "DAMCSeg",
    "DenseOutputs",
    "LMMFFeatures",
    "RefineResult",
    "check_inputs",
]


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
        omega: ``[B, 3]`` mean reliability per modality.
        present / completed: modality name tuples in ``MODALITIES`` order; ``completed`` holds
            every modality the MCN predicted for at least one sample.
        completed_mask: ``[B, 3]`` bool, ``True`` where a sample's features of that modality are
            an MCN prediction (missing, or dropped for training).
        teacher_fused: ``[B, C, H/8, W/8]`` fusion of the *real* encoder features of every given
            modality (no gradient), the distillation target for samples that dropped a given
            modality; ``None`` when no sample dropped one.
        distill_mask: ``[B]`` bool, the samples ``teacher_fused`` is a target for (``None`` with it).
        completed_depth: ``[B, 1, H, W]`` depth image in metres the refinement reads when the
            depth image completer (``completion.depth_image``) filled in depth for some sample:
            its prediction there, the real depth elsewhere; ``None`` otherwise.
        depth_prediction: training only: the completer's raw ``(log_depth, valid_logit)`` on
            every sample, with the real depth image as ``target``, for its loss
            (:func:`~damcseg_core.losses.completion.depth_completion_loss`); else ``None``.
    """

    normalized: dict[str, torch.Tensor]
    encoded: dict[str, torch.Tensor]
    completed_feats: dict[str, torch.Tensor]
    fused: torch.Tensor
    omega: torch.Tensor
    present: tuple[str, ...]
    completed: tuple[str, ...]
    completed_mask: torch.Tensor | None = None
    teacher_fused: torch.Tensor | None = None
    distill_mask: torch.Tensor | None = None
    completed_depth: torch.Tensor | None = None
    depth_prediction: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None


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
                width,
                cfg.completion.hidden,
                cfg.completion.layers,
                cfg.completion.output,
                context=cfg.completion.context,
                row_embedding=cfg.completion.row_embedding,
            )
            self.attention = ModalAdaptiveAttention(
                width,
                cfg.fusion.heads,
                cfg.fusion.completion_flag,
                cfg.fusion.completion_offset,
                context=cfg.fusion.context,
            )
        else:  # ablation baseline: no MCN, no attention (missing modalities are zeros)
            self.completion = None
            self.attention = ConcatFusion(width)
        self.depth_completer = (
            DepthImageCompleter(width, cfg.normalization.max_depth, cfg.completion.depth_image)
            if cfg.completion.depth_image
            else None
        )
        self.backbone = SharedBackbone(width, cfg.backbone, pretrained=cfg.pretrained)
        self.det_head = DetectionHead(self.backbone.channels, cfg.detection, cfg.num_det_classes)
        self.global_path = GlobalPath(self.backbone.channels, cfg.segmentation, cfg.num_classes)
        self.local_path = LocalPath(
            sum(in_ch.values()), width, cfg.segmentation, cfg.num_classes,
            GATE_IN_FEATURES, cfg.refinement.gate, pretrained=cfg.pretrained,
        )  # fmt: skip
        self.refinement = RefinementHead(cfg)
        # Checkpoints from before the refinement head keep loading (dsaf.* -> refinement.dsaf.*).
        self.register_load_state_dict_pre_hook(_upgrade_hook)

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

    def _depth_image(
        self,
        encoded: dict[str, torch.Tensor],
        normalized: dict[str, torch.Tensor],
        keep: torch.Tensor | None = None,
        raw: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The depth image completer on the rgb / thermal features and images (zeros where absent).

        ``keep`` (``[B, 3]`` bool on the features' device) zeroes what a sample dropped. Returns
        the depth image in metres, or with ``raw`` the ``(log_depth, valid_logit)`` maps.
        """
        ref = next(iter(encoded.values()))
        b, _, h, w = next(iter(normalized.values())).shape
        parts, images = [], []
        for m, c in (("rgb", 3), ("thermal", 1)):
            f = encoded.get(m, ref.new_zeros(ref.shape))
            x = normalized.get(m, ref.new_zeros(b, c, h, w))
            if keep is not None and m in encoded:
                k = keep[:, MODALITIES.index(m)].to(ref.dtype).view(-1, 1, 1, 1)
                f, x = f * k, x * k
            parts.append(f)
            images.append(x)
        args = (parts[0], parts[1], torch.cat(images, dim=1))
        return self.depth_completer.forward_raw(*args) if raw else self.depth_completer(*args)

    def _features_static(self, inputs: dict[str, torch.Tensor], present: tuple[str, ...]) -> LMMFFeatures:
        """Every sample uses every given modality; the MCN completes the absent ones (depth, with
        ``completion.depth_image``, as an image the real depth encoder reads)."""
        normalized = {m: self.normalizer(m, inputs[m]) for m in present}
        encoded = {m: self.encoders[m](normalized[m]) for m in present}
        ref = encoded[present[0]]
        flags = ref.new_tensor([float(m not in present) for m in MODALITIES]).expand(ref.shape[0], -1)
        completed_depth = None
        if self.depth_completer is not None and "depth" not in present:
            completed_depth = self._depth_image(encoded, normalized)
            normalized["depth"] = self.normalizer("depth", completed_depth)
            encoded["depth"] = self.encoders["depth"](normalized["depth"])
            if not self.config.completion.depth_image_flag:
                flags = flags * flags.new_tensor([float(m != "depth") for m in MODALITIES])
        if self.completion is not None:
            completed_feats, completed = self.completion(dict(encoded))
        else:
            completed_feats, completed = dict(encoded), ()
        if completed_depth is not None:
            completed = tuple(m for m in MODALITIES if m in completed or m == "depth")
        fused, weights = self.attention(completed_feats, flags if bool((flags > 0).any()) else None)
        return LMMFFeatures(
            normalized=normalized,
            encoded=encoded,
            completed_feats=completed_feats,
            fused=fused,
            omega=weights,
            present=present,
            completed=completed,
            completed_mask=(flags > 0) if completed else torch.zeros_like(flags, dtype=torch.bool),
            completed_depth=completed_depth,
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
        image_completes = self.depth_completer is not None and not kept_by_all["depth"]
        for m in present:
            # One pass on the whole batch; dropped samples get no gradient below. With the depth
            # image completer the real depth is only a target here: the pass that trains runs on
            # the real / completed mix below.
            if kept_by_any[m] and not (m == "depth" and image_completes):
                encoded[m] = self.encoders[m](normalized[m])
            else:
                with torch.no_grad():
                    encoded[m] = self.encoders[m](normalized[m])
        ref = encoded[present[0]]
        dev_keep = keep.to(ref.device)
        targets = {m: (encoded[m].detach() if m in dropped else encoded[m]) for m in present}
        used = {m: encoded[m] for m in present if kept_by_any[m]}
        mcn_keep, completed_depth, depth_prediction, image_depth = dev_keep, None, None, None
        d = MODALITIES.index("depth")
        if image_completes:
            # Depth dropped (or absent) for some samples: they get the completer's depth image
            # through the real depth encoder; the MCN then completes only the other modalities.
            image_depth = ~dev_keep[:, d]
            log_depth, valid_logit = self._depth_image(encoded, normalized, dev_keep, raw=True)
            predicted = depth_from_raw(log_depth, valid_logit)
            # The encoder reads the prediction as the normaliser reads a sensor's image; the
            # downstream gradient reaches the completer through the depth values (the validity
            # is a threshold, trained by the completion loss).
            norm_pred = self.normalizer("depth", predicted)
            completed_depth, mixed = predicted, norm_pred
            if "depth" in present:
                sel = image_depth.view(-1, 1, 1, 1)
                completed_depth = torch.where(sel, predicted, inputs["depth"].to(predicted.dtype))
                mixed = torch.where(sel, norm_pred, normalized["depth"])
                depth_prediction = (log_depth, valid_logit, inputs["depth"])
            normalized["depth"] = mixed
            used["depth"] = self.encoders["depth"](mixed)
            mcn_keep = dev_keep.clone()
            mcn_keep[:, d] = True
        if self.completion is not None:
            completed_feats = self.completion.complete_masked(used, mcn_keep)
            completed_mask = ~mcn_keep
            if image_depth is not None and self.config.completion.depth_image_flag:
                completed_mask = completed_mask.clone()
                completed_mask[:, d] = image_depth
        else:  # ConcatFusion baseline: a dropped modality is zeros
            zero = ref.new_zeros(())
            completed_feats = {
                m: f if kept_by_all[m] else torch.where(dev_keep[:, i, None, None, None], f, zero)
                for i, m in enumerate(MODALITIES)
                if (f := used.get(m)) is not None
            }
            completed_mask = torch.zeros_like(dev_keep)
        completed = tuple(
            m
            for i, m in enumerate(MODALITIES)
            if bool(completed_mask[:, i].any()) or (m == "depth" and image_depth is not None)
        )
        flags = completed_mask.to(ref.dtype) if bool(completed_mask.any()) else None
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
            if m == "depth" and image_depth is not None:
                continue  # the completed image replaced it already
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
            omega=weights,
            present=present,
            completed=completed,
            completed_mask=completed_mask,
            teacher_fused=teacher,
            distill_mask=distill,
            completed_depth=completed_depth,
            depth_prediction=depth_prediction,
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
        teacher_logits: bool = False,
    ) -> DamcsegOutput | DamcsegTrainOutput:
        """Detect and segment a batch.

        Args:
            inputs: modality -> ``[B, C, H, W]`` canonical tensors (any non-empty subset).
            drop: modality names the whole batch drops, or a ``[B, 3]`` bool keep-mask (each
                sample its own subset), for completion training (see :meth:`forward_features`).
            roi_boxes: optional per image ``[N, 4]`` xyxy boxes (e.g. ground truth in training)
                that the local and post-processing paths use instead of the detections.
            roi_labels: per image ``[N]`` train ids of ``roi_boxes`` (required with them).
            teacher_logits: train mode only: also run the backbone and global path on the
                no-gradient teacher fusion (``LMMFFeatures.teacher_fused``), for the logit
                distillation loss (``DamcsegTrainOutput.teacher_global_logits``).

        Returns:
            :class:`DamcsegOutput` in eval mode, :class:`DamcsegTrainOutput` in train mode.
        """
        feats = self.forward_features(inputs, drop)
        return self.forward_head(feats, inputs, roi_boxes, roi_labels, teacher_logits)

    def forward_dense(self, feats: LMMFFeatures, inputs: dict[str, torch.Tensor]) -> DenseOutputs:
        """The fixed-shape part of the head: backbone, raw detection outputs, global path.

        This (with :meth:`forward_features`) is what ``damcseg_core.export`` puts into the
        ONNX graph; everything data-dependent happens in :attr:`refinement`.
        """
        _, h, w = input_shape(inputs)  # validated once, by forward_features
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
            omega=feats.omega,
            completed_depth=feats.completed_depth,
        )

    @staticmethod
    def _refine_inputs(
        feats: LMMFFeatures, inputs: dict[str, torch.Tensor], used: tuple[str, ...]
    ) -> dict[str, torch.Tensor]:
        """``inputs`` as the refinement stage may see them: a sensor dropped for a sample is zeros.

        With per-sample modality dropout a modality is in ``used`` when any sample keeps it; the
        samples that drop it must not hand its real image to the CRF guide, scene complexity or
        the depth prior (zero depth is "no return"; ``RefinementHead.guide_image`` takes the mask and
        falls back per sample).
        """
        mask = feats.completed_mask
        if mask is None or not bool(mask.any()):
            return inputs
        out = dict(inputs)
        for j, m in enumerate(MODALITIES):
            if m in used and m in inputs and bool(mask[:, j].any()):
                keep = (~mask[:, j]).to(inputs[m].dtype).view(-1, 1, 1, 1)
                out[m] = inputs[m] * keep
        return out

    def _run_local(
        self, image: torch.Tensor, p3: torch.Tensor, boxes: list[torch.Tensor], gates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The refinement head's ``LocalRunner``: ``(roi_logits [N,K,h,w], gate_cost)``."""
        out = self.local_path(image, p3, boxes, gates)
        return out.logits, out.gate_cost

    def forward_head(
        self,
        feats: LMMFFeatures,
        inputs: dict[str, torch.Tensor],
        roi_boxes: list[torch.Tensor] | None = None,
        roi_labels: list[torch.Tensor] | None = None,
        teacher_logits: bool = False,
    ) -> DamcsegOutput | DamcsegTrainOutput:
        """Backbone, detection, the three segmentation paths, DSAF fusion and CRF.

        Args:
            feats: output of :meth:`forward_features` for ``inputs``.
            inputs: the canonical inputs (scene complexity, CRF guide and depth priors use them).
            roi_boxes / roi_labels / teacher_logits: see :meth:`forward`.
        """
        _, h, w = input_shape(inputs)  # validated once, by forward_features
        used = tuple(m for m in feats.present if m in feats.normalized)
        dense = self.forward_dense(feats, inputs)
        detections = self.det_head.postprocess(dense.cls_logits, dense.box_deltas, dense.anchors, (h, w))
        r = self.refinement(
            dense,
            detections,
            self._refine_inputs(feats, inputs, used),
            used,
            self._run_local,
            roi_boxes,
            roi_labels,
            feats.completed_mask,
        )
        out = r.to_output(feats.omega, feats.present, feats.completed)
        if not self.training:
            return out
        completion = {  # the MCN's loss; an image-completed depth has its own (depth_prediction)
            m: (feats.completed_feats[m], feats.encoded[m])
            for m in feats.completed
            if m in feats.encoded and not (m == "depth" and feats.completed_depth is not None)
        }
        st = self.config.segmentation.fusion_stride
        teacher = None
        if teacher_logits and feats.teacher_fused is not None:
            teacher = self._teacher_global_logits(feats.teacher_fused, (h // st, w // st))
        branch_logits = {"global": dense.global_logits, "local": r.local_logits, "post": r.post_logits}
        local_cov, post_cov = r.local_coverage, r.post_coverage
        if st > 1:  # the losses work at input resolution
            branch_logits = {
                k: F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False)
                for k, v in branch_logits.items()
            }
            local_cov = F.interpolate(local_cov, size=(h, w), mode="nearest")
            post_cov = F.interpolate(post_cov, size=(h, w), mode="nearest")
            if teacher is not None:
                teacher = F.interpolate(teacher, size=(h, w), mode="bilinear", align_corners=False)
        return DamcsegTrainOutput.extend(
            out,
            branch_logits=branch_logits,
            local_coverage=local_cov,
            post_coverage=post_cov,
            cls_logits=dense.cls_logits,
            box_deltas=dense.box_deltas,
            anchors=dense.anchors,
            anchor_levels=dense.anchor_levels,
            completion=completion,
            roi_boxes=r.roi_boxes,
            gate_cost=r.gate_cost,
            lmmf=feats,
            teacher_global_logits=teacher,
        )

    def _teacher_global_logits(self, teacher_fused: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Global-path logits of the real-sensor fusion, without gradient (logit distillation).

        The pass runs the backbone in whatever mode it is in: in a ``frozen_eval`` stage (the MCN
        stages) that is eval mode; in a train-mode stage BatchNorm would also update its running
        statistics from the teacher batch, which then counts twice.
        """
        with torch.no_grad():
            _, seg_pyr = self.backbone(teacher_fused)
            logits, _ = self.global_path(seg_pyr, size)
        return logits


def _upgrade_hook(module: nn.Module, state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    upgrade_state_dict(state_dict, prefix)
