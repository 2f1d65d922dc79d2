"""Config loading: typed dataclasses from YAML, unknown keys and wrong types rejected clearly."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from damcseg_core.config import ConfigError, apply_overrides, dump_yaml, from_dict, load_yaml, to_dict


@dataclasses.dataclass
class _Optim:
    lr: float = 1e-4  # base learning rate
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas


@dataclasses.dataclass
class _Experiment:
    name: str = "run"  # run name
    steps: int = 100  # optimisation steps
    device: str | None = None  # None = auto
    modalities: list[str] = dataclasses.field(default_factory=lambda: ["rgb", "depth"])  # inputs
    optim: _Optim = dataclasses.field(default_factory=_Optim)  # optimiser settings


def test_round_trip_through_yaml(tmp_path: Path):
    cfg = _Experiment(name="edge", steps=7, device="cpu", modalities=["thermal"], optim=_Optim(lr=3e-5))
    path = tmp_path / "resolved.yaml"
    dump_yaml(cfg, path)
    assert load_yaml(_Experiment, path) == cfg


def test_defaults_fill_missing_keys():
    cfg = from_dict(_Experiment, {"optim": {"lr": 0.5}})
    assert cfg == _Experiment(optim=_Optim(lr=0.5))
    assert to_dict(cfg)["optim"] == {"lr": 0.5, "betas": [0.9, 0.999]}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"stepz": 3}, "unknown config key 'stepz'. Did you mean 'steps'? Valid keys at the top level: "
         "device, modalities, name, optim, steps"),
        ({"optim": {"learning_rate": 1}}, "unknown config key 'optim.learning_rate'"),
        ({"optim": {"lrr": 1}}, "Did you mean 'lr'? Valid keys at 'optim': betas, lr"),
    ],
)  # fmt: skip
def test_unknown_key_names_key_and_valid_keys(data, expected):
    with pytest.raises(ConfigError) as err:
        from_dict(_Experiment, data)
    assert expected in str(err.value)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"steps": "ten"}, "'steps' must be an integer, got 'ten'"),
        ({"steps": 1.5}, "'steps' must be an integer, got 1.5"),
        ({"optim": {"lr": "fast"}}, "'optim.lr' must be a number, got 'fast'"),
        ({"optim": {"betas": [0.9]}}, "'optim.betas' must have 2 items, got 1"),
        ({"modalities": "rgb"}, "'modalities' must be a list"),
        ({"optim": 3}, "'optim' must be a mapping of _Optim fields"),
    ],
)
def test_wrong_types_are_rejected_with_the_key(data, expected):
    with pytest.raises(ConfigError) as err:
        from_dict(_Experiment, data)
    assert expected in str(err.value)


def test_overrides_parse_yaml_values_and_keep_the_original():
    base = {"optim": {"lr": 1.0}}
    out = apply_overrides(base, ["optim.lr=3e-5", "steps=12", "modalities=[rgb, thermal]", "device=null"])
    # PyYAML reads 3e-5 (no dot) as the string "3e-5"; from_dict accepts it for float fields.
    assert out == {"optim": {"lr": "3e-5"}, "steps": 12, "modalities": ["rgb", "thermal"], "device": None}
    assert base == {"optim": {"lr": 1.0}}
    assert from_dict(_Experiment, out).optim.lr == pytest.approx(3e-5)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("steps", "must look like key.sub=value"),
        ("=3", "has an empty key"),
        ("name.sub=1", "'name' is a value"),
    ],
)
def test_bad_overrides_are_explained(override, expected):
    with pytest.raises(ConfigError, match=expected):
        apply_overrides({"name": "x"}, [override])


def test_load_yaml_errors_name_the_file(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"config file not found: .*missing\.yaml"):
        load_yaml(_Experiment, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml is not valid YAML"):
        load_yaml(_Experiment, bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown config key 'optim.lrr'"):
        load_yaml(_Experiment, typo)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(ConfigError, match="must hold a mapping at the top level"):
        load_yaml(_Experiment, scalar)


def test_deep_merge_merges_sections_and_copies():
    from damcseg_core.config import deep_merge

    base = {"a": {"x": 1, "y": [1, 2]}, "b": 2}
    over = {"a": {"y": [3]}, "c": {"z": 1}}
    out = deep_merge(base, over)
    assert out == {"a": {"x": 1, "y": [3]}, "b": 2, "c": {"z": 1}}
    out["a"]["y"].append(4)
    out["c"]["z"] = 5
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 2} and over == {"a": {"y": [3]}, "c": {"z": 1}}
