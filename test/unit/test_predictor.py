"""Predictor: numpy round trips at odd sizes, resize/un-resize maths, checkpoints, input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from damcseg_core.checkpoint import save_checkpoint
from damcseg_core.data.classes import CITYSCAPES_CLASSES, DETECTION_TRAIN_IDS
from damcseg_core.inference import PredictionResult, Predictor
from damcseg_core.models import DamcsegOutput, build_model, get_config
from damcseg_core.models.scene_complexity import SceneComplexity

RNG = np.random.default_rng(0)


def rgb(h, w):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def depth(h, w):
    d = RNG.uniform(1, 60, (h, w)).astype(np.float32)
    d[0, :5] = np.nan
    d[1, :5] = -1.0
    d[2, :5] = np.inf
    return d


def thermal(h, w):
    return RNG.uniform(0, 1, (h, w)).astype(np.float32)


@pytest.fixture(scope="module")
def predictor():
    torch.manual_seed(0)
    return Predictor(build_model("damcseg_tiny", detection={"score_threshold": 0.0}))


@pytest.mark.parametrize(
    ("inputs", "expected_completed"),
    [
        ({"rgb": rgb(97, 203)}, ("depth", "thermal")),
        ({"rgb": rgb(97, 203), "depth": depth(50, 101)}, ("thermal",)),
        ({"depth": depth(123, 77)}, ("rgb", "thermal")),
        ({"thermal": thermal(31, 45)}, ("rgb", "depth")),
        ({"rgb": rgb(240, 320), "depth": depth(240, 320), "thermal": thermal(120, 160)}, ()),
    ],
    ids=["rgb-97x203", "rgb+depth-other-size", "depth-only-123x77", "thermal-only-31x45", "all-240x320"],
)
def test_round_trip_odd_sizes(predictor, inputs, expected_completed):
    res = predictor.predict(inputs)
    h, w = next(iter(inputs.values())).shape[:2]
    assert isinstance(res, PredictionResult)
    assert res.mask.shape == (h, w) and res.mask.dtype == np.uint8
    assert set(np.unique(res.mask).tolist()) <= set(range(19))
    n = len(res.boxes)
    assert 1 <= n <= 8
    assert res.boxes.dtype == np.float32 and res.scores.shape == (n,) and res.labels.dtype == np.int64
    assert (res.boxes[:, 0] >= 0).all() and (res.boxes[:, 1] >= 0).all()
    assert (res.boxes[:, 2] <= w).all() and (res.boxes[:, 3] <= h).all()
    assert set(res.labels.tolist()) <= set(DETECTION_TRAIN_IDS)
    assert res.present == tuple(m for m in ("rgb", "depth", "thermal") if m in inputs)
    assert res.completed == expected_completed
    assert np.isfinite([res.alpha, res.beta, res.gamma]).all() and res.omega.shape == (3,)
    assert res.category in (0, 1, 2) and np.isfinite(res.S)
    assert res.inference_ms > 0 and res.class_names == CITYSCAPES_CLASSES


class _FixedModel(nn.Module):
    """Returns known logits/boxes in model coordinates, to test the predictor's mapping back."""

    def __init__(self):
        super().__init__()
        self.config = get_config("damcseg_tiny")  # input_size 64x128
        self.seen = None

    def forward(self, inputs):
        self.seen = {k: v.clone() for k, v in inputs.items()}
        x = next(iter(inputs.values()))
        b, _, h, w = x.shape
        logits = torch.zeros(b, 19, h, w)
        logits[:, 1, :, : w // 2] = 5.0  # left half of the padded frame -> class 1
        logits[:, 2, :, w // 2 :] = 5.0
        zeros = torch.zeros(b)
        return DamcsegOutput(
            seg_logits=logits,
            boxes=[torch.tensor([[0.0, 0.0, 64.0, 32.0], [100.0, 20.0, 128.0, 64.0]])],
            scores=[torch.tensor([0.9, 0.5])],
            labels=[torch.tensor([13, 11])],
            scene=SceneComplexity(
                zeros + 0.5, zeros + 0.1, zeros, zeros + 0.2, torch.ones(b, dtype=torch.long)
            ),
            alpha_beta_gamma=torch.tensor([[0.5, 0.3, 0.2]]),
            target_alpha_beta_gamma=[torch.zeros(2, 3)],
            omega=torch.tensor([[0.4, 0.5, 0.6]]),
            present=tuple(inputs),
            completed=(),
        )


def test_resize_pad_and_map_back_exactly():
    model = _FixedModel()
    res = Predictor(model).predict(
        {"rgb": np.zeros((100, 200, 3), np.uint8), "depth": np.ones((100, 200), np.float32)}
    )
    # 100x200 -> scale 0.64 -> 64x128, already a multiple of 32: no padding.
    assert model.seen["rgb"].shape == (1, 3, 64, 128)
    np.testing.assert_allclose(res.boxes, [[0, 0, 100, 50], [156.25, 31.25, 200, 100]], rtol=1e-6)
    assert res.mask[:, :99].max() == 1 and res.mask[:, 101:].min() == 2
    assert (res.S, res.category) == (0.5, 1)
    assert res.omega.tolist() == pytest.approx([0.4, 0.5, 0.6])


def test_padding_is_cropped_before_unresizing():
    model = _FixedModel()
    # 50x200 -> scale 0.64 -> 32x128: fits; 40x200 -> 26x128 -> padded to 32x128.
    res = Predictor(model).predict({"depth": np.full((40, 200), 7.0, np.float32)})
    seen = model.seen["depth"]
    assert seen.shape == (1, 1, 32, 128)
    assert seen[0, 0, :26].eq(7.0).all() and seen[0, 0, 26:].eq(0).all()  # depth padded as invalid
    assert res.mask.shape == (40, 200)
    # y scale is 26 / 40 (the rounded resize), x scale 128 / 200; y2 = 64 / 0.65 is clipped to 40.
    np.testing.assert_allclose(res.boxes[1], [100 / 0.64, 20 / 0.65, 200, 40], rtol=1e-6)


def test_invalid_depth_becomes_zero_and_rgb_is_scaled():
    model = _FixedModel()
    d = np.array([[np.nan, -2.0], [np.inf, 3.5]], np.float32).repeat(32, 0).repeat(64, 1)
    Predictor(model).predict({"rgb": np.full((64, 128, 3), 255, np.uint8), "depth": d})
    assert model.seen["rgb"].eq(1.0).all()
    assert model.seen["depth"][0, 0, :32].eq(0).all()
    assert (
        model.seen["depth"][0, 0, 32:, :64].eq(0).all() and model.seen["depth"][0, 0, 32:, 64:].eq(3.5).all()
    )


@pytest.mark.parametrize(
    ("inputs", "error", "message"),
    [
        ({}, ValueError, "non-empty dict"),
        ({"lidar": np.zeros((4, 4), np.float32)}, ValueError, "valid keys are ['rgb', 'depth', 'thermal']"),
        ({"rgb": np.zeros((48, 64), np.uint8)}, ValueError, "HxWx3 uint8"),
        ({"rgb": np.zeros((48, 64, 3), np.float32)}, ValueError, "HxWx3 uint8"),
        ({"depth": np.zeros((48, 64), np.uint16)}, ValueError, "millimetres"),
        ({"thermal": np.zeros((48, 64), np.uint8)}, ValueError, "full scale"),
        ({"thermal": np.zeros((2, 48, 64), np.float32)}, ValueError, "HxW array"),
        ({"rgb": [[1, 2, 3]]}, ValueError, "numpy array"),
    ],
)
def test_bad_inputs(predictor, inputs, error, message):
    with pytest.raises(error) as info:
        predictor.predict(inputs)
    assert message in str(info.value)


def test_read_only_inputs_are_accepted_without_warning(predictor, recwarn):
    frame = rgb(64, 128)
    frame.flags.writeable = False
    res = predictor.predict({"rgb": frame})
    assert res.mask.shape == (64, 128)
    assert not [w for w in recwarn if "not writable" in str(w.message)]


@pytest.mark.parametrize("min_confidence", [0.0, 0.5, 0.9])
def test_min_confidence_marks_unknown(min_confidence):
    model = _FixedModel()  # logits 5 vs 0 on 19 classes: top probability e^5 / (e^5 + 18) = 0.892
    res = Predictor(model, min_confidence=min_confidence).predict({"rgb": np.zeros((64, 128, 3), np.uint8)})
    if min_confidence < 0.892:
        assert set(np.unique(res.mask).tolist()) == {1, 2}
    else:
        assert set(np.unique(res.mask).tolist()) == {255}


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(1)
    model = build_model("damcseg_tiny")
    save_checkpoint(tmp_path / "ckpt.pt", model, step=3)
    frame = {"rgb": rgb(97, 203), "thermal": thermal(97, 203)}
    a = Predictor(model).predict(frame)
    p = Predictor.from_checkpoint(tmp_path / "ckpt.pt", expected_name="damcseg_tiny")
    b = p.predict(frame)
    assert p.config == model.config
    np.testing.assert_array_equal(a.mask, b.mask)
    assert b.omega.tolist() == pytest.approx(a.omega.tolist())


def test_checkpoint_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        Predictor.from_checkpoint(tmp_path / "nope.pt")


def test_checkpoint_corrupt_file(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="corrupt"):
        Predictor.from_checkpoint(path)


def test_checkpoint_not_damcseg(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a damcseg checkpoint"):
        Predictor.from_checkpoint(tmp_path / "other.pt")


def test_checkpoint_of_another_variant(tmp_path):
    save_checkpoint(tmp_path / "tiny.pt", build_model("damcseg_tiny"))
    with pytest.raises(ValueError) as info:
        Predictor.from_checkpoint(tmp_path / "tiny.pt", expected_name="damcseg_edge")
    assert "'damcseg_tiny' model, but 'damcseg_edge' was requested" in str(info.value)


def test_checkpoint_state_dict_mismatch(tmp_path):
    path = tmp_path / "mix.pt"
    save_checkpoint(path, build_model("damcseg_tiny"))
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"] = build_model("damcseg_edge").state_dict()
    torch.save(ckpt, path)
    with pytest.raises(ValueError) as info:
        Predictor.from_checkpoint(path)
    assert "weights do not fit the 'damcseg_tiny' model" in str(info.value)


def test_from_name_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = Predictor.from_name("damcseg_tiny", seed=0)
    after = torch.rand(1)
    b = Predictor.from_name("damcseg_tiny", seed=0)
    c = Predictor.from_name("damcseg_tiny", seed=1)
    assert torch.equal(before, after)
    wa, wb, wc = (next(p.model.encoders["depth"].parameters()) for p in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
