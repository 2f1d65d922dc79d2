"""Scene complexity (paper eq. 5): indicators D, O, E, the score S and its categories."""

from __future__ import annotations

import math

import pytest
import torch

from damcseg_core.config import ConfigError, from_dict
from damcseg_core.models.scene_complexity import (
    SceneComplexityConfig,
    estimate_scene_complexity,
    initial_alpha_beta_gamma,
    scene_category,
)


def step_image(h: int, w: int, level: float = 1.0) -> torch.Tensor:
    """``[1, 3, h, w]``: black left half, ``level`` grey right half (one vertical edge)."""
    img = torch.zeros(1, 3, h, w)
    img[..., w // 2 :] = level
    return img


def flat_image(h: int = 64, w: int = 128) -> torch.Tensor:
    return torch.full((1, 3, h, w), 0.5)


def scene(image, boxes, scores=None, depth=None, cfg=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    scores = torch.ones(len(boxes)) if scores is None else torch.tensor(scores, dtype=torch.float32)
    return estimate_scene_complexity(image, [boxes], [scores], depth, cfg)


# ---------------------------------------------------------------- target density D
@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, 0.0),
        (1, 1 - math.exp(-0.1)),
        (3, 1 - math.exp(-0.3)),
        (10, 1 - math.exp(-1.0)),
        (30, 1 - math.exp(-3.0)),
    ],
)
def test_density_is_one_minus_exp_of_count_over_ten(n: int, expected: float) -> None:
    boxes = [[4 * i, 0, 4 * i + 2, 2] for i in range(n)]
    assert scene(flat_image(), boxes).D.item() == pytest.approx(expected, abs=1e-6)


def test_density_grows_with_target_count() -> None:
    values = [
        scene(flat_image(), [[4 * i, 0, 4 * i + 2, 2] for i in range(n)]).D.item() for n in (0, 1, 2, 5, 20)
    ]
    assert values == sorted(values) and len(set(values)) == 5


@pytest.mark.parametrize("factor", [2, 4])
def test_density_and_occlusion_do_not_depend_on_resolution(factor: int) -> None:
    boxes = [[0, 0, 40, 40], [20, 10, 60, 50], [70, 5, 90, 30]]
    small = scene(flat_image(64, 128), boxes)
    big = scene(flat_image(64 * factor, 128 * factor), [[v * factor for v in b] for b in boxes])
    assert big.D.item() == pytest.approx(small.D.item(), abs=1e-7)
    assert big.O.item() == pytest.approx(small.O.item(), abs=1e-7)


def test_low_scores_are_not_targets() -> None:
    res = scene(flat_image(), [[0, 0, 10, 10], [5, 5, 15, 15], [20, 0, 30, 10]], scores=[0.9, 0.29, 0.3])
    assert res.D.item() == pytest.approx(1 - math.exp(-0.2), abs=1e-6)
    assert res.O.item() == 0.0  # the overlapping box scored below 0.3
    assert res.box_occlusion[0].tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------- occlusion O
def depth_map(boxes_depths: list[tuple[list[int], float]], h: int = 64, w: int = 128) -> torch.Tensor:
    """Depth image: each box region filled with its depth, painted far to near."""
    d = torch.zeros(1, 1, h, w)
    for (x1, y1, x2, y2), z in sorted(boxes_depths, key=lambda t: -t[1]):
        d[..., y1:y2, x1:x2] = z
    return d


def test_occlusion_of_two_boxes_with_depth_is_the_covered_share() -> None:
    far, near = [0, 0, 40, 40], [30, 10, 50, 30]  # 1600 and 400 pixels, overlap 10 x 20 = 200
    res = scene(flat_image(), [far, near], depth=depth_map([(far, 20.0), (near, 5.0)]))
    assert res.O.item() == pytest.approx(200 / 2000)
    # The far box loses 200 of its 1600 pixels, the near one nothing.
    assert res.box_occlusion[0].tolist() == pytest.approx([200 / 1600, 0.0])


def test_occlusion_order_follows_depth_not_box_order() -> None:
    far, near = [0, 0, 40, 40], [30, 10, 50, 30]
    res = scene(flat_image(), [far, near], depth=depth_map([(far, 2.0), (near, 9.0)]))
    assert res.box_occlusion[0].tolist() == pytest.approx([0.0, 200 / 400])


