"""DSJLoss: eq. 4 weighting, the named losses it returns, and the warm-up switch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from damcseg_core.data.classes import DETECTION_TRAIN_IDS
from damcseg_core.losses import DSJLoss, LossConfig

C, K, H, W = 19, len(DETECTION_TRAIN_IDS), 16, 16
ANCHORS = torch.tensor([[0.0, 0.0, 8.0, 8.0], [8.0, 8.0, 16.0, 16.0], [4.0, 4.0, 12.0, 12.0]])


def _case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    semantic = torch.zeros(1, H, W, dtype=torch.int64)
    semantic[:, 2:14, 2:14] = 13  # 144 px: a valid detection target
    instance = torch.zeros(1, H, W, dtype=torch.int32)
    instance[:, 2:14, 2:14] = 1
    batch = {
        "semantic": semantic,
        "instance": instance,
        "boxes": [torch.tensor([[2.0, 2.0, 14.0, 14.0]])],
        "labels": [torch.tensor([13])],
        "occlusion": [torch.tensor([0.0])],
    }
    seg = torch.randn(1, C, H, W, generator=g, requires_grad=True)
    out = SimpleNamespace(
        seg_logits=seg,
        branch_logits={"global": seg * 0.5},
        cls_logits=torch.randn(1, 3, K, generator=g),
        box_deltas=0.1 * torch.randn(1, 3, 4, generator=g),
        anchors=ANCHORS,
        completion={"depth": (torch.randn(1, 4, 2, 2, generator=g), torch.randn(1, 4, 2, 2, generator=g))},
        boxes=[torch.zeros(0, 4)],
        labels=[torch.zeros(0, dtype=torch.int64)],
        gate_cost=torch.tensor(0.25),
    )
    return out, batch


NAMES = {
    "det_cls", "det_box", "det", "det_num_pos", "seg_ce", "seg_boundary", "seg_dice", "seg_tiny", "seg_occlusion",
    "seg", "align", "align_iou", "completion", "aux", "gate_cost", "total",
}  # fmt: skip


def test_returns_every_named_finite_loss():
    losses = DSJLoss()(*_case())
    assert set(losses) == NAMES
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())


@pytest.mark.parametrize(
    ("lambda1", "lambda2", "cw", "aux", "gate"),
    [(1.0, 0.5, 1.0, 0.4, 0.0), (2.0, 0.0, 0.0, 0.0, 1.0), (0.0, 3.0, 0.5, 1.0, 0.0)],
)
def test_total_is_the_weighted_sum(lambda1, lambda2, cw, aux, gate):
    cfg = LossConfig(
        lambda1=lambda1, lambda2=lambda2, completion_weight=cw, aux_weight=aux, gate_cost_weight=gate
    )
    lo = DSJLoss(cfg)(*_case())
    expected = (
        lo["det"] + lambda1 * lo["seg"] + lambda2 * lo["align"] + cw * lo["completion"] + aux * lo["aux"]
        + gate * lo["gate_cost"]
    )  # fmt: skip
    assert lo["total"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_alignment_off_in_warmup_zeroes_the_term_only():
    loss = DSJLoss()
    on = loss(*_case())
    loss.align_enabled = False
    off = loss(*_case())
    assert on["align"].item() > 0.0
    assert off["align"].item() == 0.0
    assert off["total"].item() == pytest.approx(on["total"].item() - 0.5 * on["align"].item(), rel=1e-6)


def test_total_backpropagates_to_segmentation():
    out, batch = _case()
    DSJLoss()(out, batch)["total"].backward()
    assert out.seg_logits.grad.abs().sum() > 0


def test_missing_batch_key_message():
    out, batch = _case()
    del batch["semantic"]
    with pytest.raises(KeyError, match=r"batch has no 'semantic'"):
        DSJLoss()(out, batch)


def test_matched_alignment_reaches_the_detector_box_regression():
    out, batch = _case()
    out.box_deltas.requires_grad_(True)
    losses = DSJLoss()(out, batch)
    assert losses["det_num_pos"].item() >= 1
    losses["align"].backward()
    assert out.box_deltas.grad.abs().sum() > 0  # the box and the mask constrain each other
    assert out.seg_logits.grad.abs().sum() > 0


def test_gt_alignment_gives_the_detector_no_gradient():
    from damcseg_core.losses.alignment import AlignmentLossConfig

    out, batch = _case()
    out.box_deltas.requires_grad_(True)
    losses = DSJLoss(LossConfig(alignment=AlignmentLossConfig(boxes="gt")))(out, batch)
    assert (
        not losses["align"].requires_grad
        or torch.autograd.grad(losses["align"], out.box_deltas, allow_unused=True)[0] is None
    )
