"""Vectorised renderer of the synthetic world: one z-buffer, five registered outputs.

Background (road, sidewalk, terrain, facades/hedges, sky, ego bonnet) is solved per pixel in
closed form: ground rows intersect the plane ``y = camera_height``, facade columns intersect the
planes ``x = +-building_line``. Primitives (vehicles, people, poles, ...) are fronto-parallel
billboards at the depth of their front face, drawn into the same z-buffer, so the depth map, the
label maps and the RGB/thermal images agree on who occludes whom.

Condition model (only RGB, depth and the *ground/sky* temperatures depend on it; vehicles,
people and street furniture keep their temperatures, so the thermal image of an object is the
same by day and by night):

========  =======  ===========================  ================================================
cond.     ambient  RGB                          depth / thermal
========  =======  ===========================  ================================================
day       1.0      blue sky, sensor noise 2     road 35 C, sky -25 C
dusk      0.45     warm tint, orange sky, 3.5   road 25 C, sky -30 C
night     0.05     ego headlights, street-lamp  road 14 C, sky -40 C
                   pools, lit windows, bloom,
                   noise 7
fog       0.8      ``rgb * T + fog * (1 - T)``,  invalid beyond the visibility V, noise x3;
                   ``T = exp(-3.912 / V * r)``   road 15 C, sky 5 C
========  =======  ===========================  ================================================

Depth of the ``ideal`` model is the z-depth in metres with Gaussian noise
``sigma = 0.01 + 0.001 z^2`` (0.11 m at 10 m, 1.6 m at 40 m), 0 where invalid: sky, beyond
``max_depth``, random dropouts. Thermal counts of the ``ideal`` model are ``100 * kelvin`` plus
Gaussian noise of 5 counts (NETD 0.05 K). The ``lidar``, ``stereo`` and ``realistic`` thermal
models are documented in :mod:`.sensors`; they draw their randomness after the ideal models' draws,
so ``ideal`` output is bit-identical to the renderer before those models existed.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import cv2
import numpy as np

from damcseg_core.data.classes import IGNORE_INDEX
from damcseg_core.data.synthetic import sensors
from damcseg_core.data.synthetic.world import (
    BICYCLE,
    BLOCK_M,
    BUS,
    CAR,
    LAMP,
    LIGHT,
    PARKING_OUT,
    PERSON,
    POLE,
    RIDER,
    ROAD_HALF,
    SIDEWALK_OUT,
    SIGN,
    TREE,
    TRUCK,
    Primitive,
    kelvin_counts,
)

__all__ = ["CONDITION_MODELS", "ConditionModel", "RenderOutput", "StaticScene", "render"]

ROAD, SIDEWALK, BUILDING, VEGETATION, TERRAIN, SKY = 0, 1, 2, 8, 9, 10


@dataclasses.dataclass(frozen=True)
class ConditionModel:
    """Illumination, sensor noise and ground temperatures of one condition."""

    ambient: float  # scale of the daylight on every surface
    tint: tuple[float, float, float]  # colour of the ambient light
    sky_top: tuple[float, float, float]  # sky colour at the image top (0..1)
    sky_horizon: tuple[float, float, float]  # sky colour at the horizon
    headlights: float  # gain of the ego headlights
    lamps: float  # gain of the street-lamp light pools
    emission: float  # gain of emitting parts (car lights, lamps, lit windows)
    bloom: float  # gain of the glow around light sources
    noise: float  # RGB sensor noise sigma, 0..255 units
    lit_windows: float  # fraction of windows lit
    temps: dict[int, float]  # Celsius of background classes (road, sidewalk, ...)


CONDITION_MODELS: dict[str, ConditionModel] = {
    "day": ConditionModel(1.0, (1.0, 1.0, 1.0), (0.35, 0.55, 0.85), (0.7, 0.8, 0.92), 0.0, 0.0, 0.3, 0.0,
                          2.0, 0.0, {ROAD: 35.0, SIDEWALK: 30.0, TERRAIN: 24.0, VEGETATION: 21.0, BUILDING: 23.0, SKY: -25.0}),
    "dusk": ConditionModel(0.45, (1.0, 0.78, 0.6), (0.25, 0.2, 0.4), (0.95, 0.55, 0.3), 0.4, 0.2, 0.7, 0.3,
                           3.5, 0.2, {ROAD: 25.0, SIDEWALK: 22.0, TERRAIN: 17.0, VEGETATION: 16.0, BUILDING: 19.0, SKY: -30.0}),
    "night": ConditionModel(0.05, (0.8, 0.85, 1.0), (0.01, 0.01, 0.03), (0.05, 0.05, 0.09), 1.6, 0.9, 1.0, 0.8,
                            7.0, 0.35, {ROAD: 14.0, SIDEWALK: 12.0, TERRAIN: 8.0, VEGETATION: 9.0, BUILDING: 14.0, SKY: -40.0}),
    "fog": ConditionModel(0.8, (0.95, 0.97, 1.0), (0.75, 0.77, 0.8), (0.75, 0.77, 0.8), 0.3, 0.0, 0.5, 0.2,
                          2.0, 0.0, {ROAD: 15.0, SIDEWALK: 14.0, TERRAIN: 12.0, VEGETATION: 12.0, BUILDING: 13.0, SKY: 5.0}),
}  # fmt: skip
"""Condition tag -> model (see the module docstring)."""

FOG_COLOR = np.array([0.75, 0.77, 0.8], dtype=np.float32)
DEPTH_NOISE = (0.01, 0.001)  # sigma = a + b * z^2, metres
THERMAL_NOISE_COUNTS = 5.0
_NOISE_PAD = 32


@dataclasses.dataclass
class RenderOutput:
    """Arrays of one rendered frame before objects are filtered (see :class:`SyntheticFrame`)."""

    rgb: np.ndarray  # HxWx3 uint8
    depth: np.ndarray  # HxW float32 metres, 0 invalid
    thermal: np.ndarray  # HxW uint16 counts
    semantic: np.ndarray  # HxW uint8 train ids
    instance: np.ndarray  # HxW int32, k = object row k-1
    boxes: np.ndarray  # [N,4] float32 xyxy (exclusive right/bottom), visible pixels
    labels: np.ndarray  # [N] int64
    occlusion: np.ndarray  # [N] float32
    visible_masks: np.ndarray  # [N,H,W] bool
    amodal_masks: np.ndarray  # [N,H,W] bool
    track_ids: np.ndarray  # [N] int64


# ---------------------------------------------------------------------------------------------
# Shapes: part maps of billboards in local coordinates a (0 left .. 1 right), b (0 bottom .. 1 top)
# ---------------------------------------------------------------------------------------------


def _car(a: np.ndarray, b: np.ndarray, variant: int) -> np.ndarray:
    c = np.abs(a - 0.5)
    body = (b < 0.55) & (c < 0.49)
    taper = 0.4 - 0.12 * (b - 0.55) / 0.4
    cabin = (b >= 0.55) & (b < 0.95) & (c < taper)
    glass = cabin & (b > 0.6) & (b < 0.9) & (c < taper - 0.06)
    wheel = (b < 0.2) & (np.abs(c - 0.34) < 0.1)
    light = (b > 0.36) & (b < 0.47) & (c > 0.33) & (c < 0.47)
    grille = (b > 0.14) & (b < 0.3) & (c < 0.16)
    p = np.where(body | cabin, 1, 0).astype(np.uint8)
    p[glass] = 2
    p[wheel] = 3
    p[light & body] = 4
    p[grille & body] = 5
    return p


def _truck(a: np.ndarray, b: np.ndarray, variant: int) -> np.ndarray:
    c = np.abs(a - 0.5)
    box = (b > 0.2) & (c < 0.49)
    wheel = (b <= 0.2) & (np.abs(c - 0.33) < 0.12)
    p = np.where(box | wheel, 1, 0).astype(np.uint8)
    p[wheel] = 3
    p[(b > 0.24) & (b < 0.3) & (c > 0.36) & (c < 0.47)] = 4
    p[(b > 0.2) & (b < 0.26) & (c < 0.1)] = 5
    if variant:  # oncoming: windscreen of the cab
        p[(b > 0.65) & (b < 0.9) & (c < 0.42)] = 2
    return p


def _bus(a: np.ndarray, b: np.ndarray, variant: int) -> np.ndarray:
    c = np.abs(a - 0.5)
    body = (b > 0.1) & (c < 0.49)
    wheel = (b <= 0.16) & (np.abs(c - 0.33) < 0.12)
    p = np.where(body | wheel, 1, 0).astype(np.uint8)
    p[(b > 0.5) & (b < 0.88) & (c < 0.44)] = 2
    p[wheel] = 3
    p[(b > 0.18) & (b < 0.26) & (c > 0.36) & (c < 0.47)] = 4
    p[(b > 0.12) & (b < 0.2) & (c < 0.12)] = 5
    return p


def _person(a: np.ndarray, b: np.ndarray, variant: int) -> np.ndarray:
    c = np.abs(a - 0.5)
    head = ((c / 0.17) ** 2 + ((b - 0.925) / 0.075) ** 2) < 1.0
    torso = (b > 0.47) & (b < 0.85) & (c < 0.3 - 0.1 * (0.85 - b))
    arms = (b > 0.5) & (b < 0.83) & (c > 0.31) & (c < 0.45)
    legs = (b <= 0.5) & (np.abs(c - 0.14) < 0.1)
    p = np.zeros(np.broadcast_shapes(a.shape, b.shape), np.uint8)
    p[legs] = 3
    p[torso | arms] = 2
    p[head] = 1
    return p


def _rider(a: np.ndarray, b: np.ndarray, variant: int) -> np.ndarray:
    c = np.abs(a - 0.5)
    head = ((c / 0.2) ** 2 + ((b - 0.9) / 0.1) ** 2) < 1.0
    torso = (b > 0.35) & (b < 0.82) & (c < 0.36)
    legs = (b <= 0.35) & (np.abs(c - 0.18) < 0.1)
    p = np.zeros(np.broadcast_shapes(a.shape, b.shape), np.uint8)
    p[legs] = 3
    p[torso] = 2
    p[head] = 1
    return p


def _bicycle(a: np.ndarray, b: np.ndarray, variant: int) -> np.ndarray:
    c = np.abs(a - 0.5)
    wheel = (b < 0.62) & (c < 0.06)
    bar = (b > 0.84) & (b < 0.92) & (c < 0.48)
    stem = (b >= 0.55) & (b < 0.9) & (c < 0.035)
    p = np.where(wheel, 1, 0).astype(np.uint8)
    p[bar | stem] = 2
    return p


def _full(a: np.ndarray, b: np.ndarray, variant: int) -> np.ndarray:
    return np.ones(np.broadcast_shapes(a.shape, b.shape), np.uint8)


def _lamp(a: np.ndarray, b: np.ndarray, variant: int) -> np.ndarray:
    p = np.ones(np.broadcast_shapes(a.shape, b.shape), np.uint8)
    p[(b < 0.5) & (np.abs(a - 0.2) < 0.15)] = 2  # the bulb hangs over the road side
    return p


def _traffic_light(a: np.ndarray, b: np.ndarray, variant: int) -> np.ndarray:
    p = np.ones(np.broadcast_shapes(a.shape, b.shape), np.uint8)
    for k, centre in enumerate((0.8, 0.5, 0.2)):
        lamp = ((a - 0.5) / 0.3) ** 2 + ((b - centre) / 0.12) ** 2 < 1.0
        p[lamp] = 2 if k == variant else 3
    return p


def _sign(a: np.ndarray, b: np.ndarray, variant: int) -> np.ndarray:
    ca, cb = a - 0.5, b - 0.5
    if variant == 0:  # round: red ring, white centre
        r2 = ca**2 + cb**2
        p = np.where(r2 < 0.25, 1, 0).astype(np.uint8)
        p[r2 < 0.12] = 2
    elif variant == 1:  # square: blue with a white symbol
        p = np.ones(np.broadcast_shapes(a.shape, b.shape), np.uint8)
        p[(np.abs(ca) < 0.15) & (np.abs(cb) < 0.3)] = 2
    else:  # triangle: white with a red border
        inside = b < 1.0 - 2.0 * np.abs(ca)
        p = np.where(inside, 1, 0).astype(np.uint8)
        p[(b > 0.12) & (b < 0.8 - 2.0 * np.abs(ca))] = 2
    return p


def _tree(a: np.ndarray, b: np.ndarray, variant: int) -> np.ndarray:
    c = np.abs(a - 0.5)
    crown = (c / 0.5) ** 2 + ((b - 0.66) / 0.34) ** 2 < 1.0
    p = np.where((b < 0.45) & (c < 0.05), 1, 0).astype(np.uint8)
    p[crown] = 2
    return p


SHAPES = {CAR: _car, TRUCK: _truck, BUS: _bus, PERSON: _person, RIDER: _rider, BICYCLE: _bicycle,
          POLE: _full, LAMP: _lamp, LIGHT: _traffic_light, SIGN: _sign, TREE: _tree}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Static per-drive data
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class StaticScene:
    """Per-drive constants: camera rays, facade blocks, textures and noise banks."""

    height: int
    width: int
    f: float
    cx: float
    cy: float
    camera_height: float
    ego_x: float
    building_line: tuple[float, float]  # left, right (positive metres)
    block_height: np.ndarray  # [2, K] facade height per block (left, right)
    block_is_hedge: np.ndarray  # [2, K] bool
    block_color: np.ndarray  # [2, K, 3]
    texture: np.ndarray  # [256, 256] float32 multiplicative ground texture around 1
    noise: np.ndarray  # [H+pad, W+pad, 3] standard normal
    noise1: np.ndarray  # [2, H+pad, W+pad] standard normal (depth, thermal)
    uniform: np.ndarray  # [H+pad, W+pad] uniform (dropouts)
    seed: int = 0  # drive seed (the thermal camera's fixed pattern)
    _fpn: dict = dataclasses.field(default_factory=dict, repr=False)
    part_temps: dict = dataclasses.field(default_factory=dict, repr=False)  # realistic thermal cache

    def thermal_fpn(self, model: sensors.ThermalCameraModel) -> sensors.ThermalFpn:
        """This drive's thermal camera fixed pattern (built on first use, then reused)."""
        if model not in self._fpn:
            self._fpn[model] = sensors.ThermalFpn.build(self.seed, self.height, self.width, model)
        return self._fpn[model]

    @functools.cached_property
    def geometry(self) -> _Geometry:
        """Camera-only per-pixel geometry, computed on first use."""
        return _Geometry.build(self)

    @classmethod
    def build(
        cls, seed: int, height: int, width: int, f: float, camera_height: float, ego_x: float
    ) -> StaticScene:
        rng = np.random.default_rng([seed & 0xFFFFFFFF, 3])
        k = 1024
        hedge = rng.uniform(size=(2, k)) < 0.2
        heights = np.where(hedge, rng.uniform(2.5, 4.0, (2, k)), rng.uniform(7.0, 28.0, (2, k)))
        facade = np.array(
            [[0.55, 0.5, 0.45], [0.7, 0.65, 0.55], [0.45, 0.3, 0.25], [0.6, 0.6, 0.62], [0.75, 0.7, 0.6],
             [0.35, 0.35, 0.38]], dtype=np.float32,
        )  # fmt: skip
        colors = facade[rng.integers(len(facade), size=(2, k))]
        colors[hedge] = np.array([0.18, 0.32, 0.12], np.float32)
        texture = (
            0.88 + 0.24 * cv2.GaussianBlur(rng.uniform(size=(256, 256)).astype(np.float32), (3, 3), 0)
        ).astype(np.float32)
        noise, noise1, uniform = _noise_bank(height, width)
        return cls(
            height, width, f, (width - 1) / 2.0, (height - 1) / 2.0, camera_height, ego_x,
            (float(rng.uniform(13.5, 16.0)), float(rng.uniform(13.5, 16.0))), heights.astype(np.float32),
            hedge, colors, texture, noise, noise1, uniform, seed,
        )  # fmt: skip


