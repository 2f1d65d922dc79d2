"""Fixtures for the node tests: the node as a subprocess, a test node with a frame publisher.

DDS stays on loopback and every test process gets its own ROS domain, so parallel runs and
other engineers' nodes on this machine never see our topics.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
# The large-image Fast DDS profile is set by test/conftest.py through damcseg_ros.fastdds (the one
# policy: it picks the variable the installed Fast DDS reads, FASTRTPS_ on Jazzy's 2.x).

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from damcseg_ros.conversions import array_to_image  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "damcseg.yaml"
HEIGHT, WIDTH = 64, 128
STARTUP_TIMEOUT = 60.0  # node start: torch import + model build on a loaded 2-core machine


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` (the executor spins in the background) until truthy, else fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


class NodeProcess:
    """``python -m damcseg_ros.node`` in a subprocess; its output goes to a log file for failures."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        cmd = [sys.executable, "-m", "damcseg_ros.node", "--ros-args", "--params-file", str(CONFIG), *args]
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_for_output(self, received: Callable[[], Any], what: str = "output") -> None:
        """Wait until ``received()`` is truthy; fail with the node's log if it exits or times out."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and not received():
            if self.proc.poll() is not None:
                pytest.fail(f"node exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        if not received():
            pytest.fail(f"no {what} within {STARTUP_TIMEOUT} s; node log:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: rclpy shuts down cleanly
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode


def unconfigured_node(name: str) -> Iterator[Any]:
    """A DamcsegNode in its own context with autostart off (parameters settable, nothing loaded)."""
    from damcseg_ros.node import DamcsegNode

    context = rclpy.Context()
    rclpy.init(context=context, args=["test", "--ros-args", "-p", "autostart:=false"])
    node = DamcsegNode(name, context=context)
    yield node
    node.destroy_node()
    rclpy.try_shutdown(context=context)


@pytest.fixture(scope="module")
def ros_context() -> Iterator[Any]:
    """An rclpy context with a test node spun by a background executor."""
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("damcseg_test_client", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    yield node
    executor.shutdown(timeout_sec=2.0)
    node.destroy_node()
    rclpy.try_shutdown(context=context)
    thread.join(timeout=5.0)


def sensor_qos() -> QoSProfile:
    return QoSProfile(
        depth=1, reliability=ReliabilityPolicy.BEST_EFFORT, durability=DurabilityPolicy.VOLATILE
    )


def reliable_qos(depth: int = 50) -> QoSProfile:
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


def make_frames(k: int) -> dict[str, np.ndarray]:
    """Small synthetic synced frames: a road-like bottom half, a bright warm box, depth ramp."""
    rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    rgb[: HEIGHT // 2] = (70, 130, 180)
    rgb[HEIGHT // 2 :] = (128, 64, 128)
    x = (8 * k) % (WIDTH - 20)
    rgb[20:50, x : x + 20] = (0, 0, 142)
    depth_mm = np.tile(np.linspace(20000, 2000, HEIGHT, dtype=np.float32)[:, None], (1, WIDTH)).astype(
        np.uint16
    )
    thermal = np.full((HEIGHT, WIDTH), 20000, np.uint16)
    thermal[20:50, x : x + 20] = 40000
    return {"rgb": rgb, "depth": depth_mm, "thermal": thermal}


class FramePublisher:
    """Publishes synced rgb8 / 16UC1 / mono16 frames at ``rate`` Hz with one stamp per frame."""

    ENCODING: ClassVar[dict[str, str]] = {"rgb": "rgb8", "depth": "16UC1", "thermal": "mono16"}

    def __init__(self, node: Any, rate: float = 10.0, namespace: str = "") -> None:
        self.node = node
        self.enabled = {"rgb": True, "depth": True, "thermal": True}
        self.pubs = {
            m: node.create_publisher(Image, f"{namespace}/{m}/image", sensor_qos()) for m in self.enabled
        }
        self.stamps: list[int] = []  # nanoseconds of every frame sent
        self.sent = dict.fromkeys(self.enabled, 0)
        self._k = 0
        self.timer = node.create_timer(1.0 / rate, self._tick)

    def _tick(self) -> None:
        now = self.node.get_clock().now()
        frames = make_frames(self._k)
        self._k += 1
        header = None
        for m, pub in self.pubs.items():
            if not self.enabled[m]:
                continue
            msg = array_to_image(frames[m], self.ENCODING[m])
            msg.header.stamp = now.to_msg()
            msg.header.frame_id = f"{m}_optical"
            header = msg.header
            pub.publish(msg)
            self.sent[m] += 1
        if header is not None:
            self.stamps.append(now.nanoseconds)

    def destroy(self) -> None:
        self.node.destroy_timer(self.timer)
        for pub in self.pubs.values():
            self.node.destroy_publisher(pub)


class Collector:
    """Keeps every message received on a topic (thread-safe list append)."""

    def __init__(self, node: Any, msg_type: Any, topic: str, qos: QoSProfile) -> None:
        self.msgs: list[Any] = []
        self.sub = node.create_subscription(msg_type, topic, self.msgs.append, qos)

    def stamps(self) -> set[int]:
        return {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in self.msgs}


@pytest.fixture(scope="module")
def kit() -> types.SimpleNamespace:
    """The helpers above for test modules (conftest cannot be imported under importlib mode)."""
    return types.SimpleNamespace(
        HEIGHT=HEIGHT,
        WIDTH=WIDTH,
        STARTUP_TIMEOUT=STARTUP_TIMEOUT,
        Collector=Collector,
        FramePublisher=FramePublisher,
        NodeProcess=NodeProcess,
        reliable_qos=reliable_qos,
        sensor_qos=sensor_qos,
        unconfigured_node=unconfigured_node,
        wait_for=wait_for,
    )
