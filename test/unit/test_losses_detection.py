"""L_det: valid-object targets, ATSS and max-IoU assignment, focal/DIoU/GIoU/L1 terms on hand-built cases."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import distance_box_iou_loss, generalized_box_iou_loss, sigmoid_focal_loss

from damcseg_core.data.classes import DETECTION_TRAIN_IDS
from damcseg_core.losses.detection import (
    DetectionLossConfig,
    assign_atss,
    build_targets,
    detection_loss,
    match_anchors,
)
from damcseg_core.models.detection_head import anchor_level_index, make_anchors

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
PERSON = 11
# The RetinaNet rules with GIoU only: the behaviour these hand-built cases were written for.
LEGACY = DetectionLossConfig(assigner="max_iou", box_loss="giou", l1_weight=0.0)


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
    out = detection_loss(logits, deltas, ANCHORS, [GT], [torch.tensor([CAR])], LEGACY)
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
    out = detection_loss(logits, deltas, ANCHORS, [GT], [torch.tensor([CAR])], LEGACY)
    assert out["det_cls"].item() < 1e-6
    assert out["det_box"].item() < 1e-5


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_worse_boxes_cost_more(scale):
    good = BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(GT.expand(6, 4), ANCHORS)[None]
    bad = good.clone()
    bad[..., 2:] += math.log(scale)  # every box scaled by `scale`
    logits, _ = _inputs()
    lo = detection_loss(logits, good, ANCHORS, [GT], [torch.tensor([CAR])], LEGACY)["det_box"]
    hi = detection_loss(logits, bad, ANCHORS, [GT], [torch.tensor([CAR])], LEGACY)["det_box"]
    assert hi.item() > lo.item() + 0.1


def test_ignored_anchor_does_not_change_loss():
    logits, deltas = _inputs()
    a = detection_loss(logits, deltas, ANCHORS, [GT], [torch.tensor([CAR])], LEGACY)
    logits2 = logits.clone()
    logits2[0, 4] = 100.0  # anchor 4 is ignored (0.4 <= IoU < 0.5)
    b = detection_loss(logits2, deltas, ANCHORS, [GT], [torch.tensor([CAR])], LEGACY)
    assert b["det"].item() == pytest.approx(a["det"].item(), rel=1e-7)


def test_non_detection_train_ids_are_dropped():
    logits, deltas = _inputs()
    road = torch.tensor([0])  # road is not a detection class
    out = detection_loss(logits, deltas, ANCHORS, [GT], [road], LEGACY)
    empty = detection_loss(
        logits, deltas, ANCHORS, [torch.zeros(0, 4)], [torch.zeros(0, dtype=torch.int64)], LEGACY
    )
    assert out["det_cls"].item() == pytest.approx(empty["det_cls"].item())
    assert out["det_box"].item() == 0.0


def test_gradient_flows_to_logits_and_deltas():
    logits, deltas = _inputs()
    logits.requires_grad_(True)
    deltas.requires_grad_(True)
    detection_loss(logits, deltas, ANCHORS, [GT], [torch.tensor([CAR])], LEGACY)["det"].backward()
    assert logits.grad.abs().sum() > 0
    assert deltas.grad[0, [0, 1, 3]].abs().sum() > 0
    assert deltas.grad[0, [2, 4, 5]].abs().sum() == 0  # only positives regress


def test_bad_thresholds_rejected():
    with pytest.raises(ValueError, match=r"negative_iou <= positive_iou"):
        DetectionLossConfig(positive_iou=0.3, negative_iou=0.4)


# ---------------------------------------------------------------- ATSS and the valid-object rule
SIZES = [(16, 32), (8, 16), (4, 8), (2, 4)]  # P3-P6 of a 128x256 image
LEVELS = [3, 4, 5, 6]
PYR_ANCHORS = make_anchors(SIZES, LEVELS, 4.0, 1, (1.0,))
PYR_LEVELS = anchor_level_index(SIZES, 1)


def _positives(matches: torch.Tensor, n: int) -> list[int]:
    return [int((matches == i).sum()) for i in range(n)]


def test_atss_gives_several_gts_sharing_anchors_a_positive_each():
    # Five small objects side by side: every one overlaps the same few P3 anchors.
    gt = torch.tensor([[40.0 + 4 * i, 40.0, 52.0 + 4 * i, 60.0] for i in range(5)])
    matches = assign_atss(gt, PYR_ANCHORS, PYR_LEVELS)
    assert min(_positives(matches, 5)) >= 1


def test_atss_gt_smaller_than_every_anchor_still_gets_a_positive():
    gt = torch.tensor([[100.0, 50.0, 110.0, 61.0]])  # 10x11 px; the smallest anchor is 32x32
    matches = assign_atss(gt, PYR_ANCHORS, PYR_LEVELS)
    pos = torch.nonzero(matches == 0).flatten()
    assert len(pos) >= 1
    # ... and its positives sit on the finest level, centred inside the box.
    assert set(PYR_LEVELS[pos].tolist()) == {0}
    c = (PYR_ANCHORS[pos, :2] + PYR_ANCHORS[pos, 2:]) / 2
    assert ((c[:, 0] > 100) & (c[:, 0] < 110) & (c[:, 1] > 50) & (c[:, 1] < 61)).all()


def test_atss_large_gt_takes_only_good_anchors():
    gt = torch.tensor([[64.0, 32.0, 192.0, 96.0]])  # 128x64 car
    matches = assign_atss(gt, PYR_ANCHORS, PYR_LEVELS)
    pos = matches == 0
    from torchvision.ops import box_iou

    iou = box_iou(gt, PYR_ANCHORS)[0]
    assert pos.sum() >= 1
    assert iou[pos].min() > iou[~pos & (PYR_LEVELS == 0)].max()  # no poor P3 anchor is positive


def test_two_classes_on_one_object_each_get_a_positive():
    box = [60.0, 40.0, 80.0, 80.0]
    boxes, labels = torch.tensor([box, box]), torch.tensor([PERSON, 12])  # person and rider
    (t,) = build_targets(PYR_ANCHORS, [boxes], [labels], DetectionLossConfig(), PYR_LEVELS)
    assert min(_positives(t.matches, 2)) >= 1


@pytest.mark.parametrize("assigner", ["atss", "max_iou"])
def test_ignore_region_is_never_positive_and_adds_no_loss(assigner):
    cfg = DetectionLossConfig(assigner=assigner)
    valid = [20.0, 20.0, 60.0, 100.0]  # 40x80 person
    tiny = [150.0, 60.0, 158.0, 70.0]  # 8x10 = 80 px < 100 px: an ignore region
    boxes, labels = torch.tensor([valid, tiny]), torch.tensor([PERSON, PERSON])
    (t,) = build_targets(PYR_ANCHORS, [boxes], [labels], cfg, PYR_LEVELS)
    assert t.boxes.tolist() == [valid]  # only the valid object is a target
    c = (PYR_ANCHORS[:, :2] + PYR_ANCHORS[:, 2:]) / 2
    in_tiny = (c[:, 0] >= 150) & (c[:, 0] <= 158) & (c[:, 1] >= 60) & (c[:, 1] <= 70)
    assert in_tiny.any() and (t.matches[in_tiny] == -2).all()
    # Any logit on the ignored anchors leaves the loss unchanged.
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, len(PYR_ANCHORS), len(DETECTION_TRAIN_IDS), generator=g)
    deltas = 0.1 * torch.randn(1, len(PYR_ANCHORS), 4, generator=g)
    a = detection_loss(logits, deltas, PYR_ANCHORS, None, None, cfg, targets=[t])["det"]
    logits[0, in_tiny] = 50.0
    b = detection_loss(logits, deltas, PYR_ANCHORS, None, None, cfg, targets=[t])["det"]
    assert b.item() == pytest.approx(a.item(), rel=1e-7)


def test_valid_gt_inside_an_ignore_region_keeps_its_positives():
    big_ignored = [0.0, 0.0, 256.0, 128.0]  # e.g. a 95%-occluded bus spanning the crop
    person = [100.0, 30.0, 120.0, 70.0]
    boxes, labels = torch.tensor([big_ignored, person]), torch.tensor([15, PERSON])
    occ = torch.tensor([0.95, 0.0])
    (t,) = build_targets(
        PYR_ANCHORS, [boxes], [labels], DetectionLossConfig(), PYR_LEVELS, gt_occlusion=[occ]
    )
    assert t.boxes.tolist() == [person]
    assert (t.matches == 0).sum() >= 1
    assert set(t.matches.unique().tolist()) == {0, -2}  # no negatives inside the ignore region


def test_min_area_rule_is_configurable():
    box = torch.tensor([[10.0, 10.0, 18.0, 20.0]])  # 80 px
    for min_area, n in ((100.0, 0), (50.0, 1)):
        (t,) = build_targets(
            PYR_ANCHORS, [box], [torch.tensor([PERSON])], DetectionLossConfig(min_area=min_area)
        )
        assert len(t.boxes) == n


@pytest.mark.parametrize("loss", ["diou", "giou"])
def test_box_loss_pulls_a_tiny_box_centre_inside_a_big_prediction(loss):
    # A 4x4 GT inside a 40x40 prediction, off centre: the loss must move the prediction's centre
    # towards the GT and shrink it; GIoU alone has no centring gradient here, DIoU and L1 do.
    anchors = torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    gt = torch.tensor([[26.0, 18.0, 30.0, 22.0]])  # centre (28, 20), prediction centre (20, 20)
    cfg = DetectionLossConfig(box_loss=loss, min_area=0.0)
    deltas = torch.zeros(1, 1, 4, requires_grad=True)
    logits = torch.zeros(1, 1, len(DETECTION_TRAIN_IDS))
    out = detection_loss(logits, deltas, anchors, [gt], [torch.tensor([PERSON])], cfg)
    out["det_box"].backward()
    g = deltas.grad[0, 0]
    assert torch.isfinite(g).all()
    assert g[0] < 0  # descending moves dx > 0: the centre goes right, towards the GT
    assert g[2] > 0 and g[3] > 0  # descending shrinks width and height
    if loss == "diou":
        decoded = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(deltas.detach()[0], anchors)
        expected = distance_box_iou_loss(decoded, gt, reduction="sum")
        l1 = torch.nn.functional.smooth_l1_loss(
            torch.zeros(4),
            BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(gt, anchors)[0],
            beta=1 / 9,
            reduction="sum",
        )
        assert out["det_box"].item() == pytest.approx((expected + l1).item(), rel=1e-5)


def test_bad_assigner_and_box_loss_rejected():
    with pytest.raises(ValueError, match=r"assigner must be 'atss' or 'max_iou'"):
        DetectionLossConfig(assigner="fcos")
    with pytest.raises(ValueError, match=r"box_loss must be one of"):
        DetectionLossConfig(box_loss="l2")
