"""InputHealth (ROS-free): one count per bad input, reasons logged once per period, never a flood."""

from __future__ import annotations

import pytest

from damcseg_ros.input_health import FAULT_COUNTERS, LOG_PERIOD_S, InputHealth
from damcseg_ros.sync import SensorState


class Logger:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, text: str) -> None:
        self.lines.append(("info", text))

    def warning(self, text: str) -> None:
        self.lines.append(("warning", text))

    def error(self, text: str) -> None:
        self.lines.append(("error", text))


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def health():
    log, clock = Logger(), Clock()
    return InputHealth(log, clock), log, clock


def test_a_rejected_message_is_counted_once(health):
    h, log, _ = health
    h.rejected("rgb", "encoding", "rgb image has unsupported encoding 'yuv422'")
    assert h.faults["rgb"]["invalid_encoding"] == 1
    assert h.invalid("rgb") == 1 and h.total_invalid() == 1 and h.invalid("depth") == 0
    assert log.lines == [("warning", "dropping rgb image: rgb image has unsupported encoding 'yuv422'")]


def test_the_same_fault_is_logged_once_per_period_but_always_counted(health):
    h, log, clock = health
    for _ in range(5):
        h.rejected("depth", "size", "bad payload")
    assert h.faults["depth"]["invalid_size"] == 5 and len(log.lines) == 1
    clock.t += LOG_PERIOD_S
    h.rejected("depth", "size", "bad payload")
    assert len(log.lines) == 2


def test_two_faults_do_not_hide_behind_one_throttle(health):
    h, log, _ = health
    h.rejected("rgb", "encoding", "a")
    h.rejected("rgb", "step", "b")
    h.rejected("thermal", "encoding", "c")
    assert [text for _, text in log.lines] == [
        f"dropping {m} image: {t}" for m, t in (("rgb", "a"), ("rgb", "b"), ("thermal", "c"))
    ]


def test_resolution_change_is_counted_and_explained(health):
    h, log, _ = health
    h.size("rgb", 640, 480)
    h.size("rgb", 640, 480)
    h.size("rgb", 1280, 960)
    assert h.faults["rgb"]["resolution_changes"] == 1
    assert log.lines == [
        ("info", "rgb resolution changed from 640x480 to 1280x960; processing continues at the new size "
                 "(outputs follow the rgb size)")
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "stamp", "text"),
    [
        ("zero_stamp", 0, "dropping rgb image: header stamp is zero or negative (0.000 s)"),
        (
            "future_stamp",
            12_000_000_000,
            "stamp is 10.000 s ahead of the node clock (sync.max_future = 1.0 s)",
        ),
        ("duplicate", 5_000_000_000, "same stamp as the previous rgb message (duplicate, 5.000 s)"),
        (
            "out_of_order",
            5_000_000_000,
            "stamp 5.000 s is older than the previous rgb message (out of order)",
        ),
    ],
)
def test_dropped_stamps_are_explained(health, kind, stamp, text):
    h, log, _ = health
    h.dropped("rgb", kind, stamp, now_ns=2_000_000_000, max_future=1.0)
    assert len(log.lines) == 1 and text in log.lines[0][1]


def test_too_late_is_counted_by_the_synchroniser_without_a_line(health):
    h, log, _ = health
    h.dropped("thermal", "too_late", 1, 2, 1.0)
    assert log.lines == []


def test_depth_values_count_frames_not_pixels(health):
    h, log, _ = health
    h.depth_values({"nan": 10, "inf": 0, "negative": 2}, pixels=100, any_valid=True)
    h.depth_values({"nan": 0, "inf": 0, "negative": 0}, pixels=100, any_valid=False)
    f = h.faults["depth"]
    assert (f["nan_frames"], f["inf_frames"], f["negative_frames"], f["no_valid_frames"]) == (1, 0, 1, 1)
    assert (
        "info",
        "depth image has 10 of 100 pixels NaN (no return, REP 118); treated as invalid (0)",
    ) in log.lines
    assert [lvl for lvl, _ in log.lines] == ["info", "warning", "warning"]


