"""COCO-style mAP: cross-checked against pycocotools on random boxes, plus hand-made cases."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from damcseg_core.eval.detection_metrics import DetectionMAP, box_iou


def _random_boxes(rng, n, size=100.0):
    xy = rng.uniform(0, size * 0.8, size=(n, 2))
    wh = rng.uniform(4, size * 0.3, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def _random_images(seed, num_images=6, num_classes=3, size=100.0):
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(num_images):
        n_gt = int(rng.integers(0, 6))
        gt = _random_boxes(rng, n_gt, size)
        gt_labels = rng.integers(0, num_classes, n_gt)
        # Detections: jittered copies of GT (varied IoU) plus random false positives.
        jitter = gt + rng.normal(0, 4, gt.shape)
        jitter[:, 2:] = np.maximum(jitter[:, 2:], jitter[:, :2] + 1)  # keep boxes valid (x2 > x1)
        extra = _random_boxes(rng, int(rng.integers(0, 5)), size)
        boxes = np.concatenate([jitter, extra])
        labels = np.concatenate([gt_labels, rng.integers(0, num_classes, len(extra))])
        scores = rng.random(len(boxes))
        images.append((boxes, scores, labels, gt, gt_labels))
    return images


def _pycocotools_map(images, num_classes, crowd_below=None, area_ranges=None):
    gt = {"images": [], "annotations": [], "categories": [{"id": c} for c in range(num_classes)]}
    dets = []
    for i, (boxes, scores, labels, gt_boxes, gt_labels) in enumerate(images):
        gt["images"].append({"id": i})
        for b, c in zip(gt_boxes, gt_labels):
            w, h = b[2] - b[0], b[3] - b[1]
            gt["annotations"].append(
                {"id": len(gt["annotations"]) + 1, "image_id": i, "category_id": int(c),
                 "bbox": [b[0], b[1], w, h], "area": w * h,
                 "iscrowd": int(crowd_below is not None and w * h < crowd_below)}
            )  # fmt: skip
        for b, s, c in zip(boxes, scores, labels):
            dets.append({"image_id": i, "category_id": int(c), "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                         "score": float(s)})  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dets), "bbox")
        if area_ranges is not None:
            ev.params.areaRng = area_ranges
            ev.params.areaRngLbl = [f"r{i}" for i in range(len(area_ranges))]
            ev.evaluate()
            ev.accumulate()
            prec = ev.eval["precision"]  # [T, R, K, A, M]
            out = []
            for a in range(len(area_ranges)):
                p = prec[:, :, :, a, -1]
                p50 = prec[0, :, :, a, -1]
                out.append((p[p > -1].mean(), p50[p50 > -1].mean()))
            return out
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0], ev.stats[1], ev.stats[2]


@pytest.mark.parametrize(("seed", "num_images"), [(0, 6), (1, 6), (2, 6), (3, 6), (4, 40)])
def test_map_matches_pycocotools(seed, num_images):
    images = _random_images(seed, num_images)
    metric = DetectionMAP(min_area=0, max_occlusion=1)  # every object counts, as in plain COCO
    for image in images:
        metric.update(*image)
    out = metric.compute()
    ref_map, ref_50, ref_75 = _pycocotools_map(images, num_classes=3)
    assert out["map"] == pytest.approx(ref_map, abs=1e-4)
    assert out["map_50"] == pytest.approx(ref_50, abs=1e-4)
    assert out["map_75"] == pytest.approx(ref_75, abs=1e-4)
    assert 0.0 < out["map"] < out["map_50"] <= 1.0


def test_perfect_detections_give_map_one_and_misses_give_zero():
    gt = np.array([[0, 0, 10, 10], [20, 20, 40, 30]], np.float32)
    labels = np.array([13, 11])
    perfect = DetectionMAP()
    perfect.update(gt, np.array([0.9, 0.8]), labels, gt, labels)
    assert perfect.compute()["map"] == 1.0
    assert perfect.compute()["ap_per_class"] == {11: 1.0, 13: 1.0}
    missed = DetectionMAP()
    missed.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0), gt, labels)
    assert missed.compute()["map"] == 0.0


def test_half_iou_box_counts_at_050_only():
    gt = np.array([[0, 0, 10, 10]], np.float32)
    det = np.array([[0, 0, 10, 5]], np.float32)  # IoU exactly 0.5
    m = DetectionMAP()
    m.update(det, np.array([1.0]), np.array([13]), gt, np.array([13]))
    out = m.compute()
    assert out["map_50"] == 1.0 and out["map_75"] == 0.0 and out["map"] == pytest.approx(0.1)


def test_no_ground_truth_gives_nan_and_mismatched_lengths_fail():
    m = DetectionMAP()
    m.update(np.array([[0, 0, 5, 5]]), np.array([0.5]), np.array([13]), np.zeros((0, 4)), np.zeros(0))
    assert math.isnan(m.compute()["map"])
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        m.update(np.zeros((2, 4)), np.zeros(1), np.zeros(2), np.zeros((0, 4)), np.zeros(0))


def test_box_iou_values():
    a = np.array([[0, 0, 2, 2]])
    b = np.array([[1, 1, 3, 3], [2, 2, 4, 4], [0, 0, 2, 2]])
    np.testing.assert_allclose(box_iou(a, b), [[1 / 7, 0.0, 1.0]])


@pytest.mark.parametrize("seed", [0, 1, 2, 5])
def test_ignore_regions_and_size_buckets_match_pycocotools_crowd_and_area_ranges(seed):
    # Objects under 100 px become crowd regions; buckets [100, 1024) and [1024, inf).
    images = _random_images(seed, num_images=12, size=200.0)  # boxes of 16-3600 px
    metric = DetectionMAP(min_area=100, max_occlusion=1, small_area=1024)
    for image in images:
        metric.update(*image)
    out = metric.compute()
    ref = _pycocotools_map(images, 3, crowd_below=100, area_ranges=[[0, 1e10], [100, 1024], [1024, 1e10]])
    assert out["map"] == pytest.approx(ref[0][0], abs=1e-4)
    assert out["map_50"] == pytest.approx(ref[0][1], abs=1e-4)
    assert out["map_small"] == pytest.approx(ref[1][0], abs=1e-4)
    assert out["map_50_small"] == pytest.approx(ref[1][1], abs=1e-4)
    assert out["map_large"] == pytest.approx(ref[2][0], abs=1e-4)
    assert out["map_50_large"] == pytest.approx(ref[2][1], abs=1e-4)


def test_detection_on_an_ignore_region_is_neither_tp_nor_fp():
    gt = np.array([[0, 0, 20, 20], [50, 50, 55, 55]], np.float32)  # a valid car and a 25 px fragment
    labels = np.array([13, 13])
    det = np.array([[0, 0, 20, 20], [50, 50, 55, 55]], np.float32)
    m = DetectionMAP()
    m.update(det, np.array([0.5, 0.9]), labels, gt, labels)  # the fragment's box scores higher
    out = m.compute()
    assert out["map_50"] == 1.0 and out["num_gt"] == 1
    assert out["fp_per_frame"] == 0.0 and out["recall_50"] == 1.0
    assert out["boxes_per_frame"] == 2.0 and out["valid_gt_per_frame"] == 1.0


def test_occluded_objects_follow_the_rule_and_counts_are_per_frame():
    gt = np.array([[0, 0, 20, 20], [30, 0, 50, 20]], np.float32)
    labels = np.array([11, 11])
    occ = np.array([0.2, 0.95])  # the second is a sliver of a hidden person: ignored
    m = DetectionMAP()
    m.update(np.array([[100, 0, 120, 20]]), np.array([0.9]), np.array([11]), gt, labels, gt_occlusion=occ)
    m.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0), gt[:1], labels[:1])
    out = m.compute()
    assert out["num_gt"] == 2  # one valid object per frame
    assert out["recall_50"] == 0.0 and out["fp_per_frame"] == 0.5 and out["boxes_to_gt"] == 0.5
