"""Parameters: descriptions/ranges, bad values refused at set time with a reason, model source rules."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from damcseg_core.inference import resolve_model_source  # noqa: E402
from damcseg_ros import params  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def node(kit):
    yield from kit.unconfigured_node("damcseg_params_test")


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("sync.deadline.thermal", -0.1, "out of range"),
        ("sync.slop", 2.0, "out of range"),
        ("device", "tpu", "device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
        ("device", "cuda:x", "got 'cuda:x'"),
        (
            "qos_reliability",
            "sometimes",
            "qos_reliability must be one of ['best_effort', 'reliable'], got 'sometimes'",
        ),
        ("class_id_format", "label", "class_id_format must be one of ['name', 'id']"),
        ("qos_depth", 0, "out of range"),
        ("score_threshold", 1.5, "out of range"),
    ],
)
def test_bad_values_are_refused_with_a_reason(node, name, value, reason):
    before = node.get_parameter(name).value
    (result,) = node.set_parameters([Parameter(name, value=value)])
    assert not result.successful
    assert reason in result.reason
    assert node.get_parameter(name).value == before


@pytest.mark.parametrize(
    ("name", "value"),
    [("device", "cuda:1"), ("qos_reliability", "reliable"), ("sync.deadline.rgb", 0.2), ("qos_depth", 5)],
)
def test_good_values_are_accepted_and_read(node, name, value):
    (result,) = node.set_parameters([Parameter(name, value=value)])
    assert result.successful, result.reason
    p = params.read(node)
    read_back = {
        "device": p.device,
        "qos_reliability": p.qos_reliability,
        "sync.deadline.rgb": p.sync.deadlines["rgb"],
        "qos_depth": p.qos_depth,
    }[name]
    assert read_back == value


@pytest.mark.parametrize("spec", params.PARAMETERS, ids=lambda s: s.name)
def test_every_parameter_has_description_and_numeric_range(node, spec):
    (desc,) = node.describe_parameters([spec.name])
    assert len(desc.description) > 10
    if isinstance(spec.default, float) and not isinstance(spec.default, bool):
        assert (desc.floating_point_range[0].from_value, desc.floating_point_range[0].to_value) == spec.range
    elif isinstance(spec.default, int) and not isinstance(spec.default, bool):
        assert (desc.integer_range[0].from_value, desc.integer_range[0].to_value) == spec.range


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_config_file_lists_every_parameter_with_its_default():
    import yaml

    from damcseg_core.inference import default_checkpoint

    config = yaml.safe_load((default_checkpoint().parents[2] / "config" / "damcseg.yaml").read_text())
    values = _flatten(config["/**"]["ros__parameters"])
    assert set(values) == {spec.name for spec in params.PARAMETERS}
    for spec in params.PARAMETERS:
        assert values[spec.name] == spec.default, spec.name
        assert type(values[spec.name]) is type(spec.default), f"{spec.name}: ROS refuses int for float"


def test_all_inputs_disabled_is_an_error(node):
    node.set_parameters([Parameter(f"use_{m}", value=False) for m in ("rgb", "depth", "thermal")])
    try:
        with pytest.raises(ValueError, match="set at least one of use_rgb, use_depth, use_thermal"):
            params.read(node)
    finally:
        node.set_parameters([Parameter(f"use_{m}", value=True) for m in ("rgb", "depth", "thermal")])


def test_configure_fails_clearly_for_a_missing_checkpoint(node):
    node.set_parameters([Parameter("checkpoint", value="/nonexistent/model.pt")])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
    finally:
        node.set_parameters([Parameter("checkpoint", value="")])


@pytest.mark.parametrize(
    ("checkpoint", "model", "default_exists", "expected"),
    [
        ("", "damcseg_tiny", False, ("model", "damcseg_tiny")),
        ("", "damcseg_tiny", True, ("model", "damcseg_tiny")),  # an explicit setting wins over the default
        ("", "", True, ("checkpoint", "DEFAULT")),
        ("GIVEN", "damcseg_tiny", True, ("checkpoint", "GIVEN")),
    ],
)
def test_model_source_resolution(tmp_path, checkpoint, model, default_exists, expected):
    default, given = tmp_path / "damcseg_edge.pt", tmp_path / "mine.pt"
    given.write_bytes(b"x")
    if default_exists:
        default.write_bytes(b"x")
    paths = {"GIVEN": str(given), "DEFAULT": str(default), "": ""}
    kind, source = resolve_model_source(paths[checkpoint], model, default)
    assert (kind, source) == (expected[0], paths.get(expected[1], expected[1]))


def test_model_source_without_anything_names_the_parameters(tmp_path):
    with pytest.raises(ValueError, match=r"Set parameter 'checkpoint'.*'model'"):
        resolve_model_source("", "", tmp_path / "absent.pt")


def test_explicit_missing_checkpoint_is_not_replaced_by_random_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="parameter 'checkpoint' names a missing file"):
        resolve_model_source(str(tmp_path / "typo.pt"), "damcseg_tiny", tmp_path / "absent.pt")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-p", "device:=tpu"], "device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
        (["-p", "sync.deadline.depth:=-1.0"], "sync.deadline.depth out of range"),
        (["-p", "qos_reliability:=sometimes"], "must be one of ['best_effort', 'reliable']"),
        (["-p", "sync.slop:=1"], "write floats with a decimal point"),
    ],
)
def test_node_process_refuses_bad_startup_values(args, message):
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    proc = subprocess.run(
        [sys.executable, "-m", "damcseg_ros.node", "--ros-args", *args],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert message in proc.stdout + proc.stderr


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # (Nothing to load at all cannot happen with the shipped default checkpoint; the message
        # for it is checked on resolve_model_source with a missing default above.)
        pytest.param(
            ["-p", "checkpoint:=/nonexistent/damcseg.pt"],
            "parameter 'checkpoint' names a missing file: /nonexistent/damcseg.pt",
            id="missing-checkpoint",
        ),
        pytest.param(
            ["-p", "model:=damcseg_tiny", "-p", "device:=cuda"],
            "device=cuda but CUDA is not available; set device:=cpu",
            id="cuda-absent",
        ),
    ],
)
def test_autostart_configure_failure_exits_with_the_reason(args, message):
    if "device:=cuda" in args and _cuda_available():
        pytest.skip("CUDA is available here, so device:=cuda is valid")
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "damcseg_ros.node", "--ros-args", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert message in out
    assert "autostart: configure failed" in out
