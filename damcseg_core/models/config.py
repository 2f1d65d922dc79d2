"""Typed configuration of a DAMCSeg model (one dataclass per sub-module).

A :class:`ModelConfig` holds everything needed to rebuild a model: checkpoints store
``to_dict(model.config)`` and :func:`damcseg_core.models.build_model_from_config` turns it back
into the same network. Build configs from plain dicts with
:func:`damcseg_core.config.from_dict`, which rejects unknown keys and wrong types.
"""

from __future__ import annotations

import dataclasses

from damcseg_core.data.classes import DETECTION_TRAIN_IDS, NUM_CLASSES
from damcseg_core.models.branch_gating import BranchGateConfig
from damcseg_core.models.crf import CRFConfig
from damcseg_core.models.dsaf import DSAFConfig
from damcseg_core.models.scene_complexity import SceneComplexityConfig

__all__ = [
    "BackboneConfig",
    "CompletionConfig",
    "DetectionConfig",
    "EncoderConfig",
    "FusionConfig",
    "ModelConfig",
    "NormalizationConfig",
    "RefinementConfig",
    "SegmentationConfig",
]


@dataclasses.dataclass
class NormalizationConfig:
    """How the model turns canonical input units into network inputs."""

    rgb_mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # ImageNet mean, RGB order
    rgb_std: tuple[float, float, float] = (0.229, 0.224, 0.225)  # ImageNet std
    max_depth: float = 80.0  # metres; depth is clipped here, then scaled to [0, 1]
    depth_mean: float = 0.25  # mean of clipped depth / max_depth over valid pixels
    depth_std: float = 0.25  # its std
    thermal_mean: float = 0.5  # thermal is full-scale normalised to [0, 1] by the data layer
    thermal_std: float = 0.25

    def __post_init__(self) -> None:
        if self.max_depth <= 0:
            raise ValueError(f"max_depth must be > 0 metres, got {self.max_depth}")
        if min(self.rgb_std) <= 0 or self.depth_std <= 0 or self.thermal_std <= 0:
            raise ValueError("normalisation std values must be > 0")


@dataclasses.dataclass
class EncoderConfig:
    """LMMF modal feature extraction (paper Sec. III.B.1)."""

    rgb_backbone: str = "mobilenetv4_conv_large"  # timm MobileNetV4 model for the RGB branch
    rgb_stages: int = 3  # how many timm stages of it to keep (later ones are dropped)
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)  # depth/thermal conv block widths
    dilations: tuple[int, int, int, int] = (1, 2, 4, 8)  # dilation of each block's second conv
    separable: bool = True  # depthwise-separable dilated convs (lighter) instead of full 3x3

    def __post_init__(self) -> None:
        if self.rgb_stages < 1:
            raise ValueError(f"rgb_stages must be >= 1, got {self.rgb_stages}")
        if min(self.widths) < 8:
            raise ValueError(f"encoder widths must be >= 8, got {self.widths}")
        if min(self.dilations) < 1:
            raise ValueError(f"dilations must be >= 1, got {self.dilations}")


@dataclasses.dataclass
class FusionConfig:
    """Modal adaptive attention (eq. 1-2)."""

    heads: int = 8  # reliability maps per modality; each weights channels // heads channels
    # "lmmf": MCN completion + modal adaptive attention (the paper). "concat": the ablation
    # baseline without LMMF - concatenated features (zeros for a missing modality) and a 1x1 conv.
    mode: str = "lmmf"
    # Feed a per-sample "this modality was completed by the MCN" flag into the gates (a learned
    # per-modality offset of the gate logits). Checkpoints from before the field load with False.
    completion_flag: bool = True
    # Sign of that offset: "nonpositive" (a completed modality is never trusted more than a real
    # one, damcseg_core.models.modal_attention) or "free". Checkpoints from before the field: free.
    completion_offset: str = "nonpositive"
    # Scene context into the gates: a per-sample offset of every gate logit from the spatial means
    # of all modalities' features (damcseg_core.models.modal_attention), so e.g. the thermal gate
    # can see that RGB is dark. Zero-initialised; False = eq. 1 (every checkpoint before the field).
    context: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("lmmf", "concat"):
            raise ValueError(f"fusion.mode must be 'lmmf' or 'concat', got {self.mode!r}")
        if self.completion_offset not in ("nonpositive", "free"):
            raise ValueError(
                f"fusion.completion_offset must be 'nonpositive' or 'free', got {self.completion_offset!r}"
            )


