"""``tools/ship_checkpoint.py``: the shipped file keeps the weights, takes post-processing
overrides, can turn a module off, and refuses overrides that would need other weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from damcseg_core.checkpoint import load_checkpoint, load_model, save_checkpoint
from damcseg_core.models import build_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ship():
    spec = importlib.util.spec_from_file_location("ship_checkpoint", ROOT / "tools" / "ship_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("damcseg_tiny")
    path = tmp_path_factory.mktemp("ship") / "train.pt"
    save_checkpoint(path, model, step=7, best_metric=0.5, train_config={"steps": 7})
    return path, model.state_dict()


def test_overrides_a_post_processing_setting_and_keeps_the_weights(ship, src, tmp_path):
    path, state = src
    dst = tmp_path / "shipped.pt"
    assert ship([str(path), str(dst), "--set", "detection.score_threshold=0.33"]) == 0
    model = load_model(dst)
    assert model.config.detection.score_threshold == pytest.approx(0.33)
    shipped = model.state_dict()
    assert shipped.keys() == state.keys() and all(torch.equal(shipped[k], state[k]) for k in state)
    ckpt = load_checkpoint(dst)
    assert ckpt["step"] == 7 and ckpt["train_config"] == {"steps": 7}


def test_turning_the_crf_off_leaves_its_weights_out(ship, src, tmp_path, capsys):
    path, state = src
    dst = tmp_path / "no_crf.pt"
    assert ship([str(path), str(dst), "--set", "refinement.use_crf=false"]) == 0
    assert "left out 1 tensors" in capsys.readouterr().out and "refinement.crf." in str(state.keys())
    model = load_model(dst)
    assert model.refinement.crf is None
    assert not [k for k in model.state_dict() if k.startswith("refinement.crf.")]
    with torch.no_grad():
        out = model({"rgb": torch.rand(1, 3, 64, 128)})
    assert out.seg_logits.shape == (1, model.config.num_classes, 64, 128)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("segmentation.decoder_channels=+8", r"changes the network \(0 tensors the checkpoint lacks, \d+ of another shape"),
        ("segmentation.fusion_stride=3", r"not a valid model config: .*fusion_stride must be 1, 2 or 4, got 3"),
    ],
)  # fmt: skip
def test_refuses_an_override_that_needs_other_weights(ship, src, tmp_path, override, message):
    dst = tmp_path / "bad.pt"
    if override.endswith("=+8"):  # wider than the checkpoint's own value
        key = override.split("=")[0]
        override = f"{key}={getattr(load_model(src[0]).config.segmentation, key.split('.')[1]) + 8}"
    with pytest.raises(SystemExit, match=message):
        ship([str(src[0]), str(dst), "--set", override])
    assert not dst.exists()  # nothing half-written
