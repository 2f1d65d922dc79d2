"""Evaluator, report and damcseg-eval on a few tiny synthetic-like samples with damcseg_tiny."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from damcseg_core.eval.evaluator import Evaluator, sample_to_inputs, to_jsonable
from damcseg_core.eval.report import write_report
from damcseg_core.inference import Predictor

H, W = 48, 64


def _sample(i: int, condition: str) -> dict:
    g = torch.Generator().manual_seed(i)
    semantic = torch.zeros(H, W, dtype=torch.int64)
    semantic[: H // 3] = 10  # sky
    semantic[H // 3 : H // 2] = 2  # building
    instance = torch.zeros(H, W, dtype=torch.int32)
    instance[28:38, 10 + i : 22 + i] = 1  # a small car
    instance[30:35, 40:43] = 2  # a tiny person
    labels = torch.tensor([13, 11])
    semantic[instance == 1] = 13
    semantic[instance == 2] = 11
    semantic[0, :4] = 255
    return {
        "rgb": torch.rand(3, H, W, generator=g),
        "depth": torch.rand(1, H, W, generator=g) * 30,
        "thermal": torch.rand(1, H, W, generator=g),
        "present": torch.tensor([True, True, True]),
        "semantic": semantic,
        "instance": instance,
        "boxes": torch.tensor([[10.0 + i, 28, 22 + i, 38], [40, 30, 43, 35]]),
        "labels": labels,
        "occlusion": torch.tensor([0.6, 0.0]),
        "areas": torch.tensor([120.0, 15.0]),
        "condition": condition,
        "meta": {"dataset": "unit", "sequence": "s0", "frame": i},
    }


@pytest.fixture(scope="module")
def samples():
    return [_sample(i, c) for i, c in enumerate(["day", "night", "day"])]


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_name("damcseg_tiny", seed=0)


class _Recorder:
    """Wraps a Predictor to record which modalities each call received."""

    def __init__(self, predictor):
        self.inner = predictor
        self.model = predictor.model
        self.device = predictor.device
        self.calls: list[tuple[str, ...]] = []

    def predict(self, inputs):
        self.calls.append(tuple(sorted(inputs)))
        return self.inner.predict(inputs)


@pytest.fixture(scope="module")
def result(samples, predictor):
    rec = _Recorder(predictor)
    ev = Evaluator(
        rec, ["full", "missing:depth+thermal", "zero-fill:thermal"], seed=1, num_examples=2, progress=False
    )
    res = ev.run(samples)
    res.calls = rec.calls
    return res


def test_protocols_reach_the_predictor(result):
    full, rgb_only, zero = ("depth", "rgb", "thermal"), ("rgb",), ("depth", "rgb", "thermal")
    assert result.calls == [full, rgb_only, zero] * 3


def test_metrics_structure_and_values(result, predictor):
    m = result.metrics
    assert m["num_samples"] == 3
    assert list(m["protocols"]) == ["full", "missing:depth+thermal", "zero-fill:thermal"]
    assert m["model"]["name"] == "damcseg_tiny"
    assert m["model"]["parameters"] == sum(p.numel() for p in predictor.model.parameters())
    full = m["protocols"]["full"]
    assert full["all"]["num_images"] == 3
    assert {k: v["num_images"] for k, v in full["condition"].items()} == {"day": 2, "night": 1}
    assert sum(v["num_images"] for v in full["complexity"].values()) == 3
    assert 0.0 <= full["all"]["miou"] <= 1.0
    assert full["all"]["num_pixels"] == 3 * (H * W - 4)
    assert full["all"]["num_tiny_objects"] == 3 and full["all"]["num_occluded_objects"] == 3
    assert len(full["all"]["iou_per_class"]) == 19
    assert full["all"]["fps"] > 0
    assert m["robustness"]["full"]["miou"] == full["all"]["miou"]
    assert m["memory"]["kind"] == "process_peak_rss"


def test_metrics_are_strict_json(result):
    text = json.dumps(result.metrics, allow_nan=False)
    back = json.loads(text)
    # Classes absent from GT and prediction become null, not NaN.
    assert None in back["protocols"]["full"]["all"]["iou_per_class"]


def test_to_jsonable_converts_nan_numpy_and_keys():
    out = to_jsonable({1: np.float32(0.5), "a": [math.nan, np.int64(3), (math.inf,)], "b": np.arange(2)})
    assert out == {"1": 0.5, "a": [None, 3, [None]], "b": [0, 1]}


def test_sample_to_inputs_converts_units(samples):
    inputs = sample_to_inputs(samples[0])
    assert inputs["rgb"].shape == (H, W, 3) and inputs["rgb"].dtype == np.uint8
    assert inputs["rgb"][0, 0, 0] == round(float(samples[0]["rgb"][0, 0, 0]) * 255)
    assert inputs["depth"].shape == (H, W) and inputs["depth"].dtype == np.float32
    np.testing.assert_array_equal(inputs["thermal"], samples[0]["thermal"][0].numpy())
    with pytest.raises(ValueError, match="holds no modality"):
        sample_to_inputs({"semantic": samples[0]["semantic"]})


def test_report_files(result, tmp_path):
    paths = write_report(result, tmp_path / "out")
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["protocols"]["full"]["all"]["num_images"] == 3
    html = paths["html"].read_text()
    assert html.count("data:image/png;base64,") == 5  # robustness, per-class, histogram, 2 examples
    assert "missing:depth+thermal" in html and "<td>night</td>" in html
    assert 'src="http' not in html  # self-contained


def test_evaluator_rejects_bad_arguments(predictor, samples):
    with pytest.raises(ValueError, match="protocols repeat"):
        Evaluator(predictor, ["full", "full"])
    with pytest.raises(ValueError, match="unknown protocol 'fog'"):
        Evaluator(predictor, ["fog"])
    with pytest.raises(ValueError, match="yielded no sample"):
        Evaluator(predictor, progress=False).run(iter([]))
    with pytest.raises(ValueError, match="limit must be >= 1"):
        Evaluator(predictor, progress=False).run(samples, limit=0)


def test_cli_end_to_end(monkeypatch, tmp_path, samples, capsys):
    import damcseg_core.data.registry as registry
    from damcseg_core.cli import eval as cli

    seen = {}

    def fake_build(spec):
        seen["spec"] = spec
        return samples

    monkeypatch.setattr(registry, "build_dataset", fake_build)
    code = cli.main(
        ["--model", "damcseg_tiny", "--data", "synthetic:frames=3", "--protocol", "full",
         "--protocol", "random-missing:0.5", "--out", str(tmp_path), "--limit", "2", "--no-progress"]
    )  # fmt: skip
    assert code == 0 and seen["spec"] == "synthetic:frames=3"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_samples"] == 2 and list(metrics["protocols"]) == ["full", "random-missing:0.5"]
    assert (tmp_path / "report.html").is_file()
    assert "random-missing:0.5" in capsys.readouterr().out


def test_cli_protocol_suite_expands_to_default_sweep(monkeypatch, tmp_path, samples):
    import damcseg_core.data.registry as registry
    from damcseg_core.cli import eval as cli
    from damcseg_core.eval.protocols import ROBUSTNESS_SUITE

    monkeypatch.setattr(registry, "build_dataset", lambda spec: samples)
    argv = ["--model", "damcseg_tiny", "--data", "x", "--protocol", "suite", "--protocol", "full",
            "--protocol", "noise:depth:shift=2", "--out", str(tmp_path), "--limit", "1", "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics["protocols"]) == [*ROBUSTNESS_SUITE, "noise:depth:shift=2"]
    # Removing depth and thermal changes what the model sees, so the prediction changes.
    assert metrics["robustness"]["missing:depth+thermal"] != metrics["robustness"]["full"]


def test_cli_threads_sets_torch_threads_and_rejects_negative(monkeypatch, tmp_path, samples, capsys):
    import torch

    import damcseg_core.data.registry as registry
    from damcseg_core.cli import eval as cli

    monkeypatch.setattr(registry, "build_dataset", lambda spec: samples)
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    argv = ["--model", "damcseg_tiny", "--data", "x", "--out", str(tmp_path), "--limit", "1", "--no-progress"]
    assert cli.main([*argv, "--threads", "1"]) == 0 and calls == [1]
    assert cli.main(argv) == 0 and calls == [1]  # 0 (the default) leaves torch's setting alone
    with pytest.raises(SystemExit):
        cli.main([*argv, "--threads", "-2"])
    assert "--threads must be >= 1, or 0 for torch's default, got -2" in capsys.readouterr().err


def test_cli_reports_bad_input(tmp_path, capsys):
    from damcseg_core.cli import eval as cli

    code = cli.main(["--model", "damcseg_tiny", "--data", "nope:x", "--out", str(tmp_path), "--no-progress"])
    assert code == 2
    assert "unknown dataset kind 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["--data", "x", "--out", str(tmp_path)])  # neither --model nor --checkpoint


def test_cli_corrupt_checkpoint_says_what_the_file_is(tmp_path, capsys):
    from damcseg_core.cli import eval as cli

    bad = tmp_path / "bad.pt"
    bad.write_text("garbage\n")
    code = cli.main(["--checkpoint", str(bad), "--data", "x", "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"damcseg-eval: error: checkpoint {bad} is corrupt: a text file" in err
    assert "damcseg-train" in err and "weights_only" not in err


@pytest.mark.parametrize(
    ("value", "percent", "text"),
    [
        (None, True, "–"),
        (float("nan"), False, "–"),
        (0.3261, True, "32.6"),
        (12.34, False, "12.3"),
        (7, False, "7"),
    ],
)
def test_report_cells_show_undefined_values_as_a_dash(value, percent, text):
    from damcseg_core.eval.report import format_metric

    assert format_metric(value, percent) == text
