"""Input health: every bad input counted once per sensor, and explained without flooding the log.

ROS-free (plain pytest, ``test/unit/test_input_health.py``): the node reports what it sees and
this class keeps the counters that ``/diagnostics`` shows and decides what to log:

* rejected messages (``invalid_<kind>``, one counter per :data:`conversions.INVALID_KINDS` kind;
  a sensor's ``invalid`` is their sum, the pipeline's ``invalid`` the sum over sensors),
* stamps the synchroniser dropped (counted by the synchroniser, explained here),
* depth values without a range (``nan_frames``, ``inf_frames``, ``negative_frames``,
  ``no_valid_frames``: the frame is still processed),
* blank frames (``blank_frames``: every pixel one value, e.g. a dead camera's black frames; the
  node completes that sensor or keeps the frame, parameter ``blank_frames``),
* resolution changes, synchroniser resets, sensor state changes, frame_id mismatches.

A reason is logged at most once per ``LOG_PERIOD_S`` per (sensor, kind of fault): each key has
its own clock, so two faults never hide each other behind one throttle.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from damcseg_ros.conversions import INVALID_KINDS, depth_value_faults
from damcseg_ros.sync import MODALITIES, SensorState

__all__ = ["DEPTH_VALUE_KINDS", "FAULT_COUNTERS", "LOG_PERIOD_S", "SYNC_DROP_COUNTERS", "InputHealth"]

LOG_PERIOD_S = 10.0
"""A fault's reason is logged at most once per this many seconds per (sensor, kind of fault)."""
FRAME_ID_LOG_PERIOD_S = 3600.0
"""Different frame_ids across sensors are accepted; saying so once is enough."""
_DEPTH_VALUE_TEXT = {
    "nan": ("NaN (no return, REP 118)", 60.0, "info"),
    "inf": ("+-inf (out of range, REP 117)", 60.0, "info"),
    "negative": ("negative (a driver bug)", LOG_PERIOD_S, "warning"),
}
DEPTH_VALUE_KINDS = tuple(_DEPTH_VALUE_TEXT)
SYNC_DROP_COUNTERS = ("zero_stamp", "future_stamp", "duplicate", "out_of_order", "too_late")
FAULT_COUNTERS = (
    *(f"invalid_{kind}" for kind in INVALID_KINDS),
    *SYNC_DROP_COUNTERS,
    *(f"{kind}_frames" for kind in DEPTH_VALUE_KINDS),
    "no_valid_frames",
    "blank_frames",
    "resolution_changes",
)
"""Per-sensor fault counters on ``/diagnostics``, in the order they are listed there."""


