"""Record live topics into a rosbag2 (sqlite3 or mcap) without rosbag2_py.

The pip-only ROS 2 here has no ``ros2 bag record``. This subscribes to the given topics with
``raw=True`` (the CDR bytes exactly as they arrived) and writes them with the ``rosbags``
library, registering any message type that ``rosbags`` does not ship (our SceneComplexity,
vision_msgs) from the ``.msg`` files of the built interface packages on ``AMENT_PREFIX_PATH``.

Run: ``python -m damcseg_ros.recorder OUT_BAG --topic /a:pkg/msg/Type [--topic ...] [--duration S]``
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from damcseg_ros.replay import message_class

__all__ = ["TopicRecorder", "main", "typestore_for"]

_FIELD_TYPE = re.compile(r"^\s*([A-Za-z_][\w/]*)(\[[^\]]*\])?\s+\w+")
_PRIMITIVES = {
    "bool", "byte", "char", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
    "float32", "float64", "string", "wstring", "time", "duration",
}  # fmt: skip


def _find_msg_file(msgtype: str) -> Path:
    pkg, _, name = msgtype.split("/")
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for prefix in prefixes:
        path = Path(prefix) / "share" / pkg / "msg" / f"{name}.msg"
        if path.is_file():
            return path
    raise ValueError(
        f"no definition of {msgtype} found under AMENT_PREFIX_PATH ({len(prefixes)} prefixes); "
        "source the workspace that builds it (`. tools/env.sh`)"
    )


def _distro_store() -> Stores:
    """The rosbags type store of the running distro (``ROS_DISTRO``; Kilted when unknown)."""
    distro = os.environ.get("ROS_DISTRO", "").strip().upper()
    return getattr(Stores, f"ROS2_{distro}", Stores.ROS2_KILTED) if distro else Stores.ROS2_KILTED


def typestore_for(msgtypes: list[str]):
    """A rosbags typestore (this ROS 2 distro's) that also knows ``msgtypes`` and what they reference."""
    store = get_typestore(_distro_store())
    pending, add = list(msgtypes), {}
    while pending:
        msgtype = pending.pop()
        if msgtype in store.types or msgtype in add:
            continue
        text = _find_msg_file(msgtype).read_text()
        add.update(get_types_from_msg(text, msgtype))
        pkg = msgtype.split("/")[0]
        for line in text.splitlines():
            line = line.split("#", 1)[0]
            m = _FIELD_TYPE.match(line)
            if not m or "=" in line:
                continue
            ftype = m.group(1)
            if ftype in _PRIMITIVES:
                continue
            if ftype == "Header":
                ftype = "std_msgs/Header"
            full = (
                f"{ftype.split('/')[0]}/msg/{ftype.split('/')[-1]}" if "/" in ftype else f"{pkg}/msg/{ftype}"
            )
            pending.append(full)
    store.register(add)
    return store


class TopicRecorder:
    """Subscribes to ``topics`` (name -> ``pkg/msg/Type``) and buffers every message received.

    Messages are kept in memory until :meth:`write`, which suits the short runs of the demo and
    tests; each entry is (topic, receive time in ns, raw bytes). Receive times are wall-clock
    (``time.time_ns``) even under ``use_sim_time``, so that latency can be measured against the
    replay's wall-clock publish times.
    """

    def __init__(self, node: Node, topics: dict[str, str], latched: set[str] = frozenset()) -> None:
        self.node = node
        self.topics = dict(topics)
        self.messages: list[tuple[str, int, bytes]] = []
        self.counts = dict.fromkeys(self.topics, 0)
        self._lock = threading.Lock()
        for topic, msgtype in self.topics.items():
            qos = QoSProfile(
                depth=50,
                reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL
                if topic in latched
                else DurabilityPolicy.VOLATILE,
            )
            node.create_subscription(
                message_class(msgtype), topic, lambda raw, t=topic: self._on_message(t, raw), qos, raw=True
            )

    def _on_message(self, topic: str, raw: bytes) -> None:
        stamp = time.time_ns()
        with self._lock:
            self.messages.append((topic, stamp, bytes(raw)))
            self.counts[topic] += 1

    def write(self, path: str | Path, storage: str = "sqlite3") -> Path:
        """Write everything received so far to a new bag at ``path``; returns the path."""
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"output bag already exists: {path} (remove it or choose another path)")
        plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}.get(storage)
        if plugin is None:
            raise ValueError(f"storage must be 'sqlite3' or 'mcap', got {storage!r}")
        store = typestore_for(sorted(set(self.topics.values())))
        with self._lock:
            messages = sorted(self.messages, key=lambda m: m[1])
        with Writer(path, version=8, storage_plugin=plugin) as writer:
            conns = {t: writer.add_connection(t, mt, typestore=store) for t, mt in self.topics.items()}
            for topic, stamp, raw in messages:
                writer.write(conns[topic], stamp, raw)
        return path


def _parse_topic(spec: str) -> tuple[str, str]:
    topic, sep, msgtype = spec.rpartition(":")
    if not sep or not topic.startswith("/") or msgtype.count("/") != 2:
        raise argparse.ArgumentTypeError(f"--topic must look like /name:pkg/msg/Type, got {spec!r}")
    return topic, msgtype


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="damcseg-record", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output bag directory (must not exist)")
    parser.add_argument(
        "--topic", type=_parse_topic, action="append", required=True, help="/name:pkg/msg/Type"
    )
    parser.add_argument(
        "--latched", action="append", default=[], help="topics recorded with transient_local QoS"
    )
    parser.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    parser.add_argument(
        "--duration", type=float, default=0.0, help="stop after S seconds (0 = until SIGINT/SIGTERM)"
    )
    args, ros_args = parser.parse_known_args(argv)
    if args.out.exists():
        parser.error(f"output bag already exists: {args.out}")

    from damcseg_ros.fastdds import ensure_large_image_profile

    ensure_large_image_profile()  # before rclpy.init: Fast DDS reads it at start-up
    rclpy.init(args=[sys.argv[0], *ros_args])
    node = rclpy.create_node("damcseg_recorder")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    recorder = TopicRecorder(node, dict(args.topic), set(args.latched))
    print("RECORDING", flush=True)
    t_end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    try:
        while not stop.is_set() and time.monotonic() < t_end:
            rclpy.spin_once(node, timeout_sec=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        recorder.write(args.out, args.storage)
        print(f"wrote {sum(recorder.counts.values())} messages to {args.out}: {recorder.counts}", flush=True)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
