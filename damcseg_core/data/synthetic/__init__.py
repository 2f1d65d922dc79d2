"""Embedded synthetic multi-modal driving world (RGB, depth, thermal, labels, instances, boxes).

A perspective pinhole camera 1.5 m above a four-lane city road drives along it; every frame
gives RGB, depth, thermal, semantic and instance maps, boxes, visible and amodal masks and an
exact occlusion ratio per object, under day, dusk, night or fog. Everything is a pure function
of the seed, frames of a drive are temporally coherent, and rendering is vectorised numpy.
The depth and thermal cameras are selectable sensor models (:mod:`.sensors`): ``ideal`` (exact,
the default), ``lidar`` / ``stereo`` / ``mix`` depth and a ``realistic`` thermal camera.

Main entry points:
    :class:`SyntheticDrive` (coherent sequences, condition and crowd schedules),
    :class:`SyntheticDataset` (independent scenes on the fly), :func:`frame_to_sample`,
    :func:`write_synthetic_folder` / :class:`SyntheticFolderDataset` (on-disk layout),
    :func:`write_synthetic_packed` / :class:`SyntheticPackedDataset` (memory-mapped training cache),
    :func:`preview_grid` (a picture a person can check).
"""

from damcseg_core.data.synthetic.drive import (
    SyntheticConfig,
    SyntheticDataset,
    SyntheticDrive,
    SyntheticFrame,
    frame_to_sample,
)
from damcseg_core.data.synthetic.folder import (
    SyntheticFolderConfig,
    SyntheticFolderDataset,
    preview_grid,
    write_frame,
    write_synthetic_folder,
)
from damcseg_core.data.synthetic.packed import (
    PACKED_FORMAT,
    SyntheticPackedConfig,
    SyntheticPackedDataset,
    open_or_build_packed,
    write_synthetic_packed,
)
from damcseg_core.data.synthetic.render import CONDITION_MODELS
from damcseg_core.data.synthetic.sensors import (
    DEPTH_MODELS,
    THERMAL_MODELS,
    LidarModel,
    StereoModel,
    ThermalCameraModel,
)
from damcseg_core.data.synthetic.world import (
    CONDITIONS,
    SyntheticWorldConfig,
    camera_intrinsics,
    kelvin_counts,
)

__all__ = [
    "CONDITIONS",
    "CONDITION_MODELS",
    "DEPTH_MODELS",
    "PACKED_FORMAT",
    "THERMAL_MODELS",
    "LidarModel",
    "StereoModel",
    "SyntheticConfig",
    "SyntheticDataset",
    "SyntheticDrive",
    "SyntheticFolderConfig",
    "SyntheticFolderDataset",
    "SyntheticFrame",
    "SyntheticPackedConfig",
    "SyntheticPackedDataset",
    "SyntheticWorldConfig",
    "ThermalCameraModel",
    "camera_intrinsics",
    "frame_to_sample",
    "kelvin_counts",
    "open_or_build_packed",
    "preview_grid",
    "write_frame",
    "write_synthetic_folder",
    "write_synthetic_packed",
]
