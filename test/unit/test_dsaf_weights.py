"""DSAF target features, eq. 6-9 weights, weight maps and the weighted fusion."""

from __future__ import annotations

import math

import pytest
import torch

from damcseg_core.config import ConfigError, from_dict
from damcseg_core.models.dsaf import DSAF, DSAFConfig


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def probs_with(pixel: list[float], k: int = 19, h: int = 8, w: int = 8) -> torch.Tensor:
    """``[1, K, h, w]`` with the same class distribution ``pixel`` (padded with zeros) everywhere."""
    p = torch.zeros(k)
    p[: len(pixel)] = torch.tensor(pixel)
    return p[None, :, None, None].expand(1, k, h, w).clone()


# ---------------------------------------------------------------- target features
@pytest.mark.parametrize(
    ("box", "size"),
    [([0, 0, 8, 8], 1.0), ([0, 0, 4, 2], 8 / 64), ([2, 2, 3, 3], 1 / 64), ([-4, -4, 4, 4], 16 / 64)],
)
def test_size_is_clipped_box_area_over_image_area(box: list[float], size: float) -> None:
    sizes, _ = DSAF().target_features(probs_with([1.0]), [torch.tensor([box], dtype=torch.float32)])
    assert sizes[0].tolist() == pytest.approx([size])


@pytest.mark.parametrize(
    ("pixel", "ambiguity"),
    [
        ([1.0], 0.0),  # confident
        ([1 / 19] * 19, 1.0),  # uniform
        ([0.5, 0.5], 0.5 / (18 / 19)),
        ([0.8, 0.2], (1 - 0.64 - 0.04) / (18 / 19)),  # 0.3378 > 0.3: the paper's "ambiguous" regime
        ([0.9, 0.1], (1 - 0.81 - 0.01) / (18 / 19)),  # 0.19: clear
    ],
)
def test_ambiguity_is_normalised_pixel_classification_variance(pixel: list[float], ambiguity: float) -> None:
    _, amb = DSAF().target_features(probs_with(pixel), [torch.tensor([[0.0, 0, 8, 8]])])
    assert amb[0].tolist() == pytest.approx([ambiguity], abs=1e-6)


def test_ambiguity_is_the_mean_over_the_box_only() -> None:
    probs = probs_with([1.0])
    probs[0, :, 0:4, 0:4] = probs_with([0.5, 0.5], h=4, w=4)[0]  # ambiguous top-left quarter
    boxes = [torch.tensor([[0.0, 0, 4, 4], [0, 0, 8, 8], [4, 4, 8, 8], [0, 0, 4, 8]])]
    _, amb = DSAF().target_features(probs, boxes)
    a = 0.5 / (18 / 19)
    assert amb[0].tolist() == pytest.approx([a, a / 4, 0.0, a / 2], abs=1e-6)


def test_confidently_mixed_box_is_not_ambiguous() -> None:
    # Half the box confidently class 0, half confidently class 1: a car and the road around it.
    probs = probs_with([1.0])
    probs[0, :, :, 4:] = probs_with([0.0, 1.0], h=8, w=4)[0]
    _, amb = DSAF().target_features(probs, [torch.tensor([[0.0, 0, 8, 8]])])
    assert amb[0].tolist() == pytest.approx([0.0], abs=1e-6)


def test_target_features_of_an_image_without_boxes_are_empty() -> None:
    sizes, amb = DSAF().target_features(probs_with([1.0]), [torch.zeros(0, 4)])
    assert sizes[0].shape == (0,) and amb[0].shape == (0,)


# ---------------------------------------------------------------- eq. 6
@pytest.mark.parametrize(
    ("a", "b", "c", "size", "amb"),
    [
        (-50.0, 5.0, -1.0, 0.01, 0.3),
        (-50.0, 5.0, -1.0, 0.002, 0.6),
        (-10.0, 2.0, 0.5, 0.2, 0.1),
        (1.0, 1.0, 1.0, 0.0, 0.0),
    ],
)
def test_delta_beta_is_sigmoid_of_eq6(a: float, b: float, c: float, size: float, amb: float) -> None:
    dsaf = DSAF(DSAFConfig(a_init=a, b_init=b, c_init=c))
    out = dsaf(torch.tensor([[0.5, 0.3, 0.2]]), [torch.tensor([size])], [torch.tensor([amb])])
    assert out.delta_beta[0].item() == pytest.approx(sigmoid(a * size + b * amb + c), abs=1e-6)


