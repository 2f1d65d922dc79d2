"""Named DAMCSeg variants and the factory that builds them.

``build_model(name, **overrides)`` starts from the registered :class:`ModelConfig`, applies
``overrides`` with :func:`damcseg_core.config.from_dict` semantics (nested sections as dicts;
an unknown key raises :class:`~damcseg_core.config.ConfigError`) and builds the model.
``build_model_from_config(cfg)`` rebuilds a model from a (checkpoint) config.

Variants:

* ``damcseg_paper``: paper Sec. IV.A.3 configuration (EfficientNetV2-B3 shared backbone,
  MobileNetV4-Large RGB branch and local path, LMMF widths 64-128-256-512, 8 heads, ASPP rates
  1/6/12/18, ROI 128, BiFPN P3-P7), widths tuned to the paper's 42.3M parameters.
* ``damcseg_edge``: the same architecture scaled for a 2-core CPU at 256x512.
* ``damcseg_tiny``: a < 1.5M-parameter model for fast tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from damcseg_core.config import deep_merge, from_dict, to_dict
from damcseg_core.models.config import ModelConfig

__all__ = ["build_model", "build_model_from_config", "get_config", "list_models", "register_model"]

_REGISTRY: dict[str, Callable[[], ModelConfig]] = {}


def register_model(fn: Callable[[], ModelConfig]) -> Callable[[], ModelConfig]:
    """Register a function returning a variant's :class:`ModelConfig` under the function's name."""
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered variants, sorted."""
    return sorted(_REGISTRY)


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The config of variant ``name`` with ``overrides`` applied.

    Raises:
        KeyError: ``name`` is not registered (the message lists the registered names).
        ConfigError: an override key is unknown or has the wrong type.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown model '{name}'; registered models: {', '.join(list_models())}")
    base = to_dict(_REGISTRY[name]())
    return from_dict(ModelConfig, deep_merge(base, overrides))


def build_model_from_config(cfg: ModelConfig):
    """Build a :class:`~damcseg_core.models.damcseg.DAMCSeg` from ``cfg`` (kept as ``model.config``)."""
    from damcseg_core.models.damcseg import DAMCSeg

    return DAMCSeg(cfg)


def build_model(name: str, **overrides: Any):
    """Build registered variant ``name`` with config ``overrides`` (see module docstring)."""
    return build_model_from_config(get_config(name, **overrides))


# --------------------------------------------------------------------------- variants
@register_model
def damcseg_paper() -> ModelConfig:
    """Paper configuration (Sec. IV.A.3), widths chosen to land at the paper's 42.3M parameters.

    Fixed by the paper: EfficientNetV2-B3 shared backbone, MobileNetV4-Large RGB branch and local
    path, LMMF widths 64-128-256-512 with 8 heads, ASPP rates 1/6/12/18, ROI 128x128, score
    threshold 0.3, NMS IoU 0.5, 3 CRF iterations. Not given by the paper, chosen here (41.6M in
    total, -1.7 % from 42.3M; per module see ``damcseg-info --model damcseg_paper``):

    * BiFPN 224 channels x 7 layers, head 4 layers: the EfficientDet-D4 neck (D3's 160 x 6
      gives 1.9M fewer parameters and would leave the total at 39.7M).
    * ASPP 256 channels with full 3x3 dilated convs and a 256-channel stride-8 decoder (the
      DeepLabv3+ widths; "channel pruning" is the 256 instead of the 512-2048 of a ResNet head).
    * MCN hidden width 512 = the LMMF width, two layers per target modality.
    * Only the first 3 stages of each MobileNetV4-Large are kept (3.4M each): its stride-32 stage
      alone has 26M parameters, which the 42.3M budget cannot hold twice.
    """
    return from_dict(
        ModelConfig,
        {
            "name": "damcseg_paper",
            "input_size": (1024, 2048),
            "encoder": {"rgb_backbone": "mobilenetv4_conv_large", "rgb_stages": 3, "widths": (64, 128, 256, 512)},
            "fusion": {"heads": 8},
            "completion": {"hidden": 512, "layers": 2},
            "backbone": {"name": "tf_efficientnetv2_b3"},
            "detection": {"bifpn_channels": 224, "bifpn_repeats": 7, "head_repeats": 4, "min_level": 3, "max_level": 7},
            "segmentation": {
                "aspp_channels": 256, "aspp_rates": (1, 6, 12, 18), "aspp_separable": False,
                "decoder_channels": 256, "roi_size": 128,
                "local_backbone": "mobilenetv4_conv_large", "local_stages": 3, "local_channels": 128,
                "max_rois": 100,
            },
        },
    )  # fmt: skip


