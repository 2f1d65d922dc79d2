"""Dataset spec strings: parsing, typed options, and errors that list the valid choices."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from damcseg_core.config import ConfigError
from damcseg_core.data.mfnet import MFNetDataset
from damcseg_core.data.registry import build_dataset, parse_spec


@pytest.fixture
def mfnet_root(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for name in ("00001D", "00002N"):
        assert cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), np.full((6, 8, 4), 200, np.uint8))
        assert cv2.imwrite(str(tmp_path / "labels" / f"{name}.png"), np.ones((6, 8), np.uint8))
    (tmp_path / "test_night.txt").write_text("00002N\n")
    (tmp_path / "train.txt").write_text("00001D\n00002N\n")
    return tmp_path


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("synthetic:frames=200,size=256x512,seed=1,conditions=day+night",
         ("synthetic", None, {"frames": "200", "size": "256x512", "seed": "1", "conditions": "day+night"})),
        ("cityscapes:/data/cs,split=val", ("cityscapes", "/data/cs", {"split": "val"})),
        ("bag:/tmp/b", ("bag", "/tmp/b", {})),
        ("kitti360", ("kitti360", None, {})),
    ],
)  # fmt: skip
def test_parse_spec(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("imagenet:/data", r"unknown dataset kind 'imagenet'.*valid kinds: synthetic, synthetic-folder, cityscapes, "
                           r"kitti360, mfnet, darkzurich, deliver, bag"),
        ("mfnet:/r,split=val,split=test", r"dataset option 'split' given twice"),
        ("mfnet:/r,val", r"dataset option 'val' .* must look like key=value"),
        ("synthetic:/some/path", r"dataset kind 'synthetic' takes only key=value options"),
    ],
)  # fmt: skip
def test_malformed_specs(spec, match):
    with pytest.raises(ConfigError, match=match):
        build_dataset(spec)


def test_spec_builds_typed_dataset(mfnet_root: Path):
    ds = build_dataset(f"mfnet:{mfnet_root},split=test_night,size=3x4,modalities=thermal")
    assert isinstance(ds, MFNetDataset) and len(ds) == 1
    s = ds[0]
    assert s["thermal"].shape == (1, 3, 4) and "rgb" not in s and s["condition"] == "night"
    assert float(s["thermal"][0, 0, 0]) == pytest.approx(200 / 255)
    assert int(s["semantic"][0, 0]) == 13  # MFNet car


def test_keyword_overrides_win(mfnet_root: Path):
    ds = build_dataset(f"mfnet:{mfnet_root},split=test_night", split="train", size=(2, 2))
    assert len(ds) == 2 and ds[0]["rgb"].shape == (3, 2, 2)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (
            "splt=val",
            r"unknown option 'splt' for dataset kind 'mfnet'; valid options: modalities, root, size, split",
        ),
        ("size=256", r"size must look like HxW"),
        ("split=4", r"MFNet split must be one of"),
    ],
)
def test_bad_options_name_the_fix(mfnet_root: Path, options, match):
    with pytest.raises((ConfigError, ValueError), match=match):
        build_dataset(f"mfnet:{mfnet_root},{options}")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("bag:/x,slop_s=fast", r"slop_s must be a number"),
        ("cityscapes:split=val", r"needs a root: cityscapes:/path"),
    ],
)
def test_typed_values_and_required_root(spec, match):
    with pytest.raises(ConfigError, match=match):
        build_dataset(spec)


def test_synthetic_spec_from_the_issue():
    from damcseg_core.data.synthetic import SyntheticDataset

    ds = build_dataset("synthetic:frames=3,size=32x64,seed=1,conditions=day+night,crowd=0.2+0.8")
    assert isinstance(ds, SyntheticDataset) and len(ds) == 3
    assert (ds.config.size, ds.config.seed, ds.config.conditions) == ((32, 64), 1, ["day", "night"])
    assert ds.config.crowd == (0.2, 0.8)
    s = ds[0]
    assert s["rgb"].shape == (3, 32, 64) and s["condition"] in ("day", "night")


def test_synthetic_folder_spec_reads_written_frames(tmp_path: Path):
    from damcseg_core.data.synthetic import (
        SyntheticDrive,
        SyntheticFolderDataset,
        SyntheticWorldConfig,
        write_synthetic_folder,
    )

    frames = list(SyntheticDrive(SyntheticWorldConfig(size=(32, 64), seed=2)).frames(2))
    write_synthetic_folder(tmp_path / "synth", frames)
    ds = build_dataset(f"synthetic-folder:{tmp_path / 'synth'},modalities=rgb+thermal")
    assert isinstance(ds, SyntheticFolderDataset) and len(ds) == 2
    s = ds[1]
    assert s["present"].tolist() == [True, False, True]
    assert s["labels"].tolist() == frames[1].labels.tolist()


def test_bag_spec_batches_through_collate(tmp_path: Path):
    from torch.utils.data import DataLoader

    from damcseg_core.data.collate import collate
    from damcseg_core.data.rosbag_io import write_drive_bag
    from damcseg_core.data.synthetic import SyntheticDrive, SyntheticWorldConfig

    frames = list(SyntheticDrive(SyntheticWorldConfig(size=(32, 64), seed=3)).frames(4))
    write_drive_bag(tmp_path / "bag", frames, storage="mcap")
    loader = DataLoader(build_dataset(f"bag:{tmp_path / 'bag'}"), batch_size=2, collate_fn=collate)
    batches = list(loader)
    assert len(batches) == 2
    assert batches[0]["rgb"].shape == (2, 3, 32, 64) and batches[0]["depth"].shape == (2, 1, 32, 64)
    assert [len(b) for b in batches[1]["labels"]] == [len(f.labels) for f in frames[2:]]
