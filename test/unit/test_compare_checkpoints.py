"""``tools/compare_checkpoints.py``: paired mIoU differences between checkpoints on the same frames."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from damcseg_core.checkpoint import save_checkpoint
from damcseg_core.eval.segmentation_metrics import SegmentationIoU
from damcseg_core.models import build_model

ROOT = Path(__file__).resolve().parents[2]
DATA = "synthetic:frames=3,size=64x128,seed=11"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location(
        "compare_checkpoints", ROOT / "tools" / "compare_checkpoints.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _confusions(pairs):
    probe = SegmentationIoU(num_classes=3)
    return np.stack([probe.sample_stats(np.array(p), np.array(t)) for p, t in pairs]).astype(np.float64)


def test_paired_difference_of_a_better_checkpoint(tool):
    truth = [[0, 1, 2, 2], [0, 0, 1, 2], [2, 1, 1, 0], [0, 1, 2, 1]]
    base = _confusions([([0, 0, 2, 2], t) for t in truth])  # misses class 1 mostly
    good = _confusions([(t, t) for t in truth])  # perfect
    res = tool.compare({"a": base, "b": good, "a_again": base.copy()}, boots=50)
    rows = res["checkpoints"]
    assert res["frames"] == 4 and res["base"] == "a"
    expected = SegmentationIoU(num_classes=3)
    for c in base:
        expected.accumulate(c.astype(np.int64))
    assert rows["a"]["miou"] == pytest.approx(expected.compute()["miou"])
    assert rows["b"]["miou"] == pytest.approx(1.0)
    d = rows["b"]["minus_base"]
    assert d["point"] == pytest.approx(1.0 - rows["a"]["miou"])
    assert 0.0 < d["interval_90"][0] <= d["interval_90"][1] and d["outside_noise"]
    same = rows["a_again"]["minus_base"]  # the same model twice: exactly no difference
    assert same["point"] == 0.0 and same["interval_90"] == [0.0, 0.0] and not same["outside_noise"]
    assert "minus_base" not in rows["a"]


def test_command_line_on_two_checkpoints(tool, tmp_path, capsys):
    torch.manual_seed(0)
    a = save_checkpoint(tmp_path / "a.pt", build_model("damcseg_tiny"))
    torch.manual_seed(1)
    b = save_checkpoint(tmp_path / "b.pt", build_model("damcseg_tiny"))
    out = tmp_path / "cmp.json"
    assert (
        tool.main([str(a), str(b), "--data", DATA, "--boots", "20", "--threads", "1", "--out", str(out)]) == 0
    )
    res = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert f"{a}: mIoU" in printed and f"{b}: mIoU" in printed and "minus base" in printed
    rows = res["checkpoints"]
    assert res["data"] == DATA and res["frames"] == 3
    assert rows[str(b)]["minus_base"]["point"] == pytest.approx(rows[str(b)]["miou"] - rows[str(a)]["miou"])
    assert len(rows[str(b)]["minus_base"]["iou_per_class"]) == 19


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["only.pt"], "give at least two checkpoints"),
        (["x.pt", "x.pt"], "a checkpoint is listed twice"),
        (["nope_a.pt", "nope_b.pt"], "no such checkpoint file: nope_a.pt, nope_b.pt"),
    ],
)
def test_wrong_arguments_name_the_fix(tool, capsys, args, message):
    with pytest.raises(SystemExit):
        tool.main([*args, "--data", DATA])
    assert message in capsys.readouterr().err


class _RecordingPredictor:
    """Stands in for the Predictor: records which sensors each frame brought, predicts class 0."""

    def __init__(self):
        self.seen: list[tuple[str, ...]] = []

    def predict(self, inputs):
        self.seen.append(tuple(sorted(inputs)))
        h, w = next(iter(inputs.values())).shape[:2]
        return type("Out", (), {"mask": np.zeros((h, w), np.uint8)})()


@pytest.mark.parametrize(
    ("protocol", "sensors"),
    [
        (None, ("depth", "rgb", "thermal")),
        ("missing:depth", ("rgb", "thermal")),
        ("missing:rgb+thermal", ("depth",)),
    ],
)
def test_protocol_drops_the_same_sensor_from_every_frame(tool, monkeypatch, protocol, sensors):
    from damcseg_core.data.registry import build_dataset

    fake = _RecordingPredictor()
    monkeypatch.setattr(tool, "load_predictor", lambda *a, **k: fake)
    data = build_dataset(DATA)
    conf = tool.frame_confusions("any.pt", data, None if protocol is None else tool.build_protocol(protocol))
    assert fake.seen == [sensors] * 3
    assert conf.shape[0] == 3 and conf.sum() > 0


def test_protocol_is_recorded_and_changes_only_the_completed_result(tool, tmp_path):
    """Two checkpoints that differ only in the depth MCN: identical with every sensor, not without depth."""
    torch.manual_seed(0)
    model = build_model("damcseg_tiny")
    a = save_checkpoint(tmp_path / "a.pt", model)
    with torch.no_grad():
        for p in model.completion.heads["depth"].parameters():
            p.add_(torch.randn_like(p))
    b = save_checkpoint(tmp_path / "b.pt", model)
    args = [str(a), str(b), "--data", DATA, "--boots", "20", "--threads", "1"]
    full, missing = tmp_path / "full.json", tmp_path / "missing.json"
    assert tool.main([*args, "--out", str(full)]) == 0
    assert tool.main([*args, "--protocol", "missing:depth", "--out", str(missing)]) == 0
    full_res, missing_res = json.loads(full.read_text()), json.loads(missing.read_text())
    assert (full_res["protocol"], missing_res["protocol"]) == ("full", "missing:depth")
    assert full_res["checkpoints"][str(b)]["minus_base"]["interval_90"] == [0.0, 0.0]
    assert missing_res["checkpoints"][str(a)]["miou"] != full_res["checkpoints"][str(a)]["miou"]


@pytest.mark.parametrize(
    ("protocol", "message"),
    [
        ("absent:depth", "the Predictor always runs the MCN"),
        ("missing:lidar", "--protocol:"),
    ],
)
def test_wrong_protocol_names_the_fix(tool, capsys, protocol, message):
    with pytest.raises(SystemExit):
        tool.main(["a.pt", "b.pt", "--data", DATA, "--protocol", protocol])
    assert message in capsys.readouterr().err