@pytest.mark.parametrize(
    ("modality", "value", "completed", "text"),
    [
        ("thermal", (0.0,), True, "thermal image is blank (every pixel 0): treated as a dropped sensor and "
         "completed by the model (blank_frames: complete); check the thermal camera"),
        ("rgb", (128.0, 128.0, 128.0), False, "rgb image is blank (every pixel (128, 128, 128)): processed as "
         "it is (blank_frames: keep, or no other sensor to complete it from); check the rgb camera"),
    ],
)  # fmt: skip
def test_a_blank_frame_is_counted_every_time_and_explained_once_per_period(
    health, modality, value, completed, text
):
    h, log, clock = health
    for _ in range(3):
        h.blank_frame(modality, value, completed)
    assert h.faults[modality]["blank_frames"] == 3
    assert log.lines == [("warning", text)]
    clock.t += LOG_PERIOD_S + 1
    h.blank_frame(modality, value, completed)
    assert log.lines == [("warning", text)] * 2
    assert all(h.faults[m]["blank_frames"] == 0 for m in ("rgb", "depth", "thermal") if m != modality)


def test_fault_counts_are_listed_in_order_with_the_synchroniser_drops(health):
    h, _, _ = health
    h.rejected("rgb", "empty", "x")

    class Counters:
        zero_stamp, future_stamp, duplicate, out_of_order, too_late = 1, 2, 3, 4, 5

    counts = h.fault_counts("rgb", Counters())
    assert tuple(counts) == FAULT_COUNTERS
    assert (counts["invalid_empty"], counts["zero_stamp"], counts["too_late"]) == (1, 1, 5)
    assert h.fault_counts("rgb")["duplicate"] == 0


def test_reset_zeroes_the_counters(health):
    h, _, _ = health
    h.rejected("rgb", "empty", "x")
    h.reset()
    assert h.total_invalid() == 0


def test_frame_ids_mismatch_is_reported_once_an_hour(health):
    h, log, clock = health
    assert not h.frame_ids({"rgb": "cam", "depth": "cam"}, "rgb")
    assert h.frame_ids({"rgb": "cam", "depth": "depth_optical"}, "rgb")
    clock.t += 600
    assert h.frame_ids({"rgb": "cam", "depth": "depth_optical"}, "rgb")
    assert len(log.lines) == 1
    assert (
        "sensors of one frame name different frame_ids (rgb: 'cam', depth: 'depth_optical'); accepted"
        in log.lines[0][1]
    )


def test_state_changes_missing_is_an_error_every_time(health):
    h, log, _ = health

    class Event:
        def __init__(self, old, new):
            self.modality, self.old, self.new = "thermal", old, new

        def __str__(self):
            return f"thermal input: {self.old.value} -> {self.new.value}"

    h.sync_result(
        True, [Event(SensorState.OK, SensorState.MISSING), Event(SensorState.OK, SensorState.MISSING)]
    )
    assert [lvl for lvl, _ in log.lines] == ["warning", "error", "error"]
    assert "synchroniser reset" in log.lines[0][1]


def test_camera_info_size_mismatch_is_said_once(health):
    h, log, _ = health
    h.camera_info("depth", (640, 480), (640, 480))
    h.camera_info("depth", None, (320, 240))
    h.camera_info("depth", (640, 480), (320, 240))
    h.camera_info("depth", (640, 480), (320, 240))
    assert log.lines == [
        ("warning", "depth/camera_info is 640x480 but depth/image is 320x240; check the remapping")
    ]


def test_an_accepted_image_is_checked_against_its_size_and_camera_info(health):
    from types import SimpleNamespace as Msg

    h, log, _ = health
    h.accepted("depth", Msg(width=320, height=240))  # no camera_info yet
    h.accepted("depth", Msg(width=320, height=240), Msg(width=640, height=480))
    h.accepted("depth", Msg(width=640, height=480), Msg(width=640, height=480))
    assert h.faults["depth"]["resolution_changes"] == 1
    assert log.lines == [
        ("warning", "depth/camera_info is 640x480 but depth/image is 320x240; check the remapping"),
        ("info", "depth resolution changed from 320x240 to 640x480; processing continues at the new size "
                 "(outputs follow the rgb size)"),
    ]  # fmt: skip


def test_the_kept_camera_info_is_the_one_an_accepted_image_is_checked_against(health):
    from types import SimpleNamespace as Msg

    h, log, _ = health
    h.keep_camera_info("thermal", Msg(width=160, height=120))
    h.accepted("thermal", Msg(width=160, height=120))
    assert log.lines == []
    h.keep_camera_info("thermal", Msg(width=640, height=512))  # a newer one replaces it
    h.accepted("thermal", Msg(width=160, height=120))
    assert log.lines == [
        ("warning", "thermal/camera_info is 640x512 but thermal/image is 160x120; check the remapping")
    ]
