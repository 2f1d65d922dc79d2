"""The synthetic world: geometry, labels, masks, occlusion, conditions, difficulty, coherence."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from damcseg_core.config import ConfigError, from_dict
from damcseg_core.data.classes import DETECTION_TRAIN_IDS, IGNORE_INDEX
from damcseg_core.data.synthetic import (
    SyntheticDrive,
    SyntheticWorldConfig,
    camera_intrinsics,
    kelvin_counts,
)

H, W = 128, 256
ARRAYS = ("rgb", "depth", "thermal", "semantic", "instance", "boxes", "labels", "occlusion",
          "visible_masks", "amodal_masks", "track_ids")  # fmt: skip


def drive(seed: int = 0, crowd: float = 1.0, size: tuple[int, int] = (H, W), **kw) -> SyntheticDrive:
    return SyntheticDrive(SyntheticWorldConfig(size=size, seed=seed, crowd=(crowd, crowd), **kw))


@pytest.fixture(scope="module")
def crowded() -> list:
    """Crowded frames of three drives (the geometry tests check every object in them)."""
    return [drive(seed).frame(12) for seed in (0, 1, 2)]


# ---------------------------------------------------------------------------------------------
# Camera and config


def test_intrinsics_follow_the_documented_formula():
    k = camera_intrinsics(256, 512)
    np.testing.assert_allclose(k, [[256.0, 0, 255.5], [0, 256.0, 127.5], [0, 0, 1]])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"conditions": ["rain"]}, "conditions must be a non-empty selection"),
        ({"crowd": [0.8, 0.2]}, "lo <= hi"),
        ({"ego_speed": 1.0}, "ego_speed must be in [5, 30]"),
        ({"size": [8, 8]}, "at least 16x16"),
        ({"condition_schedule": [[10, "day"], [5, "night"]]}, "increasing"),
        ({"sped": 3}, "Did you mean 'seed'"),
    ],
)
def test_bad_world_config_names_the_fix(data, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_dict(SyntheticWorldConfig, data)


def test_thermal_counts_are_hundred_times_kelvin():
    np.testing.assert_allclose(kelvin_counts(np.array([34.0, -40.0, 0.0])), [30715.0, 23315.0, 27315.0])


# ---------------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("field", ARRAYS)
def test_same_seed_gives_bit_identical_arrays(field):
    a, b = drive(5).frame(7), drive(5).frame(7)
    assert getattr(a, field).dtype == getattr(b, field).dtype
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_frames_do_not_depend_on_render_order():
    d = drive(5)
    later = d.frame(9)
    d.frame(3)
    np.testing.assert_array_equal(drive(5).frame(9).rgb, later.rgb)


@pytest.mark.parametrize("field", ["rgb", "semantic", "depth"])
def test_other_seed_gives_other_scene(field):
    assert not np.array_equal(getattr(drive(5).frame(7), field), getattr(drive(6).frame(7), field))


# ---------------------------------------------------------------------------------------------
# Objects: masks, boxes, occlusion, instance map


def test_frame_dtypes_and_shapes(crowded):
    f = crowded[0]
    n = len(f.labels)
    assert n > 0
    assert (f.rgb.shape, f.rgb.dtype) == ((H, W, 3), np.uint8)
    assert (f.depth.shape, f.depth.dtype) == ((H, W), np.float32)
    assert (f.thermal.shape, f.thermal.dtype) == ((H, W), np.uint16)
    assert (f.semantic.shape, f.semantic.dtype) == ((H, W), np.uint8)
    assert (f.instance.shape, f.instance.dtype) == ((H, W), np.int32)
    assert (f.boxes.shape, f.boxes.dtype) == ((n, 4), np.float32)
    assert (f.labels.dtype, f.occlusion.dtype) == (np.int64, np.float32)
    assert f.visible_masks.shape == f.amodal_masks.shape == (n, H, W)


@pytest.mark.parametrize("scene", [0, 1, 2])
def test_boxes_enclose_exactly_the_visible_pixels(crowded, scene):
    f = crowded[scene]
    for k, mask in enumerate(f.visible_masks):
        ys, xs = np.nonzero(mask)
        expected = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        np.testing.assert_array_equal(f.boxes[k], expected, err_msg=f"object {k}")


@pytest.mark.parametrize("scene", [0, 1, 2])
def test_occlusion_is_one_minus_visible_over_amodal(crowded, scene):
    f = crowded[scene]
    vis = f.visible_masks.sum((1, 2))
    amo = f.amodal_masks.sum((1, 2))
    assert (vis >= 1).all(), "objects without a visible pixel must be dropped"
    assert not (f.visible_masks & ~f.amodal_masks).any(), "visible pixels lie inside the amodal mask"
    np.testing.assert_allclose(f.occlusion, 1.0 - vis / amo, atol=1e-6)
    np.testing.assert_array_equal(f.areas, vis.astype(np.float32))


@pytest.mark.parametrize("scene", [0, 1, 2])
def test_instance_map_matches_visible_masks_and_semantics(crowded, scene):
    f = crowded[scene]
    expected = np.zeros((H, W), np.int32)
    for k, mask in enumerate(f.visible_masks):
        expected[mask] = k + 1
    np.testing.assert_array_equal(f.instance, expected)
    assert set(f.labels.tolist()) <= set(DETECTION_TRAIN_IDS)
    for k, mask in enumerate(f.visible_masks):
        assert (f.semantic[mask] == f.labels[k]).all(), f"object {k}"


@pytest.mark.parametrize("scene", [0, 1, 2])
def test_occluders_are_nearer_in_the_depth_map(crowded, scene):
    """Where an object's amodal mask is covered by another object, the coverer is nearer."""
    f = crowded[scene]
    d = drive((0, 1, 2)[scene])
    clean = dataclasses.replace(d.config, depth_dropout=0.0)
    f_clean = SyntheticDrive(clean).frame(12)
    for k in np.argsort(-f.occlusion)[:5]:
        hidden = f.amodal_masks[k] & (f.instance > 0) & ~f.visible_masks[k]
        if not hidden.any():
            continue
        own = np.median(f_clean.depth[f.visible_masks[k] & (f_clean.depth > 0)])
        cover = np.median(f_clean.depth[hidden & (f_clean.depth > 0)])
        assert cover < own + 0.5


