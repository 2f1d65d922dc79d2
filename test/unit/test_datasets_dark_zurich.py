"""Dark Zurich loader on a tiny tree in the real on-disk format."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from damcseg_core.data.dark_zurich import DarkZurichDataset
from damcseg_core.data.io_utils import DatasetFormatError

H, W = 6, 10


def _write(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.ascontiguousarray(img[:, :, ::-1] if img.ndim == 3 else img))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    frames = {"day": "GOPR0351", "twilight": "GOPR0352", "night": "GOPR0356"}
    for cond, seq in frames.items():
        stem = f"{seq}_frame_000324"
        _write(
            tmp_path / "rgb_anon/val" / cond / seq / f"{stem}_rgb_anon.png",
            rng.integers(0, 256, (H, W, 3), np.uint8),
        )
    gt = np.full((H, W), 255, np.uint8)
    gt[:3] = 10  # sky
    gt[4, 2:5] = 13  # car
    _write(tmp_path / "gt/val/night/GOPR0356/GOPR0356_frame_000324_gt_labelTrainIds.png", gt)
    return tmp_path


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [(None, ["day", "dusk", "night"]), (("twilight",), ["dusk"]), (("night", "day"), ["night", "day"])],
)
def test_condition_tags_from_folders(root: Path, conditions, expected):
    ds = DarkZurichDataset(root, split="val", conditions=conditions)
    assert [ds[i]["condition"] for i in range(len(ds))] == expected


def test_night_labels_are_train_ids(root: Path):
    s = DarkZurichDataset(root, split="val", conditions=("night",))[0]
    assert (
        int(s["semantic"][0, 0]) == 10 and int(s["semantic"][4, 3]) == 13 and int(s["semantic"][5, 0]) == 255
    )
    assert s["meta"]["has_labels"] is True and s["meta"]["sequence"] == "GOPR0356"
    assert s["present"].tolist() == [True, False, False]


def test_unlabelled_frames_are_all_ignore(root: Path):
    s = DarkZurichDataset(root, split="val", conditions=("day",))[0]
    assert s["meta"]["has_labels"] is False and bool((s["semantic"] == 255).all())
    assert s["rgb"].shape == (3, H, W)


def test_missing_split_and_bad_condition(root: Path):
    with pytest.raises(
        DatasetFormatError, match=r"missing folder .*rgb_anon/train.*Dark_Zurich_train_anon\.zip"
    ):
        DarkZurichDataset(root, split="train")
    with pytest.raises(ValueError, match=r"subset of \['day', 'twilight', 'night'\]"):
        DarkZurichDataset(root, split="val", conditions=("dusk",))


def test_empty_selection_raises(root: Path):
    (root / "rgb_anon/test/night").mkdir(parents=True)
    with pytest.raises(DatasetFormatError, match=r"no files matching .*rgb_anon/test"):
        DarkZurichDataset(root, split="test")


def test_colour_label_png_is_rejected(root: Path):
    _write(
        root / "gt/val/night/GOPR0356/GOPR0356_frame_000324_gt_labelTrainIds.png",
        np.zeros((H, W, 3), np.uint8),
    )
    with pytest.raises(
        DatasetFormatError, match=r"_gt_labelTrainIds\.png: expected Dark Zurich labelTrainIds"
    ):
        DarkZurichDataset(root, split="val", conditions=("night",))[0]
