"""L_det: anchor matching, focal and GIoU terms against torchvision on hand-built cases."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from damcseg_core.data.classes import DETECTION_TRAIN_IDS
from damcseg_core.losses.detection import DetectionLossConfig, detection_loss, match_anchors

ANCHORS = torch.tensor(
    [
        [0.0, 0.0, 10.0, 10.0],  # identical to the GT: IoU 1 -> positive
        [1.0, 0.0, 11.0, 10.0],  # IoU 90/110 = 0.818 -> positive
        [5.0, 0.0, 15.0, 10.0],  # IoU 50/150 = 0.333 -> negative
        [3.0, 0.0, 13.0, 10.0],  # IoU 70/130 = 0.538 -> positive
        [4.0, 0.0, 14.0, 10.0],  # IoU 60/140 = 0.4286 -> ignored
        [50.0, 50.0, 60.0, 60.0],  # IoU 0 -> negative
    ]
)
GT = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
CAR = 13  # train id of "car"
CAR_K = DETECTION_TRAIN_IDS.index(CAR)


def test_match_anchors_thresholds():
    assert match_anchors(GT, ANCHORS).tolist() == [0, 0, -1, 0, -2, -1]


def test_best_anchor_is_forced_positive_even_below_threshold():
    gt = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # its best anchor has IoU 0.4 (ignore zone)
    anchors = torch.tensor([[0.0, 0.0, 10.0, 8.0], [30.0, 30.0, 40.0, 40.0]])  # IoU 0.4, 0
    assert match_anchors(gt, anchors).tolist() == [0, -1]


def test_no_gt_makes_every_anchor_negative():
    assert match_anchors(torch.zeros(0, 4), ANCHORS).tolist() == [-1] * 6


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, len(ANCHORS), len(DETECTION_TRAIN_IDS), generator=g)
    deltas = 0.1 * torch.randn(1, len(ANCHORS), 4, generator=g)
    return logits, deltas


def test_focal_and_giou_match_torchvision_by_hand():
    logits, deltas = _inputs()
    out = detection_loss(logits, deltas, ANCHORS, [GT], [torch.tensor([CAR])])
    pos = torch.tensor([0, 1, 3])
    valid = torch.tensor([0, 1, 2, 3, 5])
    target = torch.zeros(6, len(DETECTION_TRAIN_IDS))
    target[pos, CAR_K] = 1.0
    focal = sigmoid_focal_loss(logits[0][valid], target[valid], 0.25, 2.0, reduction="sum") / 3
    decoded = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(deltas[0][pos], ANCHORS[pos])
    giou = generalized_box_iou_loss(decoded, GT.expand(3, 4), reduction="sum") / 3
    assert out["det_cls"].item() == pytest.approx(focal.item(), rel=1e-6)
    assert out["det_box"].item() == pytest.approx(giou.item(), rel=1e-6)
    assert out["det"].item() == pytest.approx(focal.item() + giou.item(), rel=1e-6)


def test_perfect_prediction_is_near_zero():
    logits = torch.full((1, 6, len(DETECTION_TRAIN_IDS)), -12.0)
    logits[0, [0, 1, 3], CAR_K] = 12.0
    # Exact deltas for every anchor (BoxCoder encoding of the GT against the anchor).
    deltas = BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(GT.expand(6, 4), ANCHORS)[None]
    out = detection_loss(logits, deltas, ANCHORS, [GT], [torch.tensor([CAR])])
    assert out["det_cls"].item() < 1e-6
    assert out["det_box"].item() < 1e-5


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_worse_boxes_cost_more(scale):
    good = BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(GT.expand(6, 4), ANCHORS)[None]
    bad = good.clone()
    bad[..., 2:] += math.log(scale)  # every box scaled by `scale`
    logits, _ = _inputs()
    lo = detection_loss(logits, good, ANCHORS, [GT], [torch.tensor([CAR])])["det_box"]
    hi = detection_loss(logits, bad, ANCHORS, [GT], [torch.tensor([CAR])])["det_box"]
    assert hi.item() > lo.item() + 0.1


def test_ignored_anchor_does_not_change_loss():
    logits, deltas = _inputs()
    a = detection_loss(logits, deltas, ANCHORS, [GT], [torch.tensor([CAR])])
    logits2 = logits.clone()
    logits2[0, 4] = 100.0  # anchor 4 is ignored (0.4 <= IoU < 0.5)
    b = detection_loss(logits2, deltas, ANCHORS, [GT], [torch.tensor([CAR])])
    assert b["det"].item() == pytest.approx(a["det"].item(), rel=1e-7)


def test_non_detection_train_ids_are_dropped():
    logits, deltas = _inputs()
    road = torch.tensor([0])  # road is not a detection class
    out = detection_loss(logits, deltas, ANCHORS, [GT], [road])
    empty = detection_loss(logits, deltas, ANCHORS, [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.int64)])
    assert out["det_cls"].item() == pytest.approx(empty["det_cls"].item())
    assert out["det_box"].item() == 0.0


def test_gradient_flows_to_logits_and_deltas():
    logits, deltas = _inputs()
    logits.requires_grad_(True)
    deltas.requires_grad_(True)
    detection_loss(logits, deltas, ANCHORS, [GT], [torch.tensor([CAR])])["det"].backward()
    assert logits.grad.abs().sum() > 0
    assert deltas.grad[0, [0, 1, 3]].abs().sum() > 0
    assert deltas.grad[0, [2, 4, 5]].abs().sum() == 0  # only positives regress


def test_bad_thresholds_rejected():
    with pytest.raises(ValueError, match=r"negative_iou <= positive_iou"):
        DetectionLossConfig(positive_iou=0.3, negative_iou=0.4)
