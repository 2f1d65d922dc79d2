"""L_seg: each term's minimum, ordering, ignore handling and region definitions."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from damcseg_core.losses.segmentation import (
    SegmentationLossConfig,
    boundary_band,
    dice_loss,
    object_pixel_weights,
    segmentation_loss,
)

C = 19


def _labels() -> torch.Tensor:
    lab = torch.zeros(1, 16, 16, dtype=torch.int64)  # road
    lab[:, :, 8:] = 2  # building on the right half
    lab[:, 2:5, 2:5] = 13  # a 9-px car (tiny)
    lab[:, 10:14, 10:14] = 11  # a 16-px person
    lab[:, 0, :] = 255  # ignored top row
    return lab


def _instance() -> torch.Tensor:
    inst = torch.zeros(1, 16, 16, dtype=torch.int32)
    inst[:, 2:5, 2:5] = 1
    inst[:, 10:14, 10:14] = 2
    return inst


def _perfect(lab: torch.Tensor, margin: float = 20.0) -> torch.Tensor:
    onehot = F.one_hot(torch.where(lab == 255, 0, lab), C).permute(0, 3, 1, 2).float()
    return margin * onehot


TERMS = ["seg_ce", "seg_boundary", "seg_dice", "seg_tiny", "seg_occlusion"]


@pytest.mark.parametrize("term", TERMS)
def test_perfect_prediction_is_near_zero(term):
    lab = _labels()
    out = segmentation_loss(_perfect(lab), lab, _instance(), [torch.tensor([0.6, 0.2])])
    assert out[term].item() < 1e-6


@pytest.mark.parametrize("term", TERMS)
def test_worse_prediction_costs_more(term):
    lab = _labels()
    good = segmentation_loss(_perfect(lab, 5.0), lab, _instance(), [torch.tensor([0.6, 0.2])])
    bad_logits = _perfect(lab, 5.0)
    bad_logits[:, :, :, ::2] = bad_logits[:, :, :, ::2].roll(1, dims=1)  # every other column wrong
    bad = segmentation_loss(bad_logits, lab, _instance(), [torch.tensor([0.6, 0.2])])
    assert bad[term].item() > good[term].item() + 0.1


@pytest.mark.parametrize("term", [*TERMS, "seg"])
def test_ignore_pixels_do_not_change_loss(term):
    lab = _labels()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, C, 16, 16, generator=g)
    a = segmentation_loss(logits, lab, _instance(), [torch.tensor([0.6, 0.2])])
    changed = logits.clone()
    changed[:, :, 0, :] = 50 * torch.randn(1, C, 16, generator=g)  # row 0 is ignore
    b = segmentation_loss(changed, lab, _instance(), [torch.tensor([0.6, 0.2])])
    assert b[term].item() == pytest.approx(a[term].item(), rel=1e-6)


def test_ce_equals_torch_cross_entropy_with_ignore():
    lab = _labels()
    logits = torch.randn(1, C, 16, 16, generator=torch.Generator().manual_seed(1))
    out = segmentation_loss(logits, lab)
    assert out["seg_ce"].item() == pytest.approx(
        F.cross_entropy(logits, lab, ignore_index=255).item(), rel=1e-6
    )


def test_boundary_band_is_exactly_radius_wide():
    lab = torch.zeros(1, 1, 12, dtype=torch.int64)
    lab[..., 6:] = 1  # edge between columns 5 and 6
    band = boundary_band(lab, radius=2)[0, 0]
    assert band.nonzero().flatten().tolist() == [3, 4, 5, 6, 7, 8]


def test_boundary_band_ignores_edges_with_ignore_pixels():
    lab = torch.zeros(1, 1, 8, dtype=torch.int64)
    lab[..., 4:] = 255
    assert not boundary_band(lab, radius=1).any()


def test_dice_matches_hand_value():
    # Two pixels, classes 0 and 1; prediction puts probability 0.5/0.5 everywhere.
    logits = torch.zeros(1, 2, 1, 2)
    lab = torch.tensor([[[0, 1]]])
    # Per class: inter = 0.5, sum p = 1, sum g = 1 -> 1 - (1 + 1) / (2 + 1) = 1/3.
    assert dice_loss(logits, lab).item() == pytest.approx(1 / 3, rel=1e-6)


@pytest.mark.parametrize(
    ("area", "expected"),
    [(9, 3.0), (99, 3.0), (100, 1.0), (1023, 1.0), (1024, 0.0)],
)
def test_tiny_and_small_pixel_weights(area, expected):
    inst = torch.zeros(1, 64, 64, dtype=torch.int32)
    inst.view(-1)[:area] = 1
    tiny_w, _ = object_pixel_weights(inst, None, SegmentationLossConfig())
    assert tiny_w.view(-1)[0].item() == expected
    assert tiny_w.view(-1)[-1].item() == 0.0  # background


@pytest.mark.parametrize(("ratio", "heavy"), [(0.5, False), (0.51, True)])
def test_occlusion_threshold(ratio, heavy):
    inst = torch.zeros(1, 32, 32, dtype=torch.int32)
    inst[:, 2:6, 2:6] = 1  # isolated, so only the "heavy" rule can select it
    _, occ = object_pixel_weights(inst, [torch.tensor([ratio])], SegmentationLossConfig())
    assert bool(occ[0, 3, 3]) is heavy


def test_occlusion_selects_visible_pixels_next_to_the_occluder():
    inst = torch.zeros(1, 16, 16, dtype=torch.int32)
    inst[:, 4:12, 0:8] = 1  # partly occluded (ratio 0.3) object
    inst[:, 4:12, 8:16] = 2  # its occluder (not occluded)
    cfg = SegmentationLossConfig(boundary_radius=2)
    _, occ = object_pixel_weights(inst, [torch.tensor([0.3, 0.0])], cfg)
    cols = occ[0, 8].nonzero().flatten().tolist()
    assert cols == [6, 7]  # object-1 pixels within 2 px of object 2; none of object 2


def test_size_mismatch_message():
    with pytest.raises(ValueError, match=r"must share H, W"):
        segmentation_loss(torch.zeros(1, C, 8, 8), torch.zeros(1, 4, 4, dtype=torch.int64))


def test_all_ignore_gives_zero_not_nan():
    out = segmentation_loss(torch.randn(1, C, 4, 4), torch.full((1, 4, 4), 255))
    assert out["seg"].item() == 0.0


# ------------------------------------------------- vectorised == the per-image reference code
def _ref_boundary_band(labels, radius):
    """boundary_band as it was before vectorising (square max-pools)."""
    valid = labels != 255
    lab = labels.long()
    hi = F.max_pool2d(torch.where(valid, lab, -1)[:, None].float(), 3, stride=1, padding=1)[:, 0]
    lo = -F.max_pool2d(-torch.where(valid, lab, 256)[:, None].float(), 3, stride=1, padding=1)[:, 0]
    edge = valid & ((hi > lab) | (lo < lab))
    if radius > 0:
        edge = F.max_pool2d(edge[:, None].float(), 2 * radius + 1, stride=1, padding=radius)[:, 0] > 0
    return edge & valid


def _ref_dice(logits, labels):
    valid = labels != 255
    probs = torch.softmax(logits, dim=1) * valid[:, None]
    onehot = F.one_hot(torch.where(valid, labels.long(), 0), logits.shape[1]).permute(0, 3, 1, 2).float()
    onehot = onehot * valid[:, None]
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    present = onehot.sum(dim=(0, 2, 3)) > 0
    return (1.0 - (2.0 * inter + 1.0) / (denom + 1.0))[present].mean()


def _ref_object_pixel_weights(instance, occlusion, cfg):
    tiny_w = torch.zeros(instance.shape)
    occ_mask = torch.zeros(instance.shape, dtype=torch.bool)
    inst = instance.long()
    for i in range(inst.shape[0]):
        ids = inst[i]
        n = int(ids.max())
        if n == 0:
            continue
        area = torch.bincount(ids.flatten(), minlength=n + 1).float()
        per_obj = torch.zeros(n + 1)
        per_obj[(area > 0) & (area < cfg.small_area)] = 1.0
        per_obj[(area > 0) & (area < cfg.tiny_area)] = cfg.tiny_pixel_weight
        per_obj[0] = 0.0
        tiny_w[i] = per_obj[ids]
        if occlusion is None or len(occlusion[i]) == 0:
            continue
        occ = torch.zeros(n + 1)
        ratios = occlusion[i].float().reshape(-1)
        m = min(n, ratios.numel())
        occ[1 : m + 1] = ratios[:m]
        heavy = occ[ids] > cfg.occlusion_threshold
        k, r = 2 * cfg.boundary_radius + 1, cfg.boundary_radius
        obj = ids > 0
        hi = F.max_pool2d(torch.where(obj, ids, -1)[None, None].float(), k, 1, r)[0, 0]
        lo = -F.max_pool2d(-torch.where(obj, ids, n + 1)[None, None].float(), k, 1, r)[0, 0]
        occ_mask[i] = heavy | (obj & ((hi > ids) | (lo < ids)) & (occ[ids] > 0))
    return tiny_w, occ_mask


@pytest.fixture(scope="module")
def synthetic_batch():
    """Four 64x128 synthetic frames (real instance maps and occlusion ratios) plus edge cases."""
    from damcseg_core.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(4, seed=3, size=(64, 128))
    samples = [ds[i] for i in range(4)]
    semantic = torch.stack([s["semantic"] for s in samples])
    instance = torch.stack([s["instance"] for s in samples])
    occlusion = [s["occlusion"] for s in samples]
    semantic[1, :5] = 255  # ignored rows
    instance[2] = 0  # an image without objects
    occlusion[3] = occlusion[3][:0]  # objects with unknown occlusion
    return semantic, instance, occlusion


@pytest.mark.parametrize("radius", [0, 1, 3, 5])
def test_boundary_band_equals_max_pool_reference(synthetic_batch, radius):
    semantic = synthetic_batch[0]
    assert torch.equal(boundary_band(semantic, radius), _ref_boundary_band(semantic, radius))


@pytest.mark.parametrize(
    "cfg",
    [
        SegmentationLossConfig(),
        SegmentationLossConfig(boundary_radius=0, occlusion_threshold=-0.1, tiny_area=50, small_area=400),
        SegmentationLossConfig(boundary_radius=2, occlusion_threshold=0.2, tiny_pixel_weight=5.0),
    ],
    ids=["default", "radius0-negative-threshold", "radius2"],
)
def test_object_pixel_weights_equal_per_image_reference(synthetic_batch, cfg):
    _, instance, occlusion = synthetic_batch
    tiny, occ = object_pixel_weights(instance, occlusion, cfg)
    ref_tiny, ref_occ = _ref_object_pixel_weights(instance, occlusion, cfg)
    assert torch.equal(tiny, ref_tiny)
    assert torch.equal(occ, ref_occ)
    assert occ.any() and tiny.any()  # the case exercises both terms
    tiny_none, occ_none = object_pixel_weights(instance, None, cfg)
    assert torch.equal(tiny_none, ref_tiny) and not occ_none.any()


@pytest.mark.parametrize("seed", [0, 1])
def test_dice_and_full_loss_equal_reference(synthetic_batch, seed, monkeypatch):
    import damcseg_core.losses.segmentation as seg

    semantic, instance, occlusion = synthetic_batch
    g = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(semantic.shape[0], C, *semantic.shape[1:], generator=g)).requires_grad_(True)
    got = dice_loss(logits, semantic)
    ref = _ref_dice(logits, semantic)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        torch.autograd.grad(got, logits)[0], torch.autograd.grad(ref, logits)[0], rtol=1e-4, atol=1e-8
    )
    cfg = SegmentationLossConfig()
    new = segmentation_loss(logits, semantic, instance, occlusion, cfg)
    with monkeypatch.context() as m:
        m.setattr(seg, "boundary_band", _ref_boundary_band)
        m.setattr(seg, "dice_loss", _ref_dice)
        m.setattr(seg, "object_pixel_weights", _ref_object_pixel_weights)
        old = segmentation_loss(logits, semantic, instance, occlusion, cfg)
    for key in old:
        torch.testing.assert_close(new[key], old[key], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        torch.autograd.grad(new["seg"], logits)[0],
        torch.autograd.grad(old["seg"], logits)[0],
        rtol=1e-4,
        atol=1e-8,
    )
