"""Typed records of a DAMCSeg model, and the input check every entry point shares.

The return type never depends on the configuration (see ``docs/interfaces.md``): eval mode
returns :class:`DamcsegOutput`, train mode :class:`DamcsegTrainOutput`. Between the two halves of
the head travel :class:`DenseOutputs` (the fixed-shape part: the eager model's
``forward_dense`` or an ONNX graph) and :class:`RefineResult` (what
:class:`~damcseg_core.models.refinement.RefinementHead` returns). They live here, below both
``damcseg.py`` and ``refinement.py``, so neither imports the other's types.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from damcseg_core import MODALITIES
from damcseg_core.models.dsaf import DSAFWeights
from damcseg_core.models.scene_complexity import SceneComplexity

__all__ = ["DamcsegOutput", "DamcsegTrainOutput", "DenseOutputs", "RefineResult", "check_inputs"]


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


def input_shape(inputs: dict[str, torch.Tensor]) -> tuple[int, int, int]:
    """``(B, H, W)`` of inputs that :func:`check_inputs` has already accepted."""
    x = next(iter(inputs.values()))
    return x.shape[0], x.shape[2], x.shape[3]


@dataclasses.dataclass
class DenseOutputs:
    """What ``DAMCSeg.forward_dense`` returns: the fixed-shape tensors the refinement head needs.

    These are the outputs of the exported ONNX graph (``damcseg_core.export``), ``anchors``
    aside (a constant the onnxruntime backend rebuilds from the config).

    Attributes:
        cls_logits: ``[B, A, K_det]`` raw detection class logits.
        box_deltas: ``[B, A, 4]`` raw box regression.
        anchors: ``[A, 4]`` xyxy anchors.
        global_logits: ``[B, K, H/s, W/s]`` global-path logits at the work resolution.
        seg_feature: ``[B, C, H/8, W/8]`` stride-8 segmentation features (P3, local-path context).
        image_stack: ``[B, 6, H, W]`` normalised rgb|depth(+valid)|thermal, zeros where unused.
        omega: ``[B, 3]`` mean reliability per modality.
        anchor_levels: ``[A]`` pyramid level index of each anchor (training only; the onnxruntime
            backend leaves it ``None``).
        completed_depth: ``[B, 1, H, W]`` depth image (metres) the depth image completer filled in
            (``completion.depth_image``); the refinement reads it as the depth image. ``None``
            when depth was given or is completed as MCN features. An ONNX graph of a subset
            without depth outputs it when the model has the completer.
    """

    cls_logits: torch.Tensor
    box_deltas: torch.Tensor
    anchors: torch.Tensor
    global_logits: torch.Tensor
    seg_feature: torch.Tensor
    image_stack: torch.Tensor
    omega: torch.Tensor
    anchor_levels: torch.Tensor | None = None
    completed_depth: torch.Tensor | None = None


@dataclasses.dataclass
class DamcsegOutput:
    """Eval-mode prediction for a batch of ``B`` frames of size ``H x W``.

    Attributes:
        seg_logits: ``[B, 19, H, W]`` fused (DSAF) and CRF-refined class logits.
        boxes: per image ``[N, 4]`` xyxy pixel boxes after NMS.
        scores: per image ``[N]`` detection scores in [0, 1].
        labels: per image ``[N]`` int64 Cityscapes train ids (one of ``DETECTION_TRAIN_IDS``).
        scene: scene complexity ``S, D, O, E`` ``[B]`` and ``category`` ``[B]`` (0/1/2).
        alpha_beta_gamma: ``[B, 3]`` image-level (alpha, beta, gamma) after DSAF.
        target_alpha_beta_gamma: per image ``[N, 3]`` per-target (alpha, beta, gamma).
        omega: ``[B, 3]`` mean reliability weight of (rgb, depth, thermal); a
            completed modality has one too: how much its MCN-predicted features were trusted.
        present: modalities given as input, in ``MODALITIES`` order.
        completed: modalities the model filled in (MCN features, or the depth image of
            ``completion.depth_image``), in ``MODALITIES`` order.
    """

    seg_logits: torch.Tensor
    boxes: list[torch.Tensor]
    scores: list[torch.Tensor]
    labels: list[torch.Tensor]
    scene: SceneComplexity
    alpha_beta_gamma: torch.Tensor
    target_alpha_beta_gamma: list[torch.Tensor]
    omega: torch.Tensor
    present: tuple[str, ...]
    completed: tuple[str, ...]


@dataclasses.dataclass
class DamcsegTrainOutput(DamcsegOutput):
    """Train-mode outputs: everything :class:`DamcsegOutput` holds, plus the raw tensors the DSJL
    (eq. 4) and the completion loss need.

    In train mode ``seg_logits`` are the fused (DSAF) and CRF-refined logits at input size,
    ``boxes``/``scores``/``labels`` the post-processed detections (detached, for the alignment
    loss) and ``target_alpha_beta_gamma`` the per-target DSAF weights of ``roi_boxes``.

    Attributes:
        branch_logits: ``global``/``local``/``post`` ``[B, 19, H, W]`` logits of each path;
            ``local`` and ``post`` are only meaningful where their coverage is 1.
        local_coverage: ``[B, 1, H, W]`` 1 where a local-path ROI was pasted, else 0.
        post_coverage: ``[B, 1, H, W]`` 1 inside any box used by the post-processing path.
        cls_logits: ``[B, A, 10]`` detection class logits (sigmoid / focal loss), class ``k``
            = train id ``DETECTION_TRAIN_IDS[k]``.
        box_deltas: ``[B, A, 4]`` regression of each anchor, torchvision
            ``BoxCoder(weights=(1, 1, 1, 1))`` encoding.
        anchors: ``[A, 4]`` xyxy pixel anchors, same for every image of the batch.
        completion: modality -> (predicted, real) features for modalities present in the batch
            but dropped via ``drop``; ``real`` is detached (a stop-gradient target).
        roi_boxes: per image boxes the local and post paths used (detections, or the
            ``roi_boxes`` given to ``forward``).
        gate_cost: scalar expected compute of the local-branch gates (a loss term can push it down).
        anchor_levels: ``[A]`` int64 pyramid level index (0 = finest) of each anchor, for the
            level-aware (ATSS) assignment of the detection loss; ``None`` = one level.
        lmmf: the ``LMMFFeatures`` of the step (per-sample ``completed_mask``, the fused
            features and the no-gradient ``teacher_fused`` / ``distill_mask`` of the
            distillation loss); ``None`` = not given.
        teacher_global_logits: ``[B, 19, H, W]`` global-path logits of ``lmmf.teacher_fused``
            (no gradient), for the logit distillation loss; ``None`` unless ``forward`` was asked
            for them (``teacher_logits=True``) and some sample dropped a modality.
    """

    branch_logits: dict[str, torch.Tensor]
    local_coverage: torch.Tensor
    post_coverage: torch.Tensor
    cls_logits: torch.Tensor
    box_deltas: torch.Tensor
    anchors: torch.Tensor
    completion: dict[str, tuple[torch.Tensor, torch.Tensor]]
    roi_boxes: list[torch.Tensor]
    gate_cost: torch.Tensor
    anchor_levels: torch.Tensor | None = None
    lmmf: Any = None
    teacher_global_logits: torch.Tensor | None = None

    @classmethod
    def extend(cls, out: DamcsegOutput, **train_fields: Any) -> DamcsegTrainOutput:
        """``out``'s fields plus the train-only ones (no copies of the tensors)."""
        return cls(
            **{f.name: getattr(out, f.name) for f in dataclasses.fields(DamcsegOutput)}, **train_fields
        )


