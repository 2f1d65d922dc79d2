"""Robustness protocols on sample dicts: which modalities survive, values, seeding, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from damcseg_core.eval.protocols import COMPLETION_SUITE, ROBUSTNESS_SUITE, build_protocol, sample_rng


def _sample(h=8, w=12, modalities=("rgb", "depth", "thermal")):
    g = torch.Generator().manual_seed(0)
    s = {
        "rgb": torch.rand(3, h, w, generator=g),
        "depth": torch.rand(1, h, w, generator=g) * 50 + 1,
        "thermal": torch.rand(1, h, w, generator=g),
        "semantic": torch.zeros(h, w, dtype=torch.int64),
        "present": torch.tensor([True, True, True]),
        "condition": "night",
        "meta": {"dataset": "unit"},
    }
    for m in ("rgb", "depth", "thermal"):
        if m not in modalities:
            del s[m]
    s["present"] = torch.tensor([m in modalities for m in ("rgb", "depth", "thermal")])
    return s


@pytest.mark.parametrize(
    ("name", "kept"),
    [
        ("full", ("rgb", "depth", "thermal")),
        ("missing:thermal", ("rgb", "depth")),
        ("missing:rgb", ("depth", "thermal")),
        ("missing:thermal+depth", ("rgb",)),
        ("missing:rgb+thermal", ("depth",)),
    ],
)
def test_entire_missing_drops_keys_and_updates_present(name, kept):
    sample = _sample()
    out = build_protocol(name)(sample, sample_rng(0, 0))
    assert tuple(m for m in ("rgb", "depth", "thermal") if m in out) == kept
    assert out["present"].tolist() == [m in kept for m in ("rgb", "depth", "thermal")]
    assert out["meta"] == {"dataset": "unit", "protocol": build_protocol(name).name}
    assert set(sample) >= {"rgb", "depth", "thermal"}  # the input is untouched
    assert sample["meta"] == {"dataset": "unit"}


def test_missing_name_is_canonicalised():
    assert build_protocol("missing:thermal+depth").name == "missing:depth+thermal"


@pytest.mark.parametrize(
    ("name", "canonical", "kept", "use_completion"),
    [
        ("full", "full", ("rgb", "depth", "thermal"), True),
        ("missing:thermal", "missing:thermal", ("rgb", "depth"), True),
        ("absent:thermal", "absent:thermal", ("rgb", "depth"), False),
        ("absent:thermal+rgb", "absent:rgb+thermal", ("depth",), False),
        ("zero-fill:depth", "zero-fill:depth", ("rgb", "depth", "thermal"), True),
    ],
)
def test_absent_drops_like_missing_and_switches_the_mcn_off(name, canonical, kept, use_completion):
    proto = build_protocol(name)
    assert proto.name == canonical and proto.use_completion is use_completion
    out = proto(_sample(), sample_rng(0, 0))
    assert tuple(m for m in ("rgb", "depth", "thermal") if m in out) == kept
    assert out["present"].tolist() == [m in kept for m in ("rgb", "depth", "thermal")]
    assert out["meta"]["protocol"] == canonical


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_random_missing_rate_and_never_empty(p):
    counts = np.zeros(3)
    n = 400
    for i in range(n):
        out = build_protocol(f"random-missing:{p}")(_sample(2, 2), sample_rng(7, i))
        kept = [m in out for m in ("rgb", "depth", "thermal")]
        assert any(kept)
        counts += np.logical_not(kept)
    # Drop rate ~ p, a little lower because all-drop frames keep one modality (p^3 / 3 per key).
    expected = p - p**3 / 3
    np.testing.assert_allclose(counts / n, expected, atol=0.06)


def test_random_missing_is_reproducible_per_index():
    proto = build_protocol("random-missing:0.5")
    runs = [
        [
            tuple(k for k in ("rgb", "depth", "thermal") if k in proto(_sample(2, 2), sample_rng(3, i)))
            for i in range(20)
        ]
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 2  # actually random across frames


def test_random_missing_on_single_modality_sample_keeps_it():
    out = build_protocol("random-missing:0.5")(_sample(modalities=("rgb",)), sample_rng(0, 1))
    assert "rgb" in out and out["present"].tolist() == [True, False, False]


def test_zero_fill_keeps_key_with_zeros():
    sample = _sample()
    out = build_protocol("zero-fill:thermal")(sample, sample_rng(0, 0))
    assert out["thermal"].shape == (1, 8, 12) and out["thermal"].dtype == torch.float32
    assert float(out["thermal"].abs().sum()) == 0.0
    assert out["present"].tolist() == [True, True, True]
    assert torch.equal(out["rgb"], sample["rgb"])
    assert float(sample["thermal"].sum()) > 0


def test_gaussian_noise_statistics_and_clipping():
    sample = _sample(64, 64)
    out = build_protocol("noise:thermal:gaussian=0.1")(sample, sample_rng(0, 0))
    diff = (out["thermal"] - sample["thermal"]).numpy()
    interior = (sample["thermal"].numpy() > 0.3) & (sample["thermal"].numpy() < 0.7)  # no clipping there
    assert diff[interior].std() == pytest.approx(0.1, rel=0.1)
    assert float(out["thermal"].min()) >= 0.0 and float(out["thermal"].max()) <= 1.0
    assert torch.equal(out["rgb"], sample["rgb"])


def test_depth_noise_keeps_invalid_pixels_invalid():
    sample = _sample(16, 16)
    sample["depth"][0, :4] = 0.0
    out = build_protocol("noise:depth:gaussian=2.0")(sample, sample_rng(0, 0))
    assert float(out["depth"][0, :4].abs().sum()) == 0.0
    assert float(out["depth"].min()) >= 0.0
    assert not torch.equal(out["depth"][0, 4:], sample["depth"][0, 4:])


def test_dead_pixels_fraction_same_pixels_in_all_channels():
    sample = _sample(100, 100)
    out = build_protocol("noise:rgb:dead=0.2")(sample, sample_rng(0, 0))
    dead = (out["rgb"] == 0).all(dim=0)
    assert float(dead.float().mean()) == pytest.approx(0.2, abs=0.02)
    assert torch.equal(out["rgb"][:, ~dead], sample["rgb"][:, ~dead])


def test_shift_translates_by_given_pixels_and_fills_zero():
    sample = _sample(10, 10)
    sample["depth"] = torch.arange(100, dtype=torch.float32).reshape(1, 10, 10) + 1
    out = build_protocol("noise:depth:shift=2")(sample, sample_rng(0, 0))["depth"][0]
    nz = torch.nonzero(out)
    assert len(nz) == 64  # 8x8 block survives
    # Every surviving value moved by exactly (+-2, +-2).
    (y, x) = nz[0].tolist()
    src = int(out[y, x].item()) - 1
    assert (abs(y - src // 10), abs(x - src % 10)) == (2, 2)


def test_noise_on_absent_modality_is_noop_and_numpy_samples_work():
    sample = _sample(modalities=("rgb",))
    out = build_protocol("noise:thermal:gaussian=0.1")(sample, sample_rng(0, 0))
    assert "thermal" not in out and torch.equal(out["rgb"], sample["rgb"])
    np_sample = {"rgb": np.full((3, 4, 4), 0.5, np.float32), "present": np.array([True, False, False])}
    out = build_protocol("noise:rgb:gaussian=0.1,dead=0.5")(np_sample, sample_rng(0, 0))
    assert isinstance(out["rgb"], np.ndarray) and out["present"].tolist() == [True, False, False]
    assert not np.array_equal(out["rgb"], np_sample["rgb"])


def test_entire_missing_on_sample_without_other_modalities_fails_clearly():
    with pytest.raises(ValueError, match="would remove every modality"):
        build_protocol("missing:rgb")(_sample(modalities=("rgb",)), sample_rng(0, 0))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("dropout", "unknown protocol 'dropout'"),
        ("missing:lidar", "unknown modality 'lidar'"),
        ("missing:rgb+depth+thermal", "removes every modality"),
        ("absent:depth+rgb+thermal", "removes every modality"),
        ("absent:sonar", "unknown modality 'sonar'"),
        ("random-missing:1.5", r"probability must be in \(0, 1\)"),
        ("random-missing:abc", "'abc' is not a valid float"),
        ("noise:depth:blur=2", "unknown noise effect 'blur'"),
        ("noise:depth", "expected noise:<modality>"),
        ("noise:rgb+depth:gaussian=0.1", "noise takes one modality"),
        ("noise:rgb:dead=2", r"dead fraction must be in \[0, 1\]"),
    ],
)
def test_bad_names_raise_listing_valid_forms(name, message):
    with pytest.raises(ValueError, match=message) as info:
        build_protocol(name)
    assert "Valid forms: full; missing:<m>" in str(info.value)


def test_default_suite_builds():
    names = [build_protocol(n).name for n in ROBUSTNESS_SUITE]
    assert names == list(ROBUSTNESS_SUITE) and len(names) == 10


def test_completion_suite_builds_all_sensors_then_three_variants_per_modality():
    names = [build_protocol(n).name for n in COMPLETION_SUITE]
    assert names == list(COMPLETION_SUITE)
    assert names[:4] == ["full", "missing:thermal", "zero-fill:thermal", "absent:thermal"]
    assert [n for n in names if n.startswith("absent:")] == ["absent:thermal", "absent:depth", "absent:rgb"]
    assert len(names) == 10