@dataclasses.dataclass
class CompletionConfig:
    """Modal missing completion network, MCN (eq. 3)."""

    hidden: int = 256  # hidden width of the per-location MLP
    layers: int = 2  # hidden layers of the MLP (>= 1)
    # Output activation: "relu" matches the encoders' final ReLU (damcseg_core.models.completion);
    # "linear" is the old MCN (checkpoints from before the field load with it); or "softplus".
    output: str = "relu"
    # Spatial context (damcseg_core.models.completion): residual depthwise-3x3 blocks with dilation
    # 1, 2, 4, ... after the first layer, and a learned embedding of the image row. 0 / False = the
    # per-location MLP of the paper (every checkpoint written before the fields loads with them).
    context: int = 0
    row_embedding: bool = False
    # A missing depth sensor completed as a depth *image* (damcseg_core.models.depth_completion)
    # that the real depth encoder, the detector and the depth-prior path then read, instead of
    # MCN features. 0 = off (the MCN completes depth; every checkpoint before the field), else
    # the completer's stride-8 width.
    depth_image: int = 0
    # Mark an image-completed depth as "completed" in the attention's completion flag. Off: the
    # gates see it as a real (if poor) depth image, which is what its features are.
    depth_image_flag: bool = False

    def __post_init__(self) -> None:
        if self.depth_image < 0 or self.depth_image % 4:
            raise ValueError(
                f"completion.depth_image must be 0 (off) or a positive multiple of 4 (the completer's "
                f"width), got {self.depth_image}"
            )
        if self.layers < 1 or self.hidden < 1:
            raise ValueError(f"MCN needs layers >= 1 and hidden >= 1, got {self.layers}, {self.hidden}")
        if self.context < 0:
            raise ValueError(f"completion.context must be >= 0 (context blocks), got {self.context}")
        if self.output not in ("relu", "softplus", "linear"):
            raise ValueError(f"completion.output must be 'relu', 'softplus' or 'linear', got {self.output!r}")


@dataclasses.dataclass
class BackboneConfig:
    """Shared EfficientNetV2 backbone (paper Sec. III.C.1)."""

    name: str = "tf_efficientnetv2_b3"  # timm EfficientNetV2 model; its stride-16/32 stages are used
    channel_multiplier: float = 1.0  # width scaling passed to timm
    depth_multiplier: float = 1.0  # depth scaling passed to timm
    shared_fraction: float = 0.8  # first fraction of blocks shared by detection and segmentation

    def __post_init__(self) -> None:
        if not 0.0 < self.shared_fraction < 1.0:
            raise ValueError(f"shared_fraction must be in (0, 1), got {self.shared_fraction}")


@dataclasses.dataclass
class DetectionConfig:
    """EfficientDet-style BiFPN + box/class heads and their post-processing."""

    bifpn_channels: int = 160  # BiFPN width (EfficientDet-D3 uses 160)
    bifpn_repeats: int = 6  # stacked BiFPN layers
    head_repeats: int = 4  # separable conv layers in the class and box nets
    min_level: int = 3  # finest pyramid level (stride 2**min_level)
    max_level: int = 7  # coarsest pyramid level; levels above 5 are made by pooling
    anchor_scale: float = 4.0  # anchor side = anchor_scale * stride * octave scale
    num_scales: int = 3  # octave scales per level: 2**(k / num_scales)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # anchor height / width
    score_threshold: float = 0.3  # paper: ROI detection threshold (shipped models: chosen on a val seed)
    nms_iou: float = 0.5  # paper: NMS IoU threshold
    class_agnostic_nms: bool = True  # one box per object even when it scores for two classes
    pre_nms_top_k: int = 1000  # candidates kept per image before NMS
    max_detections: int = 100  # detections kept per image after NMS

    def __post_init__(self) -> None:
        if not 2 <= self.min_level <= 5 or not self.min_level < self.max_level <= 8:
            raise ValueError(
                f"need 2 <= min_level <= 5 and min_level < max_level <= 8, got {self.min_level}, {self.max_level}"
            )
        if not 0.0 <= self.score_threshold <= 1.0 or not 0.0 < self.nms_iou <= 1.0:
            raise ValueError("score_threshold must be in [0, 1] and nms_iou in (0, 1]")
        if self.max_detections < 0:
            raise ValueError(f"max_detections must be >= 0, got {self.max_detections}")


