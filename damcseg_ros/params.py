"""The node's ROS parameters: one table, the single source of everything a parameter needs.

:data:`PARAMETERS` holds each parameter once (name, default, description, range or choices).
From it come:

* ``declare(node)``: every parameter with a ``ParameterDescriptor`` (description, range) and a
  set-time validator (:func:`validate`), so a bad value (negative deadline, unknown device,
  unknown reliability) is refused with a reason by ``ros2 param set`` / ``--params-file``;
* ``read(node)``: the typed :class:`NodeParams` (called at each ``configure``); a parameter
  fills the field of its name, or with ``group`` set, the grouped field (``modalities``,
  ``sync``, ``detection``);
* :func:`yaml_defaults`: the ``/**: ros__parameters:`` tree that ``config/damcseg.yaml`` holds;
* :func:`launch_arguments`: rows ``(name, default, description, choices)`` for the launch file.

``test/unit/test_params_spec.py`` checks that the table, :class:`NodeParams` and
``config/damcseg.yaml`` agree.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult

from damcseg_core.data.compressed_image import SENSOR_TRANSPORTS
from damcseg_ros.sync import MODALITIES, SyncConfig

__all__ = [
    "PARAMETERS",
    "NodeParams",
    "ParamSpec",
    "declare",
    "launch_arguments",
    "read",
    "validate",
    "yaml_defaults",
]

RELIABILITIES = ("best_effort", "reliable")
CLASS_ID_FORMATS = ("name", "id")
BLANK_FRAME_POLICIES = ("complete", "keep")
BACKENDS = ("torch", "onnxruntime")
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One parameter: name, default, description, and its allowed values."""

    name: str
    default: Any
    description: str
    range: tuple[float, float] | None = None  # inclusive numeric range (rclpy enforces it too)
    choices: tuple[str, ...] | None = None  # the allowed strings
    check: Callable[[Any], str | None] | None = None  # returns a reason when the value is bad
    group: str | None = None  # NodeParams field built from several parameters; None: field = name
    launch: bool = False  # offered as a launch argument (launch_arguments())


