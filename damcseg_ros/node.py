"""The damcseg ROS 2 node: thin glue between topics and :class:`damcseg_core.predictor.Predictor`.

parameters (``params.py``) -> QoS -> subscriptions -> header checks (``conversions.py``) ->
synchroniser (``sync.py``) -> newest-wins mailbox -> worker thread: convert, predict ->
publish (``outputs.py``); ``/diagnostics`` from ``diagnostics.py``.

Lifecycle (``rclpy.lifecycle``): ``configure`` reads the parameters and loads the model,
``activate`` publishes LabelInfo and starts subscriptions and the worker, ``deactivate`` stops
them, ``cleanup`` frees the model. With ``autostart`` (default) the node walks itself to
*active*, so a plain run needs no lifecycle manager::

    python -m damcseg_ros.node --ros-args --params-file config/damcseg.yaml -p model:=damcseg_tiny

Outputs carry the header of the frame they describe: the RGB image when present, else the first
present sensor in the order depth, thermal. Depth and thermal are assumed registered to the RGB
camera (same optical frame); the Predictor only resizes them to the RGB size.

Faults never stop the node and never flood the log: every bad input is counted on
``/diagnostics`` (see ``diagnostics.py`` for the counter names) and its reason is logged at most
once per ``LOG_PERIOD_S`` per (sensor, kind of fault):

* rejected messages (unsupported encoding, e.g. ``mono16`` on ``depth/image``: only 16UC1 and
  32FC1 are depth; empty, too large, ``step`` or payload length inconsistent),
* dropped stamps (zero / negative, too far in the future, duplicate, out of order),
* depth values without a range (NaN, inf, negative, or no valid pixel at all: processed, with
  those pixels as invalid 0),
* a resolution change (processed at the new size),
* stamps or clock jumping back (bag loop): the synchroniser resets and carries on,
* sensors of one group naming different ``frame_id`` s: accepted (registered cameras often keep
  their own optical frame names), warned about once,
* frames dropped because inference is slower than the input (newest frame wins).
"""

from __future__ import annotations

import dataclasses
import gc
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, LabelInfo

from damcseg_ros import conversions, diagnostics, outputs, params
from damcseg_ros.msg import SceneComplexity
from damcseg_ros.sync import MODALITIES, Group, LatestMailbox, SensorState, Synchronizer, SyncResult

__all__ = [
    "DEFAULT_CHECKPOINT",
    "FAULT_COUNTERS",
    "LOG_PERIOD_S",
    "DamcsegNode",
    "main",
    "resolve_model_source",
]

# rgb8 frames reach the Predictor as read-only zero-copy views of the message buffer; torch warns
# about wrapping them although the Predictor only reads them (it converts to float at once).
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "damcseg_core" / "weights" / "damcseg_edge.pt"
"""Used when the ``checkpoint`` parameter is empty and the file exists."""


LOG_PERIOD_S = 10.0
"""A fault's reason is logged at most once per this many seconds per (sensor, kind of fault)."""
FRAME_ID_LOG_PERIOD_S = 3600.0
"""Different frame_ids across sensors are accepted; saying so once is enough."""
_DEPTH_VALUE_TEXT = {
    "nan": ("NaN (no return, REP 118)", 60.0),
    "inf": ("+-inf (out of range, REP 117)", 60.0),
    "negative": ("negative (a driver bug)", LOG_PERIOD_S),
}
SYNC_DROP_COUNTERS = ("zero_stamp", "future_stamp", "duplicate", "out_of_order", "too_late")
FAULT_COUNTERS = (
    *(f"invalid_{kind}" for kind in conversions.INVALID_KINDS),
    *SYNC_DROP_COUNTERS,
    *(f"{kind}_frames" for kind in _DEPTH_VALUE_TEXT),
    "no_valid_frames",
    "resolution_changes",
)
"""Per-sensor fault counters on ``/diagnostics``, in the order they are listed there."""


