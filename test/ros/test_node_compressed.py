"""End to end on image_transport's compressed topics: JPEG rgb, compressedDepth 16UC1, PNG mono16.

The node (damcseg_tiny) runs with ``transport.rgb:=compressed transport.depth:=compressedDepth
transport.thermal:=compressed`` and gets only ``<sensor>/image/compressed`` /
``depth/image/compressedDepth``: its outputs carry the stamps of the frames sent, all three
sensors take part, and a truncated JPEG and a PNG of the wrong bit depth are counted on
/diagnostics (``invalid_size`` / ``invalid_encoding``) and logged with the reason, while the good
frames that follow are processed.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs not built (source tools/env.sh)")
import cv2
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CompressedImage, Image

from damcseg_ros.compressed import encode_compressed, encode_compressed_depth
from damcseg_ros.msg import SceneComplexity

pytestmark = [pytest.mark.ros, pytest.mark.slow]

H, W = 64, 128
TOPICS = {
    "rgb": "/rgb/image/compressed",
    "depth": "/depth/image/compressedDepth",
    "thermal": "/thermal/image/compressed",
}


def payloads(k: int) -> dict[str, tuple[str, bytes]]:
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([(x * 2 + k) % 256, y * 4, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    depth_mm = (2000 + 100 * x).astype(np.uint16)
    thermal = np.full((H, W), 20000, np.uint16)
    thermal[20:50, 10:30] = 40000
    return {
        "rgb": encode_compressed(rgb, "rgb8", "jpeg"),
        "depth": encode_compressed_depth(depth_mm, "16UC1"),
        "thermal": encode_compressed(thermal, "mono16", "png"),
    }


class CompressedPublisher:
    """8 Hz synced CompressedImage frames; ``bad`` replaces one sensor's payload for a few ticks."""

    def __init__(self, node, kit) -> None:
        self.node = node
        self.pubs = {
            m: node.create_publisher(CompressedImage, t, kit.sensor_qos()) for m, t in TOPICS.items()
        }
        self.stamps: list[int] = []
        self.bad: dict[str, tuple[str, bytes]] = {}
        self.bad_ticks = 0
        self._lock = threading.Lock()
        self._k = 0
        self.timer = node.create_timer(1.0 / 8.0, self._tick)

    def _tick(self) -> None:
        now = self.node.get_clock().now()
        frames = payloads(self._k)
        self._k += 1
        with self._lock:
            if self.bad_ticks > 0:
                frames.update(self.bad)
                self.bad_ticks -= 1
        for m, pub in self.pubs.items():
            fmt, data = frames[m]
            msg = CompressedImage(format=fmt, data=data)
            msg.header.stamp = now.to_msg()
            msg.header.frame_id = f"{m}_optical"
            pub.publish(msg)
        self.stamps.append(now.nanoseconds)

    def inject(self, bad: dict[str, tuple[str, bytes]], ticks: int) -> None:
        with self._lock:
            self.bad, self.bad_ticks = bad, ticks

    def destroy(self) -> None:
        self.node.destroy_timer(self.timer)
        for pub in self.pubs.values():
            self.node.destroy_publisher(pub)


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


@pytest.fixture(scope="module")
def system(kit, ros_context, tmp_path_factory):
    node = ros_context
    proc = kit.NodeProcess(
        [
            "-p", "model:=damcseg_tiny",
            "-p", "transport.rgb:=compressed",
            "-p", "transport.depth:=compressedDepth",
            "-p", "transport.thermal:=compressed",
            "-p", "diagnostics_period:=0.25",
        ],
        tmp_path_factory.mktemp("node") / "node.log",
    )  # fmt: skip
    out = {
        "mask": kit.Collector(node, Image, "/damcseg/segmentation", kit.reliable_qos()),
        "scene": kit.Collector(node, SceneComplexity, "/damcseg/scene_complexity", kit.reliable_qos()),
        "diag": kit.Collector(node, DiagnosticArray, "/diagnostics", kit.reliable_qos()),
    }
    frames = CompressedPublisher(node, kit)
    try:
        proc.wait_for_output(lambda: out["scene"].msgs, "output")
        yield {"proc": proc, "frames": frames, **out}
    finally:
        frames.destroy()
        rc = proc.stop()
        print(f"node exit code {rc}; log:\n{proc.log()}")


def counter(system, modality: str, key: str) -> int:
    for arr in reversed(list(system["diag"].msgs)):
        for st in arr.status:
            if st.name == f"damcseg: {modality} input":
                return int({kv.key: kv.value for kv in st.values}.get(key, 0))
    return 0


def test_outputs_of_compressed_inputs_carry_the_sent_stamps_with_every_sensor(kit, system):
    def full_frame():
        sent = set(system["frames"].stamps)
        return next(
            (m for m in list(system["scene"].msgs)
             if stamp_of(m) in sent and m.rgb_present and m.depth_present and m.thermal_present),
            None,
        )  # fmt: skip

    scene = kit.wait_for(full_frame, 30.0, "a frame processed with rgb, depth and thermal all present")
    mask = kit.wait_for(
        lambda: next((m for m in list(system["mask"].msgs) if stamp_of(m) == stamp_of(scene)), None),
        10.0,
        "the mask of that frame",
    )
    assert (mask.height, mask.width, mask.encoding) == (H, W, "mono8")
    assert mask.header.frame_id == "rgb_optical"


@pytest.mark.parametrize(
    ("modality", "make_bad", "key", "log"),
    [
        (
            "rgb",
            lambda p: (p[0], p[1][: len(p[1]) // 2]),
            "invalid_size",
            "is truncated: no JPEG end-of-image marker",
        ),
        (
            "thermal",
            lambda p: (
                "mono16; png compressed mono16",
                cv2.imencode(".png", np.zeros((H, W), np.uint8))[1].tobytes(),
            ),
            "invalid_encoding",
            "is a 8-bit PNG but its format declares 16-bit 'mono16'",
        ),
    ],
    ids=["truncated_jpeg", "png_of_wrong_bit_depth"],
)
def test_corrupt_payloads_are_counted_logged_and_good_frames_follow(
    kit, system, modality, make_bad, key, log
):
    before = counter(system, modality, key)
    bad = make_bad(payloads(0)[modality])
    system["frames"].inject({modality: bad}, ticks=4)
    kit.wait_for(
        lambda: counter(system, modality, key) > before, 15.0, f"{modality} {key} to rise above {before}"
    )
    assert log in system["proc"].log()
    last_bad = system["frames"].stamps[-1]
    kit.wait_for(
        lambda: any(
            stamp_of(m) > last_bad and getattr(m, f"{modality}_present") for m in list(system["scene"].msgs)
        ),
        15.0,
        f"a frame with {modality} processed after the bad ones",
    )
    assert system["proc"].proc.poll() is None, "node died on a corrupt payload"
