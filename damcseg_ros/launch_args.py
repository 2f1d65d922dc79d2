"""What launch/damcseg.launch.py decides, as plain functions (no ``launch`` import needed).

The launch file only wires these into ``launch`` actions, so every rule is unit-tested without
a ROS 2 launch install (``launch`` is not on PyPI):

* :func:`arguments`: the launch arguments ``(name, default, description, choices)``; ``choices``
  is a tuple of valid values, ``BOOL`` for booleans, or None (free text). The node parameters
  among them (checkpoint, model, device, backend, onnx_path) come from the node's parameter
  table (``damcseg_ros.params.launch_arguments()``), with empty defaults: keep the config file.
* :func:`resolve`: the argument values -> :class:`NodeSettings` (parameter overrides, remaps,
  respawn), or one :class:`LaunchArgumentError` that names every bad value with the valid ones
  (``use_sim_time:=maybe``, ``backend:=tensorrt``) and a missing or unreadable ``config_file``.
  launch_ros only warns about a parameter file that does not exist and starts the node on its
  built-in defaults; this makes it a launch-time error naming the path.
* :class:`ExitWatch`: what to do when the node process exits. An exit while the launch is not
  shutting down ends the launch: a non-zero code (or a signal) fails it with the node's exit
  reason (the code, what it means, and the node's last FATAL/ERROR line), so ``ros2 launch``
  returns non-zero for a supervisor or CI; with ``respawn:=true`` the node is restarted after
  ``respawn_delay`` seconds, at most ``respawn_max_retries`` times (-1: forever).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import re
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path

from damcseg_core.data.compressed_image import SENSOR_TRANSPORTS

__all__ = [
    "BOOL",
    "BOOL_VALUES",
    "EXIT_CODES",
    "LAUNCH_ARGUMENTS",
    "MODALITIES",
    "TRANSPORTS",
    "ExitDecision",
    "ExitWatch",
    "LaunchArgumentError",
    "NodeSettings",
    "argument_rows",
    "arguments",
    "camera_info_topic",
    "check_config_file",
    "describe_exit",
    "parse_bool",
    "parse_choice",
    "resolve",
]

MODALITIES = ("rgb", "depth", "thermal")
BOOL = "bool"
"""``choices`` marker of a boolean argument."""
BOOL_VALUES = {"true": True, "false": False, "1": True, "0": False}
"""Accepted spellings (case-insensitive), as launch's own conditions accept them."""
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
BACKENDS = ("", "torch", "onnxruntime")
_DEVICE_RE = re.compile(r"^(|cpu|cuda(:\d+)?)$")
PACKAGE = "damcseg_ros"
EXECUTABLE = "damcseg_node"

# (name, default, description, choices) of the launch-only arguments; the node-parameter ones
# come from the node's parameter table (damcseg_ros.params.launch_arguments(), see arguments()).
# config_file's default (the installed share's config/damcseg.yaml) is filled in by the launch
# file, which knows the package share.
LAUNCH_ARGUMENTS: tuple[tuple[str, str, str, object], ...] = (
    ("config_file", "", "YAML parameter file (/**: ros__parameters: form) for the node; must exist.", None),
    ("namespace", "", "Namespace of the node and of its relative topics (e.g. front).", None),
    ("node_name", "damcseg", "Name of the node.", None),
    ("use_sim_time", "false", "Use /clock (rosbag replay with --clock, simulators): true or false.", BOOL),
    ("rgb_topic", "rgb/image", "Topic of the RGB camera images (remaps rgb/image).", None),
    ("depth_topic", "depth/image", "Topic of the registered depth images (remaps depth/image).", None),
    ("thermal_topic", "thermal/image", "Topic of the registered thermal images (remaps thermal/image).", None),
    ("log_level", "info", "Logger level: debug, info, warn, error or fatal.", LOG_LEVELS),
    ("respawn", "false", "Restart the node when it exits (vehicles): true or false. false: an exit ends the launch.", BOOL),
    ("respawn_delay", "2.0", "Seconds to wait before a respawn (respawn:=true).", "seconds"),
    ("respawn_max_retries", "-1", "Most respawns before the launch fails (-1: no limit).", "retries"),
)  # fmt: skip

