"""The synthetic driving world: camera, road layout, condition models and the object population.

World frame: ``x`` to the right of the road's centre line, ``z`` along the road (the ego drives
towards ``+z``), heights measured up from the ground. The ego camera looks along ``+z`` from
``(ego_x, camera_height, ego_speed * t)`` with zero pitch and roll, so the horizon is the image's
middle row.

Cross-section of the road (metres from the centre line, both sides mirrored)::

    0 ..  7   four driving lanes, 3.5 m wide: ego lane centre +1.75, same-direction lane +5.25,
              oncoming lanes -1.75 and -5.25; dashed centre line at 0, dashed lane lines at +-3.5,
              solid lines at +-7
    7 ..  9   parking strip (parked cars, cyclists near its inner edge) - labelled road
    9 .. 12   sidewalk (pedestrians, poles, signs, traffic lights at its kerb)
    12 .. b   terrain (grass, trees) up to the building line b (13.5 .. 16 m, per drive)
    b ..      building facades / hedges: one block every 12 m with its own height

Objects live in 20 m road *segments*. Segment ``s`` is populated from its own random stream
``(seed, s)``, so any frame can be rendered without rendering the frames before it, and the same
segment always holds the same objects (temporal coherence). Every object moves at a constant
velocity; it exists while ``|t - t_s| <= LIFETIME_S``, where ``t_s`` is the time the ego is 40 m
before the segment. Relative speeds to the ego are at least 3 m/s, so objects appear and vanish
only far away (beyond ~130 m, a few pixels) or behind the camera.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from damcseg_core.config import ConfigError
from damcseg_core.data.synthetic.sensors import (
    LidarModel,
    StereoModel,
    ThermalCameraModel,
    check_sensor_models,
)

__all__ = [
    "CONDITIONS",
    "Primitive",
    "SyntheticWorldConfig",
    "camera_intrinsics",
    "kelvin_counts",
    "populate_segment",
]

CONDITIONS: tuple[str, ...] = ("day", "dusk", "night", "fog")
"""Condition tags the world can render."""

SEGMENT_M = 20.0  # length of one population segment along the road
LIFETIME_S = 30.0  # an object exists while |t - t_s| <= this
LEAD_IN_M = 40.0  # t_s = time the ego is this far before the segment start
BLOCK_M = 12.0  # facade block length
ROAD_HALF = 7.0  # driving lanes end here (solid line)
PARKING_OUT = 9.0  # parking strip ends, sidewalk starts
SIDEWALK_OUT = 12.0  # sidewalk ends, terrain starts


def kelvin_counts(celsius: np.ndarray | float) -> np.ndarray:
    """Radiometric thermal counts of a temperature: ``counts = 100 * kelvin`` (0.01 K per count).

    34 C (skin) -> 30715, -40 C (clear night sky) -> 23315; the full uint16 range covers
    -273.15 C .. 382.2 C, so no scene temperature saturates.
    """
    return np.asarray(celsius, dtype=np.float32) * 100.0 + 27315.0


def camera_intrinsics(height: int, width: int, hfov_deg: float = 90.0) -> np.ndarray:
    """3x3 pinhole camera matrix of the synthetic camera.

    ``fx = fy = (width / 2) / tan(hfov / 2)`` (square pixels), principal point at the image centre
    ``cx = (width - 1) / 2``, ``cy = (height - 1) / 2`` (pixel centres at integer coordinates), the
    same convention as :func:`damcseg_core.data.rosbag_io.pinhole_intrinsics`. At 256x512 and the
    default 90 degree field of view: ``f = 256``, vertical field of view 53 degrees.
    """
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


@dataclasses.dataclass
class SyntheticWorldConfig:
    """Settings of one synthetic drive (:class:`SyntheticDrive`)."""

    size: tuple[int, int] = (256, 512)  # image (height, width) in pixels
    seed: int = 0  # every array of every frame is a pure function of the config (incl. seed)
    conditions: tuple[str, ...] = ("day",)  # condition of frames not covered by condition_schedule
    condition_schedule: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    # ^ (start_frame, condition) pairs: from start_frame on, frames use that condition
    crowd: tuple[float, float] = (0.0, 1.0)  # density range; each road segment draws one value
    crowd_schedule: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    # ^ (start_frame, density) pairs: segments the ego reaches from start_frame on use that density
    fps: float = 10.0  # frame rate; frame i is at t = i / fps seconds
    ego_speed: float = 10.0  # m/s along the road, 5 .. 30
    ego_x: float = 1.75  # lateral camera position (ego lane centre)
    camera_height: float = 1.5  # metres above the road
    hfov_deg: float = 90.0  # horizontal field of view
    max_depth: float = 80.0  # range of the ideal depth model; farther readings are 0 (invalid)
    depth_dropout: float = 0.02  # fraction of random invalid (0) pixels of the ideal depth model
    depth_model: str = "ideal"  # ideal | lidar | stereo | mix (see sensors.py)
    thermal_model: str = "ideal"  # ideal | realistic (see sensors.py)
    lidar_fraction: float = 0.5  # depth_model=mix: probability that a frame's depth is lidar
    lidar: LidarModel | None = None  # scanner parameters; None = sensors.LidarModel()
    stereo: StereoModel | None = None  # rig parameters; None = sensors.StereoModel()
    thermal_camera: ThermalCameraModel | None = None  # None = sensors.ThermalCameraModel()
    fog_visibility: float = 45.0  # meteorological visibility in fog, metres (beta = 3.912 / V)
    start_stamp_ns: int = 1_767_225_600_000_000_000  # stamp of frame 0 (2026-01-01T00:00Z)

    def __post_init__(self) -> None:
        h, w = self.size
        if h < 16 or w < 16:
            raise ConfigError(f"size must be at least 16x16 pixels (e.g. 256x512), got {h}x{w}")
        bad = [c for c in self.conditions if c not in CONDITIONS]
        bad += [c for _, c in self.condition_schedule if c not in CONDITIONS]
        if not self.conditions or bad:
            raise ConfigError(
                f"conditions must be a non-empty selection of {list(CONDITIONS)}, got {bad or 'none'}"
            )
        lo, hi = self.crowd
        values = [lo, hi] + [c for _, c in self.crowd_schedule]
        if not (lo <= hi) or min(values) < 0.0 or max(values) > 1.0:
            raise ConfigError(
                f"crowd densities must lie in [0, 1] with lo <= hi (e.g. crowd=(0.2, 0.8)), "
                f"got range {self.crowd} and schedule {self.crowd_schedule}"
            )
        for name, sched in (
            ("condition_schedule", self.condition_schedule),
            ("crowd_schedule", self.crowd_schedule),
        ):
            starts = [s for s, _ in sched]
            if starts != sorted(starts) or any(s < 0 for s in starts):
                raise ConfigError(f"{name} start frames must be >= 0 and increasing, got {starts}")
        if not 5.0 <= self.ego_speed <= 30.0:
            raise ConfigError(f"ego_speed must be in [5, 30] m/s, got {self.ego_speed}")
        if self.fps <= 0 or self.max_depth <= 0 or self.fog_visibility <= 0:
            raise ConfigError("fps, max_depth and fog_visibility must be positive")
        if not 0.0 <= self.depth_dropout < 1.0:
            raise ConfigError(f"depth_dropout must be in [0, 1), got {self.depth_dropout}")
        if not 30.0 <= self.hfov_deg <= 150.0:
            raise ConfigError(f"hfov_deg must be in [30, 150], got {self.hfov_deg}")
        check_sensor_models(self.depth_model, self.thermal_model, self.lidar_fraction)

    def depth_model_at(self, frame: int) -> str:
        """Depth model of frame ``frame``: ``mix`` draws lidar or stereo per frame (seeded)."""
        if self.depth_model != "mix":
            return self.depth_model
        u = np.random.default_rng([self.seed & 0xFFFFFFFF, 19, frame]).uniform()
        return "lidar" if u < self.lidar_fraction else "stereo"

    def condition_at(self, frame: int) -> str:
        """Condition of frame ``frame``: the last schedule entry started at or before it."""
        cond = self.conditions[0]
        for start, c in self.condition_schedule:
            if start <= frame:
                cond = c
        return cond

    def crowd_at(self, frame: int) -> float | None:
        """Scheduled density at ``frame``; ``None`` when no schedule entry covers it."""
        value = None
        for start, c in self.crowd_schedule:
            if start <= frame:
                value = c
        return value


# ---------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------

# Shape ids (see render.SHAPES).
CAR, TRUCK, BUS, PERSON, RIDER, BICYCLE, POLE, LIGHT, SIGN, TREE, LAMP = range(11)


@dataclasses.dataclass
class Primitive:
    """One fronto-parallel textured billboard (an object or a piece of stuff such as a pole).

    Position at time ``t``: ``x = x0 + vx * (t - t_s)``, ``z = z0 + vz * (t - t_s)``.
    """

    shape: int  # shape id (CAR, PERSON, ...)
    train_id: int  # semantic class of its pixels
    is_object: bool  # True for detection classes (gets an instance id, box, masks)
    x0: float  # lateral centre at t_s, metres
    z0: float  # along-road position of its front face at t_s, metres
    vx: float  # lateral velocity, m/s
    vz: float  # along-road velocity, m/s
    t_s: float  # reference time of x0/z0, seconds
    width: float  # metres
    height: float  # metres
    bottom: float  # height of its lower edge above the ground, metres
    colors: np.ndarray  # [P+1, 3] albedo per part (row 0 unused), 0..1
    temps: np.ndarray  # [P+1] temperature per part, Celsius (condition independent)
    emissive: np.ndarray  # [P+1, 3] light emitted per part, 0..1 (lamps, car lights)
    variant: int = 0  # shape variant (sign form, lit lamp, car facing)
    depth_offset: float = 0.0  # added to the depth of its pixels (keeps riders in front of bikes)
    track_id: int = -1  # identity, stable over the frames of a drive (segment * 1000 + k)


_SHIRTS = np.array(
    [[0.7, 0.1, 0.1], [0.1, 0.2, 0.6], [0.85, 0.85, 0.8], [0.15, 0.15, 0.15], [0.9, 0.6, 0.1],
     [0.2, 0.5, 0.25], [0.5, 0.3, 0.6], [0.3, 0.6, 0.8]], dtype=np.float32,
)  # fmt: skip
_CAR_PAINT = np.array(
    [[0.8, 0.8, 0.82], [0.08, 0.08, 0.1], [0.6, 0.05, 0.05], [0.1, 0.2, 0.5], [0.5, 0.5, 0.52],
     [0.9, 0.9, 0.9], [0.2, 0.35, 0.25], [0.75, 0.6, 0.2]], dtype=np.float32,
)  # fmt: skip
_SKIN = np.array([[0.9, 0.7, 0.55], [0.6, 0.42, 0.3], [0.4, 0.26, 0.18]], dtype=np.float32)
_BLACK = np.zeros(3, np.float32)


def _arr(rows: list) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


def _vehicle(
    rng: np.random.Generator, kind: int, x: float, z: float, vz: float, t_s: float, moving: bool
) -> Primitive:
    """Car, truck or bus seen from behind (moving away) or the front (oncoming, vz < 0)."""
    oncoming = vz < 0
    if kind == CAR:
        w, h, tid = rng.uniform(1.7, 1.9), rng.uniform(1.4, 1.6), 13
        paint = _CAR_PAINT[rng.integers(len(_CAR_PAINT))]
    elif kind == TRUCK:
        w, h, tid = 2.5, rng.uniform(3.0, 3.8), 14
        paint = _CAR_PAINT[rng.integers(len(_CAR_PAINT))] * 0.9 + 0.05
    else:
        w, h, tid = 2.55, rng.uniform(3.0, 3.3), 15
        paint = _arr([[0.85, 0.75, 0.1], [0.8, 0.15, 0.1], [0.1, 0.4, 0.7]])[rng.integers(3)]
    light = _arr([1.0, 0.95, 0.8]) if oncoming else _arr([0.9, 0.05, 0.02])
    engine = 65.0 if moving else 21.0  # grille / exhaust region
    colors = _arr([_BLACK, paint, [0.12, 0.15, 0.2], [0.05, 0.05, 0.05], light * 0.6 + 0.2, paint * 0.5])
    temps = _arr([0, 19.0, 12.0, 38.0 if moving else 19.0, 45.0 if moving else 19.0, engine])
    # Lights shine only when the engine runs (parked cars are dark at night).
    emissive = np.zeros((6, 3), np.float32)
    if moving:
        emissive[4] = light
    return Primitive(kind, tid, True, x, z, 0.0, vz, t_s, w, h, 0.0, colors, temps, emissive,
                     variant=int(oncoming))  # fmt: skip


def _person(
    rng: np.random.Generator, x: float, z: float, vx: float, vz: float, t_s: float, rider: bool = False
) -> Primitive:
    h = rng.uniform(1.55, 1.9) if not rider else rng.uniform(1.25, 1.35)  # a rider sits
    skin = _SKIN[rng.integers(len(_SKIN))]
    colors = _arr(
        [_BLACK, skin, _SHIRTS[rng.integers(len(_SHIRTS))], _SHIRTS[rng.integers(len(_SHIRTS))] * 0.6]
    )
    temps = _arr([0, 34.0, 30.0, 28.0])  # skin, upper clothes, trousers
    return Primitive(
        RIDER if rider else PERSON, 12 if rider else 11, True, x, z, vx, vz, t_s,
        h * rng.uniform(0.28, 0.34), h, 0.45 if rider else 0.0, colors, temps, np.zeros((4, 3), np.float32),
        depth_offset=-0.15 if rider else 0.0,
    )  # fmt: skip


def _bicycle(x: float, z: float, vz: float, t_s: float) -> Primitive:
    colors = _arr([_BLACK, [0.06, 0.06, 0.06], [0.55, 0.55, 0.6]])
    temps = _arr([0, 16.0, 15.0])
    return Primitive(
        BICYCLE, 18, True, x, z, 0.0, vz, t_s, 0.6, 1.1, 0.0, colors, temps, np.zeros((3, 3), np.float32)
    )


def _stuff(shape: int, train_id: int, is_object: bool, x: float, z: float, t_s: float, w: float, h: float,
           bottom: float, colors: list, temps: list, emissive: list | None = None, variant: int = 0,
           depth_offset: float = 0.0) -> Primitive:  # fmt: skip
    em = np.zeros((len(colors), 3), np.float32) if emissive is None else _arr(emissive)
    return Primitive(shape, train_id, is_object, x, z, 0.0, 0.0, t_s, w, h, bottom, _arr(colors), _arr(temps), em,
                     variant=variant, depth_offset=depth_offset)  # fmt: skip


def _slots(
    rng: np.random.Generator, count: int, start: float, spacing: float, length: float = SEGMENT_M
) -> list[float]:
    """Up to ``count`` non-overlapping positions ``spacing`` apart inside one segment."""
    n_slots = int(length // spacing)
    count = min(count, n_slots)
    chosen = np.sort(rng.choice(n_slots, size=count, replace=False)) if count else []
    return [start + spacing * (k + rng.uniform(0.0, 0.3)) for k in chosen]


def populate_segment(
    seed: int, s: int, crowd: float | None, crowd_range: tuple[float, float], ego_speed: float
) -> list[Primitive]:
    """All primitives of road segment ``s`` (``z`` in ``[20 s, 20 s + 20)``).

    Args:
        seed: World seed.
        s: Segment index (negative ones lie behind the start).
        crowd: Density from the schedule, or ``None`` to draw it from ``crowd_range``.
        crowd_range: ``(lo, hi)`` density range.
        ego_speed: Ego speed, m/s (sets ``t_s`` and keeps relative speeds >= 3 m/s).

    Returns:
        Primitives; positions are given at ``t_s`` of the segment.
    """
    rng = np.random.default_rng([seed & 0xFFFFFFFF, 7, s + (1 << 31)])
    c = float(rng.uniform(*crowd_range)) if crowd is None else float(crowd)
    z_s = s * SEGMENT_M
    t_s = (z_s - LEAD_IN_M) / ego_speed
    out: list[Primitive] = []
    sides = (-1.0, 1.0)

    # Street furniture: a lamp post every other segment per side, signs and traffic lights.
    for side in sides:
        if (s + (side > 0)) % 2 == 0:
            z = z_s + rng.uniform(0, SEGMENT_M)
            out.append(
                _stuff(
                    POLE,
                    5,
                    False,
                    side * 9.3,
                    z,
                    t_s,
                    0.18,
                    7.5,
                    0.0,
                    [_BLACK, [0.45, 0.45, 0.47]],
                    [0, 14.0],
                )
            )
            out.append(_stuff(LAMP, 5, False, side * 8.4, z, t_s, 1.6, 0.22, 7.3,
                              [_BLACK, [0.4, 0.4, 0.42], [1.0, 0.95, 0.8]], [0, 14.0, 30.0],
                              [[0, 0, 0], [0, 0, 0], [1.0, 0.85, 0.55]]))  # fmt: skip
        for _ in range(rng.poisson(0.25 + 0.5 * c)):
            z = z_s + rng.uniform(0, SEGMENT_M)
            variant = int(rng.integers(3))
            plate = [[0.8, 0.1, 0.1], [0.1, 0.25, 0.7], [0.9, 0.9, 0.9]][variant]
            out.append(
                _stuff(
                    POLE,
                    5,
                    False,
                    side * 9.4,
                    z + 0.05,
                    t_s,
                    0.08,
                    2.3,
                    0.0,
                    [_BLACK, [0.5, 0.5, 0.5]],
                    [0, 14.0],
                )
            )
            out.append(_stuff(SIGN, 7, True, side * 9.4, z, t_s, 0.65, 0.65, 2.2,
                              [_BLACK, plate, [0.95, 0.95, 0.95]], [0, 14.0, 14.0], variant=variant))  # fmt: skip
        for _ in range(rng.poisson(0.1 + 0.3 * c)):
            z = z_s + rng.uniform(0, SEGMENT_M)
            lit = int(rng.integers(3))
            lamp = [[1.0, 0.1, 0.05], [1.0, 0.7, 0.05], [0.1, 1.0, 0.4]][lit]
            out.append(
                _stuff(
                    POLE,
                    5,
                    False,
                    side * 9.2,
                    z + 0.05,
                    t_s,
                    0.14,
                    3.0,
                    0.0,
                    [_BLACK, [0.3, 0.3, 0.3]],
                    [0, 14.0],
                )
            )
            out.append(_stuff(LIGHT, 6, True, side * 9.2, z, t_s, 0.38, 1.0, 2.7,
                              [_BLACK, [0.12, 0.12, 0.12], [v * 0.8 for v in lamp], [0.2, 0.2, 0.2]],
                              [0, 18.0, 35.0, 18.0], [[0, 0, 0], [0, 0, 0], lamp, [0, 0, 0]], variant=lit))  # fmt: skip
        # Trees on the terrain strip.
        for z in _slots(rng, int(rng.poisson(1.2)), z_s, 6.0):
            h = rng.uniform(5.0, 9.0)
            green = _arr([0.2, 0.35, 0.12]) * rng.uniform(0.7, 1.2)
            out.append(_stuff(TREE, 8, False, side * rng.uniform(12.8, 13.3), z, t_s, h * rng.uniform(0.45, 0.6), h, 0.0,
                              [_BLACK, [0.3, 0.2, 0.12], green], [0, 16.0, 15.0]))  # fmt: skip

    # Parked cars along both kerbs, with pedestrians between and behind them.
    for side in sides:
        for z in _slots(rng, int(rng.poisson(3.0 * c)), z_s, 5.2):
            kind = TRUCK if rng.uniform() < 0.08 else CAR
            out.append(_vehicle(rng, kind, side * rng.uniform(7.9, 8.2), z, 0.0, t_s, moving=False))
        # Pedestrian groups on the sidewalk; crowded scenes get dense groups (mutual occlusion).
        for _ in range(rng.poisson(3.0 * c)):
            gz, gx = z_s + rng.uniform(0, SEGMENT_M), side * rng.uniform(9.5, 11.5)
            vz = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.5)) if rng.uniform() < 0.6 else 0.0
            for _ in range(1 + rng.poisson(1.5 * c)):
                out.append(
                    _person(rng, gx + rng.uniform(-0.5, 0.5), gz + rng.uniform(-1.2, 1.2), 0.0, vz, t_s)
                )
        # Someone stepping between parked cars: mostly hidden.
        if rng.uniform() < 0.4 * c:
            out.append(
                _person(rng, side * rng.uniform(8.4, 8.9), z_s + rng.uniform(0, SEGMENT_M), 0.0, 0.0, t_s)
            )

    # Moving traffic. Same-direction lane: faster or slower than the ego by >= 3 m/s.
    for _ in range(rng.poisson(0.8 * c)):
        dv = rng.uniform(3.0, 8.0)
        v = ego_speed + dv if (rng.uniform() < 0.5 or ego_speed - dv < 0.5) else ego_speed - dv
        kind = [CAR, CAR, CAR, CAR, TRUCK, BUS][rng.integers(6)]
        out.append(
            _vehicle(rng, kind, 5.25 + rng.uniform(-0.3, 0.3), z_s + rng.uniform(0, SEGMENT_M), v, t_s, True)
        )
    for lane in (-1.75, -5.25):
        for z in _slots(rng, int(rng.poisson(0.9 * c)), z_s, 10.0):
            kind = [CAR, CAR, CAR, CAR, TRUCK, BUS][rng.integers(6)]
            out.append(
                _vehicle(rng, kind, lane + rng.uniform(-0.3, 0.3), z, -rng.uniform(6.0, 14.0), t_s, True)
            )
    # Cyclists along the parking strip, slower than the ego (rider in front of the bicycle).
    for _ in range(rng.poisson(0.6 * c)):
        side = 1.0 if rng.uniform() < 0.75 else -1.0
        v = max(0.0, ego_speed - rng.uniform(4.0, 7.0)) if side > 0 else -rng.uniform(3.0, 6.0)
        x, z = side * rng.uniform(6.6, 7.4), z_s + rng.uniform(0, SEGMENT_M)
        out.append(_bicycle(x, z, v, t_s))
        out.append(_person(rng, x, z, 0.0, v, t_s, rider=True))
    return out
