"""Synthetic samples, the on-the-fly dataset, the on-disk layout and damcseg-make-synthetic."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from damcseg_core.cli.make_synthetic import main as make_synthetic
from damcseg_core.data.io_utils import DatasetFormatError
from damcseg_core.data.registry import build_dataset
from damcseg_core.data.synthetic import (
    SyntheticDataset,
    SyntheticDrive,
    SyntheticFolderDataset,
    SyntheticWorldConfig,
    frame_to_sample,
    preview_grid,
    write_synthetic_folder,
)

H, W = 64, 128


@pytest.fixture(scope="module")
def frames() -> list:
    d = SyntheticDrive(SyntheticWorldConfig(size=(H, W), seed=2, crowd=(1.0, 1.0)))
    return [d.frame(0), d.frame(1, condition="night")]


# ---------------------------------------------------------------------------------------------
# Sample dict


@pytest.mark.parametrize(
    ("key", "dtype", "shape"),
    [
        ("rgb", torch.float32, (3, H, W)),
        ("depth", torch.float32, (1, H, W)),
        ("thermal", torch.float32, (1, H, W)),
        ("present", torch.bool, (3,)),
        ("semantic", torch.int64, (H, W)),
        ("instance", torch.int32, (H, W)),
    ],
)
def test_sample_per_pixel_keys(frames, key, dtype, shape):
    s = frame_to_sample(frames[0])
    assert (s[key].dtype, tuple(s[key].shape)) == (dtype, shape)


def test_sample_values_follow_the_interface(frames):
    f = frames[0]
    s = frame_to_sample(f)
    n = len(f.labels)
    assert n > 0
    np.testing.assert_allclose(s["rgb"].numpy(), f.rgb.transpose(2, 0, 1) / 255.0, atol=1e-6)
    np.testing.assert_allclose(s["thermal"][0].numpy(), f.thermal / 65535.0, atol=1e-6)
    np.testing.assert_array_equal(s["depth"][0].numpy(), f.depth)
    assert s["present"].tolist() == [True, True, True]
    np.testing.assert_array_equal(s["boxes"].numpy(), f.boxes)
    np.testing.assert_array_equal(s["labels"].numpy(), f.labels)
    np.testing.assert_array_equal(s["occlusion"].numpy(), f.occlusion)
    np.testing.assert_array_equal(s["areas"].numpy(), f.areas)
    assert (s["boxes"].dtype, s["labels"].dtype, s["occlusion"].dtype, s["areas"].dtype) == (
        torch.float32, torch.int64, torch.float32, torch.float32,
    )  # fmt: skip
    assert s["condition"] == "day"
    assert {k: s["meta"][k] for k in ("dataset", "sequence", "frame", "stamp_ns")} == {
        "dataset": "synthetic", "sequence": f.sequence, "frame": 0, "stamp_ns": f.stamp_ns,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("mods", "present"),
    [
        (["rgb"], [True, False, False]),
        (["depth", "thermal"], [False, True, True]),
        (["thermal"], [False, False, True]),
    ],
)
def test_sample_with_a_modality_subset(frames, mods, present):
    s = frame_to_sample(frames[0], mods)
    assert [m for m in ("rgb", "depth", "thermal") if m in s] == mods
    assert s["present"].tolist() == present


@pytest.mark.parametrize("mods", [[], ["lidar"]])
def test_sample_rejects_bad_modalities(frames, mods):
    with pytest.raises(ValueError, match="non-empty subset of"):
        frame_to_sample(frames[0], mods)


# ---------------------------------------------------------------------------------------------
# On-the-fly dataset


def test_dataset_is_deterministic_and_scenes_are_independent():
    a = SyntheticDataset(4, seed=3, size=(H, W))
    b = SyntheticDataset(4, seed=3, size=(H, W))
    torch.testing.assert_close(a[2]["rgb"], b[2]["rgb"], rtol=0, atol=0)
    assert a[2]["meta"]["sequence"] != a[3]["meta"]["sequence"]
    assert not torch.equal(a[2]["semantic"], a[3]["semantic"])


@pytest.mark.parametrize("conditions", [["night"], ["day", "fog"]])
def test_dataset_draws_only_requested_conditions(conditions):
    ds = SyntheticDataset(6, seed=1, size=(32, 64), conditions=conditions)
    assert {ds[i]["condition"] for i in range(len(ds))} <= set(conditions)


def test_dataset_index_errors():
    ds = SyntheticDataset(2, size=(32, 64))
    with pytest.raises(IndexError, match="out of range for 2 samples"):
        ds[2]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("synthetic:frames=0", "frames must be >= 1"),
        ("synthetic:conditions=day+snow", "conditions must be a non-empty subset"),
        ("synthetic:modalities=rgb+lidar", "modalities must be a non-empty subset"),
    ],
)
def test_registry_spec_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        build_dataset(spec)


def test_registry_builds_the_dataset():
    ds = build_dataset("synthetic:frames=3,size=32x64,seed=4,conditions=night,modalities=rgb+thermal")
    s = ds[0]
    assert (len(ds), s["condition"], tuple(s["rgb"].shape)) == (3, "night", (3, 32, 64))
    assert "depth" not in s


# ---------------------------------------------------------------------------------------------
# On-disk layout


@pytest.fixture(scope="module")
def folder(tmp_path_factory, frames):
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_folder(root, frames, meta={"seed": 2})
    return root


def test_folder_round_trip(folder, frames):
    ds = SyntheticFolderDataset(folder)
    assert len(ds) == 2
    for i, f in enumerate(frames):
        s, ref = ds[i], frame_to_sample(f)
        torch.testing.assert_close(s["rgb"], ref["rgb"], rtol=0, atol=0)
        torch.testing.assert_close(s["thermal"], ref["thermal"], rtol=0, atol=0)
        torch.testing.assert_close(s["depth"], ref["depth"], rtol=0, atol=1.01e-3)  # 2 mm steps
        for key in ("semantic", "instance", "boxes", "labels", "occlusion", "areas"):
            torch.testing.assert_close(s[key], ref[key], rtol=0, atol=0)
        assert s["condition"] == f.condition
        assert s["meta"]["stamp_ns"] == f.stamp_ns


def test_folder_meta_documents_units(folder, frames):
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["size"] == [H, W]
    assert meta["depth_scale_m"] == 0.002
    assert meta["conditions"] == ["day", "night"]
    np.testing.assert_allclose(meta["intrinsics"], frames[0].intrinsics)


@pytest.mark.parametrize("missing", ["thermal", "objects", "meta.json"])
def test_folder_errors_name_the_missing_path(folder, tmp_path, missing):
    root = tmp_path / "copy"
    shutil.copytree(folder, root)
    target = root / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DatasetFormatError, match=str(target)):
        SyntheticFolderDataset(root)[0]


def test_folder_modality_subset(folder):
    s = SyntheticFolderDataset(folder, modalities=["depth"])[0]
    assert s["present"].tolist() == [False, True, False]


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_writes_layout_and_preview(tmp_path):
    out = tmp_path / "run"
    rc = make_synthetic(["--out", str(out), "--frames", "3", "--size", "32x64", "--conditions", "day,fog",
                         "--seed", "1", "--crowd", "0.5,1", "--no-progress"])  # fmt: skip
    assert rc == 0
    for sub in ("rgb", "depth", "thermal", "semantic", "instance"):
        assert sorted(p.name for p in (out / sub).iterdir()) == ["000000.png", "000001.png", "000002.png"]
    assert (out / "preview.png").stat().st_size > 1000
    ds = SyntheticFolderDataset(out)
    assert {ds[i]["condition"] for i in range(3)} <= {"day", "fog"}


def test_cli_drive_mode_follows_the_condition_schedule(tmp_path):
    out = tmp_path / "drive"
    assert make_synthetic(["--out", str(out), "--frames", "4", "--size", "32x64", "--conditions", "day,night",
                           "--drive", "--no-progress"]) == 0  # fmt: skip
    ds = SyntheticFolderDataset(out)
    assert [ds[i]["condition"] for i in range(4)] == ["day", "day", "night", "night"]
    assert [ds[i]["meta"]["frame"] for i in range(4)] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "256by512"], "expected HxW"),
        (["--conditions", "day,snow"], "comma-separated list of day,dusk,night,fog"),
        (["--crowd", "0.9,0.1"], "0 <= LO <= HI <= 1"),
        (["--frames", "0"], "positive integer"),
    ],
)
def test_cli_bad_arguments_name_the_expected_form(tmp_path, capsys, args, message):
    base = {"--out": str(tmp_path / "x"), "--frames": "1"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    argv = [a for kv in base.items() for a in kv]
    with pytest.raises(SystemExit) as exc:
        make_synthetic(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_preview_grid_layout_and_frames_untouched(frames):
    before = frames[0].rgb.copy()
    grid = preview_grid(frames)
    assert grid.shape == (2 * H + 2, 4 * W + 3 * 2, 3)
    assert grid.dtype == np.uint8
    np.testing.assert_array_equal(frames[0].rgb, before)  # the caption is drawn on a copy
    # Invalid depth is black in the depth panel; valid depth is coloured.
    panel = grid[:H, W + 2 : 2 * W + 2]
    assert (panel[frames[0].depth == 0] == 0).all()
    assert (panel[frames[0].depth > 0].max(axis=1) > 0).all()
