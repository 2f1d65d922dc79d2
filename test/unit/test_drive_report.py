"""The demo's drive and its report: dropout and glitch windows, metrics per sensor state, bag-eval CLI."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from damcseg_core import MODALITIES
from damcseg_core.cli.bag_eval import main as bag_eval_main
from damcseg_core.data.demo_drive import DEPTH_GLITCH, demo_drive_frames, demo_dropouts
from damcseg_core.data.rosbag_io import read_bag_samples, write_drive_bag
from damcseg_core.data.targets import valid_objects
from damcseg_core.eval.drive_report import FrameRecord, evaluate_bag_offline, sensor_state

SECONDS, FPS, SIZE = 4.0, 5.0, (64, 128)


@pytest.fixture(scope="module")
def drive_bag(tmp_path_factory) -> Path:
    bag = tmp_path_factory.mktemp("drive") / "bag"
    write_drive_bag(bag, demo_drive_frames(SECONDS, FPS, SIZE, seed=3), dropouts=demo_dropouts(SECONDS))
    return bag


class _OraclePredictor:
    """Returns the ground truth as its prediction, so every metric of the report is known."""

    def __init__(self, bag: Path) -> None:
        self.truth = {int(s["meta"]["stamp_ns"]): s for s in read_bag_samples(bag)}
        self.calls: list[tuple[str, ...]] = []

    def predict(self, inputs):
        self.calls.append(tuple(sorted(inputs)))
        # The oracle finds its frame by the rgb image (unique per frame in a moving drive).
        rgb = inputs["rgb"]
        sample = next(s for s in self.truth.values() if np.array_equal(_rgb8(s), rgb))
        present = tuple(m for m in MODALITIES if m in inputs)
        return SimpleNamespace(
            mask=np.asarray(sample["semantic"]).astype(np.uint8), boxes=np.asarray(sample["boxes"]),
            scores=np.ones(len(sample["labels"]), np.float32), labels=np.asarray(sample["labels"]),
            S=0.5, D=0.4, O=0.2, E=0.8, category=1, alpha=0.5, beta=0.3, gamma=0.2,
            omega=np.array([0.7, 0.5, 0.6]),
            present=present, completed=tuple(m for m in MODALITIES if m not in present), inference_ms=12.0,
        )  # fmt: skip


def _rgb8(sample) -> np.ndarray:
    return (np.clip(np.asarray(sample["rgb"]), 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def test_demo_drive_has_its_scripted_faults(drive_bag: Path):
    samples = list(read_bag_samples(drive_bag))
    n = int(SECONDS * FPS)
    assert len(samples) == n
    assert [s["condition"] for s in samples[:: n // 4]] == ["day", "dusk", "night", "fog"]
    thermal_missing = [i for i, s in enumerate(samples) if not bool(s["present"][2])]
    lo, hi = demo_dropouts(SECONDS)["thermal"][0]
    assert thermal_missing == [i for i in range(n) if lo <= i / FPS < hi] and thermal_missing
    glitch = [i for i, s in enumerate(samples) if "depth" in s and float(np.asarray(s["depth"]).max()) == 0.0]
    assert glitch == list(range(round(DEPTH_GLITCH[0] * n), round(DEPTH_GLITCH[1] * n)))


def test_offline_report_scores_an_oracle_perfectly(drive_bag: Path, tmp_path: Path):
    oracle = _OraclePredictor(drive_bag)
    summary = evaluate_bag_offline(drive_bag, oracle, tmp_path, "oracle")
    metrics = json.loads((tmp_path / "drive_metrics.json").read_text())
    n = int(SECONDS * FPS)
    assert metrics["frames_sent"] == metrics["frames_processed"] == n
    assert metrics["metrics"]["all"]["miou"] == pytest.approx(1.0)
    assert set(metrics["metrics"]["condition"]) == {"day", "dusk", "night", "fog"}
    lo, hi = demo_dropouts(SECONDS)["thermal"][0]
    completed = sum(lo <= i / FPS < hi for i in range(n))
    assert metrics["sensor_states"] == {"all sensors": n - completed, "thermal completed": completed}
    assert metrics["per_state_miou"]["thermal completed"] == pytest.approx(1.0)
    assert metrics["latency"]["p50_ms"] == pytest.approx(12.0)
    assert sum(("thermal",) == tuple(m for m in MODALITIES if m not in c) for c in oracle.calls) == completed
    assert summary[0] == f"frames: {n}/{n} processed (0 dropped by newest-wins)"
    assert summary[1].startswith("mIoU 100.0% overall")
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3  # timelines, latency histogram, examples


def test_report_counts_boxes_per_frame_against_ground_truth_objects(drive_bag: Path, tmp_path: Path):
    summary = evaluate_bag_offline(drive_bag, _OraclePredictor(drive_bag), tmp_path, "oracle")
    metrics = json.loads((tmp_path / "drive_metrics.json").read_text())
    samples = list(read_bag_samples(drive_bag))
    published = float(np.mean([len(s["labels"]) for s in samples]))
    # Ground truth counts the valid objects only (>= 100 px, <= 90% occluded: data.targets).
    objects = float(
        np.mean([int(valid_objects(s["boxes"], s["areas"], s["occlusion"]).sum()) for s in samples])
    )
    assert objects < published  # the drive holds fragments that are ignore regions
    # The oracle publishes exactly the ground-truth boxes (fragments included).
    assert metrics["boxes_per_frame"] == {
        "published": pytest.approx(published),
        "ground_truth_objects": pytest.approx(objects),
    }
    assert summary[-1] == (
        f"boxes per frame: {published:.1f} published vs {objects:.1f} valid ground-truth objects (>= 100 px)"
    )


def test_records_keep_the_prediction_names():
    res = SimpleNamespace(
        mask=np.zeros((2, 2), np.uint8), boxes=np.zeros((1, 4), np.float32), scores=np.ones(1, np.float32),
        labels=np.array([13]), S=0.5, D=0.4, O=0.2, E=0.8, category=1, alpha=0.5, beta=0.3, gamma=0.2,
        omega=np.array([0.7, 0.5, 0.6]), present=("rgb",), completed=("depth", "thermal"),
    )  # fmt: skip
    rec = FrameRecord.from_prediction(7, res, latency_ms=3.0)
    got = {k: getattr(rec, k) for k in ("S", "D", "O", "E", "category", "alpha", "beta", "gamma")}
    assert got == {
        "S": 0.5,
        "D": 0.4,
        "O": 0.2,
        "E": 0.8,
        "category": 1,
        "alpha": 0.5,
        "beta": 0.3,
        "gamma": 0.2,
    }
    assert rec.omega.tolist() == pytest.approx([0.7, 0.5, 0.6]) and rec.num_targets == 1
    assert sensor_state(rec) == "depth + thermal completed" and rec.has_scene


def test_bag_eval_cli_runs_the_predictor_and_reports(drive_bag: Path, tmp_path: Path, capsys):
    rc = bag_eval_main([str(drive_bag), "--model", "damcseg_tiny", "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"report: {tmp_path / 'r' / 'report.html'}" in out and "frames: 20/20 processed" in out
    assert (tmp_path / "r" / "drive_metrics.json").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/bag"], "bag not found: /nonexistent/bag"),
        (["BAG", "--checkpoint", "/nonexistent/x.pt"], "damcseg-bag-eval: error:"),
    ],
)
def test_bag_eval_cli_errors_are_clear(args, message, drive_bag: Path, tmp_path: Path, capsys):
    args = [str(drive_bag) if a == "BAG" else a for a in args] + ["--out", str(tmp_path)]
    try:
        rc = bag_eval_main(args)
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2 and message in err