# ---------------------------------------------------------------------------------------------
# Depth


def test_sky_is_invalid_depth_and_road_matches_ground_geometry():
    f = SyntheticDrive(SyntheticWorldConfig(size=(H, W), seed=3, crowd=(0.0, 0.0), depth_dropout=0.0)).frame(
        0
    )
    sky = f.semantic == 10
    assert sky.sum() > 100
    assert (f.depth[sky] == 0).all()
    k = f.intrinsics
    rows = np.arange(H)[:, None].repeat(W, 1)
    road = (f.semantic == 0) & (f.depth > 0) & (rows > k[1, 2] + 20)
    expected = 1.5 * k[1, 1] / (rows - k[1, 2])
    rel = np.abs(f.depth[road] - expected[road]) / expected[road]
    assert np.median(rel) < 0.02
    assert f.depth.max() <= 80.0 * 1.3  # range limit applies to the true depth; noise on top


def _road_depth_error(f, lo: float, hi: float) -> np.ndarray:
    """Depth minus the exact ground-plane depth on valid road pixels between lo and hi metres."""
    k = f.intrinsics
    rows = np.arange(H, dtype=np.float64)[:, None].repeat(W, 1)
    with np.errstate(divide="ignore"):
        truth = np.where(rows > k[1, 2], 1.5 * k[1, 1] / (rows - k[1, 2]), np.inf)
    band = (f.semantic == 0) & (f.depth > 0) & (truth > lo) & (truth < hi)
    return (f.depth - truth)[band]