TRANSPORTS = SENSOR_TRANSPORTS
"""image_transport transports each sensor accepts (node parameter ``transport.<sensor>``)."""

# Used where damcseg_ros.params (rcl_interfaces) cannot be imported: the same rows by hand.
_FALLBACK_NODE_ROWS: tuple[tuple[str, str, str, object], ...] = (
    ("checkpoint", "", "damcseg checkpoint (.pt).", None),
    ("model", "", "Random-init variant for bring-up only (e.g. damcseg_tiny); outputs are meaningless.", None),
    ("device", "", "Torch device: cpu, cuda or cuda:N.", "device"),
    ("backend", "", "Inference backend: torch or onnxruntime.", BACKENDS),
    ("onnx_path", "", "Folder written by damcseg-export (backend onnxruntime).", None),
)  # fmt: skip
_KEEP = " Empty: the config file's value."


def _node_rows() -> list[tuple[str, str, str, object]]:
    """The node parameters offered as launch arguments, from the node's parameter table.

    Every default is empty (= keep the config file's value, which launch then passes through
    untouched); choices gain the empty value; device gets its pattern check.
    """
    try:
        from damcseg_ros.params import launch_arguments
    except ImportError:  # no rcl_interfaces (e.g. a docs build): the hand-written rows
        return list(_FALLBACK_NODE_ROWS)
    rows = []
    for name, _default, description, choices in launch_arguments():
        if name == "device":
            check: object = "device"
        elif choices is not None:
            check = ("", *choices)
        else:
            check = None
        rows.append((name, "", description + _KEEP, check))
    return rows


def _transport_rows() -> list[tuple[str, str, str, object]]:
    return [
        (f"{m}_transport", "", f"image_transport of the {m} input: {', '.join(TRANSPORTS[m])}; subscribes to "
         f"<{m}_topic>/<transport> (raw: <{m}_topic>).{_KEEP}", ("", *TRANSPORTS[m]))
        for m in MODALITIES
    ]  # fmt: skip


def argument_rows() -> list[tuple[str, str, str, object]]:
    """Every launch argument ``(name, default, description, choices)``, in declaration order."""
    head, tail = LAUNCH_ARGUMENTS[:1], LAUNCH_ARGUMENTS[1:]
    return [*head, *_node_rows(), *_transport_rows(), *tail]


EXIT_CODES = {
    1: "configuration or activation failed at start-up (missing checkpoint, bad model, ...)",
    2: "a parameter has a bad type or value",
}
"""What ``damcseg_node``'s exit codes mean (damcseg_ros.node.main)."""


class LaunchArgumentError(ValueError):
    """Bad launch arguments; the message lists every problem and how to fix it."""


def arguments(config_default: str = "") -> list[tuple[str, str, str, object]]:
    """The launch arguments with ``config_file``'s default set to ``config_default``."""
    return [
        (name, config_default if name == "config_file" else default, description, choices)
        for name, default, description, choices in argument_rows()
    ]


def parse_bool(name: str, value: str) -> bool:
    """``true``/``false`` (or ``1``/``0``, any case) -> bool; anything else names the valid values."""
    key = str(value).strip().lower()
    if key not in BOOL_VALUES:
        raise LaunchArgumentError(f"{name}:={value!s} is not a boolean; valid values: true, false")
    return BOOL_VALUES[key]


