"""Unit tests of the DAMCSeg building blocks with hand-computed expected values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from damcseg_core.data.classes import DETECTION_TRAIN_IDS
from damcseg_core.models.backbone import SharedBackbone
from damcseg_core.models.completion import ModalCompletionNetwork
from damcseg_core.models.config import BackboneConfig, DetectionConfig, EncoderConfig, NormalizationConfig
from damcseg_core.models.detection_head import DetectionHead, make_anchors
from damcseg_core.models.encoders import (
    DilatedModalEncoder,
    ModalityNormalizer,
    RgbEncoder,
    create_timm_model,
)
from damcseg_core.models.modal_attention import ModalAdaptiveAttention
from damcseg_core.models.segmentation_head import ASPP, DepthPriorPath, paste_rois


# ----------------------------------------------------------------------------- normalisation
def test_depth_normalisation_marks_invalid_and_clips():
    norm = ModalityNormalizer(NormalizationConfig(max_depth=80.0, depth_mean=0.25, depth_std=0.25))
    depth = torch.tensor([0.0, float("nan"), float("inf"), -3.0, 40.0, 200.0]).view(1, 1, 1, 6)
    out = norm("depth", depth)
    assert out.shape == (1, 2, 1, 6)
    assert out[0, 1, 0].tolist() == [0, 0, 0, 0, 1, 1]
    # valid: (d / 80 - 0.25) / 0.25 with d clipped at 80 m; invalid pixels carry 0.
    assert out[0, 0, 0].tolist() == pytest.approx([0, 0, 0, 0, 1.0, 3.0])


@pytest.mark.parametrize(
    ("modality", "value", "expected"),
    [("rgb", (0.485, 0.456, 0.406), (0.0, 0.0, 0.0)), ("rgb", (1.0, 1.0, 1.0), (2.2489, 2.4286, 2.64)),
     ("thermal", (0.75,), (1.0,))],
)  # fmt: skip
def test_rgb_thermal_normalisation(modality, value, expected):
    norm = ModalityNormalizer(NormalizationConfig())
    x = torch.tensor(value).view(1, -1, 1, 1)
    assert norm(modality, x).flatten().tolist() == pytest.approx(expected, abs=1e-3)


# ----------------------------------------------------------------------------- encoders
@pytest.mark.parametrize(("in_chans", "widths"), [(1, (8, 16, 24, 32)), (2, (64, 128, 256, 512))])
def test_dilated_encoder_widths_and_stride(in_chans, widths):
    enc = DilatedModalEncoder(in_chans, EncoderConfig(widths=widths, dilations=(1, 2, 2, 4)))
    assert [b.down[0].out_channels for b in enc.blocks] == list(widths)
    assert [b.context[0].dilation[0] for b in enc.blocks] == [1, 2, 2, 4]
    assert enc(torch.rand(1, in_chans, 64, 96)).shape == (1, widths[-1], 8, 12)


def test_rgb_encoder_stride8_output():
    enc = RgbEncoder(
        EncoderConfig(rgb_backbone="mobilenetv4_conv_small", rgb_stages=3, widths=(8, 16, 24, 40))
    )
    assert enc.trunk.reductions == [4, 8, 16]
    assert enc(torch.rand(1, 3, 64, 96)).shape == (1, 40, 8, 12)


# ----------------------------------------------------------------------------- attention (eq. 1-2)
def test_attention_weights_follow_eq1_eq2():
    att = ModalAdaptiveAttention(channels=16, heads=8)
    feats = {m: torch.full((1, 16, 2, 2), v) for m, v in zip(("rgb", "depth", "thermal"), (1.0, 2.0, 4.0))}
    for m, bias in zip(("rgb", "depth", "thermal"), (0.0, 100.0, -100.0)):
        torch.nn.init.zeros_(att.gates[m].weight)
        torch.nn.init.constant_(att.gates[m].bias, bias)
    fused, weights = att(feats)
    # omega = sigmoid(bias): 0.5, 1, 0 -> F = 0.5 * 1 + 1 * 2 + 0 * 4
    assert torch.allclose(fused, torch.full_like(fused, 2.5))
    assert weights[0].tolist() == pytest.approx([0.5, 1.0, 0.0])


def test_attention_heads_weight_their_own_channel_groups():
    att = ModalAdaptiveAttention(channels=16, heads=8)
    feats = {"rgb": torch.ones(1, 16, 1, 1)}
    torch.nn.init.zeros_(att.gates["rgb"].weight)
    with torch.no_grad():
        att.gates["rgb"].bias.copy_(torch.tensor([100.0, -100.0] * 4))
    fused, _ = att(feats)
    # Heads alternate on/off; each head owns 16 / 8 = 2 consecutive channels.
    assert fused.flatten().tolist() == pytest.approx([1, 1, 0, 0] * 4)


def test_attention_context_starts_as_eq1_then_lets_rgb_steer_the_thermal_gate():
    torch.manual_seed(0)
    plain = ModalAdaptiveAttention(channels=16, heads=8)
    ctx = ModalAdaptiveAttention(channels=16, heads=8, context=True)
    ctx.load_state_dict(plain.state_dict(), strict=False)  # zero-initialised context: eq. 1 exactly
    feats = {m: torch.rand(2, 16, 3, 4) for m in ("rgb", "depth", "thermal")}
    for a, b in zip(plain(feats), ctx(feats)):
        assert torch.equal(a, b)
    # thermal's logit offset follows the mean of rgb's first channel (the "how bright" cue)
    with torch.no_grad():
        ctx.context.weight[2 * 8 : 3 * 8, 0] = -20.0  # rows of thermal's heads, rgb's channel 0
    dark = {**feats, "rgb": feats["rgb"].clone()}
    dark["rgb"][:, 0] = 0.0
    bright = {**feats, "rgb": feats["rgb"].clone()}
    bright["rgb"][:, 0] = 1.0
    _, w_dark = ctx(dark)
    _, w_bright = ctx(bright)
    assert (w_dark[:, 2] - w_bright[:, 2]).min() > 0.3  # thermal trusted more when rgb is dark
    assert torch.allclose(w_dark[:, 1], w_bright[:, 1])  # depth's gate did not move
    # an absent modality adds zeros to the descriptor instead of failing
    _, w = ctx({"depth": feats["depth"], "thermal": feats["thermal"]})
    assert w[:, 0].tolist() == [0.0, 0.0] and torch.isfinite(w).all()


# ----------------------------------------------------------------------------- completion (eq. 3)
def test_mcn_keeps_present_tensors_and_fills_missing():
    mcn = ModalCompletionNetwork(channels=8, hidden=16, layers=2)
    rgb = torch.rand(2, 8, 4, 4)
    out, completed = mcn({"rgb": rgb})
    assert completed == ("depth", "thermal")
    assert out["rgb"] is rgb
    assert out["depth"].shape == out["thermal"].shape == (2, 8, 4, 4)
    with pytest.raises(ValueError, match="only predicts missing"):
        mcn.predict({"rgb": rgb}, "rgb")


def test_mcn_uses_presence_embedding():
    mcn = ModalCompletionNetwork(channels=8, hidden=16, layers=1)
    zeros = torch.zeros(1, 8, 2, 2)
    # Identical (zero) features but different presence must give different predictions.
    a = mcn.predict({"rgb": zeros}, "thermal")
    b = mcn.predict({"depth": zeros}, "thermal")
    assert not torch.allclose(a, b)


# ----------------------------------------------------------------------------- backbone
def test_backbone_shares_80_percent_and_duplicates_the_rest():
    bb = SharedBackbone(
        32, BackboneConfig(name="tf_efficientnetv2_b0", channel_multiplier=0.25, depth_multiplier=0.5)
    )
    total = bb.num_shared_blocks + bb.num_task_blocks
    assert bb.num_shared_blocks == round(0.8 * total)
    det_p = list(bb.det_blocks.parameters())
    seg_p = list(bb.seg_blocks.parameters())
    assert all(a is not b for a, b in zip(det_p, seg_p))
    assert all(torch.equal(a, b) for a, b in zip(det_p, seg_p))
    det, seg = bb.eval()(torch.rand(1, 32, 8, 16))
    assert [f.shape[-2:] for f in det] == [(8, 16), (4, 8), (2, 4)]
    assert [f.shape[1] for f in seg] == bb.channels
    assert bb.reductions == [8, 16, 32]


def test_unknown_timm_model_suggests_names():
    with pytest.raises(ValueError, match="did you mean"):
        create_timm_model("mobilenetv4_conv_smal")


def test_backbone_rejects_multiplier_on_prescaled_model():
    with pytest.raises(ValueError, match="fixes its own"):
        SharedBackbone(32, BackboneConfig(name="tf_efficientnetv2_b3", channel_multiplier=0.5))


# ----------------------------------------------------------------------------- detection
def test_anchors_values_and_order():
    anchors = make_anchors([(2, 3)], [3], anchor_scale=4.0, num_scales=1, aspect_ratios=(1.0, 4.0))
    assert anchors.shape == (2 * 3 * 2, 4)
    # First location centre (4, 4), stride 8, side 32; ratio 4 (h/w) -> w 16, h 64.
    assert anchors[0].tolist() == [-12.0, -12.0, 20.0, 20.0]
    assert anchors[1].tolist() == [-4.0, -28.0, 12.0, 36.0]
    # Next location is one stride to the right (row-major, anchors innermost).
    assert anchors[2].tolist() == [-4.0, -12.0, 28.0, 20.0]


def _head(**kw):
    cfg = DetectionConfig(bifpn_channels=8, bifpn_repeats=1, head_repeats=1, min_level=3, max_level=5, **kw)
    return DetectionHead([16, 16, 16], cfg, len(DETECTION_TRAIN_IDS))


def test_head_output_matches_anchor_count():
    head = _head().eval()
    pyr = [torch.rand(1, 16, 8, 16), torch.rand(1, 16, 4, 8), torch.rand(1, 16, 2, 4)]
    cls, box, anchors, levels = head(pyr)
    a = (8 * 16 + 4 * 8 + 2 * 4) * 9
    assert cls.shape == (1, a, 10) and box.shape == (1, a, 4) and anchors.shape == (a, 4)
    assert torch.bincount(levels).tolist() == [8 * 16 * 9, 4 * 8 * 9, 2 * 4 * 9]
    assert torch.sigmoid(cls).mean().item() == pytest.approx(0.01, abs=0.005)  # focal prior


def _stacked_case():
    anchors = torch.tensor([[0.0, 0, 20, 20], [1.0, 1, 21, 21], [0.0, 0, 20, 20], [40.0, 40, 60, 60]])
    cls = torch.full((1, 4, 10), -10.0)
    cls[0, 0, 2] = 3.0  # best, class 2 -> train id 11 (person)
    cls[0, 1, 2] = 2.0  # overlaps the best, same class -> suppressed
    cls[0, 2, 3] = 1.0  # same place, other class (rider)
    cls[0, 3, 0] = -1.0  # p = 0.27 < 0.3 -> dropped
    return cls, torch.zeros(1, 4, 4), anchors


def test_class_agnostic_nms_keeps_one_of_two_stacked_boxes_of_different_classes():
    head = _head(score_threshold=0.3, nms_iou=0.5)  # class_agnostic_nms is the default
    cls, deltas, anchors = _stacked_case()
    boxes, scores, labels = head.postprocess(cls, deltas, anchors, (64, 64))
    assert boxes[0].tolist() == [[0, 0, 20, 20]]
    assert labels[0].tolist() == [DETECTION_TRAIN_IDS[2]]
    assert scores[0].tolist() == pytest.approx([1 / (1 + math.exp(-3))])


@pytest.mark.parametrize("cap", [0, 1])
def test_max_detections_caps_the_output(cap):
    head = _head(score_threshold=0.3, nms_iou=0.5, class_agnostic_nms=False, max_detections=cap)
    boxes, _, _ = head.postprocess(*_stacked_case()[:2], _stacked_case()[2], (64, 64))
    assert len(boxes[0]) == cap


def test_postprocess_threshold_nms_and_train_ids():
    head = _head(score_threshold=0.3, nms_iou=0.5, class_agnostic_nms=False)
    anchors = torch.tensor([[0.0, 0, 20, 20], [1.0, 1, 21, 21], [0.0, 0, 20, 20], [40.0, 40, 60, 60]])
    cls = torch.full((1, 4, 10), -10.0)
    cls[0, 0, 2] = 3.0  # best, class 2 -> train id 11 (person)
    cls[0, 1, 2] = 2.0  # overlaps the best, same class -> suppressed
    cls[0, 2, 3] = 1.0  # same place, other class -> kept
    cls[0, 3, 0] = -1.0  # p = 0.27 < 0.3 -> dropped
    deltas = torch.zeros(1, 4, 4)
    boxes, scores, labels = head.postprocess(cls, deltas, anchors, (64, 64))
    assert boxes[0].tolist() == [[0, 0, 20, 20], [0, 0, 20, 20]]
    assert scores[0].tolist() == pytest.approx([1 / (1 + math.exp(-3)), 1 / (1 + math.exp(-1))])
    assert labels[0].tolist() == [DETECTION_TRAIN_IDS[2], DETECTION_TRAIN_IDS[3]]


def test_postprocess_decodes_with_unit_weights_and_clips():
    head = _head(score_threshold=0.1)
    anchors = torch.tensor([[10.0, 10, 30, 30]])
    cls = torch.full((1, 1, 10), -10.0)
    cls[0, 0, 0] = 5.0
    deltas = torch.tensor([[[0.5, 0.0, math.log(2.0), 0.0]]])  # shift 0.5 * width, double the width
    boxes, _, _ = head.postprocess(cls, deltas, anchors, (64, 35))
    assert boxes[0].tolist() == [[10.0, 10.0, 35.0, 30.0]]  # x centre 30, width 40 -> [10, 50] clipped to 35


# ----------------------------------------------------------------------------- segmentation paths
@pytest.mark.parametrize("separable", [True, False])
def test_aspp_keeps_size_and_width(separable):
    aspp = ASPP(16, 12, (1, 6, 12, 18), separable=separable).eval()
    assert aspp(torch.rand(1, 16, 5, 7)).shape == (1, 12, 5, 7)
    dilations = [b[0].dilation[0] for b in aspp.branches[1:]]
    assert dilations == [6, 12, 18]
    assert [b[0].groups for b in aspp.branches[1:]] == ([16] * 3 if separable else [1] * 3)


def test_paste_rois_places_and_averages():
    roi = torch.stack([torch.full((2, 4, 4), 1.0), torch.full((2, 4, 4), 3.0)])
    boxes = [torch.tensor([[2.0, 1.0, 6.0, 5.0], [4.0, 1.0, 8.0, 5.0]])]
    logits, cov = paste_rois(roi, boxes, 1, 8, 10)
    assert cov[0, 0].sum() == 4 * 6
    assert logits[0, 0, 2, 2:4].tolist() == [1.0, 1.0]
    assert logits[0, 0, 2, 4:6].tolist() == [2.0, 2.0]  # overlap: mean of 1 and 3
    assert logits[0, 0, 2, 6:8].tolist() == [3.0, 3.0]
    assert logits[0, :, 0].abs().sum() == 0 and cov[0, 0, 0].sum() == 0


def _two_overlapping_targets():
    # A person (near, 5 m) standing in front of a car (far, 20 m); boxes overlap in x 10..14.
    boxes = [torch.tensor([[8.0, 4.0, 14.0, 16.0], [10.0, 6.0, 24.0, 12.0]])]
    labels = [torch.tensor([11, 13])]
    scores = [torch.tensor([1.0, 1.0])]
    depth = torch.full((1, 1, 16, 32), 50.0)
    depth[0, 0, 6:12, 10:24] = 20.0
    depth[0, 0, 4:16, 8:12] = 5.0
    return boxes, labels, scores, depth


def test_depth_prior_assigns_overlap_by_depth_match():
    boxes, labels, scores, depth = _two_overlapping_targets()
    path = DepthPriorPath(strength=2.0, depth_tolerance=0.15)
    zeros = torch.zeros(1, 19, 16, 32)
    post, cov = path(zeros, boxes, scores, labels, depth, (depth > 0).float())
    assert post[0, :, 8, 10].argmax() == 11  # overlap pixel at 5 m -> the person
    assert post[0, 11, 8, 10].item() == pytest.approx(2.0)
    assert post[0, :, 8, 13].argmax() == 13  # overlap pixel at 20 m -> the car behind
    assert post[0, 13, 8, 13].item() == pytest.approx(2.0)
    # Background at 50 m inside the person box matches neither: boost ~0.
    assert post[0, :, 14, 13].abs().max() < 1e-6
    assert cov[0, 0].sum() == 6 * 12 + 14 * 6 - 4 * 6


def test_depth_prior_without_depth_uses_box_bottom():
    boxes, labels, scores, _ = _two_overlapping_targets()
    path = DepthPriorPath(strength=2.0, depth_tolerance=0.15)
    post, _ = path(torch.zeros(1, 19, 16, 32), boxes, scores, labels, None, None)
    # The person box reaches lower (y=16 > 12): nearer, so it owns the whole overlap.
    assert post[0, :, 8, 13].argmax() == 11 and post[0, 11, 8, 13].item() == pytest.approx(2.0)
    assert post[0, 13, 8, 20].item() == pytest.approx(2.0)


def test_mcn_learns_a_cross_modal_mapping():
    # Thermal features that are a fixed per-location function of the rgb features: after a few
    # steps of the completion objective the MCN predicts them far better than at the start.
    # The tanh target takes both signs, so this uses the linear output (the old MCN).
    torch.manual_seed(0)
    mcn = ModalCompletionNetwork(channels=8, hidden=32, layers=2, output="linear")
    mix = torch.randn(8, 8)
    opt = torch.optim.Adam(mcn.parameters(), lr=1e-2)

    def batch():
        rgb = torch.randn(4, 8, 4, 4)
        return rgb, torch.tanh(torch.einsum("oc,bchw->bohw", mix, rgb))

    rgb, target = batch()
    start = torch.nn.functional.mse_loss(mcn.predict({"rgb": rgb}, "thermal"), target).item()
    for _ in range(150):
        rgb, target = batch()
        loss = torch.nn.functional.mse_loss(mcn.predict({"rgb": rgb}, "thermal"), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    rgb, target = batch()
    end = torch.nn.functional.mse_loss(mcn.predict({"rgb": rgb}, "thermal"), target).item()
    assert end < 0.25 * start


# ------------------------------------------------ vectorised ROI code == the per-box reference
def _random_boxes(gen, n_images, h, w, max_n=6, integer=False):
    out = []
    for _ in range(n_images):
        n = int(torch.randint(0, max_n + 1, (1,), generator=gen))
        xy = torch.rand(n, 2, generator=gen) * torch.tensor([w + 4.0, h + 4.0]) - 2
        wh = torch.rand(n, 2, generator=gen) * 12 + 0.3
        if integer:
            xy, wh = xy.round(), wh.round()
        out.append(torch.cat([xy, xy + wh], 1))
    return out


def _reference_paste(roi_logits, boxes, batch, height, width):
    """The per-ROI loop paste_rois replaced (bilinear resize of each ROI into its region)."""
    from damcseg_core.models.segmentation_head import box_regions

    total = roi_logits.new_zeros(batch, roi_logits.shape[1], height, width)
    count = roi_logits.new_zeros(batch, 1, height, width)
    i = 0
    for b, img_boxes in enumerate(boxes):
        for box in img_boxes:
            region = box_regions(box, height, width)
            if region is not None:
                y0, y1, x0, x1 = region
                total[b : b + 1, :, y0:y1, x0:x1] += F.interpolate(
                    roi_logits[i : i + 1], size=(y1 - y0, x1 - x0), mode="bilinear", align_corners=False
                )
                count[b : b + 1, :, y0:y1, x0:x1] += 1
            i += 1
    return total / count.clamp(min=1), (count > 0).float()


@pytest.mark.parametrize("seed", range(6))
def test_paste_rois_equals_the_per_roi_resize_values_and_gradients(seed):
    gen = torch.Generator().manual_seed(seed)
    boxes = _random_boxes(gen, 3, 17, 29)
    n = sum(len(b) for b in boxes)
    roi = torch.randn(n, 5, 6, 6, generator=gen, requires_grad=True)
    got, cov = paste_rois(roi, boxes, 3, 17, 29)
    want, want_cov = _reference_paste(roi, boxes, 3, 17, 29)
    assert torch.equal(cov, want_cov)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    if n:
        weights = torch.randn(got.shape, generator=gen)
        (g_got,) = torch.autograd.grad((got * weights).sum(), roi)
        (g_want,) = torch.autograd.grad((want * weights).sum(), roi)
        torch.testing.assert_close(g_got, g_want, atol=1e-4, rtol=1e-4)


def _reference_depth_prior(path, global_logits, boxes, scores, class_ids, depth, depth_valid):
    """The far-to-near per-box loop DepthPriorPath.forward replaced."""
    from damcseg_core.models.segmentation_head import box_regions

    b_, k, h, w = global_logits.shape
    boost, coverage = torch.zeros(b_, k, h, w), torch.zeros(b_, 1, h, w)
    for b in range(b_):
        if len(boxes[b]) == 0:
            continue
        d_img = None if depth is None else depth[b]
        ref = boxes[b][:, 3].clamp(min=1.0).reciprocal() * h
        if d_img is not None:
            for i, box in enumerate(boxes[b]):
                y0, y1, x0, x1 = box_regions(box, h, w) or (0, 0, 0, 0)
                d = d_img[0, y0:y1, x0:x1][depth_valid[b][0, y0:y1, x0:x1] > 0]
                if d.numel():
                    ref[i] = d.median()
        best, weight = torch.full((h, w), -1.0), torch.zeros(h, w)
        owner = torch.zeros(h, w, dtype=torch.long)
        for i in torch.argsort(ref, descending=True).tolist():
            region = box_regions(boxes[b][i], h, w)
            if region is None:
                continue
            y0, y1, x0, x1 = region
            match = torch.ones(y1 - y0, x1 - x0)
            if d_img is not None:
                sigma = path.tolerance * ref[i].clamp(min=1e-3)
                match = torch.exp(-0.5 * ((d_img[0, y0:y1, x0:x1] - ref[i]) / sigma) ** 2)
                match = torch.where(depth_valid[b][0, y0:y1, x0:x1] > 0, match, torch.ones_like(match))
            take = match >= best[y0:y1, x0:x1]
            best[y0:y1, x0:x1] = torch.where(take, match, best[y0:y1, x0:x1])
            weight[y0:y1, x0:x1] = torch.where(take, match * float(scores[b][i]), weight[y0:y1, x0:x1])
            owner[y0:y1, x0:x1] = torch.where(take, class_ids[b][i], owner[y0:y1, x0:x1])
            coverage[b, 0, y0:y1, x0:x1] = 1.0
        boost[b].scatter_(0, owner.unsqueeze(0), weight.unsqueeze(0))
    return global_logits + path.log_strength.exp() * boost, coverage


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("with_depth", [True, False])
@pytest.mark.parametrize("grad", [True, False], ids=["training", "inference"])
def test_depth_prior_equals_the_far_to_near_loop(seed, with_depth, grad):
    gen = torch.Generator().manual_seed(seed)
    h, w, k = 13, 21, 7
    boxes = _random_boxes(gen, 2, h, w)
    scores = [torch.rand(len(b), generator=gen) for b in boxes]
    labels = [torch.randint(0, k, (len(b),), generator=gen) for b in boxes]
    logits = torch.randn(2, k, h, w, generator=gen)
    depth = valid = None
    if with_depth:  # whole metres: equal depths make ties in the medians and the matches
        valid = (torch.rand(2, 1, h, w, generator=gen) > 0.3).float()
        depth = (torch.rand(2, 1, h, w, generator=gen) * 30).round() * valid
    path = DepthPriorPath(strength=2.0, depth_tolerance=0.15)
    with torch.set_grad_enabled(grad):  # inference adds into one copy of the logits instead
        got, cov = path(logits, boxes, scores, labels, depth, valid)
    want, want_cov = _reference_depth_prior(path, logits, boxes, scores, labels, depth, valid)
    assert torch.equal(cov, want_cov)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert got.requires_grad == grad  # training keeps the strength's gradient
