"""Cityscapes loader on a tiny tree in the real on-disk format (names, bit depths, encodings)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from damcseg_core.data.cityscapes import DEFAULT_BASELINE_M, DEFAULT_FX_PX, CityscapesDataset
from damcseg_core.data.io_utils import DatasetFormatError

H, W = 8, 16
STEMS = ("aachen_000000_000019", "aachen_000001_000019")


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if img.ndim == 3:
        img = img[:, :, ::-1]  # RGB -> BGR for OpenCV
    assert cv2.imwrite(str(path), np.ascontiguousarray(img))


def _label_ids() -> np.ndarray:
    ids = np.full((H, W), 7, np.uint8)  # road
    ids[0, :] = 0  # unlabeled
    ids[2:4, 2:6] = 26  # car
    ids[5:7, 10:12] = 24  # person
    ids[1, 8:12] = 20  # traffic sign (no instances in Cityscapes)
    return ids


def _instance_ids() -> np.ndarray:
    inst = _label_ids().astype(np.uint16)
    inst[2:4, 2:6] = 26001
    inst[5:7, 10:12] = 24000
    return inst


def _disparity() -> np.ndarray:
    raw = np.full((H, W), 256 * 10 + 1, np.uint16)  # d = 10 px
    raw[0, 0] = 0  # invalid
    raw[0, 1] = 1  # d = 0: infinitely far, invalid
    raw[0, 2] = 256 * 40 + 1  # d = 40 px
    return raw


@pytest.fixture
def root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for stem in STEMS:
        _write(
            tmp_path / "leftImg8bit/val/aachen" / f"{stem}_leftImg8bit.png",
            rng.integers(0, 256, (H, W, 3), np.uint8),
        )
        _write(tmp_path / "gtFine/val/aachen" / f"{stem}_gtFine_labelIds.png", _label_ids())
        _write(tmp_path / "gtFine/val/aachen" / f"{stem}_gtFine_instanceIds.png", _instance_ids())
        _write(tmp_path / "disparity/val/aachen" / f"{stem}_disparity.png", _disparity())
    cam = {"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 2000.0, "fy": 2000.0, "u0": 8.0, "v0": 4.0}}
    (tmp_path / "camera/val/aachen").mkdir(parents=True)
    (tmp_path / "camera/val/aachen" / f"{STEMS[1]}_camera.json").write_text(json.dumps(cam))
    return tmp_path


def test_rgb_values_and_shapes(root: Path):
    ds = CityscapesDataset(root, split="val")
    stored = cv2.imread(str(root / "leftImg8bit/val/aachen" / f"{STEMS[0]}_leftImg8bit.png"))[:, :, ::-1]
    s = ds[0]
    assert len(ds) == 2
    assert s["rgb"].shape == (3, H, W) and s["rgb"].dtype == torch.float32
    assert torch.equal(
        (s["rgb"] * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(stored.copy())
    )
    assert s["present"].tolist() == [True, True, False]
    assert s["condition"] == "day"
    assert s["meta"]["dataset"] == "cityscapes" and s["meta"]["frame"] == STEMS[0]


@pytest.mark.parametrize(
    ("pixel", "train_id"),
    [((3, 3), 13), ((8 - 2, 10), 11), ((5, 0), 0), ((0, 5), 255), ((1, 9), 7)],
    ids=["car26->13", "person24->11", "road7->0", "unlabeled0->255", "sign20->7"],
)
def test_label_ids_become_train_ids(root: Path, pixel, train_id):
    s = CityscapesDataset(root, split="val")[0]
    assert s["semantic"].dtype == torch.int64
    assert int(s["semantic"][pixel]) == train_id


@pytest.mark.parametrize(
    ("frame", "pixel", "expected_m"),
    [
        (0, (4, 4), DEFAULT_BASELINE_M * DEFAULT_FX_PX / 10.0),  # no camera json: defaults
        (0, (0, 2), DEFAULT_BASELINE_M * DEFAULT_FX_PX / 40.0),
        (1, (4, 4), 0.2 * 2000.0 / 10.0),  # camera json: 40 m
        (0, (0, 0), 0.0),  # p = 0 invalid
        (0, (0, 1), 0.0),  # p = 1, zero disparity invalid
    ],
    ids=["default-calib", "default-calib-d40", "camera-json", "p0-invalid", "p1-invalid"],
)
def test_disparity_becomes_metric_depth(root: Path, frame, pixel, expected_m):
    depth = CityscapesDataset(root, split="val")[frame]["depth"]
    assert depth.shape == (1, H, W)
    assert float(depth[0][pixel]) == pytest.approx(expected_m, rel=1e-6)


def test_instances_give_boxes_of_visible_pixels(root: Path):
    s = CityscapesDataset(root, split="val")[0]
    assert s["labels"].tolist() == [11, 13]  # ordered by stored id: 24000 (person), 26001 (car)
    assert s["boxes"].tolist() == [[10.0, 5.0, 12.0, 7.0], [2.0, 2.0, 6.0, 4.0]]
    assert s["areas"].tolist() == [4.0, 8.0]
    assert int(s["instance"][3, 3]) == 2 and int(s["instance"][6, 11]) == 1 and int(s["instance"][4, 4]) == 0
    assert s["occlusion"].tolist() == [0.0, 0.0]
    assert s["meta"]["has_boxes"] is True


def test_resize_is_nearest_for_labels_and_depth(root: Path):
    s = CityscapesDataset(root, split="val", size="4x8")[1]
    assert s["rgb"].shape == (3, 4, 8) and s["depth"].shape == (1, 4, 8) and s["semantic"].shape == (4, 8)
    assert set(s["semantic"].unique().tolist()) <= {0, 7, 11, 13, 255}
    assert set(np.round(s["depth"].unique().numpy(), 3).tolist()) <= {0.0, 40.0, 10.0}
    # The car covers rows 2-3, cols 2-5 -> rows 1, cols 1-2 at half size.
    assert s["boxes"][s["labels"] == 13].tolist() == [[1.0, 1.0, 3.0, 2.0]]
    # Labels, instances and depth are sampled at the same source pixels: they stay aligned.
    inst = s["instance"]
    assert bool((s["semantic"][inst > 0] == s["labels"][inst[inst > 0].long() - 1]).all())


def test_rgb_only_selection_leaves_depth_absent(root: Path):
    s = CityscapesDataset(root, split="val", modalities=("rgb",))[0]
    assert "depth" not in s and s["present"].tolist() == [True, False, False]


def test_missing_disparity_folder_means_no_depth_unless_asked(root: Path):
    for p in (root / "disparity/val/aachen").iterdir():
        p.unlink()
    (root / "disparity/val/aachen").rmdir()
    (root / "disparity/val").rmdir()
    assert "depth" not in CityscapesDataset(root, split="val")[0]
    with pytest.raises(DatasetFormatError, match=r"missing folder .*disparity/val"):
        CityscapesDataset(root, split="val", modalities=("rgb", "depth"))


@pytest.mark.parametrize(
    ("split", "match"),
    [("train", r"missing folder .*leftImg8bit/train"), ("test", r"missing folder .*leftImg8bit/test")],
)
def test_missing_split_folder_names_the_path(root: Path, split, match):
    with pytest.raises(DatasetFormatError, match=match):
        CityscapesDataset(root, split=split)


def test_empty_split_raises(root: Path):
    (root / "leftImg8bit/train/bonn").mkdir(parents=True)
    with pytest.raises(DatasetFormatError, match=r"no files matching .*leftImg8bit/train.*split is empty"):
        CityscapesDataset(root, split="train")


def test_8bit_disparity_is_rejected_with_path(root: Path):
    bad = root / "disparity/val/aachen" / f"{STEMS[0]}_disparity.png"
    _write(bad, np.full((H, W), 9, np.uint8))
    with pytest.raises(
        DatasetFormatError, match=r"_disparity\.png: expected Cityscapes 16-bit disparity as a 16-bit"
    ):
        CityscapesDataset(root, split="val")[0]


def test_unknown_split_and_modality_are_rejected(root: Path):
    with pytest.raises(ValueError, match="split must be one of"):
        CityscapesDataset(root, split="validation")
    with pytest.raises(ValueError, match=r"provides modalities \['rgb', 'depth'\]"):
        CityscapesDataset(root, split="val", modalities=("thermal",))
