"""MetricSuite grouping by condition / complexity and the efficiency helpers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from damcseg_core.config import ConfigError
from damcseg_core.eval.metrics import MetricConfig, MetricSuite, count_parameters, peak_memory, timing_stats


def _sample(condition, car_box=(4, 4, 12, 12)):
    semantic = torch.zeros(16, 16, dtype=torch.int64)
    instance = torch.zeros(16, 16, dtype=torch.int32)
    x1, y1, x2, y2 = car_box
    semantic[y1:y2, x1:x2] = 13
    instance[y1:y2, x1:x2] = 1
    return {
        "semantic": semantic,
        "instance": instance,
        "boxes": torch.tensor([car_box], dtype=torch.float32),
        "labels": torch.tensor([13]),
        "occlusion": torch.tensor([0.8]),
        "areas": torch.tensor([float((x2 - x1) * (y2 - y1))]),
        "condition": condition,
        "meta": {},
    }


def _prediction(sample, correct, category, ms=10.0):
    mask = sample["semantic"].numpy().astype(np.uint8) if correct else np.zeros((16, 16), np.uint8)
    boxes = sample["boxes"].numpy() if correct else np.zeros((0, 4), np.float32)
    return SimpleNamespace(
        mask=mask, boxes=boxes, scores=np.ones(len(boxes), np.float32),
        labels=np.full(len(boxes), 13), category=category, S=0.1 * (category + 1), inference_ms=ms,
    )  # fmt: skip


def _filled_suite():
    # The 64-px test car is below the valid-object area rule: count every object here.
    suite = MetricSuite(MetricConfig(boundary_tolerance_px=1, det_min_area=0))
    day1, day2, night = _sample("day"), _sample("day"), _sample("night")
    suite.update(day1, _prediction(day1, True, 0, ms=10.0))
    suite.update(day2, _prediction(day2, True, 2, ms=30.0))
    suite.update(night, _prediction(night, False, 2, ms=20.0))
    return suite.compute()


def test_groups_hold_the_right_images():
    out = _filled_suite()
    assert out["all"]["num_images"] == 3
    assert {k: v["num_images"] for k, v in out["condition"].items()} == {"day": 2, "night": 1}
    assert {k: v["num_images"] for k, v in out["complexity"].items()} == {"simple": 1, "complex": 2}
    assert out["S"] == pytest.approx([0.1, 0.3, 0.3])


@pytest.mark.parametrize(
    ("group", "miou", "det_map_50", "occluded_recall"),
    [
        (("condition", "day"), 1.0, 1.0, 1.0),
        # Night: everything predicted road; car IoU 0, road IoU = 192 / 256.
        (("condition", "night"), (0.0 + 192 / 256) / 2, 0.0, 0.0),
        (("complexity", "simple"), 1.0, 1.0, 1.0),
    ],
)
def test_group_metric_values(group, miou, det_map_50, occluded_recall):
    values = _filled_suite()[group[0]][group[1]]
    assert values["miou"] == pytest.approx(miou)
    assert values["det_map_50"] == pytest.approx(det_map_50)
    assert values["occluded_recall"] == pytest.approx(occluded_recall)


def test_overall_values_and_timing():
    out = _filled_suite()["all"]
    assert out["occluded_recall"] == pytest.approx(2 / 3)
    assert out["small_miou"] == pytest.approx(2 / 3)  # 64-px car, IoU 1, 1, 0
    assert out["mean_ms"] == pytest.approx(20.0) and out["fps"] == pytest.approx(50.0)
    # Recall tops out at 2/3 with precision 1: 101-point sampling hits 0.00..0.66 = 67 points.
    assert out["det_map_50"] == pytest.approx(67 / 101)


def test_samples_without_boxes_skip_object_and_detection_metrics():
    suite = MetricSuite()
    s = _sample("fog")
    s["meta"] = {"has_boxes": False}
    suite.update(s, _prediction(s, False, 1))
    out = suite.compute()["all"]
    assert math.isnan(out["det_map"]) and out["num_small_objects"] == 0
    assert out["miou"] == pytest.approx(0.375)


def test_errors_name_the_problem():
    suite = MetricSuite()
    with pytest.raises(ValueError, match="no 'semantic' ground truth"):
        suite.update({"rgb": torch.zeros(3, 4, 4)}, _prediction(_sample("day"), True, 0))
    s = _sample("day")
    bad = SimpleNamespace(
        mask=np.zeros((8, 8), np.uint8), boxes=np.zeros((0, 4)), scores=np.zeros(0), labels=np.zeros(0)
    )
    with pytest.raises(ValueError, match="differ in size"):
        suite.update(s, bad)
    with pytest.raises(ConfigError, match="tiny_area"):
        MetricSuite(MetricConfig(tiny_area=2000))


@pytest.mark.parametrize(
    ("timings", "fps", "p50"),
    [([10.0, 10.0], 100.0, 10.0), ([5.0, 15.0, 40.0], 50.0, 15.0)],
)
def test_timing_stats(timings, fps, p50):
    out = timing_stats(timings)
    assert out["fps"] == pytest.approx(fps) and out["p50_ms"] == pytest.approx(p50)


def test_timing_stats_empty_is_nan():
    assert math.isnan(timing_stats([])["fps"])


def test_count_parameters_counts_shared_once():
    lin = torch.nn.Linear(3, 4)
    model = torch.nn.Sequential(lin, torch.nn.ReLU(), lin)
    assert count_parameters(model) == 16
    lin.bias.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 12


def test_peak_memory_cpu_is_process_rss():
    out = peak_memory("cpu")
    assert out["kind"] == "process_peak_rss"
    assert out["peak_bytes"] > 10 * 2**20  # a python process with torch loaded holds > 10 MiB


@pytest.mark.gpu
def test_peak_memory_cuda_counts_allocations():
    torch.cuda.reset_peak_memory_stats()
    x = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda")
    out = peak_memory("cuda")
    assert out["kind"] == "cuda_max_allocated" and out["peak_bytes"] >= 64 * 2**20
    del x
