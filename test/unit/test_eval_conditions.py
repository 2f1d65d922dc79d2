"""Condition x protocol table: bootstrap intervals, paired differences, key classes, omega, the
absent protocol, and what damcseg-eval writes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from damcseg_core.data.classes import CITYSCAPES_CLASSES, NUM_CLASSES
from damcseg_core.eval.conditions import (
    ConditionTable,
    bootstrap_counts,
    default_comparisons,
    iou_from_confusion,
    percentile_interval,
    protocol_label,
)
from damcseg_core.eval.evaluator import Evaluator, completion_disabled
from damcseg_core.eval.protocols import COMPLETION_SUITE
from damcseg_core.eval.report import condition_tables, render_markdown, write_report
from damcseg_core.eval.segmentation_metrics import SegmentationIoU, confusion_matrix
from damcseg_core.inference import Predictor

PERSON, RIDER, CAR, BICYCLE = (CITYSCAPES_CLASSES.index(c) for c in ("person", "rider", "car", "bicycle"))
ROAD, SKY = CITYSCAPES_CLASSES.index("road"), CITYSCAPES_CLASSES.index("sky")


def _noisy_frame(rng: np.random.Generator, accuracy: float, size: int = 200) -> np.ndarray:
    """Confusion of a frame of road / sky / car pixels where each pixel is right with prob ``accuracy``."""
    gt = rng.choice([ROAD, SKY, CAR], size=size)
    wrong = rng.random(size) > accuracy
    pred = np.where(wrong, rng.choice([ROAD, SKY, CAR, PERSON], size=size), gt)
    return confusion_matrix(pred, gt)


def _random_table(n: int, seed: int = 0) -> ConditionTable:
    rng = np.random.default_rng(seed)
    table = ConditionTable()
    for i in range(n):
        table.add("full", i, "day", _noisy_frame(rng, rng.uniform(0.3, 0.95)))
    return table


# ---------------------------------------------------------------------- per-class IoU
def test_iou_from_confusion_matches_hand_computed_values():
    conf = np.array([[5, 1, 0, 1], [2, 3, 0, 0], [0, 0, 0, 0]])  # last column: predicted "unknown"
    iou = iou_from_confusion(conf)
    # class 0: TP 5, GT 7, predicted 7 -> 5 / 9; class 1: TP 3, GT 5, predicted 4 -> 3 / 6; class 2 absent.
    np.testing.assert_allclose(iou[:2], [5 / 9, 0.5])
    assert np.isnan(iou[2])


@pytest.mark.parametrize("split", [1, 2, 5])  # the same pixels spread over 1, 2 or 5 frames
def test_key_class_iou_matches_hand_computed_confusion(split):
    gt = np.array([PERSON] * 4 + [CAR] * 4 + [RIDER, BICYCLE])
    pred = np.array([PERSON] * 3 + [CAR] * 5 + [BICYCLE, BICYCLE])
    table = ConditionTable()
    for i, (g, p) in enumerate(zip(np.array_split(gt, split), np.array_split(pred, split))):
        table.add("full", i, "night", confusion_matrix(p, g))
    cell = table.compute(resamples=0)["cells"]["all"]["full"]
    # person 3 / 4, rider 0 / 1, car 4 / 5, bicycle 1 / 2; no other class occurs.
    assert cell["iou"] == pytest.approx({"person": 0.75, "rider": 0.0, "car": 0.8, "bicycle": 0.5})
    assert cell["key_miou"] == pytest.approx((0.75 + 0.0 + 0.8 + 0.5) / 4)
    assert cell["miou"] == pytest.approx(cell["key_miou"])
    assert cell["miou_interval"] is None and cell["num_frames"] == split


def test_table_miou_equals_the_metric_suite_definition():
    rng = np.random.default_rng(3)
    table, seg = ConditionTable(), SegmentationIoU()
    for i in range(6):
        conf = _noisy_frame(rng, 0.7)
        table.add("full", i, "fog", conf)
        seg.accumulate(conf)
    cell = table.compute(resamples=0)["cells"]["fog"]["full"]
    assert cell["miou"] == pytest.approx(seg.compute()["miou"], abs=1e-12)
    np.testing.assert_allclose(cell["iou_per_class"], seg.compute()["iou_per_class"])


# ---------------------------------------------------------------------- bootstrap
@pytest.mark.parametrize("n", [10, 40, 160])
def test_bootstrap_interval_contains_the_point_estimate(n):
    cell = _random_table(n).compute(resamples=400, seed=1)["cells"]["all"]["full"]
    lo, hi = cell["miou_interval"]
    assert lo < cell["miou"] < hi
    lo, hi = cell["key_miou_interval"]
    assert lo <= cell["key_miou"] <= hi


def test_bootstrap_interval_shrinks_with_more_frames():
    widths = []
    for n in (10, 40, 160):
        lo, hi = _random_table(n).compute(resamples=400, seed=1)["cells"]["all"]["full"]["miou_interval"]
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2] > 0
    # ~1 / sqrt(n): 16x the frames gives roughly a quarter of the width.
    assert widths[2] / widths[0] == pytest.approx(0.25, abs=0.12)


def test_bootstrap_matches_a_frame_by_frame_resampling_loop():
    n, resamples, seed = 7, 50, 4
    rng = np.random.default_rng(0)
    confs = [_noisy_frame(rng, a) for a in np.linspace(0.4, 0.9, n)]
    table = ConditionTable()
    for i, c in enumerate(confs):
        table.add("full", i, "dusk", c)
    got = table.compute(resamples=resamples, confidence=0.8, seed=seed)["cells"]["dusk"]["full"]
    # Same draws as the table's (the row generator), summed one frame at a time.
    from damcseg_core.eval.conditions import row_rng

    draws = row_rng(seed, "dusk").integers(0, n, size=(resamples, n))
    mious = []
    for row in draws:
        seg = SegmentationIoU()
        for j in row:
            seg.accumulate(confs[j])
        mious.append(seg.compute()["miou"])
    np.testing.assert_allclose(got["miou_interval"], np.percentile(mious, [10, 90]), rtol=1e-12)


def test_bootstrap_counts_draw_n_frames_per_resample():
    counts = bootstrap_counts(5, 1000, np.random.default_rng(0))
    assert counts.shape == (1000, 5)
    np.testing.assert_array_equal(counts.sum(axis=1), 5)
    np.testing.assert_allclose(counts.mean(axis=0), 1.0, atol=0.1)  # every frame equally likely


def test_percentile_interval_leaves_out_nan_and_gives_nan_without_data():
    samples = np.array([[1.0, np.nan], [2.0, np.nan], [3.0, np.nan], [np.nan, np.nan]])
    iv = percentile_interval(samples, 0.5)
    np.testing.assert_allclose(iv[:, 0], [1.5, 2.5])
    assert np.isnan(iv[:, 1]).all()


def test_bootstrap_is_reproducible_and_seeded():
    a = _random_table(20).compute(resamples=100, seed=5)["cells"]["all"]["full"]["miou_interval"]
    b = _random_table(20).compute(resamples=100, seed=5)["cells"]["all"]["full"]["miou_interval"]
    c = _random_table(20).compute(resamples=100, seed=6)["cells"]["all"]["full"]["miou_interval"]
    assert a == b and a != c


# ---------------------------------------------------------------------- paired differences
def _paired_table(identical: bool, n: int = 12) -> ConditionTable:
    rng = np.random.default_rng(2)
    table = ConditionTable()
    for i in range(n):
        condition = ("day", "night")[i % 2]
        conf = _noisy_frame(rng, 0.8)
        other = conf if identical else _noisy_frame(rng, 0.5)
        table.add("full", i, condition, _noisy_frame(rng, 0.95))
        table.add("missing:thermal", i, condition, conf)
        table.add("zero-fill:thermal", i, condition, other)
    return table


@pytest.mark.parametrize("row", ["day", "night", "all"])
def test_paired_difference_of_identical_predictions_is_exactly_zero(row):
    out = _paired_table(identical=True).compute(resamples=300)
    comp = next(c for c in out["comparisons"] if (c["a"], c["b"]) == ("missing:thermal", "zero-fill:thermal"))
    d = comp["cells"][row]
    assert d["miou_diff"] == 0.0 and d["miou_diff_interval"] == [0.0, 0.0]
    assert d["key_miou_diff"] == 0.0 and d["key_miou_diff_interval"] == [0.0, 0.0]
    assert d["miou_outside_noise"] is False
    # The protocols' own intervals are not zero-width: pairing is what removes the noise.
    lo, hi = out["cells"][row]["missing:thermal"]["miou_interval"]
    assert hi - lo > 0.005


def test_a_clear_gain_is_outside_the_noise_and_narrower_than_separate_intervals():
    out = _paired_table(identical=False, n=40).compute(resamples=300)
    comp = next(c for c in out["comparisons"] if c["a"] == "missing:thermal")
    d = comp["cells"]["all"]
    a, b = out["cells"]["all"]["missing:thermal"], out["cells"]["all"]["zero-fill:thermal"]
    assert d["miou_diff"] == pytest.approx(a["miou"] - b["miou"])
    assert d["miou_diff"] > 0 and d["miou_diff_interval"][0] > 0 and d["miou_outside_noise"] is True
    # recovery = (completed - zero-filled) / (all - zero-filled)
    full = out["cells"]["all"]["full"]["miou"]
    assert d["recovery"] == pytest.approx((a["miou"] - b["miou"]) / (full - b["miou"]))


def test_recovery_is_undefined_without_a_gap():
    table = ConditionTable()
    rng = np.random.default_rng(0)
    for i in range(6):
        same = _noisy_frame(rng, 0.6)
        table.add("full", i, "day", same)
        table.add("zero-fill:depth", i, "day", same)
        table.add("missing:depth", i, "day", _noisy_frame(rng, 0.9))
    comp = table.compute(resamples=100)["comparisons"][0]
    assert (comp["a"], comp["b"]) == ("missing:depth", "zero-fill:depth")
    assert np.isnan(comp["cells"]["all"]["recovery"])


@pytest.mark.parametrize(("resamples", "defined"), [(0, True), (100, False)])
def test_recovery_of_a_single_frame_row_needs_no_bootstrap(resamples, defined):
    table = ConditionTable()
    gt = np.array([CAR, CAR, ROAD, ROAD])
    for name, pred in (("full", gt), ("missing:rgb", [CAR, ROAD, ROAD, ROAD]), ("zero-fill:rgb", [ROAD] * 4)):
        table.add(name, 0, "night", confusion_matrix(np.array(pred), gt))
    recovery = table.compute(resamples=resamples)["comparisons"][0]["cells"]["night"]["recovery"]
    # mIoU: full 1, missing (0.5 + 2/3) / 2, zero-fill (0 + 0.5) / 2
    expected = ((0.5 + 2 / 3) / 2 - 0.25) / (1 - 0.25)
    assert recovery == pytest.approx(expected) if defined else np.isnan(recovery)


@pytest.mark.parametrize(
    ("protocols", "pairs"),
    [
        (["full"], []),
        (["full", "missing:thermal"], []),
        (
            ["full", "missing:thermal", "zero-fill:thermal", "absent:thermal"],
            [("missing:thermal", "zero-fill:thermal"), ("full", "zero-fill:thermal"), ("missing:thermal", "absent:thermal")],
        ),
        (["zero-fill:depth", "full", "missing:rgb", "absent:rgb"], [("full", "zero-fill:depth"), ("missing:rgb", "absent:rgb")]),
        (list(COMPLETION_SUITE), [(a, b) for m in ("thermal", "depth", "rgb") for a, b in
         ((f"missing:{m}", f"zero-fill:{m}"), ("full", f"zero-fill:{m}"), (f"missing:{m}", f"absent:{m}"))]),
    ],
)  # fmt: skip
def test_default_comparisons(protocols, pairs):
    assert default_comparisons(protocols) == pairs


@pytest.mark.parametrize(
    ("name", "completed", "label", "image"),
    [
        ("full", (), "all sensors", ()),
        ("missing:thermal", ("thermal",), "thermal completed (MCN)", ()),
        ("missing:thermal", (), "thermal missing", ()),  # a model without an MCN
        ("missing:depth+thermal", ("depth", "thermal"), "depth + thermal completed (MCN)", ()),
        ("missing:depth", ("depth",), "depth completed (depth image)", ("depth",)),
        ("missing:depth+thermal", ("depth", "thermal"), "depth + thermal completed (depth image + MCN)", ("depth",)),
        ("missing:thermal", ("thermal",), "thermal completed (MCN)", ("depth",)),
        ("zero-fill:depth", (), "depth zero-filled", ()),
        ("absent:rgb", (), "rgb absent (no MCN)", ()),
        ("noise:depth:gaussian=0.1", (), "noise:depth:gaussian=0.1", ()),
    ],
)  # fmt: skip
def test_protocol_label(name, completed, label, image):
    assert protocol_label(name, completed, image) == label


# ---------------------------------------------------------------------- rows and omega
@pytest.mark.parametrize(
    ("conditions", "rows"),
    [
        (["night", "day", "fog", "day", "dusk", "night", "night"], ["day", "dusk", "night", "fog", "all"]),
        (["twilight", "day", "unknown", "day"], ["day", "twilight", "unknown", "all"]),
        (["fog"], ["fog", "all"]),
    ],
)
def test_condition_rows_partition_the_frames(conditions, rows):
    table = ConditionTable()
    rng = np.random.default_rng(0)
    for i, c in enumerate(conditions):
        table.add("full", i, c, _noisy_frame(rng, 0.7, 20))
    out = table.compute(resamples=50)
    assert out["rows"] == rows
    assert sum(out["counts"][r] for r in rows[:-1]) == out["counts"]["all"] == len(conditions)
    assert {r: out["counts"][r] for r in rows[:-1]} == {r: conditions.count(r) for r in rows[:-1]}
    assert all(out["cells"][r]["full"]["num_frames"] == out["counts"][r] for r in rows)
    # One frame has no spread to estimate: no interval there, one wherever there are two or more.
    assert {r: out["cells"][r]["full"]["miou_interval"] is None for r in rows} == {
        r: out["counts"][r] == 1 for r in rows
    }


def test_omega_s_and_d_means_match_hand_computed_values():
    table = ConditionTable()
    conf = confusion_matrix(np.array([CAR]), np.array([CAR]))
    omegas = {0: ([0.4, 0.6, 0.2], "day"), 1: ([0.2, 0.5, 0.6], "night"), 2: ([0.3, 0.7, 0.4], "night")}
    for i, (w, c) in omegas.items():
        table.add("full", i, c, conf, omega=np.array(w), S=0.1 * (i + 1), D=0.05 * i)
        table.add("absent:thermal", i, c, conf, omega=np.array([w[0], w[1], 0.0]))
    out = table.compute(resamples=100)
    night = out["cells"]["night"]["full"]
    assert night["omega"] == pytest.approx({"rgb": 0.25, "depth": 0.6, "thermal": 0.5})
    assert night["S"] == pytest.approx(0.25) and night["D"] == pytest.approx(0.075)
    assert out["cells"]["all"]["full"]["omega"]["thermal"] == pytest.approx(0.4)
    assert out["cells"]["day"]["full"]["omega"] == pytest.approx({"rgb": 0.4, "depth": 0.6, "thermal": 0.2})
    assert out["cells"]["all"]["absent:thermal"]["omega"]["thermal"] == 0.0
    lo, hi = night["omega_interval"]["thermal"]
    assert 0.4 <= lo <= 0.5 <= hi <= 0.6  # the two night frames' values bound the resampled means


def _weights_table(night_thermal: float, spread: float, n: int = 12) -> ConditionTable:
    """n day + n night frames; thermal's weight is 0.6 by day and ``night_thermal`` at night (each
    frame +-``spread``); with thermal completed by the MCN every frame's thermal weight is 0.05 lower."""
    rng = np.random.default_rng(3)
    table = ConditionTable()
    conf = confusion_matrix(np.array([CAR]), np.array([CAR]))
    for i in range(2 * n):
        cond = "day" if i < n else "night"
        t = (0.6 if cond == "day" else night_thermal) + rng.uniform(-spread, spread)
        table.add("full", i, cond, conf, omega=np.array([0.5, 0.9, t]))
        table.add(
            "missing:thermal", i, cond, conf, omega=np.array([0.5, 0.9, t - 0.05]), completed=("thermal",)
        )
    return table


