"""Sensor models of the synthetic world: lidar, stereo, realistic thermal, and ideal unchanged."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np
import pytest

from damcseg_core.config import ConfigError
from damcseg_core.data.demo_drive import demo_drive_frames
from damcseg_core.data.registry import build_dataset
from damcseg_core.data.synthetic import (
    LidarModel,
    StereoModel,
    SyntheticDataset,
    SyntheticDrive,
    SyntheticFolderDataset,
    SyntheticWorldConfig,
    kelvin_counts,
    write_synthetic_folder,
)

SIZE = (256, 512)
SKY, ROAD, POLE, SIGN, PERSON = 10, 0, 5, 7, 11

# Digests (first 16 hex digits of sha256 over dtype, shape and bytes of every frame) computed with
# the renderer *before* the sensor models were added (commit a9943e9); `ideal` must keep them.
IDEAL_DIGESTS = {
    "drive": {"rgb": "a6b1b1bcf09966ce", "depth": "aade4f07ecd821b9", "thermal": "69ff4c52b795a258",
              "semantic": "bdcc3ed1136a8ac1", "instance": "bc4121630cc41091", "boxes": "fbf863499f20508d"},
    "dataset": {"rgb": "82ee50141aae24b1", "depth": "fed9de5c34720593", "thermal": "e068f4a311658fd7",
                "semantic": "8d947eadf4733e4d", "instance": "7cfd4ec3c50a9f85", "boxes": "80fafa08bca70a5f"},
    "demo": {"rgb": "aa7fc5e15dc7df3a", "depth": "b84d5c411ea505e2", "thermal": "c5139fc18be7d201",
             "semantic": "a70f8d72e67b6d6d", "instance": "86fdc139da727754", "boxes": "b0638a22db6e56b4"},
}  # fmt: skip


def _ideal_frames(name: str) -> list:
    if name == "drive":
        d = SyntheticDrive(SyntheticWorldConfig(size=(64, 128), seed=7, crowd=(0.8, 0.8)))
        return [d.frame(i, condition=c) for i, c in zip((0, 5, 30, 31), ("day", "dusk", "night", "fog"))]
    if name == "dataset":
        ds = SyntheticDataset(4, seed=2024, size=(64, 128))
        return [ds.frame(i) for i in range(4)]
    return list(demo_drive_frames(1.0, 4.0, (48, 96), seed=3))


def _digest(frames: list, field: str) -> str:
    h = hashlib.sha256()
    for f in frames:
        a = np.ascontiguousarray(getattr(f, field))
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(IDEAL_DIGESTS))
def test_ideal_sensors_are_bit_identical_to_the_renderer_before_the_models(name):
    frames = _ideal_frames(name)
    assert {k: _digest(frames, k) for k in IDEAL_DIGESTS[name]} == IDEAL_DIGESTS[name]
    assert {(f.depth_model, f.thermal_model) for f in frames} == {("ideal", "ideal")}


def _drive(depth="ideal", thermal="ideal", seed=3, crowd=0.5, **kw) -> SyntheticDrive:
    return SyntheticDrive(
        SyntheticWorldConfig(
            size=SIZE, seed=seed, crowd=(crowd, crowd), depth_model=depth, thermal_model=thermal, **kw
        )
    )


@pytest.fixture(scope="module")
def scene():
    """One crowded scene (seed 3, frame 10) by day and at night under every sensor model."""
    out = {}
    for cond in ("day", "night", "fog"):
        for depth, thermal in (("ideal", "ideal"), ("lidar", "realistic"), ("stereo", "ideal")):
            out[cond, depth] = _drive(depth, thermal).frame(10, condition=cond)
    return out


def _ground_truth(frame) -> np.ndarray:
    """Exact z-depth of the road plane per pixel (0 where the pixel is not road)."""
    k = frame.intrinsics
    rows = np.arange(frame.depth.shape[0], dtype=np.float64)[:, None]
    dy = (rows - k[1, 2]) / k[1, 1]
    with np.errstate(divide="ignore"):
        z = np.where(dy > 0, 1.5 / dy, 0.0)
    return np.where(frame.semantic == ROAD, z, 0.0) * np.ones_like(frame.depth, dtype=np.float64)


# ---- lidar ------------------------------------------------------------------------------------


def test_lidar_is_sparse_a_few_percent_of_pixels(scene):
    frac = (scene["day", "lidar"].depth > 0).mean()
    assert 0.02 < frac < 0.08
    assert (scene["day", "stereo"].depth > 0).mean() > 0.4  # stereo is the dense one


def test_lidar_returns_lie_on_the_projected_beam_rows(scene):
    f = scene["day", "lidar"]
    k = f.intrinsics
    fpx, cx, cy = k[0, 0], k[0, 2], k[1, 2]
    v, u = np.nonzero(f.depth > 0)
    phi = np.arctan((u - cx) / fpx)
    theta = np.radians(np.asarray(LidarModel().elevations_deg))
    beam_rows = cy - fpx * np.tan(theta)[None, :] / np.cos(phi)[:, None]  # [points, beams]
    # 0.5 px of rounding, plus the azimuth moving within the pixel column
    assert (np.abs(beam_rows - v[:, None]).min(axis=1) <= 0.6).all()
    per_column = (f.depth > 0).sum(axis=0)
    assert per_column.max() <= 64  # one return per beam at most
    assert 5 <= np.median(per_column[per_column > 0]) <= 40  # few of the 256 rows


def test_lidar_range_noise_is_a_few_centimetres(scene):
    f = scene["day", "lidar"]
    truth = _ground_truth(f)
    band = (f.depth > 0) & (truth > 3.0) & (truth < 60.0)
    err = (f.depth - truth)[band]
    assert band.sum() > 200
    assert abs(np.median(err)) < 0.01
    assert 0.008 < np.std(err) < 0.03  # 2 cm along the ray, a little less in z


def test_lidar_sees_far_by_day_no_sky_and_little_in_fog(scene):
    day, fog = scene["day", "lidar"], scene["fog", "lidar"]
    assert day.depth.max() > 80.0 and day.depth.max() <= 120.5
    assert (day.depth[day.semantic == SKY] == 0).all()
    assert (day.depth[day.semantic == 255] == 0).all()  # the roof scanner does not see the bonnet
    assert 0 < fog.depth.max() < 30.0  # two-way attenuation in 45 m fog


# ---- stereo -----------------------------------------------------------------------------------


def test_stereo_error_grows_with_the_square_of_depth(scene):
    f = scene["day", "stereo"]
    truth = _ground_truth(f)
    stds = []
    for lo, hi in ((8.0, 12.0), (25.0, 35.0)):
        band = (f.depth > 0) & (truth > lo) & (truth < hi)
        assert band.sum() > 300
        stds.append(np.std((f.depth - truth)[band]))
    s = StereoModel()
    expected = [z**2 * s.disparity_sigma_px / (f.intrinsics[0, 0] * s.baseline_m) for z in (10.0, 30.0)]
    ratio = stds[1] / stds[0]
    assert 5.0 < ratio < 13.0  # (30 / 10)^2 = 9; linear growth would give 3
    np.testing.assert_allclose(stds, expected, rtol=0.5)


def test_stereo_is_invalid_on_the_sky_and_beyond_its_range(scene):
    f, ideal = scene["day", "stereo"], scene["day", "ideal"]
    assert (f.depth[f.semantic == SKY] == 0).all()
    assert 0 < f.depth.max() <= 40.0  # the cut applies to the measurement
    far = (ideal.depth > 60.0) & (ideal.depth < 80.0)  # sigma_z 5 m: a 40 m reading is 4 sigma off
    assert far.sum() > 100 and (f.depth[far] > 0).mean() < 0.01


def test_stereo_occlusion_band_left_of_a_near_object(scene):
    """Background just left of a near car is hidden from the right camera; right of it it is not."""
    f, ideal = scene["day", "stereo"], scene["day", "ideal"]
    fb = f.intrinsics[0, 0] * StereoModel().baseline_m
    left, right = [], []
    for k in np.flatnonzero(f.labels == 13):
        m = f.visible_masks[k]
        z_obj = np.median(ideal.depth[m & (ideal.depth > 0)]) if (m & (ideal.depth > 0)).any() else 0
        if not 3.0 < z_obj < 25.0 or m.sum() < 300:
            continue
        for r in np.flatnonzero(m.sum(1) > 10):
            cols = np.flatnonzero(m[r])
            c0, c1 = cols[0], cols[-1]
            if c0 < 40 or c1 > SIZE[1] - 40 or f.instance[r, c0 - 1] or f.instance[r, c1 + 1]:
                continue
            z_bg = ideal.depth[r, c0 - 1]
            if not z_bg > z_obj + 5.0:
                continue
            width = int(fb / z_obj - fb / z_bg)
            band, mirror = slice(c0 - width + 1, c0), slice(c1 + 1, c1 + width)
            if (
                width < 2
                or (ideal.depth[r, band] < z_obj + 5.0).any()
                or (ideal.depth[r, mirror] < z_obj + 5.0).any()
            ):
                continue  # only a farther background on both sides (no person between)
            left.append((f.depth[r, band] == 0).mean())
            right.append((f.depth[r, mirror] == 0).mean())
    assert len(left) >= 5
    assert np.mean(left) > 0.95
    assert np.mean(right) < 0.5


def test_stereo_fails_in_night_darkness_but_not_by_day(scene):
    day, night = scene["day", "stereo"], scene["night", "stereo"]
    dark = (night.rgb.mean(axis=2) < 8) & (day.semantic != SKY) & (scene["day", "ideal"].depth > 0)
    dark &= scene["day", "ideal"].depth < 30.0
    assert dark.sum() > 2000
    assert (night.depth[dark] > 0).mean() < 0.2
    assert (day.depth[dark] > 0).mean() > 0.6


# ---- thermal ----------------------------------------------------------------------------------


def _sky_column_pattern(frame, ideal) -> np.ndarray:
    """Per-column mean of realistic - ideal thermal (K) on the top rows, where both see only sky."""
    top = slice(0, 24)
    cols = (frame.semantic[top] == SKY).all(axis=0)
    # 30 px away from anything but sky: the warm facades' halo reaches ~20 px into the sky.
    cols = np.convolve(cols.astype(float), np.ones(61), mode="same") > 60.5
    diff = frame.thermal[top].astype(np.float64) - ideal.thermal[top].astype(np.float64)
    pattern = np.where(cols, diff.mean(axis=0) / 100.0, np.nan)
    # Column to column steps: the fixed column offsets are white, the halo and drift are smooth.
    return np.diff(pattern)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    assert ok.sum() > 40
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def test_thermal_fixed_pattern_is_stable_in_a_drive_and_differs_between_cameras():
    real, ideal = _drive(thermal="realistic", seed=5, crowd=0.0), _drive(seed=5, crowd=0.0)
    other_real, other_ideal = _drive(thermal="realistic", seed=6, crowd=0.0), _drive(seed=6, crowd=0.0)
    a = _sky_column_pattern(real.frame(0), ideal.frame(0))
    b = _sky_column_pattern(real.frame(120), ideal.frame(120))
    c = _sky_column_pattern(other_real.frame(0), other_ideal.frame(0))
    assert np.nanstd(a) > 0.15  # column offsets of ~0.2 K: steps of ~0.28 K
    assert _corr(a, b) > 0.9
    assert abs(_corr(a, c)) < 0.4


def test_thermal_drifts_over_a_drive():
    real, ideal = _drive(thermal="realistic", seed=5, crowd=0.0), _drive(seed=5, crowd=0.0)
    offsets = []
    for i in (0, 1500, 3000):  # 0, 2.5 and 5 minutes
        r, d = real.frame(i), ideal.frame(i)
        sky = d.semantic == SKY
        offsets.append((r.thermal[sky].astype(np.float64) - d.thermal[sky]).mean() / 100.0)
    assert np.ptp(offsets) > 0.2


def test_thermal_equal_temperatures_look_alike_and_people_stay_warm(scene):
    night = scene["night", "lidar"]  # realistic thermal
    ideal = scene["night", "ideal"]
    temp = night.thermal.astype(np.float64) / 100.0 - 273.15
    t_ideal = ideal.thermal.astype(np.float64) / 100.0 - 273.15
    pole, sign = night.semantic == POLE, night.semantic == SIGN
    person, road = night.semantic == PERSON, night.semantic == ROAD
    assert pole.sum() > 50 and sign.sum() > 20 and person.sum() > 100
    assert abs(t_ideal[pole].mean() - t_ideal[sign].mean()) < 0.5  # both 14 C in the world
    assert abs(temp[pole].mean() - temp[sign].mean()) < 2.0
    assert temp[person].mean() - temp[road].mean() > 5.0
    # Per-class values are no longer exact: people's skin/clothes spread over kelvins.
    assert np.std(temp[person]) > 1.0


def test_thermal_realistic_blurs_edges_and_adds_a_halo(scene):
    real, ideal = scene["day", "lidar"], scene["day", "ideal"]
    gx_ideal = np.abs(np.diff(ideal.thermal.astype(np.float64), axis=1)).max()
    gx_real = np.abs(np.diff(real.thermal.astype(np.float64), axis=1)).max()
    assert gx_real < 0.6 * gx_ideal


# ---- selection, determinism, plumbing ---------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "thermal"), [("lidar", "ideal"), ("stereo", "realistic"), ("mix", "realistic")]
)
def test_sensor_models_are_deterministic_and_leave_the_scene_alone(depth, thermal):
    a = _drive(depth, thermal, seed=9).frame(4, condition="night")
    b = _drive(depth, thermal, seed=9).frame(4, condition="night")
    ideal = _drive(seed=9).frame(4, condition="night")
    for field in ("depth", "thermal", "rgb"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    np.testing.assert_array_equal(a.semantic, ideal.semantic)
    np.testing.assert_array_equal(a.rgb, ideal.rgb)


def test_mix_draws_lidar_or_stereo_per_frame_with_the_configured_share():
    cfg = SyntheticWorldConfig(size=(32, 64), seed=1, depth_model="mix", lidar_fraction=0.3)
    models = [cfg.depth_model_at(i) for i in range(400)]
    assert set(models) == {"lidar", "stereo"}
    assert 0.22 < models.count("lidar") / 400 < 0.38
    assert models == [cfg.depth_model_at(i) for i in range(400)]
    only = dataclasses.replace(cfg, lidar_fraction=1.0)
    assert {only.depth_model_at(i) for i in range(50)} == {"lidar"}
    drive = SyntheticDrive(cfg)
    assert [drive.frame(i).depth_model for i in range(6)] == models[:6]


def test_dataset_spec_selects_the_models_and_reports_them_in_meta():
    ds = build_dataset("synthetic:frames=6,size=64x128,seed=2,depth=mix,thermal=realistic,lidar_fraction=0.5")
    metas = [ds[i]["meta"] for i in range(6)]
    assert {m["thermal_model"] for m in metas} == {"realistic"}
    assert {m["depth_model"] for m in metas} <= {"lidar", "stereo"}
    plain = build_dataset("synthetic:frames=2,size=64x128,seed=2")
    assert plain[0]["meta"]["depth_model"] == "ideal"
    # The same scenes whatever the sensors.
    np.testing.assert_array_equal(ds[1]["semantic"].numpy(), plain[1]["semantic"].numpy())


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("depth=sonar", "depth model must be one of ideal, lidar, stereo, mix; got 'sonar'"),
        ("thermal=flir", "thermal model must be one of ideal, realistic; got 'flir'"),
        ("depth=mix,lidar_fraction=1.5", r"lidar_fraction .* must be in \[0, 1\]; got 1.5"),
    ],
)
def test_spec_errors_name_the_valid_values(option, message):
    with pytest.raises(ConfigError, match=message):
        build_dataset(f"synthetic:frames=2,size=64x128,{option}")


def test_world_config_rejects_unknown_models():
    with pytest.raises(ConfigError, match="depth model must be one of ideal, lidar, stereo, mix"):
        SyntheticWorldConfig(depth_model="radar")


def test_folder_keeps_sparse_lidar_depth_and_the_model_names(tmp_path):
    frames = [_drive("lidar", "realistic", seed=4).frame(i) for i in (0, 1)]
    write_synthetic_folder(tmp_path / "s", frames)
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert (meta["depth_models"], meta["thermal_models"]) == (["lidar"], ["realistic"])
    s = SyntheticFolderDataset(tmp_path / "s")[1]
    depth = s["depth"][0].numpy()
    np.testing.assert_array_equal(depth > 0, frames[1].depth > 0)  # no return stays invalid
    np.testing.assert_allclose(depth[depth > 0], frames[1].depth[depth > 0], atol=1.01e-3)
    assert (s["meta"]["depth_model"], s["meta"]["thermal_model"]) == ("lidar", "realistic")


def test_cli_writes_the_chosen_models(tmp_path, capsys):
    from damcseg_core.cli.make_synthetic import main

    out = tmp_path / "cli"
    assert main(["--out", str(out), "--frames", "2", "--size", "32x64", "--depth", "stereo",
                 "--thermal", "realistic", "--no-progress"]) == 0  # fmt: skip
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["depth_models"], meta["thermal_models"]) == (["stereo"], ["realistic"])
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--frames", "2", "--depth", "tof"])
    assert "invalid choice: 'tof'" in capsys.readouterr().err


def test_demo_drive_takes_the_models():
    frames = list(
        demo_drive_frames(0.4, 5.0, (48, 96), seed=3, depth_model="lidar", thermal_model="realistic")
    )
    assert {(f.depth_model, f.thermal_model) for f in frames} == {("lidar", "realistic")}


def test_realistic_thermal_counts_stay_radiometric(scene):
    """Counts are still 100 * kelvin: the realistic sky reads near its -25 C by day."""
    f = scene["day", "lidar"]
    sky = f.semantic == SKY
    celsius = f.thermal[sky].astype(np.float64).mean() / 100.0 - 273.15
    assert abs(celsius - (-25.0)) < 3.0
    assert kelvin_counts(-25.0) == pytest.approx(24815.0)
    assert math.isfinite(celsius)
