"""Lightweight mean-field CRF (paper Sec. III.E.1): denoising, edges, kernel size, iterations, cost."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from damcseg_core.config import ConfigError, from_dict
from damcseg_core.models.crf import CRFConfig, MeanFieldCRF

K, H, W = 4, 32, 64


def two_regions() -> tuple[torch.Tensor, torch.Tensor]:
    """Clean labels (class 0 left, class 1 right) and a guide image with a sharp edge between them."""
    clean = torch.zeros(H, W, dtype=torch.long)
    clean[:, W // 2 :] = 1
    guide = torch.zeros(1, 3, H, W)
    guide[..., W // 2 :] = 1.0
    return clean, guide


def one_hot_logits(labels: torch.Tensor, strength: float = 2.0) -> torch.Tensor:
    return F.one_hot(labels, K).permute(2, 0, 1)[None].float() * strength


def salt_noise(clean: torch.Tensor, rate: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    flip = torch.rand(clean.shape, generator=g) < rate
    return torch.where(flip, torch.randint(0, K, clean.shape, generator=g), clean)


@pytest.mark.parametrize("scene_score", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_crf_removes_isolated_label_noise(scene_score: float, seed: int) -> None:
    clean, guide = two_regions()
    noisy = salt_noise(clean, 0.15, seed)
    logits = one_hot_logits(noisy)
    out = MeanFieldCRF()(logits, guide, torch.tensor([scene_score]))
    before = (logits.argmax(1)[0] == clean).float().mean().item()
    after = (out.argmax(1)[0] == clean).float().mean().item()
    assert before < 0.9
    assert after > 0.985


def test_crf_does_not_bleed_labels_across_a_sharp_image_edge() -> None:
    clean, guide = two_regions()
    unary = torch.zeros(1, K, H, W)
    unary[0, 0, :, : W // 2] = 4.0  # confident left region
    unary[0, 1, :, W // 2 :] = 0.4  # weak right region: easily overrun by smoothing alone
    crf = MeanFieldCRF()
    with_edge = crf(unary, guide, torch.tensor([1.0])).argmax(1)[0]
    flat_guide = crf(unary, torch.full_like(guide, 0.5), torch.tensor([1.0])).argmax(1)[0]
    assert torch.equal(with_edge, clean)
    # Without the edge in the guide the strong left label spreads into the right region.
    assert int((flat_guide != clean).sum()) >= H


@pytest.mark.parametrize(
    ("scene_score", "kernel"),
    [(0.0, 3), (0.2, 3), (0.25, 5), (0.5, 5), (0.74, 5), (0.75, 7), (1.0, 7)],
)
def test_kernel_size_grows_with_scene_complexity(scene_score: float, kernel: int) -> None:
    assert MeanFieldCRF().kernel_size(torch.tensor([scene_score])).tolist() == [kernel]


@pytest.mark.parametrize(("scene_score", "radius"), [(0.1, 1), (0.5, 2), (0.9, 3)])
def test_message_reaches_exactly_the_kernel_radius(scene_score: float, radius: int) -> None:
    # One iteration at full resolution: a single confident pixel influences its neighbours up to r.
    crf = MeanFieldCRF(iterations=1, scale=1)
    unary = torch.zeros(1, K, H, W)
    unary[0, 1, 16, 20] = 5.0
    out = crf(unary, torch.full((1, 3, H, W), 0.5), torch.tensor([scene_score]))
    preference = (out[0, 1] - out[0, 0]) - (unary[0, 1] - unary[0, 0])  # class 1 vs class 0 message
    row = (preference[16].abs() > 1e-4).nonzero().flatten().tolist()
    assert row == [c for c in range(20 - radius, 20 + radius + 1) if c != 20]


def test_batch_images_use_their_own_kernel() -> None:
    crf = MeanFieldCRF(iterations=1, scale=1)
    unary = torch.zeros(2, K, H, W)
    unary[:, 1, 16, 20] = 5.0
    out = crf(unary, torch.full((2, 3, H, W), 0.5), torch.tensor([0.1, 0.9]))
    single = crf(unary[1:], torch.full((1, 3, H, W), 0.5), torch.tensor([0.9]))
    assert torch.allclose(out[1:], single, atol=1e-6)
    preference = (out[0, 1] - out[0, 0]) - (unary[0, 1] - unary[0, 0])
    assert (preference[16].abs() > 1e-4).nonzero().flatten().tolist() == [19, 21]  # radius 1


@pytest.mark.parametrize(("iterations", "expected"), [(None, 3), (1, 1), (5, 5)])
def test_runs_the_configured_number_of_mean_field_iterations(
    monkeypatch: pytest.MonkeyPatch, iterations: int | None, expected: int
) -> None:
    crf = MeanFieldCRF() if iterations is None else MeanFieldCRF(iterations=iterations)
    calls = []
    original = crf.message

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(crf, "message", counting)
    clean, guide = two_regions()
    crf(one_hot_logits(clean), guide, torch.tensor([0.5]))
    assert len(calls) == expected


def test_crf_is_differentiable_in_logits_and_pairwise_weights() -> None:
    clean, guide = two_regions()
    logits = one_hot_logits(salt_noise(clean, 0.1, 0)).requires_grad_()
    crf = MeanFieldCRF()
    out = crf(logits, guide, torch.tensor([0.6]))
    F.cross_entropy(out, clean[None]).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert crf.raw_weights.grad is not None and bool((crf.raw_weights.grad != 0).all())


def test_fixed_weights_are_not_parameters() -> None:
    crf = MeanFieldCRF(learnable=False, smoothness_weight=2.0, appearance_weight=0.5)
    assert list(crf.parameters()) == []
    w_s, w_a = crf.pairwise_weights()
    assert (w_s.item(), w_a.item()) == pytest.approx((2.0, 0.5))


def test_output_keeps_shape_for_odd_sizes_and_gray_guides() -> None:
    out = MeanFieldCRF()(torch.randn(1, 19, 33, 47), torch.rand(1, 1, 33, 47), torch.tensor([0.4]))
    assert out.shape == (1, 19, 33, 47) and torch.isfinite(out).all()


def test_from_config_matches_constructor() -> None:
    cfg = from_dict(CRFConfig, {"iterations": 2, "max_kernel": 5, "scale": 1})
    crf = MeanFieldCRF.from_config(cfg)
    assert crf.iterations == 2 and crf.cfg == cfg
    assert crf.kernel_size(torch.tensor([1.0])).tolist() == [5]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"iterations": 0}, "iterations must be >= 1"),
        ({"min_kernel": 4}, "must be odd"),
        ({"sigma_color": 0.0}, "sigma_color must be > 0"),
        ({"scale": 0}, "scale must be >= 1"),
        ({"iteration": 3}, "Did you mean 'iterations'"),
    ],
)
def test_config_rejects_bad_values(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(CRFConfig, values)


@pytest.mark.parametrize(
    ("guide", "scores", "message"),
    [
        (torch.rand(1, 3, 8, 8), torch.tensor([0.5]), r"guide must be \[B, 3, H, W\]"),
        (torch.rand(1, 3, H, W), torch.tensor([0.5, 0.2]), r"one scene score per image"),
    ],
)
def test_bad_inputs_raise_clear_errors(guide: torch.Tensor, scores: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MeanFieldCRF()(torch.zeros(1, K, H, W), guide, scores)


def test_joint_upsampling_is_bilinear_on_a_flat_guide_and_fast_path_matches_general() -> None:
    crf = MeanFieldCRF()
    gen = torch.Generator().manual_seed(3)
    msg = torch.randn(2, 5, 8, 12, generator=gen)
    flat_low, flat_high = torch.full((2, 3, 8, 12), 0.3), torch.full((2, 3, 16, 24), 0.3)
    base = torch.zeros(2, 5, 16, 24)
    up = crf._joint_upsample(msg, flat_low, flat_high, base)
    torch.testing.assert_close(up, F.interpolate(msg, size=(16, 24), mode="bilinear", align_corners=False))
    guide_low, guide_high = torch.rand(2, 3, 8, 12, generator=gen), torch.rand(2, 3, 16, 24, generator=gen)
    mid = F.interpolate(guide_high, size=(8, 24), mode="bilinear", align_corners=False)
    fast = crf._upsample2_axis(crf._upsample2_axis(msg, guide_low, mid, 3), mid, guide_high, 2)
    general = crf._upsample_axis(crf._upsample_axis(msg, guide_low, mid, 3), mid, guide_high, 2)
    torch.testing.assert_close(fast, general)
