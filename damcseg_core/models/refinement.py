"""The refinement head: the data-dependent second half of the DAMCSeg head (Sec. III.D-E).

Detections in, fused and CRF-refined segmentation out::

    detections (boxes, scores, labels)  or the given roi_boxes / roi_labels
      -> scene complexity S, D, O, E (eq. 5) from the guide image, the boxes and the depth
      -> DSAF branch weights alpha, beta, gamma per image and per target (eq. 6-9)
      -> local path on the ROIs (a runner: the eager LocalPath, or local.onnx)
      -> depth-prior path -> paste-back -> weighted fusion -> CRF (3 iterations, radius from S)

Both back-ends run this one module: :class:`~damcseg_core.models.damcseg.DAMCSeg` owns one
(``model.refinement``) and calls it after ``forward_dense``; the onnxruntime backend
(``damcseg_core.export.runtime``) builds one from the export's metadata and calls it after the
dense graph. Its parameters (DSAF's ``a``/``b``, the depth prior's strength, the CRF's pairwise
weights) are few; the heavy local path stays outside, behind a :data:`LocalRunner`, because it
is part of the exported graphs.

Inputs are not re-validated here: the callers have run
:func:`~damcseg_core.models.outputs.check_inputs` once (``forward_features``, or the
onnxruntime ``__call__``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from damcseg_core import MODALITIES
from damcseg_core.models.branch_gating import gate_features
from damcseg_core.models.config import ModelConfig
from damcseg_core.models.crf import MeanFieldCRF
from damcseg_core.models.dsaf import DSAF
from damcseg_core.models.encoders import depth_metres
from damcseg_core.models.outputs import DenseOutputs, RefineResult, input_shape
from damcseg_core.models.scene_complexity import (
    SceneComplexity,
    estimate_scene_complexity,
    initial_alpha_beta_gamma,
)
from damcseg_core.models.segmentation_head import DepthPriorPath, paste_rois

__all__ = ["REFINEMENT_MODULES", "LocalRunner", "RefinementHead", "upgrade_state_dict"]

# ``(image_stack [B,6,H,W], seg_feature [B,C,H/8,W/8], boxes per image, gate_inputs [N,F])``
# -> ``(roi_logits [N,K,r,r], gate_cost)``: the local path, eager or exported.
LocalRunner = Callable[
    [torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor], tuple[torch.Tensor, torch.Tensor]
]
Detections = tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]

# The refinement head's submodules; before the head existed they sat on the model itself.
REFINEMENT_MODULES = ("dsaf", "post_path", "crf")


def upgrade_state_dict(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename a DAMCSeg state dict from before :class:`RefinementHead` in place, and return it.

    Checkpoints written before the head held its modules as ``dsaf.*``, ``post_path.*`` and
    ``crf.*``; they are ``refinement.dsaf.*`` etc. now. Keys already in the new layout are left.
    """
    for key in [k for k in state if k.startswith(prefix)]:
        rest = key[len(prefix) :]
        if rest.split(".", 1)[0] in REFINEMENT_MODULES:
            state[f"{prefix}refinement.{rest}"] = state.pop(key)
    return state


