"""Dropout-tolerant time synchroniser for the rgb / depth / thermal inputs (no rclpy, unit-testable).

Why not ``message_filters.ApproximateTimeSynchronizer``: it only emits a set when *every* input
delivered, so one dead sensor stalls the whole pipeline forever with no callback
(ros2/message_filters#63). Like Autoware's timeout-based fusion collector, this one

* groups messages whose header stamps lie within ``slop`` of the group's first message,
* emits a group as soon as every sensor it still expects has delivered, or when the deadline
  of each still-missing sensor (counted from the arrival of the group's first message) has
  passed, with whatever arrived: any non-empty subset, RGB missing included,
* keeps a state per sensor, ``ok`` / ``late`` / ``missing``, and returns *transition events*
  (once per change, never per frame) for the node to log,
* stops waiting for a sensor that is ``missing`` (no data for ``missing_after``), so the others
  run at full rate, and takes it back immediately: its next message joins the next group.

Stamps that cannot be grouped are dropped and counted, never raised: zero stamps, stamps further
in the future than ``max_future``, duplicates and out-of-order stamps of one sensor, and stamps
of groups already emitted. A clock that jumps backwards (bag restarted in a loop, sim time
reset) resets all pending groups and per-sensor stamp history.

Times are integer nanoseconds. ``clock`` is injected: the node passes its ROS clock (which
follows ``/clock`` under ``use_sim_time``), tests pass a fake one.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import threading
from collections.abc import Callable
from typing import Any

from damcseg_core import MODALITIES  # fixed keys; their order picks the header of a group's outputs

__all__ = [
    "MODALITIES",
    "Group",
    "LatestMailbox",
    "SensorState",
    "SyncConfig",
    "SyncResult",
    "Synchronizer",
    "TransitionEvent",
]


NS = 1_000_000_000
CLOCK_JUMP_TOLERANCE_NS = 100_000_000
"""A clock reading this much earlier than the previous one counts as a jump back (reset);
smaller steps back (NTP slewing, thread interleaving) are tolerated."""
LATE_AFTER_MISSES = 3
"""Consecutive groups emitted without a sensor before it counts as ``late``. A sensor slower than
the others (a 9 Hz thermal camera beside 30 Hz RGB) misses every other group by design; one
miss must not flip its state (and the log) on every frame."""
MAX_PENDING_GROUPS = 8
"""Open groups kept at once; beyond this the oldest is emitted early (bounded memory)."""


class SensorState(str, enum.Enum):
    """Health of one input, as shown on ``/diagnostics``."""

    OK = "ok"  # delivered into the most recent group(s)
    LATE = "late"  # LATE_AFTER_MISSES groups in a row went without it, but it sent data recently
    MISSING = "missing"  # no data for longer than missing_after; groups no longer wait for it


@dataclasses.dataclass(frozen=True)
class SyncConfig:
    """Synchroniser settings (seconds; the node fills them from its parameters)."""

    modalities: tuple[str, ...] = MODALITIES  # enabled inputs (others are never waited for)
    slop: float = 0.02  # max stamp difference within a group
    deadlines: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"rgb": 0.05, "depth": 0.05, "thermal": 0.05}
    )  # wait at most this long for each modality after a group's first message arrived
    missing_after: float = 1.0  # no data for this long -> state missing
    max_future: float = 1.0  # stamps further ahead of the clock are dropped

    def __post_init__(self) -> None:
        if not self.modalities or any(m not in MODALITIES for m in self.modalities):
            raise ValueError(
                f"modalities must be a non-empty subset of {list(MODALITIES)}, got {self.modalities}"
            )
        for name in ("slop", "missing_after", "max_future"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)}")
        for m in self.modalities:
            if m not in self.deadlines:
                raise ValueError(f"no deadline given for enabled modality '{m}'")
            if self.deadlines[m] < 0:
                raise ValueError(f"deadline of '{m}' must be >= 0 seconds, got {self.deadlines[m]}")

    @property
    def poll_period(self) -> float:
        """How often to call :meth:`Synchronizer.poll`: a deadline is overshot by at most ~half of
        the shortest enabled one (5-50 ms)."""
        return min(max(min(self.deadlines[m] for m in self.modalities) / 2, 0.005), 0.05)


@dataclasses.dataclass
class Group:
    """A set of messages that belong to one instant.

    Attributes:
        anchor_ns: stamp of the group's first message (grouping reference).
        opened_ns: clock time at which that first message arrived (deadlines count from here).
        items: modality -> payload (the message), only for sensors that delivered.
        stamps: modality -> stamp in nanoseconds.
        expected: modalities the group waited for (enabled and not missing when emitted).
    """

    anchor_ns: int
    opened_ns: int
    items: dict[str, Any] = dataclasses.field(default_factory=dict)
    stamps: dict[str, int] = dataclasses.field(default_factory=dict)
    expected: tuple[str, ...] = ()

    @property
    def present(self) -> tuple[str, ...]:
        """Modalities in the group, in the fixed order."""
        return tuple(m for m in MODALITIES if m in self.items)

    @property
    def frame_ids(self) -> dict[str, str]:
        """Modality -> ``header.frame_id`` of its message (ROS messages as payloads)."""
        return {m: self.items[m].header.frame_id for m in self.present}

    @property
    def reference(self) -> str:
        """The modality whose header the outputs carry: first present of rgb, depth, thermal."""
        return self.present[0]

    @property
    def absent(self) -> tuple[str, ...]:
        """Expected modalities that did not deliver in time."""
        return tuple(m for m in self.expected if m not in self.items)


@dataclasses.dataclass(frozen=True)
class TransitionEvent:
    """A sensor changed state (the node logs each one once)."""

    modality: str
    old: SensorState
    new: SensorState
    time_ns: int
    reason: str

    def __str__(self) -> str:
        return f"{self.modality} input: {self.old.value} -> {self.new.value} ({self.reason})"


@dataclasses.dataclass
class SyncResult:
    """What one call to :meth:`Synchronizer.add` or :meth:`Synchronizer.poll` produced."""

    groups: list[Group] = dataclasses.field(default_factory=list)
    events: list[TransitionEvent] = dataclasses.field(default_factory=list)
    reset: bool = False  # the clock jumped back; pending groups were discarded
    dropped: str = ""  # the offered message was dropped: its SensorCounters field (e.g. "duplicate")

    def extend(self, other: SyncResult) -> None:
        self.groups.extend(other.groups)
        self.events.extend(other.events)
        self.reset = self.reset or other.reset
        self.dropped = self.dropped or other.dropped


@dataclasses.dataclass
class SensorCounters:
    """Per-modality counters shown on ``/diagnostics``."""

    received: int = 0  # messages accepted into a group
    zero_stamp: int = 0
    future_stamp: int = 0
    duplicate: int = 0
    out_of_order: int = 0
    too_late: int = 0  # arrived after its group had been emitted

    @property
    def dropped(self) -> int:
        return self.zero_stamp + self.future_stamp + self.duplicate + self.out_of_order + self.too_late


class Synchronizer:
    """Groups rgb / depth / thermal messages by stamp with per-sensor deadlines (module docstring).

    Not thread-safe: call ``add`` and ``poll`` from one thread (the node's executor).

    Args:
        config: settings.
        clock: returns the current time in nanoseconds (ROS clock in the node, fake in tests).
    """

    def __init__(self, config: SyncConfig, clock: Callable[[], int]) -> None:
        self.config = config
        self._clock = clock
        now = clock()
        self._last_now = now
        self._slop = round(config.slop * NS)
        self._deadline = {m: round(config.deadlines[m] * NS) for m in config.modalities}
        self._missing_after = round(config.missing_after * NS)
        self._max_future = round(config.max_future * NS)
        self._pending: list[Group] = []
        self._last_stamp: dict[str, int] = {}
        self._emitted_up_to: int | None = None  # anchor of the newest emitted group
        # (anchor, present) of recently emitted groups: a message within slop of one that lacks its
        # sensor belonged there (too late); if they all have it, it starts the next frame.
        self._recent: collections.deque[tuple[int, tuple[str, ...]]] = collections.deque(
            maxlen=MAX_PENDING_GROUPS
        )
        # Every sensor starts "ok" with a grace period of missing_after from start-up, so a sensor
        # that never publishes goes "missing" (and is logged) once, like one that dies later.
        self._last_arrival = {m: now for m in config.modalities}
        self.states = {m: SensorState.OK for m in config.modalities}
        self.counters = {m: SensorCounters() for m in config.modalities}
        self._misses = dict.fromkeys(config.modalities, 0)  # consecutive groups emitted without it
        self.resets = 0

    # ------------------------------------------------------------------ public API
    def received(self) -> dict[str, int]:
        """Modality -> messages accepted into a group so far."""
        return {m: c.received for m, c in self.counters.items()}

    def add(self, modality: str, stamp_ns: int, payload: Any) -> SyncResult:
        """Offer one message; returns the groups (and state changes) it completes.

        Raises:
            ValueError: ``modality`` is not enabled (a wiring bug in the caller, not bad data).
        """
        if modality not in self.config.modalities:
            raise ValueError(f"modality '{modality}' is not enabled; enabled: {list(self.config.modalities)}")
        result = self._tick()
        now = self._last_now
        counters = self.counters[modality]
        if stamp_ns <= 0:
            counters.zero_stamp += 1
            result.dropped = "zero_stamp"
            return result
        if now > 0 and stamp_ns > now + self._max_future:
            counters.future_stamp += 1
            result.dropped = "future_stamp"
            return result
        last = self._last_stamp.get(modality)
        if last is not None and stamp_ns == last:
            counters.duplicate += 1
            result.dropped = "duplicate"
            return result
        jumped = last is not None and stamp_ns < last - self._missing_after
        if self._emitted_up_to is not None and stamp_ns < self._emitted_up_to - self._missing_after:
            jumped = True
        if jumped:
            # The sender's time base went back (bag restarted, sensor rebooted): waiting for stamps
            # to catch up would stall this sensor for good, so start over from this stamp.
            self._reset(now)
            result.reset = True
            last = None
        if last is not None and stamp_ns < last:
            counters.out_of_order += 1
            result.dropped = "out_of_order"
            return result
        self._last_stamp[modality] = stamp_ns
        self._last_arrival[modality] = now  # alive, even if too late to be used
        group = self._find_group(modality, stamp_ns)
        if group is None and self._is_too_late(modality, stamp_ns):
            # Belongs to a group that was already emitted without it: the sensor is late. A sensor
            # marked missing is expected again from now on, so its next message is waited for.
            counters.too_late += 1
            result.dropped = "too_late"
            if self.states[modality] is SensorState.MISSING:
                result.events.extend(
                    self._set_state(modality, SensorState.LATE, now, "data resumed, arriving late")
                )
            return result
        # Accepted: the sensor delivers in time, whatever state it was in (immediate recovery).
        counters.received += 1
        result.events.extend(self._set_state(modality, SensorState.OK, now, "data received"))
        if group is None:
            group = Group(anchor_ns=stamp_ns, opened_ns=now)
            self._pending.append(group)
            self._pending.sort(key=lambda g: g.anchor_ns)
        group.items[modality] = payload
        group.stamps[modality] = stamp_ns
        result.extend(self._flush(now))
        return result

    def poll(self) -> SyncResult:
        """Emit groups whose deadlines passed and update sensor states; call periodically (~deadline/2)."""
        result = self._tick()
        result.extend(self._flush(self._last_now))
        return result

    @property
    def pending(self) -> int:
        """Number of open groups."""
        return len(self._pending)

    def age(self, modality: str) -> float:
        """Seconds since ``modality`` last delivered (since start-up if it never did)."""
        return max(0, self._clock() - self._last_arrival[modality]) / NS

    # ------------------------------------------------------------------ internals
    def _tick(self) -> SyncResult:
        """Read the clock, handle jumps back, and move silent sensors to ``missing``."""
        result = SyncResult()
        now = self._clock()
        if now < self._last_now - CLOCK_JUMP_TOLERANCE_NS:
            # Bag loop or sim-time reset: old stamps and arrival times mean nothing any more.
            self._reset(now)
            self._last_arrival = dict.fromkeys(self.config.modalities, now)
            result.reset = True
        if self._last_now <= 0 < now:
            # A sim-time clock reads 0 until /clock arrives: start the grace period from then,
            # not from 0 (which would call every sensor missing since 1970).
            self._last_arrival = dict.fromkeys(self.config.modalities, now)
        self._last_now = now
        for m in self.config.modalities:
            if (
                self.states[m] is not SensorState.MISSING
                and now - self._last_arrival[m] > self._missing_after
            ):
                reason = f"no data for {(now - self._last_arrival[m]) / NS:.2f} s"
                result.events.extend(self._set_state(m, SensorState.MISSING, now, reason))
        return result

    def _is_too_late(self, modality: str, stamp_ns: int) -> bool:
        """Whether a message that fits no open group belongs to a frame already emitted.

        Stamps up to the newest emitted frame are stale. A newer stamp within ``slop`` of an
        emitted group is too late only when that group went without this sensor; when every such
        group already holds it, the message is the sensor's *next* frame (cameras faster than
        ``1 / slop``, e.g. 60 Hz with 20 ms) and opens a new group.
        """
        if self._emitted_up_to is None or stamp_ns > self._emitted_up_to + self._slop:
            return False
        if stamp_ns <= self._emitted_up_to:
            return True
        return any(
            abs(stamp_ns - anchor) <= self._slop and modality not in present
            for anchor, present in self._recent
        )

    def _reset(self, now: int) -> None:
        """Forget pending groups and stamp history (counted in ``resets``)."""
        self._pending.clear()
        self._recent.clear()
        self._last_stamp.clear()
        self._emitted_up_to = None
        self.resets += 1

    def _set_state(self, modality: str, new: SensorState, now: int, reason: str) -> list[TransitionEvent]:
        old = self.states[modality]
        if old is new:
            return []
        self.states[modality] = new
        return [TransitionEvent(modality, old, new, now, reason)]

    def _find_group(self, modality: str, stamp_ns: int) -> Group | None:
        best, best_diff = None, None
        for g in self._pending:
            if modality in g.items:
                continue
            diff = abs(stamp_ns - g.anchor_ns)
            if diff <= self._slop and (best_diff is None or diff < best_diff):
                best, best_diff = g, diff
        return best

    def _expected(self) -> tuple[str, ...]:
        return tuple(m for m in self.config.modalities if self.states[m] is not SensorState.MISSING)

    def _ready(self, group: Group, now: int, expected: tuple[str, ...]) -> bool:
        waiting = [m for m in expected if m not in group.items]
        return all(now - group.opened_ns >= self._deadline[m] for m in waiting)

    def _flush(self, now: int) -> SyncResult:
        """Emit ready groups, oldest first; a ready group also pushes out every older one."""
        result = SyncResult()
        expected = self._expected()
        newest_ready = -1
        for i, g in enumerate(self._pending):
            if self._ready(g, now, expected):
                newest_ready = i
        overflow = len(self._pending) - MAX_PENDING_GROUPS
        newest_ready = max(newest_ready, overflow - 1)
        if newest_ready < 0:
            return result
        emitted, self._pending = self._pending[: newest_ready + 1], self._pending[newest_ready + 1 :]
        for g in emitted:
            g.expected = expected
            for m in expected:
                if m in g.items:
                    self._misses[m] = 0
                    continue
                self._misses[m] += 1
                if self._misses[m] >= LATE_AFTER_MISSES:
                    reason = f"{self._misses[m]} frames in a row emitted without {m} after its deadline"
                    result.events.extend(self._set_state(m, SensorState.LATE, now, reason))
            self._emitted_up_to = max(self._emitted_up_to or g.anchor_ns, g.anchor_ns)
            self._recent.append((g.anchor_ns, g.present))
            result.groups.append(g)
        return result


class LatestMailbox:
    """A one-slot, newest-wins hand-over between the executor thread and the inference worker.

    ``put`` replaces an item the worker has not taken yet (counted in ``dropped``), so a slow model
    always works on the newest frame and latency never builds up in a queue.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._has_item = False
        self._closed = False
        self.dropped = 0
        self.delivered = 0

    def put(self, item: Any) -> bool:
        """Store ``item``; returns True when it replaced an unprocessed one."""
        with self._cond:
            replaced = self._has_item
            if replaced:
                self.dropped += 1
            self._item, self._has_item = item, True
            self._cond.notify()
            return replaced

    def get(self, timeout: float | None = None) -> Any:
        """The newest item, waiting up to ``timeout`` seconds; None on timeout or after :meth:`close`."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item or self._closed, timeout):
                return None
            if not self._has_item:
                return None
            item, self._item, self._has_item = self._item, None, False
            self.delivered += 1
            return item

    def close(self) -> None:
        """Wake the worker and make every later ``get`` return None at once (shutdown)."""
        with self._cond:
            self._closed = True
            self._item, self._has_item = None, False
            self._cond.notify_all()

    def reopen(self) -> None:
        """Accept items again after :meth:`close` (lifecycle re-activation)."""
        with self._cond:
            self._closed = False
