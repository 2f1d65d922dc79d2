"""The node parameter table is the single source: NodeParams, config/damcseg.yaml and launch rows agree."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

pytest.importorskip("rcl_interfaces")
import yaml

from damcseg_ros import params

CONFIG = Path(__file__).resolve().parents[2] / "config" / "damcseg.yaml"


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_dataclass_has_one_field_per_ungrouped_parameter_plus_the_groups():
    fields = {f.name for f in dataclasses.fields(params.NodeParams)}
    plain = {s.name for s in params.PARAMETERS if s.group is None}
    assert fields == plain | set(params.GROUPS)
    assert {s.group for s in params.PARAMETERS} - {None} == set(params.GROUPS)


def test_config_file_is_exactly_the_table_defaults():
    config = yaml.safe_load(CONFIG.read_text())
    assert config == params.yaml_defaults()
    for name, value in _flatten(config["/**"]["ros__parameters"]).items():
        spec = next(s for s in params.PARAMETERS if s.name == name)
        assert type(value) is type(spec.default), f"{name}: ROS refuses an int for a float"


def test_defaults_read_into_the_documented_values():
    p = params.from_values({s.name: s.default for s in params.PARAMETERS})
    assert p.modalities == ("rgb", "depth", "thermal")
    # No score_threshold override: the checkpoint's own (chosen on a validation seed) applies.
    assert p.detection == {"max_detections": 50, "class_agnostic_nms": True}
    assert p.sync.deadlines == {"rgb": 0.05, "depth": 0.05, "thermal": 0.05}
    assert (p.checkpoint, p.backend, p.score_threshold) == ("", "torch", 0.0)


@pytest.mark.parametrize("spec", params.PARAMETERS, ids=lambda s: s.name)
def test_every_default_passes_its_own_validation(spec):
    assert params.validate(spec.name, spec.default) is None


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("detection.max_detections", 5000, "detection.max_detections must be in [0, 1000], got 5000"),
        ("detection.score_threshold", 1.5, "must be in [-1.0, 1.0]"),
        ("detection.class_agnostic_nms", "yes", "detection.class_agnostic_nms must be true or false"),
        ("backend", "tensorrt", "backend must be one of ['torch', 'onnxruntime'], got 'tensorrt'"),
        ("detection.max_detections", 2.5, "must be an integer"),
    ],
)
def test_bad_values_name_the_rule(name, value, reason):
    assert reason in params.validate(name, value)


def test_launch_rows_come_from_the_table():
    rows = {name: (default, desc, choices) for name, default, desc, choices in params.launch_arguments()}
    assert set(rows) == {"checkpoint", "model", "device", "backend", "onnx_path"}
    assert rows["backend"] == ("torch", params._SPECS["backend"].description, ("torch", "onnxruntime"))
    assert rows["checkpoint"][0] == "" and rows["device"][2] is None
