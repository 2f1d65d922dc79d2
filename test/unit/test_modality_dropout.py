"""Issue #16: per-sample modality dropout, the keep-mask forward, distillation target, completion
flag in the attention, and an MCN that beats zero-fill on a toy pair."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from damcseg_core import MODALITIES
from damcseg_core.config import ConfigError, from_dict
from damcseg_core.losses.completion import completion_loss
from damcseg_core.models import build_model
from damcseg_core.models.completion import ModalCompletionNetwork
from damcseg_core.models.modal_attention import ConcatFusion, ModalAdaptiveAttention
from damcseg_core.train.config import AugmentConfig
from damcseg_core.train.modality_dropout import (
    ALL_SUBSETS,
    DROP_SUBSETS,
    drop_probability,
    sample_keep_mask,
    subset_name,
    subset_weights,
)

H, W, B = 64, 64, 4


def _subset_of(row: torch.Tensor) -> tuple[str, ...]:
    return tuple(m for m, k in zip(MODALITIES, row.tolist()) if k)


def _epoch_counts(cfg: AugmentConfig, present=MODALITIES, steps: int = 300, b: int = 8):
    counts = dict.fromkeys(ALL_SUBSETS, 0)
    mixed = 0
    for step in range(steps):
        keep = sample_keep_mask(torch.Generator().manual_seed(1000 + step), b, present, cfg)
        subsets = [_subset_of(r) for r in keep]
        mixed += len(set(subsets)) > 1
        for s in subsets:
            counts[s] += 1
    return counts, mixed, steps * b


def _within_binomial(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p)) + 1


# ----------------------------------------------------------------------------- the keep mask
@pytest.mark.parametrize(
    ("p", "weights"),
    [
        (0.5, {}),
        (0.7, {"rgb+depth": 3.0, "depth+thermal": 1.0, "thermal": 1.0, "rgb": 1.0}),
        (1.0, {"depth+thermal": 1.0, "rgb+thermal": 1.0}),
    ],
    ids=["uniform", "weighted", "rgb-or-depth-missing"],
)
def test_every_subset_appears_at_its_configured_rate_and_batches_mix(p, weights):
    cfg = AugmentConfig(modality_dropout=p, modality_dropout_subsets=weights)
    counts, mixed, n = _epoch_counts(cfg)
    probs = subset_weights(weights)
    expected = {s: p * float(probs[i]) for i, s in enumerate(DROP_SUBSETS)}
    expected[MODALITIES] = 1 - p
    for s in ALL_SUBSETS:
        assert _within_binomial(counts[s], n, expected[s]), (s, counts[s], n * expected[s])
    assert mixed >= 0.95 * 300  # batches of 8 mix subsets (not all equal: <= 1/128 by chance)


def test_uniform_dropout_reaches_all_seven_subsets_including_rgb_missing():
    counts, _, _ = _epoch_counts(AugmentConfig(modality_dropout=0.5), steps=50)
    assert all(counts[s] > 0 for s in ALL_SUBSETS)
    assert counts[("depth", "thermal")] > 0 and counts[("thermal",)] > 0


@pytest.mark.parametrize(
    ("present", "possible"),
    [
        (("rgb", "depth"), {("rgb",), ("depth",), ("rgb", "depth")}),
        (("thermal",), {("thermal",)}),
    ],
)
def test_mask_keeps_only_present_modalities_and_never_an_empty_row(present, possible):
    counts, _, _ = _epoch_counts(AugmentConfig(modality_dropout=0.8), present=present, steps=40)
    assert {s for s, c in counts.items() if c} == possible


def test_batch_mode_draws_one_subset_per_batch():
    cfg = AugmentConfig(modality_dropout=0.9, modality_dropout_mode="batch")
    _, mixed, _ = _epoch_counts(cfg, steps=50)
    assert mixed == 0


def test_mask_is_a_function_of_the_generator_seed():
    cfg = AugmentConfig()
    a = sample_keep_mask(torch.Generator().manual_seed(7), 16, MODALITIES, cfg)
    b = sample_keep_mask(torch.Generator().manual_seed(7), 16, MODALITIES, cfg)
    assert a.dtype == torch.bool and a.shape == (16, 3) and torch.equal(a, b)


@pytest.mark.parametrize(
    ("step", "expected"), [(0, 0.1), (50, 0.1 + 0.5 * 0.5), (100, 0.6), (1000, 0.6), (None, 0.6)]
)
def test_schedule_ramps_linearly_over_the_first_steps_of_a_stage(step, expected):
    cfg = AugmentConfig(modality_dropout=0.6, modality_dropout_start=0.1, modality_dropout_ramp_steps=100)
    assert drop_probability(cfg, step) == pytest.approx(expected)


def test_ramp_changes_the_observed_drop_rate():
    cfg = AugmentConfig(modality_dropout=0.8, modality_dropout_ramp_steps=100)
    early = sum(
        int((~sample_keep_mask(torch.Generator().manual_seed(s), 8, MODALITIES, cfg, 0)).any(1).sum())
        for s in range(50)
    )
    late = sum(
        int((~sample_keep_mask(torch.Generator().manual_seed(s), 8, MODALITIES, cfg, 200)).any(1).sum())
        for s in range(50)
    )
    assert early == 0 and _within_binomial(late, 400, 0.8)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("modality_dropout", 1.5, "augment.modality_dropout is a probability"),
        ("modality_dropout_start", -0.1, "augment.modality_dropout_start is a probability"),
        ("modality_dropout_mode", "frame", "augment.modality_dropout_mode must be 'sample' or 'batch'"),
        ("modality_dropout_ramp_steps", -3, "augment.modality_dropout_ramp_steps must be >= 0"),
        ("modality_dropout_subsets", {"rgb+radar": 1.0}, "'rgb+radar' is not a subset name"),
        ("modality_dropout_subsets", {"rgb+depth+thermal": 1.0}, "1 - augment.modality_dropout"),
        (
            "modality_dropout_subsets",
            {"rgb": -1.0},
            "modality_dropout_subsets['rgb'] must be a finite weight",
        ),
        ("modality_dropout_subsets", {"rgb": 0.0}, "every weight is 0"),
    ],
)
def test_invalid_dropout_config_names_the_field(field, value, message):
    with pytest.raises(ConfigError) as info:
        from_dict(AugmentConfig, {field: value}, path="augment")
    assert message in str(info.value)


def test_subset_names_round_trip():
    assert [subset_name(s) for s in DROP_SUBSETS] == [
        "rgb", "depth", "thermal", "rgb+depth", "rgb+thermal", "depth+thermal",
    ]  # fmt: skip
    assert subset_weights({"depth+rgb": 2.0, "thermal": 2.0}).tolist() == [0, 0, 0.5, 0.5, 0, 0]


# ----------------------------------------------------------------------------- the model
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("damcseg_tiny").eval()


def _inputs(b: int = B, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {
        "rgb": torch.rand(b, 3, H, W, generator=g),
        "depth": 1.0 + 30 * torch.rand(b, 1, H, W, generator=g),
        "thermal": torch.rand(b, 1, H, W, generator=g),
    }


KEEPS = {
    "mixed": [[True, True, True], [True, False, True], [False, True, True], [True, True, False]],
    "thermal-for-two": [[True, True, False], [True, True, True], [True, True, False], [True, True, True]],
    "one-each": [[True, False, False], [False, True, False], [False, False, True], [True, True, True]],
}


@pytest.mark.parametrize("name", KEEPS)
def test_mcn_replaces_only_the_dropped_entries_bit_identically(tiny, name):
    keep = torch.tensor(KEEPS[name])
    inputs = _inputs()
    with torch.no_grad():
        ref = tiny.forward_features(inputs)
        feats = tiny.forward_features(inputs, drop=keep)
    assert torch.equal(feats.completed_mask, ~keep)
    for i, m in enumerate(MODALITIES):
        real, used = ref.encoded[m], feats.completed_feats[m]
        assert torch.equal(feats.encoded[m], real)  # the real features are still computed
        assert torch.equal(used[keep[:, i]], real[keep[:, i]])  # present samples: bit-identical
        if (~keep[:, i]).any():
            assert not torch.allclose(used[~keep[:, i]], real[~keep[:, i]])
            assert (used[~keep[:, i]] >= 0).all()  # the ReLU output lives where features live
    # A sample's result does not depend on what the other samples of the batch drop.
    with torch.no_grad():
        one = tiny.forward_features({m: x[1:2] for m, x in inputs.items()}, drop=keep[1:2])
    torch.testing.assert_close(one.fused, feats.fused[1:2], rtol=1e-5, atol=1e-5)


def test_per_sample_mask_matches_the_whole_batch_drop_for_each_sample(tiny):
    keep = torch.tensor(KEEPS["mixed"])
    inputs = _inputs()
    with torch.no_grad():
        feats = tiny.forward_features(inputs, drop=keep)
        for i in range(B):
            drop = {m for j, m in enumerate(MODALITIES) if not keep[i, j]}
            single = tiny.forward_features({m: x[i : i + 1] for m, x in inputs.items()}, drop=drop)
            torch.testing.assert_close(single.fused, feats.fused[i : i + 1], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(single.omega, feats.omega[i : i + 1])


def test_train_step_gradients_and_a_teacher_without_gradient(tiny):
    keep = torch.tensor(KEEPS["mixed"])
    tiny.train()
    try:
        out = tiny(_inputs(), drop=keep)
    finally:
        tiny.eval()
    lmmf = out.lmmf
    assert lmmf.teacher_fused is not None and not lmmf.teacher_fused.requires_grad
    assert lmmf.teacher_fused.grad_fn is None
    assert lmmf.distill_mask.tolist() == [False, True, True, True]
    assert out.completed == MODALITIES
    for pred, real in out.completion.values():
        assert pred.requires_grad and not real.requires_grad
    # The head sees no dropped input: the dropped samples' normalised thermal is zeros.
    assert lmmf.normalized["thermal"][3].abs().sum() == 0 and lmmf.normalized["thermal"][0].abs().sum() > 0


def test_teacher_logits_are_the_global_path_on_the_real_sensors_and_carry_no_gradient(tiny):
    """forward(..., teacher_logits=True): the global-path logits of the teacher fusion, which for
    every sample equal the all-sensor run's global logits (train-mode BatchNorm sees the same
    batch of real fusions); without the flag there are none."""
    keep = torch.tensor(KEEPS["mixed"])
    inputs = _inputs()
    torch.manual_seed(0)
    tiny.train()
    try:
        out = tiny(inputs, drop=keep, teacher_logits=True)
        plain = tiny(inputs, drop=keep)
        full = tiny(inputs)
    finally:
        tiny.eval()
    teacher = out.teacher_global_logits
    assert teacher is not None and teacher.grad_fn is None and not teacher.requires_grad
    assert teacher.shape == out.branch_logits["global"].shape
    torch.testing.assert_close(teacher, full.branch_logits["global"], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(teacher[1:], out.branch_logits["global"][1:], atol=1e-3)  # students differ
    assert plain.teacher_global_logits is None


def test_teacher_is_the_attention_on_the_real_features(tiny):
    inputs = _inputs()
    with torch.no_grad():
        full = tiny.forward_features(inputs)
        feats = tiny.forward_features(inputs, drop=torch.tensor(KEEPS["mixed"]))
    torch.testing.assert_close(feats.teacher_fused, full.fused)
    assert tiny.forward_features(inputs, drop=torch.ones(B, 3, dtype=torch.bool)).teacher_fused is None


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        (torch.ones(B, 2, dtype=torch.bool), "bool keep-mask"),
        (torch.ones(B, 3), "bool keep-mask"),
        (torch.tensor([[True, False, False]] * 3 + [[False, False, False]]), "samples [3]"),
    ],
)
def test_invalid_keep_mask(tiny, keep, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        tiny.forward_features(_inputs(), drop=keep)


def test_keep_mask_of_an_absent_modality_is_refused(tiny):
    inputs = {m: x for m, x in _inputs().items() if m != "thermal"}
    with pytest.raises(ValueError, match="not in the inputs"):
        tiny.forward_features(inputs, drop=torch.ones(B, 3, dtype=torch.bool))
    keep = torch.tensor(
        [[True, True, False], [True, False, False], [False, True, False], [True, True, False]]
    )
    with torch.no_grad():
        feats = tiny.forward_features(inputs, drop=keep)
    assert feats.completed_mask[:, 2].all() and feats.teacher_fused is not None


# ----------------------------------------------------------------------------- attention flag
@pytest.mark.parametrize(("mode", "raw"), [("free", -3.0), ("nonpositive", 3.0)])
def test_completion_flag_changes_omega_only_for_completed_samples(mode, raw):
    torch.manual_seed(0)
    att = ModalAdaptiveAttention(16, heads=4, completion_offset=mode)
    feats = {m: torch.rand(3, 16, 4, 4) for m in MODALITIES}
    flags = torch.tensor([[0, 0, 1], [0, 0, 0], [1, 0, 0]], dtype=torch.float32)
    with torch.no_grad():
        att.completion_embed.zero_()
        att.completion_embed[0] = float("-inf") if mode == "nonpositive" else 0.0  # e_rgb = 0
        _, before = att(feats, flags)
        att.completion_embed[2] = raw  # completed thermal is trusted less: e_thermal ~ -3
        _, after = att(feats, flags)
    changed = ~torch.isclose(before, after)
    assert changed.tolist() == [[False, False, True], [False, False, False], [False, False, False]]
    assert after[0, 2] < before[0, 2]
    assert att.offsets()[2].tolist() == pytest.approx([-3.0] * 4, abs=0.05)


def test_nonpositive_offset_never_raises_a_completed_modalitys_weight():
    torch.manual_seed(0)
    att = ModalAdaptiveAttention(16, heads=4)  # the default: "nonpositive"
    feats = {m: torch.rand(2, 16, 4, 4) for m in MODALITIES}
    with torch.no_grad():
        att.completion_embed.copy_(torch.linspace(-20.0, 20.0, 12).view(3, 4))
        real = att(feats)[1]
        completed = att(feats, torch.ones(2, 3))[1]
    assert (att.offsets() <= 0).all()
    assert (completed <= real).all() and (completed < real).any()
    # Fresh: e = -ln 2 (a completed feature starts out trusted less).
    fresh = ModalAdaptiveAttention(16, heads=4).offsets()
    torch.testing.assert_close(fresh, torch.full((3, 4), -math.log(2.0)))


def test_completion_offset_is_checked():
    with pytest.raises(ValueError, match="completion_offset must be 'nonpositive' or 'free', got 'negative'"):
        ModalAdaptiveAttention(16, heads=4, completion_offset="negative")
    with pytest.raises(ValueError, match=r"fusion\.completion_offset must be"):
        build_model("damcseg_tiny", fusion={"completion_offset": "negative"})


def test_completion_flag_gets_a_gradient_only_from_completed_modalities():
    att = ModalAdaptiveAttention(16, heads=4)
    feats = {m: torch.rand(2, 16, 4, 4) for m in MODALITIES}
    fused, _ = att(feats, torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]]))
    fused.sum().backward()
    grad = att.completion_embed.grad
    assert grad[1].abs().sum() > 0 and grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0


def test_old_attention_without_flag_and_concat_fusion_accept_flags():
    feats = {m: torch.rand(2, 16, 4, 4) for m in ("rgb", "depth")}
    flags = torch.tensor([[0.0, 0.0, 1.0]] * 2)
    plain = ModalAdaptiveAttention(16, heads=4, completion_flag=False)
    assert plain.completion_embed is None
    torch.testing.assert_close(plain(feats, flags)[0], plain(feats)[0])
    concat = ConcatFusion(16).eval()
    fused, weights = concat(feats, flags)
    assert fused.shape == (2, 16, 4, 4) and weights.tolist() == [[1.0, 1.0, 0.0]] * 2


def test_concat_ablation_takes_a_keep_mask():
    torch.manual_seed(0)
    model = build_model("damcseg_tiny", fusion={"mode": "concat"}).eval()
    keep = torch.tensor(KEEPS["mixed"])
    with torch.no_grad():
        feats = model.forward_features(_inputs(), drop=keep)
    assert feats.completed == () and feats.teacher_fused is None
    assert feats.completed_feats["depth"][1].abs().sum() == 0  # zero-filled, no MCN


# ----------------------------------------------------------------------------- toy MCN
def _fit_toy(mcn, pair, steps=300):
    """Train ``mcn`` to complete thermal from RGB on ``pair()`` batches; ``(pred, target)`` on a fresh batch of 32."""
    opt = torch.optim.Adam(mcn.parameters(), lr=3e-3)
    for _ in range(steps):
        rgb, thermal = pair()
        loss = completion_loss({"thermal": (mcn.predict({"rgb": rgb}, "thermal"), thermal)})["completion"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    rgb, thermal = pair(32)
    with torch.no_grad():
        return mcn.predict({"rgb": rgb}, "thermal"), thermal


def _nmse(pred, target):
    return float(((pred - target) ** 2).mean() / target.var(unbiased=False))


def test_mcn_beats_zero_fill_on_a_toy_pair():
    # Thermal features are a known non-negative function of sparse (post-ReLU) RGB features.
    torch.manual_seed(0)
    c = 8
    mix, bias = torch.randn(c, c) / math.sqrt(c) * 2, 0.3 * torch.randn(c)

    def pair(n: int = 8):
        rgb = torch.relu(torch.randn(n, c, 6, 6))
        return rgb, torch.relu(torch.einsum("oc,bchw->bohw", mix, rgb) + bias[None, :, None, None])

    pred, thermal = _fit_toy(ModalCompletionNetwork(c, hidden=32, layers=2), pair)
    var = thermal.var(unbiased=False)
    nmse_mcn = _nmse(pred, thermal)
    nmse_zero = float((thermal**2).mean() / var)
    assert nmse_zero > 1.0  # zero-fill is worse than predicting the mean
    assert nmse_mcn < 0.1 * nmse_zero
    # ReLU output: the prediction keeps the target's sparsity (exact zeros), unlike a linear one.
    target_zeros, pred_zeros = float((thermal == 0).float().mean()), float((pred == 0).float().mean())
    assert target_zeros > 0.4 and abs(pred_zeros - target_zeros) < 0.15


def test_context_blocks_complete_what_a_per_location_mlp_cannot():
    # Thermal at a pixel is RGB two pixels to the left (a parallax-like offset): no function of
    # the same location's features can predict it; the dilated 3x3 context blocks can.
    torch.manual_seed(0)
    c = 4

    def pair(n: int = 8):
        rgb = torch.relu(torch.randn(n, c, 12, 12))
        return rgb, torch.roll(rgb, shifts=2, dims=3)

    nmse = {}
    for context in (0, 2):
        torch.manual_seed(1)
        nmse[context] = _nmse(
            *_fit_toy(ModalCompletionNetwork(c, hidden=16, layers=2, context=context), pair)
        )
    assert nmse[0] > 0.8  # at best the mean
    assert nmse[2] < 0.5 * nmse[0]


def test_row_embedding_completes_a_function_of_the_image_row():
    # Depth-like target: a function of the row only (the ground plane), unrelated to the RGB features.
    torch.manual_seed(0)
    c = 4
    rows = torch.linspace(0.2, 1.0, 10).view(1, 1, 10, 1)

    def pair(n: int = 8):
        rgb = torch.relu(torch.randn(n, c, 10, 6))
        return rgb, (1.0 / rows).expand(n, c, 10, 6).clone()

    nmse = {}
    for row in (False, True):
        torch.manual_seed(1)
        nmse[row] = _nmse(*_fit_toy(ModalCompletionNetwork(c, hidden=16, layers=2, row_embedding=row), pair))
    assert nmse[False] > 0.8
    assert nmse[True] < 0.2


def test_new_context_starts_as_the_per_location_mcn():
    # Zero-initialised context blocks and row embedding: a trained per-location MCN loaded into
    # the larger one (init_from loads the matching tensors) predicts exactly as before at step 0.
    torch.manual_seed(0)
    plain = ModalCompletionNetwork(8, hidden=16, layers=2)
    wide = ModalCompletionNetwork(8, hidden=16, layers=2, context=3, row_embedding=True)
    missing = wide.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(".spatial." in k or ".row." in k for k in missing)
    feats = {"rgb": torch.relu(torch.randn(2, 8, 6, 10)), "depth": torch.relu(torch.randn(2, 8, 6, 10))}
    with torch.no_grad():
        torch.testing.assert_close(wide.predict(feats, "thermal"), plain.predict(feats, "thermal"))
    assert sorted(plain.state_dict()) == sorted(k for k in wide.state_dict() if k not in missing)


def test_context_config_is_checked():
    from damcseg_core.models import ModelConfig

    with pytest.raises(ValueError, match=r"completion\.context must be >= 0"):
        from_dict(ModelConfig, {"completion": {"context": -1}})


def test_augment_config_defaults_are_the_documented_ones():
    cfg = AugmentConfig()
    assert dataclasses.asdict(cfg)["modality_dropout_mode"] == "sample"
    assert cfg.modality_dropout == 0.5 and cfg.modality_dropout_subsets == {}


# ----------------------------------------------------------------------------- checkpoints
def test_configs_from_before_the_fields_load_with_the_old_behaviour():
    from damcseg_core.checkpoint import legacy_model_config
    from damcseg_core.models import ModelConfig

    old = from_dict(ModelConfig, legacy_model_config({"completion": {"hidden": 64}, "fusion": {"heads": 8}}))
    assert (old.completion.output, old.completion.hidden, old.fusion.completion_flag) == ("linear", 64, False)
    new = from_dict(ModelConfig, legacy_model_config({"completion": {"output": "relu"}, "fusion": {}}))
    assert (new.completion.output, new.fusion.completion_flag) == ("relu", False)
    # Edge v2 was trained with the flag but before its sign was constrained: it loads as "free".
    v2 = from_dict(ModelConfig, legacy_model_config({"fusion": {"completion_flag": True}}))
    assert (v2.fusion.completion_flag, v2.fusion.completion_offset) == (True, "free")
    defaults = ModelConfig()
    assert (defaults.completion.output, defaults.fusion.completion_flag) == ("relu", True)
    assert defaults.fusion.completion_offset == "nonpositive"


def test_checkpoints_from_before_the_fields_load_as_the_old_model_and_new_ones_round_trip(tmp_path, tiny):
    from damcseg_core.checkpoint import load_model, save_checkpoint
    from damcseg_core.models import build_model

    # A checkpoint written before the #16 fields existed: its config lacks them (and the weights
    # have no completion_embed); it must rebuild the model it was trained as.
    old_model = build_model(
        "damcseg_tiny", completion={"output": "linear"}, fusion={"completion_flag": False}
    )
    raw = torch.load(save_checkpoint(tmp_path / "old.pt", old_model), weights_only=True)
    del raw["model_config"]["completion"]["output"], raw["model_config"]["fusion"]["completion_flag"]
    torch.save(raw, tmp_path / "old.pt")
    shipped = load_model(tmp_path / "old.pt")
    assert shipped.completion.output == "linear" and shipped.attention.completion_embed is None
    path = save_checkpoint(tmp_path / "new.pt", tiny)
    again = load_model(path)
    assert again.completion.output == "relu" and again.attention.completion_embed is not None
    assert torch.equal(again.attention.completion_embed, tiny.attention.completion_embed)