def parse_choice(name: str, value: str, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else an error listing them (empty = keep the config's)."""
    choices = tuple(choices)
    if value in choices:
        return value
    shown = ", ".join(c for c in choices if c)
    empty = " (or empty to keep the config file's value)" if "" in choices else ""
    raise LaunchArgumentError(f"{name}:={value} is not valid; valid values: {shown}{empty}")


def check_config_file(path: str) -> Path:
    """The parameter file must exist and be a YAML mapping of ``<node>: ros__parameters: ...``.

    launch_ros would only warn about a missing file and start the node on its built-in defaults,
    which is how a typo in ``config_file:=`` silently ran an unconfigured node.
    """
    import yaml

    if not path:
        raise LaunchArgumentError("config_file:= is empty; give the node's YAML parameter file")
    file = Path(os.path.expanduser(path))
    if not file.exists():
        raise LaunchArgumentError(f"config_file:={path}: no such file; give an existing YAML parameter file")
    if not file.is_file():
        raise LaunchArgumentError(f"config_file:={path} is not a file; give a YAML parameter file")
    try:
        data = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise LaunchArgumentError(f"config_file:={path} cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise LaunchArgumentError(f"config_file:={path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not any(
        isinstance(v, dict) and "ros__parameters" in v for v in data.values()
    ):
        raise LaunchArgumentError(
            f"config_file:={path} is not a ROS 2 parameter file: expected '/**:' (or the node name) "
            "with a 'ros__parameters:' mapping under it, as in config/damcseg.yaml"
        )
    return file


def camera_info_topic(image_topic: str) -> str:
    """camera_info sibling of an image topic, as image_transport names it (.../image_raw -> .../camera_info)."""
    head, _, _ = image_topic.rpartition("/")
    return f"{head}/camera_info" if head else "camera_info"


@dataclasses.dataclass(frozen=True)
class NodeSettings:
    """Everything the launch file passes to launch_ros' ``Node``."""

    name: str
    namespace: str
    config_file: str
    overrides: dict[str, object]
    remappings: list[tuple[str, str]]
    log_level: str
    respawn: bool
    respawn_delay: float
    respawn_max_retries: int

    @property
    def parameters(self) -> list[object]:
        """``Node(parameters=...)``: the YAML file, then the overrides (later entries win)."""
        return [self.config_file, dict(self.overrides)]

    @property
    def ros_arguments(self) -> list[str]:
        return ["--ros-args", "--log-level", self.log_level]


def _number(name: str, value: str, kind: type, minimum: float) -> float | int:
    try:
        number = kind(str(value).strip())
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise LaunchArgumentError(f"{name}:={value} is not {what}") from None
    if (isinstance(number, float) and not math.isfinite(number)) or number < minimum:
        raise LaunchArgumentError(f"{name}:={value} must be >= {minimum:g}")
    return number


def _check(name: str, value: str, choices: object) -> object:
    if choices is None:
        return value
    if choices == BOOL:
        return parse_bool(name, value)
    if choices == "device":
        if not _DEVICE_RE.match(value):
            raise LaunchArgumentError(
                f"{name}:={value} is not valid; valid values: cpu, cuda, cuda:N "
                "(or empty to keep the config file's value)"
            )
        return value
    if choices == "seconds":
        return float(_number(name, value, float, 0.0))
    if choices == "retries":
        return int(_number(name, value, int, -1))
    return parse_choice(name, value, choices)  # type: ignore[arg-type]


def resolve(values: Mapping[str, str], check_file: bool = True) -> NodeSettings:
    """Validate the launch argument values and turn them into the node's settings.

    Args:
        values: every argument of :func:`arguments` -> its (substituted) text.
        check_file: also check ``config_file`` with :func:`check_config_file`.

    Raises:
        LaunchArgumentError: every problem found, one per line.
    """
    errors, parsed = [], {}
    rows = argument_rows()
    for name, _default, _description, choices in rows:
        if name not in values:
            errors.append(f"{name}: no value (the launch file declares it; was it removed?)")
            continue
        try:
            parsed[name] = _check(name, str(values[name]).strip(), choices)
        except LaunchArgumentError as exc:
            errors.append(str(exc))
    if check_file and "config_file" in parsed:
        try:
            check_config_file(parsed["config_file"])
        except LaunchArgumentError as exc:
            errors.append(str(exc))
    if errors:
        raise LaunchArgumentError("invalid launch arguments:\n  " + "\n  ".join(errors))
    node_names = [name for name, *_ in _node_rows()]
    overrides: dict[str, object] = {k: parsed[k] for k in node_names if parsed[k]}
    overrides.update(
        {f"transport.{m}": parsed[f"{m}_transport"] for m in MODALITIES if parsed[f"{m}_transport"]}
    )
    overrides["use_sim_time"] = parsed["use_sim_time"]
    remappings = []
    for m in MODALITIES:
        topic = parsed[f"{m}_topic"]
        remappings.append((f"{m}/image", topic))
        # A remap matches one full name: the transport topics need their own rules.
        remappings += [(f"{m}/image/{t}", f"{topic.rstrip('/')}/{t}") for t in TRANSPORTS[m] if t != "raw"]
        remappings.append((f"{m}/camera_info", camera_info_topic(topic)))
    return NodeSettings(
        name=parsed["node_name"],
        namespace=parsed["namespace"],
        config_file=parsed["config_file"],
        overrides=overrides,
        remappings=remappings,
        log_level=parsed["log_level"],
        respawn=parsed["respawn"],
        respawn_delay=parsed["respawn_delay"],
        respawn_max_retries=parsed["respawn_max_retries"],
    )


def describe_exit(returncode: int) -> str:
    """``exit code 2 (a parameter has a bad type or value)`` / ``killed by SIGSEGV``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    meaning = EXIT_CODES.get(returncode)
    return f"exit code {returncode}" + (f" ({meaning})" if meaning else "")


@dataclasses.dataclass(frozen=True)
class ExitDecision:
    """What the launch does after the node exited: ``ignore``, ``respawn``, ``shutdown`` or ``fail``."""

    action: str
    message: str


_REASON_LINE = re.compile(r"\[(FATAL|ERROR)\]")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ExitWatch:
    """Follows the node's output and exits and decides what each exit means for the launch."""

    def __init__(self, settings: NodeSettings, keep_lines: int = 50) -> None:
        self.respawn = settings.respawn
        self.respawn_delay = settings.respawn_delay
        self.max_retries = settings.respawn_max_retries
        self.node = (
            f"{settings.namespace.strip('/') + '/' if settings.namespace.strip('/') else ''}{settings.name}"
        )
        self.exits = 0
        self._lines: collections.deque[str] = collections.deque(maxlen=keep_lines)

    def on_output(self, text: bytes | str) -> None:
        """Keep the node's latest output lines (stdout and stderr) for the exit reason."""
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        self._lines.extend(line for line in _ANSI.sub("", text).splitlines() if line.strip())

    def reason_line(self) -> str | None:
        """The node's last FATAL (else ERROR) log line, without the logger prefix."""
        for level in ("FATAL", "ERROR"):
            for line in reversed(self._lines):
                if f"[{level}]" in line:
                    return line.split("]: ", 1)[-1].strip()
        return None

    def on_exit(self, returncode: int, shutting_down: bool) -> ExitDecision:
        """The decision for one exit of the node process (called once per exit)."""
        self.exits += 1
        what = describe_exit(returncode)
        if shutting_down:
            return ExitDecision("ignore", f"{self.node} stopped ({what}) while the launch shut down")
        reason = self.reason_line()
        detail = f"{what}" + (f": {reason}" if reason else "")
        if self.respawn and (self.max_retries < 0 or self.exits <= self.max_retries):
            limit = "" if self.max_retries < 0 else f" {self.exits}/{self.max_retries}"
            return ExitDecision(
                "respawn", f"{self.node} exited ({detail}); respawn{limit} in {self.respawn_delay:g} s"
            )
        retried = f" after {self.exits - 1} respawn(s)" if self.respawn else ""
        if returncode == 0:
            return ExitDecision("shutdown", f"{self.node} exited{retried} ({what}); shutting the launch down")
        return ExitDecision(
            "fail",
            f"{self.node} exited{retried} with {detail}. The launch fails "
            "(set respawn:=true to restart the node instead).",
        )
