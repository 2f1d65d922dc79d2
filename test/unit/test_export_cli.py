"""``damcseg-export``: writes the folder, checks parity, refuses bad input with a reason."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("onnxruntime")

from damcseg_core.checkpoint import save_checkpoint
from damcseg_core.cli.export import main
from damcseg_core.export import read_metadata
from damcseg_core.models import build_model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = build_model("damcseg_tiny")
    with torch.no_grad():
        model.det_head.class_net.pred[1].bias.fill_(0.0)  # detections, so the local path runs
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", model)


def test_export_and_check(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "onnx"
    rc = main(
        ["--checkpoint", str(tiny_checkpoint), "--out", str(out), "--modalities", "depth,rgb", "--check", "1"]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert sorted(p.name for p in out.iterdir()) == ["dense_rgb+depth.onnx", "local.onnx"]
    assert "parity rgb+depth" in printed and "parity OK" in printed
    meta = read_metadata(out / "dense_rgb+depth.onnx")
    assert (meta["model_name"], meta["export_size"]) == ("damcseg_tiny", [64, 128])  # default: input_size


def test_size_and_repeated_subsets(tiny_checkpoint, tmp_path):
    out = tmp_path / "onnx"
    args = ["--checkpoint", str(tiny_checkpoint), "--out", str(out), "--size", "96x160"]
    assert main([*args, "--modalities", "thermal", "--modalities", "rgb"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["dense_rgb.onnx", "dense_thermal.onnx", "local.onnx"]
    assert read_metadata(out / "dense_rgb.onnx")["export_size"] == [96, 160]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--expected-model", "damcseg_edge"],
            "holds a 'damcseg_tiny' model, but 'damcseg_edge' was requested",
        ),
        (["--modalities", "rgb,lidar"], "invalid modality subset 'rgb,lidar'"),
    ],
    ids=["other-variant", "bad-subset"],
)
def test_bad_input_exits_2_with_the_reason(tiny_checkpoint, tmp_path, capsys, extra, message):
    rc = main(["--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "o"), *extra])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_corrupt_checkpoint_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["--checkpoint", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert str(bad) in capsys.readouterr().err


@pytest.mark.parametrize("size", ["100x200", "256", "axb"])
def test_bad_size_is_a_usage_error(tmp_path, capsys, size):
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", "x.pt", "--out", str(tmp_path), "--size", size])
    assert exc.value.code == 2
    assert "size must" in capsys.readouterr().err


def test_out_must_be_a_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--checkpoint", "x.pt", "--out", str(tmp_path / "model.onnx")])
    assert exc.value.code == 2
    assert "--out is a folder" in capsys.readouterr().err