def test_omega_checks_compare_conditions_unpaired_and_completed_with_real_paired():
    out = _weights_table(night_thermal=0.7, spread=0.03).compute(resamples=300)
    checks = out["omega_checks"]
    assert checks["reference_row"] == "day"
    night = checks["minus_reference"]["night"]
    assert set(checks["minus_reference"]) == {"night"}  # neither day itself nor "all"
    assert night["thermal"]["diff"] == pytest.approx(0.1, abs=0.02)
    lo, hi = night["thermal"]["interval"]
    assert 0.0 < lo < night["thermal"]["diff"] < hi and night["thermal"]["outside_noise"]
    assert night["rgb"]["diff"] == pytest.approx(0.0, abs=1e-12) and not night["rgb"]["outside_noise"]
    comp = checks["completed_minus_real"]
    assert set(comp) == {"day", "night", "all"} and set(comp["all"]) == {"thermal"}
    for row in comp.values():  # paired: the same -0.05 on every frame, so a zero-width interval
        assert row["thermal"]["diff"] == pytest.approx(-0.05)
        assert row["thermal"]["interval"] == pytest.approx([-0.05, -0.05]) and row["thermal"]["outside_noise"]
    title, note, header, rows = condition_tables(out)[-1]
    assert title == "Fusion weights: by condition, and completed against real"
    assert header == [
        "condition", "ω_rgb: minus day", "ω_depth: minus day", "ω_thermal: minus day", "ω_thermal: completed - real",
    ]  # fmt: skip
    assert rows[0][:4] == ["day", "0", "0", "0"] and rows[1][3].endswith(" *")
    assert rows[1][4] == "-0.050 [-0.050, -0.050] *" and "unpaired" in note


