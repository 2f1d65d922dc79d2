"""Paired augmentations keep every modality and label consistent; modality dropout subsets."""

from __future__ import annotations

import collections
import dataclasses

import pytest
import torch

from damcseg_core.train.augment import (
    ALL_SUBSETS,
    Augmenter,
    generator_for,
    hflip,
    refresh_objects,
    resize_crop,
    sample_modality_subset,
)
from damcseg_core.train.config import AugmentConfig

H, W = 64, 96


def _sample() -> dict:
    g = torch.Generator().manual_seed(0)
    semantic = torch.zeros(H, W, dtype=torch.int64)
    instance = torch.zeros(H, W, dtype=torch.int32)
    semantic[10:30, 5:25] = 13  # car, object 1
    instance[10:30, 5:25] = 1
    semantic[40:46, 70:76] = 11  # 36-px person, object 2 (tiny)
    instance[40:46, 70:76] = 2
    return {
        "rgb": torch.rand(3, H, W, generator=g),
        "depth": 1 + 10 * torch.rand(1, H, W, generator=g),
        "thermal": torch.rand(1, H, W, generator=g),
        "present": torch.tensor([True, True, True]),
        "semantic": semantic,
        "instance": instance,
        "boxes": torch.tensor([[5.0, 10.0, 25.0, 30.0], [70.0, 40.0, 76.0, 46.0]]),
        "labels": torch.tensor([13, 11]),
        "occlusion": torch.tensor([0.1, 0.6]),
        "areas": torch.tensor([400.0, 36.0]),
    }


def _tight_boxes(s: dict) -> list[list[float]]:
    out = []
    for k in range(1, s["boxes"].shape[0] + 1):
        ys, xs = torch.nonzero(s["instance"] == k, as_tuple=True)
        out.append([xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1])
    return out


def test_hflip_moves_boxes_labels_and_pixels_together():
    s = hflip(_sample())
    assert s["boxes"].tolist() == [[71.0, 10.0, 91.0, 30.0], [20.0, 40.0, 26.0, 46.0]]
    assert (s["semantic"][10:30, 71:91] == 13).all()
    assert (s["instance"][40:46, 20:26] == 2).all()
    assert torch.equal(s["rgb"], _sample()["rgb"].flip(-1))
    assert torch.equal(s["depth"], _sample()["depth"].flip(-1))


@pytest.mark.parametrize(
    ("scale", "offset"), [(0.5, (-10, -20)), (1.0, (5, 0)), (1.5, (20, 30)), (2.0, (16, 0))]
)
def test_scale_crop_keeps_boxes_tight_around_instance_pixels(scale, offset):
    s = _sample()
    had = torch.tensor([True, True])
    s = refresh_objects(resize_crop(s, scale, (64, 64), offset), had)
    assert s["semantic"].shape == (64, 64) and s["rgb"].shape == (3, 64, 64)
    assert s["boxes"].tolist() == _tight_boxes(s)
    assert s["areas"].tolist() == [float((s["instance"] == k).sum()) for k in range(1, len(s["boxes"]) + 1)]
    # Labels follow their objects: every instance pixel carries its object's class.
    for k, label in enumerate(s["labels"].tolist(), start=1):
        assert (s["semantic"][s["instance"] == k] == label).all()


def test_padding_uses_ignore_for_semantic_and_zero_elsewhere():
    s = resize_crop(_sample(), 0.5, (64, 64), (-16, -16))
    assert (s["semantic"][:16] == 255).all()
    assert (s["instance"][:16] == 0).all()
    assert (s["depth"][:, :16] == 0).all()


def test_objects_cropped_away_are_removed_and_ids_renumbered():
    s = refresh_objects(resize_crop(_sample(), 1.0, (32, 32), (32, 64)), torch.tensor([True, True]))
    assert s["labels"].tolist() == [11]
    assert s["occlusion"].tolist() == pytest.approx([0.6])
    assert int(s["instance"].max()) == 1
    assert s["boxes"].tolist() == [[6.0, 8.0, 12.0, 14.0]]


def test_color_jitter_touches_only_rgb():
    cfg = AugmentConfig(hflip=0, scale_min=1, scale_max=1, color_jitter=1.0, occlusion=0, tiny_zoom=0)
    base = Augmenter(
        AugmentConfig(hflip=0, scale_min=1, scale_max=1, color_jitter=0, occlusion=0, tiny_zoom=0), (H, W)
    )
    a = base(_sample(), generator_for(0, 1))
    b = Augmenter(cfg, (H, W))(_sample(), generator_for(0, 1))
    assert not torch.allclose(a["rgb"], b["rgb"])
    for key in ("depth", "thermal", "semantic", "instance", "boxes"):
        assert torch.equal(a[key], b[key]), key


