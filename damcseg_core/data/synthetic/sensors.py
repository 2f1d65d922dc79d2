"""Sensor models of the synthetic world: what a real depth or thermal camera would deliver.

The renderer knows the exact z-depth and temperature of every pixel. ``ideal`` sensors hand that
over almost untouched (the world's original behaviour, bit-identical). The other models degrade it
the way the real instruments do, so that depth no longer carries every distant pedestrian as a
crisp silhouette and the thermal image is no longer a per-class lookup table. Numbers below are
for the default 256x512 image with a 90 degree HFOV (``f = 256`` px, 0.22 degree per pixel at the
centre); everything that is physical is given in metres or degrees and scales with the image.

Depth (``SyntheticWorldConfig.depth_model``; 0 = invalid, as everywhere in the data layer)
------------------------------------------------------------------------------------------

``ideal``
    z-depth plus Gaussian noise ``sigma = 0.01 + 0.001 z^2`` m, invalid on the sky, beyond
    ``max_depth`` (80 m) and at 2 % random dropouts (see :mod:`.render`).

``lidar`` (:class:`LidarModel`): a rotating 64-beam scanner laid out like the Velodyne HDL-64E
    S2 of KITTI / KITTI-360: an upper block of 32 beams from +2.0 to -8.33 degrees (1/3 degree
    apart) and a lower block of 32 from -8.83 to -24.33 degrees (1/2 degree apart), 0.17 degree
    azimuth steps (10 Hz spin) with a random phase per sweep. The scanner sits at the camera's
    optical centre (KITTI's is 0.27 m above it; the parallax that causes is not modelled), so a
    return at azimuth ``phi`` and elevation ``theta`` lands on pixel
    ``u = cx + f tan(phi)``, ``v = cy - f tan(theta) / cos(phi)``: beam rows are the curves real
    projections show, bowing away from the horizon towards the image sides. A return exists when
    the lidar equation's received power ``rho exp(-2 beta r) / r^2`` reaches that of an 80 %
    target at 120 m (``rho`` = surface albedo as the reflectivity, ``beta = 3.912 / V`` in fog,
    0 otherwise): white markings reach 120 m, asphalt (0.3) 73 m, dark paint (0.08) 38 m, and in
    45 m fog the road only ~17 m; plus 2 % lost returns. Range noise is 2 cm (1 sigma) along the
    ray; sky, the ego bonnet (below the roof scanner's lowest beam) and everything beyond 120 m
    are invalid. Pixel density is that of a KITTI-360 projection (552 px focal length) after the
    loaders' nearest-neighbour resize to this image, which keeps a share ``(f / 552)^2`` of the
    returns (21 % at 256x512, drawn at random per sweep; all of them when ``f >= 552``): ~4-5 %
    of the pixels are valid (3 % in fog), a median of ~12 per column of 256, on dotted beam
    rows.

``stereo`` (:class:`StereoModel`): the RGB camera is the left camera of a rig with a 0.54 m
    baseline (KITTI's) and the same focal length. Disparity ``d = f B / z`` gets the matcher's
    sub-pixel error, sigma 0.2 px, spatially correlated over ~2 px like SGM's, and is quantised
    to 1/16 px (OpenCV SGBM's fixed point); ``z = f B / d``, so the error grows as
    ``sigma_z = z^2 sigma_d / (f B)``: 0.14 m at 10 m, 0.58 m at 20 m, 2.3 m at 40 m. Invalid:
    measurements beyond the usable 40 m (the disparity search stops at ``f B / 40 m`` = 3.5 px;
    a point truly at 45 m can still read 39 m, one beyond 60 m almost never), pixels seen
    by the left camera only (the left-right occlusion band left of every nearer surface, as wide
    as the disparity jump, and the left image border), the sky (no disparity), and textureless
    surfaces. Texture is matchable when its signal-to-noise ratio over the 7x7 matching window
    reaches 1: signal = RMS horizontal second difference of the noise-free image (edges,
    markings, windows; census-like costs ignore offsets and smooth shading ramps) combined
    with the fine surface grain the renderer does not draw
    (asphalt, brick, leaves; contrast 0.02 for paint to 0.3 for foliage, falling as
    ``0.015 m / sqrt(pixel footprint)`` once a pixel covers more than a 1.5 cm grain) times the
    local luminance; noise = the RGB sensor noise (2 by day, 7 at night, in 0..255) divided by
    the window's sqrt(49) / sqrt(2). Result (256x512): by day ~66 % of the pixels are valid and the
    road is matched to ~30 m (beyond only near markings and kerbs), at night ~45 %: the headlight
    beams, lamp pools, lit facades, not the dark; in fog the texture fades with distance.

``mix``
    each frame draws ``lidar`` with probability ``lidar_fraction`` (default 0.5), else ``stereo``
    (seeded by the drive seed and the frame index); ``SyntheticFrame.depth_model`` says which.

Thermal (``SyntheticWorldConfig.thermal_model``; counts = 100 * kelvin of the *apparent* temperature)
----------------------------------------------------------------------------------------------------

``ideal``
    every part has its fixed temperature (skin 34 C, car body 19 C, ...) plus NETD noise of
    0.05 K: a per-class lookup table with perfectly sharp edges.

``realistic`` (:class:`ThermalCameraModel`), an uncooled microbolometer:
    * scene: passive things (parts the ideal model holds at or below 25 C: car bodies, parked
      cars, poles, signs, bicycles, trees) sit at the air temperature of the condition (day 22,
      dusk 16, night 10, fog 12 C) plus solar loading ``8 K x (1 - albedo)`` by day (2 K at dusk,
      1 K in fog) plus +-1.5 K per object, so objects of similar temperature look alike;
      warm parts (people, running engines, tyres, lights) keep their heat above the air but cool
      with it, ``T - 0.4 (22 C - T_air)`` (skin 29 C and clothes 23-25 C at night), +-1 K per
      object; vehicle glass (emissivity 0.85) reflects 15 % of the sky;
    * optics: Gaussian blur of 0.25 degree (1.1 px) and a halo, 10 % of the signal scattered
      with a 2 degree Gaussian (lens and window scatter: hot objects glow into their surround);
    * fixed-pattern noise, stable for one camera (drive seed), different for every other: column
      offsets 0.2 K, row offsets 0.08 K, pixel offsets 0.05 K, 1 % gain non-uniformity around
      20 C and a +-0.3 K radial shading;
    * drift of the whole image over the drive: a 0.8 K sine with a 10-minute period (camera
      housing warming) plus a 0.4 K saw-tooth that resets at every shutter correction (2 min);
    * temporal noise NETD 0.05 K.

RGB is not changed by any model: at night it is already dark beyond the lights. Measured on 18
crowded scenes (6 drives x 3 frames, 256x512), mean luma difference between a pedestrian or
rider (>= 40 px) and its 3 px surround: 3.5 of 255 outside the headlights and lamp pools (78
people; per-pixel noise 7), 14.8 where artificial light exceeds 3x the ambient (75), 41.7 by day
(153); thermal: 17 K at night and 5.6 K by day with the ideal camera, 7.0 K at night and 2.5 K
by day with the realistic one (people cool with the air, parked things sit at it, blur and halo).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

from damcseg_core.config import ConfigError

if TYPE_CHECKING:  # world.py imports this module for its config fields
    from damcseg_core.data.synthetic.world import Primitive

__all__ = [
    "DEPTH_MODELS",
    "THERMAL_MODELS",
    "LidarModel",
    "StereoModel",
    "ThermalCameraModel",
    "check_sensor_models",
    "lidar_depth",
    "realistic_part_temps",
    "realistic_thermal",
    "stereo_depth",
]

DEPTH_MODELS: tuple[str, ...] = ("ideal", "lidar", "stereo", "mix")
"""Valid ``depth_model`` values (``mix``: per-frame draw of ``lidar`` or ``stereo``)."""
THERMAL_MODELS: tuple[str, ...] = ("ideal", "realistic")
"""Valid ``thermal_model`` values."""


def check_sensor_models(depth: str, thermal: str, lidar_fraction: float, where: str = "") -> None:
    """Raise :class:`ConfigError` naming the valid values when a sensor model setting is unknown."""
    pre = f"{where}: " if where else ""
    if depth not in DEPTH_MODELS:
        raise ConfigError(f"{pre}depth model must be one of {', '.join(DEPTH_MODELS)}; got {depth!r}")
    if thermal not in THERMAL_MODELS:
        raise ConfigError(f"{pre}thermal model must be one of {', '.join(THERMAL_MODELS)}; got {thermal!r}")
    if not 0.0 <= lidar_fraction <= 1.0:
        raise ConfigError(
            f"{pre}lidar_fraction (share of lidar frames under depth=mix) must be in [0, 1]; "
            f"got {lidar_fraction}"
        )


# ---------------------------------------------------------------------------------------------
# Lidar
# ---------------------------------------------------------------------------------------------


def _hdl64_elevations() -> tuple[float, ...]:
    upper = np.linspace(2.0, -8.33, 32)
    lower = np.linspace(-8.83, -24.33, 32)
    return tuple(float(v) for v in np.concatenate([upper, lower]))


@dataclasses.dataclass(frozen=True)
class LidarModel:
    """A rotating multi-beam scanner co-located with the camera (module docstring)."""

    elevations_deg: tuple[float, ...] = dataclasses.field(default_factory=_hdl64_elevations)  # beams
    azimuth_step_deg: float = 0.17  # horizontal angular resolution (HDL-64E at 10 Hz)
    max_range_m: float = 120.0  # range of an `ref_reflectivity` target in clear air
    ref_reflectivity: float = 0.8
    range_sigma_m: float = 0.02  # 1 sigma range noise along the ray
    lost_returns: float = 0.02  # fraction of returns that never come back
    reference_focal_px: float = 552.55  # KITTI-360 perspective camera; sets the pixel density


def lidar_depth(
    zbuf: np.ndarray,
    albedo: np.ndarray,
    valid: np.ndarray,
    f: float,
    cx: float,
    cy: float,
    fog_beta: float,
    rng: np.random.Generator,
    model: LidarModel,
) -> np.ndarray:
    """Sparse z-depth (metres, 0 invalid) of one lidar sweep projected into the camera.

    Args:
        zbuf: ``HxW`` exact z-depth (inf for the sky).
        albedo: ``HxW`` reflectivity of the surface each pixel sees.
        valid: ``HxW`` pixels a roof scanner can hit (False for sky and ego bonnet).
        f, cx, cy: Camera intrinsics (pixels).
        fog_beta: Extinction coefficient (1/m), 0 in clear air.
        rng: Random stream of this frame (sweep phase, noise, lost returns).
        model: Scanner parameters.
    """
    h, w = zbuf.shape
    half = math.atan((w / 2.0) / f)
    step = math.radians(model.azimuth_step_deg)
    phase = float(rng.uniform(0.0, step))
    phi = np.arange(-half + phase, half, step, dtype=np.float64)
    theta = np.radians(np.asarray(model.elevations_deg, np.float64))
    u = cx + f * np.tan(phi)[None, :]
    v = cy - f * np.tan(theta)[:, None] / np.cos(phi)[None, :]
    u, v = np.broadcast_arrays(u, v)
    ui, vi = np.rint(u).astype(np.int64), np.rint(v).astype(np.int64)
    keep = (ui >= 0) & (ui < w) & (vi >= 0) & (vi < h)
    # A nearest resize of a projection at the reference focal length keeps (f / f_ref)^2 of it.
    share = min(1.0, (f / model.reference_focal_px) ** 2)
    keep &= rng.uniform(size=keep.shape) < share
    ui, vi = ui[keep], vi[keep]
    z = zbuf[vi, ui].astype(np.float64)
    ray = np.sqrt(1.0 + ((ui - cx) / f) ** 2 + ((vi - cy) / f) ** 2)
    ok = valid[vi, ui] & np.isfinite(z)
    r = np.where(ok, z, 0.0) * ray
    rho = np.clip(albedo[vi, ui].astype(np.float64), 0.02, 1.0)
    with np.errstate(divide="ignore"):
        power = rho * np.exp(-2.0 * fog_beta * r) / np.maximum(r, 1e-3) ** 2
    ok &= (r <= model.max_range_m) & (power >= model.ref_reflectivity / model.max_range_m**2)
    ok &= rng.uniform(size=r.shape) >= model.lost_returns
    noise = rng.standard_normal(r.shape)
    zm = (r + model.range_sigma_m * noise) / ray
    ok &= zm > 0
    flat = np.full(h * w, np.inf)
    np.minimum.at(flat, vi[ok] * w + ui[ok], zm[ok])  # two returns on one pixel: the nearer one
    return np.where(np.isfinite(flat), flat, 0.0).reshape(h, w).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Stereo
# ---------------------------------------------------------------------------------------------

# Fine-grain texture contrast per Cityscapes train id (module docstring); 0 for the sky.
_GRAIN = np.zeros(256, np.float32)
for _tid, _c in {0: 0.12, 1: 0.12, 2: 0.15, 5: 0.03, 6: 0.05, 7: 0.02, 8: 0.3, 9: 0.25, 11: 0.1,
                 12: 0.1, 13: 0.02, 14: 0.03, 15: 0.03, 18: 0.1}.items():  # fmt: skip
    _GRAIN[_tid] = _c
_GROUND = np.zeros(256, bool)
_GROUND[[0, 1, 9]] = True  # road, sidewalk, terrain: seen at grazing angles


@dataclasses.dataclass(frozen=True)
class StereoModel:
    """A rectified stereo rig whose left camera is the RGB camera (module docstring)."""

    baseline_m: float = 0.54  # KITTI's
    disparity_sigma_px: float = 0.2  # sub-pixel matching error, 1 sigma
    disparity_quantum_px: float = 1.0 / 16.0  # SGBM's fixed-point step
    max_range_m: float = 40.0  # farther measurements are invalid
    window_px: int = 7  # matching window (texture measure)
    grain_m: float = 0.015  # size of the surface grain the renderer does not draw
    min_snr: float = 1.0  # texture signal / matching noise needed for a match


@functools.lru_cache(maxsize=4)
def correlated_noise_bank(height: int, width: int, pad: int) -> np.ndarray:
    """Unit-variance Gaussian noise blurred over ~2 px (SGM-like correlated disparity error)."""
    rng = np.random.default_rng([height, width, 17])
    n = rng.standard_normal((height + pad, width + pad), dtype=np.float32)
    n = cv2.GaussianBlur(n, (0, 0), 1.0)
    n /= n.std()
    n.setflags(write=False)
    return n


def stereo_depth(
    zbuf: np.ndarray,
    cls: np.ndarray,
    luma: np.ndarray,
    structure: np.ndarray,
    rgb_noise: float,
    f: float,
    camera_height: float,
    noise: np.ndarray,
    model: StereoModel,
) -> np.ndarray:
    """Dense but noisy z-depth (metres, 0 invalid) of a block-matching stereo rig.

    Args:
        zbuf: ``HxW`` exact z-depth (inf for the sky).
        cls: ``HxW`` train ids (surface grain per class).
        luma: ``HxW`` noise-free luminance the surface shows, 0..255 (after fog).
        structure: ``HxW`` noise-free luminance without the renderer's ground texture, 0..255
            (its horizontal gradients are the edges a matcher can lock on).
        rgb_noise: RGB sensor noise sigma, 0..255.
        f: Focal length, pixels.
        camera_height: Metres above the road (ground footprint).
        noise: ``HxW`` unit correlated Gaussian noise of this frame.
        model: Rig parameters.
    """
    h, w = zbuf.shape
    fb = f * model.baseline_m
    finite = np.isfinite(zbuf) & (zbuf > 0)
    d = np.where(finite, fb / np.where(finite, zbuf, 1.0), 0.0).astype(np.float32)

    # Left-right occlusion: pixel u is hidden from the right camera when a pixel to its right
    # lands at or left of its right-image column u - d (nearer surfaces shift further).
    cols = np.arange(w, dtype=np.float32)[None, :]
    xr = cols - d
    right_min = np.minimum.accumulate(xr[:, ::-1], axis=1)[:, ::-1]
    nxt = np.concatenate([right_min[:, 1:], np.full((h, 1), np.inf, np.float32)], axis=1)
    seen = (nxt > xr) & (xr >= 0.0)

    # Matchable texture: edges of the image plus unrendered surface grain, against the noise.
    k = model.window_px
    # Second difference along the epipolar line: census-like costs ignore offsets and linear
    # ramps (smooth shading), so only curvature - edges, markings, windows - is matchable.
    gx = np.zeros_like(structure)
    gx[:, 1:-1] = 0.5 * (structure[:, 2:] - 2.0 * structure[:, 1:-1] + structure[:, :-2])
    edge = np.sqrt(np.maximum(cv2.boxFilter(gx * gx, -1, (k, k)), 0.0))
    z = np.where(finite, zbuf, 1e4)
    foot = z / f  # side of the pixel footprint on a fronto-parallel surface
    foot = np.where(_GROUND[cls], foot * np.sqrt(z / camera_height), foot)  # grazing ground
    grain = _GRAIN[cls] * np.minimum(1.0, model.grain_m / np.maximum(foot, 1e-6)) * luma * math.sqrt(2.0)
    grain = cv2.boxFilter(grain, -1, (k, k))
    sigma = max(rgb_noise, 0.5) * math.sqrt(2.0) / k
    textured = np.sqrt(edge * edge + grain * grain) >= model.min_snr * sigma

    dm = d + model.disparity_sigma_px * noise
    q = model.disparity_quantum_px
    dm = np.round(dm / q) * q
    with np.errstate(divide="ignore"):
        zm = np.where(dm > 0, fb / np.where(dm > 0, dm, 1.0), 0.0)
    ok = finite & seen & textured & (dm > 0) & (zm <= model.max_range_m)
    return np.where(ok, zm, 0.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Thermal
# ---------------------------------------------------------------------------------------------

AIR_C = {"day": 22.0, "dusk": 16.0, "night": 10.0, "fog": 12.0}
SOLAR_K = {"day": 8.0, "dusk": 2.0, "night": 0.0, "fog": 1.0}


@dataclasses.dataclass(frozen=True)
class ThermalCameraModel:
    """An uncooled microbolometer and the thermal physics of its scene (module docstring)."""

    active_above_c: float = 25.0  # parts the ideal world holds warmer than this carry own heat
    active_cooling: float = 0.4  # dT_part / dT_air of warm parts
    active_jitter_k: float = 1.0  # per-object spread of warm parts
    passive_jitter_k: float = 1.5  # per-object spread of passive objects
    glass_emissivity: float = 0.85  # vehicle windows reflect (1 - e) of the sky
    blur_deg: float = 0.25  # optics blur, Gaussian sigma
    halo_deg: float = 2.0  # scatter halo, Gaussian sigma
    halo_fraction: float = 0.1  # share of the signal scattered into the halo
    column_fpn_k: float = 0.2
    row_fpn_k: float = 0.08
    pixel_fpn_k: float = 0.05
    gain_fpn: float = 0.01  # relative gain non-uniformity around 20 C
    shading_k: float = 0.3  # radial shading amplitude (sign per camera)
    drift_k: float = 0.8  # amplitude of the slow drift
    drift_period_s: float = 600.0
    ffc_k: float = 0.4  # saw-tooth between shutter corrections
    ffc_period_s: float = 120.0
    netd_k: float = 0.05  # temporal noise


def _hash_unit(seed: int, key: int) -> float:
    """Deterministic pseudo-random value in [-1, 1) of (seed, key); cheap enough per primitive."""
    x = (key * 0x9E3779B1 + (seed & 0xFFFFFFFF) * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x2C1B3C6D) & 0xFFFFFFFF
    x ^= x >> 12
    return x / 2147483648.0 - 1.0


def realistic_part_temps(
    p: Primitive, condition: str, sky_c: float, seed: int, model: ThermalCameraModel, vehicle: bool
) -> np.ndarray:
    """Apparent temperature per part of ``p`` (Celsius) under ``condition`` (module docstring).

    ``vehicle``: ``p`` is a car, truck or bus, whose part 2 is window glass.
    """
    air = AIR_C[condition]
    ideal = p.temps
    active = ideal > model.active_above_c
    j = _hash_unit(seed, p.track_id) * math.sqrt(3.0)  # unit variance, same for all its parts
    absorb = 1.0 - p.colors.mean(axis=1)
    passive_t = air + SOLAR_K[condition] * absorb + model.passive_jitter_k * j
    active_t = ideal - model.active_cooling * (22.0 - air) + model.active_jitter_k * j
    out = np.where(active, active_t, passive_t).astype(np.float32)
    if vehicle and len(out) > 2:
        e = model.glass_emissivity
        out[2] = e * out[2] + (1.0 - e) * sky_c
    return out


_FPN_PAD = 64


@functools.lru_cache(maxsize=4)
def _fpn_bank(height: int, width: int) -> np.ndarray:
    """Unit normals a camera's pixel offset and gain patterns are read from (at seeded offsets).

    Drawing two fresh full-size patterns per camera would cost more than the rest of the model
    (the dataset makes a new drive, so a new camera, per sample).
    """
    rng = np.random.default_rng([height, width, 37])
    bank = rng.standard_normal((2, height + _FPN_PAD, width + _FPN_PAD), dtype=np.float32)
    bank.setflags(write=False)
    return bank


@dataclasses.dataclass
class ThermalFpn:
    """Fixed-pattern noise of one thermal camera, in kelvin (offset) and relative gain."""

    offset: np.ndarray  # HxW float32 K
    gain: np.ndarray  # HxW float32 around 1
    drift_phase: float  # radians
    ffc_phase: float  # fraction of a shutter period

    @classmethod
    def build(cls, seed: int, height: int, width: int, model: ThermalCameraModel) -> ThermalFpn:
        rng = np.random.default_rng([seed & 0xFFFFFFFF, 31])
        col = rng.standard_normal(width).astype(np.float32) * model.column_fpn_k
        row = rng.standard_normal(height).astype(np.float32) * model.row_fpn_k
        bank = _fpn_bank(height, width)
        (py, px), (gy, gx) = rng.integers(0, _FPN_PAD, size=(2, 2))
        pix = bank[0, py : py + height, px : px + width] * model.pixel_fpn_k
        yy = (np.arange(height, dtype=np.float32)[:, None] - (height - 1) / 2) / (height / 2)
        xx = (np.arange(width, dtype=np.float32)[None, :] - (width - 1) / 2) / (width / 2)
        shade = model.shading_k * float(rng.choice([-1.0, 1.0])) * (xx * xx + yy * yy) / 2.0
        offset = (row[:, None] + col[None, :] + pix + shade).astype(np.float32)
        gain = (1.0 + model.gain_fpn * bank[1, gy : gy + height, gx : gx + width]).astype(np.float32)
        return cls(offset, gain, float(rng.uniform(0, 2 * math.pi)), float(rng.uniform()))

    def drift(self, t: float, model: ThermalCameraModel) -> float:
        """Whole-image offset (K) at time ``t`` seconds into the drive."""
        slow = model.drift_k * math.sin(2 * math.pi * t / model.drift_period_s + self.drift_phase)
        saw = model.ffc_k * (((t / model.ffc_period_s + self.ffc_phase) % 1.0) - 0.5)
        return slow + saw


def realistic_thermal(
    temp_c: np.ndarray,
    fpn: ThermalFpn,
    t: float,
    pixel_deg: float,
    noise: np.ndarray,
    model: ThermalCameraModel,
) -> np.ndarray:
    """uint16 counts (100 * kelvin) of what the camera reports for the scene ``temp_c``.

    Args:
        temp_c: ``HxW`` apparent scene temperature, Celsius.
        fpn: This camera's fixed pattern.
        t: Time in the drive, seconds (drift).
        pixel_deg: Angular size of a pixel, degrees (blur and halo widths).
        noise: ``HxW`` unit Gaussian noise of this frame.
        model: Camera parameters.
    """
    h, w = temp_c.shape
    k = np.asarray(temp_c, np.float32) * 100.0 + 27315.0  # world.kelvin_counts
    k = cv2.GaussianBlur(k, (0, 0), max(model.blur_deg / pixel_deg, 0.3))
    if model.halo_fraction > 0:
        small = cv2.resize(k, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), max(model.halo_deg / pixel_deg / 4.0, 0.5))
        halo = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        k = (1.0 - model.halo_fraction) * k + model.halo_fraction * halo
    ref = np.float32(20.0 * 100.0 + 27315.0)
    k = ref + (k - ref) * fpn.gain
    k = k + 100.0 * (fpn.offset + fpn.drift(t, model)) + 100.0 * model.netd_k * noise
    return np.clip(k + 0.5, 0, 65535).astype(np.uint16)
