"""QoS helpers: the subscription profile, why a publisher cannot feed it, the silent-input warning."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

pytest.importorskip("rclpy")
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from damcseg_ros import qos

BEST, RELIABLE = ReliabilityPolicy.BEST_EFFORT, ReliabilityPolicy.RELIABLE


@pytest.mark.parametrize(("name", "policy"), [("best_effort", BEST), ("reliable", RELIABLE)])
def test_sensor_qos_follows_the_parameters(name, policy):
    profile = qos.sensor_qos(name, 3)
    assert (profile.reliability, profile.depth, profile.durability) == (policy, 3, DurabilityPolicy.VOLATILE)


@pytest.mark.parametrize(
    ("pub", "sub", "why"),
    [
        (BEST, RELIABLE, "publisher offers best_effort, subscription requests reliable"),
        (RELIABLE, BEST, None),
        (BEST, BEST, None),
    ],
)
def test_incompatibility_names_the_rule(pub, sub, why):
    assert (
        qos.qos_incompatibility(QoSProfile(depth=1, reliability=pub), QoSProfile(depth=1, reliability=sub))
        == why
    )


def _publisher(reliability):
    return SimpleNamespace(
        qos_profile=QoSProfile(depth=1, reliability=reliability), node_namespace="/", node_name="cam"
    )


def test_silent_input_warning_names_the_parameter_to_set():
    text = qos.silent_input_warning(
        "/rgb/image", qos.sensor_qos("reliable", 1), [_publisher(BEST)], "reliable"
    )
    assert text == (
        "no messages on /rgb/image: publisher /cam has incompatible QoS (publisher offers best_effort, "
        "subscription requests reliable). Set parameter qos_reliability:=best_effort or change the publisher"
    )
    assert (
        qos.silent_input_warning("/rgb/image", qos.sensor_qos("best_effort", 1), [_publisher(BEST)], "x")
        is None
    )


def test_check_warns_once_and_only_for_an_input_without_new_messages():
    said: list[tuple[str, str]] = []
    check = qos.SilentInputCheck(
        lambda topic: [_publisher(BEST)], lambda k, t: said.append((k, t)), "reliable"
    )
    sub = SimpleNamespace(topic_name="/rgb/image", qos_profile=qos.sensor_qos("reliable", 1))
    check({"rgb": sub}, {"rgb": 0})  # first look: nothing known yet
    assert said == []
    check({"rgb": sub}, {"rgb": 0})  # still nothing received
    assert [k for k, _ in said] == ["qos-/rgb/image"]
    check({"rgb": sub}, {"rgb": 4})  # messages arrive: no warning
    assert len(said) == 1