@dataclasses.dataclass
class SegmentationConfig:
    """Three-path segmentation head (global ASPP | local ROI | depth-prior post-processing)."""

    aspp_channels: int = 256  # ASPP width after channel pruning
    aspp_rates: tuple[int, ...] = (1, 6, 12, 18)  # paper: four dilation rates
    aspp_separable: bool = False  # depthwise-separable dilated ASPP convs (cheaper, for edge)
    decoder_channels: int = 128  # width of the stride-8 decoder of the global path
    fusion_stride: int = 1  # paths, DSAF and CRF run at H/s x W/s; the result is up-sampled (1, 2 or 4)
    roi_size: int = 128  # local path ROI crop size in pixels (paper: 128x128)
    local_backbone: str = "mobilenetv4_conv_large"  # timm MobileNetV4 model of the local sub-network
    local_stages: int = 3  # timm stages of it to keep
    local_channels: int = 128  # width fed to the local branches
    max_rois: int = 100  # local path processes at most this many boxes per image
    post_strength: float = 2.0  # initial logit boost of the depth-prior post-processing path
    depth_tolerance: float = 0.15  # relative depth gap beyond which a pixel is not the box's target

    def __post_init__(self) -> None:
        if self.roi_size < 8 or self.roi_size % 8:
            raise ValueError(f"roi_size must be a multiple of 8 and >= 8, got {self.roi_size}")
        if self.local_stages < 1:
            raise ValueError(f"local_stages must be >= 1, got {self.local_stages}")
        if self.fusion_stride not in (1, 2, 4):
            raise ValueError(f"fusion_stride must be 1, 2 or 4, got {self.fusion_stride}")


@dataclasses.dataclass
class RefinementConfig:
    """Scene complexity, DSAF weighting, local-branch gating and CRF (paper Sec. III.D-E)."""

    use_crf: bool = True  # run the lightweight mean-field CRF on the fused logits
    # run the local ROI path; False: DSAF fuses the global and depth-prior paths only (the local
    # path's weights stay in the checkpoint, unused). Measured per checkpoint, see the README.
    use_local: bool = True
    crf: CRFConfig = dataclasses.field(default_factory=CRFConfig)  # CRF settings (3 iterations)
    dsaf: DSAFConfig = dataclasses.field(default_factory=DSAFConfig)  # initial eq. 6 parameters
    gate: BranchGateConfig = dataclasses.field(default_factory=BranchGateConfig)  # local branches + gate
    scene: SceneComplexityConfig = dataclasses.field(default_factory=SceneComplexityConfig)  # eq. 5


@dataclasses.dataclass
class ModelConfig:
    """Everything needed to rebuild one DAMCSeg model."""

    name: str = "damcseg_paper"  # registered variant this config started from
    num_classes: int = NUM_CLASSES  # segmentation classes (Cityscapes train ids)
    num_det_classes: int = len(DETECTION_TRAIN_IDS)  # detection classes (DETECTION_TRAIN_IDS)
    input_size: tuple[int, int] = (1024, 2048)  # H, W the Predictor resizes/pads frames to
    pretrained: bool = False  # load timm ImageNet weights (needs them cached; never downloads here)
    normalization: NormalizationConfig = dataclasses.field(default_factory=NormalizationConfig)
    encoder: EncoderConfig = dataclasses.field(default_factory=EncoderConfig)
    fusion: FusionConfig = dataclasses.field(default_factory=FusionConfig)
    completion: CompletionConfig = dataclasses.field(default_factory=CompletionConfig)
    backbone: BackboneConfig = dataclasses.field(default_factory=BackboneConfig)
    detection: DetectionConfig = dataclasses.field(default_factory=DetectionConfig)
    segmentation: SegmentationConfig = dataclasses.field(default_factory=SegmentationConfig)
    refinement: RefinementConfig = dataclasses.field(default_factory=RefinementConfig)

    def __post_init__(self) -> None:
        h, w = self.input_size
        if h % 32 or w % 32 or h <= 0 or w <= 0:
            raise ValueError(f"input_size must be positive multiples of 32, got {self.input_size}")
        if self.encoder.widths[-1] % self.fusion.heads:
            raise ValueError(
                f"the last encoder width {self.encoder.widths[-1]} must be divisible by "
                f"fusion.heads={self.fusion.heads}"
            )
        if self.num_det_classes != len(DETECTION_TRAIN_IDS):
            raise ValueError(
                f"num_det_classes must be {len(DETECTION_TRAIN_IDS)} (DETECTION_TRAIN_IDS); got {self.num_det_classes}"
            )