@register_model
def damcseg_edge() -> ModelConfig:
    """2-core-CPU variant for 256x512 frames, edge v2 (same architecture, scaled down; issue #17).

    Scaled from a profile of the first edge model (5.1M parameters, 1.7 GMAC, 0.39x LRASPP):

    * RGB branch and local path: MobileNetV4-Small at half width (``mobilenetv4_conv_small_050``);
      depth/thermal widths 8-16-32-64 (the stride-8 blocks were 25 % of the encoders' cost).
    * Shared backbone: EfficientNetV2-B0 x0.75 width, x0.5 depth (its stride-16/32 blocks were
      40 % of the model's multiply-adds).
    * BiFPN 64 channels x 1 layer (P3-P6, one square anchor per location), 2-layer heads.
    * Separable ASPP with rates (1, 2): training crops of 128x256 give a 4x8 stride-32 map, on
      which a rate must be <= 2 for every output to see real features in each direction (rates
      6/12/18 saw only padding in training and switched on untrained at 256x512).
    * The three paths, DSAF and the CRF at half resolution (``fusion_stride=2``, CRF without
      further down-sampling); the fused logits are up-sampled. At most 24 ROIs (ROI 48).

    ``damcseg-info --model damcseg_edge`` prints the parameters and multiply-adds per module.
    """
    return from_dict(
        ModelConfig,
        {
            "name": "damcseg_edge",
            "input_size": (256, 512),
            "encoder": {"rgb_backbone": "mobilenetv4_conv_small_050", "rgb_stages": 3, "widths": (8, 16, 32, 64)},
            "fusion": {"heads": 8},
            "completion": {"hidden": 64, "layers": 2},
            "backbone": {"name": "tf_efficientnetv2_b0", "channel_multiplier": 0.75, "depth_multiplier": 0.5},
            # One square anchor per location (32-256 px at P3-P6): ATSS assignment makes more anchors
            # unnecessary (Zhang et al. 2020) and the head's outputs, loss and NMS 9x cheaper.
            "detection": {"bifpn_channels": 64, "bifpn_repeats": 1, "head_repeats": 2, "min_level": 3, "max_level": 6,
                          "num_scales": 1, "aspect_ratios": (1.0,), "max_detections": 50},
            "segmentation": {
                "aspp_channels": 64, "aspp_rates": (1, 2), "aspp_separable": True, "decoder_channels": 48,
                "fusion_stride": 2, "roi_size": 48,
                "local_backbone": "mobilenetv4_conv_small_050", "local_stages": 2, "local_channels": 48,
                "max_rois": 24,
            },
            # Paths, DSAF and CRF at 128x256 for 256x512 frames; the CRF needs no extra down-sampling.
            "refinement": {"crf": {"scale": 1}},
        },
    )  # fmt: skip


@register_model
def damcseg_tiny() -> ModelConfig:
    """Smallest variant, for tests: 0.45M parameters, 64x128 frames, at most 8 detections/ROIs."""
    return from_dict(
        ModelConfig,
        {
            "name": "damcseg_tiny",
            "input_size": (64, 128),
            "encoder": {"rgb_backbone": "mobilenetv4_conv_small", "rgb_stages": 2, "widths": (8, 16, 24, 32)},
            "fusion": {"heads": 8},
            "completion": {"hidden": 32, "layers": 1},
            "backbone": {"name": "tf_efficientnetv2_b0", "channel_multiplier": 0.25, "depth_multiplier": 0.5},
            "detection": {"bifpn_channels": 24, "bifpn_repeats": 1, "head_repeats": 1, "min_level": 3, "max_level": 5,
                          "num_scales": 1, "max_detections": 8, "pre_nms_top_k": 100},
            "segmentation": {
                "aspp_channels": 24, "aspp_separable": True, "decoder_channels": 24, "roi_size": 16,
                "local_backbone": "mobilenetv4_conv_small", "local_stages": 1, "local_channels": 16,
                "max_rois": 8,
            },
        },
    )  # fmt: skip
