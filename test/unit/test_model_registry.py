"""Model registry, config round trip, parameter budgets and the damcseg-info CLI."""

from __future__ import annotations

import argparse

import pytest
import torch

from damcseg_core.cli.info import count_parameters, main, parse_size
from damcseg_core.config import ConfigError, from_dict, to_dict
from damcseg_core.models import ModelConfig, build_model, build_model_from_config, get_config, list_models


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_registered_names():
    assert list_models() == ["damcseg_edge", "damcseg_paper", "damcseg_tiny"]


def test_unknown_model_lists_registered():
    with pytest.raises(KeyError) as info:
        build_model("damcseg_huge")
    assert "damcseg_edge, damcseg_paper, damcseg_tiny" in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"detection": {"nms_iuo": 0.4}}, "Did you mean 'nms_iou'"),
        ({"colour": True}, "unknown config key 'colour'"),
        ({"input_size": (100, 128)}, "multiples of 32"),
        ({"detection": {"score_threshold": "high"}}, "must be a number"),
    ],
)
def test_bad_overrides_raise_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        get_config("damcseg_tiny", **overrides)


def test_overrides_apply_and_keep_other_defaults():
    cfg = get_config("damcseg_tiny", detection={"nms_iou": 0.4}, segmentation={"roi_size": 32})
    assert cfg.detection.nms_iou == 0.4 and cfg.segmentation.roi_size == 32
    assert cfg.detection.score_threshold == 0.3 and cfg.detection.bifpn_channels == 24
    assert cfg.name == "damcseg_tiny"


@pytest.mark.parametrize("name", ["damcseg_tiny", "damcseg_edge"])
def test_config_round_trip_rebuilds_same_model(name):
    torch.manual_seed(0)
    model = build_model(name)
    cfg = from_dict(ModelConfig, to_dict(model.config))
    assert cfg == model.config
    clone = build_model_from_config(cfg)
    clone.load_state_dict(model.state_dict())  # strict: same keys and shapes
    assert clone.config.name == name


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [
        ("damcseg_tiny", 0.2e6, 1.5e6),
        ("damcseg_edge", 2e6, 12e6),
        ("damcseg_paper", 42.3e6 * 0.9, 42.3e6 * 1.1),  # paper Table I: 42.3M
    ],
)
def test_parameter_budgets(name, low, high):
    assert low <= n_params(build_model(name)) <= high


def test_paper_config_follows_the_paper():
    cfg = get_config("damcseg_paper")
    assert cfg.encoder.widths == (64, 128, 256, 512)
    assert cfg.fusion.heads == 8
    assert cfg.segmentation.aspp_rates == (1, 6, 12, 18) and cfg.segmentation.roi_size == 128
    assert (cfg.detection.score_threshold, cfg.detection.nms_iou) == (0.3, 0.5)
    assert cfg.backbone.name == "tf_efficientnetv2_b3" and cfg.backbone.shared_fraction == 0.8
    assert cfg.segmentation.local_backbone == cfg.encoder.rgb_backbone == "mobilenetv4_conv_large"
    assert cfg.refinement.crf.iterations == 3 and cfg.refinement.use_crf


@pytest.mark.parametrize(("text", "expected"), [("256x512", (256, 512)), ("64X128", (64, 128))])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("100x128", "multiples of 32 (e.g. 128x128)"),
        ("abc", "must look like 256x512"),
        ("64", "must look like"),
    ],
)
def test_parse_size_rejects(text, message):
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse_size(text)
    assert message in str(info.value)


def test_info_cli_prints_params_and_flops(capsys):
    assert main(["--model", "damcseg_tiny", "--size", "64x128", "--rois", "2"]) == 0
    text = capsys.readouterr().out
    total_line = next(line for line in text.splitlines() if line.startswith("total"))
    params_m, gflops = (float(v) for v in total_line.split()[1:])
    assert params_m == pytest.approx(n_params(build_model("damcseg_tiny")) / 1e6, abs=1e-3)
    assert 0.001 < gflops < 1.0
    assert "backbone" in text and "local_path" in text


def test_info_cli_latency_restores_threads(capsys):
    before = torch.get_num_threads()
    assert main(["--model", "damcseg_tiny", "--size", "64x128", "--latency-runs", "2", "--threads", "2"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("latency"))
    assert "2 threads, 2 runs" in line and float(line.split("median ")[1].split(" ms")[0]) > 0
    assert torch.get_num_threads() == before


def test_info_cli_rejects_bad_modality(capsys):
    with pytest.raises(SystemExit):
        main(["--model", "damcseg_tiny", "--modalities", "rgb,lidar"])
    assert "subset of rgb,depth,thermal" in capsys.readouterr().err


def test_count_parameters_per_module():
    counts = count_parameters(build_model("damcseg_tiny"))
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    assert {"encoders", "backbone", "det_head", "global_path", "local_path"} <= set(counts)
