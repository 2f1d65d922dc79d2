"""MFNet RGB-T loader on a tiny tree in the real on-disk format (4-channel PNGs, split lists)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from damcseg_core.data.io_utils import DatasetFormatError
from damcseg_core.data.mfnet import MFNET_CLASSES, MFNetDataset

H, W = 6, 8
NAMES = ("00001D", "00002N", "00003D")


def _rgbt(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (H, W, 4), np.uint8)
    img[0, 0, 3] = 255  # thermal extremes: full scale ...
    img[0, 1, 3] = 0  # ... and zero
    return img


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    labels = np.arange(H * W, dtype=np.uint8).reshape(H, W) % 9  # every MFNet class appears
    for i, name in enumerate(NAMES):
        img = _rgbt(i)
        assert cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), img[:, :, [2, 1, 0, 3]])  # RGBA -> BGRA
        assert cv2.imwrite(str(tmp_path / "labels" / f"{name}.png"), labels)
    (tmp_path / "train.txt").write_text("00001D\n00002N\n")
    (tmp_path / "test.txt").write_text("00003D\n")
    (tmp_path / "test_night.txt").write_text("00002N\n")
    return tmp_path


def test_thermal_channel_lands_in_thermal_scaled_to_unit(root: Path):
    s = MFNetDataset(root, split="train")[0]
    img = _rgbt(0)
    assert s["present"].tolist() == [True, False, True] and "depth" not in s
    assert s["thermal"].shape == (1, H, W)
    assert np.allclose(s["thermal"][0].numpy(), img[:, :, 3] / 255.0)
    assert float(s["thermal"][0, 0, 0]) == 1.0 and float(s["thermal"][0, 0, 1]) == 0.0
    assert np.array_equal((s["rgb"].numpy() * 255).round().astype(np.uint8).transpose(1, 2, 0), img[:, :, :3])


@pytest.mark.parametrize(
    ("mfnet_id", "train_id"),
    [(0, 255), (1, 13), (2, 11), (3, 18), (4, 255), (5, 255), (6, 255), (7, 255), (8, 255)],
    ids=list(MFNET_CLASSES),
)
def test_mfnet_classes_map_to_train_ids(root: Path, mfnet_id, train_id):
    s = MFNetDataset(root, split="train")[0]
    pixel = divmod(mfnet_id, W)  # label = flat index % 9, so flat index mfnet_id holds mfnet_id
    assert int(s["semantic"][pixel]) == train_id


@pytest.mark.parametrize(
    ("split", "index", "condition"),
    [("train", 0, "day"), ("train", 1, "night"), ("test_night", 0, "night"), ("test", 0, "day")],
)
def test_condition_from_name_or_split(root: Path, split, index, condition):
    assert MFNetDataset(root, split=split)[index]["condition"] == condition


def test_no_boxes_in_mfnet(root: Path):
    s = MFNetDataset(root, split="train")[0]
    assert s["boxes"].shape == (0, 4) and s["labels"].shape == (0,) and s["meta"]["has_boxes"] is False


def test_modality_subset_and_resize(root: Path):
    s = MFNetDataset(root, split="train", size=(3, 4), modalities=("thermal",))[0]
    assert "rgb" not in s and s["thermal"].shape == (1, 3, 4) and s["semantic"].shape == (3, 4)
    assert s["present"].tolist() == [False, False, True]


def test_three_channel_image_is_rejected(root: Path):
    assert cv2.imwrite(str(root / "images" / "00001D.png"), np.zeros((H, W, 3), np.uint8))
    with pytest.raises(
        DatasetFormatError,
        match=r"00001D\.png: expected MFNet RGB-T image .* 4 channel\(s\), found 8-bit with 3",
    ):
        MFNetDataset(root, split="train")[0]


@pytest.mark.parametrize(
    ("setup", "split", "match"),
    [
        ("none", "val", r"missing file .*val\.txt"),
        ("empty-list", "train", r"no files matching .*train\.txt.*split is empty"),
        ("no-images", "train", r"missing folder .*images"),
    ],
)
def test_missing_or_empty_inputs(root: Path, setup, split, match):
    if setup == "empty-list":
        (root / "train.txt").write_text("\n")
    if setup == "no-images":
        for p in (root / "images").iterdir():
            p.unlink()
        (root / "images").rmdir()
    with pytest.raises(DatasetFormatError, match=match):
        MFNetDataset(root, split=split)
