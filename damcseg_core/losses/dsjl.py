"""The Detection-Segmentation Joint Loss (DAMCSeg paper, eq. 4) plus the MCN completion loss.

``total = L_det + lambda1 * L_seg + lambda2 * L_align + completion_weight * L_comp
+ distill_weight * L_distill + logit_distill_weight * L_logit + aux_weight * CE(global path)
+ gate_cost_weight * gate_cost + omega_cost_weight * omega_cost + depth_image_weight * L_depth``

* ``L_det``, ``L_seg``, ``L_align``, ``L_comp``: see :mod:`~damcseg_core.losses.detection`,
  :mod:`~damcseg_core.losses.segmentation`, :mod:`~damcseg_core.losses.alignment`,
  :mod:`~damcseg_core.losses.completion`. ``lambda1 = 1.0`` and ``lambda2 = 0.5`` (paper).
* ``L_seg`` is computed on the final (DSAF-fused, CRF-refined) ``seg_logits``.
* ``L_distill`` (our addition, issue #16): the fused features of a sample with a completed
  modality are pulled towards the no-gradient fusion of its real features
  (:func:`~damcseg_core.losses.completion.distillation_loss`); per sample, only samples that
  dropped a given modality count. ``L_comp`` is per sample the same way.
* ``L_logit`` (our addition, weight 0 by default): the same samples' global-path logits pulled
  to the global path's logits on the real-sensor fusion
  (:func:`~damcseg_core.losses.completion.logit_distillation_loss`); the model computes the
  teacher logits only when the trainer asks (``forward(..., teacher_logits=True)``), which it
  does when this weight is > 0.
* Deep supervision (our addition, ``aux_weight``): plain CE on the global path's logits so
  the ASPP path learns even where DSAF gives it a small weight.
* ``gate_cost`` (our addition, weight 0 by default): the expected compute of the local
  branch gates, for users who want to push the gates towards skipping branches.
* ``omega_cost`` (our addition, weight 0 by default): the mean modal-attention weight
  ``omega`` (eq. 1) over samples and modalities. Eq. 2's weights are not normalised, so nothing
  stops every gate from saturating at 1 (the edge checkpoints up to v6.1 give 0.99 to depth and
  thermal by day and by night) and then ``omega`` says nothing about reliability. Charging each
  unit of weight makes a gate open only as far as the task loss pays for it, so the weights can
  differ by condition. Train it with the network downstream of the fusion frozen: if the layer
  after the fusion could rescale, the cost would just shrink every weight by the same factor.
* The paper's warm-up stage trains the task heads before "enabling DSJL"; the trainer sets
  :attr:`DSJLoss.align_enabled` to ``False`` there, which zeroes the alignment term.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from damcseg_core import MODALITIES
from damcseg_core.data.classes import IGNORE_INDEX
from damcseg_core.losses.alignment import AlignmentLossConfig, alignment_loss, matched_alignment_loss
from damcseg_core.losses.completion import (
    CompletionLossConfig,
    completion_loss,
    depth_completion_loss,
    distillation_loss,
    logit_distillation_loss,
)
from damcseg_core.losses.detection import (
    DetectionLossConfig,
    build_targets,
    detection_loss,
    matched_predictions,
)
from damcseg_core.losses.segmentation import SegmentationLossConfig, segmentation_loss

__all__ = ["DSJLoss", "LossConfig"]


@dataclasses.dataclass
class LossConfig:
    """Weights of the DSJL and of every term inside it."""

    lambda1: float = 1.0  # paper eq. 4: weight of L_seg
    lambda2: float = 0.5  # paper eq. 4: weight of L_align
    completion_weight: float = 1.0  # weight of the MCN completion loss (not in eq. 4)
    distill_weight: float = 0.5  # weight of the fused-feature distillation from real sensors (0 disables)
    logit_distill_weight: float = 0.0  # weight of the global-path logit distillation (0 disables)
    logit_distill_temperature: float = 1.0  # its softening temperature T (> 0)
    aux_weight: float = 0.4  # deep supervision CE on the global path logits (0 disables)
    gate_cost_weight: float = 0.0  # weight of the local-branch gate compute cost
    omega_cost_weight: float = 0.0  # weight of the mean modal-attention weight (module docstring)
    # Weight of the depth image completer's own loss (log-depth L1 + validity BCE,
    # damcseg_core.models.depth_completion) on every sample with a real depth image; only
    # models with completion.depth_image have the completer.
    depth_image_weight: float = 1.0
    detection: DetectionLossConfig = dataclasses.field(default_factory=DetectionLossConfig)
    segmentation: SegmentationLossConfig = dataclasses.field(default_factory=SegmentationLossConfig)
    alignment: AlignmentLossConfig = dataclasses.field(default_factory=AlignmentLossConfig)
    completion: CompletionLossConfig = dataclasses.field(default_factory=CompletionLossConfig)

    def __post_init__(self) -> None:
        if self.depth_image_weight < 0:
            raise ValueError(
                f"loss.depth_image_weight must be >= 0 (0 disables), got {self.depth_image_weight}"
            )
        if self.logit_distill_weight < 0:
            raise ValueError(
                f"loss.logit_distill_weight must be >= 0 (0 disables), got {self.logit_distill_weight}"
            )
        if not self.logit_distill_temperature > 0:
            raise ValueError(
                f"loss.logit_distill_temperature must be > 0 (1 = plain softmax), got {self.logit_distill_temperature}"
            )


class DSJLoss:
    """Callable computing every named loss of a training step.

    Args:
        cfg: loss weights.

    Example:
        >>> losses = DSJLoss(LossConfig())(model(inputs, drop=drop), batch)
        >>> losses["total"].backward()
    """

    def __init__(self, cfg: LossConfig | None = None) -> None:
        self.cfg = cfg or LossConfig()
        self.align_enabled = True  # the trainer turns this off during the warm-up stage

    def __call__(self, out: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Compute the losses.

        Args:
            out: a ``DamcsegTrainOutput``.
            batch: a collated batch (``semantic [B,H,W]``, ``instance [B,H,W]``, per-image lists
                ``boxes``, ``labels``, ``occlusion``), on the model's device.

        Returns:
            Named scalar losses: ``det_cls``, ``det_box``, ``det``, ``det_num_pos`` (positive
            anchors per image, a detached statistic), ``seg_ce``, ``seg_boundary``,
            ``seg_dice``, ``seg_tiny``, ``seg_occlusion``, ``seg``, ``align``, ``align_iou``
            (a detached statistic), ``completion``, ``distill``, ``logit_distill``, ``aux``, ``gate_cost``,
            ``omega_cost``, ``depth_image`` and ``total``.
        """
        cfg = self.cfg
        # Losses are computed in float32 even when the model ran under bfloat16 autocast.
        out = (
            dataclasses.replace(
                out,
                seg_logits=out.seg_logits.float(),
                cls_logits=out.cls_logits.float(),
                box_deltas=out.box_deltas.float(),
                branch_logits={k: v.float() for k, v in out.branch_logits.items()},
            )
            if dataclasses.is_dataclass(out)
            else out
        )
        for key in ("semantic", "boxes", "labels"):
            if key not in batch:
                raise KeyError(
                    f"batch has no '{key}'; DSJLoss needs a collated sample batch (docs/interfaces.md)"
                )
        semantic = batch["semantic"].to(out.seg_logits.device)
        losses: dict[str, torch.Tensor] = {}
        targets = build_targets(
            out.anchors.float(),
            batch["boxes"],
            batch["labels"],
            cfg.detection,
            getattr(out, "anchor_levels", None),
            batch.get("areas"),
            batch.get("occlusion"),
        )
        losses.update(
            detection_loss(
                out.cls_logits, out.box_deltas, out.anchors, None, None, cfg.detection, targets=targets
            )
        )
        losses.update(
            segmentation_loss(
                out.seg_logits, semantic, batch.get("instance"), batch.get("occlusion"), cfg.segmentation
            )
        )
        if not self.align_enabled:
            zero = out.seg_logits.sum().mul(0.0).abs()
            align = {"align": zero, "align_iou": torch.ones((), device=out.seg_logits.device)}
        elif cfg.alignment.boxes == "matched":
            matched = matched_predictions(out.box_deltas, out.anchors, targets)
            align = matched_alignment_loss(out.seg_logits, matched, cfg.alignment)
        else:
            if cfg.alignment.boxes == "gt":
                align_boxes, align_labels = batch["boxes"], batch["labels"]
            else:
                align_boxes, align_labels = out.boxes, out.labels
            align = alignment_loss(out.seg_logits, align_boxes, align_labels, cfg.alignment)
        losses.update(align)
        lmmf = getattr(out, "lmmf", None)
        cmask = getattr(lmmf, "completed_mask", None)
        masks = None
        if cmask is not None:
            masks = {m: cmask[:, MODALITIES.index(m)] for m in out.completion}
        losses.update(completion_loss(out.completion, cfg.completion, reference=out.seg_logits, masks=masks))
        if lmmf is not None and cfg.distill_weight > 0:
            losses.update(
                distillation_loss(
                    lmmf.fused,
                    lmmf.teacher_fused,
                    lmmf.distill_mask,
                    cfg.completion,
                    reference=out.seg_logits,
                )
            )
        else:
            losses["distill"] = out.seg_logits.sum().mul(0.0).abs()
        teacher_logits = getattr(out, "teacher_global_logits", None)
        if lmmf is not None and cfg.logit_distill_weight > 0 and "global" in out.branch_logits:
            losses.update(
                logit_distillation_loss(
                    out.branch_logits["global"],
                    teacher_logits,
                    lmmf.distill_mask,
                    cfg.logit_distill_temperature,
                    reference=out.seg_logits,
                )
            )
        else:
            losses["logit_distill"] = out.seg_logits.sum().mul(0.0).abs()
        if cfg.aux_weight > 0 and "global" in out.branch_logits:
            valid = semantic != IGNORE_INDEX
            aux = F.cross_entropy(out.branch_logits["global"], semantic.long(), ignore_index=IGNORE_INDEX)
            losses["aux"] = aux if valid.any() else out.seg_logits.sum().mul(0.0).abs()
        else:
            losses["aux"] = out.seg_logits.sum().mul(0.0).abs()
        losses["gate_cost"] = (
            out.gate_cost.reshape(())
            if torch.is_tensor(out.gate_cost)
            else out.seg_logits.sum().mul(0.0).abs()
        )
        omega = getattr(out, "omega", None)
        losses["omega_cost"] = (
            omega.float().mean() if torch.is_tensor(omega) else out.seg_logits.sum().mul(0.0).abs()
        )
        prediction = getattr(lmmf, "depth_prediction", None)
        if prediction is not None and cfg.depth_image_weight > 0:
            l1, bce = depth_completion_loss(*prediction)
            losses["depth_image"] = l1 + bce
        else:
            losses["depth_image"] = out.seg_logits.sum().mul(0.0).abs()
        losses["total"] = (
            losses["det"]
            + cfg.lambda1 * losses["seg"]
            + (cfg.lambda2 * losses["align"])
            + cfg.completion_weight * losses["completion"]
            + cfg.distill_weight * losses["distill"]
            + cfg.logit_distill_weight * losses["logit_distill"]
            + cfg.aux_weight * losses["aux"]
            + cfg.gate_cost_weight * losses["gate_cost"]
            + cfg.omega_cost_weight * losses["omega_cost"]
            + cfg.depth_image_weight * losses["depth_image"]
        )
        return losses
