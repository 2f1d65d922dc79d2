"""load_predictor: one loader for every back-end, the shipped checkpoint, detection overrides, class names."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import damcseg_core
from damcseg_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from damcseg_core.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from damcseg_core.inference import DETECTION_KEYS, default_checkpoint, load_predictor, resolve_model_source
from damcseg_core.models import build_model, get_config


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model("damcseg_tiny")


def test_default_checkpoint_is_found_inside_the_installed_package():
    path = default_checkpoint()
    assert path == Path(damcseg_core.__file__).parent / "weights" / "damcseg_edge.pt"


def test_variant_name_gives_reproducible_random_weights_and_says_so():
    warnings: list[str] = []
    a = load_predictor(model="damcseg_tiny", seed=3, warn=warnings.append)
    b = load_predictor(model="damcseg_tiny", seed=3, warn=warnings.append)
    for (name, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert a.label == "damcseg_tiny (random init)"
    assert len(warnings) == 2 and "RANDOM weights" in warnings[0]


@pytest.mark.parametrize(
    "detection",
    [{"score_threshold": 0.6}, {"max_detections": 7}, {"score_threshold": 0.1, "max_detections": 50}],
)
def test_detection_overrides_replace_the_model_config(detection):
    base = get_config("damcseg_tiny").detection
    p = load_predictor(model="damcseg_tiny", detection=detection, warn=lambda _: None)
    assert p.model.det_head.cfg == dataclasses.replace(base, **detection)
    assert p.model.det_head.cfg != base


def test_detection_max_detections_caps_the_boxes(tiny):
    frame = {"rgb": np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8)}
    p = load_predictor(model=tiny, detection={"score_threshold": 0.0, "max_detections": 3})
    assert len(p.predict(frame).boxes) == 3


def test_class_agnostic_nms_passes_through_when_the_config_has_it():
    warnings: list[str] = []
    p = load_predictor(model="damcseg_tiny", detection={"class_agnostic_nms": True}, warn=warnings.append)
    fields = {f.name for f in dataclasses.fields(p.model.det_head.cfg)}
    if "class_agnostic_nms" in fields:
        assert p.model.det_head.cfg.class_agnostic_nms is True
    else:
        assert any("['class_agnostic_nms'] not supported" in w for w in warnings)


def test_unknown_detection_key_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown detection setting\(s\) \['nms'\]; valid keys are") as err:
        load_predictor(model="damcseg_tiny", detection={"nms": 0.5}, warn=lambda _: None)
    for key in DETECTION_KEYS:
        assert key in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "tensorrt"}, "backend must be one of ['torch', 'onnxruntime'], got 'tensorrt'"),
        ({"modalities": ("rgb", "lidar")}, "modalities must be a non-empty subset of"),
        ({"modalities": ()}, "modalities must be a non-empty subset of"),
        ({"backend": "onnxruntime"}, "backend:=onnxruntime needs parameter 'onnx_path'"),
    ],
)
def test_bad_requests_are_refused_with_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_predictor(model="damcseg_tiny", **kwargs)


def test_explicit_missing_checkpoint_is_an_error_not_random_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="parameter 'checkpoint' names a missing file"):
        resolve_model_source(str(tmp_path / "typo.pt"), "damcseg_tiny", tmp_path / "absent.pt")


@pytest.fixture
def shipped_weights(tmp_path, monkeypatch):
    """A stand-in weights folder holding two 'shipped' checkpoints."""
    import damcseg_core.inference.loading as loading

    folder = tmp_path / "weights"
    folder.mkdir()
    for name in ("damcseg_edge.pt", "damcseg_edge_fast.pt"):
        (folder / name).write_bytes(b"stand-in")
    monkeypatch.setattr(loading, "default_checkpoint", lambda: folder / "damcseg_edge.pt")
    return folder


@pytest.mark.parametrize("name", ["damcseg_edge_fast", "damcseg_edge_fast.pt"])
def test_a_shipped_checkpoint_is_found_by_its_name(shipped_weights, name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the name is not a file here: the package folder answers
    assert resolve_model_source(name, None) == ("checkpoint", str(shipped_weights / "damcseg_edge_fast.pt"))


def test_a_local_file_wins_over_a_shipped_name(shipped_weights, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "damcseg_edge_fast.pt").write_bytes(b"mine")
    assert resolve_model_source("damcseg_edge_fast.pt", None) == ("checkpoint", "damcseg_edge_fast.pt")


@pytest.mark.parametrize("name", ["damcseg_edge_fastest", "other/damcseg_edge_fast.pt"])
def test_an_unknown_name_lists_the_shipped_checkpoints(shipped_weights, name, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        resolve_model_source(name, "damcseg_tiny")
    assert f"names a missing file: {name}" in str(err.value)
    assert "name of a shipped checkpoint: damcseg_edge, damcseg_edge_fast)" in str(err.value)


def test_class_names_and_palette_travel_in_the_checkpoint(tiny, tmp_path):
    names = tuple(f"c{i}" for i in range(len(CITYSCAPES_CLASSES)))
    palette = [[i, 2 * i, 3 * i] for i in range(len(names))]
    tiny.class_names, tiny.palette = names, palette
    try:
        save_checkpoint(tmp_path / "named.pt", tiny)
    finally:
        del tiny.class_names, tiny.palette
    assert load_checkpoint(tmp_path / "named.pt")["class_names"] == list(names)
    p = load_predictor(checkpoint=tmp_path / "named.pt")
    assert p.class_names == names and p.palette.tolist() == palette
    assert p.label == "named.pt"
    frame = {"rgb": np.zeros((64, 128, 3), np.uint8)}
    assert p.predict(frame).class_names == names


def test_checkpoint_without_class_names_falls_back_to_cityscapes(tiny, tmp_path):
    save_checkpoint(tmp_path / "old.pt", tiny)
    ckpt = torch.load(tmp_path / "old.pt", weights_only=True)
    del ckpt["class_names"], ckpt["palette"]
    torch.save(ckpt, tmp_path / "old.pt")
    p = load_predictor(checkpoint=tmp_path / "old.pt")
    assert p.class_names == CITYSCAPES_CLASSES
    np.testing.assert_array_equal(p.palette, CITYSCAPES_PALETTE)


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"garbage\n", "a text file (it starts with 'garbage\\n'), not a PyTorch archive"),
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n", "a Git LFS pointer"),
        (b"\x89HDF\r\n\x1a\n" + bytes(64), "an HDF5 file"),
        (bytes([0xDE, 0xAD, 0xBE, 0xEF]) * 20, "not a PyTorch archive (it starts with bytes de ad be ef"),
    ],
)
def test_a_foreign_file_is_named_with_how_to_get_a_good_one(tmp_path, content, what):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_predictor(checkpoint=bad)
    text = str(err.value)
    assert what in text
    assert "damcseg-train" in text and "damcseg_edge.pt" in text
    assert "weights_only" not in text and err.value.__cause__ is None
