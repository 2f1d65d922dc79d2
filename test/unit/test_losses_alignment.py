"""L_align and the completion loss: minima, the 0.7 penalty knee, gradients."""

from __future__ import annotations

import pytest
import torch

from damcseg_core.losses.alignment import AlignmentLossConfig, alignment_loss, alignment_penalty
from damcseg_core.losses.completion import completion_loss

C = 19
CAR = 13


def _logits_with_car(x1: int, y1: int, x2: int, y2: int, margin: float = 30.0) -> torch.Tensor:
    logits = torch.zeros(1, C, 32, 32)
    logits[:, 0] = margin  # road everywhere
    logits[:, CAR, y1:y2, x1:x2] = 2 * margin
    return logits


@pytest.mark.parametrize(
    ("iou", "expected"),
    [(1.0, 0.0), (0.8, 0.2), (0.7, 0.3), (0.69, 0.31 + 0.01), (0.5, 0.5 + 0.2), (0.0, 1.0 + 0.7)],
)
def test_penalty_values(iou, expected):
    assert alignment_penalty(torch.tensor(iou)).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("iou", "slope"), [(0.71, -1.0), (0.69, -2.0)])
def test_penalty_slope_changes_exactly_at_threshold(iou, slope):
    x = torch.tensor(iou, requires_grad=True)
    alignment_penalty(x, threshold=0.7, penalty=1.0).backward()
    assert x.grad.item() == pytest.approx(slope)


def test_mask_matching_box_gives_zero_loss():
    out = alignment_loss(
        _logits_with_car(8, 8, 20, 16), [torch.tensor([[8.0, 8.0, 20.0, 16.0]])], [torch.tensor([CAR])]
    )
    assert out["align"].item() == pytest.approx(0.0, abs=1e-5)
    assert out["align_iou"].item() == pytest.approx(1.0, abs=1e-5)


def test_half_width_mask_gives_iou_half_and_penalty():
    box = torch.tensor([[8.0, 8.0, 24.0, 16.0]])  # 16 x 8
    out = alignment_loss(_logits_with_car(8, 8, 16, 16), [box], [torch.tensor([CAR])])
    assert out["align_iou"].item() == pytest.approx(0.5, abs=1e-4)
    assert out["align"].item() == pytest.approx(0.5 + 0.2, abs=1e-4)


def test_mask_outside_the_margin_region_is_ignored():
    logits = _logits_with_car(8, 8, 16, 16)
    logits[:, CAR, 28:32, 28:32] = 60.0  # another car, far from the box
    out = alignment_loss(logits, [torch.tensor([[8.0, 8.0, 16.0, 16.0]])], [torch.tensor([CAR])])
    assert out["align"].item() == pytest.approx(0.0, abs=1e-5)


def test_gradient_reaches_segmentation_logits():
    logits = _logits_with_car(8, 8, 16, 16, margin=1.0).requires_grad_(True)
    alignment_loss(logits, [torch.tensor([[8.0, 8.0, 24.0, 16.0]])], [torch.tensor([CAR])])[
        "align"
    ].backward()
    assert logits.grad[0, CAR, 8:16, 16:24].sum() < 0  # raising car logits there lowers the loss


def test_no_boxes_is_zero():
    out = alignment_loss(
        torch.randn(2, C, 8, 8), [torch.zeros(0, 4)] * 2, [torch.zeros(0, dtype=torch.int64)] * 2
    )
    assert out["align"].item() == 0.0


def test_threshold_is_configurable():
    cfg = AlignmentLossConfig(threshold=0.9, penalty=2.0)
    box = torch.tensor([[8.0, 8.0, 24.0, 16.0]])
    out = alignment_loss(_logits_with_car(8, 8, 16, 16), [box], [torch.tensor([CAR])], cfg)
    assert out["align"].item() == pytest.approx(0.5 + 2.0 * 0.4, abs=1e-4)


def test_completion_zero_for_perfect_prediction_and_positive_otherwise():
    real = torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(0))
    assert completion_loss({"depth": (real.clone(), real)})["completion"].item() == pytest.approx(
        0.0, abs=1e-5
    )
    # Predicting the negation: nmse = 4 * E[x^2] / var ~ 4, cos term = 2.
    worse = completion_loss({"depth": (-real, real)})["completion"].item()
    assert worse == pytest.approx(
        4 * real.pow(2).mean().item() / real.var(unbiased=False).item() + 2.0, rel=1e-4
    )


def test_completion_only_trains_the_prediction():
    real = torch.randn(1, 4, 2, 2, requires_grad=True)
    pred = torch.zeros(1, 4, 2, 2, requires_grad=True)
    completion_loss({"thermal": (pred, real)})["completion"].backward()
    assert real.grad is None
    assert pred.grad.abs().sum() > 0


def test_completion_empty_is_zero():
    assert completion_loss({}, reference=torch.ones(3))["completion"].item() == 0.0


