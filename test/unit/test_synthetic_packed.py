"""The packed synthetic cache: identical samples, spec checks, build-or-reuse, corruption, CLI."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from damcseg_core.cli import make_synthetic
from damcseg_core.config import ConfigError
from damcseg_core.data.io_utils import DatasetFormatError
from damcseg_core.data.registry import build_dataset
from damcseg_core.data.synthetic import (
    SyntheticDataset,
    SyntheticPackedDataset,
    open_or_build_packed,
    write_synthetic_packed,
)
from damcseg_core.data.synthetic import packed as packed_mod

SIZE = (64, 128)


def _assert_same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        if torch.is_tensor(b[key]):
            assert a[key].dtype == b[key].dtype, key
            assert a[key].shape == b[key].shape, key
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("packed") / "s5"
    write_synthetic_packed(root, SyntheticDataset(6, seed=5, size=SIZE).config, workers=1)
    return root


@pytest.mark.parametrize("index", [0, 3, 5, -1, -6])
def test_samples_equal_the_generator(cache_dir, index):
    _assert_same(SyntheticPackedDataset(cache_dir)[index], SyntheticDataset(6, seed=5, size=SIZE)[index])


@pytest.mark.parametrize("modalities", [["rgb"], ["depth", "thermal"], ["thermal", "rgb"]])
def test_modality_subsets_equal_the_generator(cache_dir, modalities):
    got = SyntheticPackedDataset(cache_dir, modalities=modalities)[2]
    _assert_same(got, SyntheticDataset(6, seed=5, size=SIZE, modalities=modalities)[2])
    assert got["present"].tolist() == [m in modalities for m in ("rgb", "depth", "thermal")]


def test_sensor_models_and_parallel_writer_equal_the_generator(tmp_path):
    cfg = SyntheticDataset(
        5, seed=9, size=SIZE, depth="mix", thermal="realistic", conditions=["night", "fog"]
    ).config
    write_synthetic_packed(tmp_path / "c", cfg, workers=2, chunk=2)
    ds = build_dataset(f"synthetic-packed:{tmp_path / 'c'},check_frames=2")
    ref = SyntheticDataset.from_config(cfg)
    assert len(ds) == 5
    for i in range(5):
        _assert_same(ds[i], ref[i])
    ds.verify()
    assert not list(tmp_path.glob("c.partial-*"))


def test_stored_dtypes_and_meta(cache_dir):
    meta = json.loads((cache_dir / "meta.json").read_text())
    assert meta["format"] == "damcseg-synthetic-packed/1"
    assert meta["spec"] == {
        "frames": 6, "size": [64, 128], "seed": 5, "conditions": ["day", "dusk", "night", "fog"],
        "crowd": [0.0, 1.0], "depth": "ideal", "thermal": "ideal", "lidar_fraction": 0.5,
    }  # fmt: skip
    assert meta["checksum"].startswith("sha256:")
    rgb = np.load(cache_dir / "rgb.npy", mmap_mode="r")
    assert (rgb.dtype, rgb.shape) == (np.uint8, (6, 64, 128, 3))
    assert np.load(cache_dir / "depth.npy", mmap_mode="r").dtype == np.float32
    assert np.load(cache_dir / "instance.npy", mmap_mode="r").dtype == np.int16


def test_spec_cache_builds_once_then_reuses(tmp_path, monkeypatch):
    spec = f"synthetic:frames=4,size=64x128,seed=7,modalities=rgb+depth,cache={tmp_path / 'cache'}"
    first = build_dataset(spec)
    assert isinstance(first, SyntheticPackedDataset)

    def no_render(*args, **kwargs):
        raise AssertionError("an existing matching cache must not be rendered again")

    monkeypatch.setattr(packed_mod, "write_synthetic_packed", no_render)
    again = build_dataset(spec)
    _assert_same(again[1], SyntheticDataset(4, seed=7, size=SIZE, modalities=["rgb", "depth"])[1])
    assert "thermal" not in again[1]


def test_spec_cache_of_other_scenes_is_refused(tmp_path):
    build_dataset(f"synthetic:frames=3,size=64x128,seed=7,cache={tmp_path / 'c'}")
    with pytest.raises(ConfigError, match=r"seed: cache 7 vs spec 8.*another\s+folder.*remove"):
        build_dataset(f"synthetic:frames=3,size=64x128,seed=8,cache={tmp_path / 'c'}")
    with pytest.raises(ConfigError, match=r"frames: cache 3 vs spec 4"):
        build_dataset(f"synthetic:frames=4,size=64x128,seed=7,cache={tmp_path / 'c'}")


def test_cache_folder_that_is_no_cache_is_refused(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"not a packed synthetic cache.*remove it"):
        open_or_build_packed(SyntheticDataset(2, size=SIZE).config, tmp_path / "junk")


def test_cache_workers_without_cache_is_an_error():
    with pytest.raises(ConfigError, match="cache_workers needs cache=DIR"):
        build_dataset("synthetic:frames=2,size=64x128,cache_workers=2")


def test_unknown_option_lists_cache():
    with pytest.raises(ConfigError, match=r"valid options: .*cache, cache_workers"):
        build_dataset("synthetic:frames=2,cahce=x")


def test_changed_generator_is_detected_on_open(tmp_path):
    root = tmp_path / "c"
    write_synthetic_packed(root, SyntheticDataset(3, seed=1, size=SIZE).config, workers=1)
    rgb = np.load(root / "rgb.npy", mmap_mode="r+")
    rgb[0, 0, 0, 0] ^= 1  # as if frame 0 had been rendered by another generator version
    rgb.flush()
    with pytest.raises(DatasetFormatError, match=r"scene 0 differs.*remove .* and rebuild"):
        SyntheticPackedDataset(root)
    ds = SyntheticPackedDataset(root, check_frames=0)
    with pytest.raises(DatasetFormatError, match="frame 0 does not match its digest"):
        ds.verify()


def test_interrupted_write_leaves_no_cache(tmp_path, monkeypatch):
    real = packed_mod._render

    def failing(ds, index):
        if index == 2:
            raise RuntimeError("killed")
        return real(ds, index)

    monkeypatch.setattr(packed_mod, "_render", failing)
    with pytest.raises(RuntimeError, match="killed"):
        write_synthetic_packed(tmp_path / "c", SyntheticDataset(4, size=SIZE).config, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_pickle_reopens_the_maps_instead_of_copying(cache_dir):
    ds = SyntheticPackedDataset(cache_dir)
    blob = pickle.dumps(ds)
    assert len(blob) < 200_000  # the arrays are ~1 MB; only paths and object lists travel
    _assert_same(pickle.loads(blob)[4], ds[4])


def test_missing_folder_names_the_fix(tmp_path):
    with pytest.raises(DatasetFormatError, match="damcseg-make-synthetic --format packed"):
        SyntheticPackedDataset(tmp_path / "nope")


def test_index_out_of_range(cache_dir):
    with pytest.raises(IndexError, match="index 6 out of range for 6"):
        SyntheticPackedDataset(cache_dir)[6]


def test_cli_writes_a_packed_cache(tmp_path, capsys):
    out = tmp_path / "p"
    rc = make_synthetic.main(
        ["--format", "packed", "--out", str(out), "--frames", "3", "--size", "64x128", "--seed", "4",
         "--workers", "1", "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    assert "synthetic:frames=3,size=64x128,seed=4,cache=" in capsys.readouterr().out
    assert (out / "preview.png").is_file()
    _assert_same(SyntheticPackedDataset(out)[2], SyntheticDataset(3, seed=4, size=SIZE)[2])
    assert make_synthetic.main(["--format", "packed", "--out", str(out), "--frames", "3"]) == 2
    assert "exists; remove it" in capsys.readouterr().err


def test_cli_packed_refuses_drive(tmp_path, capsys):
    rc = make_synthetic.main(["--format", "packed", "--drive", "--out", str(tmp_path / "d"), "--frames", "2"])
    assert rc == 2
    assert "drop --drive" in capsys.readouterr().err