def test_occlusion_counts_pixels_covered_by_two_nearer_boxes_once() -> None:
    # Far target T, middle B to its right, small near C straddling both. Each box keeps a majority
    # of its own depth, so its median depth is its own.
    t, b, c = [0, 0, 40, 40], [30, 0, 70, 40], [25, 10, 45, 30]
    res = scene(flat_image(), [t, b, c], depth=depth_map([(t, 30.0), (b, 20.0), (c, 10.0)]))
    # C: nothing nearer. B: C covers x 30..45, y 10..30 = 300. T: B covers x 30..40 (400), C adds
    # x 25..30, y 10..30 (100); x 30..40, y 10..30 lies under both and is counted once -> 500.
    assert res.box_occlusion[0].tolist() == pytest.approx([500 / 1600, 300 / 1600, 0.0])
    assert res.O.item() == pytest.approx(800 / 3600)


def test_without_depth_the_lower_bottom_edge_is_nearer() -> None:
    high, low = [0, 0, 40, 30], [20, 10, 60, 50]  # low box reaches further down the image -> nearer
    res = scene(flat_image(), [high, low])
    overlap = 20 * 20
    assert res.box_occlusion[0].tolist() == pytest.approx([overlap / 1200, 0.0])
    assert res.O.item() == pytest.approx(overlap / (1200 + 1600))


def test_boxes_without_valid_depth_count_as_farthest() -> None:
    a, b = [0, 0, 40, 40], [30, 10, 50, 30]
    depth = torch.zeros(1, 1, 64, 128)  # 0 = invalid
    depth[..., 10:30, 40:50] = 8.0  # only b's part outside a has depth; a has none at all
    res = scene(flat_image(), [a, b], depth=depth)
    # a's lower bottom edge would make it nearer without depth; with depth it is the farthest.
    assert res.box_occlusion[0].tolist() == pytest.approx([200 / 1600, 0.0])


# ---------------------------------------------------------------- edge density E
@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (step_image(64, 128), (64 / (64 * 128)) / 0.2),  # one full-height edge column
        (step_image(64, 128, level=60 / 255), (64 / (64 * 128)) / 0.2),  # 60 grey levels is still an edge
        (step_image(64, 128, level=20 / 255), 0.0),  # below the Canny thresholds
        (flat_image(), 0.0),
    ],
)
def test_edge_density_of_synthetic_images(image: torch.Tensor, expected: float) -> None:
    assert scene(image, []).E.item() == pytest.approx(expected, rel=1e-5)


def test_edge_density_of_a_rectangle_is_its_perimeter() -> None:
    img = torch.zeros(1, 3, 64, 128)
    img[..., 16:48, 32:96] = 1.0
    perimeter = 2 * (32 + 64) - 4
    assert scene(img, []).E.item() == pytest.approx(perimeter / (64 * 128) / 0.2, rel=1e-5)


