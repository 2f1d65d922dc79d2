"""DSJLoss: eq. 4 weighting, the named losses it returns, and the warm-up switch."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from damcseg_core.data.classes import DETECTION_TRAIN_IDS
from damcseg_core.losses import DSJLoss, LossConfig
from damcseg_core.losses.completion import completion_loss, distillation_loss, logit_distillation_loss

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
        omega=torch.tensor([[0.9, 0.5, 0.1]], requires_grad=True),
        lmmf=SimpleNamespace(
            fused=torch.randn(1, 4, 2, 2, generator=g, requires_grad=True),
            teacher_fused=torch.randn(1, 4, 2, 2, generator=g),
            distill_mask=torch.tensor([True]),
            completed_mask=torch.tensor([[False, True, False]]),
        ),
    )
    return out, batch


NAMES = {
    "det_cls", "det_box", "det", "det_num_pos", "seg_ce", "seg_boundary", "seg_dice", "seg_tiny", "seg_occlusion",
    "seg", "align", "align_iou", "completion", "distill", "logit_distill", "aux", "gate_cost", "omega_cost", "depth_image",
    "total",
}  # fmt: skip


def test_returns_every_named_finite_loss():
    losses = DSJLoss()(*_case())
    assert set(losses) == NAMES
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())


@pytest.mark.parametrize(
    ("lambda1", "lambda2", "cw", "aux", "gate", "dw", "om"),
    [
        (1.0, 0.5, 1.0, 0.4, 0.0, 0.5, 0.0),
        (2.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0),
        (0.0, 3.0, 0.5, 1.0, 0.0, 2.0, 0.3),
    ],
)
def test_total_is_the_weighted_sum(lambda1, lambda2, cw, aux, gate, dw, om):
    cfg = LossConfig(
        lambda1=lambda1, lambda2=lambda2, completion_weight=cw, aux_weight=aux, gate_cost_weight=gate,
        distill_weight=dw, omega_cost_weight=om,
    )  # fmt: skip
    lo = DSJLoss(cfg)(*_case())
    assert lo["distill"].item() > 0.1 if dw > 0 else lo["distill"].item() == 0.0
    expected = (
        lo["det"] + lambda1 * lo["seg"] + lambda2 * lo["align"] + cw * lo["completion"] + aux * lo["aux"]
        + gate * lo["gate_cost"] + dw * lo["distill"] + om * lo["omega_cost"]
    )  # fmt: skip
    assert lo["total"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_omega_cost_is_the_mean_weight_and_pushes_every_weight_down():
    out, batch = _case()
    lo = DSJLoss(LossConfig(omega_cost_weight=0.3))(out, batch)
    assert lo["omega_cost"].item() == pytest.approx(0.5)  # mean of 0.9, 0.5, 0.1
    lo["omega_cost"].backward()
    assert torch.allclose(out.omega.grad, torch.full((1, 3), 1.0 / 3.0))


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


# ----------------------------------------------------------------------------- distillation (#16)
def _two_samples(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(2, 4, 3, 3, generator=g, requires_grad=True)
    teacher = torch.randn(2, 4, 3, 3, generator=g, requires_grad=True)  # must be cut by the loss
    return student, teacher


def test_distillation_counts_only_samples_with_a_completed_modality():
    student, teacher = _two_samples()
    both = distillation_loss(student, teacher, torch.tensor([True, False]))["distill"]
    alone = distillation_loss(student[:1], teacher[:1], torch.tensor([True]))["distill"]
    assert both.item() == pytest.approx(alone.item(), rel=1e-6)
    other = student.detach().clone()
    other[1] += 5.0  # the unmasked sample does not matter
    assert distillation_loss(other, teacher, torch.tensor([True, False]))["distill"].item() == pytest.approx(
        both.item(), rel=1e-6
    )
    both.backward()
    assert teacher.grad is None  # the teacher is a stop-gradient target
    assert student.grad[0].abs().sum() > 0 and student.grad[1].abs().sum() == 0


@pytest.mark.parametrize(("teacher", "mask"), [(None, None), ("t", torch.tensor([False, False]))])
def test_distillation_is_zero_without_a_dropped_sample(teacher, mask):
    student, t = _two_samples()
    assert distillation_loss(student, t if teacher else None, mask)["distill"].item() == 0.0


def test_completion_loss_leaves_out_samples_that_kept_the_modality():
    pred, real = _two_samples(1)
    real = real.detach()
    masked = completion_loss({"thermal": (pred, real)}, masks={"thermal": torch.tensor([False, True])})
    alone = completion_loss({"thermal": (pred[1:], real[1:])})
    assert masked["completion"].item() == pytest.approx(alone["completion"].item(), rel=1e-6)
    none = completion_loss({"thermal": (pred, real)}, masks={"thermal": torch.tensor([False, False])})
    assert none["completion"].item() == 0.0


# ----------------------------------------------------------------------------- logit distillation
def test_logit_distillation_is_the_kl_from_the_teacher_on_the_masked_samples():
    # One pixel, two classes: teacher p = (0.8, 0.2), student q = (0.5, 0.5).
    teacher = torch.log(torch.tensor([0.8, 0.2])).view(1, 2, 1, 1).repeat(2, 1, 1, 1)
    student = torch.zeros(2, 2, 1, 1, requires_grad=True)
    other = torch.tensor([[[[5.0]], [[-5.0]]]])  # sample 1 is far off but not in the mask
    student_all = torch.cat([student[:1], other]).detach().requires_grad_(True)
    kl = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    got = logit_distillation_loss(student_all, teacher, torch.tensor([True, False]))["logit_distill"]
    assert got.item() == pytest.approx(kl, rel=1e-5)
    got.backward()
    assert student_all.grad[1].abs().sum() == 0  # the unmasked sample gets no gradient
    assert student_all.grad[0, 0].item() < 0  # raising class 0's logit (the teacher's choice) lowers it


def test_logit_distillation_is_zero_at_the_teacher_and_scales_with_t_squared():
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 5, 3, 3, generator=g)
    mask = torch.tensor([True, True])
    assert logit_distillation_loss(t.clone(), t, mask)["logit_distill"].item() == pytest.approx(0.0, abs=1e-6)
    s = torch.randn(2, 5, 3, 3, generator=g)
    hot = logit_distillation_loss(s, t, mask, temperature=4.0)["logit_distill"]
    soft_s, soft_t = torch.log_softmax(s / 4, 1), torch.log_softmax(t / 4, 1)
    manual = 16 * (soft_t.exp() * (soft_t - soft_s)).sum(1).mean()
    assert hot.item() == pytest.approx(manual.item(), rel=1e-5)


@pytest.mark.parametrize("teacher, mask", [(False, [True]), (True, [False]), (True, None)])
def test_logit_distillation_is_zero_without_a_teacher_or_a_dropped_sample(teacher, mask):
    s = torch.randn(1, 4, 2, 2, requires_grad=True)
    t = torch.randn(1, 4, 2, 2) if teacher else None
    m = torch.tensor(mask) if mask is not None else None
    assert logit_distillation_loss(s, t, m)["logit_distill"].item() == 0.0


def test_logit_distillation_in_the_total_with_its_weight():
    out, batch = _case()
    out.teacher_global_logits = torch.randn(1, C, H, W)
    off = DSJLoss(LossConfig())(out, batch)
    on = DSJLoss(LossConfig(logit_distill_weight=2.0))(out, batch)
    assert off["logit_distill"].item() == 0.0 and on["logit_distill"].item() > 0
    assert (on["total"] - off["total"]).item() == pytest.approx(2.0 * on["logit_distill"].item(), rel=1e-4)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("logit_distill_weight", -1.0, "logit_distill_weight must be >= 0"),
     ("logit_distill_temperature", 0.0, "logit_distill_temperature must be > 0")],
)  # fmt: skip
def test_bad_logit_distillation_settings_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        LossConfig(**{field: value})