@dataclasses.dataclass
class RefineResult:
    """What :class:`~damcseg_core.models.refinement.RefinementHead` returns.

    The work-resolution branch maps (``H/s x W/s``, ``s = fusion_stride``) are kept for the losses.
    """

    seg_logits: torch.Tensor
    boxes: list[torch.Tensor]
    scores: list[torch.Tensor]
    labels: list[torch.Tensor]
    roi_boxes: list[torch.Tensor]
    scene: SceneComplexity
    dsaf_weights: DSAFWeights
    local_logits: torch.Tensor
    local_coverage: torch.Tensor
    post_logits: torch.Tensor
    post_coverage: torch.Tensor
    gate_cost: torch.Tensor

    def to_output(
        self, omega: torch.Tensor, present: tuple[str, ...], completed: tuple[str, ...]
    ) -> DamcsegOutput:
        """The eval-mode :class:`DamcsegOutput`."""
        return DamcsegOutput(
            seg_logits=self.seg_logits,
            boxes=self.boxes,
            scores=self.scores,
            labels=self.labels,
            scene=self.scene,
            alpha_beta_gamma=self.dsaf_weights.alpha_beta_gamma,
            target_alpha_beta_gamma=self.dsaf_weights.target_alpha_beta_gamma,
            omega=omega,
            present=present,
            completed=completed,
        )