def test_omega_checks_call_a_small_shift_noise():
    out = _weights_table(night_thermal=0.605, spread=0.2, n=6).compute(resamples=300)
    assert out["omega_checks"]["minus_reference"]["night"]["thermal"]["outside_noise"] is False
    bare = _weights_table(0.7, 0.03).compute(resamples=0)  # no bootstrap: values, no intervals
    assert bare["omega_checks"]["minus_reference"]["night"]["thermal"]["interval"] is None
    only_night = ConditionTable()
    only_night.add("full", 0, "night", confusion_matrix(np.array([CAR]), np.array([CAR])), omega=np.ones(3))
    checks = only_night.compute(resamples=10)["omega_checks"]
    assert checks == {"reference_row": None, "minus_reference": {}, "completed_minus_real": {}}
    assert condition_tables(only_night.compute(resamples=10))[-1][0].startswith("Key classes")


def test_prediction_without_omega_gives_undefined_weights():
    table = ConditionTable()
    sample = {"semantic": np.array([[CAR, ROAD]]), "condition": "day"}
    table.update("full", 0, sample, SimpleNamespace(mask=np.array([[CAR, CAR]], np.uint8)))
    cell = table.compute(resamples=0)["cells"]["day"]["full"]
    assert np.isnan(cell["omega"]["rgb"]) and np.isnan(cell["S"])
    assert cell["iou"]["car"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda t: t.compute(), "the condition table is empty"),
        (lambda t: (t.add("full", 0, "day", np.zeros((NUM_CLASSES, NUM_CLASSES + 1))),
                    t.add("full", 0, "day", np.zeros((NUM_CLASSES, NUM_CLASSES + 1)))), "already added"),
        (lambda t: (t.add("full", 0, "day", np.zeros((NUM_CLASSES, NUM_CLASSES + 1))),
                    t.add("zero-fill:rgb", 0, "night", np.zeros((NUM_CLASSES, NUM_CLASSES + 1)))), "condition 'night' here"),
        (lambda t: t.add("full", 0, "day", np.zeros((3, 4))), r"expected \(19, 20\)"),
        (lambda t: (t.add("full", 0, "day", np.zeros((NUM_CLASSES, NUM_CLASSES + 1))),
                    t.add("full", 1, "day", np.zeros((NUM_CLASSES, NUM_CLASSES + 1))),
                    t.add("missing:rgb", 0, "day", np.zeros((NUM_CLASSES, NUM_CLASSES + 1))), t.compute()),
         "saw different frames"),
        (lambda t: (t.add("full", 0, "day", np.zeros((NUM_CLASSES, NUM_CLASSES + 1))),
                    t.compute(confidence=1.5)), r"confidence must be in \(0, 1\)"),
        (lambda t: (t.add("full", 0, "day", np.zeros((NUM_CLASSES, NUM_CLASSES + 1))),
                    t.compute(comparisons=[("full", "absent:rgb")])), "names protocol 'absent:rgb', not evaluated"),
    ],
)  # fmt: skip
def test_table_errors_say_what_to_do(build, message):
    with pytest.raises(ValueError, match=message):
        build(ConditionTable())