def _device(value: Any) -> str | None:
    if _DEVICE_RE.match(str(value)):
        return None
    return f"must be 'cpu', 'cuda' or 'cuda:N', got '{value}'"


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("autostart", True, "Configure and activate at start-up (no lifecycle manager needed)."),
    ParamSpec(
        "checkpoint",
        "",
        "Path of a damcseg checkpoint (.pt), or the name of one shipped in damcseg_core/weights "
        "(damcseg_edge, damcseg_edge_fast). Empty: the package default "
        "damcseg_core/weights/damcseg_edge.pt if present.",
        launch=True,
    ),
    ParamSpec(
        "model",
        "",
        "Registered variant (damcseg_tiny, damcseg_edge, damcseg_paper) with RANDOM weights, used when "
        "set and 'checkpoint' is empty (it takes precedence over the package default): for tests and "
        "bring-up only, outputs are meaningless. Leave empty in production.",
        launch=True,
    ),
    ParamSpec("device", "cpu", "Torch device: cpu, cuda or cuda:N.", check=_device, launch=True),
    ParamSpec(
        "tune_allocator",
        True,
        "glibc malloc keeps freed tensor memory (blocks up to 32 MiB) in the process for reuse "
        "instead of faulting it in again every frame: predict 1.08x as fast on a 2-core CPU "
        "(benchmarks/allocator.py); the resident size stays at a frame's peak. Process-wide, applied "
        "at configure; false leaves the allocator as it is. No effect off glibc.",
    ),
    ParamSpec(
        "backend",
        "torch",
        "Inference backend: 'torch' (the checkpoint in PyTorch) or 'onnxruntime' (the graphs in "
        "'onnx_path', written by damcseg-export; TensorRT/CUDA execution providers are used when "
        "onnxruntime offers them, else CPU; 'device' then only applies to torch).",
        choices=BACKENDS,
        launch=True,
    ),
    ParamSpec(
        "onnx_path",
        "",
        "backend 'onnxruntime' only: the folder written by damcseg-export (dense_<subset>.onnx + "
        "local.onnx) or one dense_<subset>.onnx in it. Checked at configure against 'model' / "
        "'checkpoint' (same variant and input size).",
        launch=True,
    ),
    ParamSpec(
        "min_confidence",
        0.0,
        "Pixels whose top class probability is below this are labelled 255 (unknown); 0 labels all.",
        range=(0.0, 0.99),
    ),
    ParamSpec(
        "score_threshold",
        0.0,
        "Detections below this score are not published (0: every box the model keeps); also "
        "LabelInfo.threshold.",
        range=(0.0, 1.0),
    ),
    ParamSpec(
        "detection.score_threshold",
        -1.0,
        "Model post-processing: candidate boxes below this score are discarded before NMS, so they "
        "never reach the scene estimate (D, O), the ROI path or the output. -1: the checkpoint's own "
        "threshold (chosen on a validation seed). 'score_threshold' then filters what is published.",
        range=(-1.0, 1.0),
        group="detection",
    ),
    ParamSpec(
        "detection.max_detections",
        50,
        "Model post-processing: at most this many boxes per frame after NMS (highest scores kept).",
        range=(0, 1000),
        group="detection",
    ),
    ParamSpec(
        "detection.class_agnostic_nms",
        True,
        "Model post-processing: NMS across classes (one box per object even when two classes fire); "
        "false: per class.",
        group="detection",
    ),
    ParamSpec(
        "class_id_format",
        "name",
        "Detection2D hypothesis class_id: 'name' (e.g. 'car') or 'id' (train id as text, e.g. '13').",
        choices=CLASS_ID_FORMATS,
    ),
    ParamSpec("use_rgb", True, "Subscribe to rgb/image.", group="modalities"),
    ParamSpec(
        "use_depth", True, "Subscribe to depth/image (registered to the RGB camera).", group="modalities"
    ),
    ParamSpec(
        "use_thermal", True, "Subscribe to thermal/image (registered to the RGB camera).", group="modalities"
    ),
    *(
        ParamSpec(
            f"transport.{m}",
            "raw",
            f"image_transport of {m}/image: {', '.join(SENSOR_TRANSPORTS[m])} (subscribes to "
            f"{m}/image/<transport>, sensor_msgs/CompressedImage, decoded with OpenCV).",
            choices=SENSOR_TRANSPORTS[m],
            group="transports",
        )
        for m in MODALITIES
    ),
    ParamSpec(
        "blank_frames",
        "complete",
        "A frame whose pixels all hold one value (a dead camera's black frames, depth without any "
        "valid return): 'complete' treats that sensor as dropped for the frame (the completion "
        "network fills it in, <sensor>_present is false on ~/scene_complexity); 'keep' feeds it to "
        "the model as it is.",
        choices=BLANK_FRAME_POLICIES,
    ),
    ParamSpec("use_camera_info", False, "Also subscribe to <input>/camera_info and check its size."),
    ParamSpec(
        "qos_reliability",
        "best_effort",
        "Reliability of the image subscriptions: best_effort (sensor data) or reliable.",
        choices=RELIABILITIES,
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
        group="sync",
    ),
    ParamSpec(
        "sync.deadline.rgb",
        0.05,
        "Wait at most this long (s) for rgb after a group opened.",
        range=(0.0, 5.0),
        group="sync",
    ),
    ParamSpec(
        "sync.deadline.depth",
        0.05,
        "Wait at most this long (s) for depth after a group opened.",
        range=(0.0, 5.0),
        group="sync",
    ),
    ParamSpec(
        "sync.deadline.thermal",
        0.05,
        "Wait at most this long (s) for thermal after a group opened.",
        range=(0.0, 5.0),
        group="sync",
    ),
    ParamSpec(
        "sync.missing_after",
        1.0,
        "A sensor silent for this long (s) is 'missing' (ERROR on /diagnostics) and no longer waited for.",
        range=(0.01, 60.0),
        group="sync",
    ),
    ParamSpec(
        "sync.max_future",
        1.0,
        "Stamps further ahead of the node clock than this (s) are dropped.",
        range=(0.0, 3600.0),
        group="sync",
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
    """Typed, validated view of the parameters (read once per configure).

    One field per ungrouped parameter, same name; the grouped ones fill ``modalities``
    (``use_<m>``), ``sync`` (``sync.*``) and ``detection`` (``detection.*``).
    """

    autostart: bool
    checkpoint: str
    model: str
    device: str
    tune_allocator: bool  # glibc mallopt at configure (damcseg_core.inference.tune_allocator)
    backend: str  # torch | onnxruntime
    onnx_path: str  # exported folder/file for the onnxruntime backend
    min_confidence: float
    score_threshold: float  # publishing filter and LabelInfo.threshold
    class_id_format: str
    blank_frames: str  # complete | keep
    use_camera_info: bool
    qos_reliability: str
    qos_depth: int
    max_pixels: int
    publish_color: bool
    publish_compressed: bool
    color_alpha: float
    output_qos_depth: int
    diagnostics_period: float
    qos_check_period: float
    modalities: tuple[str, ...]  # enabled inputs, from use_rgb / use_depth / use_thermal
    transports: dict[str, str]  # modality -> raw | compressed | compressedDepth (transport.<m>)
    sync: SyncConfig
    detection: dict[str, Any]  # load_predictor(detection=...): score_threshold, max_detections, ...


GROUPS = ("modalities", "sync", "detection", "transports")
"""The :class:`NodeParams` fields built from several parameters (``ParamSpec.group``)."""


def _type_reason(spec: ParamSpec, value: Any) -> str | None:
    name = spec.name
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
    return None


def validate(name: str, value: Any) -> str | None:
    """The reason ``value`` is not acceptable for parameter ``name``, or None when it is."""
    spec = _SPECS.get(name)
    if spec is None:
        return None  # not ours (e.g. use_sim_time)
    reason = _type_reason(spec, value)
    if reason:
        return reason
    if spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
        return f"{name} must be in [{spec.range[0]}, {spec.range[1]}], got {value}"
    if spec.choices is not None and value not in spec.choices:
        return f"{name} must be one of {list(spec.choices)}, got '{value}'"
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
    elif spec.choices is not None:
        desc.additional_constraints = "one of " + ", ".join(spec.choices)
    return desc


def startup_error(exc: Exception) -> str:
    """The fatal log line for a parameter rclpy refused at declaration (a ``--ros-args -p`` or
    params-file value of the wrong type, or outside its range)."""
    from rclpy.exceptions import InvalidParameterTypeException

    kind = "type" if isinstance(exc, InvalidParameterTypeException) else "value"
    hint = " (write floats with a decimal point, e.g. 1.0)" if kind == "type" else ""
    return f"bad parameter {kind}: {exc}{hint}"


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


def from_values(values: dict[str, Any]) -> NodeParams:
    """:class:`NodeParams` from ``{parameter name: value}`` (every name of :data:`PARAMETERS`).

    Raises:
        ValueError: no input enabled (the message names the parameters).
    """
    v = {spec.name: type(spec.default)(values[spec.name]) for spec in PARAMETERS}
    modalities = tuple(m for m in MODALITIES if v[f"use_{m}"])
    if not modalities:
        raise ValueError("no input enabled: set at least one of use_rgb, use_depth, use_thermal to true")
    sync = SyncConfig(
        modalities=modalities,
        slop=v["sync.slop"],
        deadlines={m: v[f"sync.deadline.{m}"] for m in MODALITIES},
        missing_after=v["sync.missing_after"],
        max_future=v["sync.max_future"],
    )
    detection = {s.name.split(".", 1)[1]: v[s.name] for s in PARAMETERS if s.group == "detection"}
    if detection["score_threshold"] < 0:  # keep the checkpoint's own threshold
        del detection["score_threshold"]
    plain = {s.name: v[s.name] for s in PARAMETERS if s.group is None}
    transports = {m: v[f"transport.{m}"] for m in MODALITIES}
    return NodeParams(**plain, modalities=modalities, sync=sync, detection=detection, transports=transports)


def read(node: Any) -> NodeParams:
    """Read the declared parameters of ``node`` into :class:`NodeParams` (see :func:`from_values`)."""
    return from_values({spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS})


def yaml_defaults() -> dict[str, Any]:
    """The ``{"/**": {"ros__parameters": {...}}}`` tree of every default (dotted names nested)."""
    tree: dict[str, Any] = {}
    for spec in PARAMETERS:
        *parents, leaf = spec.name.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = spec.default
    return {"/**": {"ros__parameters": tree}}


def _launch_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def launch_arguments() -> list[tuple[str, str, str, tuple[str, ...] | None]]:
    """Launch-argument rows ``(name, default, description, choices)`` of the parameters marked
    ``launch``, in table order.

    ``default`` is the node's built-in default as launch text (``"true"``, ``"0.3"``, ``""``);
    ``choices`` the allowed strings (``("true", "false")`` for booleans) or None for free values.
    """
    rows = []
    for spec in PARAMETERS:
        if not spec.launch:
            continue
        choices = ("true", "false") if isinstance(spec.default, bool) else spec.choices
        rows.append((spec.name, _launch_text(spec.default), spec.description, choices))
    return rows