def resolve_model_source(checkpoint: str, model: str, default: Path = DEFAULT_CHECKPOINT) -> tuple[str, str]:
    """Decide what to load: ``("checkpoint", path)`` or ``("model", variant)``.

    Explicit settings win over the package default: an explicit ``checkpoint`` must exist (never
    silently replaced by random weights), then an explicit ``model`` (random init, for tests and
    bring-up; the node logs a loud warning), then ``default`` if present.

    Raises:
        FileNotFoundError: ``checkpoint`` names a missing file.
        ValueError: nothing to load; the message names the parameters to set.
    """
    if checkpoint:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"parameter 'checkpoint' names a missing file: {checkpoint}")
        return "checkpoint", checkpoint
    if model:
        return "model", model
    if default.is_file():
        return "checkpoint", str(default)
    raise ValueError(
        f"no model to load: the default checkpoint {default} does not exist. Set parameter 'checkpoint' "
        "to a trained .pt file, or (tests / bring-up only, random weights) 'model' to a variant such as "
        "damcseg_tiny"
    )


def onnx_expectations(
    checkpoint: str, model: str, default: Path = DEFAULT_CHECKPOINT
) -> tuple[str | None, tuple[int, int] | None]:
    """Variant and input size an ONNX export must have for the node's 'checkpoint' / 'model'.

    An explicit ``checkpoint`` wins, then ``model``; with neither, the package default checkpoint
    if present, else no expectation (the export is taken as it is).

    Raises:
        FileNotFoundError / CheckpointError: ``checkpoint`` is missing or unreadable.
        KeyError: ``model`` is not a registered variant.
    """
    if checkpoint or (not model and default.is_file()):
        from damcseg_core.checkpoint import load_checkpoint

        path = checkpoint or str(default)
        if checkpoint and not Path(checkpoint).is_file():
            raise FileNotFoundError(f"parameter 'checkpoint' names a missing file: {checkpoint}")
        ckpt = load_checkpoint(path)
        size = ckpt["model_config"].get("input_size")
        return ckpt["model_name"], (tuple(int(v) for v in size) if size else None)
    if model:
        from damcseg_core.models import get_config

        return model, tuple(get_config(model).input_size)
    return None, None


def stamp_ns(header: Header) -> int:
    """Header stamp in nanoseconds. Unlike ``rclpy.time.Time.from_msg`` it does not raise on a
    negative ``sec`` (a broken driver must not kill the node; the synchroniser drops it)."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def _reliability(name: str) -> ReliabilityPolicy:
    return ReliabilityPolicy.RELIABLE if name == "reliable" else ReliabilityPolicy.BEST_EFFORT


def qos_incompatibility(pub: QoSProfile, sub: QoSProfile) -> str | None:
    """Why a publisher's QoS cannot feed a subscription (DDS request/offer rules), or None."""
    if sub.reliability == ReliabilityPolicy.RELIABLE and pub.reliability == ReliabilityPolicy.BEST_EFFORT:
        return "publisher offers best_effort, subscription requests reliable"
    if sub.durability == DurabilityPolicy.TRANSIENT_LOCAL and pub.durability == DurabilityPolicy.VOLATILE:
        return "publisher offers volatile durability, subscription requests transient_local"
    return None