@functools.lru_cache(maxsize=4)
def _noise_bank(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise shared by all drives of one image size; a frame reads a random window of it.

    Drawing fresh Gaussian noise for three full images costs more than rendering them; a fixed bank
    read at a per-frame random offset keeps frames deterministic and cheap.
    """
    nrng = np.random.default_rng([height, width, 11])
    shape = (height + _NOISE_PAD, width + _NOISE_PAD)
    out = (
        nrng.standard_normal((*shape, 3), dtype=np.float32),
        nrng.standard_normal((2, *shape), dtype=np.float32),
        nrng.uniform(size=shape).astype(np.float32),
    )
    for arr in out:
        arr.setflags(write=False)
    return out


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Geometry:
    """Per-pixel quantities that depend only on the camera (computed once per drive)."""

    dx: np.ndarray  # [1,W] ray x / z
    dy: np.ndarray  # [H,1] ray y / z (+ downwards)
    zg: np.ndarray  # [H,1] ground depth per row (inf at and above the horizon)
    xg: np.ndarray  # [H,W] world x of the ground point (0 where no ground)
    ax: np.ndarray  # [H,W] |xg|
    zg0: np.ndarray  # [H,1] zg with 0 instead of inf
    tex_col: np.ndarray  # [H,W] texture column index of the ground point
    gcls: np.ndarray  # [H,W] ground class by lateral position
    parking: np.ndarray  # [H,W] parking-strip ground
    solid: np.ndarray  # [H,W] solid lane lines
    centre: np.ndarray  # [H,W] centre line (dashed)
    lane: np.ndarray  # [H,W] lane lines (dashed)
    kerb: np.ndarray  # [H,W]
    zf: np.ndarray  # [1,W] facade depth per column
    side: np.ndarray  # [1,W] 0 left, 1 right
    hpix: np.ndarray  # [H,W] height of the facade point seen by each pixel
    hood: np.ndarray  # [H,W] ego bonnet
    zh: np.ndarray  # [H,1] bonnet depth
    sky_t: np.ndarray  # [H,1,1] sky gradient position
    ray: np.ndarray  # [H,W] ray length per unit z-depth

    @classmethod
    def build(cls, st: StaticScene) -> _Geometry:
        h, w = st.height, st.width
        dx = ((np.arange(w, dtype=np.float32) - st.cx) / st.f)[None, :]
        dy = ((np.arange(h, dtype=np.float32) - st.cy) / st.f)[:, None]
        inf = np.float32(np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            zg = np.where(dy > 0, st.camera_height / dy, inf).astype(np.float32)
            xg = zg * dx + st.ego_x
            zf = np.where(
                np.abs(dx) > 1e-6,
                (np.where(dx < 0, -st.building_line[0], st.building_line[1]) - st.ego_x) / dx,
                inf,
            )
            zh = np.where(dy > 0, 0.5 / dy, inf).astype(np.float32)
        xg = np.where(np.isfinite(xg), xg, 0.0).astype(np.float32)
        ax = np.abs(xg)
        zf = np.minimum(zf, 1e5).astype(np.float32)
        u = np.arange(w, dtype=np.float32)
        hood_rows = h * 0.07 * (1.0 - ((u - st.cx) / (w * 0.75)) ** 2)
        return cls(
            dx=dx,
            dy=dy,
            zg=zg,
            xg=xg,
            ax=ax,
            zg0=np.where(np.isfinite(zg), zg, 0.0).astype(np.float32),
            tex_col=(xg * 5.0).astype(np.int64) & 255,
            gcls=np.where(ax < PARKING_OUT, ROAD, np.where(ax < SIDEWALK_OUT, SIDEWALK, TERRAIN)).astype(
                np.uint8
            ),
            parking=(ax >= ROAD_HALF) & (ax < PARKING_OUT),
            solid=np.abs(ax - ROAD_HALF) < 0.08,
            centre=ax < 0.08,
            lane=np.abs(ax - 3.5) < 0.07,
            kerb=np.abs(ax - PARKING_OUT) < 0.12,
            zf=zf,
            side=(dx >= 0).astype(np.int64),
            hpix=(st.camera_height - zf * dy).astype(np.float32),
            hood=(h - 1 - np.arange(h, dtype=np.float32))[:, None] < hood_rows[None, :],
            zh=zh,
            sky_t=np.clip(np.arange(h, dtype=np.float32) / max(st.cy, 1.0), 0.0, 1.0)[:, None, None],
            ray=np.sqrt(1.0 + dx**2 + dy**2).astype(np.float32),
        )


def _background(st: StaticScene, z_ego: float, cond: ConditionModel, lit_seed: int, want_tex: bool = False):
    """Per-pixel depth, class, albedo, emission and temperature of the static world.

    With ``want_tex`` a sixth array is returned: the renderer's random texture factor where it
    was applied (ground and hedges), 1 elsewhere (stereo texture measure).
    """
    h, w = st.height, st.width
    g = st.geometry
    zg, zf, side, hpix = g.zg, g.zf, g.side, g.hpix
    zw_g = g.zg0 + z_ego  # world z of the ground row (z_ego above the horizon)

    # Facade planes: column-wise depth, then height above ground per pixel.
    blk = np.floor((zf + z_ego) / BLOCK_M).astype(np.int64) % st.block_height.shape[1]
    top = st.block_height[side, blk]  # [1,W]
    hedge = st.block_is_hedge[side, blk]
    zwf = zf + z_ego
    top = np.where(hedge, top + 0.6 * np.sin(zwf * 1.7) + 0.4 * np.sin(zwf * 4.3), top)
    facade = (hpix < top) & (zf < zg)

    depth = np.where(facade, zf, zg).astype(np.float32)
    cls = np.full((h, w), SKY, np.uint8)
    ground = ~facade & np.isfinite(zg)
    cls[ground] = g.gcls[ground]
    cls[facade] = np.where(hedge, VEGETATION, BUILDING).astype(np.uint8).repeat(h, 0)[facade]

    # Albedo.
    tex = st.texture[g.tex_col, (zw_g * 5.0).astype(np.int64) & 255]
    palette = np.array([[0.3, 0.3, 0.32], [0.6, 0.58, 0.55], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0],
                        [0, 0, 0], [0.2, 0.33, 0.12], [0.35, 0.42, 0.18], [0, 0, 0]], np.float32)  # fmt: skip
    albedo = palette[cls] * tex[..., None]
    parking = ground & g.parking
    albedo[parking] *= 1.15
    dash = (np.mod(zw_g, 9.0) < 3.5) & (zg < 120.0)
    marks = ground & (((g.centre | g.lane) & dash) | g.solid)
    albedo[marks] = 0.85
    kerb = ground & g.kerb
    albedo[kerb] = 0.7
    fac_col = st.block_color[side, blk][0]  # [W,3]
    fac = np.broadcast_to(fac_col[None], (h, w, 3))
    win = (np.mod(zwf, 2.4) > 0.6) & (np.mod(hpix, 3.2) > 1.0) & (hpix > 2.5) & (hpix < top - 1.0) & ~hedge
    albedo = np.where(facade[..., None], fac, albedo)
    albedo[facade & hedge.repeat(h, 0)] *= tex[facade & hedge.repeat(h, 0)][:, None]
    windows = facade & win
    albedo[windows] = albedo[windows] * 0.35 + 0.05

    emissive = np.zeros((h, w, 3), np.float32)
    sky = cls == SKY
    t = g.sky_t
    sky_rgb = np.asarray(cond.sky_top, np.float32) * (1 - t) + np.asarray(cond.sky_horizon, np.float32) * t
    emissive[sky] = np.broadcast_to(sky_rgb, (h, w, 3))[sky]
    if cond.lit_windows > 0:
        wid = (
            np.floor(zwf / 2.4).astype(np.int64) * 7919
            + np.floor(hpix / 3.2).astype(np.int64) * 104729
            + lit_seed
        )
        lit = windows & ((wid * 2654435761 % 1000) < cond.lit_windows * 1000)
        emissive[lit] = np.array([1.0, 0.8, 0.45], np.float32) * cond.emission

    temps_lut = np.zeros(256, np.float32)
    for k, v in cond.temps.items():
        temps_lut[k] = v
    temp = temps_lut[cls]
    temp[marks] -= 3.0  # paint is cooler than asphalt
    temp[windows] -= 4.0

    # Ego bonnet: a curved band at the bottom, 0.5 m below the camera, ignore label.
    hood = g.hood
    depth = np.where(hood, g.zh, depth).astype(np.float32)
    cls[hood] = IGNORE_INDEX
    albedo[hood] = np.array([0.12, 0.12, 0.14], np.float32)
    emissive[hood] = 0.0
    temp[hood] = 35.0
    depth[sky] = np.inf
    if not want_tex:
        return depth, cls, albedo, emissive, temp
    texmap = np.where(ground & ~marks & ~kerb, tex, 1.0).astype(np.float32)
    hedge_px = facade & hedge.repeat(h, 0)
    texmap[hedge_px] = tex[hedge_px]
    texmap[hood] = 1.0
    return depth, cls, albedo, emissive, temp, texmap


def _project(st: StaticScene, p: Primitive, t: float, z_ego: float):
    """Pixel rectangle and local coordinates of a primitive; None if it covers no pixel centre."""
    dt = t - p.t_s
    z = p.z0 + p.vz * dt - z_ego
    if z < 1.0:
        return None
    x = p.x0 + p.vx * dt - st.ego_x
    s = st.f / z
    ul, ur = st.cx + (x - p.width / 2) * s, st.cx + (x + p.width / 2) * s
    vt = st.cy + (st.camera_height - p.bottom - p.height) * s
    vb = st.cy + (st.camera_height - p.bottom) * s
    c0, c1 = max(0, math.ceil(ul)), min(st.width, math.ceil(ur))
    r0, r1 = max(0, math.ceil(vt)), min(st.height, math.ceil(vb))
    if c1 <= c0 or r1 <= r0:
        return None
    a = ((np.arange(c0, c1, dtype=np.float32) - ul) / (ur - ul))[None, :]
    b = ((vb - np.arange(r0, r1, dtype=np.float32)) / (vb - vt))[:, None]
    return z + p.depth_offset, (r0, r1, c0, c1), a, b


def render(
    st: StaticScene,
    prims: list[Primitive],
    t: float,
    z_ego: float,
    condition: str,
    noise_rng: np.random.Generator,
    max_depth: float,
    depth_dropout: float,
    fog_visibility: float,
    lit_seed: int,
    depth_model: str = "ideal",
    thermal_model: str = "ideal",
    lidar: sensors.LidarModel | None = None,
    stereo: sensors.StereoModel | None = None,
    thermal_camera: sensors.ThermalCameraModel | None = None,
) -> RenderOutput:
    """Render one frame at time ``t`` (ego at ``z_ego``) under ``condition``.

    ``depth_model`` is ``ideal``, ``lidar`` or ``stereo`` (``mix`` is resolved per frame by the
    drive), ``thermal_model`` ``ideal`` or ``realistic``; the model parameters default to
    :mod:`.sensors`' defaults.
    """
    cond = CONDITION_MODELS[condition]
    h, w = st.height, st.width
    if depth_model not in ("ideal", "lidar", "stereo") or thermal_model not in sensors.THERMAL_MODELS:
        raise ValueError(
            f"render: depth_model must be ideal, lidar or stereo and thermal_model one of "
            f"{list(sensors.THERMAL_MODELS)}; got {depth_model!r}, {thermal_model!r}"
        )
    want_stereo = depth_model == "stereo"
    real_thermal = thermal_model == "realistic"
    tcam = thermal_camera or sensors.ThermalCameraModel()
    if want_stereo:
        zbuf, cls, albedo, emissive, temp, texmap = _background(st, z_ego, cond, lit_seed, want_tex=True)
        zbg = zbuf.copy()
    else:
        zbuf, cls, albedo, emissive, temp = _background(st, z_ego, cond, lit_seed)
    idbuf = np.full((h, w), -1, np.int32)

    placed = []
    for p in prims:
        proj = _project(st, p, t, z_ego)
        if proj is not None:
            placed.append((proj[0], p, proj))
    placed.sort(key=lambda item: -item[0])  # far to near (ties keep the z-buffer stable)
    objects: list[tuple[Primitive, tuple[int, int, int, int], np.ndarray]] = []
    lamps = []
    for z, p, (_, (r0, r1, c0, c1), a, b) in placed:
        parts = SHAPES[p.shape](a, b, p.variant)
        mask = parts > 0
        if p.shape == LAMP:
            lamps.append((p.x0 - st.ego_x, z))
        if p.is_object:
            if not mask.any():
                continue
            objects.append((p, (r0, r1, c0, c1), mask))
            oid = len(objects) - 1
        else:
            oid = -1
        zc = zbuf[r0:r1, c0:c1]
        win = mask & (z < zc)
        if not win.any():
            continue
        zc[win] = z
        cls[r0:r1, c0:c1][win] = p.train_id
        idbuf[r0:r1, c0:c1][win] = oid
        pw = parts[win]
        # Slight top-lit shading makes billboards read as solids.
        shade = (0.8 + 0.25 * np.broadcast_to(b, mask.shape)[win])[:, None]
        albedo[r0:r1, c0:c1][win] = p.colors[pw] * shade
        emissive[r0:r1, c0:c1][win] = p.emissive[pw] * cond.emission
        if real_thermal:
            key = (p.track_id, condition, tcam)
            ptemps = st.part_temps.get(key)
            if ptemps is None:  # objects keep their temperatures over a drive: compute once
                if len(st.part_temps) > 50_000:
                    st.part_temps.clear()
                ptemps = sensors.realistic_part_temps(
                    p, condition, cond.temps[SKY], st.seed, tcam, p.shape in (CAR, TRUCK, BUS)
                )
                st.part_temps[key] = ptemps
            temp[r0:r1, c0:c1][win] = ptemps[pw]
        else:
            temp[r0:r1, c0:c1][win] = p.temps[pw]

    # ---- objects: visible / amodal masks, boxes, occlusion
    n = len(objects)
    vis_area = np.bincount(idbuf[idbuf >= 0], minlength=n) if n else np.zeros(0, np.int64)
    keep = [k for k in range(n) if vis_area[k] >= 1]  # fully hidden objects are dropped
    remap = np.zeros(n + 1, np.int32)  # idbuf + 1 -> instance id
    for new, k in enumerate(keep, start=1):
        remap[k + 1] = new
    instance = remap[idbuf + 1]
    m = len(keep)
    visible = np.zeros((m, h, w), bool)
    amodal = np.zeros((m, h, w), bool)
    boxes = np.zeros((m, 4), np.float32)
    labels = np.zeros(m, np.int64)
    occ = np.zeros(m, np.float32)
    tracks = np.zeros(m, np.int64)
    for row, k in enumerate(keep):
        p, (r0, r1, c0, c1), mask = objects[k]
        amodal[row, r0:r1, c0:c1] = mask
        vis = instance[r0:r1, c0:c1] == row + 1
        visible[row, r0:r1, c0:c1] = vis
        ys, xs = np.nonzero(vis)
        boxes[row] = (c0 + xs.min(), r0 + ys.min(), c0 + xs.max() + 1, r0 + ys.max() + 1)
        labels[row] = p.train_id
        tracks[row] = p.track_id
        occ[row] = 1.0 - float(vis.sum()) / float(mask.sum())

    # ---- RGB: light, emit, fog, noise
    valid = np.isfinite(zbuf)
    dx = st.geometry.dx
    illum = np.full((h, w), cond.ambient, np.float32)
    if cond.headlights > 0 or (cond.lamps > 0 and lamps):
        # Artificial light is smooth: compute it on a 4x coarser grid and upsample.
        zs = np.where(valid, zbuf, 1e4)[::4, ::4]
        xs = zs * dx[:, ::4]
        add = np.zeros_like(zs)
        if cond.headlights > 0:
            add += cond.headlights * np.exp(-zs / 22.0) * np.exp(-((xs / (1.2 + 0.3 * zs)) ** 2))
        for lx, lz in lamps:
            if 0.0 < lz < 90.0:
                add += cond.lamps * np.exp(-((xs - lx) ** 2 + (zs - lz) ** 2) / 50.0)
        illum += cv2.resize(add, (w, h), interpolation=cv2.INTER_LINEAR)
    rgb = albedo * illum[..., None] * np.asarray(cond.tint, np.float32) + emissive
    if cond.bloom > 0:
        small = cv2.resize(emissive * (~np.broadcast_to((cls == SKY)[..., None], emissive.shape)), (w // 4, h // 4),
                           interpolation=cv2.INTER_AREA)  # fmt: skip
        glow = cv2.GaussianBlur(small, (0, 0), 2.0)
        rgb += cond.bloom * 2.0 * cv2.resize(glow, (w, h), interpolation=cv2.INTER_LINEAR)
    rng_dist = np.where(valid, zbuf * st.geometry.ray, np.inf)
    if want_stereo:
        # Noise-free luminance for the stereo texture measure: the surface's own (its grain's
        # contrast scales with it) and without the renderer's ground texture (edges only).
        luma_w = np.array([0.299, 0.587, 0.114], np.float32) * 255.0
        surface = rgb @ luma_w
        bg = (zbuf == zbg) & (texmap != 1.0)
        structure = np.where(bg, surface / np.where(bg, texmap, 1.0), surface).astype(np.float32)
    if condition == "fog":
        trans = np.exp(-3.912 / fog_visibility * rng_dist)[..., None]
        rgb = rgb * trans + FOG_COLOR * (1.0 - trans)
        if want_stereo:
            surface = surface * trans[..., 0]
            structure = structure * trans[..., 0] + float(FOG_COLOR @ luma_w) * (1.0 - trans[..., 0])
    oy, ox = noise_rng.integers(0, _NOISE_PAD, size=2)
    rgb = rgb * 255.0 + cond.noise * st.noise[oy : oy + h, ox : ox + w]
    rgb_u8 = np.clip(rgb + 0.5, 0, 255).astype(np.uint8)

    # ---- depth: noise grows with z^2, range limit, fog visibility, dropouts, sky
    dy_, dx_ = noise_rng.integers(0, _NOISE_PAD, size=2)
    uy, ux = noise_rng.integers(0, _NOISE_PAD, size=2)
    if depth_model == "ideal":
        sigma = DEPTH_NOISE[0] + DEPTH_NOISE[1] * np.where(valid, zbuf, 0.0) ** 2
        limit = max_depth
        if condition == "fog":
            sigma = sigma * 3.0
            limit = min(limit, fog_visibility)
        depth = zbuf + sigma * st.noise1[0, dy_ : dy_ + h, dx_ : dx_ + w]
        bad = ~valid | (zbuf > limit) | (st.uniform[uy : uy + h, ux : ux + w] < depth_dropout) | (depth <= 0)
        depth = np.where(bad, 0.0, depth).astype(np.float32)

    # ---- thermal
    ty, tx = noise_rng.integers(0, _NOISE_PAD, size=2)
    tnoise = st.noise1[1, ty : ty + h, tx : tx + w]
    if real_thermal:
        pixel_deg = math.degrees(math.atan(1.0 / st.f))
        thermal = sensors.realistic_thermal(temp, st.thermal_fpn(tcam), t, pixel_deg, tnoise, tcam)
    else:
        counts = kelvin_counts(temp) + THERMAL_NOISE_COUNTS * tnoise
        thermal = np.clip(counts + 0.5, 0, 65535).astype(np.uint16)

    # ---- realistic depth sensors (their random draws come after all of the ideal ones)
    if depth_model == "lidar":
        beta = 3.912 / fog_visibility if condition == "fog" else 0.0
        depth = sensors.lidar_depth(
            zbuf, albedo.mean(axis=2), valid & (cls != IGNORE_INDEX), st.f, st.cx, st.cy, beta, noise_rng,
            lidar or sensors.LidarModel(),
        )  # fmt: skip
    elif depth_model == "stereo":
        sy, sx = noise_rng.integers(0, _NOISE_PAD, size=2)
        bank = sensors.correlated_noise_bank(h, w, _NOISE_PAD)
        depth = sensors.stereo_depth(
            zbuf, cls, surface, structure, cond.noise, st.f, st.camera_height, bank[sy : sy + h, sx : sx + w],
            stereo or sensors.StereoModel(),
        )  # fmt: skip

    return RenderOutput(
        rgb_u8, depth, thermal, cls, instance.astype(np.int32), boxes, labels, occ, visible, amodal, tracks
    )