def test_edge_density_saturates_at_one() -> None:
    stripes = ((torch.arange(128) // 4) % 2).float()  # 31 vertical edges: raw 31 / 128 > 0.2
    assert scene(stripes.expand(1, 3, 64, 128), []).E.item() == 1.0


def test_edge_density_is_stable_above_the_work_height() -> None:
    assert scene(step_image(512, 1024), []).E.item() == pytest.approx(
        scene(step_image(256, 512), []).E.item()
    )


def test_box_edge_density_measures_edges_inside_each_box() -> None:
    res = scene(step_image(64, 128), [[54, 0, 74, 64], [0, 0, 20, 64]])
    # The edge column lies inside the first box (20 x 64 pixels, 64 on the edge), not the second.
    assert res.box_edge_density[0].tolist() == pytest.approx([min(1.0, (64 / (20 * 64)) / 0.2), 0.0])


# ---------------------------------------------------------------- S and categories
@pytest.mark.parametrize(
    ("n_boxes", "image", "e_raw"),
    [(0, flat_image(), 0.0), (3, step_image(64, 128), 64 / 8192), (12, step_image(64, 128), 64 / 8192)],
)
def test_score_is_eq5_weighted_sum(n_boxes: int, image: torch.Tensor, e_raw: float) -> None:
    boxes = [[10 * i, 0, 10 * i + 5, 5] for i in range(n_boxes)]
    res = scene(image, boxes)
    d = 1 - math.exp(-n_boxes / 10)
    e = e_raw / 0.2
    assert res.D.item() == pytest.approx(d, abs=1e-6)
    assert res.O.item() == 0.0
    assert res.E.item() == pytest.approx(e, rel=1e-5)
    assert res.S.item() == pytest.approx(0.4 * d + 0.3 * 0.0 + 0.3 * e, abs=1e-6)


def test_score_with_all_three_indicators() -> None:
    t, b = [0, 0, 40, 40], [30, 10, 50, 30]
    res = scene(step_image(64, 128), [t, b], depth=depth_map([(t, 20.0), (b, 5.0)]))
    expected = 0.4 * (1 - math.exp(-0.2)) + 0.3 * (200 / 2000) + 0.3 * (64 / 8192 / 0.2)
    assert res.S.item() == pytest.approx(expected, abs=1e-6)
    assert res.category.tolist() == [0]


@pytest.mark.parametrize(
    ("s", "category"),
    [(0.0, 0), (0.2999, 0), (0.3, 1), (0.5, 1), (0.7, 1), (0.7001, 2), (1.0, 2)],
)
def test_category_boundaries_are_inclusive_for_moderate(s: float, category: int) -> None:
    assert scene_category(torch.tensor([s])).tolist() == [category]


@pytest.mark.parametrize(
    ("category", "weights"),
    [(0, [0.6, 0.2, 0.1]), (1, [0.5, 0.3, 0.2]), (2, [0.4, 0.4, 0.3])],
)
def test_initial_branch_weights_follow_the_paper_table(category: int, weights: list[float]) -> None:
    out = initial_alpha_beta_gamma(torch.tensor([category, category]))
    assert out.shape == (2, 3) and out.dtype == torch.float32
    assert out[0].tolist() == pytest.approx(weights)


def test_initial_branch_weights_reject_unknown_category() -> None:
    with pytest.raises(ValueError, match=r"categories must be 0 \(simple\).*got \[3\]"):
        initial_alpha_beta_gamma(torch.tensor([3]))


def test_batch_gives_one_value_per_image() -> None:
    images = torch.cat([flat_image(), step_image(64, 128)])
    res = estimate_scene_complexity(
        images, [torch.zeros(0, 4), torch.tensor([[0.0, 0, 8, 8]])], [torch.zeros(0), torch.ones(1)]
    )
    assert res.S.shape == res.D.shape == res.O.shape == res.E.shape == res.category.shape == (2,)
    assert res.D.tolist() == pytest.approx([0.0, 1 - math.exp(-0.1)])


# ---------------------------------------------------------------- config and errors
def test_config_from_dict_rejects_unknown_keys() -> None:
    assert from_dict(SceneComplexityConfig, {"edge_ref": 0.1}).edge_ref == 0.1
    with pytest.raises(ConfigError, match=r"unknown config key 'edge_reff'\. Did you mean 'edge_ref'"):
        from_dict(SceneComplexityConfig, {"edge_reff": 0.1})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"simple_below": 0.8}, "need 0 <= simple_below <= complex_above <= 1"),
        ({"density_ref_count": 0}, "density_ref_count must be > 0"),
        ({"canny_low": 300}, "need 0 <= canny_low <= canny_high"),
    ],
)
def test_config_rejects_bad_values(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(SceneComplexityConfig, values)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image": torch.zeros(3, 8, 8)}, r"image must be \[B, C, H, W\]"),
        ({"boxes": []}, "one tensor per image"),
        ({"depth": torch.zeros(1, 1, 4, 4)}, "resize it to the image size"),
        ({"scores": [torch.ones(2)]}, "1 boxes but 2 scores"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs: dict, message: str) -> None:
    args = {"image": flat_image(8, 8), "boxes": [torch.zeros(1, 4)], "scores": [torch.ones(1)], "depth": None}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        estimate_scene_complexity(**args)
