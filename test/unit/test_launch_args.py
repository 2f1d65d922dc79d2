"""damcseg_ros.launch_args: the launch file's validation and exit policy, without ``launch``."""

from __future__ import annotations

from pathlib import Path

import pytest

from damcseg_ros import launch_args
from damcseg_ros.launch_args import ExitWatch, LaunchArgumentError, check_config_file, describe_exit, resolve

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "damcseg.yaml"


def values(**overrides: str) -> dict[str, str]:
    """Every argument at its default (config_file: the repository's), with ``overrides``."""
    out = {name: default for name, default, _d, _c in launch_args.arguments(str(CONFIG))}
    out.update(overrides)
    return out


def test_defaults_resolve_to_the_config_file_and_plain_remaps():
    settings = resolve(values())
    assert settings.parameters == [str(CONFIG), {"use_sim_time": False}]
    assert settings.name == "damcseg" and settings.namespace == ""
    assert ("rgb/image", "rgb/image") in settings.remappings
    assert ("depth/camera_info", "depth/camera_info") in settings.remappings
    assert settings.ros_arguments == ["--ros-args", "--log-level", "info"]
    assert (settings.respawn, settings.respawn_delay, settings.respawn_max_retries) == (False, 2.0, -1)


def test_non_empty_node_arguments_override_the_yaml_and_topics_remap_with_camera_info():
    settings = resolve(
        values(
            checkpoint="/models/e.pt",
            device="cuda:1",
            backend="onnxruntime",
            use_sim_time="True",
            rgb_topic="/camera/color/image_raw",
            namespace="front",
        )
    )
    assert settings.overrides == {
        "checkpoint": "/models/e.pt",
        "device": "cuda:1",
        "backend": "onnxruntime",
        "use_sim_time": True,
    }
    assert ("rgb/image", "/camera/color/image_raw") in settings.remappings
    assert ("rgb/camera_info", "/camera/color/camera_info") in settings.remappings
    assert settings.namespace == "front"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("use_sim_time", "maybe", "use_sim_time:=maybe is not a boolean; valid values: true, false"),
        ("respawn", "yes please", "respawn:=yes please is not a boolean; valid values: true, false"),
        ("backend", "tensorrt", "backend:=tensorrt is not valid; valid values: torch, onnxruntime (or empty"),
        (
            "log_level",
            "verbose",
            "log_level:=verbose is not valid; valid values: debug, info, warn, error, fatal",
        ),
        ("device", "gpu", "device:=gpu is not valid; valid values: cpu, cuda, cuda:N"),
        ("respawn_delay", "soon", "respawn_delay:=soon is not a number"),
        ("respawn_delay", "-1", "respawn_delay:=-1 must be >= 0"),
        ("respawn_max_retries", "2.5", "respawn_max_retries:=2.5 is not an integer"),
    ],
)
def test_bad_values_are_refused_naming_the_valid_ones(name, value, expected):
    with pytest.raises(LaunchArgumentError) as err:
        resolve(values(**{name: value}))
    assert expected in str(err.value)


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("FALSE", False), ("1", True), ("0", False)])
def test_boolean_spellings(text, expected):
    assert launch_args.parse_bool("use_sim_time", text) is expected


def test_every_problem_is_reported_at_once():
    with pytest.raises(LaunchArgumentError) as err:
        resolve(values(use_sim_time="maybe", backend="trt", config_file="/nonexistent.yaml"))
    text = str(err.value)
    assert text.startswith("invalid launch arguments:")
    assert "use_sim_time:=maybe" in text and "backend:=trt" in text and "/nonexistent.yaml" in text


def test_missing_config_file_fails_naming_the_path():
    with pytest.raises(LaunchArgumentError, match=r"config_file:=/nonexistent\.yaml: no such file"):
        resolve(values(config_file="/nonexistent.yaml"))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("a: [1, 2", "is not valid YAML"),
        ("just: a mapping\n", "is not a ROS 2 parameter file"),
        ("- a list\n", "is not a ROS 2 parameter file"),
    ],
)
def test_config_file_must_be_a_parameter_yaml(tmp_path, content, expected):
    path = tmp_path / "p.yaml"
    path.write_text(content)
    with pytest.raises(LaunchArgumentError, match=expected):
        check_config_file(str(path))


def test_config_file_that_is_a_directory_is_refused(tmp_path):
    with pytest.raises(LaunchArgumentError, match="is not a file"):
        check_config_file(str(tmp_path))


def test_the_shipped_config_passes_the_file_check():
    assert check_config_file(str(CONFIG)) == CONFIG


