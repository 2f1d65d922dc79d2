"""mIoU and Boundary F: cross-checks against torchmetrics / a naive loop, and hand-made cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torchmetrics.classification import MulticlassJaccardIndex

from damcseg_core.eval.boundary import BoundaryFScore, binary_boundary, boundary_f_binary
from damcseg_core.eval.segmentation_metrics import SegmentationIoU, confusion_matrix


def _random_pair(seed: int, num_classes: int, shape=(3, 24, 32), ignore_frac=0.1):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, num_classes, size=shape)
    target[rng.random(shape) < ignore_frac] = 255
    # Predictions agree with the target half of the time so IoUs are far from 0 and 1.
    pred = np.where(rng.random(shape) < 0.5, target, rng.integers(0, num_classes, size=shape))
    pred[pred == 255] = 0
    return pred, target


def _naive_iou(pred, target, num_classes):
    ious = []
    for c in range(num_classes):
        valid = target != 255
        p = (pred == c) & valid
        t = (target == c) & valid
        union = (p | t).sum()
        ious.append(float((p & t).sum() / union) if union else math.nan)
    return ious


@pytest.mark.parametrize(("seed", "num_classes"), [(0, 19), (1, 5), (2, 2)])
def test_miou_matches_torchmetrics_and_naive(seed, num_classes):
    pred, target = _random_pair(seed, num_classes)
    metric = SegmentationIoU(num_classes)
    for i in range(len(pred)):  # streaming, one image at a time
        metric.update(pred[i], target[i])
    out = metric.compute()
    tm = MulticlassJaccardIndex(num_classes=num_classes, ignore_index=255, average=None)
    expected = tm(torch.from_numpy(pred), torch.from_numpy(target)).numpy()
    np.testing.assert_allclose(out["iou_per_class"], expected, atol=1e-6)
    naive = _naive_iou(pred, target, num_classes)
    np.testing.assert_allclose(out["iou_per_class"], naive, atol=1e-12)
    assert out["miou"] == pytest.approx(float(np.mean(naive)), abs=1e-12)
    assert out["num_pixels"] == int((target != 255).sum())


def test_absent_class_is_nan_and_excluded_from_mean():
    target = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 1, 1, 1]])
    metric = SegmentationIoU(num_classes=3)
    metric.update(pred, target)
    out = metric.compute()
    assert out["iou_per_class"][:2] == [0.5, pytest.approx(2 / 3)]
    assert math.isnan(out["iou_per_class"][2])
    assert out["miou"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert out["pixel_accuracy"] == pytest.approx(0.75)


def test_unknown_prediction_is_a_false_negative_only():
    target = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 255, 1, 1]])
    cm = confusion_matrix(pred, target, num_classes=2)
    assert cm.tolist() == [[1, 0, 1], [0, 2, 0]]
    metric = SegmentationIoU(num_classes=2)
    metric.update(pred, target)
    assert metric.compute()["iou_per_class"] == [0.5, 1.0]


def test_shape_mismatch_names_the_fix():
    with pytest.raises(ValueError, match="resize the prediction"):
        confusion_matrix(np.zeros((4, 4)), np.zeros((4, 5)))


# ---------------------------------------------------------------- Boundary F


def test_binary_boundary_of_a_square_is_its_outline():
    mask = np.zeros((7, 7), bool)
    mask[2:5, 2:5] = True
    b = binary_boundary(mask)
    assert b.sum() == 8 and not b[3, 3] and b[2, 2]
    full = np.ones((4, 4), bool)  # the image border is not a boundary
    assert binary_boundary(full).sum() == 0


@pytest.mark.parametrize("tolerance", [0, 1, 2.5, 4])
def test_boundary_matching_equals_euclidean_distance_transform(tolerance):
    rng = np.random.default_rng(3)
    pred_b = rng.random((30, 40)) < 0.05
    gt_b = rng.random((30, 40)) < 0.05
    precision, recall, f = boundary_f_binary(pred_b, gt_b, tolerance)
    # Reference: distance of every pixel to the nearest boundary pixel of the other map.
    to_gt = ndimage.distance_transform_edt(~gt_b)
    to_pred = ndimage.distance_transform_edt(~pred_b)
    assert precision == pytest.approx((to_gt[pred_b] <= tolerance).mean())
    assert recall == pytest.approx((to_pred[gt_b] <= tolerance).mean())
    assert f == pytest.approx(2 * precision * recall / (precision + recall))


@pytest.mark.parametrize("c", [0, 1, 2, 3])
def test_per_class_scores_match_binary_definition(c):
    rng = np.random.default_rng(4)
    gt = np.kron(rng.integers(0, 4, (6, 8)), np.ones((5, 5), np.int64))
    pred = np.kron(rng.integers(0, 4, (6, 8)), np.ones((5, 5), np.int64))
    scores = BoundaryFScore(num_classes=4, tolerance_px=2).sample_stats(pred, gt)
    expected = boundary_f_binary(binary_boundary(pred == c), binary_boundary(gt == c), 2)
    assert 0.0 < expected[2] < 1.0
    assert scores[c] == pytest.approx(expected[2])


def _square_scene(shift: int, size=(64, 64)):
    gt = np.zeros(size, np.int64)
    gt[20:40, 20:40] = 1
    pred = np.zeros(size, np.int64)
    pred[20 + shift : 40 + shift, 20:40] = 1
    return pred, gt


@pytest.mark.parametrize(
    ("shift", "tolerance", "expected"),
    [
        (0, 2, 1.0),  # perfect
        (2, 2, 1.0),  # within tolerance
        (1, 3, 1.0),
        # Shifted by 5 with tolerance 2: only the two vertical edges (minus 5 rows) still match.
        (5, 2, None),
    ],
)
def test_boundary_f_hand_made(shift, tolerance, expected):
    pred, gt = _square_scene(shift)
    metric = BoundaryFScore(num_classes=2, tolerance_px=tolerance)
    metric.update(pred, gt)
    out = metric.compute()
    if expected is not None:
        assert out["boundary_f"] == pytest.approx(expected)
    else:
        # Class-1 outline: 76 px. Predicted square rows 25..44: its side columns match on rows
        # 26..41 (GT sides end at row 39, +2 tolerance) = 2 * 16, its top row matches 3 px at each
        # end (within 2 px of a GT side), its bottom row nothing: 38 / 76; recall is symmetric.
        assert out["boundary_f_per_class"][1] == pytest.approx(38 / 76)
        assert out["boundary_f"] < 0.6


def test_boundary_f_drops_with_shift_and_default_tolerance_is_diagonal_ratio():
    metric = BoundaryFScore(num_classes=2)
    assert metric.tolerance_for(1024, 2048) == pytest.approx(0.0075 * math.hypot(1024, 2048))
    scores = []
    for shift in (0, 3, 8):
        m = BoundaryFScore(num_classes=2, tolerance_px=1)
        m.update(*_square_scene(shift))
        scores.append(m.compute()["boundary_f"])
    assert scores[0] == 1.0 and scores[0] > scores[1] > scores[2]


def test_boundary_f_ignores_ignore_region_and_missing_class_scores_zero():
    gt = np.zeros((32, 32), np.int64)
    gt[8:24, 8:24] = 1
    gt[:, 28:] = 255
    pred = gt.copy()
    pred[:, 28:] = 1  # anything inside the ignore region must not matter
    m = BoundaryFScore(num_classes=3, tolerance_px=1)
    m.update(pred, gt)
    assert m.compute()["boundary_f_per_class"][:2] == [1.0, 1.0]
    assert math.isnan(m.compute()["boundary_f_per_class"][2])
    pred2 = np.where(gt == 1, 2, gt)  # class 1 missed entirely, class 2 hallucinated
    m2 = BoundaryFScore(num_classes=3, tolerance_px=1)
    m2.update(pred2, gt)
    per_class = m2.compute()["boundary_f_per_class"]
    assert per_class[1] == 0.0 and per_class[2] == 0.0


def test_boundary_negative_tolerance_is_rejected():
    with pytest.raises(ValueError, match="must be >= 0"):
        BoundaryFScore(tolerance_px=-1)
