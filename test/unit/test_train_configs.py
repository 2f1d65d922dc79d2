"""Every committed training config loads, names a registered model, and fits its own crop.

A user starts from one of these files (README "Training"); one that no longer parses after a
config change, or whose ASPP rates see only padding in its training crop, would fail them only
after minutes of data loading.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from damcseg_core.config import load_yaml
from damcseg_core.models import get_config
from damcseg_core.train.config import TrainConfig
from damcseg_core.train.trainer import check_aspp_rates

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "config" / "train").glob("*.yaml"))


def _load(path: Path):
    """``(train config, its model config, training crop (H, W))`` of one file."""
    cfg = load_yaml(TrainConfig, path)
    model_cfg = get_config(cfg.model, **cfg.model_overrides)
    return cfg, model_cfg, cfg.augment.size or model_cfg.input_size


def test_there_are_training_configs():
    assert {"edge_v5.yaml", "edge_v5_mcn.yaml", "tiny_smoke.yaml", "paper.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_training_config_loads_and_builds_its_model_config(path):
    cfg, _, (h, w) = _load(path)
    assert cfg.total_steps >= 1 or cfg.epochs
    assert abs(sum(s.fraction for s in cfg.stages) - 1.0) < 1e-6
    assert h % 32 == 0 and w % 32 == 0


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name.startswith("edge_")], ids=lambda p: p.name)
def test_edge_config_rates_fit_its_training_crop(path):
    # Issue #17: every dilated ASPP tap of the edge model sees real stride-32 features in training.
    # (paper.yaml and tiny_smoke.yaml keep the paper's rates 1/6/12/18; the trainer warns there.)
    _, model_cfg, crop = _load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the trainer's own rule, which warns at start-up
        check_aspp_rates(model_cfg, crop)


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.name.startswith("edge_v")], ids=lambda p: p.name)
def test_shipped_model_configs_say_how_to_run_them(path):
    # The header of a config that produced a shipped checkpoint gives the command that ran it.
    assert f"damcseg-train --config config/train/{path.name}" in path.read_text()
