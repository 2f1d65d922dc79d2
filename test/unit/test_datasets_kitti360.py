"""KITTI-360 loader on a tiny tree in the real on-disk format."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from damcseg_core.data.io_utils import DatasetFormatError
from damcseg_core.data.kitti360 import Kitti360Dataset

H, W = 6, 12
DRIVE = "2013_05_28_drive_0000_sync"


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(img[:, :, ::-1] if img.ndim == 3 else img))


def _semantic() -> np.ndarray:
    sem = np.full((H, W), 7, np.uint8)  # road
    sem[0, :4] = 34  # garage -> building
    sem[0, 4:8] = 37  # smallpole -> pole
    sem[0, 8:] = 38  # lamp -> ignore
    sem[2:4, 1:5] = 26  # car
    sem[5, :] = 35  # gate -> fence
    return sem


@pytest.fixture
def root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    sem_dir = tmp_path / "data_2d_semantics/train" / DRIVE / "image_00"
    for frame in (250, 251, 252):
        name = f"{frame:010d}.png"
        _write(
            tmp_path / "data_2d_raw" / DRIVE / "image_00/data_rect" / name,
            rng.integers(0, 256, (H, W, 3), np.uint8),
        )
        _write(sem_dir / "semantic" / name, _semantic())
    inst = _semantic().astype(np.uint16)
    inst[2:4, 1:5] = 26003
    _write(sem_dir / "instance" / f"{250:010d}.png", inst)
    lines = [f"data_2d_raw/{DRIVE}/image_00/data_rect/{f:010d}.png "
             f"data_2d_semantics/train/{DRIVE}/image_00/semantic/{f:010d}.png" for f in (251, 252)]  # fmt: skip
    (tmp_path / "data_2d_semantics/train/2013_05_28_drive_val_frames.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("pixel", "train_id"),
    [((3, 2), 13), ((4, 4), 0), ((0, 1), 2), ((0, 5), 5), ((0, 9), 255), ((5, 3), 4)],
    ids=[
        "car26->13",
        "road7->0",
        "garage34->building",
        "smallpole37->pole",
        "lamp38->ignore",
        "gate35->fence",
    ],
)
def test_kitti360_ids_become_train_ids(root: Path, pixel, train_id):
    s = Kitti360Dataset(root, split="all")[0]
    assert int(s["semantic"][pixel]) == train_id


def test_rgb_only_with_values_and_meta(root: Path):
    ds = Kitti360Dataset(root, split="all")
    stored = cv2.imread(str(root / "data_2d_raw" / DRIVE / "image_00/data_rect/0000000250.png"))[:, :, ::-1]
    s = ds[0]
    assert len(ds) == 3
    assert s["present"].tolist() == [True, False, False] and "depth" not in s and "thermal" not in s
    assert np.array_equal((s["rgb"].numpy() * 255).round().astype(np.uint8).transpose(1, 2, 0), stored)
    assert s["meta"]["sequence"] == DRIVE and s["meta"]["frame"] == 250


def test_instance_pngs_give_boxes_where_present(root: Path):
    ds = Kitti360Dataset(root, split="all")
    with_inst, without = ds[0], ds[1]
    assert with_inst["labels"].tolist() == [13] and with_inst["boxes"].tolist() == [[1.0, 2.0, 5.0, 4.0]]
    assert with_inst["meta"]["has_boxes"] is True
    assert without["boxes"].shape == (0, 4) and without["meta"]["has_boxes"] is False


def test_val_split_list_selects_listed_frames(root: Path):
    ds = Kitti360Dataset(root, split="val")
    assert [ds[i]["meta"]["frame"] for i in range(len(ds))] == [251, 252]


def test_missing_split_list_names_file_and_fix(root: Path):
    with pytest.raises(DatasetFormatError, match=r"2013_05_28_drive_train_frames\.txt.*split=all"):
        Kitti360Dataset(root, split="train")


def test_malformed_split_list_line(root: Path):
    (root / "data_2d_semantics/train/2013_05_28_drive_val_frames.txt").write_text("only_one_path.png\n")
    with pytest.raises(
        DatasetFormatError, match=r"_val_frames\.txt:1: expected '<image path> <semantic path>'"
    ):
        Kitti360Dataset(root, split="val")


def test_missing_raw_folder(tmp_path: Path):
    with pytest.raises(DatasetFormatError, match=r"missing folder .*data_2d_raw"):
        Kitti360Dataset(tmp_path, split="all")


def test_colour_semantic_png_is_rejected(root: Path):
    bad = root / "data_2d_semantics/train" / DRIVE / "image_00/semantic/0000000250.png"
    _write(bad, np.zeros((H, W, 3), np.uint8))
    with pytest.raises(
        DatasetFormatError, match=r"0000000250\.png: expected KITTI-360 semantic label ids .* 1 channel"
    ):
        Kitti360Dataset(root, split="all")[0]
