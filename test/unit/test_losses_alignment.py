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
