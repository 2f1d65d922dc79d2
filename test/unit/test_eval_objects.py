"""Small-object mIoU, tiny-target recall and occluded-object recall on hand-made masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from damcseg_core.eval.object_metrics import ObjectMetrics, object_records

CAR, PERSON = 13, 11


def _scene():
    """Two cars side by side, a tiny person (3x3) and a large occluded car (40x30)."""
    semantic = np.zeros((64, 96), np.int64)
    instance = np.zeros((64, 96), np.int32)
    instance[10:20, 10:20] = 1  # car A, 100 px, box rows 10..19, cols 10..19
    instance[10:20, 20:30] = 2  # car B right next to A
    instance[40:43, 50:53] = 3  # tiny person, 9 px
    instance[20:60, 60:90] = 4  # big car, 1200 px, occlusion 0.7
    labels = np.array([CAR, CAR, PERSON, CAR])
    occlusion = np.array([0.0, 0.6, 0.0, 0.7], np.float32)
    semantic[instance > 0] = labels[instance[instance > 0] - 1]
    return semantic, instance, labels, occlusion


def test_perfect_prediction_gives_iou_one_and_full_recall():
    semantic, instance, labels, occlusion = _scene()
    m = ObjectMetrics()
    m.update(semantic, semantic, instance, labels, occlusion)
    out = m.compute()
    assert out["small_miou"] == 1.0
    assert out["num_small_objects"] == 3  # the 1200-px car is not small
    assert (out["tiny_recall"], out["num_tiny_objects"]) == (1.0, 1)
    assert (out["occluded_recall"], out["num_occluded_objects"]) == (1.0, 2)


def test_neighbour_of_same_class_is_not_a_false_positive():
    semantic, instance, labels, _ = _scene()
    pred = semantic.copy()
    pred[10:20, 5:10] = CAR  # 50 px of background left of car A predicted as car
    records = object_records(pred, semantic, instance, labels)
    # Car A: box cols 10..19 only, so the spill at cols 5..9 is outside its region: IoU 1.
    # Car B: its box (cols 20..29) excludes car A's pixels, so also IoU 1.
    assert [r.small_iou for r in records[:2]] == [1.0, 1.0]
    pred2 = semantic.copy()
    pred2[15:20, 10:20] = 0  # lower half of car A missed
    r = object_records(pred2, semantic, instance, labels)[0]
    assert r.small_iou == pytest.approx(0.5) and r.coverage == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("covered_px", "recalled"),
    [(9, 1.0), (5, 1.0), (4, 0.0), (0, 0.0)],  # 5/9 >= 0.5 recalled, 4/9 not
)
def test_tiny_recall_coverage_rule(covered_px, recalled):
    semantic, instance, labels, occlusion = _scene()
    pred = semantic.copy()
    pred[40:43, 50:53] = 0
    pred.reshape(-1)[np.flatnonzero(instance.reshape(-1) == 3)[:covered_px]] = PERSON
    m = ObjectMetrics()
    m.update(pred, semantic, instance, labels, occlusion)
    assert m.compute()["tiny_recall"] == recalled


def test_wrong_class_is_not_recalled_and_occlusion_threshold_is_configurable():
    semantic, instance, labels, occlusion = _scene()
    pred = semantic.copy()
    pred[instance == 4] = 14  # big occluded car predicted as truck
    m = ObjectMetrics()
    m.update(pred, semantic, instance, labels, occlusion)
    assert m.compute()["occluded_recall"] == 0.5  # car B recalled, big car not
    strict = ObjectMetrics(occlusion_threshold=0.65)
    strict.update(pred, semantic, instance, labels, occlusion)
    assert (strict.compute()["occluded_recall"], strict.compute()["num_occluded_objects"]) == (0.0, 1)


def test_small_miou_averages_per_class_first():
    semantic, instance, labels, occlusion = _scene()
    pred = semantic.copy()
    pred[15:20, 10:20] = 0  # car A IoU 0.5, car B 1.0 -> car class 0.75; person 1.0
    m = ObjectMetrics()
    m.update(pred, semantic, instance, labels, occlusion)
    out = m.compute()
    assert out["small_iou_per_class"][CAR] == pytest.approx(0.75)
    assert out["small_miou"] == pytest.approx((0.75 + 1.0) / 2)
    assert math.isnan(out["small_iou_per_class"][0])


def test_no_objects_gives_nan_and_bad_instance_map_fails():
    m = ObjectMetrics()
    m.update(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4), np.int32), np.zeros(0))
    out = m.compute()
    assert math.isnan(out["small_miou"]) and math.isnan(out["tiny_recall"])
    bad = np.zeros((4, 4), np.int32)
    bad[0, 0] = 2
    with pytest.raises(ValueError, match="refers to object 2 but labels has only 1"):
        object_records(np.zeros((4, 4)), np.zeros((4, 4)), bad, np.array([CAR]))
    with pytest.raises(ValueError, match="coverage must be in"):
        ObjectMetrics(coverage=0.0)