@pytest.mark.parametrize(("x2", "sign"), [(14.0, -1.0), (26.0, 1.0)])
def test_matched_box_is_pulled_to_the_mask_extent(x2, sign):
    # The car mask spans x 8..20; a predicted box ending at 14 must grow (dL/dx2 < 0), one
    # ending at 26 must shrink (dL/dx2 > 0).
    from damcseg_core.losses.alignment import matched_alignment_loss

    box = torch.tensor([[8.0, 8.0, x2, 16.0]], requires_grad=True)
    out = matched_alignment_loss(_logits_with_car(8, 8, 20, 16), [(box, box.detach(), torch.tensor([CAR]))])
    out["align"].backward()
    assert torch.isfinite(box.grad).all()
    assert box.grad[0, 2].item() * sign > 0


def test_matched_degenerate_box_is_finite_zero():
    from damcseg_core.losses.alignment import matched_alignment_loss

    box = torch.tensor([[40.0, 40.0, 40.0, 40.0]], requires_grad=True)  # outside the 32x32 image
    out = matched_alignment_loss(_logits_with_car(8, 8, 20, 16), [(box, box.detach(), torch.tensor([CAR]))])
    out["align"].backward()
    assert torch.isfinite(out["align"]) and torch.isfinite(box.grad).all()


# ---------------------------------------------------------------- batched == per-box reference
def _reference_alignment(seg_logits, boxes, labels, cfg):
    """The per-box loop L_align was before it was batched (same per-box function)."""
    from damcseg_core.losses.alignment import soft_box_mask_iou

    probs = torch.softmax(seg_logits, dim=1)
    ious = [
        soft_box_mask_iou(probs[i, int(lab)], box, cfg.margin)
        for i in range(seg_logits.shape[0])
        for box, lab in zip(boxes[i].reshape(-1, 4), labels[i].reshape(-1))
        if 0 <= int(lab) < probs.shape[1] and box[2] > box[0] and box[3] > box[1]
    ]
    iou = torch.stack(ious)
    return alignment_penalty(iou, cfg.threshold, cfg.penalty).mean(), iou.mean()


def _reference_matched(seg_logits, matched, cfg):
    from damcseg_core.losses.alignment import soft_box_mask_iou_differentiable

    probs = torch.softmax(seg_logits, dim=1)
    ious = []
    for i, (pred, _gt, labs) in enumerate(matched):
        for box, lab in zip(pred, labs.tolist()):
            if len(ious) >= cfg.max_boxes:
                break
            if 0 <= lab < probs.shape[1] and torch.isfinite(box).all():
                ious.append(
                    soft_box_mask_iou_differentiable(probs[i, lab], box, cfg.margin, cfg.box_temperature)
                )
    iou = torch.stack(ious)
    return alignment_penalty(iou, cfg.threshold, cfg.penalty).mean(), iou.mean()


def _random_boxes(g, n, h, w):
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 1.2, h * 1.2]) - torch.tensor([w * 0.1, h * 0.1])
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
    return torch.cat([xy, xy + wh], dim=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_gt_alignment_equals_per_box_loop(seed):
    g = torch.Generator().manual_seed(seed)
    b, h, w = 3, 24, 40
    logits = (3 * torch.randn(b, C, h, w, generator=g)).requires_grad_(True)
    boxes = [_random_boxes(g, n, h, w) for n in (5, 0, 7)]
    boxes[2][0] = torch.tensor([10.0, 5.0, 10.0, 9.0])  # degenerate: skipped
    labels = [torch.randint(0, C + 2, (len(bx),), generator=g) for bx in boxes]  # some out of range
    cfg = AlignmentLossConfig(boxes="gt")
    got = alignment_loss(logits, boxes, labels, cfg)
    (grad,) = torch.autograd.grad(got["align"], logits)
    ref, ref_iou = _reference_alignment(logits, boxes, labels, cfg)
    (ref_grad,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(got["align"], ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["align_iou"], ref_iou.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(("seed", "max_boxes"), [(0, 64), (1, 5), (2, 64)])
def test_batched_matched_alignment_equals_per_box_loop(seed, max_boxes):
    from damcseg_core.losses.alignment import matched_alignment_loss

    g = torch.Generator().manual_seed(seed)
    b, h, w = 3, 24, 40
    logits = (3 * torch.randn(b, C, h, w, generator=g)).requires_grad_(True)
    preds = [_random_boxes(g, n, h, w).requires_grad_(True) for n in (4, 6, 3)]
    with torch.no_grad():
        preds[1][2, 0] = float("nan")  # non-finite prediction: skipped
        preds[2][0] = torch.tensor([50.0, 30.0, 50.0, 30.0])  # outside the image: clipped to the corner
    labels = [torch.randint(0, C + 2, (len(p),), generator=g) for p in preds]
    matched = [(p, p.detach(), lab) for p, lab in zip(preds, labels)]
    cfg = AlignmentLossConfig(max_boxes=max_boxes, box_temperature=0.7)
    got = matched_alignment_loss(logits, matched, cfg)
    grads = torch.autograd.grad(got["align"], [logits, *preds])
    ref, ref_iou = _reference_matched(logits, matched, cfg)
    ref_grads = torch.autograd.grad(ref, [logits, *preds], allow_unused=True)
    torch.testing.assert_close(got["align"], ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got["align_iou"], ref_iou.detach(), rtol=1e-5, atol=1e-6)
    for a, r in zip(grads, ref_grads):
        r = torch.zeros_like(a) if r is None else r
        torch.testing.assert_close(torch.nan_to_num(a), torch.nan_to_num(r), rtol=1e-4, atol=1e-7)
