"""rosbag2 files (sqlite3 or mcap) of a drive, written and read with ``rosbags`` (no ROS install).

Writing (:func:`write_drive_bag`) turns synthetic frames into the standard topics a real robot
would record, so the node, replay and evaluation can be exercised on bags:

=============================  ==================================  ==========================================
topic                          type                                content
=============================  ==================================  ==========================================
/camera/rgb/image_raw          sensor_msgs/msg/Image               ``rgb8``
/camera/depth/image_raw        sensor_msgs/msg/Image               ``32FC1`` metres (NaN invalid) or ``16UC1``
                                                                   millimetres (0 invalid), REP 118
/camera/thermal/image_raw      sensor_msgs/msg/Image               ``mono16`` raw counts
/camera/{rgb,depth,thermal}/   sensor_msgs/msg/CameraInfo          the frame's K (or a 90 deg pinhole), P = [K|0],
camera_info                                                        ``plumb_bob`` with zero D
/ground_truth/semantic         sensor_msgs/msg/Image               ``mono8`` train ids (255 ignore)
/ground_truth/instance         sensor_msgs/msg/Image               ``16UC1``: 0 none, k = detection with id "k"
/ground_truth/objects          vision_msgs/msg/Detection2DArray    one Detection2D per object: bbox (visible
                                                                   pixels), class_id = train id as text, score
                                                                   1, id = instance index "k"
/ground_truth/occlusion        std_msgs/msg/Float32MultiArray      occluded fraction per detection, same order
/ground_truth/condition        std_msgs/msg/String                 day / dusk / night / fog
=============================  ==================================  ==========================================

With ``transports`` the sensor images go on image_transport's topics instead, as
``sensor_msgs/msg/CompressedImage`` (:mod:`damcseg_core.data.compressed_image`):
``<topic>/compressed`` (rgb: JPEG; thermal mono16 and 16UC1 depth: 16-bit PNG) or, for depth,
``<topic>/compressedDepth`` (12-byte ConfigHeader + PNG; 32FC1 as quantised inverse depth).

Every message's bag timestamp equals the frame stamp, and every header carries that stamp and the
frame id of its sensor (``camera_rgb_optical_frame`` etc.; ground truth uses the RGB camera's, whose
pixel grid it labels). vision_msgs is not in the rosbags type store, so its 4.x definitions are
registered from their .msg text below (field for field those of vision_msgs 4.1 and of
``compat/vision_msgs``). Occlusion has no field in vision_msgs, hence the sibling topic.

Reading (:func:`read_bag_samples`, :class:`BagDataset`) groups messages by header stamp (bag time
for header-less messages) within ``slop_s`` and yields the canonical sample dict; a topic missing
from the bag or from a group simply leaves that modality (or label) absent. A sensor whose raw topic is not in
the bag is read from ``<topic>/compressed`` (or, for depth, ``<topic>/compressedDepth``) when
that is there, so bags recorded from compressed camera topics evaluate unchanged.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from damcseg_core import MODALITIES
from damcseg_core.data import compressed_image
from damcseg_core.data.io_utils import make_sample, parse_size

__all__ = [
    "DEFAULT_HFOV_DEG",
    "DEFAULT_TOPICS",
    "FRAME_IDS",
    "BagDataset",
    "BagMessage",
    "BagTopics",
    "bag_typestore",
    "image_from_msg",
    "iter_bag_messages",
    "pinhole_intrinsics",
    "read_bag_samples",
    "resolve_sensor_topics",
    "write_drive_bag",
]

DEFAULT_HFOV_DEG = 90.0
"""Horizontal field of view of the pinhole model used when no intrinsics are given."""


@dataclasses.dataclass(frozen=True)
class BagTopics:
    """Topic names of a drive bag (defaults: the standard camera and ground-truth topics)."""

    rgb: str = "/camera/rgb/image_raw"
    depth: str = "/camera/depth/image_raw"
    thermal: str = "/camera/thermal/image_raw"
    rgb_info: str = "/camera/rgb/camera_info"
    depth_info: str = "/camera/depth/camera_info"
    thermal_info: str = "/camera/thermal/camera_info"
    semantic: str = "/ground_truth/semantic"
    instance: str = "/ground_truth/instance"
    objects: str = "/ground_truth/objects"
    occlusion: str = "/ground_truth/occlusion"
    condition: str = "/ground_truth/condition"


DEFAULT_TOPICS = BagTopics()
FRAME_IDS = {
    "rgb": "camera_rgb_optical_frame",
    "depth": "camera_depth_optical_frame",
    "thermal": "camera_thermal_optical_frame",
}
"""Header frame id of each sensor (REP 103 optical frames)."""

_IMAGE = "sensor_msgs/msg/Image"
_COMPRESSED = "sensor_msgs/msg/CompressedImage"
_INFO = "sensor_msgs/msg/CameraInfo"
_DETECTIONS = "vision_msgs/msg/Detection2DArray"
_FLOATS = "std_msgs/msg/Float32MultiArray"
_STRING = "std_msgs/msg/String"

_VISION_MSGS = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n"
        "vision_msgs/BoundingBox2D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nvision_msgs/Detection2D[] detections\n",
}


def bag_typestore():
    """The rosbags type store used here: ROS 2 Kilted plus vision_msgs 4.x."""
    store = get_typestore(Stores.ROS2_KILTED)
    types: dict = {}
    for name, text in _VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def pinhole_intrinsics(height: int, width: int, hfov_deg: float = DEFAULT_HFOV_DEG) -> np.ndarray:
    """3x3 camera matrix of an ideal pinhole: square pixels, principal point at the image centre.

    ``fx = fy = (width / 2) / tan(hfov / 2)``, ``cx = (width - 1) / 2``, ``cy = (height - 1) / 2``.
    """
    if not 0.0 < hfov_deg < 180.0:
        raise ValueError(f"hfov_deg must be in (0, 180), got {hfov_deg}")
    f = (width / 2.0) / np.tan(np.deg2rad(hfov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


class _MsgFactory:
    """Builds rosbags message objects for one type store."""

    def __init__(self, store) -> None:
        self.store = store
        self.t = store.types

    def header(self, stamp_ns: int, frame_id: str):
        stamp = self.t["builtin_interfaces/msg/Time"](
            sec=int(stamp_ns // 10**9), nanosec=int(stamp_ns % 10**9)
        )
        return self.t["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def image(self, header, array: np.ndarray, encoding: str):
        array = np.ascontiguousarray(array)
        h, w = array.shape[:2]
        # Multi-byte pixels are written little-endian (is_bigendian=0), as every x86/ARM driver does.
        data = array.astype(array.dtype.newbyteorder("<"), copy=False).view(np.uint8).reshape(-1)
        return self.t[_IMAGE](
            header=header,
            height=h,
            width=w,
            encoding=encoding,
            is_bigendian=0,
            step=data.size // h,
            data=data,
        )

    def compressed(self, header, fmt: str, data: bytes):
        return self.t[_COMPRESSED](header=header, format=fmt, data=np.frombuffer(data, np.uint8))

    def camera_info(self, header, height: int, width: int, k: np.ndarray):
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](
            x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
        )
        p = np.zeros((3, 4))
        p[:, :3] = k
        return self.t[_INFO](
            header=header, height=height, width=width, distortion_model="plumb_bob",
            d=np.zeros(5), k=np.asarray(k, dtype=np.float64).reshape(9), r=np.eye(3).reshape(9),
            p=p.reshape(12), binning_x=0, binning_y=0, roi=roi,
        )  # fmt: skip

    def detections(self, header, boxes: np.ndarray, labels: np.ndarray):
        t = self.t
        dets = []
        for k, (box, label) in enumerate(zip(np.asarray(boxes, np.float64), np.asarray(labels)), start=1):
            x1, y1, x2, y2 = (float(v) for v in box)
            pose = t["geometry_msgs/msg/PoseWithCovariance"](
                pose=t["geometry_msgs/msg/Pose"](
                    position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                    orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
                ),
                covariance=np.zeros(36),
            )
            hyp = t["vision_msgs/msg/ObjectHypothesisWithPose"](
                hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=str(int(label)), score=1.0),
                pose=pose,
            )
            center = t["vision_msgs/msg/Pose2D"](
                position=t["vision_msgs/msg/Point2D"](x=(x1 + x2) / 2.0, y=(y1 + y2) / 2.0), theta=0.0
            )
            bbox = t["vision_msgs/msg/BoundingBox2D"](center=center, size_x=x2 - x1, size_y=y2 - y1)
            dets.append(t["vision_msgs/msg/Detection2D"](header=header, results=[hyp], bbox=bbox, id=str(k)))
        return t[_DETECTIONS](header=header, detections=dets)

    def floats(self, values: np.ndarray, label: str):
        t = self.t
        values = np.asarray(values, dtype=np.float32).reshape(-1)
        dim = t["std_msgs/msg/MultiArrayDimension"](label=label, size=len(values), stride=len(values))
        layout = t["std_msgs/msg/MultiArrayLayout"](dim=[dim], data_offset=0)
        return t[_FLOATS](layout=layout, data=values)

    def string(self, text: str):
        return self.t[_STRING](data=text)


def _in_windows(t_s: float, windows: Sequence[tuple[float, float]]) -> bool:
    return any(start <= t_s < end for start, end in windows)


def _check_dropouts(
    dropouts: Mapping[str, Sequence[tuple[float, float]]],
) -> dict[str, list[tuple[float, float]]]:
    out = {}
    for modality, windows in dropouts.items():
        if modality not in MODALITIES:
            raise ValueError(f"dropouts keys must be modalities {list(MODALITIES)}, got {modality!r}")
        checked = []
        for window in windows:
            if len(window) != 2 or not window[0] < window[1]:
                raise ValueError(
                    f"dropout window for {modality} must be (start_s, end_s) with start < end, got {window!r}"
                )
            checked.append((float(window[0]), float(window[1])))
        out[modality] = checked
    return out


def _depth_payload(depth: np.ndarray, encoding: str) -> np.ndarray:
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    if encoding == "32FC1":
        return np.where(valid, depth, np.float32(np.nan)).astype(np.float32)
    mm = np.rint(np.where(valid, depth, 0.0) * 1000.0)
    # Beyond 65.535 m a 16-bit millimetre value cannot hold the reading: invalid (0), as drivers do.
    mm[(mm > 65535) | (mm < 0)] = 0
    return mm.astype(np.uint16)


def _check_transports(transports: Mapping[str, str], depth_encoding: str) -> dict[str, str]:
    out = dict.fromkeys(MODALITIES, "raw")
    for modality, transport in transports.items():
        if modality not in MODALITIES:
            raise ValueError(f"transports keys must be modalities {list(MODALITIES)}, got {modality!r}")
        if transport not in compressed_image.TRANSPORTS:
            raise ValueError(
                f"transport of {modality} must be one of {list(compressed_image.TRANSPORTS)}, got {transport!r}"
            )
        if transport == "compressedDepth" and modality != "depth":
            raise ValueError(f"compressedDepth is a depth transport, not one for {modality}")
        if (modality, transport, depth_encoding) == ("depth", "compressed", "32FC1"):
            raise ValueError(
                "32FC1 depth cannot go on <topic>/compressed (PNG/JPEG hold integers): use "
                "transport 'compressedDepth' or depth_encoding='16UC1'"
            )
        out[modality] = transport
    return out


def _compressed_payload(modality: str, transport: str, array: np.ndarray, encoding: str, depth_max: float):
    if transport == "compressedDepth":
        return compressed_image.encode_compressed_depth(array, encoding, depth_max=depth_max)
    codec = "jpeg" if modality == "rgb" else "png"  # 16-bit thermal counts and depth stay lossless
    return compressed_image.encode_compressed(array, encoding, codec, quality=90)


def write_drive_bag(
    path: str | Path,
    frames: Iterable[Any],
    storage: str = "sqlite3",
    depth_encoding: str = "32FC1",
    dropouts: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    topics: BagTopics = DEFAULT_TOPICS,
    intrinsics: np.ndarray | None = None,
    transports: Mapping[str, str] | None = None,
    compressed_depth_max: float = 100.0,
) -> dict[str, int]:
    """Write synthetic frames to a new rosbag2 on the standard topics (see the module docstring).

    Args:
        path: Bag directory to create; it must not exist yet.
        frames: ``SyntheticFrame``-like objects (``rgb``, ``depth``, ``thermal``, ``semantic``,
            ``instance``, ``boxes``, ``labels``, ``occlusion``, ``condition``, ``stamp_ns``); a
            modality that is ``None`` on a frame is not written for that frame.
        storage: ``"sqlite3"`` or ``"mcap"``.
        depth_encoding: ``"32FC1"`` (metres, NaN invalid) or ``"16UC1"`` (millimetres, 0 invalid;
            readings beyond 65.535 m become 0).
        dropouts: Per modality, ``(start_s, end_s)`` windows in seconds since the first frame's
            stamp (start inclusive, end exclusive) in which that sensor's image and camera_info
            are not written, as when a sensor drops out.
        topics: Topic names.
        intrinsics: 3x3 camera matrix shared by the three (co-registered) cameras. Default: the
            frame's own ``intrinsics`` (``SyntheticFrame`` carries its camera's), else
            :func:`pinhole_intrinsics` of the frame size with a 90 degree horizontal FOV.
        transports: Per modality ``raw`` (default), ``compressed`` (on ``<topic>/compressed``:
            rgb as JPEG quality 90, thermal and 16UC1 depth as 16-bit PNG) or, for depth,
            ``compressedDepth`` (on ``<topic>/compressedDepth``); camera_info stays where it is.
        compressed_depth_max: compressedDepth's ``depth_max`` (m): farther readings become
            invalid (image_transport's default is 10 m; the synthetic drive sees farther).

    Returns:
        Number of messages written per topic.

    Raises:
        ValueError: Unknown storage, depth encoding or dropout modality, a bad window, or an
            existing ``path``.
    """
    plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
    if storage not in plugins:
        raise ValueError(f"storage must be one of {list(plugins)}, got {storage!r}")
    if depth_encoding not in ("32FC1", "16UC1"):
        raise ValueError(
            f"depth_encoding must be '32FC1' (metres) or '16UC1' (millimetres), got {depth_encoding!r}"
        )
    windows = _check_dropouts(dropouts or {})
    transport_of = _check_transports(transports or {}, depth_encoding)
    path = Path(path)
    if path.exists():
        raise ValueError(f"bag path {path} already exists; rosbag2 writes a new directory, pick another path")
    store = bag_typestore()
    make = _MsgFactory(store)
    counts: dict[str, int] = {}
    with Writer(path, version=8, storage_plugin=plugins[storage]) as writer:
        conns: dict[str, Any] = {}

        def put(topic: str, msgtype: str, msg: Any, stamp_ns: int) -> None:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], stamp_ns, store.serialize_cdr(msg, msgtype))
            counts[topic] = counts.get(topic, 0) + 1

        t0: int | None = None
        for frame in frames:
            stamp = int(frame.stamp_ns)
            t0 = stamp if t0 is None else t0
            t_s = (stamp - t0) / 1e9
            sensors = {
                "rgb": (frame.rgb, "rgb8"),
                "depth": (
                    None if frame.depth is None else _depth_payload(frame.depth, depth_encoding),
                    depth_encoding,
                ),
                "thermal": (
                    None if frame.thermal is None else np.asarray(frame.thermal, np.uint16),
                    "mono16",
                ),
            }
            ref = next((a for a, _ in sensors.values() if a is not None), frame.semantic)
            h, w = np.asarray(ref).shape[:2]
            k = intrinsics if intrinsics is not None else getattr(frame, "intrinsics", None)
            k = pinhole_intrinsics(h, w) if k is None else np.asarray(k, np.float64).reshape(3, 3)
            for modality, (array, encoding) in sensors.items():
                if array is None or _in_windows(t_s, windows.get(modality, ())):
                    continue
                header = make.header(stamp, FRAME_IDS[modality])
                put(getattr(topics, f"{modality}_info"), _INFO, make.camera_info(header, h, w, k), stamp)
                topic = getattr(topics, modality)
                if transport_of[modality] == "raw":
                    put(topic, _IMAGE, make.image(header, array, encoding), stamp)
                else:
                    fmt, data = _compressed_payload(
                        modality, transport_of[modality], array, encoding, compressed_depth_max
                    )
                    put(
                        compressed_image.transport_topic(topic, transport_of[modality]),
                        _COMPRESSED,
                        make.compressed(header, fmt, data),
                        stamp,
                    )
            gt_header = make.header(stamp, FRAME_IDS["rgb"])
            if frame.semantic is not None:
                put(
                    topics.semantic,
                    _IMAGE,
                    make.image(gt_header, np.asarray(frame.semantic, np.uint8), "mono8"),
                    stamp,
                )
            if frame.labels is not None:
                if frame.instance is not None:
                    inst = np.asarray(frame.instance)
                    if inst.max(initial=0) > 65535:
                        raise ValueError("instance ids above 65535 do not fit the 16UC1 instance image")
                    put(
                        topics.instance, _IMAGE, make.image(gt_header, inst.astype(np.uint16), "16UC1"), stamp
                    )
                put(topics.objects, _DETECTIONS, make.detections(gt_header, frame.boxes, frame.labels), stamp)
                occ = np.zeros(len(frame.labels)) if frame.occlusion is None else frame.occlusion
                put(topics.occlusion, _FLOATS, make.floats(occ, "occlusion"), stamp)
            put(topics.condition, _STRING, make.string(str(frame.condition)), stamp)
    return counts


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


class BagMessage(NamedTuple):
    """One message of a bag, in bag order."""

    topic: str
    msgtype: str
    timestamp_ns: int  # bag (receive/log) time
    raw: bytes  # CDR bytes exactly as stored
    msg: Any  # deserialized rosbags message, or None when not asked for


def _open(path: str | Path) -> AnyReader:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bag {path} does not exist (pass a rosbag2 directory, sqlite3 or mcap)")
    return AnyReader([path], default_typestore=bag_typestore())


def iter_bag_messages(
    path: str | Path, topics: Sequence[str] | None = None, deserialize: bool = True
) -> Iterator[BagMessage]:
    """Yield every message of a bag (optionally only ``topics``) in bag-time order, for replay.

    Args:
        path: rosbag2 directory (sqlite3 or mcap storage).
        topics: Topics to keep; ``None`` keeps all.
        deserialize: Also deserialize each message (``BagMessage.msg``).
    """
    with _open(path) as reader:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, timestamp, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype) if deserialize else None
            yield BagMessage(conn.topic, conn.msgtype, timestamp, bytes(raw), msg)


_ENCODINGS = {
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1),
    "8UC1": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}


def image_from_msg(msg: Any, topic: str = "") -> tuple[np.ndarray, str]:
    """Decode a ``sensor_msgs/Image`` into a numpy array (colour as RGB) and its encoding.

    Honours ``step`` (row padding) and ``is_bigendian``.

    Raises:
        ValueError: The encoding is not one of rgb8, bgr8, rgba8, bgra8, mono8, 8UC1, mono16,
            16UC1, 32FC1, or the data is shorter than ``step * height``.
    """
    enc = msg.encoding
    if enc not in _ENCODINGS:
        raise ValueError(
            f"{topic or 'image'}: unsupported encoding {enc!r}; expected one of {list(_ENCODINGS)}"
        )
    dtype, ch = _ENCODINGS[enc]
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    row_bytes = w * ch * dt.itemsize
    if step < row_bytes or data.size < step * h:
        raise ValueError(
            f"{topic or 'image'}: {enc} {w}x{h} needs {row_bytes} bytes per row and {step * h} in all, "
            f"got step {step} and {data.size} bytes"
        )
    rows = data[: step * h].reshape(h, step)[:, :row_bytes]
    arr = np.ascontiguousarray(rows).view(dt).astype(dtype).reshape((h, w) if ch == 1 else (h, w, ch))
    if enc.startswith("bgr"):
        arr = arr[:, :, [2, 1, 0] + ([3] if ch == 4 else [])]
    if ch == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr), enc


def _header_first(store, msgtype: str) -> bool:
    cls = store.types.get(msgtype)
    fields = list(getattr(cls, "__dataclass_fields__", {}))
    return bool(fields) and fields[0] == "header"


def _cdr_header_stamp(raw: bytes | memoryview) -> int:
    # CDR: 4-byte encapsulation header (byte 1: 1 = little endian), then the Header's
    # builtin_interfaces/Time {int32 sec, uint32 nanosec} as the first member.
    endian = "<" if raw[1] == 1 else ">"
    sec, nanosec = struct.unpack_from(endian + "iI", raw, 4)
    return sec * 10**9 + nanosec


def _stamp_of(raw: bytes | memoryview, header_first: bool, timestamp: int) -> int:
    """Grouping key of a message: its header stamp, or the bag time when it has no header or a
    zero stamp (drivers that never fill stamps must not collapse the whole bag into one frame)."""
    stamp = _cdr_header_stamp(raw) if header_first else 0
    return stamp if stamp > 0 else timestamp


@dataclasses.dataclass
class _Group:
    stamp_ns: int
    members: list[tuple[int, int, int]]  # (connection id, bag timestamp, stamp)


def _index_groups(reader: AnyReader, conns: list, slop_ns: int) -> list[_Group]:
    """Group the bag's messages by stamp: a new group starts once a stamp is more than ``slop_ns``
    after the group's first stamp, or when a topic repeats inside the group."""
    header_first = {c.id: _header_first(reader.typestore, c.msgtype) for c in conns}
    topic_of = {c.id: c.topic for c in conns}
    entries = []
    for conn, timestamp, raw in reader.messages(connections=conns):
        stamp = _stamp_of(raw, header_first[conn.id], timestamp)
        entries.append((stamp, timestamp, conn.id))
    entries.sort()
    groups: list[_Group] = []
    seen: set[str] = set()
    for stamp, timestamp, cid in entries:
        if not groups or stamp - groups[-1].stamp_ns > slop_ns or topic_of[cid] in seen:
            groups.append(_Group(stamp, []))
            seen = set()
        groups[-1].members.append((cid, timestamp, stamp))
        seen.add(topic_of[cid])
    return groups


def resolve_sensor_topics(available: Iterable[str], topics: BagTopics = DEFAULT_TOPICS) -> BagTopics:
    """``topics`` with each sensor whose raw topic is missing moved to its compressed topic.

    A sensor keeps its raw topic when the bag has it; otherwise ``<topic>/compressed`` is used,
    and for depth then ``<topic>/compressedDepth``, when the bag has that.
    """
    have = set(available)
    changes = {}
    for modality in MODALITIES:
        topic = getattr(topics, modality)
        if topic in have:
            continue
        options = ("compressed", "compressedDepth") if modality == "depth" else ("compressed",)
        for transport in options:
            candidate = compressed_image.transport_topic(topic, transport)
            if candidate in have:
                changes[modality] = candidate
                break
    return dataclasses.replace(topics, **changes)


def _sensor_image(msg: Any, topic: str, modality: str) -> tuple[np.ndarray, str]:
    """A sensor message (Image, or CompressedImage from image_transport) as (array, encoding)."""
    if hasattr(msg, "encoding"):
        return image_from_msg(msg, topic)
    transport = "compressedDepth" if topic.endswith("/compressedDepth") else "compressed"
    try:
        decoded = compressed_image.decode(msg, modality, transport)
    except compressed_image.CompressedImageError as exc:
        raise ValueError(f"{topic}: {exc}") from exc
    return decoded.array, decoded.encoding


def _topic_list(topics: BagTopics) -> list[str]:
    return [topics.rgb, topics.depth, topics.thermal, topics.semantic, topics.instance,
            topics.objects, topics.occlusion, topics.condition]  # fmt: skip


def _sample_from_messages(
    msgs: Mapping[str, Any],
    topics: BagTopics,
    size: tuple[int, int] | None,
    meta: dict[str, Any],
) -> dict[str, Any] | None:
    arrays: dict[str, np.ndarray] = {}
    if topics.rgb in msgs:
        rgb, enc = _sensor_image(msgs[topics.rgb], topics.rgb, "rgb")
        if rgb.ndim != 3:
            raise ValueError(f"{topics.rgb}: expected a colour image (rgb8/bgr8), got {enc}")
        arrays["rgb"] = rgb
    if topics.depth in msgs:
        depth, enc = _sensor_image(msgs[topics.depth], topics.depth, "depth")
        if enc in ("16UC1", "mono16"):
            depth = depth.astype(np.float32) / 1000.0  # REP 118: 16-bit depth is millimetres
        elif enc != "32FC1":
            raise ValueError(
                f"{topics.depth}: depth must be 32FC1 (metres) or 16UC1 (millimetres), got {enc}"
            )
        arrays["depth"] = depth
    if topics.thermal in msgs:
        thermal, enc = _sensor_image(msgs[topics.thermal], topics.thermal, "thermal")
        if thermal.ndim != 2:
            raise ValueError(
                f"{topics.thermal}: thermal must be single channel (mono8/mono16/16UC1), got {enc}"
            )
        arrays["thermal"] = thermal
    if not arrays:
        return None
    semantic = None
    if topics.semantic in msgs:
        semantic, enc = image_from_msg(msgs[topics.semantic], topics.semantic)
        if semantic.dtype != np.uint8 or semantic.ndim != 2:
            raise ValueError(f"{topics.semantic}: expected mono8 train ids, got {enc}")
    labels = boxes = instance = occlusion = None
    if topics.objects in msgs:
        dets = msgs[topics.objects].detections
        labels = np.array(
            [int(d.results[0].hypothesis.class_id) if d.results else 255 for d in dets], np.int64
        )
        boxes = np.array(
            [[d.bbox.center.position.x - d.bbox.size_x / 2, d.bbox.center.position.y - d.bbox.size_y / 2,
              d.bbox.center.position.x + d.bbox.size_x / 2, d.bbox.center.position.y + d.bbox.size_y / 2]
             for d in dets],
            dtype=np.float32,
        ).reshape(-1, 4)  # fmt: skip
        if topics.occlusion in msgs:
            occ = np.asarray(msgs[topics.occlusion].data, dtype=np.float32)
            occlusion = occ if occ.shape == labels.shape else None
        # The instance image links pixels to detections by id "k"; use it only when the ids are
        # exactly 1..N in order, else fall back to the boxes alone.
        if topics.instance in msgs and [d.id for d in dets] == [str(k) for k in range(1, len(dets) + 1)]:
            inst, _ = image_from_msg(msgs[topics.instance], topics.instance)
            instance = inst.astype(np.int32)
    condition = msgs[topics.condition].data if topics.condition in msgs else "unknown"
    return make_sample(
        **arrays, semantic=semantic, instance=instance, labels=labels, boxes=boxes, occlusion=occlusion,
        condition=condition, meta=meta, size=size,
    )  # fmt: skip


def read_bag_samples(
    path: str | Path,
    topics: BagTopics = DEFAULT_TOPICS,
    slop_s: float = 0.01,
    size: str | Sequence[int] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the canonical sample of every frame in a bag, in stamp order.

    Messages whose stamps lie within ``slop_s`` of a group's first stamp form one frame. A
    missing sensor topic leaves that modality absent (``present`` False); missing ground truth
    gives all-255 labels (``meta["has_labels"] = False``) or no boxes (``has_boxes = False``).
    Groups without any of rgb/depth/thermal (all sensors out) are skipped.

    Args:
        path: rosbag2 directory (sqlite3 or mcap).
        topics: Topic names to read.
        slop_s: Largest stamp difference inside one frame; keep it under half the frame period.
        size: Optional output ``(H, W)`` or ``"HxW"``.
    """
    if slop_s < 0:
        raise ValueError(f"slop_s must be >= 0 seconds, got {slop_s}")
    size = parse_size(size)
    slop_ns = round(slop_s * 1e9)
    path = Path(path)
    with _open(path) as reader:
        topics = resolve_sensor_topics((c.topic for c in reader.connections), topics)
        wanted = set(_topic_list(topics))
        conns = [c for c in reader.connections if c.topic in wanted]
        groups = _index_groups(reader, conns, slop_ns)
        # Identical (connection, bag time, stamp) keys can repeat (duplicated messages): each
        # occurrence goes to the next group that holds such a member, in stamp order.
        owner: dict[tuple[int, int, int], list[int]] = {}
        for gi, group in enumerate(groups):
            for member in group.members:
                owner.setdefault(member, []).append(gi)
        pending: dict[int, dict[str, Any]] = {}
        remaining = [len(g.members) for g in groups]
        header_first = {c.id: _header_first(reader.typestore, c.msgtype) for c in conns}
        state = {"next": 0, "emitted": 0}

        def flush(upto_complete: bool) -> Iterator[dict[str, Any]]:
            # Emit groups in stamp order once complete (messages arrive in bag order, which may
            # differ from stamp order); at the end, everything left.
            while state["next"] < len(groups) and (remaining[state["next"]] == 0 or not upto_complete):
                gi = state["next"]
                meta = {
                    "dataset": "bag", "sequence": path.name, "frame": state["emitted"],
                    "stamp_ns": groups[gi].stamp_ns, "path": str(path),
                }  # fmt: skip
                sample = _sample_from_messages(pending.pop(gi, {}), topics, size, meta)
                state["next"] += 1
                if sample is not None:
                    state["emitted"] += 1
                    yield sample

        for conn, timestamp, raw in reader.messages(connections=conns):
            stamp = _stamp_of(raw, header_first[conn.id], timestamp)
            gi = owner[(conn.id, timestamp, stamp)].pop(0)
            pending.setdefault(gi, {})[conn.topic] = reader.deserialize(raw, conn.msgtype)
            remaining[gi] -= 1
            yield from flush(upto_complete=True)
        yield from flush(upto_complete=False)


class BagDataset(torch.utils.data.Dataset):
    """Random access to the frames of a bag (same grouping and samples as :func:`read_bag_samples`).

    The bag is indexed once (stamps only); each item reads just its own time window.
    """

    def __init__(
        self,
        path: str | Path,
        topics: BagTopics = DEFAULT_TOPICS,
        slop_s: float = 0.01,
        size: str | Sequence[int] | None = None,
    ) -> None:
        if slop_s < 0:
            raise ValueError(f"slop_s must be >= 0 seconds, got {slop_s}")
        self.path = Path(path)
        self.size = parse_size(size)
        with _open(self.path) as reader:
            topics = resolve_sensor_topics((c.topic for c in reader.connections), topics)
            self.topics = topics
            wanted = set(_topic_list(topics))
            sensors = {topics.rgb, topics.depth, topics.thermal}
            conns = [c for c in reader.connections if c.topic in wanted]
            topic_of = {c.id: c.topic for c in conns}
            groups = _index_groups(reader, conns, round(slop_s * 1e9))
        # Keep only frames with a sensor message, so every index yields a sample.
        self.groups = [g for g in groups if any(topic_of[m[0]] in sensors for m in g.members)]
        self._topic_of = topic_of
        if not self.groups:
            raise ValueError(
                f"bag {self.path} has no messages on the sensor topics {sorted(sensors)}; "
                "check the topic names (BagTopics)"
            )

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"bag index {index} out of range for {len(self)} frames")
        index = index % len(self)
        group = self.groups[index]
        members = set(group.members)
        t_lo = min(m[1] for m in members)
        t_hi = max(m[1] for m in members)
        msgs: dict[str, Any] = {}
        with _open(self.path) as reader:
            conns = [c for c in reader.connections if c.id in {m[0] for m in members}]
            header_first = {c.id: _header_first(reader.typestore, c.msgtype) for c in conns}
            for conn, timestamp, raw in reader.messages(connections=conns, start=t_lo, stop=t_hi + 1):
                stamp = _stamp_of(raw, header_first[conn.id], timestamp)
                if (conn.id, timestamp, stamp) in members:
                    msgs[conn.topic] = reader.deserialize(raw, conn.msgtype)
        meta = {
            "dataset": "bag", "sequence": self.path.name, "frame": index,
            "stamp_ns": group.stamp_ns, "path": str(self.path),
        }  # fmt: skip
        sample = _sample_from_messages(msgs, self.topics, self.size, meta)
        assert sample is not None  # groups without a sensor message were dropped in __init__
        return sample