def test_default_parameters_put_delta_beta_half_at_the_paper_thresholds() -> None:
    out = DSAF()(torch.tensor([[0.5, 0.3, 0.2]]), [torch.tensor([0.01])], [torch.tensor([0.3])])
    assert out.delta_beta[0].item() == pytest.approx(0.5, abs=1e-6)


@pytest.mark.parametrize(
    ("favoured", "other"),
    [
        ((0.005, 0.1), (0.05, 0.1)),  # small target beats a larger one
        ((0.001, 0.1), (0.2, 0.1)),
        ((0.05, 0.5), (0.05, 0.1)),  # ambiguous beats clear
        ((0.2, 0.9), (0.2, 0.2)),
    ],
)
def test_default_parameters_favour_small_and_ambiguous_targets(favoured: tuple, other: tuple) -> None:
    dsaf = DSAF()
    sizes = torch.tensor([favoured[0], other[0]])
    amb = torch.tensor([favoured[1], other[1]])
    db = dsaf(torch.tensor([[0.5, 0.3, 0.2]]), [sizes], [amb]).delta_beta[0]
    assert db[0] > db[1]
    assert dsaf.a.item() < 0 < dsaf.b.item()


# ---------------------------------------------------------------- eq. 7-9
@pytest.mark.parametrize(
    ("init", "logit", "expected"),
    [
        ([0.6, 0.2, 0.1], 0.0, [0.3, 0.3, 0.125]),  # delta_beta 0.5
        ([0.5, 0.3, 0.2], 0.0, [0.25, 0.45, 0.25]),
        ([0.4, 0.4, 0.3], 0.0, [0.2, 0.6, 0.375]),
        ([0.5, 0.3, 0.2], math.log(3), [0.125, 0.525, 0.275]),  # delta_beta 0.75
        ([0.4, 0.4, 0.3], -math.log(3), [0.3, 0.5, 0.3375]),  # delta_beta 0.25
    ],
)
def test_final_weights_follow_eq7_to_eq9(init: list[float], logit: float, expected: list[float]) -> None:
    dsaf = DSAF(DSAFConfig(a_init=0.0, b_init=0.0, c_init=logit))
    out = dsaf(torch.tensor([init]), [torch.tensor([0.1, 0.2])], [torch.tensor([0.3, 0.4])])
    assert out.target_alpha_beta_gamma[0].shape == (2, 3)
    assert out.target_alpha_beta_gamma[0][0].tolist() == pytest.approx(expected, abs=1e-6)
    assert out.alpha_beta_gamma[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_image_weights_use_the_mean_delta_beta() -> None:
    dsaf = DSAF(DSAFConfig(a_init=0.0, b_init=1.0, c_init=0.0))
    amb = torch.tensor([0.0, math.log(3)])  # delta_beta 0.5 and 0.75 -> mean 0.625
    out = dsaf(torch.tensor([[0.5, 0.3, 0.2]]), [torch.tensor([0.1, 0.1])], [amb])
    assert out.delta_beta[0].tolist() == pytest.approx([0.5, 0.75], abs=1e-6)
    assert out.alpha_beta_gamma[0].tolist() == pytest.approx(
        [0.5 * 0.375, 0.3 * 1.625, 0.2 * 1.3125], abs=1e-6
    )


def test_image_without_targets_keeps_its_initial_weights() -> None:
    init = torch.tensor([[0.6, 0.2, 0.1], [0.4, 0.4, 0.3]])
    out = DSAF()(init, [torch.zeros(0), torch.tensor([0.001])], [torch.zeros(0), torch.tensor([0.9])])
    assert out.alpha_beta_gamma[0].tolist() == pytest.approx([0.6, 0.2, 0.1])
    assert out.target_alpha_beta_gamma[0].shape == (0, 3)
    assert out.alpha_beta_gamma[1, 1].item() > 0.4


# ---------------------------------------------------------------- weight maps
def test_weight_maps_paint_small_targets_over_large_ones() -> None:
    image_w = torch.tensor([[0.5, 0.3, 0.2]])
    boxes = [torch.tensor([[2.0, 2, 4, 4], [0, 0, 6, 6]])]  # small box first in the list
    target_w = [torch.tensor([[0.1, 0.8, 0.3], [0.4, 0.4, 0.25]])]
    maps = DSAF.weight_maps(image_w, boxes, target_w, 8, 10)
    assert maps.shape == (1, 3, 8, 10)
    assert maps[0, :, 3, 3].tolist() == pytest.approx([0.1, 0.8, 0.3])  # small box wins
    assert maps[0, :, 0, 0].tolist() == pytest.approx([0.4, 0.4, 0.25])  # large box
    assert maps[0, :, 7, 9].tolist() == pytest.approx([0.5, 0.3, 0.2])  # background
    inside_large = torch.zeros(8, 10, dtype=torch.bool)
    inside_large[0:6, 0:6] = True
    assert int((maps[0, 1] == 0.4).sum()) == 36 - 4
    assert bool((maps[0, 1][~inside_large] == 0.3).all())


def test_weight_maps_are_differentiable() -> None:
    image_w = torch.tensor([[0.5, 0.3, 0.2]], requires_grad=True)
    target_w = torch.tensor([[0.1, 0.8, 0.3]], requires_grad=True)
    maps = DSAF.weight_maps(image_w, [torch.tensor([[0.0, 0, 2, 2]])], [target_w], 4, 4)
    maps.sum().backward()
    assert target_w.grad.tolist() == [[4.0, 4.0, 4.0]]  # 2 x 2 pixels
    assert image_w.grad.tolist() == [[12.0, 12.0, 12.0]]  # the other 12 pixels


# ---------------------------------------------------------------- fusion
def branch_logits(k: int = 4, h: int = 2, w: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, k, h, w, generator=torch.Generator().manual_seed(seed))


def test_fusion_without_local_and_post_coverage_is_the_global_path() -> None:
    g, loc, post = branch_logits(seed=0), branch_logits(seed=1), branch_logits(seed=2)
    maps = torch.tensor([0.5, 0.3, 0.2])[None, :, None, None].expand(1, 3, 2, 3)
    zero = torch.zeros(1, 1, 2, 3)
    out = DSAF().fuse(g, loc, zero, post, zero, maps)
    assert torch.allclose(out, torch.log_softmax(g, dim=1), atol=1e-6)


def test_fusion_mixes_probabilities_with_renormalised_weights() -> None:
    g, loc, post = branch_logits(seed=0), branch_logits(seed=1), branch_logits(seed=2)
    maps = torch.tensor([0.5, 0.3, 0.2])[None, :, None, None].expand(1, 3, 2, 3)
    local_cov = torch.zeros(1, 1, 2, 3)
    local_cov[..., 0, :] = 1.0  # local path only on the first row
    post_cov = torch.ones(1, 1, 2, 3)
    out = DSAF().fuse(g, loc, local_cov, post, post_cov, maps)
    pg, pl, pp = (torch.softmax(x, dim=1) for x in (g, loc, post))
    row0 = 0.5 * pg[..., 0, :] + 0.3 * pl[..., 0, :] + 0.2 * pp[..., 0, :]  # weights sum to 1
    row1 = (0.5 * pg[..., 1, :] + 0.2 * pp[..., 1, :]) / 0.7  # local absent: renormalise
    assert torch.allclose(out[..., 0, :].exp(), row0, atol=1e-6)
    assert torch.allclose(out[..., 1, :].exp(), row1, atol=1e-6)
    assert torch.allclose(torch.logsumexp(out, dim=1), torch.zeros(1, 2, 3), atol=1e-6)


def test_fusion_is_differentiable_end_to_end() -> None:
    dsaf = DSAF()
    g = branch_logits(h=8, w=8, seed=0).requires_grad_()
    loc = branch_logits(h=8, w=8, seed=1).requires_grad_()
    probs = torch.softmax(g, dim=1)
    boxes = [torch.tensor([[1.0, 1, 4, 4]])]
    sizes, amb = dsaf.target_features(probs, boxes)
    weights = dsaf(torch.tensor([[0.5, 0.3, 0.2]]), sizes, amb)
    maps = dsaf.weight_maps(weights.alpha_beta_gamma, boxes, weights.target_alpha_beta_gamma, 8, 8)
    cov = torch.zeros(1, 1, 8, 8)
    cov[..., 1:4, 1:4] = 1.0
    out = dsaf.fuse(g, loc, cov, torch.zeros_like(g), torch.zeros_like(cov), maps)
    torch.nn.functional.nll_loss(out, torch.zeros(1, 8, 8, dtype=torch.long)).backward()
    for t in (dsaf.a, dsaf.b, dsaf.c, g, loc):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("which", "message"),
    [
        ("local_logits", "local_logits must have the shape of global_logits"),
        ("local_coverage", r"local_coverage must be \[B, 1, H, W\]"),
        ("weight_maps", r"weight_maps must be \[B, 3, H, W\]"),
    ],
)
def test_fusion_rejects_mismatched_shapes(which: str, message: str) -> None:
    args = {
        "global_logits": branch_logits(),
        "local_logits": branch_logits(),
        "local_coverage": torch.zeros(1, 1, 2, 3),
        "post_logits": branch_logits(),
        "post_coverage": torch.zeros(1, 1, 2, 3),
        "weight_maps": torch.ones(1, 3, 2, 3),
    }
    args[which] = torch.zeros(1, 2, 5, 5)
    with pytest.raises(ValueError, match=message):
        DSAF().fuse(**args)


