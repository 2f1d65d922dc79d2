"""rosbag2 drive bags (sqlite3 and mcap) written and read back with rosbags, ROS-free."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from rosbags.rosbag2 import Writer

from damcseg_core.data.registry import build_dataset
from damcseg_core.data.rosbag_io import (
    DEFAULT_TOPICS,
    FRAME_IDS,
    BagDataset,
    bag_typestore,
    iter_bag_messages,
    pinhole_intrinsics,
    read_bag_samples,
    write_drive_bag,
)

H, W = 12, 16
T0 = 1_700_000_000_000_000_000
PERIOD_NS = 100_000_000  # 10 Hz


@dataclasses.dataclass
class Frame:
    """The fields of ``damcseg_core.data.synthetic.SyntheticFrame`` the bag writer reads."""

    rgb: np.ndarray | None
    depth: np.ndarray | None
    thermal: np.ndarray | None
    semantic: np.ndarray
    instance: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    occlusion: np.ndarray
    condition: str
    stamp_ns: int
    frame_index: int
    sequence: str = "drive0"


def make_frame(i: int) -> Frame:
    rng = np.random.default_rng(i)
    depth = rng.uniform(0.3, 60.0, (H, W)).astype(np.float32)
    depth[0, 0] = np.nan  # invalid readings in every REP 118 spelling
    depth[0, 1] = 0.0
    depth[0, 2] = -1.0
    instance = np.zeros((H, W), np.int32)
    instance[2:5, 3:8] = 1
    instance[6:11, 9 + i % 3 : 12 + i % 3] = 2
    return Frame(
        rgb=rng.integers(0, 256, (H, W, 3), np.uint8),
        depth=depth,
        thermal=rng.integers(0, 65536, (H, W), np.uint16),
        semantic=rng.integers(0, 19, (H, W)).astype(np.uint8),
        instance=instance,
        boxes=np.array([[3, 2, 8, 5], [9 + i % 3, 6, 12 + i % 3, 11]], np.float32),
        labels=np.array([13, 11], np.int64),
        occlusion=np.array([0.25, 0.5 + 0.1 * i], np.float32),
        condition=("day", "night")[i % 2],
        stamp_ns=T0 + i * PERIOD_NS,
        frame_index=i,
    )


FRAMES = [make_frame(i) for i in range(4)]


def _as_uint8(rgb: torch.Tensor) -> np.ndarray:
    return (rgb.numpy() * 255).round().astype(np.uint8).transpose(1, 2, 0)


@pytest.fixture(scope="module", params=["sqlite3", "mcap"])
def storage(request) -> str:
    return request.param


@pytest.mark.parametrize("depth_encoding", ["32FC1", "16UC1"])
def test_roundtrip_values(tmp_path: Path, storage: str, depth_encoding: str):
    bag = tmp_path / "drive"
    write_drive_bag(bag, FRAMES, storage=storage, depth_encoding=depth_encoding)
    samples = list(read_bag_samples(bag))
    assert len(samples) == len(FRAMES)
    for frame, s in zip(FRAMES, samples):
        assert s["present"].tolist() == [True, True, True]
        assert np.array_equal(_as_uint8(s["rgb"]), frame.rgb)
        assert np.array_equal(np.rint(s["thermal"][0].numpy() * 65535).astype(np.uint16), frame.thermal)
        expected = np.where(np.isfinite(frame.depth) & (frame.depth > 0), frame.depth, 0.0)
        tol = 0.0005 + 1e-6 if depth_encoding == "16UC1" else 0.0  # half a millimetre of quantisation
        assert np.abs(s["depth"][0].numpy() - expected).max() <= tol
        assert s["depth"][0, 0, :3].tolist() == [0.0, 0.0, 0.0]
        assert np.array_equal(s["semantic"].numpy(), frame.semantic.astype(np.int64))
        assert np.array_equal(s["instance"].numpy(), frame.instance)
        assert s["boxes"].tolist() == frame.boxes.tolist()
        assert s["labels"].tolist() == frame.labels.tolist()
        assert s["occlusion"].tolist() == pytest.approx(frame.occlusion.tolist())
        assert s["areas"].tolist() == [15.0, 15.0]
        assert s["condition"] == frame.condition
        assert s["meta"]["stamp_ns"] == frame.stamp_ns and s["meta"]["frame"] == frame.frame_index
        assert s["meta"]["has_labels"] is True and s["meta"]["has_boxes"] is True


def test_16uc1_beyond_65m_is_invalid(tmp_path: Path):
    frame = make_frame(0)
    frame.depth[5, 5] = 70.0
    frame.depth[5, 6] = 65.5
    write_drive_bag(tmp_path / "b", [frame], depth_encoding="16UC1")
    depth = next(read_bag_samples(tmp_path / "b"))["depth"][0]
    assert float(depth[5, 5]) == 0.0 and float(depth[5, 6]) == pytest.approx(65.5)


def test_dropout_windows_skip_sensor_messages(tmp_path: Path, storage: str):
    # Windows are seconds since the first frame: frames at 0.0, 0.1, 0.2, 0.3 s.
    dropouts = {"thermal": [(0.05, 0.25)], "depth": [(0.3, 1.0)], "rgb": [(0.0, 0.01)]}
    counts = write_drive_bag(tmp_path / "b", FRAMES, storage=storage, dropouts=dropouts)
    assert counts[DEFAULT_TOPICS.thermal] == counts[DEFAULT_TOPICS.thermal_info] == 2
    assert counts[DEFAULT_TOPICS.depth] == counts[DEFAULT_TOPICS.depth_info] == 3
    assert counts[DEFAULT_TOPICS.rgb] == 3 and counts[DEFAULT_TOPICS.semantic] == 4
    present = [s["present"].tolist() for s in read_bag_samples(tmp_path / "b")]
    assert present == [[False, True, True], [True, True, False], [True, True, False], [True, False, True]]


def test_missing_topics_leave_modalities_and_labels_absent(tmp_path: Path):
    frames = [dataclasses.replace(make_frame(i), thermal=None, depth=None) for i in range(2)]
    write_drive_bag(tmp_path / "b", frames)
    s = next(read_bag_samples(tmp_path / "b"))
    assert s["present"].tolist() == [True, False, False] and "depth" not in s and "thermal" not in s
    # A bag with only the camera topic (no ground truth at all): labels ignore, no boxes.
    store = bag_typestore()
    t = store.types
    with Writer(tmp_path / "raw", version=8) as writer:
        conn = writer.add_connection("/camera/rgb/image_raw", "sensor_msgs/msg/Image", typestore=store)
        header = t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](sec=5, nanosec=0), frame_id="cam"
        )
        img = t["sensor_msgs/msg/Image"](
            header=header, height=2, width=3, encoding="bgr8", is_bigendian=0, step=12,  # padded rows
            data=np.arange(24, dtype=np.uint8),
        )  # fmt: skip
        writer.write(conn, 5 * 10**9, store.serialize_cdr(img, "sensor_msgs/msg/Image"))
    (s,) = list(read_bag_samples(tmp_path / "raw"))
    assert s["meta"]["has_labels"] is False and s["meta"]["has_boxes"] is False
    assert bool((s["semantic"] == 255).all()) and s["boxes"].shape == (0, 4) and s["condition"] == "unknown"
    # bgr8 with 12-byte rows of which 9 are pixels: first pixel B,G,R = 0,1,2 -> RGB 2,1,0.
    assert _as_uint8(s["rgb"])[0, 0].tolist() == [2, 1, 0] and _as_uint8(s["rgb"])[1, 0].tolist() == [
        14,
        13,
        12,
    ]


@pytest.mark.parametrize(("slop_s", "n_samples"), [(0.01, 2), (0.001, 4)])
def test_grouping_by_stamp_within_slop(tmp_path: Path, slop_s: float, n_samples: int):
    store = bag_typestore()
    t = store.types
    with Writer(tmp_path / "b", version=8) as writer:
        conns = {
            m: writer.add_connection(getattr(DEFAULT_TOPICS, m), "sensor_msgs/msg/Image", typestore=store)
            for m in ("rgb", "depth")
        }
        for k in range(2):
            for modality, offset_ns, enc, data in (
                ("rgb", 0, "rgb8", np.full(12, k, np.uint8)),
                ("depth", 3_000_000, "32FC1", np.full(4, 2.0 + k, np.float32).view(np.uint8)),  # 3 ms later
            ):
                stamp = T0 + k * PERIOD_NS + offset_ns
                header = t["std_msgs/msg/Header"](
                    stamp=t["builtin_interfaces/msg/Time"](sec=stamp // 10**9, nanosec=stamp % 10**9),
                    frame_id="c",
                )
                msg = t["sensor_msgs/msg/Image"](
                    header=header,
                    height=2,
                    width=2,
                    encoding=enc,
                    is_bigendian=0,
                    step=data.size // 2,
                    data=data,
                )
                writer.write(conns[modality], stamp, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    samples = list(read_bag_samples(tmp_path / "b", slop_s=slop_s))
    assert len(samples) == n_samples
    if n_samples == 2:
        assert [s["present"].tolist() for s in samples] == [[True, True, False]] * 2
        assert [float(s["depth"][0, 0, 0]) for s in samples] == [2.0, 3.0]


def test_headers_and_camera_info(tmp_path: Path, storage: str):
    write_drive_bag(tmp_path / "b", FRAMES[:2], storage=storage)
    msgs = list(iter_bag_messages(tmp_path / "b"))
    by_topic: dict[str, list] = {}
    for m in msgs:
        by_topic.setdefault(m.topic, []).append(m)
    assert [m.timestamp_ns for m in msgs] == sorted(m.timestamp_ns for m in msgs)
    for modality in ("rgb", "depth", "thermal"):
        img = by_topic[getattr(DEFAULT_TOPICS, modality)][1]
        info = by_topic[getattr(DEFAULT_TOPICS, f"{modality}_info")][1].msg
        assert img.msgtype == "sensor_msgs/msg/Image" and img.timestamp_ns == FRAMES[1].stamp_ns
        assert img.msg.header.frame_id == FRAME_IDS[modality] == info.header.frame_id
        assert img.msg.header.stamp.sec * 10**9 + img.msg.header.stamp.nanosec == FRAMES[1].stamp_ns
        assert (info.height, info.width) == (H, W)
        assert np.allclose(info.k.reshape(3, 3), pinhole_intrinsics(H, W))
    assert by_topic[DEFAULT_TOPICS.rgb][0].msg.encoding == "rgb8"
    assert by_topic[DEFAULT_TOPICS.thermal][0].msg.encoding == "mono16"
    assert by_topic[DEFAULT_TOPICS.semantic][0].msg.encoding == "mono8"
    dets = by_topic[DEFAULT_TOPICS.objects][0]
    assert dets.msgtype == "vision_msgs/msg/Detection2DArray"
    d = dets.msg.detections[0]
    assert (d.id, d.results[0].hypothesis.class_id, d.results[0].hypothesis.score) == ("1", "13", 1.0)
    assert (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y) == (
        5.5,
        3.5,
        5.0,
        3.0,
    )
    assert by_topic[DEFAULT_TOPICS.condition][1].msg.data == "night"
    assert isinstance(by_topic[DEFAULT_TOPICS.rgb][0].raw, bytes)


def test_pinhole_intrinsics_values():
    k = pinhole_intrinsics(480, 640, hfov_deg=90.0)
    assert np.allclose(k, [[320.0, 0.0, 319.5], [0.0, 320.0, 239.5], [0.0, 0.0, 1.0]])


def test_bag_dataset_matches_stream_and_resizes(tmp_path: Path, storage: str):
    write_drive_bag(tmp_path / "b", FRAMES, storage=storage, dropouts={"thermal": [(0.15, 0.25)]})
    stream = list(read_bag_samples(tmp_path / "b"))
    ds = BagDataset(tmp_path / "b")
    assert len(ds) == len(stream) == 4
    for i in (2, 0, -1):
        a, b = ds[i], stream[i]
        assert a["present"].tolist() == b["present"].tolist()
        assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["semantic"], b["semantic"])
        assert a["meta"]["stamp_ns"] == b["meta"]["stamp_ns"]
    small = build_dataset(f"bag:{tmp_path / 'b'},size=6x8")[1]
    assert small["rgb"].shape == (3, 6, 8) and small["semantic"].shape == (6, 8)
    # Nearest halving samples source rows/cols 1, 3, 5, ...: object 1 (rows 2-4, cols 3-7) keeps
    # row 3 and cols 3, 5, 7; object 2 (rows 6-10, cols 10-12) keeps rows 7, 9 and col 11.
    assert small["boxes"].tolist() == [[1.0, 1.0, 4.0, 2.0], [5.0, 3.0, 6.0, 5.0]]
    assert small["areas"].tolist() == [3.0, 2.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"storage": "rosbag1"}, r"storage must be one of \['sqlite3', 'mcap'\]"),
        ({"depth_encoding": "16SC1"}, r"depth_encoding must be '32FC1' \(metres\) or '16UC1'"),
        (
            {"dropouts": {"lidar": [(0, 1)]}},
            r"dropouts keys must be modalities \['rgb', 'depth', 'thermal'\]",
        ),
        ({"dropouts": {"rgb": [(2.0, 1.0)]}}, r"start < end"),
    ],
)
def test_write_rejects_bad_arguments(tmp_path: Path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_drive_bag(tmp_path / "b", FRAMES[:1], **kwargs)


def test_existing_bag_path_is_not_overwritten(tmp_path: Path):
    write_drive_bag(tmp_path / "b", FRAMES[:1])
    with pytest.raises(ValueError, match="already exists; rosbag2 writes a new directory"):
        write_drive_bag(tmp_path / "b", FRAMES[:1])


def test_reading_a_missing_bag_names_it(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"bag .*nope does not exist"):
        list(read_bag_samples(tmp_path / "nope"))


def test_sensors_of_other_sizes_are_resized_to_the_rgb_grid(tmp_path: Path):
    store = bag_typestore()
    t = store.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="c")
    thermal = np.array([[0, 65535, 0], [65535, 0, 65535]], np.uint16)
    with Writer(tmp_path / "b", version=8) as writer:
        for topic, h, w, enc, data in (
            (DEFAULT_TOPICS.rgb, 4, 6, "rgb8", np.zeros(4 * 6 * 3, np.uint8)),
            (DEFAULT_TOPICS.thermal, 2, 3, "mono16", thermal.view(np.uint8).reshape(-1)),
        ):
            conn = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=store)
            msg = t["sensor_msgs/msg/Image"](
                header=header, height=h, width=w, encoding=enc, is_bigendian=0, step=data.size // h, data=data
            )
            writer.write(conn, 10**9, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    (s,) = list(read_bag_samples(tmp_path / "b"))
    assert s["rgb"].shape == (3, 4, 6) and s["thermal"].shape == (1, 4, 6)
    assert s["present"].tolist() == [True, False, True]
    # Bilinear 2x upsampling (half-pixel centres): output column c samples source x = c/2 - 0.25,
    # so row 0 reads 0 (clamped), 0.25 * 1, 0.75 * 1 from the source row [0, 1, 0].
    assert s["thermal"][0, 0, :3].tolist() == pytest.approx([0.0, 0.25, 0.75])


@pytest.fixture(scope="module")
def drive_frames():
    from damcseg_core.data.synthetic import SyntheticDrive, SyntheticWorldConfig

    drive = SyntheticDrive(
        SyntheticWorldConfig(size=(48, 96), seed=1, condition_schedule=[(0, "day"), (2, "night")])
    )
    return list(drive.frames(3))


@pytest.mark.parametrize("depth_encoding", ["32FC1", "16UC1"])
def test_synthetic_drive_roundtrip_equals_frame_to_sample(
    tmp_path: Path, storage: str, depth_encoding, drive_frames
):
    from damcseg_core.data.synthetic import frame_to_sample

    write_drive_bag(tmp_path / "b", drive_frames, storage=storage, depth_encoding=depth_encoding)
    samples = list(read_bag_samples(tmp_path / "b"))
    assert [s["condition"] for s in samples] == ["day", "day", "night"]
    for frame, got in zip(drive_frames, samples):
        want = frame_to_sample(frame)
        assert len(frame.labels) > 0
        for key in ("rgb", "thermal", "semantic", "instance", "boxes", "labels", "areas", "present"):
            assert torch.equal(got[key], want[key]), key
        assert torch.allclose(got["occlusion"], want["occlusion"])
        if depth_encoding == "16UC1":
            # Millimetres in 16 bit: half a millimetre of rounding, and nothing beyond 65.535 m.
            far = want["depth"] > 65.5355
            assert bool(far.any()) and bool((got["depth"][far] == 0).all())
            assert float((got["depth"] - want["depth"])[~far].abs().max()) <= 0.0005 + 1e-5
        else:
            assert torch.equal(got["depth"], want["depth"])
        assert got["meta"]["stamp_ns"] == frame.stamp_ns
    info = next(m for m in iter_bag_messages(tmp_path / "b") if m.topic == DEFAULT_TOPICS.depth_info).msg
    assert np.array_equal(info.k.reshape(3, 3), drive_frames[0].intrinsics)


def test_zero_header_stamps_fall_back_to_bag_time(tmp_path: Path):
    store = bag_typestore()
    t = store.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=0, nanosec=0), frame_id="c")
    with Writer(tmp_path / "b", version=8) as writer:
        conn = writer.add_connection(DEFAULT_TOPICS.rgb, "sensor_msgs/msg/Image", typestore=store)
        for k in range(3):
            msg = t["sensor_msgs/msg/Image"](
                header=header, height=1, width=1, encoding="rgb8", is_bigendian=0, step=3,
                data=np.full(3, k, np.uint8),
            )  # fmt: skip
            writer.write(conn, T0 + k * PERIOD_NS, store.serialize_cdr(msg, "sensor_msgs/msg/Image"))
    samples = list(read_bag_samples(tmp_path / "b"))
    assert [s["meta"]["stamp_ns"] for s in samples] == [T0 + k * PERIOD_NS for k in range(3)]
    assert [int(_as_uint8(s["rgb"])[0, 0, 0]) for s in samples] == [0, 1, 2]


# ------------------------------------------------------------------ compressed camera topics


def _smooth_frame(i: int) -> Frame:
    """make_frame with a smooth rgb (JPEG keeps it within a few levels) and depth within 0.3-60 m."""
    frame = make_frame(i)
    y, x = np.mgrid[0:H, 0:W]
    frame.rgb = np.stack([x * 12, y * 15, (x + y) * 6], axis=-1).astype(np.uint8)
    return frame


@pytest.mark.parametrize(
    ("depth_encoding", "depth_transport"),
    [("32FC1", "compressedDepth"), ("16UC1", "compressedDepth"), ("16UC1", "compressed")],
)
def test_compressed_topics_are_written_and_read_back(
    tmp_path: Path, storage: str, depth_encoding, depth_transport
):
    frames = [_smooth_frame(i) for i in range(3)]
    bag = tmp_path / "drive"
    counts = write_drive_bag(
        bag, frames, storage=storage, depth_encoding=depth_encoding,
        transports={"rgb": "compressed", "depth": depth_transport, "thermal": "compressed"},
    )  # fmt: skip
    rgb_topic = f"{DEFAULT_TOPICS.rgb}/compressed"
    depth_topic = f"{DEFAULT_TOPICS.depth}/{depth_transport}"
    assert counts[rgb_topic] == counts[depth_topic] == counts[f"{DEFAULT_TOPICS.thermal}/compressed"] == 3
    assert DEFAULT_TOPICS.rgb not in counts and counts[DEFAULT_TOPICS.rgb_info] == 3
    first = {m.topic: m for m in iter_bag_messages(bag, [rgb_topic, depth_topic])}
    assert first[rgb_topic].msgtype == "sensor_msgs/msg/CompressedImage"
    assert first[rgb_topic].msg.format == "rgb8; jpeg compressed bgr8"
    expected_format = (
        f"{depth_encoding}; compressedDepth png"
        if depth_transport == "compressedDepth"
        else "16UC1; png compressed 16UC1"
    )
    assert first[depth_topic].msg.format == expected_format
    samples = list(read_bag_samples(bag))
    assert len(samples) == 3
    for frame, s in zip(frames, samples):
        assert s["present"].tolist() == [True, True, True]
        assert np.abs(_as_uint8(s["rgb"]).astype(int) - frame.rgb.astype(int)).mean() < 4  # JPEG q90
        assert np.array_equal(
            np.rint(s["thermal"][0].numpy() * 65535).astype(np.uint16), frame.thermal
        )  # PNG
        valid = np.isfinite(frame.depth) & (frame.depth > 0)
        got = s["depth"][0].numpy()
        assert (got[~valid] == 0).all()
        # 16UC1: half a millimetre; 32FC1 inverse depth: at most one quantisation level, which at
        # depth d is A / (A/d - 1) - d = d^2 / (A - d) (A = 10100; truncation rounds towards far)
        d = frame.depth[valid]
        tol = 0.0005 + 1e-6 if depth_encoding == "16UC1" else d**2 / (10100.0 - d) + 1e-4
        assert (np.abs(got[valid] - frame.depth[valid]) <= tol).all()
        assert s["labels"].tolist() == frame.labels.tolist()


def test_bag_dataset_reads_compressed_topics(tmp_path: Path):
    write_drive_bag(tmp_path / "b", [_smooth_frame(0)], transports={"rgb": "compressed"})
    ds = BagDataset(tmp_path / "b")
    assert ds.topics.rgb == f"{DEFAULT_TOPICS.rgb}/compressed" and ds.topics.depth == DEFAULT_TOPICS.depth
    assert len(ds) == 1 and ds[0]["present"].tolist() == [True, True, True]


def test_raw_topic_wins_when_both_are_in_the_bag():
    from damcseg_core.data.rosbag_io import resolve_sensor_topics

    have = [DEFAULT_TOPICS.rgb, f"{DEFAULT_TOPICS.rgb}/compressed", f"{DEFAULT_TOPICS.depth}/compressedDepth"]
    resolved = resolve_sensor_topics(have)
    assert resolved.rgb == DEFAULT_TOPICS.rgb
    assert resolved.depth == f"{DEFAULT_TOPICS.depth}/compressedDepth"
    assert resolved.thermal == DEFAULT_TOPICS.thermal  # absent either way: stays as named


@pytest.mark.parametrize(
    ("transports", "message"),
    [
        ({"lidar": "compressed"}, "transports keys must be modalities"),
        ({"rgb": "theora"}, "transport of rgb must be one of"),
        ({"rgb": "compressedDepth"}, "compressedDepth is a depth transport"),
        ({"depth": "compressed"}, "32FC1 depth cannot go on <topic>/compressed"),
    ],
)
def test_bad_transports_are_refused(tmp_path: Path, transports, message):
    with pytest.raises(ValueError, match=message):
        write_drive_bag(tmp_path / "b", FRAMES[:1], transports=transports)


def test_corrupt_compressed_frame_names_the_topic(tmp_path: Path):
    store = bag_typestore()
    t = store.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="c")
    msg = t["sensor_msgs/msg/CompressedImage"](
        header=header,
        format="rgb8; jpeg compressed bgr8",
        data=np.frombuffer(b"\xff\xd8\xff\xe0garbage", np.uint8),
    )
    topic = f"{DEFAULT_TOPICS.rgb}/compressed"
    with Writer(tmp_path / "b", version=8) as writer:
        conn = writer.add_connection(topic, "sensor_msgs/msg/CompressedImage", typestore=store)
        writer.write(conn, 10**9, store.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage"))
    with pytest.raises(ValueError, match=rf"{topic}: .*(truncated|no JPEG frame header)"):
        list(read_bag_samples(tmp_path / "b"))
