"""``/diagnostics`` statuses built by hand (``diagnostic_updater`` is not installable from PyPI).

One status per input, named ``"damcseg: <modality> input"``:

* OK    - the sensor delivers into its groups,
* WARN  - it is ``late`` (several frames in a row went without it) or the model completed it,
* ERROR - it is ``missing`` (silent for longer than ``sync.missing_after``),

with values ``state``, ``rate_hz``, ``age_s``, ``received``, ``dropped``, ``invalid``,
``completed_by_model`` and one counter per fault (``invalid_<kind>`` for rejected messages,
``zero_stamp`` / ``future_stamp`` / ``duplicate`` / ``out_of_order`` / ``too_late`` for dropped
stamps, ``nan_frames`` / ``inf_frames`` / ``negative_frames`` / ``no_valid_frames`` for depth
values, ``blank_frames`` for frames whose pixels all hold one value, ``resolution_changes``). Plus one ``"damcseg: pipeline"`` status with processing time,
end-to-end latency (clock now - frame stamp), groups / frames / drops (``frames + errors +
dropped == groups`` once the worker is idle), invalid inputs, synchroniser resets, groups whose
sensors name different frame_ids, the mean number of published boxes per frame since the
previous ``/diagnostics`` message (``boxes_per_frame``), model and device.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from damcseg_ros.sync import MODALITIES, SensorState

__all__ = [
    "PipelineStats",
    "RateMeter",
    "diagnostic_array",
    "input_statuses",
    "pipeline_status",
    "sensor_status",
]

HARDWARE_ID = "damcseg"
_LEVEL_FOR_STATE = {SensorState.OK: DiagnosticStatus.OK, SensorState.LATE: DiagnosticStatus.WARN}


class RateMeter:
    """Message rate over a sliding window of arrival times (seconds)."""

    def __init__(self, window: float = 2.0, max_samples: int = 200) -> None:
        self.window = window
        self._times: collections.deque[float] = collections.deque(maxlen=max_samples)

    def tick(self, now: float) -> None:
        """Record one arrival at ``now``."""
        self._times.append(now)

    def rate(self, now: float) -> float:
        """Arrivals per second over the last ``window`` seconds (0 with fewer than two)."""
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


@dataclasses.dataclass
class PipelineStats:
    """Numbers the worker thread updates for the pipeline status (the caller holds a lock)."""

    groups: int = 0  # groups the synchroniser emitted (each is processed, dropped or failed)
    frames: int = 0  # groups processed
    processing_ms: float = 0.0  # conversion + inference + publishing of the last frame
    inference_ms: float = 0.0  # model forward of the last frame
    latency_ms: float = 0.0  # clock now - stamp, when the last frame's outputs were published
    dropped: int = 0  # groups replaced in the mailbox before the worker took them
    invalid: int = 0  # messages rejected by the conversions
    errors: int = 0  # frames whose prediction raised
    resets: int = 0  # synchroniser resets (stamps or clock jumped back)
    frame_id_mismatch: int = 0  # groups whose sensors name different frame_ids (accepted)
    last_error: str = ""
    window_frames: int = 0  # frames processed since the last /diagnostics message
    window_boxes: int = 0  # boxes published in those frames

    completed: tuple[str, ...] = ()  # modalities the model completed in the last frame

    def add_group(self, frame_id_mismatch: bool, replaced: bool) -> None:
        """A group left the synchroniser (``replaced``: it pushed an older one out of the mailbox)."""
        self.groups += 1
        self.frame_id_mismatch += int(frame_id_mismatch)
        self.dropped += int(replaced)

    def add_frame(self, processing_ms: float, result: Any, latency_ms: float, boxes: int) -> None:
        """A frame processed and published (``boxes`` published)."""
        self.frames += 1
        self.window_frames += 1
        self.window_boxes += boxes
        self.processing_ms, self.inference_ms = processing_ms, float(result.inference_ms)
        self.latency_ms, self.last_error = latency_ms, ""
        self.completed = tuple(result.completed)

    def add_error(self, exc: BaseException) -> None:
        """A frame whose processing raised."""
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"

    def take(self) -> PipelineStats:
        """A copy for one ``/diagnostics`` message; the window (boxes per frame) starts again."""
        snapshot = dataclasses.replace(self)
        self.window_frames = self.window_boxes = 0
        return snapshot

    @property
    def boxes_per_frame(self) -> float:
        """Mean published boxes per frame over the diagnostics window (0 without frames)."""
        return self.window_boxes / self.window_frames if self.window_frames else 0.0


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, float):
        value = f"{value:.3f}"
    return KeyValue(key=key, value=str(value))


def sensor_status(
    modality: str,
    state: SensorState,
    rate_hz: float,
    age_s: float,
    received: int,
    dropped: int,
    invalid: int,
    completed_by_model: bool,
    enabled: bool = True,
    faults: dict[str, int] | None = None,
) -> DiagnosticStatus:
    """Status of one input (level rules in the module docstring).

    Args:
        faults: per-fault counters (name -> count) appended as values after the fixed ones.
    """
    status = DiagnosticStatus(name=f"damcseg: {modality} input", hardware_id=HARDWARE_ID)
    if not enabled:
        status.level = DiagnosticStatus.OK
        status.message = "disabled by parameter"
    else:
        status.level = _LEVEL_FOR_STATE.get(state, DiagnosticStatus.ERROR)
        if state is SensorState.MISSING:
            status.message = f"missing: no data for {age_s:.1f} s; outputs continue without {modality}"
        elif state is SensorState.LATE:
            status.message = "late: frames emitted without it after its deadline"
        elif completed_by_model:
            status.level = DiagnosticStatus.WARN
            status.message = "absent in the last frame; completed by the model"
        else:
            status.message = "ok"
    status.values = [
        _kv("state", state.value if enabled else "disabled"),
        _kv("rate_hz", float(rate_hz)),
        _kv("age_s", float(age_s)),
        _kv("received", received),
        _kv("dropped", dropped),
        _kv("invalid", invalid),
        _kv("completed_by_model", str(bool(completed_by_model)).lower()),
        *(_kv(name, count) for name, count in (faults or {}).items()),
    ]
    return status


def input_statuses(
    sync: Any, enabled: tuple[str, ...], rates: dict[str, RateMeter], health: Any,
    completed: tuple[str, ...], now: float,
) -> list[DiagnosticStatus]:  # fmt: skip
    """One :func:`sensor_status` per modality from the synchroniser (None before activation), the
    rate meters and the ``InputHealth`` counters; ``now`` is the rate meters' clock."""
    statuses = []
    for m in MODALITIES:
        on = m in enabled and sync is not None
        counters = sync.counters[m] if on else None
        statuses.append(
            sensor_status(
                m, sync.states[m] if on else SensorState.MISSING, rates[m].rate(now),
                sync.age(m) if on else 0.0, counters.received if on else 0, counters.dropped if on else 0,
                health.invalid(m), completed_by_model=on and m in completed, enabled=m in enabled,
                faults=health.fault_counts(m, counters),
            )
        )  # fmt: skip
    return statuses