@pytest.mark.parametrize(
    ("init", "sizes", "message"),
    [
        (torch.ones(1, 2), [torch.zeros(1)], r"init_weights must be \[B, 3\]"),
        (torch.ones(2, 3), [torch.zeros(1)], "one \\[N\\] tensor per image \\(2\\)"),
    ],
)
def test_forward_rejects_bad_inputs(init: torch.Tensor, sizes: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DSAF()(init, sizes, [torch.zeros(1)])


def test_config_from_dict() -> None:
    assert from_dict(DSAFConfig, {"a_init": -20}).a_init == -20.0
    with pytest.raises(ConfigError, match="unknown config key 'a'"):
        from_dict(DSAFConfig, {"a": 1.0})


# ---------------------------------------------------- vectorised maps == the painting reference
def _reference_pixel_box(box, h, w):
    x1, y1, x2, y2 = (math.floor(float(v) + 0.5) for v in box)
    x1, y1 = min(max(0, x1), w - 1), min(max(0, y1), h - 1)
    return x1, y1, max(x1 + 1, min(w, x2)), max(y1 + 1, min(h, y2))


def _reference_weight_maps(image_w, boxes, target_w, h, w):
    """Paint each box's weights, largest first (stable), so smaller boxes win overlaps."""
    maps = image_w[:, :, None, None].expand(len(boxes), 3, h, w).clone()
    for i, bx in enumerate(boxes):
        rects = [_reference_pixel_box(b, h, w) for b in bx]
        order = sorted(
            range(len(rects)), key=lambda j: -(rects[j][2] - rects[j][0]) * (rects[j][3] - rects[j][1])
        )
        for j in order:
            x1, y1, x2, y2 = rects[j]
            maps[i, :, y1:y2, x1:x2] = target_w[i][j][:, None, None]
    return maps


def _reference_ambiguity(probs, bx, i):
    k, h, w = probs.shape[1:]
    impurity = (1 - probs[i].pow(2).sum(0)) / (1 - 1 / k)
    out = [impurity[y1:y2, x1:x2].mean() for x1, y1, x2, y2 in (_reference_pixel_box(b, h, w) for b in bx)]
    return torch.stack(out).clamp(0, 1) if out else torch.zeros(0)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("integer", [False, True])  # integer boxes: equal areas, ties in the order
def test_weight_maps_and_ambiguity_equal_the_per_box_reference(seed, integer):
    gen = torch.Generator().manual_seed(seed)
    h, w = 11, 19
    boxes = []
    for _ in range(2):
        n = int(torch.randint(0, 7, (1,), generator=gen))
        xy = torch.rand(n, 2, generator=gen) * torch.tensor([w + 4.0, h + 4.0]) - 2
        wh = torch.rand(n, 2, generator=gen) * 10
        if integer:
            xy, wh = xy.round(), wh.round()
        boxes.append(torch.cat([xy, xy + wh], 1))
    target_w = [torch.rand(len(b), 3, generator=gen, requires_grad=True) for b in boxes]
    image_w = torch.rand(2, 3, generator=gen, requires_grad=True)
    got = DSAF.weight_maps(image_w, boxes, target_w, h, w)
    want = _reference_weight_maps(image_w, boxes, target_w, h, w)
    assert torch.equal(got, want)
    weights = torch.randn(got.shape, generator=gen)
    leaves = [image_w, *(t for t in target_w if len(t))]
    g_got = torch.autograd.grad((got * weights).sum(), leaves)
    g_want = torch.autograd.grad((want * weights).sum(), leaves)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b)
    probs = torch.softmax(torch.randn(2, 5, h, w, generator=gen), 1)
    _, amb = DSAF().target_features(probs, boxes)
    for i, bx in enumerate(boxes):
        torch.testing.assert_close(amb[i], _reference_ambiguity(probs, bx, i), atol=1e-5, rtol=1e-5)