class DamcsegNode(LifecycleNode):
    """Lifecycle node running DAMCSeg on synchronised rgb / depth / thermal images."""

    def __init__(self, node_name: str = "damcseg", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        params.declare(self)
        self.p: params.NodeParams | None = None
        self._predictor: Any = None
        self._model_name = ""
        self._sync: Synchronizer | None = None
        self._mailbox = LatestMailbox()
        self._stats = diagnostics.PipelineStats()
        self._lock = threading.Lock()  # guards _stats and _last_completed (worker vs executor)
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._active = False
        self._pubs: dict[str, Any] = {}
        self._diag_pub: Any = None
        self._subs: list[Any] = []
        self._image_subs: dict[str, Any] = {}
        self._proc_timers: list[Any] = []
        self._diag_timer: Any = None
        self._rates = {m: diagnostics.RateMeter() for m in MODALITIES}
        self._invalid = dict.fromkeys(MODALITIES, 0)
        self._last_completed: tuple[str, ...] = ()
        self._camera_info: dict[str, CameraInfo] = {}
        self._warned: set[str] = set()  # one-time warnings (QoS mismatch, camera_info size)
        self._log_times: dict[str, float] = {}  # rate-limited fault logs: key -> last time logged
        self._faults = {m: dict.fromkeys(FAULT_COUNTERS, 0) for m in MODALITIES}
        self._sizes: dict[str, tuple[int, int]] = {}  # last accepted width, height per input
        self._received_at_check = dict.fromkeys(MODALITIES, -1)  # -1: first check always looks

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.p = params.read(self)
            self._load_model()
        except Exception as exc:  # any load failure must leave the node unconfigured, with the reason
            self.get_logger().error(f"configure failed: {exc}")
            self._predictor = None
            return TransitionCallbackReturn.FAILURE
        depth = self.p.output_qos_depth
        self._pubs = {
            "mask": self.create_lifecycle_publisher(Image, "~/segmentation", depth),
            "detections": self.create_lifecycle_publisher(Detection2DArray, "~/detections", depth),
            "scene": self.create_lifecycle_publisher(SceneComplexity, "~/scene_complexity", depth),
            # transient_local: a subscriber that starts later still gets the (single) message.
            "label_info": self.create_lifecycle_publisher(
                LabelInfo,
                "~/label_info",
                QoSProfile(
                    depth=1, history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.TRANSIENT_LOCAL
                ),
            ),
        }
        if self.p.publish_color:
            self._pubs["color"] = self.create_lifecycle_publisher(Image, "~/segmentation/color", depth)
        if self.p.publish_compressed:
            self._pubs["compressed"] = self.create_lifecycle_publisher(
                CompressedImage, "~/segmentation/compressed", depth
            )
        # Diagnostics are published in every state, so an inactive node is visible too.
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.p.diagnostics_period, self._publish_diagnostics)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.p is not None
        self._sync = Synchronizer(self.p.sync, self._now_ns)
        with self._lock:
            self._stats = diagnostics.PipelineStats()
        self._invalid = dict.fromkeys(MODALITIES, 0)
        self._faults = {m: dict.fromkeys(FAULT_COUNTERS, 0) for m in MODALITIES}
        self._sizes = {}
        self._rates = {m: diagnostics.RateMeter() for m in MODALITIES}
        ret = super().on_activate(state)  # activates the lifecycle publishers
        self._pubs["label_info"].publish(
            outputs.label_info(
                self._class_names(), self.p.score_threshold, Header(stamp=self.get_clock().now().to_msg())
            )
        )
        qos = QoSProfile(
            depth=self.p.qos_depth,
            history=HistoryPolicy.KEEP_LAST,
            reliability=_reliability(self.p.qos_reliability),
            durability=DurabilityPolicy.VOLATILE,
        )
        for m in self.p.modalities:
            sub = self.create_subscription(Image, f"{m}/image", lambda msg, m=m: self._on_image(m, msg), qos)
            self._image_subs[m] = sub
            self._subs.append(sub)
            if self.p.use_camera_info:
                self._subs.append(
                    self.create_subscription(
                        CameraInfo,
                        f"{m}/camera_info",
                        lambda msg, m=m: self._camera_info.__setitem__(m, msg),
                        qos,
                    )
                )
        # Poll often enough that a deadline is overshot by at most ~half of the shortest one.
        poll = min(max(min(self.p.sync.deadlines[m] for m in self.p.modalities) / 2, 0.005), 0.05)
        self._proc_timers = [
            self.create_timer(poll, self._poll_sync),
            self.create_timer(self.p.qos_check_period, self._check_qos),
        ]
        self._stop.clear()
        self._mailbox = LatestMailbox()
        self._worker = threading.Thread(target=self._work, name="damcseg-inference", daemon=True)
        self._worker.start()
        self._active = True
        self.get_logger().info(
            f"active: inputs {list(self.p.modalities)}, model {self._model_name} on {self.p.device}, "
            f"QoS {self.p.qos_reliability}/depth {self.p.qos_depth}"
        )
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ setup helpers
    def _load_model(self) -> None:
        assert self.p is not None
        import torch

        from damcseg_core.predictor import Predictor

        if self.p.backend == "onnxruntime":
            self._load_onnx()
            return
        if self.p.device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"parameter device={self.p.device} but CUDA is not available; set device:=cpu")
        kind, source = resolve_model_source(self.p.checkpoint, self.p.model)
        start = time.perf_counter()
        if kind == "checkpoint":
            self._predictor = Predictor.from_checkpoint(
                source, device=self.p.device, min_confidence=self.p.min_confidence
            )
            self._model_name = Path(source).name
        else:
            self._predictor = Predictor.from_name(
                source, seed=0, device=self.p.device, min_confidence=self.p.min_confidence
            )
            self._model_name = f"{source} (random init)"
            self.get_logger().warning(
                f"NO CHECKPOINT: running '{source}' with RANDOM weights; outputs are meaningless "
                "(tests / bring-up only). Set parameter 'checkpoint' for real use."
            )
        self.get_logger().info(
            f"loaded {self._model_name} on {self.p.device} in {time.perf_counter() - start:.1f} s"
        )

    def _load_onnx(self) -> None:
        """backend:=onnxruntime: the exported graphs, checked against 'model' / 'checkpoint'."""
        assert self.p is not None
        from damcseg_core.export import OnnxRuntimeModel
        from damcseg_core.export.onnx_export import ALL_SUBSETS
        from damcseg_core.predictor import Predictor

        if not self.p.onnx_path:
            raise ValueError(
                "backend:=onnxruntime needs parameter 'onnx_path': the folder written by "
                "damcseg-export --checkpoint CKPT --out DIR (docs/deployment.md)"
            )
        expected_name, expected_size = onnx_expectations(self.p.checkpoint, self.p.model)
        start = time.perf_counter()
        model = OnnxRuntimeModel(self.p.onnx_path, expected_name=expected_name, expected_size=expected_size)
        enabled = self.p.modalities
        if enabled not in model.subsets:
            raise ValueError(
                f"onnx_path {self.p.onnx_path} has no graph for the enabled inputs {'+'.join(enabled)}; "
                f"re-export with damcseg-export --modalities {','.join(enabled)} (or without --modalities)"
            )
        lacking = [s for s in ALL_SUBSETS if set(s) <= set(enabled) and s not in model.subsets]
        if lacking:
            self.get_logger().warning(
                "frames where only "
                + " / ".join("+".join(s) for s in lacking)
                + " arrive will fail (reported on /diagnostics): those subsets were not exported"
            )
        # Graph inputs/outputs are host tensors; the execution provider picks the device.
        self._predictor = Predictor(model, device="cpu", min_confidence=self.p.min_confidence)
        self._model_name = f"{Path(self.p.onnx_path).name} ({model.model_name}, onnxruntime)"
        self.get_logger().info(
            f"loaded {self._model_name} with providers {model.providers} in {time.perf_counter() - start:.1f} s"
        )

    def _class_names(self) -> tuple[str, ...]:
        from damcseg_core.data.classes import CITYSCAPES_CLASSES

        return CITYSCAPES_CLASSES

    def _stop_processing(self) -> None:
        self._active = False
        for sub in self._subs:
            self.destroy_subscription(sub)
        for timer in self._proc_timers:
            self.destroy_timer(timer)
        self._subs, self._proc_timers, self._image_subs = [], [], {}
        self._stop.set()
        self._mailbox.close()
        if self._worker is not None:
            self._worker.join(timeout=10.0)
            self._worker = None

    def _release(self) -> None:
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None
        device = self.p.device if self.p else "cpu"
        self._predictor = None
        gc.collect()
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ executor callbacks
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_image(self, modality: str, msg: Image) -> None:
        assert self.p is not None and self._sync is not None
        self._rates[modality].tick(time.monotonic())
        try:
            conversions.check_image(msg, modality, self.p.max_pixels)
        except conversions.ImageConversionError as exc:
            self._invalid[modality] += 1
            counter = f"invalid_{exc.kind}"
            if counter in self._faults[modality]:
                self._faults[modality][counter] += 1
            with self._lock:
                self._stats.invalid += 1
            # Keyed per kind: a second fault must not be hidden behind the first one's throttle.
            self._log_limited(f"{modality}-{counter}", "warning", f"dropping {modality} image: {exc}")
            return
        size = (int(msg.width), int(msg.height))
        previous = self._sizes.get(modality)
        if previous is not None and previous != size:
            self._faults[modality]["resolution_changes"] += 1
            self._log_limited(
                f"{modality}-resolution",
                "info",
                f"{modality} resolution changed from {previous[0]}x{previous[1]} to {size[0]}x{size[1]}; "
                "processing continues at the new size (outputs follow the rgb size)",
            )
        self._sizes[modality] = size
        info = self._camera_info.get(modality)
        if info is not None and (info.width, info.height) != (msg.width, msg.height):
            self._warn_once(
                f"caminfo-{modality}",
                f"{modality}/camera_info is {info.width}x{info.height} but {modality}/image is "
                f"{msg.width}x{msg.height}; check the remapping",
            )
        stamp = stamp_ns(msg.header)
        result = self._sync.add(modality, stamp, msg)
        if result.dropped:
            self._log_dropped(modality, result.dropped, stamp)
        self._handle(result)

    def _log_dropped(self, modality: str, kind: str, stamp: int) -> None:
        """Explain (rate-limited) why the synchroniser dropped a message; it is counted there."""
        if kind == "zero_stamp":
            why = f"header stamp is zero or negative ({stamp / 1e9:.3f} s); the driver must stamp its frames"
        elif kind == "future_stamp":
            ahead = (stamp - self._now_ns()) / 1e9
            why = (
                f"stamp is {ahead:.3f} s ahead of the node clock (sync.max_future = "
                f"{self.p.sync.max_future} s); check the sensor's time sync, or use_sim_time for a bag"
            )
        elif kind == "duplicate":
            why = f"same stamp as the previous {modality} message (duplicate, {stamp / 1e9:.3f} s)"
        elif kind == "out_of_order":
            why = f"stamp {stamp / 1e9:.3f} s is older than the previous {modality} message (out of order)"
        else:
            # too_late: a slow sensor whose group already left; normal with short deadlines and
            # visible as the sensor's 'late' state, so counted without a log line.
            return
        self._log_limited(f"{modality}-{kind}", "warning", f"dropping {modality} image: {why}")

    def _log_limited(self, key: str, level: str, text: str, period: float = LOG_PERIOD_S) -> None:
        """Log ``text`` unless the same ``key`` was logged less than ``period`` seconds ago.

        rclpy's ``throttle_duration_sec`` throttles per call site, so two different faults
        reported from one line would hide each other; here each key has its own clock.
        """
        now = time.monotonic()
        last = self._log_times.get(key)
        if last is not None and now - last < period:
            return
        self._log_times[key] = now
        # One call site per severity: rclpy refuses a call site whose severity changes.
        logger = self.get_logger()
        if level == "info":
            logger.info(text)
        else:
            logger.warning(text)

    def _poll_sync(self) -> None:
        if self._sync is not None:
            self._handle(self._sync.poll())

    def _handle(self, result: SyncResult) -> None:
        log = self.get_logger()
        if result.reset:
            self._log_limited(
                "reset",
                "warning",
                "clock or stamps jumped back by more than sync.missing_after (bag loop, sensor or "
                "sim-time restart): synchroniser reset (pending frames discarded)",
            )
        for ev in result.events:
            if ev.new is SensorState.MISSING:
                # At most once per missing_after per sensor: always worth a line.
                log.error(f"{ev}; continuing without it")
                continue
            # ok <-> late can flap on every few frames when a starved executor loses messages
            # (seen in the 60 Hz soak: ~13 lines/s); /diagnostics shows the current state anyway.
            self._log_limited(
                f"{ev.modality}-{ev.old.value}-{ev.new.value}",
                "warning" if ev.new is SensorState.LATE else "info",
                str(ev)
                if ev.old is SensorState.MISSING
                else f"{ev} (repeats within {LOG_PERIOD_S:g} s not logged)",
            )
        for group in result.groups:
            frame_ids = {m: group.items[m].header.frame_id for m in group.present}
            mismatch = len(set(frame_ids.values())) > 1
            if mismatch:
                self._log_limited(
                    "frame_id",
                    "warning",
                    "sensors of one frame name different frame_ids ("
                    + ", ".join(f"{m}: '{f}'" for m, f in frame_ids.items())
                    + f"); accepted: depth and thermal are assumed registered to the RGB camera and "
                    f"outputs carry the {group.reference} header (counted as frame_id_mismatch)",
                    period=FRAME_ID_LOG_PERIOD_S,
                )
            replaced = self._mailbox.put(group)
            with self._lock:
                self._stats.groups += 1
                self._stats.frame_id_mismatch += int(mismatch)
                self._stats.dropped += int(replaced)
                dropped, groups = self._stats.dropped, self._stats.groups
            if replaced:
                self._log_limited(
                    "mailbox-drop",
                    "info",
                    f"inference is slower than the input: older frames are dropped, the newest one "
                    f"wins ({dropped} of {groups} frames dropped so far)",
                    period=3 * LOG_PERIOD_S,
                )

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.get_logger().warning(text)

    def _check_qos(self) -> None:
        """Warn once per input that receives nothing while publishers with incompatible QoS exist."""
        assert self._sync is not None
        for modality, sub in self._image_subs.items():
            received = self._sync.counters[modality].received
            if received != self._received_at_check.get(modality, 0):
                self._received_at_check[modality] = received
                continue
            for info in self.get_publishers_info_by_topic(sub.topic_name):
                why = qos_incompatibility(info.qos_profile, sub.qos_profile)
                if why:
                    self._warn_once(
                        f"qos-{sub.topic_name}",
                        f"no messages on {sub.topic_name}: publisher {info.node_namespace.rstrip('/')}/"
                        f"{info.node_name} has incompatible QoS ({why}). Set parameter "
                        f"qos_reliability:={'best_effort' if 'reliable' in why else self.p.qos_reliability} "
                        "or change the publisher",
                    )

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None or self.p is None:
            return
        now_mono = time.monotonic()
        with self._lock:
            stats = dataclasses.replace(self._stats)
            completed = self._last_completed
        stats.resets = self._sync.resets if self._sync is not None else 0
        statuses = []
        for m in MODALITIES:
            enabled = m in self.p.modalities
            sync = self._sync if enabled else None
            statuses.append(
                diagnostics.sensor_status(
                    m,
                    sync.states[m] if sync else SensorState.MISSING,
                    self._rates[m].rate(now_mono),
                    sync.age(m) if sync else 0.0,
                    sync.counters[m].received if sync else 0,
                    sync.counters[m].dropped if sync else 0,
                    self._invalid[m],
                    completed_by_model=enabled and m in completed,
                    enabled=enabled,
                    faults=self._fault_counts(m, sync),
                )
            )
        statuses.append(diagnostics.pipeline_status(stats, self._model_name, self.p.device, self._active))
        self._diag_pub.publish(diagnostics.diagnostic_array(statuses, self.get_clock().now().to_msg()))

    def _fault_counts(self, modality: str, sync: Synchronizer | None) -> dict[str, int]:
        counts = dict(self._faults[modality])
        for name in SYNC_DROP_COUNTERS:
            counts[name] = getattr(sync.counters[modality], name) if sync else 0
        return counts

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        while not self._stop.is_set():
            group = self._mailbox.get(timeout=0.5)
            if group is None:
                continue
            try:
                self._process(group)
            except Exception as exc:  # keep serving the next frames; report on /diagnostics
                with self._lock:
                    self._stats.errors += 1
                    self._stats.last_error = f"{type(exc).__name__}: {exc}"
                self.get_logger().error(
                    f"frame failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0
                )

    def _process(self, group: Group) -> None:
        assert self.p is not None
        start = time.perf_counter()
        inputs = {m: conversions.to_modality(group.items[m], m, self.p.max_pixels) for m in group.present}
        if "depth" in inputs:
            self._check_depth_values(group.items["depth"], inputs["depth"])
        header = group.items[group.reference].header
        result = self._predictor.predict(inputs)
        pubs = self._pubs
        if not self._active or not pubs:
            return
        mask = result.mask
        pubs["mask"].publish(outputs.mask_image(mask, header))
        if "color" in pubs:
            pubs["color"].publish(outputs.color_image(mask, inputs.get("rgb"), self.p.color_alpha, header))
        if "compressed" in pubs:
            pubs["compressed"].publish(outputs.compressed_mask(mask, header))
        pubs["detections"].publish(
            outputs.detections(result, header, self.p.score_threshold, self.p.class_id_format)
        )
        pubs["scene"].publish(outputs.scene_complexity(result, header, num_targets=len(result.scores)))
        latency_ms = (self._now_ns() - stamp_ns(header)) / 1e6
        with self._lock:
            self._stats.frames += 1
            self._stats.processing_ms = (time.perf_counter() - start) * 1000.0
            self._stats.inference_ms = float(result.inference_ms)
            self._stats.latency_ms = latency_ms
            self._stats.last_error = ""
            self._last_completed = tuple(result.completed)

    def _check_depth_values(self, msg: Image, depth: Any) -> None:
        """Count and explain depth pixels without a range; the frame is still processed."""
        assert self.p is not None
        faults = self._faults["depth"]
        for kind, count in conversions.depth_value_faults(msg, self.p.max_pixels).items():
            if count:
                faults[f"{kind}_frames"] += 1
                text, period = _DEPTH_VALUE_TEXT[kind]
                self._log_limited(
                    f"depth-{kind}",
                    "info" if kind in ("nan", "inf") else "warning",
                    f"depth image has {count} of {depth.size} pixels {text}; treated as invalid (0)",
                    period=period,
                )
        if not depth.any():
            faults["no_valid_frames"] += 1
            self._log_limited(
                "depth-no_valid",
                "warning",
                "depth image has no valid pixel (all 0, NaN, inf or negative): processed as a depth "
                "frame without information; check the depth camera",
            )


def main(argv: list[str] | None = None) -> int:
    """Run the node until shutdown; returns the exit code (1 when autostart configuration failed)."""
    from damcseg_ros.fastdds import ensure_large_image_profile

    ensure_large_image_profile()  # before rclpy.init: Fast DDS reads it at start-up
    rclpy.init(args=sys.argv if argv is None else argv)
    try:
        node = DamcsegNode()
    except InvalidParameterTypeException as exc:
        rclpy.logging.get_logger("damcseg").fatal(
            f"bad parameter type: {exc} (write floats with a decimal point, e.g. 1.0)"
        )
        rclpy.try_shutdown()
        return 2
    except InvalidParameterValueException as exc:
        rclpy.logging.get_logger("damcseg").fatal(f"bad parameter value: {exc}")
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: configure failed (see the error above); exiting")
                return 1
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: activate failed; exiting")
                return 1
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_processing()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