def test_depth_noise_grows_with_distance():
    f = drive(3, crowd=0.0, depth_dropout=0.0).frame(0)
    near, far = _road_depth_error(f, 3.0, 6.0), _road_depth_error(f, 20.0, 40.0)
    assert near.size > 200 and far.size > 50
    assert near.std() < 0.1
    assert far.std() > 5 * near.std()


def test_fog_depth_is_noisier():
    d = drive(3, crowd=0.0, depth_dropout=0.0)
    day, fog = (_road_depth_error(d.frame(0, condition=c), 5.0, 15.0) for c in ("day", "fog"))
    assert fog.std() > 2 * day.std()


def test_depth_has_dropouts_and_range_limit():
    f = drive(3, crowd=0.0, max_depth=30.0, depth_dropout=0.05).frame(0)
    ground = np.isin(f.semantic, [0, 1, 2, 8, 9])
    frac = (f.depth[ground] == 0).mean()
    assert 0.05 <= frac < 0.9
    assert f.depth.max() < 30.0 * 1.5


# ---------------------------------------------------------------------------------------------
# Conditions


@pytest.fixture(scope="module")
def same_scene() -> dict:
    d = drive(4, crowd=0.8)
    return {c: d.frame(20, condition=c) for c in ("day", "dusk", "night", "fog")}


def _luma(rgb: np.ndarray) -> float:
    return float((rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).mean())


@pytest.mark.parametrize(("cond", "max_ratio"), [("night", 0.35), ("dusk", 0.8)])
def test_dark_conditions_darken_rgb_only(same_scene, cond, max_ratio):
    day, other = same_scene["day"], same_scene[cond]
    assert _luma(other.rgb) < max_ratio * _luma(day.rgb)
    np.testing.assert_array_equal(other.semantic, day.semantic)
    np.testing.assert_array_equal(other.boxes, day.boxes)


@pytest.mark.parametrize("cond", ["dusk", "night", "fog"])
def test_object_temperatures_do_not_depend_on_condition(same_scene, cond):
    day, other = same_scene["day"], same_scene[cond]
    people = (day.instance > 0) & np.isin(day.semantic, [11, 12])
    objects = day.instance > 0
    assert people.sum() > 20
    np.testing.assert_array_equal(other.thermal[objects], day.thermal[objects])
    skin = np.abs(day.thermal[people].astype(np.float32) - kelvin_counts(34.0)) < 30
    assert skin.sum() > 0  # heads at about 34 C


def _near_far_road_ratio(frame, depth: np.ndarray) -> float:
    luma = frame.rgb.astype(np.float32).mean(2)
    road = (frame.semantic == 0) & (depth > 0)
    near = luma[road & (depth > 3.0) & (depth < 10.0)].mean()
    far = luma[road & (depth > 30.0) & (depth < 60.0)].mean()
    return float(near / far)


def test_night_headlights_light_the_near_road(same_scene):
    """By day the road is evenly lit; at night the ego headlights make the near road brighter."""
    d = same_scene["day"].depth
    assert _near_far_road_ratio(same_scene["day"], d) < 1.3
    assert _near_far_road_ratio(same_scene["night"], d) > 1.8


def test_road_is_colder_at_night(same_scene):
    road = same_scene["day"].semantic == 0
    day = same_scene["day"].thermal[road].astype(np.float32).mean()
    night = same_scene["night"].thermal[road].astype(np.float32).mean()
    assert day - night > 1500  # > 15 K


def test_fog_attenuates_contrast_with_distance(same_scene):
    """RGB distance to the fog colour shrinks as exp(-beta * d): strongly far, mildly near."""
    day, fog = same_scene["day"], same_scene["fog"]
    fog_rgb = np.array([0.75, 0.77, 0.8]) * 255
    d = day.depth
    ratios = []
    for lo, hi in ((2.0, 8.0), (30.0, 60.0)):
        band = (d > lo) & (d < hi)
        num = np.abs(fog.rgb[band] - fog_rgb).mean()
        den = np.abs(day.rgb[band] - fog_rgb).mean()
        ratios.append(num / den)
    near, far = ratios
    assert near > 0.6
    assert far < 0.35
    assert near > 2 * far


