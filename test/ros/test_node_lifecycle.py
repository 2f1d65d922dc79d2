"""Lifecycle (autostart off, driven over the lifecycle services) and the QoS-mismatch warning."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("vision_msgs.msg", reason="vision_msgs not built (source tools/env.sh)")
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import LabelInfo

pytestmark = pytest.mark.ros


def call(kit, node, client, request, what):
    assert client.wait_for_service(timeout_sec=kit.STARTUP_TIMEOUT), f"{client.srv_name} not available"
    future = client.call_async(request)
    kit.wait_for(future.done, 30.0, what)
    return future.result()


@pytest.fixture
def node_process(kit, tmp_path):
    procs = []

    def start(*args):
        proc = kit.NodeProcess(["-p", "model:=damcseg_tiny", *args], tmp_path / f"node{len(procs)}.log")
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.stop()


def test_lifecycle_transitions_gate_the_outputs(kit, ros_context, node_process):
    node = ros_context
    proc = node_process("-p", "autostart:=false", "-p", "use_depth:=false", "-p", "use_thermal:=false")
    change = node.create_client(ChangeState, "/damcseg/change_state")
    get = node.create_client(GetState, "/damcseg/get_state")
    masks = kit.Collector(node, Image, "/damcseg/segmentation", kit.reliable_qos())
    qos = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    labels = kit.Collector(node, LabelInfo, "/damcseg/label_info", qos)
    frames = kit.FramePublisher(node, rate=10.0)
    frames.enabled.update(depth=False, thermal=False)

    def state():
        return call(kit, node, get, GetState.Request(), "get_state").current_state.id

    def transition(tid):
        res = call(kit, node, change, ChangeState.Request(transition=Transition(id=tid)), f"transition {tid}")
        assert res.success, proc.log()

    try:
        assert state() == State.PRIMARY_STATE_UNCONFIGURED  # autostart off: waits for a manager
        time.sleep(0.5)  # frames are flowing; an unconfigured node must not answer them
        assert masks.msgs == [] and labels.msgs == []
        transition(Transition.TRANSITION_CONFIGURE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        transition(Transition.TRANSITION_ACTIVATE)
        assert state() == State.PRIMARY_STATE_ACTIVE
        kit.wait_for(lambda: masks.msgs, 30.0, "segmentation after activate")
        kit.wait_for(lambda: labels.msgs, 10.0, "LabelInfo published at activation")
        transition(Transition.TRANSITION_DEACTIVATE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        time.sleep(0.3)  # let in-flight outputs land before counting
        count = len(masks.msgs)
        sent = frames.sent["rgb"]
        kit.wait_for(lambda: frames.sent["rgb"] >= sent + 5, 5.0, "5 more frames while inactive")
        assert len(masks.msgs) == count  # inactive: no processing
        transition(Transition.TRANSITION_CLEANUP)
        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert "loaded damcseg_tiny" in proc.log()
    finally:
        frames.destroy()
        for sub in (masks.sub, labels.sub):
            node.destroy_subscription(sub)
        node.destroy_client(change)
        node.destroy_client(get)


def test_qos_mismatch_is_warned_once(kit, ros_context, node_process):
    node = ros_context
    proc = node_process(
        "-p", "qos_reliability:=reliable", "-p", "qos_check_period:=0.3",
        "-p", "use_depth:=false", "-p", "use_thermal:=false",
    )  # fmt: skip
    frames = kit.FramePublisher(node, rate=10.0)  # best-effort publisher: cannot feed a reliable subscription
    frames.enabled.update(depth=False, thermal=False)
    try:
        # Our periodic check (rclpy's own one-line event warning does not say what to change).
        kit.wait_for(
            lambda: "has incompatible QoS" in proc.log(), kit.STARTUP_TIMEOUT, "QoS mismatch warning"
        )
        time.sleep(1.0)  # three more check periods
        log = proc.log()
        assert log.count("has incompatible QoS") == 1, log
        line = next(ln for ln in log.splitlines() if "has incompatible QoS" in ln)
        assert "/rgb/image" in line
        assert "publisher offers best_effort, subscription requests reliable" in line
        assert "qos_reliability:=best_effort" in line
    finally:
        frames.destroy()
