"""Synchroniser with a fake clock: grouping, deadlines, sensor states, bad stamps, clock jumps."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from damcseg_ros.sync import LatestMailbox, SensorState, SyncConfig, Synchronizer

MS = 1_000_000
T0 = 1_000_000 * MS  # 1000 s: a plausible non-zero clock


class FakeClock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += round(ms * MS)


def make(slop=0.02, deadline=0.05, missing_after=1.0, modalities=("rgb", "depth", "thermal")):
    clock = FakeClock()
    cfg = SyncConfig(
        modalities=modalities,
        slop=slop,
        deadlines=dict.fromkeys(("rgb", "depth", "thermal"), deadline),
        missing_after=missing_after,
    )
    return Synchronizer(cfg, clock), clock


def feed_frame(sync, clock, stamp, modalities=("rgb", "depth", "thermal"), offsets=None):
    """Deliver one message per modality (stamp + offset ms), 1 ms apart on the clock."""
    groups, events = [], []
    for m in modalities:
        res = sync.add(m, stamp + round((offsets or {}).get(m, 0) * MS), f"{m}@{stamp}")
        groups += res.groups
        events += res.events
        clock.advance(1)
    return groups, events


def test_exact_stamps_emit_one_complete_group_at_once():
    sync, clock = make()
    groups, events = feed_frame(sync, clock, T0)
    assert len(groups) == 1
    g = groups[0]
    assert g.present == ("rgb", "depth", "thermal")
    assert g.items == {"rgb": f"rgb@{T0}", "depth": f"depth@{T0}", "thermal": f"thermal@{T0}"}
    assert g.absent == ()
    assert g.reference == "rgb"
    assert events == []
    assert sync.pending == 0


@pytest.mark.parametrize(
    ("offsets_ms", "slop", "groups_expected"),
    [
        ({"depth": 5, "thermal": -19}, 0.02, 1),  # all within 20 ms of the first
        ({"depth": 25}, 0.02, 2),  # depth beyond slop: two groups
        ({"depth": 25}, 0.03, 1),  # wider slop groups it
    ],
)
def test_stamps_within_slop_group_together(offsets_ms, slop, groups_expected):
    sync, clock = make(slop=slop)
    groups, _ = feed_frame(sync, clock, T0, offsets=offsets_ms)
    clock.advance(100)  # let deadlines pass
    groups += sync.poll().groups
    assert len(groups) == groups_expected
    assert sorted(m for g in groups for m in g.present) == ["depth", "rgb", "thermal"]


def test_late_sensor_waits_for_its_deadline_then_group_goes_without_it():
    sync, clock = make(deadline=0.05)
    groups, _ = feed_frame(sync, clock, T0, modalities=("rgb", "depth"))
    assert groups == []  # waiting for thermal
    clock.advance(40)  # 42 ms since the group opened: still within the 50 ms deadline
    assert sync.poll().groups == []
    clock.advance(10)
    res = sync.poll()
    assert [g.present for g in res.groups] == [("rgb", "depth")]
    assert res.groups[0].absent == ("thermal",)
    assert res.events == []  # one miss is not "late" yet (see the slower-sensor test)
    assert sync.states["thermal"] is SensorState.OK


def test_sensor_missing_three_groups_in_a_row_becomes_late_once():
    sync, clock = make(deadline=0.05, missing_after=5.0)
    events = []
    for k in range(6):
        feed_frame(sync, clock, T0 + k * 100 * MS, modalities=("rgb", "depth"))
        clock.advance(98)
        events += sync.poll().events
    assert [(e.modality, e.old, e.new) for e in events] == [("thermal", SensorState.OK, SensorState.LATE)]
    assert "3 frames in a row" in events[0].reason


def test_slower_sensor_does_not_flap_between_ok_and_late():
    # A 10 Hz thermal camera beside 30 Hz RGB/depth: thermal is in every third group only.
    sync, clock = make(deadline=0.01, missing_after=1.0)
    events, groups = [], []
    for k in range(30):
        present = ("rgb", "depth", "thermal") if k % 3 == 0 else ("rgb", "depth")
        g, e = feed_frame(sync, clock, T0 + k * 33 * MS, modalities=present)
        clock.advance(30)
        res = sync.poll()
        events += e + res.events
        groups += g + res.groups
    assert events == []
    assert len(groups) == 30
    assert sum("thermal" in g.present for g in groups) == 10


def test_message_for_an_emitted_group_is_dropped_as_too_late():
    sync, clock = make()
    feed_frame(sync, clock, T0, modalities=("rgb", "depth"))
    clock.advance(60)
    assert len(sync.poll().groups) == 1
    res = sync.add("thermal", T0, "late")
    assert res.groups == [] and sync.pending == 0
    assert sync.counters["thermal"].too_late == 1


def test_missing_sensor_is_logged_once_and_no_longer_waited_for():
    sync, clock = make(missing_after=1.0)
    transitions = []
    emitted = []
    for k in range(30):  # 30 frames at 10 Hz, thermal never sends
        stamp = T0 + k * 100 * MS
        groups, events = feed_frame(sync, clock, stamp, modalities=("rgb", "depth"))
        emitted += groups
        transitions += events
        clock.advance(98)
        res = sync.poll()
        emitted += res.groups
        transitions += res.events
    thermal = [(e.old, e.new) for e in transitions if e.modality == "thermal"]
    assert thermal == [(SensorState.OK, SensorState.LATE), (SensorState.LATE, SensorState.MISSING)]
    assert len(emitted) == 30  # every frame processed, none lost to the dead sensor
    # Once missing, rgb+depth groups are emitted on arrival, without waiting for the deadline.
    groups, _ = feed_frame(sync, clock, T0 + 30 * 100 * MS, modalities=("rgb", "depth"))
    assert [g.present for g in groups] == [("rgb", "depth")]
    assert groups[0].expected == ("rgb", "depth")


def test_returning_sensor_recovers_immediately():
    sync, clock = make(missing_after=0.5)
    for k in range(7):  # rgb and depth keep flowing at 10 Hz, thermal is silent
        feed_frame(sync, clock, T0 + k * 100 * MS, modalities=("rgb", "depth"))
        clock.advance(98)
        sync.poll()
    assert sync.states == {"rgb": SensorState.OK, "depth": SensorState.OK, "thermal": SensorState.MISSING}
    stamp = T0 + 700 * MS
    groups, events = feed_frame(sync, clock, stamp, modalities=("thermal", "rgb", "depth"))
    assert [g.present for g in groups] == [("rgb", "depth", "thermal")]
    assert [(e.modality, e.new) for e in events] == [("thermal", SensorState.OK)]


def test_returning_sensor_that_lags_is_waited_for_again():
    # A sensor marked missing is not waited for, so its first message back may find its group
    # already emitted; it must become "late" (waited for again), not stay ignored forever.
    sync, clock = make(missing_after=0.5)
    clock.advance(600)
    sync.poll()
    assert sync.states["thermal"] is SensorState.MISSING
    stamp = T0 + 600 * MS
    feed_frame(sync, clock, stamp, modalities=("rgb", "depth", "thermal"))  # thermal 2 ms after
    assert sync.states["thermal"] is SensorState.LATE
    groups, _ = feed_frame(sync, clock, stamp + 100 * MS, modalities=("rgb", "depth", "thermal"))
    assert [g.present for g in groups] == [("rgb", "depth", "thermal")]
    assert sync.states["thermal"] is SensorState.OK


@pytest.mark.parametrize(
    ("stamp_ms", "counter"),
    [
        (0, "zero_stamp"),
        (-T0 // MS, "zero_stamp"),
        (T0 // MS + 5_000, "future_stamp"),  # 5 s ahead of the clock (max_future = 1 s)
    ],
)
def test_unusable_stamps_are_dropped_and_counted(stamp_ms, counter):
    sync, _clock = make()
    res = sync.add("rgb", stamp_ms * MS, "x")
    assert res.groups == [] and sync.pending == 0
    assert getattr(sync.counters["rgb"], counter) == 1
    assert sync.counters["rgb"].dropped == 1


@pytest.mark.parametrize(("second_offset_ms", "counter"), [(0, "duplicate"), (-30, "out_of_order")])
def test_duplicate_and_out_of_order_stamps_are_dropped(second_offset_ms, counter):
    sync, clock = make()
    sync.add("rgb", T0, "first")
    clock.advance(1)
    res = sync.add("rgb", T0 + second_offset_ms * MS, "second")
    assert res.groups == []
    assert getattr(sync.counters["rgb"], counter) == 1
    assert sync.counters["rgb"].received == 1


def test_clock_jump_back_resets_and_keeps_working():
    sync, clock = make()
    feed_frame(sync, clock, T0, modalities=("rgb",))
    assert sync.pending == 1
    clock.now = T0 - 500_000 * MS  # bag restarted: time goes back by 500 s
    res = sync.poll()
    assert res.reset and sync.pending == 0 and sync.resets == 1
    groups, _ = feed_frame(sync, clock, clock.now - 10 * MS)  # old stamps are fine again
    assert [g.present for g in groups] == [("rgb", "depth", "thermal")]


def test_small_clock_step_back_is_tolerated():
    sync, clock = make()
    clock.advance(-50)  # below the 100 ms jump tolerance
    assert not sync.poll().reset


def test_stamps_jumping_back_far_reset_instead_of_stalling():
    sync, clock = make(missing_after=1.0)
    feed_frame(sync, clock, T0)
    res = sync.add("rgb", T0 - 10_000 * MS, "rebooted camera")
    assert res.reset
    assert sync.counters["rgb"].received == 2  # accepted, not dropped for ever


@pytest.mark.parametrize("present", [("depth",), ("thermal",), ("depth", "thermal")])
def test_group_without_rgb_takes_first_present_reference(present):
    sync, clock = make()
    feed_frame(sync, clock, T0, modalities=present)
    clock.advance(100)
    groups = sync.poll().groups
    assert len(groups) == 1
    assert groups[0].reference == present[0]


def test_group_names_each_sensors_frame_id_and_counts_what_was_received():
    from types import SimpleNamespace as Msg

    sync, clock = make()
    frames = {m: Msg(header=Msg(frame_id=f"{m}_optical")) for m in ("rgb", "thermal")}
    for m, msg in frames.items():
        sync.add(m, T0, msg)
    clock.advance(100)
    (group,) = sync.poll().groups
    assert group.frame_ids == {"rgb": "rgb_optical", "thermal": "thermal_optical"}
    assert sync.received() == {"rgb": 1, "depth": 0, "thermal": 1}


def test_disabled_modality_is_never_waited_for():
    sync, clock = make(modalities=("rgb", "depth"))
    groups, _ = feed_frame(sync, clock, T0, modalities=("rgb", "depth"))
    assert len(groups) == 1
    with pytest.raises(ValueError, match="'thermal' is not enabled"):
        sync.add("thermal", T0, "x")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"slop": -0.1}, "slop must be >= 0"),
        ({"deadlines": {"rgb": -1.0, "depth": 0.1, "thermal": 0.1}}, "deadline of 'rgb' must be >= 0"),
        ({"modalities": ()}, "non-empty subset"),
        ({"modalities": ("lidar",)}, "non-empty subset"),
    ],
)
def test_bad_config_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyncConfig(**kwargs)


def test_mailbox_newest_wins_and_counts_drops():
    box = LatestMailbox()
    assert box.put(1) is False
    assert box.put(2) is True
    assert box.put(3) is True
    assert box.get(timeout=0.1) == 3
    assert (box.dropped, box.delivered) == (2, 1)
    assert box.get(timeout=0.01) is None


def test_mailbox_close_wakes_a_waiting_worker():
    box = LatestMailbox()
    got = []
    worker = threading.Thread(target=lambda: got.append(box.get(timeout=5.0)))
    worker.start()
    box.close()
    worker.join(timeout=2.0)
    assert not worker.is_alive() and got == [None]


@pytest.mark.parametrize("module", ["damcseg_ros.sync", "damcseg_ros.conversions"])
def test_algorithm_modules_import_without_ros(module):
    code = f"import sys, {module}; print(sorted(n for n in sys.modules if n.startswith(('rclpy', 'sensor_msgs'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_sim_time_clock_starting_from_zero_gives_a_fresh_grace_period():
    clock = FakeClock(now=0)  # use_sim_time before the first /clock message
    sync = Synchronizer(SyncConfig(missing_after=1.0), clock)
    clock.now = T0  # /clock starts at the bag's time
    res = sync.poll()
    assert res.events == [] and not res.reset
    assert set(sync.states.values()) == {SensorState.OK}
    clock.advance(1100)
    assert {e.new for e in sync.poll().events} == {SensorState.MISSING}