def test_fog_invalidates_depth_beyond_visibility(same_scene):
    day, fog = same_scene["day"], same_scene["fog"]
    beyond = day.depth > 45.0 + 15.0
    assert beyond.sum() > 50
    assert (fog.depth[beyond] == 0).all()


# ---------------------------------------------------------------------------------------------
# Difficulty


@pytest.fixture(scope="module")
def full_size_crowded() -> list:
    return [drive(seed, size=(256, 512)).frame(0) for seed in (0, 1)]


@pytest.mark.parametrize("scene", [0, 1])
def test_crowded_scenes_have_tiny_small_and_heavily_occluded_objects(full_size_crowded, scene):
    f = full_size_crowded[scene]
    assert (f.areas < 100).sum() >= 3  # tiny-target recall cases
    assert ((f.areas >= 100) & (f.areas < 1024)).sum() >= 3  # small-object cases
    assert (f.occlusion > 0.5).sum() >= 3  # occluded-recall cases
    assert {11, 13} <= set(f.labels.tolist())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_empty_road_has_no_traffic_or_people(seed):
    f = drive(seed, crowd=0.0).frame(0)
    assert not np.isin(f.labels, [11, 12, 13, 14, 15, 18]).any()
    assert len(f.labels) <= 6  # at most a few signs / traffic lights


@pytest.mark.parametrize("seed", [0, 1])
def test_crowd_schedule_changes_density_along_the_drive(seed):
    cfg = SyntheticWorldConfig(size=(H, W), seed=seed, crowd_schedule=[(0, 0.0), (150, 1.0)])
    d = SyntheticDrive(cfg)
    empty, busy = d.frame(0), d.frame(250)
    assert (empty.crowd, busy.crowd) == (0.0, 1.0)
    assert len(busy.labels) > len(empty.labels) + 5


def test_condition_schedule_and_stamps():
    cfg = SyntheticWorldConfig(
        size=(32, 64), condition_schedule=[(0, "day"), (3, "night"), (5, "fog")], fps=20.0
    )
    d = SyntheticDrive(cfg)
    frames = list(d.frames(6))
    assert [f.condition for f in frames] == ["day", "day", "day", "night", "night", "fog"]
    assert [f.stamp_ns - frames[0].stamp_ns for f in frames[:3]] == [0, 50_000_000, 100_000_000]
    assert [f.frame_index for f in frames] == list(range(6))


def test_unknown_condition_override_is_rejected():
    with pytest.raises(ValueError, match="condition must be one of"):
        drive(0).frame(0, condition="snow")


# ---------------------------------------------------------------------------------------------
# Temporal coherence


@pytest.mark.parametrize("start", [0, 40])
def test_objects_persist_and_move_a_little_between_frames(start):
    d = drive(8, crowd=0.8)
    a, b = d.frame(start), d.frame(start + 1)
    big = {int(t): k for k, t in enumerate(a.track_ids) if a.areas[k] > 150 and a.occlusion[k] < 0.2}
    assert len(big) >= 3
    b_rows = {int(t): k for k, t in enumerate(b.track_ids)}
    persisted = [t for t in big if t in b_rows]
    assert len(persisted) >= 0.8 * len(big)
    shifts = []
    for t in persisted:
        ca = a.boxes[big[t]].reshape(2, 2).mean(0)
        cb = b.boxes[b_rows[t]].reshape(2, 2).mean(0)
        shifts.append(np.abs(cb - ca).max())
    assert max(shifts) < 0.15 * W  # no teleporting
    assert max(shifts) > 0.5  # but things move (ego motion at 10 m/s)


def test_labels_ignore_only_the_ego_bonnet():
    f = drive(0).frame(0)
    ignore = f.semantic == IGNORE_INDEX
    assert ignore.any()
    assert ignore[: H // 2].sum() == 0  # the bonnet is at the bottom
    assert (f.depth[ignore] < 3.0).all()
