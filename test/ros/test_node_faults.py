"""The node under faults: every sensor subset with dropout and return, malformed and mistimed input,
bursts, and a short soak.

One node process (damcseg_tiny, random weights; 48x64 frames; short ``sync.missing_after``)
serves the subset, malformed-input and burst tests, which run in file order. A 10 Hz stream of
good, registered frames (one ``frame_id``) runs throughout; a fault test swaps some sensors'
messages in a few consecutive ticks of that stream for bad ones ("injection"), so the good frames
before and after are ordinary traffic with ordered stamps. For every fault the test checks that the
node survives, that the matching ``/diagnostics`` counter rises, that the reason is logged once
(not once per bad frame), that RSS stays bounded, and that a good frame sent afterwards is
processed. The short soak runs ``benchmarks/soak.py`` against its own node.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs not built (source tools/env.sh)")
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import Image

from damcseg_ros.conversions import array_to_image
from damcseg_ros.msg import SceneComplexity

pytestmark = [pytest.mark.ros, pytest.mark.slow]

MODALITIES = ("rgb", "depth", "thermal")
H, W = 48, 64
RATE = 10.0  # Hz, the nominal stream
MISSING_AFTER = 0.6  # s
DEADLINE = 0.05  # s, the node's default sync deadline for every sensor
MAX_PIXELS = 20_000  # 48x64 and 96x128 pass, 1000x1000 does not
DIAG_PERIOD = 0.2  # s
SLOP = 0.004  # s: the 100 Hz burst's frames (10 ms apart) must not share groups
SLACK = 0.5  # s of scheduling slack on a shared 2-core machine
RSS_LIMIT_MB = 50.0
FRAME_ID = "camera_optical"  # registered sensors: one optical frame
NS = 1_000_000_000
REPO = Path(__file__).resolve().parents[2]


def stamp_of(msg: Any) -> int:
    return msg.header.stamp.sec * NS + msg.header.stamp.nanosec


def set_stamp(msg: Image, ns: int, frame_id: str = FRAME_ID) -> Image:
    msg.header.stamp.sec, msg.header.stamp.nanosec = ns // NS, ns % NS  # floor: negative stamps too
    msg.header.frame_id = frame_id
    return msg


def arrays(h: int = H, w: int = W) -> dict[str, np.ndarray]:
    """A road scene: sky over road, a warm car-coloured box, a depth ramp in millimetres."""
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[: h // 2], rgb[h // 2 :] = (70, 130, 180), (128, 64, 128)
    rgb[h // 3 : 2 * h // 3, w // 4 : w // 2] = (0, 0, 142)
    depth = np.tile(np.linspace(20000, 2000, h)[:, None], (1, w)).astype(np.uint16)
    thermal = np.full((h, w), 20000, np.uint16)
    thermal[h // 3 : 2 * h // 3, w // 4 : w // 2] = 40000
    return {"rgb": rgb, "depth": depth, "thermal": thermal}


ENCODING = {"rgb": "rgb8", "depth": "16UC1", "thermal": "mono16"}


def good(modality: str, stamp: int, h: int = H, w: int = W) -> Image:
    return set_stamp(array_to_image(arrays(h, w)[modality], ENCODING[modality]), stamp)


def raw(encoding: str, h: int, w: int, step: int, nbytes: int, stamp: int) -> Image:
    """An Image whose header need not describe its payload."""
    return set_stamp(Image(height=h, width=w, encoding=encoding, step=step, data=bytes(nbytes)), stamp)


def depth_32f(stamp: int, value: float) -> Image:
    """32FC1 metres: a valid 5 m plane whose top half holds ``value``."""
    arr = np.full((H, W), 5.0, np.float32)
    arr[: H // 2] = value
    return set_stamp(array_to_image(arr, "32FC1"), stamp)


class Stream:
    """Publishes good synced frames at ``RATE`` Hz; ``inject`` swaps messages in some ticks."""

    def __init__(self, node: Any, qos: Any) -> None:
        self.node = node
        self.pubs = {m: node.create_publisher(Image, f"/{m}/image", qos) for m in MODALITIES}
        self.lock = threading.Lock()
        self.enabled: tuple[str, ...] = MODALITIES
        self.paused = False
        self.ticks: list[tuple[int, float, tuple[str, ...], bool]] = []  # stamp, sent at, sensors, bad
        self.last_good: dict[str, int] = {}  # newest stamp of a good message per sensor
        self._inject: dict[str, Callable[[int, Stream], Image]] = {}
        self._inject_left = 0
        self.timer = node.create_timer(1.0 / RATE, self._tick)

    def _tick(self) -> None:
        with self.lock:
            if self.paused:
                return
            stamp = self.node.get_clock().now().nanoseconds
            inject = self._inject if self._inject_left > 0 else {}
            sent = []
            for m in self.enabled:
                if m in inject:
                    msg = inject[m](stamp, self)
                else:
                    msg = good(m, stamp)
                    self.last_good[m] = stamp
                self.pubs[m].publish(msg)
                sent.append(m)
            self._inject_left -= bool(inject)
            self.ticks.append((stamp, time.monotonic(), tuple(sent), bool(inject)))

    def set_enabled(self, modalities: tuple[str, ...]) -> None:
        with self.lock:
            self.enabled = modalities

    def inject(self, replace: dict[str, Callable[[int, Stream], Image]], ticks: int) -> list[int]:
        """Send ``ticks`` ticks with ``replace``'d messages; returns those ticks' stamps."""
        with self.lock:
            self._inject, self._inject_left = replace, ticks
            start = len(self.ticks)
        deadline = time.monotonic() + 10.0
        while self._inject_left > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self._inject_left <= 0, "stream stalled while injecting"
        return [t[0] for t in self.ticks[start:] if t[3]]

    def destroy(self) -> None:
        self.node.destroy_timer(self.timer)
        for pub in self.pubs.values():
            self.node.destroy_publisher(pub)


class Timed:
    """Keeps (monotonic arrival time, message) of everything received on a topic."""

    def __init__(self, node: Any, msg_type: Any, topic: str, qos: Any) -> None:
        self.items: list[tuple[float, Any]] = []
        self.sub = node.create_subscription(
            msg_type, topic, lambda m: self.items.append((time.monotonic(), m)), qos
        )

    def after(self, stamp: int) -> list[tuple[float, Any]]:
        return [(t, m) for t, m in list(self.items) if stamp_of(m) > stamp]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError(f"no VmRSS for pid {pid}")


@pytest.fixture(scope="module")
def system(kit, ros_context, tmp_path_factory):
    """Node process + good-frame stream + collectors; torn down whatever happens."""
    node = ros_context
    proc = kit.NodeProcess(
        [
            "-p", "model:=damcseg_tiny",
            "-p", f"sync.missing_after:={MISSING_AFTER}",
            "-p", f"diagnostics_period:={DIAG_PERIOD}",
            "-p", f"max_pixels:={MAX_PIXELS}",
            "-p", "publish_color:=false",
            "-p", f"sync.slop:={SLOP}",
        ],
        tmp_path_factory.mktemp("faults") / "node.log",
    )  # fmt: skip
    sys_ = {
        "proc": proc,
        "scene": Timed(node, SceneComplexity, "/damcseg/scene_complexity", kit.reliable_qos()),
        "mask": Timed(node, Image, "/damcseg/segmentation", kit.reliable_qos()),
        "diag": Timed(node, DiagnosticArray, "/diagnostics", kit.reliable_qos()),
    }
    stream = sys_["stream"] = Stream(node, kit.sensor_qos())
    try:
        proc.wait_for_output(lambda: sys_["scene"].items, "output")
        yield sys_
    finally:
        stream.destroy()
        rc = proc.stop()
        print(f"node exit code {rc}; log:\n{proc.log()}")


def status(system: dict, name: str) -> DiagnosticStatus | None:
    """Newest status called ``name`` (``rgb``/``depth``/``thermal`` input, or ``pipeline``)."""
    full = f"damcseg: {name} input" if name in MODALITIES else f"damcseg: {name}"
    for _, arr in reversed(list(system["diag"].items)):
        for st in arr.status:
            if st.name == full:
                return st
    return None


def values(st: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in st.values}


def wait_all_ok(kit, system) -> None:
    def ok():
        sts = [status(system, m) for m in MODALITIES]
        return all(s is not None and values(s)["state"] == "ok" for s in sts)

    kit.wait_for(ok, MISSING_AFTER + 10.0, "every sensor ok on /diagnostics")


def assert_alive(system: dict) -> None:
    proc = system["proc"]
    assert proc.proc.poll() is None, f"node died with {proc.proc.returncode}:\n{proc.log()}"


def wait_good_output_after(kit, system: dict, after_stamp: int) -> tuple[float, Any]:
    """An output whose stamp is a good tick sent after ``after_stamp`` (the stream keeps sending)."""
    stream = system["stream"]

    def found():
        good_stamps = {t[0] for t in list(stream.ticks) if t[0] > after_stamp and not t[3]}
        return next(
            ((t, m) for t, m in system["mask"].after(after_stamp) if stamp_of(m) in good_stamps), None
        )

    return kit.wait_for(found, 10.0, "an output for a good frame sent after the fault")


# ---------------------------------------------------------------- sensor subsets

SUBSETS = [
    ("rgb",),
    ("depth",),
    ("thermal",),
    ("rgb", "depth"),
    ("rgb", "thermal"),
    ("depth", "thermal"),
    MODALITIES,
]


@pytest.mark.parametrize("subset", SUBSETS, ids=["+".join(s) for s in SUBSETS])
def test_sensor_subset_keeps_outputs_flowing_and_returning_sensor_rejoins_within_1s(kit, system, subset):
    """The sensors outside ``subset`` stop mid-stream, then return. For the full set every sensor
    stops (nothing comes out), then all return."""
    stream, scene, mask = system["stream"], system["scene"], system["mask"]
    wait_all_ok(kit, system)
    stopped = tuple(m for m in MODALITIES if m not in subset) or MODALITIES
    running = tuple(m for m in subset if m not in stopped)
    stream.set_enabled(running)
    stopped_at = time.monotonic()
    last_before_stop = stream.ticks[-1][1]

    def states_settled():
        sts = {m: status(system, m) for m in MODALITIES}
        missing = all(
            values(sts[m])["state"] == "missing" and sts[m].level == DiagnosticStatus.ERROR for m in stopped
        )
        ok = all(values(sts[m])["state"] == "ok" and sts[m].level == DiagnosticStatus.OK for m in running)
        return missing and ok

    kit.wait_for(
        states_settled, MISSING_AFTER + 5.0, f"{stopped} ERROR/missing and {running} ok on /diagnostics"
    )
    # Not called missing before missing_after of silence (the last message left at last_before_stop).
    assert time.monotonic() - last_before_stop >= MISSING_AFTER
    assert_alive(system)
    if running:
        settled = stream.ticks[-1][0]
        fresh = kit.wait_for(
            lambda: (out := scene.after(settled)) and len(out) >= 3 and out, 10.0, "3 outputs after the stop"
        )
        for _, msg in fresh:  # the true present set, and the model completes exactly the rest
            assert tuple(m for m in MODALITIES if getattr(msg, f"{m}_present")) == running
            assert tuple(m for m in MODALITIES if getattr(msg, f"{m}_completed")) == stopped
        # Outputs keep up: the newest input comes out within deadline + processing + slack.
        last_stamp, sent_at = stream.ticks[-1][:2]
        got_at = kit.wait_for(
            lambda: next((t for t, m in mask.items[::-1] if stamp_of(m) >= last_stamp), None),
            10.0,
            "output of the newest input",
        )
        processing = float(values(status(system, "pipeline"))["processing_ms"]) / 1000.0
        assert got_at - sent_at <= DEADLINE + processing + SLACK
    else:
        assert not scene.after(stream.ticks[-1][0])  # nothing in, nothing out
    # The stopped sensors return: each is in an output within 1 s of its first message.
    restarted_at = time.monotonic()
    stream.set_enabled(MODALITIES)
    first_sent = kit.wait_for(
        lambda: next((t for t in list(stream.ticks) if t[1] >= restarted_at), None),
        5.0,
        "first tick after restart",
    )
    rejoin = {}
    for m in stopped:
        got = kit.wait_for(
            lambda m=m: next(
                (t for t, msg in scene.after(first_sent[0] - 1) if getattr(msg, f"{m}_present")), None
            ),
            10.0,
            f"an output including {m}",
        )
        rejoin[m] = got - first_sent[1]
    print(f"subset {running}: stopped {stopped} for {restarted_at - stopped_at:.2f} s; rejoin after {rejoin}")
    assert max(rejoin.values()) < 1.0, rejoin
    wait_all_ok(kit, system)
    assert_alive(system)


# ---------------------------------------------------------------- malformed / mistimed input

Replace = dict[str, Callable[[int, Stream], Image]]


@dataclasses.dataclass(frozen=True)
class Fault:
    """One kind of bad input and where the node must account for it."""

    id: str
    replace: Replace  # sensor -> message sent instead of the good one, from (tick stamp, stream)
    status: str  # diagnostics status holding the counter: a sensor or "pipeline"
    counter: str  # the value that must rise
    log: str  # the reason the node must log (once, not per frame)
    ticks: int = 5  # bad ticks in a row (0.5 s < missing_after: the sensor is never "missing")
    output_stamp: Callable[[int], int] | None = None  # the bad tick's output stamp, if it is processed
    output_hw: tuple[int, int] = (H, W)


BLACK_THERMAL = {"thermal": lambda s, _: set_stamp(array_to_image(np.zeros((H, W), np.uint16), "mono16"), s)}
BIG = 1000  # 1000x1000 rgb8: a real 3 MB payload above max_pixels
FAULTS = [
    Fault("unknown_encoding", {"rgb": lambda s, _: raw("yuv422", H, W, 2 * W, H * 2 * W, s)}, "rgb",
          "invalid_encoding", "rgb image has unsupported encoding 'yuv422'; supported for rgb: rgb8, bgr8"),
    Fault("step_smaller_than_row", {"rgb": lambda s, _: raw("rgb8", H, W, 3 * W - 1, H * (3 * W - 1), s)}, "rgb",
          "invalid_step", f"rgb image step {3 * W - 1} is smaller than width*bytes_per_pixel = {3 * W}"),
    Fault("data_shorter_than_height_x_step", {"depth": lambda s, _: raw("16UC1", H, W, 2 * W, H * 2 * W - 10, s)},
          "depth", "invalid_size", f"depth image data has {H * 2 * W - 10} bytes but height*step = {H}*{2 * W}"),
    Fault("data_longer_than_height_x_step", {"thermal": lambda s, _: raw("mono16", H, W, 2 * W, H * 2 * W + 10, s)},
          "thermal", "invalid_size", f"thermal image data has {H * 2 * W + 10} bytes but height*step"),
    Fault("zero_width", {"rgb": lambda s, _: raw("rgb8", H, 0, 0, 0, s)}, "rgb", "invalid_empty",
          f"rgb image is empty (0x{H}); width and height must be > 0"),
    Fault("zero_height", {"thermal": lambda s, _: raw("mono16", 0, W, 2 * W, 0, s)}, "thermal", "invalid_empty",
          f"thermal image is empty ({W}x0)"),
    Fault("above_max_pixels_real_payload",
          {"rgb": lambda s, _: set_stamp(array_to_image(np.full((BIG, BIG, 3), 90, np.uint8), "rgb8"), s)},
          "rgb", "invalid_too_large", f"rgb image {BIG}x{BIG} has {BIG * BIG} pixels, more than max_pixels={MAX_PIXELS}"),
    Fault("huge_header_tiny_payload", {"depth": lambda s, _: raw("16UC1", 100_000, 100_000, 200_000, 16, s)},
          "depth", "invalid_too_large", "depth image 100000x100000 has 10000000000 pixels, more than max_pixels"),
    Fault("nan_depth", {"depth": lambda s, _: depth_32f(s, float("nan"))}, "depth", "nan_frames",
          f"depth image has {H * W // 2} of {H * W} pixels NaN (no return, REP 118); treated as invalid (0)",
          output_stamp=lambda s: s),
    Fault("inf_depth", {"depth": lambda s, _: depth_32f(s, float("inf"))}, "depth", "inf_frames",
          f"depth image has {H * W // 2} of {H * W} pixels +-inf", output_stamp=lambda s: s),
    Fault("negative_depth", {"depth": lambda s, _: depth_32f(s, -1.0)}, "depth", "negative_frames",
          f"depth image has {H * W // 2} of {H * W} pixels negative (a driver bug)", output_stamp=lambda s: s),
    Fault("all_zero_depth", {"depth": lambda s, _: set_stamp(array_to_image(np.zeros((H, W), np.uint16), "16UC1"), s)},
          "depth", "no_valid_frames", "depth image has no valid pixel (all 0, NaN, inf or negative)",
          output_stamp=lambda s: s),
    Fault("black_thermal_frame", BLACK_THERMAL,
          "thermal", "blank_frames", "thermal image is blank (every pixel 0): treated as a dropped sensor and "
          "completed by the model (blank_frames: complete); check the thermal camera", output_stamp=lambda s: s),
    Fault("frozen_grey_rgb_frame",
          {"rgb": lambda s, _: set_stamp(array_to_image(np.full((H, W, 3), 128, np.uint8), "rgb8"), s)},
          "rgb", "blank_frames", "rgb image is blank (every pixel (128, 128, 128)): treated as a dropped sensor",
          output_stamp=lambda s: s),
    Fault("mismatched_frame_id",
          {"depth": lambda s, _: set_stamp(good("depth", s), s, "depth_optical"),
           "thermal": lambda s, _: set_stamp(good("thermal", s), s, "thermal_optical")},
          "pipeline", "frame_id_mismatch",
          "sensors of one frame name different frame_ids (rgb: 'camera_optical', depth: 'depth_optical', "
          "thermal: 'thermal_optical'); accepted", output_stamp=lambda s: s),
    Fault("stamps_out_of_order", {"rgb": lambda s, st: good("rgb", st.last_good["rgb"] - 50_000_000)}, "rgb",
          "out_of_order", "is older than the previous rgb message (out of order)"),
    Fault("stamp_far_in_future", {"rgb": lambda s, _: good("rgb", s + 100 * NS)}, "rgb", "future_stamp",
          "ahead of the node clock (sync.max_future = 1.0 s)"),
    Fault("zero_stamp", {"rgb": lambda s, _: good("rgb", 0)}, "rgb", "zero_stamp",
          "dropping rgb image: header stamp is zero or negative (0.000 s)"),
    Fault("negative_stamp", {"thermal": lambda s, _: good("thermal", -5 * NS)}, "thermal", "zero_stamp",
          "dropping thermal image: header stamp is zero or negative (-5.000 s)"),
    Fault("clock_jumps_back_10s_bag_loop", {m: (lambda s, _, m=m: good(m, s - 10 * NS)) for m in MODALITIES},
          "pipeline", "resets", "clock or stamps jumped back by more than sync.missing_after",
          output_stamp=lambda s: s - 10 * NS),
    Fault("duplicate_stamp", {"rgb": lambda s, st: good("rgb", st.last_good["rgb"])}, "rgb", "duplicate",
          "same stamp as the previous rgb message (duplicate"),
    Fault("resolution_change_mid_stream", {m: (lambda s, _, m=m: good(m, s, 2 * H, 2 * W)) for m in MODALITIES},
          "rgb", "resolution_changes", f"rgb resolution changed from {W}x{H} to {2 * W}x{2 * H}",
          output_stamp=lambda s: s, output_hw=(2 * H, 2 * W)),
    Fault("mono16_thermal_on_depth_topic",
          {"depth": lambda s, _: set_stamp(array_to_image(arrays()["thermal"], "mono16"), s)}, "depth",
          "invalid_encoding", "depth image has unsupported encoding 'mono16'; supported for depth: 16UC1, 32FC1 "
          "('mono16' is an intensity image"),
]  # fmt: skip


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_bad_input_is_survived_counted_logged_once_and_good_frames_follow(kit, system, fault):
    stream, proc = system["stream"], system["proc"]
    wait_all_ok(kit, system)
    before = int(values(status(system, fault.status))[fault.counter])
    logged_before = proc.log().count(fault.log)
    rss_before = rss_mb(proc.proc.pid)
    bad_stamps = stream.inject(fault.replace, fault.ticks)
    assert len(bad_stamps) == fault.ticks
    counted = kit.wait_for(
        lambda: (n := int(values(status(system, fault.status))[fault.counter])) > before and n,
        10.0,
        f"{fault.status} {fault.counter} to rise above {before}",
    )
    assert counted <= before + fault.ticks * len(fault.replace)  # counted per bad message, not more
    if fault.output_stamp is not None:  # the bad-but-usable frame itself is processed
        wanted = {fault.output_stamp(s) for s in bad_stamps}
        _, out = kit.wait_for(
            lambda: next(((t, m) for t, m in list(system["mask"].items) if stamp_of(m) in wanted), None),
            10.0,
            "an output for a frame of the fault",
        )
        assert (out.height, out.width) == fault.output_hw
    _, out = wait_good_output_after(kit, system, bad_stamps[-1])
    assert (out.height, out.width, out.encoding) == (H, W, "mono8")
    assert_alive(system)
    logged = proc.log().count(fault.log) - logged_before
    assert 1 <= logged < fault.ticks, f"reason logged {logged} times for {fault.ticks} bad frames"
    assert rss_mb(proc.proc.pid) - rss_before < RSS_LIMIT_MB


def test_black_thermal_frame_is_completed_not_fed_to_the_model(kit, system):
    """A dead thermal camera publishing black frames: those frames are processed as thermal
    dropped and completed (blank_frames: complete), the other sensors as they are."""
    stream, scene = system["stream"], system["scene"]
    wait_all_ok(kit, system)
    bad = set(stream.inject(BLACK_THERMAL, 3))
    outs = kit.wait_for(
        lambda: (got := [m for _, m in list(scene.items) if stamp_of(m) in bad]) and got,
        10.0,
        "a scene_complexity output for a black thermal frame",
    )
    for msg in outs:
        assert (msg.rgb_present, msg.depth_present, msg.thermal_present) == (True, True, False)
        assert (msg.rgb_completed, msg.depth_completed, msg.thermal_completed) == (False, False, True)
        assert msg.thermal_weight > 0  # the completed thermal features still take part in the fusion
    good_out = kit.wait_for(
        lambda: next((m for _, m in scene.after(max(bad) + 1) if m.thermal_present), None),
        10.0,
        "an output with real thermal again",
    )
    assert not good_out.thermal_completed
    assert_alive(system)


def test_burst_at_10x_rate_is_dropped_newest_wins_and_every_group_is_accounted(kit, system):
    stream, proc = system["stream"], system["proc"]
    wait_all_ok(kit, system)
    before = values(status(system, "pipeline"))
    with stream.lock:  # pause the stream; the test thread sends the burst on its publishers
        stream.paused = True
    try:
        stamps = []
        start = time.monotonic()
        for k in range(int(10 * RATE)):  # one second at 10x the nominal rate
            stamp = stream.node.get_clock().now().nanoseconds
            for m in MODALITIES:
                stream.pubs[m].publish(good(m, stamp))
            stamps.append(stamp)
            time.sleep(max(0.0, start + (k + 1) / (10 * RATE) - time.monotonic()))
        # Newest wins: the last frame of the burst is always processed.
        kit.wait_for(
            lambda: any(stamp_of(m) == stamps[-1] for _, m in list(system["mask"].items)),
            10.0,
            "the last burst frame",
        )

        def idle_and_accounted():
            v = values(status(system, "pipeline"))
            done = int(v["frames"]) + int(v["errors"]) + int(v["dropped"])
            return done == int(v["groups"]) and int(v["groups"]) > int(before["groups"]) and v

        after = kit.wait_for(idle_and_accounted, 10.0, "frames + errors + dropped == groups after the burst")
    finally:
        with stream.lock:
            stream.paused = False
    assert int(after["dropped"]) > int(before["dropped"])  # the model cannot run at 100 Hz here
    assert int(after["frames"]) > int(before["frames"])
    assert_alive(system)
    assert 1 <= proc.log().count("inference is slower than the input") <= 3
    wait_good_output_after(kit, system, stamps[-1])


def test_sync_keeps_every_frame_of_a_60hz_stream_with_the_default_slop():
    """Found by the 10x burst test: at 60 Hz (16.7 ms) the default 20 ms slop put the next frame's first
    message within slop of the group just emitted, and it was dropped as "too late"."""
    from damcseg_ros.sync import SyncConfig, Synchronizer

    clock = [1000 * NS]
    sync = Synchronizer(SyncConfig(slop=0.02), lambda: clock[0])
    groups = []
    for k in range(60):
        stamp = 1000 * NS + k * NS // 60
        for m in MODALITIES:  # 1 ms apart on the wire
            groups += sync.add(m, stamp, (m, k)).groups
            clock[0] += 1_000_000
        clock[0] = stamp + NS // 60
        groups += sync.poll().groups
    assert [sorted(g.items.values()) for g in groups] == [
        sorted((m, k) for m in MODALITIES) for k in range(60)
    ]
    assert sum(c.dropped for c in sync.counters.values()) == 0


# ---------------------------------------------------------------- short soak


def test_soak_short_bounded_memory_and_every_group_accounted(tmp_path):
    """30 s at 60 Hz through benchmarks/soak.py (tiny model, small frames): no crash, RSS growth
    after warm-up < 50 MB, processed + dropped == groups. Wall-clock speed is not asserted."""
    result = tmp_path / "soak.json"
    cmd = [
        sys.executable, str(REPO / "benchmarks" / "soak.py"),
        "--model", "damcseg_tiny", "--height", str(H), "--width", str(W), "--rate", "60",
        "--duration", "30", "--warmup", "8", "--json", str(result), "--out", str(tmp_path / "soak.md"),
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["ROS_DOMAIN_ID"] = str((int(os.environ.get("ROS_DOMAIN_ID", "1")) + 100) % 230 + 1)  # own domain
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, f"soak failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    r = json.loads(result.read_text())
    assert r["node_alive"] is True
    assert r["node_errors"] == 0
    assert r["sent_sets"] > 1000  # ~60 Hz for 30 s
    assert r["processed"] > 0
    assert r["processed"] + r["dropped"] == r["groups"]
    assert r["groups"] > 0
    assert r["rss_growth_mb"] < RSS_LIMIT_MB, r["rss_mb"]
    assert r["node_log_lines"] < 60, f"log flood: {r['node_log_lines']} lines in 30 s, see {r['node_log']}"
    assert (tmp_path / "soak.md").read_text().count("| p99 latency") == 1
