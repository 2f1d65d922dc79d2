"""The damcseg ROS 2 node: thin glue between topics and :class:`damcseg_core.inference.Predictor`.

parameters (``params.py``) -> QoS (``qos.py``) -> subscriptions -> header checks (``conversions``)
-> synchroniser (``sync.py``) -> newest-wins mailbox -> worker thread: convert, predict -> publish
(``outputs.py``) and ``/diagnostics`` (``diagnostics.py``). The model and back-end policy is
``load_predictor``'s; bad inputs are counted and explained by ``input_health.py``.

Lifecycle: ``configure`` reads the parameters and loads the model, ``activate`` publishes LabelInfo
and starts subscriptions and the worker, ``deactivate`` stops them, ``cleanup`` frees the model.
With ``autostart`` (default) the node walks itself to *active*::

    python -m damcseg_ros.node --ros-args --params-file config/damcseg.yaml -p model:=damcseg_tiny

Outputs carry the header of the RGB image when present, else of depth, else thermal.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from damcseg_ros import compressed, conversions, diagnostics, outputs, params, qos
from damcseg_ros.input_health import InputHealth
from damcseg_ros.sync import MODALITIES, Group, LatestMailbox, Synchronizer, SyncResult

__all__ = ["DamcsegNode", "main"]


class DamcsegNode(LifecycleNode):
    """Lifecycle node running DAMCSeg on synchronised rgb / depth / thermal images."""

    def __init__(self, node_name: str = "damcseg", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        params.declare(self)
        self.p: params.NodeParams | None = None
        self._predictor: Any = None
        self._sync: Synchronizer | None = None
        self._out: outputs.OutputPublishers | None = None
        self._worker: threading.Thread | None = None
        self._qos_check: qos.SilentInputCheck | None = None
        self._diag_pub = self._diag_timer = None
        self._mailbox, self._stop, self._active = LatestMailbox(), threading.Event(), False
        self._stats = diagnostics.PipelineStats()
        self._lock = threading.Lock()  # guards _stats (worker vs executor)
        self._subs: list[Any] = []
        self._image_subs: dict[str, Any] = {}  # modality -> image subscription
        self._proc_timers: list[Any] = []
        self._rates = {m: diagnostics.RateMeter() for m in MODALITIES}
        self._health = InputHealth(self.get_logger())

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.p = params.read(self)
            self._load_model()
        except Exception as exc:  # any load failure must leave the node unconfigured, with the reason
            self.get_logger().error(f"configure failed: {exc}")
            self._predictor = None
            return TransitionCallbackReturn.FAILURE
        self._out = outputs.OutputPublishers(self, self.p, self._predictor)
        # Diagnostics are published in every state, so an inactive node is visible too.
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self.p.diagnostics_period, self._publish_diagnostics)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.p is not None
        self._sync = Synchronizer(self.p.sync, self._now_ns)
        with self._lock:
            self._stats = diagnostics.PipelineStats()
        self._health.reset()
        self._rates = {m: diagnostics.RateMeter() for m in MODALITIES}
        ret = super().on_activate(state)  # activates the lifecycle publishers
        self._out.publish_label_info(Header(stamp=self.get_clock().now().to_msg()))
        sensor_qos = qos.sensor_qos(self.p.qos_reliability, self.p.qos_depth)
        for m in self.p.modalities:
            self._subscribe(m, sensor_qos)
        self._qos_check = self._qos_check or qos.SilentInputCheck(
            self.get_publishers_info_by_topic, self._health.once, self.p.qos_reliability
        )
        self._proc_timers = [
            self.create_timer(self.p.sync.poll_period, lambda: self._handle(self._sync.poll())),
            self.create_timer(
                self.p.qos_check_period, lambda: self._qos_check(self._image_subs, self._sync.received())
            ),
        ]
        self._stop.clear()
        self._mailbox = LatestMailbox()
        self._worker = threading.Thread(target=self._work, name="damcseg-inference", daemon=True)
        self._worker.start()
        self._active = True
        self.get_logger().info(
            f"active: inputs {list(self.p.modalities)}, model {self._predictor.label} on {self.p.device}, "
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
        """The predictor the parameters ask for (policy and checks: ``load_predictor``)."""
        assert self.p is not None
        from damcseg_core.inference import load_predictor, tune_allocator

        p, start = self.p, time.perf_counter()
        if p.tune_allocator:
            applied, message = tune_allocator()
            (self.get_logger().info if applied else self.get_logger().warning)(f"tune_allocator: {message}")
        self._predictor = load_predictor(
            p.backend, checkpoint=p.checkpoint, model=p.model, onnx_path=p.onnx_path, device=p.device,
            modalities=p.modalities, detection=p.detection, min_confidence=p.min_confidence,
            warn=self.get_logger().warning,
        )  # fmt: skip
        providers = getattr(self._predictor.model, "providers", None)
        self.get_logger().info(
            f"loaded {self._predictor.label}" + (f" with providers {providers}" if providers else "")
            + f" on {p.device} in {time.perf_counter() - start:.1f} s"
        )  # fmt: skip

    def _subscribe(self, modality: str, sensor_qos: Any) -> None:
        """Subscribe to one sensor's image (raw or image_transport's compressed topic) and camera_info."""
        transport = self.p.transports[modality]
        if transport == "raw":
            sub = self.create_subscription(
                Image, f"{modality}/image", lambda msg, m=modality: self._on_image(m, msg), sensor_qos
            )
        else:
            sub = self.create_subscription(
                CompressedImage, compressed.transport_topic(f"{modality}/image", transport),
                lambda msg, m=modality, t=transport: self._on_compressed(m, t, msg), sensor_qos,
            )  # fmt: skip
        self._image_subs[modality] = sub
        self._subs.append(sub)
        if self.p.use_camera_info:  # the latest one per sensor, for the size check in _on_image
            keep = lambda msg, m=modality: self._health.keep_camera_info(m, msg)  # noqa: E731
            self._subs.append(
                self.create_subscription(CameraInfo, f"{modality}/camera_info", keep, sensor_qos)
            )

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
        if self._out is not None:
            self._out.destroy()
        if self._diag_pub is not None:  # created together in on_configure
            self.destroy_timer(self._diag_timer)
            self.destroy_publisher(self._diag_pub)
        self._out = self._diag_timer = self._diag_pub = self._predictor = None
        if self.p is not None:
            from damcseg_core.inference import release_memory

            release_memory(self.p.device)

    # ------------------------------------------------------------------ executor callbacks
    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _on_compressed(self, modality: str, transport: str, msg: CompressedImage) -> None:
        """Decode (OpenCV, a few ms for a VGA JPEG) and continue as a raw image with the same header."""
        assert self.p is not None
        try:
            decoded = compressed.decode(msg, modality, transport, self.p.max_pixels)
        except conversions.ImageConversionError as exc:
            self._rates[modality].tick(time.monotonic())
            self._health.rejected(modality, exc.kind, str(exc))
            return
        self._on_image(modality, conversions.array_to_image(decoded.array, decoded.encoding, msg.header))

    def _on_image(self, modality: str, msg: Image) -> None:
        assert self.p is not None and self._sync is not None
        self._rates[modality].tick(time.monotonic())
        try:
            conversions.check_image(msg, modality, self.p.max_pixels)
        except conversions.ImageConversionError as exc:
            self._health.rejected(modality, exc.kind, str(exc))
            return
        self._health.accepted(modality, msg)
        stamp = conversions.stamp_ns(msg.header)
        result = self._sync.add(modality, stamp, msg)
        if result.dropped:
            self._health.dropped(modality, result.dropped, stamp, self._now_ns(), self.p.sync.max_future)
        self._handle(result)

    def _handle(self, result: SyncResult) -> None:
        self._health.sync_result(result.reset, result.events)
        for group in result.groups:
            mismatch = self._health.frame_ids(group.frame_ids, group.reference)
            replaced = self._mailbox.put(group)
            with self._lock:
                self._stats.add_group(mismatch, replaced)
                dropped, groups = self._stats.dropped, self._stats.groups
            if replaced:
                self._health.mailbox_drop(dropped, groups)

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None or self.p is None:
            return
        with self._lock:
            stats = self._stats.take()
        label = self._predictor.label if self._predictor is not None else ""
        self._diag_pub.publish(diagnostics.node_report(
            stats, self._sync, self.p.modalities, self._rates, self._health, label, self.p.device,
            self._active, time.monotonic(), self.get_clock().now().to_msg(),
        ))  # fmt: skip

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
                    self._stats.add_error(exc)
                self.get_logger().error(
                    f"frame failed: {type(exc).__name__}: {exc}", throttle_duration_sec=5.0
                )

    def _process(self, group: Group) -> None:
        assert self.p is not None
        start = time.perf_counter()
        inputs = {m: conversions.to_modality(group.items[m], m, self.p.max_pixels) for m in group.present}
        if "depth" in inputs:  # pixels without a range: counted, the frame is still processed
            self._health.depth_frame(group.items["depth"], inputs["depth"], self.p.max_pixels)
        blank = {m: v for m in inputs if (v := conversions.blank_value(inputs[m])) is not None}
        # A frame without variation says nothing about the scene: complete that sensor instead, as
        # for a dropped one, unless no other sensor is left to complete it from.
        complete = self.p.blank_frames == "complete" and len(blank) < len(inputs)
        for m, value in blank.items():
            self._health.blank_frame(m, value, complete)
            if complete:
                del inputs[m]
        header = group.items[group.reference].header
        result = self._predictor.predict(inputs)
        out = self._out
        if not self._active or out is None:
            return
        boxes = out.publish(result, inputs.get("rgb"), header)
        latency_ms = (self._now_ns() - conversions.stamp_ns(header)) / 1e6
        with self._lock:
            self._stats.add_frame((time.perf_counter() - start) * 1000.0, result, latency_ms, boxes)


def main(argv: list[str] | None = None) -> int:
    """Run the node until shutdown; returns the exit code (1 when autostart configuration failed)."""
    from damcseg_ros.fastdds import ensure_large_image_profile

    ensure_large_image_profile()  # before rclpy.init: Fast DDS reads it at start-up
    rclpy.init(args=sys.argv if argv is None else argv)
    try:
        node = DamcsegNode()
    except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
        rclpy.logging.get_logger("damcseg").fatal(params.startup_error(exc))
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        for step, trigger in (("configure", node.trigger_configure), ("activate", node.trigger_activate)):
            if node.get_parameter("autostart").value and trigger() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal(f"autostart: {step} failed (see the error above); exiting")
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
