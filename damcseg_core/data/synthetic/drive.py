"""Drives through the synthetic world: coherent frame sequences and independent training scenes."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from damcseg_core import MODALITIES
from damcseg_core.config import ConfigError
from damcseg_core.data.io_utils import make_sample, parse_size
from damcseg_core.data.synthetic.render import StaticScene, render
from damcseg_core.data.synthetic.sensors import check_sensor_models
from damcseg_core.data.synthetic.world import (
    CONDITIONS,
    LEAD_IN_M,
    LIFETIME_S,
    SEGMENT_M,
    Primitive,
    SyntheticWorldConfig,
    camera_intrinsics,
    populate_segment,
)

FAR_M = 200.0
"""Objects farther ahead are not drawn (a pedestrian there is under 2 px tall at 256x512)."""

__all__ = ["SyntheticConfig", "SyntheticDataset", "SyntheticDrive", "SyntheticFrame", "frame_to_sample"]


@dataclasses.dataclass
class SyntheticFrame:
    """One frame of the synthetic world; every array is registered to the RGB camera.

    Objects (rows of ``boxes``/``labels``/...) are the detection-class primitives with at least one
    visible pixel; fully hidden ones are dropped. Boxes are xyxy with exclusive right/bottom edge
    (``x2 = last column + 1``), as :func:`damcseg_core.data.io_utils.boxes_from_instances`.
    Occlusion counts only pixels inside the image: leaving the image is truncation, not occlusion.
    """

    rgb: np.ndarray  # HxWx3 uint8, RGB order
    depth: np.ndarray  # HxW float32 z-depth metres, 0 = invalid (sky, out of range, dropout, no return)
    thermal: np.ndarray  # HxW uint16 radiometric counts = 100 * kelvin
    semantic: np.ndarray  # HxW uint8 Cityscapes train ids, 255 = ignore (ego bonnet)
    instance: np.ndarray  # HxW int32, 0 = none, k = object row k-1 (visible pixels)
    boxes: np.ndarray  # [N,4] float32 xyxy of the visible pixels
    labels: np.ndarray  # [N] int64 train ids (DETECTION_TRAIN_IDS)
    occlusion: np.ndarray  # [N] float32, 1 - visible / amodal area
    visible_masks: np.ndarray  # [N,H,W] bool
    amodal_masks: np.ndarray  # [N,H,W] bool (full extent, as if nothing occluded it)
    condition: str  # day | dusk | night | fog
    stamp_ns: int  # capture time
    frame_index: int  # index in its drive
    sequence: str  # drive name, e.g. "drive_000007"
    intrinsics: np.ndarray  # 3x3 float64 camera matrix
    crowd: float  # density of the segment the ego is in
    track_ids: np.ndarray  # [N] int64 object identities, stable over the frames of a drive
    depth_model: str = "ideal"  # sensor model that made `depth`: ideal | lidar | stereo
    thermal_model: str = "ideal"  # sensor model that made `thermal`: ideal | realistic

    @property
    def areas(self) -> np.ndarray:
        """Visible pixel area per object, float32 ``[N]``."""
        return self.visible_masks.reshape(len(self.labels), -1).sum(1).astype(np.float32)


class SyntheticDrive:
    """A deterministic drive along the synthetic road (see :mod:`.world` for the layout).

    Frame ``i`` is a pure function of the config and ``i``: frames can be rendered in any order,
    and the same config gives bit-identical arrays.

    Example:
        >>> drive = SyntheticDrive(SyntheticWorldConfig(size=(128, 256), seed=3))
        >>> f = drive.frame(0)
        >>> f.rgb.shape, f.depth.dtype
        ((128, 256, 3), dtype('float32'))
    """

    def __init__(self, config: SyntheticWorldConfig | None = None) -> None:
        self.config = config or SyntheticWorldConfig()
        h, w = self.config.size
        self.intrinsics = camera_intrinsics(h, w, self.config.hfov_deg)
        self._static = StaticScene.build(
            self.config.seed, h, w, float(self.intrinsics[0, 0]), self.config.camera_height, self.config.ego_x
        )
        # segment -> (primitives, z0 [P], vz [P], t_s): arrays let a frame cull by distance at once.
        self._segments: OrderedDict[int, tuple[list[Primitive], np.ndarray, np.ndarray, float]] = (
            OrderedDict()
        )
        self.sequence = f"drive_{self.config.seed:06d}"

    def _segment(self, s: int) -> tuple[list[Primitive], np.ndarray, np.ndarray, float]:
        if s in self._segments:
            self._segments.move_to_end(s)
            return self._segments[s]
        cfg = self.config
        # A scheduled density applies to segments the ego reaches from the scheduled frame on.
        crowd = cfg.crowd_at(self._segment_frame(s)) if cfg.crowd_schedule else None
        prims = populate_segment(cfg.seed, s, crowd, cfg.crowd, cfg.ego_speed)
        for k, p in enumerate(prims):
            p.track_id = s * 1000 + k
        t_s = (s * SEGMENT_M - LEAD_IN_M) / cfg.ego_speed
        entry = (prims, np.array([p.z0 for p in prims]), np.array([p.vz for p in prims]), t_s)
        self._segments[s] = entry
        if len(self._segments) > 256:
            self._segments.popitem(last=False)
        return entry

    def _segment_frame(self, s: int) -> int:
        """Frame at which the ego is 40 m before segment ``s`` (segments seen at the start: 0)."""
        cfg = self.config
        t_s = (s * SEGMENT_M - LEAD_IN_M) / cfg.ego_speed
        return max(0, int(np.floor(t_s * cfg.fps)))

    def primitives(self, index: int) -> list[Primitive]:
        """Primitives alive at frame ``index`` between 1 m and ``FAR_M`` ahead of the camera."""
        cfg = self.config
        t = index / cfg.fps
        z_ego = cfg.ego_speed * t
        lo = int(np.floor((cfg.ego_speed * (t - LIFETIME_S) + LEAD_IN_M) / SEGMENT_M))
        hi = int(np.ceil((cfg.ego_speed * (t + LIFETIME_S) + LEAD_IN_M) / SEGMENT_M))
        out: list[Primitive] = []
        for s in range(lo, hi + 1):
            prims, z0, vz, t_s = self._segment(s)
            if abs(t - t_s) > LIFETIME_S or not prims:
                continue
            rel = z0 + vz * (t - t_s) - z_ego
            out.extend(prims[k] for k in np.flatnonzero((rel > 1.0) & (rel < FAR_M)))
        return out

    def crowd_at_frame(self, index: int) -> float:
        """Density of the segment the ego camera is in at frame ``index``."""
        cfg = self.config
        s = int(np.floor(cfg.ego_speed * index / cfg.fps / SEGMENT_M))
        rng = np.random.default_rng([cfg.seed & 0xFFFFFFFF, 7, s + (1 << 31)])
        scheduled = cfg.crowd_at(self._segment_frame(s)) if cfg.crowd_schedule else None
        # Same first draw as populate_segment, so the value reported is the one used.
        return float(scheduled) if scheduled is not None else float(rng.uniform(*cfg.crowd))

    def frame(self, index: int, condition: str | None = None) -> SyntheticFrame:
        """Render frame ``index``.

        Args:
            index: Frame number (>= 0); time ``index / fps``.
            condition: Override the scheduled condition (renders the very same scene, objects and
                sensor noise under another condition).

        Raises:
            ValueError: ``index`` is negative or ``condition`` unknown.
        """
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        cfg = self.config
        cond = cfg.condition_at(index) if condition is None else condition
        if cond not in CONDITIONS:
            raise ValueError(f"condition must be one of {list(CONDITIONS)}, got {cond!r}")
        t = index / cfg.fps
        depth_model = cfg.depth_model_at(index)
        out = render(
            self._static,
            self.primitives(index),
            t,
            cfg.ego_speed * t,
            cond,
            np.random.default_rng([cfg.seed & 0xFFFFFFFF, 5, index]),
            cfg.max_depth,
            cfg.depth_dropout,
            cfg.fog_visibility,
            lit_seed=cfg.seed,
            depth_model=depth_model,
            thermal_model=cfg.thermal_model,
            lidar=cfg.lidar,
            stereo=cfg.stereo,
            thermal_camera=cfg.thermal_camera,
        )
        return SyntheticFrame(
            rgb=out.rgb,
            depth=out.depth,
            thermal=out.thermal,
            semantic=out.semantic,
            instance=out.instance,
            boxes=out.boxes,
            labels=out.labels,
            occlusion=out.occlusion,
            visible_masks=out.visible_masks,
            amodal_masks=out.amodal_masks,
            condition=cond,
            stamp_ns=cfg.start_stamp_ns + round(index * 1e9 / cfg.fps),
            frame_index=index,
            sequence=self.sequence,
            intrinsics=self.intrinsics.copy(),
            crowd=self.crowd_at_frame(index),
            track_ids=out.track_ids,
            depth_model=depth_model,
            thermal_model=cfg.thermal_model,
        )

    def frames(self, count: int, start: int = 0) -> Iterator[SyntheticFrame]:
        """Yield ``count`` consecutive frames from ``start``."""
        for i in range(start, start + count):
            yield self.frame(i)


def frame_to_sample(
    frame: SyntheticFrame,
    modalities: Sequence[str] | None = None,
    size: tuple[int, int] | None = None,
    dataset: str = "synthetic",
) -> dict[str, Any]:
    """Convert a frame to the canonical sample dict of ``docs/interfaces.md``.

    The conversion itself is :func:`damcseg_core.data.io_utils.make_sample` (shared with every
    real-data loader, any modality subset); this adds the synthetic metadata.

    Args:
        frame: The frame.
        modalities: Subset of ``rgb``/``depth``/``thermal`` to include; ``None`` = all three.
        size: Optional output ``(H, W)``.
        dataset: Name put in ``meta["dataset"]``.

    Raises:
        ValueError: ``modalities`` is empty or names an unknown modality.
    """
    mods = tuple(MODALITIES) if modalities is None else tuple(modalities)
    bad = [m for m in mods if m not in MODALITIES]
    if not mods or bad:
        raise ValueError(f"modalities must be a non-empty subset of {list(MODALITIES)}, got {list(mods)}")
    return make_sample(
        rgb=frame.rgb if "rgb" in mods else None,
        depth=frame.depth if "depth" in mods else None,
        thermal=frame.thermal if "thermal" in mods else None,
        semantic=frame.semantic,
        instance=frame.instance,
        labels=frame.labels,
        occlusion=frame.occlusion,
        condition=frame.condition,
        meta={
            "dataset": dataset,
            "sequence": frame.sequence,
            "frame": frame.frame_index,
            "stamp_ns": frame.stamp_ns,
            "crowd": frame.crowd,
            "depth_model": frame.depth_model,
            "thermal_model": frame.thermal_model,
        },
        size=size,
    )


@dataclasses.dataclass
class SyntheticConfig:
    """Options of :class:`SyntheticDataset` (registry spec ``synthetic:frames=200,size=256x512``).

    ``depth`` and ``thermal`` pick the sensor models of :mod:`.sensors`, e.g.
    ``synthetic:frames=200,depth=mix,lidar_fraction=0.3,thermal=realistic``. The scenes do not
    depend on them: sample ``i`` shows the same world whatever the sensors.
    """

    frames: int = 200  # number of samples (independent scenes)
    size: tuple[int, int] = (256, 512)  # (H, W) of every sample
    seed: int = 0  # sample i is a pure function of (seed, i)
    conditions: list[str] = dataclasses.field(default_factory=lambda: list(CONDITIONS))  # drawn uniformly
    crowd: tuple[float, float] = (0.0, 1.0)  # density range, drawn uniformly per sample
    modalities: list[str] = dataclasses.field(default_factory=lambda: list(MODALITIES))  # included modalities
    depth: str = "ideal"  # depth sensor model: ideal | lidar | stereo | mix
    thermal: str = "ideal"  # thermal camera model: ideal | realistic
    lidar_fraction: float = 0.5  # depth=mix: probability that a sample's depth is lidar (else stereo)

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise ConfigError(f"frames must be >= 1, got {self.frames}")
        check_sensor_models(self.depth, self.thermal, self.lidar_fraction, where="synthetic dataset")
        bad = [c for c in self.conditions if c not in CONDITIONS]
        if not self.conditions or bad:
            raise ConfigError(
                f"conditions must be a non-empty subset of {list(CONDITIONS)}, got {self.conditions}"
            )
        bad = [m for m in self.modalities if m not in MODALITIES]
        if not self.modalities or bad:
            raise ConfigError(
                f"modalities must be a non-empty subset of {list(MODALITIES)}, got {self.modalities}"
            )
        lo, hi = self.crowd
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"crowd must be (lo, hi) with 0 <= lo <= hi <= 1, got {self.crowd}")


class SyntheticDataset(torch.utils.data.Dataset):
    """Independent synthetic scenes generated on the fly (no files).

    Sample ``i`` is a pure function of ``(seed, i)``: its own drive (layout, palette, ego speed),
    a condition and a crowd density drawn uniformly, rendered at a random time in the drive.
    """

    def __init__(
        self,
        length: int = 200,
        seed: int = 0,
        size: tuple[int, int] | str = (256, 512),
        conditions: Sequence[str] = CONDITIONS,
        crowd: tuple[float, float] = (0.0, 1.0),
        modalities: Sequence[str] = MODALITIES,
        depth: str = "ideal",
        thermal: str = "ideal",
        lidar_fraction: float = 0.5,
    ) -> None:
        self.config = SyntheticConfig(
            frames=length,
            size=parse_size(size),
            seed=seed,
            conditions=list(conditions),
            crowd=tuple(crowd),
            modalities=list(modalities),
            depth=depth,
            thermal=thermal,
            lidar_fraction=lidar_fraction,
        )

    @classmethod
    def from_config(cls, cfg: SyntheticConfig) -> SyntheticDataset:
        """Build from a :class:`SyntheticConfig` (used by the dataset registry)."""
        return cls(
            cfg.frames, cfg.seed, cfg.size, cfg.conditions, cfg.crowd, cfg.modalities,
            depth=cfg.depth, thermal=cfg.thermal, lidar_fraction=cfg.lidar_fraction,
        )  # fmt: skip

    def __len__(self) -> int:
        return self.config.frames

    def drive_and_index(self, index: int) -> tuple[SyntheticDrive, int]:
        """The drive and frame index that sample ``index`` is rendered from."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"synthetic index {index} out of range for {len(self)} samples")
        index %= len(self)
        cfg = self.config
        rng = np.random.default_rng([cfg.seed & 0xFFFFFFFF, 13, index])
        condition = cfg.conditions[int(rng.integers(len(cfg.conditions)))]
        crowd = float(rng.uniform(*cfg.crowd))
        world = SyntheticWorldConfig(
            size=cfg.size,
            seed=int(rng.integers(0, 2**31 - 1)),
            conditions=(condition,),
            crowd=(crowd, crowd),
            ego_speed=float(rng.uniform(6.0, 14.0)),
            depth_model=cfg.depth,
            thermal_model=cfg.thermal,
            lidar_fraction=cfg.lidar_fraction,
        )
        return SyntheticDrive(world), int(rng.integers(0, 600))

    def frame(self, index: int) -> SyntheticFrame:
        """The full :class:`SyntheticFrame` behind sample ``index`` (masks included)."""
        drive, i = self.drive_and_index(index)
        return drive.frame(i)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = frame_to_sample(self.frame(index), self.config.modalities)
        sample["meta"]["index"] = index
        return sample
