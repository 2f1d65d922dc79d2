"""DELIVER loader on a tiny tree in the real on-disk format (CARLA depth, label = class + 1)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from damcseg_core.data.deliver import DELIVER_CLASSES, DeliverDataset, decode_deliver_depth
from damcseg_core.data.io_utils import DatasetFormatError

H, W = 5, 6


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(img[:, :, ::-1] if img.ndim == 3 else img))


def _carla_rgb(depth_m: np.ndarray) -> np.ndarray:
    """CARLA's 24-bit depth encoding: R + 256 G + 65536 B = depth / 1000 * (2^24 - 1)."""
    code = np.rint(depth_m / 1000.0 * (2**24 - 1)).astype(np.int64)
    return np.stack([code % 256, (code // 256) % 256, code // 65536], axis=-1).astype(np.uint8)


DEPTH_M = np.array([[2.5, 10.0, 55.0, 999.0, 1000.0, 0.0]] * H, dtype=np.float64)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    sem = np.zeros((H, W, 3), np.uint8)
    sem[..., 0] = (np.arange(H * W).reshape(H, W) % 26).astype(np.uint8)  # class + 1 in red, 0 = void
    sem[..., 1] = 77  # other channels carry nothing the loader should read
    for cond, seq in (("fog", "MAP_10_point102"), ("night", "MAP_1_point3")):
        base = f"{cond}/val/{seq}/045050"
        _write(tmp_path / f"img/{base}_rgb_front.png", rng.integers(0, 256, (H, W, 3), np.uint8))
        _write(tmp_path / f"depth/{base}_depth_front.png", _carla_rgb(DEPTH_M))
        _write(tmp_path / f"semantic/{base}_semantic_front.png", sem)
    return tmp_path


@pytest.mark.parametrize(
    ("col", "expected_m"),
    [(0, 2.5), (1, 10.0), (2, 55.0), (3, 999.0), (4, 0.0), (5, 0.0)],
    ids=["2.5m", "10m", "55m", "999m", "far-plane-invalid", "zero-invalid"],
)
def test_carla_rgb_depth_decodes_to_metres(root: Path, col, expected_m):
    depth = DeliverDataset(root, split="val")[0]["depth"]
    assert depth.shape == (1, H, W)
    assert float(depth[0, 2, col]) == pytest.approx(expected_m, abs=1e-3)


@pytest.mark.parametrize(("value", "expected_m"), [(0, 0.0), (655, 655 / 65535 * 1000), (65535, 0.0)])
def test_16bit_depth_is_normalised_over_1000m(value, expected_m):
    assert float(decode_deliver_depth(np.full((2, 2), value, np.uint16))[0, 0]) == pytest.approx(
        expected_m, rel=1e-6
    )


@pytest.mark.parametrize(
    ("stored", "train_id"),
    [(0, 255), (1, 2), (4, 11), (6, 0), (7, 0), (8, 1), (10, 13), (13, 10), (14, 255), (23, 255), (24, 15), (25, 14)],
    ids=["void", "Building", "Pedestrian", "RoadLine", "Road", "SideWalk", "Cars", "Sky", "Ground", "TwoWheeler",
         "Bus", "Truck"],
)  # fmt: skip
def test_labels_are_class_plus_one_mapped_to_train_ids(root: Path, stored, train_id):
    s = DeliverDataset(root, split="val")[0]
    assert int(s["semantic"][divmod(stored, W)]) == train_id


def test_condition_is_the_deliver_folder_and_sequence_meta(root: Path):
    ds = DeliverDataset(root, split="val")
    assert [ds[i]["condition"] for i in range(len(ds))] == ["fog", "night"]
    assert ds[0]["meta"]["sequence"] == "fog/MAP_10_point102" and ds[0]["meta"]["frame"] == "045050"
    assert len(DeliverDataset(root, split="val", conditions=("night",))) == 1
    assert ds[0]["present"].tolist() == [True, True, False]


def test_rgb_only(root: Path):
    s = DeliverDataset(root, split="val", modalities=("rgb",))[0]
    assert "depth" not in s and s["present"].tolist() == [True, False, False]


def test_8bit_grey_depth_is_rejected(root: Path):
    _write(root / "depth/fog/val/MAP_10_point102/045050_depth_front.png", np.zeros((H, W), np.uint8))
    with pytest.raises(
        DatasetFormatError, match=r"045050_depth_front\.png: expected DELIVER depth as CARLA 24-bit RGB"
    ):
        DeliverDataset(root, split="val")[0]


@pytest.mark.parametrize(
    ("split", "kwargs", "error", "match"),
    [
        (
            "test",
            {},
            DatasetFormatError,
            r"no files matching .*/test/\*/\*_rgb_\*\.png' under .*/img: the split is empty",
        ),
        (
            "val",
            {"conditions": ("snow",)},
            ValueError,
            r"subset of \['cloud', 'fog', 'night', 'rain', 'sun'\]",
        ),
        ("val", {"modalities": ("lidar",)}, ValueError, r"DELIVER provides modalities"),
    ],
    ids=["empty-split", "bad-condition", "bad-modality"],
)
def test_bad_selection(root: Path, split, kwargs, error, match):
    with pytest.raises(error, match=match):
        DeliverDataset(root, split=split, **kwargs)


def test_class_table_has_25_classes():
    assert len(DELIVER_CLASSES) == 25