class InputHealth:
    """Fault counters per sensor plus rate-limited explanations.

    Args:
        logger: gets every line worth logging through its ``info`` / ``warning`` / ``error``
            (an rclpy logger, or any object with those methods).
        clock: monotonic seconds (injected for tests).
    """

    def __init__(self, logger: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger, self._clock = logger, clock
        self._last_logged: dict[str, float] = {}
        self._said: set[str] = set()  # one-time warnings
        self._camera_info: dict[str, Any] = {}  # modality -> latest camera_info message
        self.reset()

    def reset(self) -> None:
        """Zero every counter (a new activation); the log throttles keep their clocks."""
        self.faults = {m: dict.fromkeys(FAULT_COUNTERS, 0) for m in MODALITIES}
        self._sizes: dict[str, tuple[int, int]] = {}

    # ------------------------------------------------------------------ logging
    def _log(self, level: str, text: str) -> None:
        # One call site per severity: rclpy refuses a call site whose severity changes.
        if level == "info":
            self._logger.info(text)
        elif level == "error":
            self._logger.error(text)
        else:
            self._logger.warning(text)

    def log_limited(self, key: str, level: str, text: str, period: float = LOG_PERIOD_S) -> bool:
        """Log ``text`` unless ``key`` was logged less than ``period`` s ago; True when logged."""
        now = self._clock()
        last = self._last_logged.get(key)
        if last is not None and now - last < period:
            return False
        self._last_logged[key] = now
        self._log(level, text)
        return True

    def once(self, key: str, text: str) -> None:
        """Warn ``text`` the first time ``key`` is seen (for settings that stay wrong)."""
        if key not in self._said:
            self._said.add(key)
            self._log("warning", text)

    # ------------------------------------------------------------------ per message
    def rejected(self, modality: str, kind: str, reason: str) -> None:
        """A message ``check_image`` refused (``kind`` from ``ImageConversionError.kind``)."""
        counter = f"invalid_{kind}"
        if counter in self.faults[modality]:
            self.faults[modality][counter] += 1
        self.log_limited(f"{modality}-{counter}", "warning", f"dropping {modality} image: {reason}")

    def invalid(self, modality: str) -> int:
        """Messages of ``modality`` rejected so far (all kinds)."""
        return sum(self.faults[modality][f"invalid_{k}"] for k in INVALID_KINDS)

    def total_invalid(self) -> int:
        """Messages rejected so far, all sensors."""
        return sum(self.invalid(m) for m in MODALITIES)

    def size(self, modality: str, width: int, height: int) -> None:
        """The size of an accepted message; a change is counted and explained."""
        previous = self._sizes.get(modality)
        self._sizes[modality] = (width, height)
        if previous is not None and previous != (width, height):
            self.faults[modality]["resolution_changes"] += 1
            self.log_limited(
                f"{modality}-resolution",
                "info",
                f"{modality} resolution changed from {previous[0]}x{previous[1]} to {width}x{height}; "
                "processing continues at the new size (outputs follow the rgb size)",
            )

    def keep_camera_info(self, modality: str, msg: Any) -> None:
        """Remember a sensor's latest ``camera_info`` (the ``{modality}/camera_info`` callback)."""
        self._camera_info[modality] = msg

    def accepted(self, modality: str, msg: Any, info: Any = None) -> None:
        """An image ``msg`` that passed the checks, with its sensor's ``camera_info`` (default: the
        last one kept, or None): :meth:`size` and :meth:`camera_info` from ``width``/``height``."""
        info = self._camera_info.get(modality) if info is None else info
        size = (int(msg.width), int(msg.height))
        self.size(modality, *size)
        self.camera_info(modality, info and (int(info.width), int(info.height)), size)

    def camera_info(
        self, modality: str, info_size: tuple[int, int] | None, image_size: tuple[int, int]
    ) -> None:
        """A ``camera_info`` whose size differs from the image's is a remapping mistake: say so once."""
        if info_size is not None and tuple(info_size) != tuple(image_size):
            self.once(
                f"caminfo-{modality}",
                f"{modality}/camera_info is {info_size[0]}x{info_size[1]} but {modality}/image is "
                f"{image_size[0]}x{image_size[1]}; check the remapping",
            )

    def dropped(self, modality: str, kind: str, stamp_ns: int, now_ns: int, max_future: float) -> None:
        """Explain why the synchroniser dropped a message (it counts the drop itself)."""
        if kind == "zero_stamp":
            why = (
                f"header stamp is zero or negative ({stamp_ns / 1e9:.3f} s); the driver must stamp its frames"
            )
        elif kind == "future_stamp":
            why = (
                f"stamp is {(stamp_ns - now_ns) / 1e9:.3f} s ahead of the node clock (sync.max_future = "
                f"{max_future} s); check the sensor's time sync, or use_sim_time for a bag"
            )
        elif kind == "duplicate":
            why = f"same stamp as the previous {modality} message (duplicate, {stamp_ns / 1e9:.3f} s)"
        elif kind == "out_of_order":
            why = f"stamp {stamp_ns / 1e9:.3f} s is older than the previous {modality} message (out of order)"
        else:
            # too_late: a slow sensor whose group already left; normal with short deadlines and
            # visible as the sensor's 'late' state, so counted without a log line.
            return
        self.log_limited(f"{modality}-{kind}", "warning", f"dropping {modality} image: {why}")

    def depth_frame(self, msg: Any, depth: Any, max_pixels: int) -> None:
        """Check a depth message and its converted ``HxW`` metres (see :meth:`depth_values`)."""
        self.depth_values(depth_value_faults(msg, max_pixels), int(depth.size), bool(depth.any()))

    def depth_values(self, counts: dict[str, int], pixels: int, any_valid: bool) -> None:
        """Depth pixels without a range (``conversions.depth_value_faults``); the frame is kept."""
        faults = self.faults["depth"]
        for kind, count in counts.items():
            if count:
                faults[f"{kind}_frames"] += 1
                text, period, level = _DEPTH_VALUE_TEXT[kind]
                self.log_limited(
                    f"depth-{kind}",
                    level,
                    f"depth image has {count} of {pixels} pixels {text}; treated as invalid (0)",
                    period=period,
                )
        if not any_valid:
            faults["no_valid_frames"] += 1
            self.log_limited(
                "depth-no_valid",
                "warning",
                "depth image has no valid pixel (all 0, NaN, inf or negative); check the depth camera",
            )

    def blank_frame(self, modality: str, value: tuple[float, ...], completed: bool) -> None:
        """A frame of ``modality`` whose every pixel is ``value`` (``conversions.blank_value``).

        ``completed``: the node dropped it for this frame (parameter ``blank_frames: complete``);
        otherwise it is fed to the model as it is (``keep``, or every sensor of the frame blank).
        """
        self.faults[modality]["blank_frames"] += 1
        shown = f"{value[0]:g}" if len(value) == 1 else "(" + ", ".join(f"{v:g}" for v in value) + ")"
        if completed:
            action = "treated as a dropped sensor and completed by the model (blank_frames: complete)"
        else:
            action = "processed as it is (blank_frames: keep, or no other sensor to complete it from)"
        self.log_limited(
            f"{modality}-blank",
            "warning",
            f"{modality} image is blank (every pixel {shown}): {action}; check the {modality} camera",
        )

    # ------------------------------------------------------------------ per group
    def sync_result(self, reset: bool, events: Iterable[Any]) -> None:
        """Explain a synchroniser reset and sensor state changes (``SyncResult``)."""
        if reset:
            self.log_limited(
                "reset",
                "warning",
                "clock or stamps jumped back by more than sync.missing_after (bag loop, sensor or "
                "sim-time restart): synchroniser reset (pending frames discarded)",
            )
        for ev in events:
            if ev.new is SensorState.MISSING:
                # At most once per missing_after per sensor: always worth a line.
                self._log("error", f"{ev}; continuing without it")
                continue
            # ok <-> late can flap on every few frames when a starved executor loses messages
            # (seen in the 60 Hz soak: ~13 lines/s); /diagnostics shows the current state anyway.
            self.log_limited(
                f"{ev.modality}-{ev.old.value}-{ev.new.value}",
                "warning" if ev.new is SensorState.LATE else "info",
                str(ev)
                if ev.old is SensorState.MISSING
                else f"{ev} (repeats within {LOG_PERIOD_S:g} s not logged)",
            )

    def frame_ids(self, frame_ids: dict[str, str], reference: str) -> bool:
        """Whether the sensors of one group name different frame_ids (accepted, explained once)."""
        if len(set(frame_ids.values())) <= 1:
            return False
        self.log_limited(
            "frame_id",
            "warning",
            "sensors of one frame name different frame_ids ("
            + ", ".join(f"{m}: '{f}'" for m, f in frame_ids.items())
            + f"); accepted: depth and thermal are assumed registered to the RGB camera and "
            f"outputs carry the {reference} header (counted as frame_id_mismatch)",
            period=FRAME_ID_LOG_PERIOD_S,
        )
        return True

    def mailbox_drop(self, dropped: int, groups: int) -> None:
        """A frame replaced in the mailbox before the worker took it (inference slower than input)."""
        self.log_limited(
            "mailbox-drop",
            "info",
            f"inference is slower than the input: older frames are dropped, the newest one "
            f"wins ({dropped} of {groups} frames dropped so far)",
            period=3 * LOG_PERIOD_S,
        )

    # ------------------------------------------------------------------ diagnostics
    def fault_counts(self, modality: str, sync_counters: Any = None) -> dict[str, int]:
        """The counters of ``modality`` in :data:`FAULT_COUNTERS` order; the stamp drops come from
        the synchroniser's counters (0 without one)."""
        counts = dict(self.faults[modality])
        for name in SYNC_DROP_COUNTERS:
            counts[name] = int(getattr(sync_counters, name)) if sync_counters is not None else 0
        return counts
