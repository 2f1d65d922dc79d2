"""Checkpoints: full round trip, RNG state, atomic writes, and a clear error for each bad file."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from damcseg_core.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    load_model,
    restore_rng_state,
    save_checkpoint,
)
from damcseg_core.config import to_dict


@pytest.fixture(scope="module")
def tiny():
    from damcseg_core.models import build_model

    torch.manual_seed(0)
    return build_model("damcseg_tiny")


@pytest.fixture(scope="module")
def saved(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    opt = torch.optim.AdamW(tiny.parameters(), lr=1e-3)
    save_checkpoint(path, tiny, optimizer=opt, step=7, best_metric=0.25, train_config={"seed": 3})
    return path


def test_round_trip_rebuilds_the_model_from_the_file_alone(tiny, saved):
    model = load_model(saved)
    assert not model.training
    assert to_dict(model.config) == to_dict(tiny.config)
    ref = tiny.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in model.state_dict().items())


def test_checkpoint_holds_everything_and_loads_weights_only(saved):
    ckpt = torch.load(saved, weights_only=True)
    assert ckpt["format"] == "damcseg-checkpoint"
    assert (ckpt["model_name"], ckpt["step"], ckpt["best_metric"]) == ("damcseg_tiny", 7, 0.25)
    assert ckpt["train_config"] == {"seed": 3}
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == 1e-3
    assert set(ckpt["rng"]) == {"python", "numpy", "torch", "cuda"}
    assert ckpt["model_config"]["name"] == "damcseg_tiny"


def test_rng_state_round_trip():
    random.seed(1)
    np.random.seed(1)  # noqa: NPY002 (the legacy global RNG is what is saved)
    torch.manual_seed(1)
    state = capture_rng_state()
    draw = lambda: (random.random(), float(np.random.rand()), float(torch.rand(())))  # noqa: E731, NPY002
    first = draw()
    restore_rng_state(state)
    assert draw() == first


def test_save_leaves_no_temp_files_and_keeps_old_file_on_failure(tiny, tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, tiny, step=1)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match=r"disk full"):
        save_checkpoint(path, tiny, step=2)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint not found: .*missing.pt"):
        load_model(tmp_path / "missing.pt")


def test_empty_file(tmp_path):
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"is empty"):
        load_checkpoint(tmp_path / "e.pt")


def test_truncated_file(saved, tmp_path):
    data = saved.read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"is truncated .* copy it again or use an earlier checkpoint"):
        load_model(tmp_path / "t.pt")


def test_corrupt_file(tmp_path):
    (tmp_path / "c.pt").write_bytes(b"\x80\x02garbage" * 50)
    with pytest.raises(CheckpointError, match=r"is corrupt"):
        load_model(tmp_path / "c.pt")


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "code.pt"
    torch.save({"format": "damcseg-checkpoint", "model": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(CheckpointError, match=r"contains pickled Python code .* refuses to load"):
        load_model(path)


def test_not_a_damcseg_checkpoint(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match=r"is not a damcseg checkpoint .*found \['state_dict'\]"):
        load_model(path)


def test_wrong_variant(saved):
    with pytest.raises(
        CheckpointError, match=r"holds a 'damcseg_tiny' model, but 'damcseg_edge' was requested"
    ):
        load_model(saved, expected_name="damcseg_edge")


def test_weights_that_do_not_fit_the_config(saved, tmp_path):
    ckpt = torch.load(saved, weights_only=True)
    ckpt["model_config"]["completion"]["hidden"] = 48  # the stored weights have hidden=32
    torch.save(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(
        CheckpointError, match=r"the weights do not fit the 'damcseg_tiny' model .*size mismatch"
    ):
        load_model(tmp_path / "mismatch.pt")


def test_checkpoints_from_before_the_refinement_head_load_and_predict_the_same(tmp_path):
    """dsaf.*, post_path.* and crf.* sat on the model before RefinementHead owned them."""
    from damcseg_core.models import build_model
    from damcseg_core.models.refinement import REFINEMENT_MODULES

    torch.manual_seed(1)
    tiny = build_model("damcseg_tiny")
    with torch.no_grad():
        tiny.refinement.dsaf.a.fill_(0.7)  # not the default, so a key left unloaded would show
    new_path = save_checkpoint(tmp_path / "new_layout.pt", tiny)
    ckpt = torch.load(new_path, weights_only=True)
    moved = [k for k in ckpt["model"] if k.startswith("refinement.")]
    assert moved and {k.split(".")[1] for k in moved} <= set(REFINEMENT_MODULES)
    ckpt["model"] = {k.removeprefix("refinement."): v for k, v in ckpt["model"].items()}
    assert "dsaf.a" in ckpt["model"]
    torch.save(ckpt, tmp_path / "old_layout.pt")
    old, new = load_model(tmp_path / "old_layout.pt"), load_model(new_path)
    assert float(old.refinement.dsaf.a) == pytest.approx(0.7)
    g = torch.Generator().manual_seed(0)
    x = {
        "rgb": torch.rand(1, 3, 64, 128, generator=g),
        "depth": torch.rand(1, 1, 64, 128, generator=g) * 50,
        "thermal": torch.rand(1, 1, 64, 128, generator=g),
    }
    with torch.no_grad():
        torch.testing.assert_close(old(x).seg_logits, new(x).seg_logits, rtol=0, atol=0)