def test_random_occlusion_blanks_all_modalities_but_keeps_labels():
    cfg = AugmentConfig(hflip=0, scale_min=1, scale_max=1, color_jitter=0, occlusion=1.0, tiny_zoom=0)
    s = Augmenter(cfg, (H, W))(_sample(), generator_for(3))
    blank = (s["rgb"] == 0).all(0)
    assert blank.sum() > 0
    assert (s["depth"][0][blank] == 0).all() and (s["thermal"][0][blank] == 0).all()
    assert torch.equal(s["semantic"], _sample()["semantic"])


def test_sensor_fault_blanks_one_sensor_that_stays_present_and_keeps_labels():
    cfg = AugmentConfig(
        hflip=0, scale_min=1, scale_max=1, color_jitter=0, occlusion=0, tiny_zoom=0, sensor_fault=1.0
    )
    base = Augmenter(dataclasses.replace(cfg, sensor_fault=0.0), (H, W))(_sample(), generator_for(3))
    blanked = collections.Counter()
    for seed in range(60):
        s = Augmenter(cfg, (H, W))(_sample(), generator_for(seed))
        dead = [m for m in ("rgb", "depth", "thermal") if not s[m].any()]
        assert len(dead) == 1, dead  # exactly one sensor, the others untouched
        assert all(torch.equal(s[m], base[m]) for m in ("rgb", "depth", "thermal") if m not in dead)
        assert s["present"].tolist() == [True, True, True]  # the model is not told
        assert torch.equal(s["semantic"], base["semantic"]) and torch.equal(s["boxes"], base["boxes"])
        blanked[dead[0]] += 1
    assert set(blanked) == {"rgb", "depth", "thermal"} and min(blanked.values()) >= 10


def test_sensor_fault_off_draws_nothing():
    """At 0 the fault takes no random draw, so every earlier config's augmentation is unchanged;
    a tiny non-zero rate takes exactly one more draw (it never fires at 1e-12)."""
    cfg = AugmentConfig(occlusion=0.5, sensor_fault=0.0)
    g_off, g_on = generator_for(11), generator_for(11)
    a = Augmenter(cfg, (H, W))(_sample(), g_off)
    b = Augmenter(dataclasses.replace(cfg, sensor_fault=1e-12), (H, W))(_sample(), g_on)
    for key in ("rgb", "depth", "thermal", "semantic", "boxes"):
        assert torch.equal(a[key], b[key]), key
    torch.rand((), generator=g_off)  # the draw the non-zero rate took
    assert torch.equal(g_off.get_state(), g_on.get_state())


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_sensor_fault_must_be_a_probability(value):
    with pytest.raises(ValueError, match=r"augment.sensor_fault is a probability"):
        AugmentConfig(sensor_fault=value)


def test_tiny_zoom_magnifies_the_tiny_object():
    cfg = AugmentConfig(
        hflip=0, color_jitter=0, occlusion=0, tiny_zoom=1.0, tiny_zoom_factor=2.0, tiny_zoom_area=100
    )
    s = Augmenter(cfg, (H, W))(_sample(), generator_for(5))
    person = (s["labels"] == 11).nonzero().flatten()
    assert len(person) == 1
    assert s["areas"][person].item() == pytest.approx(36 * 4, rel=0.15)  # 2x linear -> ~4x area
    assert s["boxes"].tolist() == _tight_boxes(s)


def test_augmentation_is_a_function_of_the_seed():
    aug = Augmenter(AugmentConfig(), (H, W))
    a, b = aug(_sample(), generator_for(7, 3)), aug(_sample(), generator_for(7, 3))
    c = aug(_sample(), generator_for(7, 4))
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["boxes"], b["boxes"])
    assert not torch.equal(a["rgb"], c["rgb"])


def test_eval_mode_only_fits_the_size():
    s = Augmenter(AugmentConfig(), (32, 48), train=False)(_sample(), generator_for(0))
    assert s["semantic"].shape == (32, 48)
    # Exactly half size: the nearest-neighbour instance map gives the halved boxes.
    assert s["boxes"].tolist() == [[3.0, 5.0, 13.0, 15.0], [35.0, 20.0, 38.0, 23.0]]
    assert s["labels"].tolist() == [13, 11]


def test_modality_dropout_never_empty_and_reaches_all_seven_subsets():
    g = torch.Generator().manual_seed(0)
    counts = collections.Counter(
        sample_modality_subset(g, ("rgb", "depth", "thermal"), 1.0) for _ in range(700)
    )
    assert set(counts) == set(ALL_SUBSETS)
    assert min(counts.values()) > 60  # roughly uniform: 100 expected each


@pytest.mark.parametrize("present", [("rgb",), ("depth", "thermal"), ("rgb", "thermal")])
def test_modality_dropout_keeps_a_present_subset(present):
    g = torch.Generator().manual_seed(1)
    draws = {sample_modality_subset(g, present, 1.0) for _ in range(200)}
    assert all(d and set(d) <= set(present) for d in draws)
    assert len(draws) == 2 ** len(present) - 1


