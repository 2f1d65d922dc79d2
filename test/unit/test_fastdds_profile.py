"""damcseg_ros.fastdds: our entry points pick the large-image Fast DDS profile, never over a user's."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from damcseg_ros.fastdds import PROFILE_VARIABLES, ensure_large_image_profile, large_image_profile


def test_profile_file_adds_a_16_mb_shm_transport_and_nothing_network_related():
    path = large_image_profile()
    assert path is not None and path.name == "fastdds_large_images.xml"
    root = ET.parse(path).getroot()
    ns = {"d": "http://www.eprosima.com"}
    descriptors = root.findall(".//d:transport_descriptor", ns)
    assert [d.findtext("d:type", namespaces=ns) for d in descriptors] == ["SHM"]
    assert int(descriptors[0].findtext("d:segment_size", namespaces=ns)) == 16 * 1024 * 1024
    # no locators or interface allow-lists: the discovery range stays what ROS says (LOCALHOST)
    text = path.read_text()
    for forbidden in ("<locator", "interfaceWhiteList", "<interfaces", "<udp"):
        assert forbidden not in text
    assert root.find(".//d:useBuiltinTransports", ns).text == "true"


@pytest.mark.parametrize(
    ("env", "expected_var"),
    [
        ({}, "FASTDDS_DEFAULT_PROFILES_FILE"),
        ({"ROS_DISTRO": "kilted"}, "FASTDDS_DEFAULT_PROFILES_FILE"),
        ({"ROS_DISTRO": "humble"}, "FASTRTPS_DEFAULT_PROFILES_FILE"),
        ({"ROS_DISTRO": "jazzy", "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}, "FASTRTPS_DEFAULT_PROFILES_FILE"),
    ],
)
def test_sets_the_variable_this_fast_dds_reads(env, expected_var):
    assert ensure_large_image_profile(env) == expected_var
    assert env[expected_var] == str(large_image_profile())
    assert [v for v in PROFILE_VARIABLES if v in env] == [expected_var]


@pytest.mark.parametrize(
    "env",
    [
        {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my_profile.xml"},
        {"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/my_profile.xml"},
        {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"},
        {"RMW_IMPLEMENTATION": "rmw_zenoh_cpp"},
    ],
)
def test_leaves_user_profiles_and_other_middlewares_alone(env):
    before = dict(env)
    assert ensure_large_image_profile(env) is None
    assert env == before
