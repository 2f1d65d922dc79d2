"""damcseg_ros.fastdds: our entry points pick the large-image Fast DDS profile, never over a user's."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from damcseg_ros.fastdds import (
    PROFILE_VARIABLES,
    ensure_large_image_profile,
    fastdds_major,
    large_image_profile,
    profile_setting,
)


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


# installed: the major version of the pip-installed ros-fastdds wheel (None: a sourced ROS install).
@pytest.mark.parametrize(
    ("env", "installed", "expected_var"),
    [
        ({}, None, "FASTDDS_DEFAULT_PROFILES_FILE"),
        ({"ROS_DISTRO": "kilted"}, None, "FASTDDS_DEFAULT_PROFILES_FILE"),
        ({"ROS_DISTRO": "rolling"}, None, "FASTDDS_DEFAULT_PROFILES_FILE"),
        ({"ROS_DISTRO": "humble"}, None, "FASTRTPS_DEFAULT_PROFILES_FILE"),
        (
            {"ROS_DISTRO": "jazzy", "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"},
            None,
            "FASTRTPS_DEFAULT_PROFILES_FILE",
        ),
        # the wheels in the venv win over a stale ROS_DISTRO: it is the library that reads the file
        ({"ROS_DISTRO": "kilted"}, 2, "FASTRTPS_DEFAULT_PROFILES_FILE"),
        ({"ROS_DISTRO": "jazzy"}, 3, "FASTDDS_DEFAULT_PROFILES_FILE"),
        ({}, 2, "FASTRTPS_DEFAULT_PROFILES_FILE"),
    ],
)
def test_sets_the_variable_this_fast_dds_reads(env, installed, expected_var):
    assert ensure_large_image_profile(env, installed) == expected_var
    assert env[expected_var] == str(large_image_profile())
    assert [v for v in PROFILE_VARIABLES if v in env] == [expected_var]


def test_installed_wheel_decides_the_major_version_here():
    from importlib import metadata

    versions = {}
    for wheel in ("ros-fastdds", "ros-fastrtps"):
        try:
            versions[wheel] = metadata.version(wheel)
        except metadata.PackageNotFoundError:
            pass
    if not versions:
        pytest.skip("no Fast DDS wheel installed (a sourced ROS 2 install decides by ROS_DISTRO)")
    # Kilted's wheel is ros-fastdds 3.x, Jazzy's ros-fastrtps 2.x
    expected = 3 if "ros-fastdds" in versions else 2
    assert int(next(iter(versions.values())).split(".")[0]) == expected
    assert fastdds_major({"ROS_DISTRO": "humble" if expected == 3 else "kilted"}) == expected


def test_shell_form_prints_the_export_line_env_sh_evaluates():
    env = {k: v for k, v in os.environ.items() if k not in (*PROFILE_VARIABLES, "RMW_IMPLEMENTATION")}
    out = subprocess.run(
        [sys.executable, "-m", "damcseg_ros.fastdds", "--shell"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    var, path = profile_setting(env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"export {var}={path}\n"
    env["FASTRTPS_DEFAULT_PROFILES_FILE"] = "/etc/mine.xml"
    kept = subprocess.run(
        [sys.executable, "-m", "damcseg_ros.fastdds", "--shell"], env=env, capture_output=True, text=True
    )
    assert kept.stdout == ""


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
    assert ensure_large_image_profile(env, installed=2) is None
    assert ensure_large_image_profile(env, installed=3) is None
    assert env == before