# ---------------------------------------------------------------------- evaluator, absent, report
H, W = 48, 64


def _sample(i: int, condition: str) -> dict:
    g = torch.Generator().manual_seed(i)
    semantic = torch.zeros(H, W, dtype=torch.int64)
    semantic[: H // 3] = SKY
    semantic[30:40, 10:24] = CAR
    semantic[28:40, 40:44] = PERSON
    return {
        "rgb": torch.rand(3, H, W, generator=g),
        "depth": torch.rand(1, H, W, generator=g) * 30,
        "thermal": torch.rand(1, H, W, generator=g),
        "present": torch.tensor([True, True, True]),
        "semantic": semantic,
        "condition": condition,
        "meta": {"dataset": "unit", "frame": i, "has_boxes": False},
    }


SAMPLES = [_sample(i, c) for i, c in enumerate(["day", "night", "day", "night", "fog"])]
PROTOCOLS = ["full", "missing:thermal", "zero-fill:thermal", "absent:thermal"]


class _Recorder:
    """Wraps a Predictor (keeping its model and inference copy reachable) and records calls."""

    def __init__(self, predictor):
        self.inner = predictor
        self.model = predictor.model
        self._runner = predictor._runner
        self.device = predictor.device
        self.class_names = predictor.class_names
        self.calls: list[tuple[tuple[str, ...], bool]] = []

    def predict(self, inputs):
        self.calls.append((tuple(sorted(inputs)), self._runner.completion is not None))
        return self.inner.predict(inputs)


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_name("damcseg_tiny", seed=0)


@pytest.fixture(scope="module")
def evaluated(predictor):
    rec = _Recorder(predictor)
    res = Evaluator(rec, PROTOCOLS, seed=0, num_examples=0, progress=False, bootstrap=200).run(SAMPLES)
    return res, rec.calls


def test_absent_runs_without_the_mcn_and_restores_it(evaluated, predictor):
    result, calls = evaluated
    per_frame = [
        (("depth", "rgb", "thermal"), True),
        (("depth", "rgb"), True),
        (("depth", "rgb", "thermal"), True),
        (("depth", "rgb"), False),  # absent:thermal: no thermal and the MCN off
    ]
    assert calls == per_frame * len(SAMPLES)
    assert predictor.model.completion is not None and predictor._runner.completion is not None
    table = result.metrics["condition_table"]
    assert table["protocols"]["missing:thermal"] == {
        "label": "thermal completed (MCN)",
        "completed": ["thermal"],
    }
    assert table["protocols"]["absent:thermal"] == {"label": "thermal absent (no MCN)", "completed": []}
    assert table["cells"]["all"]["absent:thermal"]["omega"]["thermal"] == 0.0
    assert table["cells"]["all"]["missing:thermal"]["omega"]["thermal"] > 0.0


def test_evaluator_table_structure_counts_and_agreement_with_the_suite(evaluated):
    m = evaluated[0].metrics
    table = m["condition_table"]
    assert table["rows"] == ["day", "night", "fog", "all"]
    assert table["counts"] == {"day": 2, "night": 2, "fog": 1, "all": 5}
    assert table["bootstrap"]["resamples"] == 200 and table["bootstrap"]["confidence"] == 0.9
    assert list(table["protocols"]) == PROTOCOLS
    for p in PROTOCOLS:
        assert table["cells"]["all"][p]["miou"] == pytest.approx(m["protocols"][p]["all"]["miou"])
        assert table["cells"]["night"][p]["miou"] == pytest.approx(
            m["protocols"][p]["condition"]["night"]["miou"]
        )
    pairs = [(c["a"], c["b"]) for c in table["comparisons"]]
    assert pairs == [("missing:thermal", "zero-fill:thermal"), ("full", "zero-fill:thermal"),
                     ("missing:thermal", "absent:thermal")]  # fmt: skip
    assert table["cells"]["fog"]["full"]["miou_interval"] is None  # a single fog frame
    json.dumps(m, allow_nan=False)  # strict JSON: NaN became null


def test_report_and_json_contain_the_table(evaluated, tmp_path):
    result = evaluated[0]
    paths = write_report(result, tmp_path)
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics["condition_table"]["counts"]["all"] == 5
    md = paths["markdown"].read_text()
    cell = metrics["condition_table"]["cells"]["night"]["missing:thermal"]
    lo, hi = cell["miou_interval"]
    assert "| night | 2 | " in md
    assert f"{100 * cell['miou']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]" in md
    for text in ("## Condition x protocol", "thermal completed (MCN)", "thermal absent (no MCN)",
                 "thermal: completed - zero-filled", "thermal: gap recovered", "ω_thermal",
                 "S = scene complexity (eq. 5", "D = target density", "excludes 0 (outside the noise)"):  # fmt: skip
        assert text in md
    page = paths["html"].read_text()
    assert "<h2>Condition x protocol</h2>" in page and "ω_thermal" in page and "<td>night</td>" in page
    assert render_markdown(result) == md


def test_report_marks_a_difference_outside_the_noise():
    out = _paired_table(identical=False, n=40).compute(resamples=300)
    _, note, header, rows = condition_tables(out)[1]
    assert header[:3] == ["condition", "thermal: completed - zero-filled", "thermal: gap recovered"]
    assert rows[-1][0] == "all" and rows[-1][1].endswith(" *")
    assert "excludes 0" in note
    full = out["cells"]["all"]["full"]["miou"]
    a, b = out["cells"]["all"]["missing:thermal"]["miou"], out["cells"]["all"]["zero-fill:thermal"]["miou"]
    assert rows[-1][2] == f"{round(100 * (a - b) / (full - b))}%"
    identical = condition_tables(_paired_table(identical=True).compute(resamples=300))[1][3]
    assert identical[-1][1] == "+0.0 [+0.0, +0.0]"  # no star: zero is inside a zero-width interval
    out["comparisons"][0]["cells"]["all"]["recovery"] = -0.004
    assert condition_tables(out)[1][3][-1][2] == "0%"  # not "-0%"


def test_completion_disabled_needs_a_torch_model_and_restores_on_error(predictor):
    with pytest.raises(ValueError, match="instead of an export"):
        with completion_disabled(SimpleNamespace(model=object())):
            pass
    with pytest.raises(RuntimeError, match="boom"):
        with completion_disabled(predictor):
            assert predictor._runner.completion is None
            raise RuntimeError("boom")
    assert predictor._runner.completion is not None


def test_absent_refuses_a_wrapper_that_hides_the_model(predictor):
    class Hidden:  # reaches the model but not the Predictor's inference copy, which still runs the MCN
        model = predictor.model
        device = predictor.device

        def predict(self, inputs):
            return predictor.predict(inputs)

    with pytest.raises(RuntimeError, match="still completed"):
        Evaluator(Hidden(), ["absent:thermal"], progress=False).run(SAMPLES[:1])


def test_cli_completion_suite_and_bootstrap_flags(monkeypatch, tmp_path, capsys):
    import damcseg_core.data.registry as registry
    from damcseg_core.cli import eval as cli

    monkeypatch.setattr(registry, "build_dataset", lambda spec: SAMPLES)
    argv = ["--model", "damcseg_tiny", "--data", "x", "--protocol", "completion", "--bootstrap", "0",
            "--out", str(tmp_path), "--limit", "2", "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics["protocols"]) == list(COMPLETION_SUITE)
    table = metrics["condition_table"]
    assert table["bootstrap"]["resamples"] == 0 and table["cells"]["all"]["full"]["miou_interval"] is None
    assert len(table["comparisons"]) == 9
    out = capsys.readouterr().out
    assert "mIoU % by condition and protocol (no bootstrap: --bootstrap 0)" in out
    assert "report.md" in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--bootstrap", "-1"], "--bootstrap must be >= 0"),
        (["--confidence", "1"], r"--confidence must be in \(0, 1\)"),
    ],
)
def test_cli_rejects_bad_bootstrap_settings(tmp_path, capsys, flags, message):
    from damcseg_core.cli import eval as cli

    with pytest.raises(SystemExit):
        cli.main(["--model", "damcseg_tiny", "--data", "x", "--out", str(tmp_path), *flags])
    assert message.replace("\\", "") in capsys.readouterr().err
