"""Batching of sample dicts: stacking, per-object lists, and clear errors for mixed batches."""

from __future__ import annotations

import pytest
import torch

from damcseg_core.data.collate import collate
from damcseg_core.data.synthetic import SyntheticDrive, SyntheticWorldConfig, frame_to_sample

H, W = 32, 64


@pytest.fixture(scope="module")
def frames() -> list:
    d = SyntheticDrive(SyntheticWorldConfig(size=(H, W), seed=1, crowd=(1.0, 1.0)))
    return [d.frame(0), d.frame(30, condition="fog"), d.frame(60, condition="night")]


@pytest.mark.parametrize(
    ("key", "shape", "dtype"),
    [
        ("rgb", (3, 3, H, W), torch.float32),
        ("depth", (3, 1, H, W), torch.float32),
        ("thermal", (3, 1, H, W), torch.float32),
        ("present", (3, 3), torch.bool),
        ("semantic", (3, H, W), torch.int64),
        ("instance", (3, H, W), torch.int32),
    ],
)
def test_per_pixel_tensors_are_stacked(frames, key, shape, dtype):
    batch = collate([frame_to_sample(f) for f in frames])
    assert (tuple(batch[key].shape), batch[key].dtype) == (shape, dtype)


@pytest.mark.parametrize("key", ["boxes", "labels", "occlusion", "areas"])
def test_per_object_tensors_stay_lists(frames, key):
    samples = [frame_to_sample(f) for f in frames]
    batch = collate(samples)
    assert isinstance(batch[key], list) and len(batch[key]) == 3
    for got, s in zip(batch[key], samples):
        assert torch.equal(got, s[key])


def test_condition_and_meta_are_lists(frames):
    batch = collate([frame_to_sample(f) for f in frames])
    assert batch["condition"] == ["day", "fog", "night"]
    assert [m["frame"] for m in batch["meta"]] == [0, 30, 60]
    torch.testing.assert_close(batch["rgb"][1], frame_to_sample(frames[1])["rgb"])


def test_modality_subset_batch_has_only_those_keys(frames):
    batch = collate([frame_to_sample(f, ["depth"]) for f in frames])
    assert "rgb" not in batch and "thermal" not in batch
    assert batch["present"].tolist() == [[False, True, False]] * 3


def test_mixed_modality_sets_are_rejected(frames):
    samples = [frame_to_sample(frames[0]), frame_to_sample(frames[1], ["rgb", "depth"])]
    with pytest.raises(ValueError, match=r"sample 1 has modalities \['rgb', 'depth'\] but sample 0 has"):
        collate(samples)


def test_mixed_sizes_are_rejected(frames):
    samples = [frame_to_sample(frames[0]), frame_to_sample(frames[1], size=(16, 32))]
    with pytest.raises(ValueError, match="sample 1 is 16x32 but sample 0 is 32x64; resize or crop"):
        collate(samples)


def test_empty_batch_is_rejected():
    with pytest.raises(ValueError, match="empty batch"):
        collate([])