def pipeline_status(stats: PipelineStats, model: str, device: str, active: bool) -> DiagnosticStatus:
    """Status of the processing pipeline (ERROR when the last frame failed, WARN when idle)."""
    status = DiagnosticStatus(name="damcseg: pipeline", hardware_id=HARDWARE_ID)
    if not active:
        status.level, status.message = DiagnosticStatus.WARN, "inactive (lifecycle not active)"
    elif stats.last_error:
        status.level, status.message = DiagnosticStatus.ERROR, f"prediction failed: {stats.last_error}"
    elif stats.frames == 0:
        status.level, status.message = DiagnosticStatus.WARN, "waiting for input"
    else:
        status.level, status.message = DiagnosticStatus.OK, "ok"
    status.values = [
        _kv("processing_ms", stats.processing_ms),
        _kv("inference_ms", stats.inference_ms),
        _kv("latency_ms", stats.latency_ms),
        _kv("groups", stats.groups),
        _kv("frames", stats.frames),
        _kv("dropped", stats.dropped),
        _kv("invalid", stats.invalid),
        _kv("errors", stats.errors),
        _kv("resets", stats.resets),
        _kv("frame_id_mismatch", stats.frame_id_mismatch),
        _kv("boxes_per_frame", stats.boxes_per_frame),
        _kv("model", model),
        _kv("device", device),
    ]
    return status


def node_report(
    stats: PipelineStats, sync: Any, enabled: tuple[str, ...], rates: dict[str, RateMeter], health: Any,
    model: str, device: str, active: bool, now: float, stamp: object,
) -> DiagnosticArray:  # fmt: skip
    """The node's whole ``/diagnostics`` message: one status per sensor, then the pipeline's.

    ``stats`` is the period's :class:`PipelineStats` (its ``resets`` and ``invalid`` are filled
    in here from the synchroniser and the ``InputHealth`` counters); ``now`` is the rate meters'
    clock, ``stamp`` the message stamp.
    """
    stats.resets = sync.resets if sync is not None else 0
    stats.invalid = health.total_invalid()
    statuses = input_statuses(sync, enabled, rates, health, stats.completed, now)
    statuses.append(pipeline_status(stats, model, device, active))
    return diagnostic_array(statuses, stamp)


def diagnostic_array(statuses: list[DiagnosticStatus], stamp: object) -> DiagnosticArray:
    """Wrap statuses into the ``/diagnostics`` message."""
    msg = DiagnosticArray()
    msg.header.stamp = stamp
    msg.status = statuses
    return msg
