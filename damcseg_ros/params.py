"""The node's ROS parameters: one table with description and range per parameter, read once.

``declare(node)`` declares every parameter with a ``ParameterDescriptor`` (description, range,
read-only where a change needs a re-configure) and installs a set-time validator, so a bad value
(negative deadline, unknown device, unknown reliability) is refused with a reason by
``ros2 param set`` / ``--params-file`` instead of failing later. ``read(node)`` then turns the
values into the typed :class:`NodeParams` the rest of the node uses; it is called at each
``configure`` transition, so changed values take effect at the next configure.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult

from damcseg_ros.sync import MODALITIES, SyncConfig

__all__ = ["PARAMETERS", "NodeParams", "ParamSpec", "declare", "read", "validate"]

RELIABILITIES = ("best_effort", "reliable")
CLASS_ID_FORMATS = ("name", "id")
BACKENDS = ("torch", "onnxruntime")
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One parameter: name, default, description, and its allowed values."""

    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None  # inclusive numeric range (rclpy enforces it too)
    check: Callable[[Any], str | None] | None = None  # returns a reason when the value is bad


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {list(choices)}, got '{value}'"

    return check


def _device(value: Any) -> str | None:
    if _DEVICE_RE.match(str(value)):
        return None
    return f"must be 'cpu', 'cuda' or 'cuda:N', got '{value}'"


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("autostart", True, "Configure and activate at start-up (no lifecycle manager needed)."),
    ParamSpec(
        "checkpoint",
        "",
        "Path of a damcseg checkpoint (.pt). Empty: the package default "
        "damcseg_core/weights/damcseg_edge.pt if present.",
    ),
    ParamSpec(
        "model",
        "",
        "Registered variant (damcseg_tiny, damcseg_edge, damcseg_paper) with RANDOM weights, used when "
        "set and 'checkpoint' is empty (it takes precedence over the package default): for tests and "
        "bring-up only, outputs are meaningless. Leave empty in production.",
    ),
    ParamSpec("device", "cpu", "Torch device: cpu, cuda or cuda:N.", check=_device),
    ParamSpec(
        "backend",
        "torch",
        "Inference backend: 'torch' (the checkpoint in PyTorch) or 'onnxruntime' (the graphs in "
        "'onnx_path', written by damcseg-export; TensorRT/CUDA execution providers are used when "
        "onnxruntime offers them, else CPU; 'device' then only applies to torch).",
        check=_one_of(BACKENDS),
    ),
    ParamSpec(
        "onnx_path",
        "",
        "backend 'onnxruntime' only: the folder written by damcseg-export (dense_<subset>.onnx + "
        "local.onnx) or one dense_<subset>.onnx in it. Checked at configure against 'model' / "
        "'checkpoint' (same variant and input size).",
    ),
    ParamSpec(
        "min_confidence",
        0.0,
        "Pixels whose top class probability is below this are labelled 255 (unknown); 0 labels all.",
        range=(0.0, 0.99),
    ),
    ParamSpec(
        "score_threshold",
        0.3,
        "Detections below this score are not published; also LabelInfo.threshold.",
        range=(0.0, 1.0),
    ),
    ParamSpec(
        "class_id_format",
        "name",
        "Detection2D hypothesis class_id: 'name' (e.g. 'car') or 'id' (train id as text, e.g. '13').",
        check=_one_of(CLASS_ID_FORMATS),
    ),
    ParamSpec("use_rgb", True, "Subscribe to rgb/image."),
    ParamSpec("use_depth", True, "Subscribe to depth/image (registered to the RGB camera)."),
    ParamSpec("use_thermal", True, "Subscribe to thermal/image (registered to the RGB camera)."),
    ParamSpec("use_camera_info", False, "Also subscribe to <input>/camera_info and check its size."),
    ParamSpec(
        "qos_reliability",
        "best_effort",
        "Reliability of the image subscriptions: best_effort (sensor data) or reliable.",
        check=_one_of(RELIABILITIES),
    ),
    ParamSpec("qos_depth", 1, "Queue depth of the image subscriptions (keep last).", range=(1, 100)),
    ParamSpec(
        "max_pixels", 16_000_000, "Largest input image (width*height) accepted.", range=(1, 100_000_000)
    ),
    ParamSpec(
        "sync.slop",
        0.02,
        "Max header-stamp difference (s) between messages of one group.",
        range=(0.0, 1.0),
    ),
    ParamSpec(
        "sync.deadline.rgb",
        0.05,
        "Wait at most this long (s) for rgb after a group opened.",
        range=(0.0, 5.0),
    ),
    ParamSpec(
        "sync.deadline.depth",
        0.05,
        "Wait at most this long (s) for depth after a group opened.",
        range=(0.0, 5.0),
    ),
    ParamSpec(
        "sync.deadline.thermal",
        0.05,
        "Wait at most this long (s) for thermal after a group opened.",
        range=(0.0, 5.0),
    ),
    ParamSpec(
        "sync.missing_after",
        1.0,
        "A sensor silent for this long (s) is 'missing' (ERROR on /diagnostics) and no longer waited for.",
        range=(0.01, 60.0),
    ),
    ParamSpec(
        "sync.max_future",
        1.0,
        "Stamps further ahead of the node clock than this (s) are dropped.",
        range=(0.0, 3600.0),
    ),
    ParamSpec("publish_color", True, "Publish ~/segmentation/color (rgb8 overlay)."),
    ParamSpec("publish_compressed", False, "Publish ~/segmentation/compressed (lossless PNG of the mask)."),
    ParamSpec(
        "color_alpha", 0.5, "Weight of the class colours in the overlay (1 = colours only).", range=(0.0, 1.0)
    ),
    ParamSpec("output_qos_depth", 5, "Queue depth of the output publishers.", range=(1, 100)),
    ParamSpec("diagnostics_period", 1.0, "Period (s) of /diagnostics.", range=(0.1, 60.0)),
    ParamSpec(
        "qos_check_period", 2.0, "Period (s) of the QoS-mismatch check on silent inputs.", range=(0.1, 60.0)
    ),
)
_SPECS = {p.name: p for p in PARAMETERS}