def test_arguments_fill_in_the_config_default_and_describe_every_argument():
    rows = launch_args.arguments("/share/damcseg_ros/config/damcseg.yaml")
    table = {name: (default, description) for name, default, description, _c in rows}
    assert table["config_file"][0] == "/share/damcseg_ros/config/damcseg.yaml"
    assert table["use_sim_time"][0] == "false" and table["rgb_topic"][0] == "rgb/image"
    assert all(len(description) > 15 for _default, description in table.values())
    assert {"respawn", "respawn_delay", "respawn_max_retries", "config_file", "checkpoint"} <= set(table)


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (2, "exit code 2 (a parameter has a bad type or value)"),
        (1, "exit code 1 (configuration or activation failed at start-up"),
        (7, "exit code 7"),
        (-11, "killed by SIGSEGV"),
    ],
)
def test_describe_exit(code, expected):
    assert describe_exit(code).startswith(expected)


def _watch(**overrides: str) -> ExitWatch:
    return ExitWatch(resolve(values(**overrides)))


def test_exit_at_start_up_fails_the_launch_with_the_nodes_fatal_line():
    watch = _watch(namespace="front")
    watch.on_output(b"[INFO] [1.0] [front.damcseg]: loading\n")
    watch.on_output(
        b"\x1b[31m[FATAL] [1.2] [front.damcseg]: checkpoint not found: /models/x.pt\x1b[0m\n"
        b"[FATAL] [1.3] [front.damcseg]: autostart: configure failed (see the error above); exiting\n"
    )
    decision = watch.on_exit(1, shutting_down=False)
    assert decision.action == "fail"
    assert decision.message.startswith(
        "front/damcseg exited with exit code 1 (configuration or activation failed at start-up"
    )
    assert "autostart: configure failed" in decision.message
    assert "respawn:=true" in decision.message


def test_an_error_line_is_the_reason_when_there_is_no_fatal_one():
    watch = _watch()
    watch.on_output(
        "[ERROR] [1.0] [damcseg]: bad parameter value: device must be 'cpu'\n[INFO] [1.1] [x]: bye\n"
    )
    assert watch.on_exit(2, shutting_down=False).message.endswith(
        "bad parameter value: device must be 'cpu'. The launch fails (set respawn:=true to restart the node instead)."
    )


def test_exit_while_the_launch_shuts_down_is_ignored():
    assert _watch().on_exit(-2, shutting_down=True).action == "ignore"


def test_clean_exit_shuts_the_launch_down_without_failing():
    decision = _watch().on_exit(0, shutting_down=False)
    assert decision.action == "shutdown" and "exit code 0" in decision.message


def test_respawn_restarts_until_the_retries_are_used_up():
    watch = _watch(respawn="true", respawn_delay="0.5", respawn_max_retries="2")
    first, second, third = (watch.on_exit(1, shutting_down=False) for _ in range(3))
    assert (first.action, second.action, third.action) == ("respawn", "respawn", "fail")
    assert first.message.endswith("respawn 1/2 in 0.5 s")
    assert "after 2 respawn(s) with exit code 1" in third.message


def test_respawn_without_limit_never_fails():
    watch = _watch(respawn="true")
    assert {watch.on_exit(-9, shutting_down=False).action for _ in range(20)} == {"respawn"}


def test_transports_override_the_parameter_and_remap_the_transport_topics():
    settings = resolve(
        values(depth_transport="compressedDepth", rgb_transport="compressed", depth_topic="/cam/depth")
    )
    assert settings.overrides["transport.depth"] == "compressedDepth"
    assert settings.overrides["transport.rgb"] == "compressed"
    assert "transport.thermal" not in settings.overrides  # empty: the config file's value
    # a remap rule matches one full name, so each transport topic has its own
    assert ("depth/image/compressedDepth", "/cam/depth/compressedDepth") in settings.remappings
    assert ("depth/image/compressed", "/cam/depth/compressed") in settings.remappings
    assert ("rgb/image/compressed", "rgb/image/compressed") in settings.remappings


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "rgb_transport",
            "compressedDepth",
            "rgb_transport:=compressedDepth is not valid; valid values: raw, compressed",
        ),
        (
            "thermal_transport",
            "theora",
            "thermal_transport:=theora is not valid; valid values: raw, compressed",
        ),
        ("depth_transport", "rvl", "valid values: raw, compressed, compressedDepth"),
    ],
)
def test_transport_is_validated_per_sensor(name, value, expected):
    with pytest.raises(LaunchArgumentError, match=expected):
        resolve(values(**{name: value}))


def test_node_parameter_arguments_come_from_the_parameter_table():
    params = pytest.importorskip("damcseg_ros.params", reason="rcl_interfaces not importable")
    rows = {
        name: (default, description, choices)
        for name, default, description, choices in launch_args.arguments()
    }
    for name, _default, description, choices in params.launch_arguments():
        assert rows[name][0] == ""  # empty: keep the config file's value
        assert rows[name][1].startswith(description)
        if choices is not None and name != "device":
            assert rows[name][2] == ("", *choices)
