"""Replay a rosbag2 (sqlite3 or mcap) onto live topics with its recorded timing and ``/clock``.

``ros2 bag play --clock`` does this on a full ROS 2 install; the pip-only ROS here has no
rosbag2_py, so this reads the bag with the pure-Python ``rosbags`` library and republishes the
recorded CDR bytes unchanged (no deserialisation on the hot path).

Run: ``python -m damcseg_ros.replay BAG [--rate 1.0] [--no-clock] [--topics /a /b] [--loop N]``
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.highlevel import AnyReader
from rosgraph_msgs.msg import Clock

__all__ = ["BagReplayer", "ReplayStats", "main", "message_class"]


def message_class(msgtype: str):
    """Return the Python class for a ROS type name such as ``sensor_msgs/msg/Image``.

    Raises:
        ValueError: The type's package is not importable (its interfaces are not built or sourced).
    """
    parts = msgtype.split("/")
    if len(parts) == 2:  # "pkg/Type"
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3:
        raise ValueError(f"not a ROS message type name: {msgtype!r} (expected pkg/msg/Type)")
    pkg, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"cannot load message type {msgtype}: {exc}. Build/source the package that defines it "
            "(e.g. `. tools/env.sh` after `make setup`)."
        ) from exc


@dataclass
class ReplayStats:
    """What a replay did: counts per topic and how far publishing lagged the recorded timing."""

    published: dict[str, int] = field(default_factory=dict)
    max_lag_s: float = 0.0  # worst delay of a publish behind its scheduled (rate-scaled) time
    duration_s: float = 0.0  # wall time of the replay
    bag_span_s: float = 0.0  # recorded time between first and last replayed message


class BagReplayer:
    """Publishes a bag's messages on their topics at the recorded relative times.

    Args:
        node: Node that owns the publishers.
        bag: Path of the rosbag2 directory (or mcap/db3 file's directory).
        topics: Only these topics (default: all topics in the bag).
        rate: Playback speed factor (2.0 = twice as fast).
        publish_clock: Publish ``/clock`` with each message's recorded time, for ``use_sim_time``.
        qos_depth: Publisher history depth.
    """

    def __init__(
        self,
        node: Node,
        bag: str | Path,
        topics: Iterable[str] | None = None,
        rate: float = 1.0,
        publish_clock: bool = True,
        qos_depth: int = 10,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        self.bag = Path(bag)
        if not self.bag.exists():
            raise FileNotFoundError(f"bag not found: {self.bag}")
        self.node = node
        self.rate = rate
        self.publish_clock = publish_clock
        self._wanted = set(topics) if topics is not None else None
        self._publishers: dict[str, object] = {}
        qos = QoSProfile(depth=qos_depth, reliability=ReliabilityPolicy.RELIABLE)
        with AnyReader([self.bag]) as reader:
            missing = (self._wanted or set()) - {c.topic for c in reader.connections}
            if missing:
                node.get_logger().warning(f"topics not in {self.bag}: {sorted(missing)}")
            for conn in reader.connections:
                if self._wanted is not None and conn.topic not in self._wanted:
                    continue
                if conn.topic not in self._publishers:
                    self._publishers[conn.topic] = node.create_publisher(
                        message_class(conn.msgtype), conn.topic, qos
                    )
        self._clock_pub = node.create_publisher(Clock, "/clock", 10) if publish_clock else None
        # (topic, recorded timestamp ns, wall-clock publish time ns) of every message, when enabled.
        self.publish_log: list[tuple[str, int, int]] | None = None

    @property
    def topics(self) -> list[str]:
        return sorted(self._publishers)

    def wait_for_subscribers(self, topics: Iterable[str], timeout: float) -> list[str]:
        """Block until each of ``topics`` has a subscriber (DDS discovery can take seconds on a
        loaded machine); returns the topics still without one after ``timeout`` seconds."""
        unknown = set(topics) - set(self._publishers)
        if unknown:
            raise ValueError(f"cannot wait for topics the bag does not replay: {sorted(unknown)}")
        deadline = time.monotonic() + timeout
        while True:
            waiting = [t for t in topics if self._publishers[t].get_subscription_count() == 0]
            if not waiting or time.monotonic() >= deadline:
                return waiting
            time.sleep(0.05)

    def run(self, should_stop: Callable[[], bool] = lambda: False, on_message=None) -> ReplayStats:
        """Replay the bag once, blocking; returns counts and timing figures."""
        stats = ReplayStats(published=dict.fromkeys(self._publishers, 0))
        t_start = time.monotonic()
        first_ts = last_ts = None
        with AnyReader([self.bag]) as reader:
            conns = [c for c in reader.connections if c.topic in self._publishers]
            for conn, timestamp, raw in reader.messages(connections=conns):
                if should_stop():
                    break
                if first_ts is None:
                    first_ts = timestamp
                last_ts = timestamp
                due = t_start + (timestamp - first_ts) / 1e9 / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    stats.max_lag_s = max(stats.max_lag_s, -delay)
                if self._clock_pub is not None:
                    clock = Clock()
                    clock.clock.sec, clock.clock.nanosec = divmod(int(timestamp), 1_000_000_000)
                    self._clock_pub.publish(clock)
                self._publishers[conn.topic].publish(bytes(raw))
                stats.published[conn.topic] += 1
                if self.publish_log is not None:
                    self.publish_log.append((conn.topic, int(timestamp), time.time_ns()))
                if on_message is not None:
                    on_message(conn.topic, timestamp)
        stats.duration_s = time.monotonic() - t_start
        stats.bag_span_s = 0.0 if first_ts is None else (last_ts - first_ts) / 1e9
        return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="damcseg-replay", description=__doc__.splitlines()[0])
    parser.add_argument("bag", type=Path, help="rosbag2 directory")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    parser.add_argument("--topics", nargs="*", default=None, help="only replay these topics")
    parser.add_argument("--loop", type=int, default=1, help="number of passes over the bag")
    parser.add_argument("--start-delay", type=float, default=1.0, help="seconds to wait before playing")
    parser.add_argument(
        "--wait-for", nargs="*", default=[], help="topics that must have a subscriber before playing starts"
    )
    parser.add_argument("--wait-timeout", type=float, default=60.0, help="longest wait for --wait-for (s)")
    parser.add_argument(
        "--publish-log",
        type=Path,
        default=None,
        help="write topic,bag_ns,wall_ns of each publish to this CSV",
    )
    args, ros_args = parser.parse_known_args(argv)

    from damcseg_ros.fastdds import ensure_large_image_profile

    ensure_large_image_profile()  # before rclpy.init: Fast DDS reads it at start-up
    rclpy.init(args=[sys.argv[0], *ros_args])
    node = rclpy.create_node("damcseg_replay")
    try:
        replayer = BagReplayer(node, args.bag, args.topics, args.rate, not args.no_clock)
        node.get_logger().info(f"replaying {args.bag} ({len(replayer.topics)} topics) at x{args.rate}")
        if args.publish_log is not None:
            replayer.publish_log = []
        missing = replayer.wait_for_subscribers(args.wait_for, args.wait_timeout)
        if missing:
            node.get_logger().warning(
                f"no subscriber after {args.wait_timeout} s on {missing}; playing anyway"
            )
        time.sleep(args.start_delay)
        for i in range(args.loop):
            stats = replayer.run()
            node.get_logger().info(
                f"pass {i + 1}: {sum(stats.published.values())} messages, max lag {stats.max_lag_s * 1e3:.1f} ms"
            )
        if replayer.publish_log is not None:
            lines = ["topic,bag_ns,wall_ns", *(f"{t},{b},{w}" for t, b, w in replayer.publish_log)]
            args.publish_log.write_text("\n".join(lines) + "\n")
    except (FileNotFoundError, ValueError) as exc:
        print(f"damcseg-replay: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
