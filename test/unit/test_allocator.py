"""tune_allocator: the mallopt calls it makes, when it refuses, and that it changes no output."""

from __future__ import annotations

import platform

import pytest
import torch

import damcseg_core.inference.allocator as allocator
from damcseg_core.inference import tune_allocator


class FakeLibc:
    """Records mallopt(param, value) calls; answers with ``result[param]`` (1 = accepted)."""

    def __init__(self, result: dict[int, int] | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = result or {}

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result.get(param, 1)


@pytest.fixture
def glibc(monkeypatch):
    """A glibc platform with a fake C library."""
    fake = FakeLibc()
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(allocator, "_libc", lambda: fake)
    return fake


@pytest.mark.parametrize("mb", [1, 8, 32])
def test_sets_mmap_then_trim_threshold_in_bytes(glibc, mb):
    applied, message = tune_allocator(mb)
    assert applied
    assert glibc.calls == [(allocator.M_MMAP_THRESHOLD, mb << 20), (allocator.M_TRIM_THRESHOLD, 4 * mb << 20)]
    assert allocator.M_MMAP_THRESHOLD == -3 and allocator.M_TRIM_THRESHOLD == -1  # <malloc.h>
    assert f"up to {mb} MiB" in message and f"trim threshold {4 * mb} MiB" in message


def test_default_covers_a_full_resolution_score_map(glibc):
    tune_allocator()
    score_map_bytes = 19 * 256 * 512 * 4  # [1, 19, 256, 512] float32, the model's largest tensor
    assert glibc.calls[0][1] > score_map_bytes


def test_refused_mmap_threshold_changes_nothing(glibc):
    glibc.result = {allocator.M_MMAP_THRESHOLD: 0}
    applied, message = tune_allocator()
    assert not applied
    assert "refused 32 MiB" in message and "left as it is" in message
    assert glibc.calls == [(allocator.M_MMAP_THRESHOLD, 32 << 20)]  # the trim threshold untouched


@pytest.mark.parametrize("libc_ver", [("", ""), ("musl", "1.2")])
def test_other_c_libraries_are_left_alone(monkeypatch, libc_ver):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: libc_ver)
    monkeypatch.setattr(allocator, "_libc", lambda: pytest.fail("must not load a C library off glibc"))
    applied, message = tune_allocator()
    assert not applied and "not glibc" in message


def test_unloadable_libc_is_reported(monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.setattr(allocator, "_libc", lambda: None)
    assert tune_allocator() == (False, "allocator left as it is: glibc's mallopt could not be loaded")


@pytest.mark.parametrize("bad", [0, 33, -1, 2.0, "8", True, None])
def test_bad_threshold_names_the_range(glibc, bad):
    with pytest.raises(ValueError, match=r"integer from 1 to 32 \(MiB\)"):
        tune_allocator(bad)
    assert glibc.calls == []


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="needs glibc")
def test_real_glibc_accepts_and_outputs_are_unchanged():
    torch.manual_seed(0)
    x = torch.randn(1, 19, 128, 256)
    before = torch.nn.functional.interpolate(x, size=(256, 512), mode="bilinear", align_corners=False)
    applied, message = tune_allocator()
    assert applied, message
    assert tune_allocator()[0]  # idempotent
    after = torch.nn.functional.interpolate(x, size=(256, 512), mode="bilinear", align_corners=False)
    assert torch.equal(before, after)