def test_modality_dropout_probability_zero_keeps_everything():
    g = torch.Generator().manual_seed(2)
    assert {sample_modality_subset(g, ("rgb", "depth"), 0.0) for _ in range(50)} == {("rgb", "depth")}


def test_bad_probability_message():
    with pytest.raises(ValueError, match=r"augment.hflip is a probability"):
        AugmentConfig(hflip=1.5)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_real_synthetic_frames_stay_consistent_under_full_augmentation(seed):
    from damcseg_core.data.registry import build_dataset

    sample = build_dataset("synthetic:frames=2,size=64x128,seed=5")[seed % 2]
    s = Augmenter(AugmentConfig(tiny_zoom=0.5), (64, 128))(sample, generator_for(seed))
    assert s["rgb"].shape == (3, 64, 128) and s["semantic"].shape == (64, 128)
    assert s["boxes"].tolist() == _tight_boxes(s)
    assert len(s["labels"]) == len(s["occlusion"]) == len(s["areas"]) == s["boxes"].shape[0]
    assert int(s["instance"].max()) == s["boxes"].shape[0]


# ------------------------------------------- window-only resize == whole-frame resize + crop
def _reference_resize_crop(sample, scale, out_size, offset):
    """resize_crop as it was before it computed only the window (whole frame, then crop)."""
    import torch.nn.functional as F

    h, w = sample["semantic"].shape[-2:]
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    oh, ow = out_size
    oy, ox = offset
    sy0, sx0 = max(0, oy), max(0, ox)
    sy1, sx1 = min(sh, oy + oh), min(sw, ox + ow)
    for key in ("rgb", "depth", "thermal", "semantic", "instance"):
        x = sample[key]
        label = key in ("semantic", "instance")
        x4 = x[None, None].float() if label else x[None].float()
        mode = "nearest" if label or key == "depth" else "bilinear"
        kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": scale < 1}
        r = F.interpolate(x4, size=(sh, sw), mode=mode, **kwargs)[0]
        out = torch.full((r.shape[0], oh, ow), float(255 if key == "semantic" else 0))
        if sy1 > sy0 and sx1 > sx0:
            out[:, sy0 - oy : sy1 - oy, sx0 - ox : sx1 - ox] = r[:, sy0:sy1, sx0:sx1]
        sample[key] = out[0].to(x.dtype) if label else out.to(x.dtype)
    b = sample["boxes"] * torch.tensor([sw / w, sh / h, sw / w, sh / h]) - torch.tensor([ox, oy, ox, oy])
    b[:, 0::2] = b[:, 0::2].clamp(0, ow)
    b[:, 1::2] = b[:, 1::2].clamp(0, oh)
    sample["boxes"] = b
    return sample


@pytest.fixture(scope="module")
def synthetic_frames():
    from damcseg_core.data.synthetic import SyntheticDataset

    ds = SyntheticDataset(3, seed=11, size=(96, 192))
    return [ds[i] for i in range(3)]


@pytest.mark.parametrize(
    ("scale", "offset"),
    [(1.0, (0, 0)), (1.37, (13, 40)), (2.0, (70, 150)), (1.91, (-5, -9)), (3.3, (200, 390)), (0.61, (-4, 3)),
     (0.5, (0, 0)), (1.2, (100, 200))],
)  # fmt: skip
def test_window_resize_equals_whole_frame_resize(synthetic_frames, scale, offset):
    for frame in synthetic_frames:
        got = resize_crop(dict(frame), scale, (48, 96), offset)
        ref = _reference_resize_crop(dict(frame), scale, (48, 96), offset)
        for key in ("semantic", "instance", "depth", "boxes"):
            assert torch.equal(got[key], ref[key]), key  # nearest keys and boxes: exactly
        for key in ("rgb", "thermal"):
            if scale < 1:
                assert torch.equal(got[key], ref[key]), key  # antialiased shrink: still the whole frame
            else:
                torch.testing.assert_close(got[key], ref[key], rtol=0, atol=1e-4)


@pytest.mark.parametrize("seed", range(6))
def test_augmenter_equals_whole_frame_reference(synthetic_frames, seed, monkeypatch):
    import damcseg_core.train.augment as aug_mod

    cfg = AugmentConfig(scale_min=1.0, scale_max=4.0)
    aug = Augmenter(cfg, (48, 96), train=True)
    frame = synthetic_frames[seed % 3]
    got = aug(frame, generator_for(5, seed))
    with monkeypatch.context() as m:
        m.setattr(aug_mod, "resize_crop", _reference_resize_crop)
        ref = aug(frame, generator_for(5, seed))
    for key in ("semantic", "instance", "boxes", "labels", "occlusion", "areas", "depth"):
        assert torch.equal(got[key], ref[key]), key
    for key in ("rgb", "thermal"):
        torch.testing.assert_close(got[key], ref[key], rtol=0, atol=1e-4)
