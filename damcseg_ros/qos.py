"""QoS of the node's topics and the diagnosis of an input that receives nothing.

DDS matches a subscription only with publishers that offer at least what it requests; a
mismatch is silent (no error, no data). :func:`qos_incompatibility` names the rule that fails and
:func:`silent_input_warning` turns it into a line that says which parameter to set.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

__all__ = ["SilentInputCheck", "latched_qos", "qos_incompatibility", "sensor_qos", "silent_input_warning"]


def sensor_qos(reliability: str, depth: int) -> QoSProfile:
    """Keep-last, volatile QoS of the image subscriptions (``qos_reliability``, ``qos_depth``)."""
    return QoSProfile(
        depth=depth,
        history=HistoryPolicy.KEEP_LAST,
        reliability=ReliabilityPolicy.RELIABLE
        if reliability == "reliable"
        else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos() -> QoSProfile:
    """Transient-local depth 1: a subscriber that starts later still gets the (single) message."""
    return QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def qos_incompatibility(pub: QoSProfile, sub: QoSProfile) -> str | None:
    """Why a publisher's QoS cannot feed a subscription (DDS request/offer rules), or None."""
    if sub.reliability == ReliabilityPolicy.RELIABLE and pub.reliability == ReliabilityPolicy.BEST_EFFORT:
        return "publisher offers best_effort, subscription requests reliable"
    if sub.durability == DurabilityPolicy.TRANSIENT_LOCAL and pub.durability == DurabilityPolicy.VOLATILE:
        return "publisher offers volatile durability, subscription requests transient_local"
    return None


def silent_input_warning(
    topic: str, sub_qos: QoSProfile, publishers: Iterable[Any], reliability: str
) -> str | None:
    """The warning for a silent ``topic`` whose publishers (``TopicEndpointInfo``) cannot feed it.

    Args:
        reliability: the node's current ``qos_reliability`` setting.
    """
    for info in publishers:
        why = qos_incompatibility(info.qos_profile, sub_qos)
        if why:
            fix = "best_effort" if "reliable" in why else reliability
            return (
                f"no messages on {topic}: publisher {info.node_namespace.rstrip('/')}/{info.node_name} has "
                f"incompatible QoS ({why}). Set parameter qos_reliability:={fix} or change the publisher"
            )
    return None


class SilentInputCheck:
    """Periodic check: an input that received nothing since the last check, while a publisher with
    incompatible QoS exists on its topic, gets one warning naming the parameter to set.

    Args:
        publishers_of: ``node.get_publishers_info_by_topic``.
        warn_once: ``(key, text)`` -> logs ``text`` the first time ``key`` is seen.
        reliability: the node's ``qos_reliability`` setting.
    """

    def __init__(self, publishers_of: Any, warn_once: Any, reliability: str) -> None:
        self._publishers_of, self._warn_once, self._reliability = publishers_of, warn_once, reliability
        self._received: dict[str, int] = {}

    def __call__(self, subscriptions: dict[str, Any], received: dict[str, int]) -> None:
        """``subscriptions``: modality -> image subscription; ``received``: messages per modality."""
        for modality, sub in subscriptions.items():
            if received[modality] != self._received.get(modality, -1):  # new messages (or first check)
                self._received[modality] = received[modality]
                continue
            text = silent_input_warning(
                sub.topic_name, sub.qos_profile, self._publishers_of(sub.topic_name), self._reliability
            )
            if text:
                self._warn_once(f"qos-{sub.topic_name}", text)