@dataclasses.dataclass(frozen=True)
class NodeParams:
    """Typed, validated view of the parameters (read once per configure)."""

    autostart: bool
    checkpoint: str
    model: str
    device: str
    backend: str  # torch | onnxruntime
    onnx_path: str  # exported folder/file for the onnxruntime backend
    min_confidence: float
    score_threshold: float
    class_id_format: str
    modalities: tuple[str, ...]  # enabled inputs, from use_rgb / use_depth / use_thermal
    use_camera_info: bool
    qos_reliability: str
    qos_depth: int
    max_pixels: int
    sync: SyncConfig
    publish_color: bool
    publish_compressed: bool
    color_alpha: float
    output_qos_depth: int
    diagnostics_period: float
    qos_check_period: float


def validate(name: str, value: Any) -> str | None:
    """The reason ``value`` is not acceptable for parameter ``name``, or None when it is."""
    spec = _SPECS.get(name)
    if spec is None:
        return None  # not ours (e.g. use_sim_time)
    if isinstance(spec.default, bool):
        if not isinstance(value, bool):
            return f"{name} must be true or false, got {value!r}"
    elif isinstance(spec.default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name} must be an integer, got {value!r}"
    elif isinstance(spec.default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name} must be a number, got {value!r}"
    elif isinstance(spec.default, str) and not isinstance(value, str):
        return f"{name} must be a string, got {value!r}"
    if spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
        return f"{name} must be in [{spec.range[0]}, {spec.range[1]}], got {value}"
    if spec.check is not None:
        reason = spec.check(value)
        if reason:
            return f"{name} {reason}"
    return None


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    desc = ParameterDescriptor(description=spec.description)
    if spec.range is not None:
        lo, hi = spec.range
        if isinstance(spec.default, float):
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)
            ]
        else:
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        desc.additional_constraints = f"range [{lo}, {hi}]"
    return desc


def declare(node: Any) -> None:
    """Declare every parameter on ``node`` and refuse bad values at set time with a reason."""

    def on_set(params: list[Any]) -> SetParametersResult:
        for p in params:
            reason = validate(p.name, p.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    # Installed before declaring, so values from --params-file / -p are validated too.
    node.add_on_set_parameters_callback(on_set)
    for spec in PARAMETERS:
        node.declare_parameter(spec.name, spec.default, _descriptor(spec))


def read(node: Any) -> NodeParams:
    """Read the declared parameters into :class:`NodeParams`.

    Raises:
        ValueError: no input enabled (the message names the parameters).
    """
    v = {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}
    modalities = tuple(m for m in MODALITIES if v[f"use_{m}"])
    if not modalities:
        raise ValueError("no input enabled: set at least one of use_rgb, use_depth, use_thermal to true")
    sync = SyncConfig(
        modalities=modalities,
        slop=float(v["sync.slop"]),
        deadlines={m: float(v[f"sync.deadline.{m}"]) for m in MODALITIES},
        missing_after=float(v["sync.missing_after"]),
        max_future=float(v["sync.max_future"]),
    )
    return NodeParams(
        autostart=bool(v["autostart"]),
        checkpoint=str(v["checkpoint"]),
        model=str(v["model"]),
        device=str(v["device"]),
        backend=str(v["backend"]),
        onnx_path=str(v["onnx_path"]),
        min_confidence=float(v["min_confidence"]),
        score_threshold=float(v["score_threshold"]),
        class_id_format=str(v["class_id_format"]),
        modalities=modalities,
        use_camera_info=bool(v["use_camera_info"]),
        qos_reliability=str(v["qos_reliability"]),
        qos_depth=int(v["qos_depth"]),
        max_pixels=int(v["max_pixels"]),
        sync=sync,
        publish_color=bool(v["publish_color"]),
        publish_compressed=bool(v["publish_compressed"]),
        color_alpha=float(v["color_alpha"]),
        output_qos_depth=int(v["output_qos_depth"]),
        diagnostics_period=float(v["diagnostics_period"]),
        qos_check_period=float(v["qos_check_period"]),
    )