class RefinementHead(nn.Module):
    """Scene complexity, DSAF, the local and depth-prior paths, fusion and the CRF.

    Args:
        cfg: the model configuration (its ``refinement``, ``segmentation`` and ``normalization``
            sections, ``num_classes``).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.dsaf = DSAF(cfg.refinement.dsaf)
        self.post_path = DepthPriorPath(cfg.segmentation.post_strength, cfg.segmentation.depth_tolerance)
        self.crf = MeanFieldCRF.from_config(cfg.refinement.crf) if cfg.refinement.use_crf else None

    def guide_image(
        self,
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
            max_depth = self.config.normalization.max_depth
            clean, _ = depth_metres(inputs["depth"], max_depth)
            return (clean / max_depth).expand(-1, 3, -1, -1)

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

    def _roi_inputs(
        self,
        detections: Detections,
        roi_boxes: list[torch.Tensor] | None,
        roi_labels: list[torch.Tensor] | None,
        b: int,
        device: torch.device,
    ) -> Detections:
        """The boxes, scores and labels the paths use: the detections or the given ROIs, capped."""
        if roi_boxes is not None:
            if roi_labels is None or len(roi_boxes) != b or len(roi_labels) != b:
                raise ValueError(f"roi_boxes and roi_labels must both be lists of {b} per-image tensors")
            boxes = [r.to(device, torch.float32).reshape(-1, 4) for r in roi_boxes]
            labels = [lab.to(device, torch.int64).reshape(-1) for lab in roi_labels]
            scores = [torch.ones(len(r), device=device) for r in boxes]
            k = self.config.num_classes
            for i, (bx, lab) in enumerate(zip(boxes, labels)):
                if len(bx) != len(lab) or ((lab < 0) | (lab >= k)).any():
                    raise ValueError(
                        f"image {i}: roi_labels must hold one train id in [0, {k}) per roi box; "
                        f"got {len(lab)} labels {lab.tolist()[:5]} for {len(bx)} boxes"
                    )
        else:
            boxes, scores, labels = detections
        cap = self.config.segmentation.max_rois
        return [x[:cap] for x in boxes], [x[:cap] for x in scores], [x[:cap] for x in labels]

    def forward(
        self,
        dense: DenseOutputs,
        detections: Detections,
        inputs: dict[str, torch.Tensor],
        used: tuple[str, ...],
        run_local: LocalRunner,
        roi_boxes: list[torch.Tensor] | None = None,
        roi_labels: list[torch.Tensor] | None = None,
        dropped: torch.Tensor | None = None,
    ) -> RefineResult:
        """Refine one batch.

        Args:
            dense: the fixed-shape outputs (``DAMCSeg.forward_dense`` or an ONNX graph).
            detections: per image ``boxes [N, 4]``, ``scores [N]``, ``labels [N]`` after NMS
                (``DetectionHead.postprocess`` of ``dense``).
            inputs: the canonical inputs, already checked; a sensor a sample dropped is zeros.
            used: modalities fed to the network (present and not dropped), ``MODALITIES`` order.
            run_local: the local path (:data:`LocalRunner`).
            roi_boxes / roi_labels: per image boxes and train ids the local and depth-prior paths
                use instead of the detections (e.g. ground truth in training).
            dropped: optional ``[B, 3]`` bool, a sensor dropped for a sample (see :meth:`guide_image`).
        """
        b, h, w = input_shape(inputs)
        if dense.completed_depth is not None:
            # The depth image completer filled in depth (the real depth where a sample had it):
            # scene complexity and the depth-prior path read it like a sensor's image.
            inputs = dict(inputs, depth=dense.completed_depth)
            used = tuple(m for m in MODALITIES if m in used or m == "depth")
            if dropped is not None:
                dropped = dropped.clone()
                dropped[:, MODALITIES.index("depth")] = False
        global_logits = dense.global_logits
        use_boxes, use_scores, use_labels = self._roi_inputs(
            detections, roi_boxes, roi_labels, b, global_logits.device
        )

        # The three paths, DSAF and the CRF run at the work resolution H/s x W/s (s =
        # fusion_stride); only the final logits are up-sampled to the input size.
        st = self.config.segmentation.fusion_stride
        hw, ww = h // st, w // st
        work_boxes = [bx / st for bx in use_boxes] if st > 1 else use_boxes
        guide = self.guide_image(inputs, used, dropped)
        depth = inputs["depth"] if "depth" in used else None
        max_depth = self.config.normalization.max_depth
        depth_m, depth_valid = depth_metres(depth, max_depth) if depth is not None else (None, None)
        scene: SceneComplexity = estimate_scene_complexity(
            guide, use_boxes, use_scores, depth_m, self.config.refinement.scene
        )
        if st > 1:
            guide = F.avg_pool2d(guide, st)
            if depth_m is not None:  # nearest sampling keeps real depths (no blending across borders)
                depth_m, depth_valid = depth_m[..., ::st, ::st], depth_valid[..., ::st, ::st]
        probs = torch.softmax(global_logits, dim=1)
        sizes, ambiguity = self.dsaf.target_features(probs, work_boxes)
        dsaf_w = self.dsaf(initial_alpha_beta_gamma(scene.category).to(probs), sizes, ambiguity)

        local_logits = torch.zeros_like(global_logits)
        local_cov = global_logits.new_zeros(b, 1, hw, ww)
        gate_cost = global_logits.new_zeros(())
        if self.config.refinement.use_local and sum(len(x) for x in use_boxes):
            gates = gate_features(sizes, ambiguity, scene.S, use_scores, scene.box_edge_density)
            roi_logits, gate_cost = run_local(dense.image_stack, dense.seg_feature, use_boxes, gates)
            local_logits, local_cov = paste_rois(roi_logits, work_boxes, b, hw, ww)
        post_logits, post_cov = self.post_path(
            global_logits, work_boxes, use_scores, use_labels, depth_m, depth_valid
        )
        maps = self.dsaf.weight_maps(
            dsaf_w.alpha_beta_gamma, work_boxes, dsaf_w.target_alpha_beta_gamma, hw, ww
        )
        fused = self.dsaf.fuse(
            global_logits, local_logits, local_cov, post_logits, post_cov, maps, global_probs=probs
        )
        seg_logits = self.crf(fused, guide, scene.S) if self.crf is not None else fused
        if st > 1:
            seg_logits = F.interpolate(seg_logits, size=(h, w), mode="bilinear", align_corners=False)
        boxes, scores, labels = detections
        return RefineResult(
            seg_logits=seg_logits,
            boxes=boxes,
            scores=scores,
            labels=labels,
            roi_boxes=use_boxes,
            scene=scene,
            dsaf_weights=dsaf_w,
            local_logits=local_logits,
            local_coverage=local_cov,
            post_logits=post_logits,
            post_coverage=post_cov,
            gate_cost=gate_cost,
        )
