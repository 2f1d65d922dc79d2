"""``tools/completion_gap.py``: the five settings that split a missing sensor's mIoU gap."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from damcseg_core.checkpoint import save_checkpoint
from damcseg_core.models import build_model

ROOT = Path(__file__).resolve().parents[2]
H, W = 64, 128


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("completion_gap", ROOT / "tools" / "completion_gap.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("damcseg_tiny").eval()


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "rgb": torch.rand(1, 3, H, W, generator=g),
        "depth": 2.0 + 30 * torch.rand(1, 1, H, W, generator=g),
        "thermal": torch.rand(1, 1, H, W, generator=g),
    }


def _labels(out) -> torch.Tensor:
    return out.seg_logits.argmax(1)[0]


@pytest.mark.parametrize("m", ["depth", "thermal"])
def test_settings_are_what_the_node_would_run(tool, tiny, m):
    inputs = _inputs()
    rest = {k: v for k, v in inputs.items() if k != m}
    zeroed = dict(inputs, **{m: torch.zeros_like(inputs[m])})
    with torch.no_grad():
        got = {s: tool._masks(tiny, inputs, m, s) for s in tool.SETTINGS}
        assert (torch.from_numpy(got["all"][0]) == _labels(tiny(inputs))).all()
        assert (torch.from_numpy(got["mcn"][0]) == _labels(tiny(rest))).all()
        assert (torch.from_numpy(got["zero-fill"][0]) == _labels(tiny(zeroed))).all()
    # The global path never sees a raw image: withholding it from the refinement, or handing it
    # back, leaves the global path's mask as it was.
    assert (got["real-feat, no-raw"][1] == got["all"][1]).all()
    assert (got["mcn, raw"][1] == got["mcn"][1]).all()
    assert not (got["mcn"][1] == got["all"][1]).all()  # the completion is not the real sensor
    assert (got["mcn, real boxes"][1] == got["mcn"][1]).all()  # boxes never reach the global path
    assert "postprocess" not in vars(tiny.det_head)  # restored


def test_real_boxes_setting_hands_the_all_sensor_detections_to_the_refinement(tool):
    torch.manual_seed(0)
    tiny = build_model("damcseg_tiny", detection={"score_threshold": 0.0}).eval()  # boxes even untrained
    inputs = _inputs(2)
    with torch.no_grad():
        full = tiny(inputs)
        own = tiny({k: v for k, v in inputs.items() if k != "depth"})
    assert len(full.boxes[0]) > 0 and not torch.equal(full.boxes[0], own.boxes[0])
    seen = {}

    def grab(module, args):
        seen["detections"] = args[1]

    handle = tiny.refinement.register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            tool._masks(tiny, inputs, "depth", "mcn, real boxes")
    finally:
        handle.remove()
    boxes, scores, labels = seen["detections"]
    assert torch.equal(boxes[0], full.boxes[0]) and torch.equal(scores[0], full.scores[0])
    assert torch.equal(labels[0], full.labels[0])


@pytest.mark.parametrize(
    ("setting", "sees_depth"),
    [
        ("mcn, raw", True),
        ("mcn", False),
        ("real-feat, no-raw", False),
        ("all", True),
        ("mcn, real boxes", False),
    ],
)
def test_which_settings_hand_the_real_image_to_the_refinement(tool, tiny, setting, sees_depth):
    """The refinement (scene complexity, depth prior, CRF guide) gets the real depth image only
    where the setting says so; "mcn, raw" must undo the head's zeroing of a completed sensor."""
    inputs = _inputs(1)
    seen = {}

    def grab(module, args):
        _, _, refine_inputs, used = args[:4]
        seen["used"], seen["depth"] = used, refine_inputs.get("depth")

    handle = tiny.refinement.register_forward_pre_hook(grab)
    try:
        with torch.no_grad():
            tool._masks(tiny, inputs, "depth", setting)
    finally:
        handle.remove()
    assert ("depth" in seen["used"]) == sees_depth
    if sees_depth:
        assert torch.equal(seen["depth"], inputs["depth"])


def test_command_line_writes_the_split(tool, tmp_path, capsys):
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", build_model("damcseg_tiny"))
    out = tmp_path / "gap.json"
    rc = tool.main(["--data", "synthetic:frames=2,size=64x128,seed=11", "--checkpoint", str(ckpt),
                    "--modality", "depth", "--bootstrap", "20", "--threads", "1", "--out", str(out)])  # fmt: skip
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["frames"] == 2 and list(res["modalities"]) == ["depth"]
    for path in ("final", "global"):
        row = res["modalities"]["depth"][path]
        assert set(tool.SETTINGS) <= set(row)
        assert row["mcn"]["minus_mcn"] == 0.0 and row["mcn"]["minus_mcn_interval"] == [0.0, 0.0]
        assert row["all"]["minus_mcn"] == pytest.approx(row["all"]["miou"] - row["mcn"]["miou"])
    printed = capsys.readouterr().out
    assert "depth (final):" in printed and "recovery: mcn" in printed


def test_data_without_the_sensor_is_refused_naming_the_fix(tool, tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", build_model("damcseg_tiny"))
    sample = {k: v[0] for k, v in _inputs().items() if k != "thermal"}
    sample["semantic"] = torch.zeros(H, W, dtype=torch.int64)
    monkeypatch.setattr(tool, "build_dataset", lambda spec: [sample])  # a dataset without thermal
    with pytest.raises(SystemExit) as exc:
        tool.main(["--data", "no-thermal", "--checkpoint", str(ckpt), "--modality", "thermal"])
    assert exc.value.code == 2
    assert "drop ['thermal'] from --modality" in capsys.readouterr().err
