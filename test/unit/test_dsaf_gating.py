"""Branch adaptive selection (paper Sec. III.E.2): gate features, gating, real skipping, training."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from damcseg_core.config import ConfigError, from_dict
from damcseg_core.models.branch_gating import (
    BRANCH_NAMES,
    GATE_IN_FEATURES,
    BranchGate,
    BranchGateConfig,
    LocalBranches,
    gate_features,
)

C, K, S = 8, 5, 12  # ROI feature channels, classes, ROI side


class FixedGate(nn.Module):
    """Stands in for the MLP: returns preset gate logits, so tests choose which branch is on."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def make_branches(seed: int = 0) -> LocalBranches:
    torch.manual_seed(seed)
    return LocalBranches(C, K, GATE_IN_FEATURES)


def rois(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, C, S, S, generator=torch.Generator().manual_seed(seed))


def count_rois(module: LocalBranches) -> dict[str, list[int]]:
    """Per branch: the number of ROIs in each call (forward pre-hooks)."""
    seen: dict[str, list[int]] = {name: [] for name in BRANCH_NAMES}
    for name in BRANCH_NAMES:
        module.branches[name].register_forward_pre_hook(
            lambda m, args, name=name: seen[name].append(args[0].shape[0])
        )
    return seen


ON, OFF = 6.0, -6.0  # gate logits -> probabilities 0.9975 / 0.0025


# ---------------------------------------------------------------- gate features
def test_gate_features_columns() -> None:
    feats = gate_features(
        torch.tensor([0.04, 0.25]),
        torch.tensor([0.3, 0.7]),
        torch.tensor([0.5, 0.5]),
        torch.tensor([0.9, 0.4]),
        torch.tensor([0.1, 1.0]),
    )
    assert feats.shape == (2, GATE_IN_FEATURES) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, torch.tensor([[0.2, 0.3, 0.5, 0.9, 0.1], [0.5, 0.7, 0.5, 0.4, 1.0]]))


def test_gate_features_from_per_image_lists_repeat_the_scene_score() -> None:
    feats = gate_features(
        [torch.tensor([0.01, 0.04]), torch.zeros(0), torch.tensor([0.09])],
        [torch.tensor([0.1, 0.2]), torch.zeros(0), torch.tensor([0.3])],
        torch.tensor([0.2, 0.5, 0.8]),
        [torch.tensor([0.9, 0.8]), torch.zeros(0), torch.tensor([0.7])],
        [torch.tensor([0.0, 0.5]), torch.zeros(0), torch.tensor([1.0])],
    )
    expected = torch.tensor([[0.1, 0.1, 0.2, 0.9, 0.0], [0.2, 0.2, 0.2, 0.8, 0.5], [0.3, 0.3, 0.8, 0.7, 1.0]])
    torch.testing.assert_close(feats, expected)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"scores": torch.ones(3)}, "scores has 3 values but sizes has 2"),
        ({"edge_strength": torch.ones(1)}, "edge_strength has 1 values but sizes has 2"),
    ],
)
def test_gate_features_reject_mismatched_lengths(override: dict, message: str) -> None:
    args = {
        "sizes": torch.ones(2),
        "ambiguity": torch.ones(2),
        "scene_S": torch.ones(2),
        "scores": torch.ones(2),
        "edge_strength": torch.ones(2),
    }
    args.update(override)
    with pytest.raises(ValueError, match=message):
        gate_features(**args)


def test_gate_features_lists_need_one_scene_score_per_image() -> None:
    with pytest.raises(ValueError, match=r"scene_S of shape \[B\] = \[2\]"):
        gate_features(
            [torch.ones(1), torch.ones(1)],
            [torch.ones(1)] * 2,
            torch.ones(3),
            [torch.ones(1)] * 2,
            [torch.ones(1)] * 2,
        )


def test_gate_is_a_two_layer_mlp_that_starts_with_all_branches_on() -> None:
    gate = BranchGate(GATE_IN_FEATURES, hidden=16)
    linears = [m for m in gate.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(GATE_IN_FEATURES, 16), (16, 3)]
    assert linears[1].bias.tolist() == [2.0, 2.0, 2.0]  # sigmoid(2) = 0.88: every branch on at first
    torch.manual_seed(0)
    probs = torch.sigmoid(gate(torch.rand(64, GATE_IN_FEATURES)))
    assert bool((probs > 0.5).all())


def test_gate_rejects_wrong_feature_width() -> None:
    with pytest.raises(ValueError, match=r"gate inputs must be \[N, 5\] \(see gate_features\)"):
        BranchGate()(torch.zeros(2, 4))


# ---------------------------------------------------------------- eval: real skipping
def test_gate_forced_off_skips_every_branch_entirely() -> None:
    lb = make_branches().eval()
    seen = count_rois(lb)
    lb.gate = FixedGate(torch.full((4, 3), OFF))
    feats = rois(4)
    out = lb(feats, torch.zeros(4, GATE_IN_FEATURES))
    assert seen == {"edge": [], "context": [], "consistency": []}
    assert not out.active.any()
    assert torch.allclose(out.logits, lb.base(feats))


@pytest.mark.parametrize(
    ("pattern", "expected_counts"),
    [
        (
            [[ON, OFF, OFF], [OFF, OFF, OFF], [ON, ON, OFF], [OFF, ON, ON]],
            {"edge": [2], "context": [2], "consistency": [1]},
        ),
        ([[OFF, ON, OFF]] * 4, {"edge": [], "context": [4], "consistency": []}),
        ([[ON, ON, ON]] * 4, {"edge": [4], "context": [4], "consistency": [4]}),
    ],
)
def test_partial_gate_processes_exactly_the_active_rois(pattern: list, expected_counts: dict) -> None:
    lb = make_branches().eval()
    seen = count_rois(lb)
    logits = torch.tensor(pattern)
    lb.gate = FixedGate(logits)
    out = lb(rois(4), torch.zeros(4, GATE_IN_FEATURES))
    assert seen == expected_counts
    assert torch.equal(out.active, logits > 0)


def test_active_roi_outputs_equal_running_the_branches_on_all_rois() -> None:
    lb = make_branches().eval()
    feats = rois(4)
    logits = torch.tensor([[ON, OFF, OFF], [OFF, OFF, OFF], [ON, ON, OFF], [OFF, ON, ON]])
    lb.gate = FixedGate(logits)
    gated = lb(feats, torch.zeros(4, GATE_IN_FEATURES))
    with torch.no_grad():
        base = lb.base(feats)
        full = {name: lb.branches[name](feats, base) for name in BRANCH_NAMES}
        probs = torch.sigmoid(logits)
        expected = base.clone()
        for k, name in enumerate(BRANCH_NAMES):
            on = logits[:, k] > 0
            expected[on] += probs[on, k, None, None, None] * full[name][on]
    assert torch.allclose(gated.logits, expected, atol=1e-5)
    # ROI 3 has every branch it needs on in both runs: identical to force_all minus the edge branch.
    forced = lb(feats, torch.zeros(4, GATE_IN_FEATURES), force_all=True)
    assert torch.allclose(forced.logits[3] - probs[3, 0] * full["edge"][3], gated.logits[3], atol=1e-5)


def test_force_all_runs_every_branch_on_every_roi() -> None:
    lb = make_branches().eval()
    seen = count_rois(lb)
    lb.gate = FixedGate(torch.full((3, 3), OFF))
    out = lb(rois(3), torch.zeros(3, GATE_IN_FEATURES), force_all=True)
    assert seen == {"edge": [3], "context": [3], "consistency": [3]}
    assert out.active.all()


def test_threshold_is_half_by_default() -> None:
    lb = make_branches().eval()
    lb.gate = FixedGate(torch.tensor([[0.01, -0.01, 0.0]]))  # p = 0.5025, 0.4975, 0.5
    assert lb(rois(1), torch.zeros(1, GATE_IN_FEATURES)).active.tolist() == [[True, False, True]]


# ---------------------------------------------------------------- train: soft gating
def test_train_mode_runs_all_branches_and_learns_the_gate() -> None:
    lb = make_branches().train()
    seen = count_rois(lb)
    gate_in = torch.rand(3, GATE_IN_FEATURES, generator=torch.Generator().manual_seed(2))
    out = lb(rois(3), gate_in)
    assert seen == {"edge": [3], "context": [3], "consistency": [3]}
    assert out.active.all()
    assert out.gate_cost.item() == pytest.approx(out.gate_probs.mean().item())
    (out.logits.square().mean() + 0.01 * out.gate_cost).backward()
    for p in lb.gate.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    for name in BRANCH_NAMES:
        assert all(p.grad is not None for p in lb.branches[name].parameters())


def test_train_mode_scales_branch_outputs_by_gate_probability() -> None:
    lb = make_branches().train()
    logits = torch.tensor([[0.0, math.log(3), -math.log(3)]])  # p = 0.5, 0.75, 0.25
    lb.gate = FixedGate(logits)
    feats = rois(1)
    out = lb(feats, torch.zeros(1, GATE_IN_FEATURES))
    with torch.no_grad():
        base = lb.base(feats)
        expected = base + sum(
            p * lb.branches[name](feats, base) for p, name in zip((0.5, 0.75, 0.25), BRANCH_NAMES)
        )
    assert torch.allclose(out.logits, expected, atol=1e-5)
    assert out.gate_cost.item() == pytest.approx(0.5)


# ---------------------------------------------------------------- shapes and errors
@pytest.mark.parametrize("training", [True, False])
def test_output_shapes(training: bool) -> None:
    lb = make_branches().train(training)
    out = lb(rois(2), torch.zeros(2, GATE_IN_FEATURES))
    assert out.logits.shape == (2, K, S, S)
    assert out.active.shape == out.gate_probs.shape == (2, 3) and out.active.dtype == torch.bool
    assert out.gate_cost.shape == ()


def test_no_rois_gives_empty_outputs_without_running_branches() -> None:
    lb = make_branches().eval()
    seen = count_rois(lb)
    out = lb(torch.zeros(0, C, S, S), torch.zeros(0, GATE_IN_FEATURES))
    assert out.logits.shape == (0, K, S, S) and out.active.shape == (0, 3)
    assert out.gate_cost.item() == 0.0
    assert seen == {"edge": [], "context": [], "consistency": []}


@pytest.mark.parametrize(
    ("feats", "gate_in", "message"),
    [
        (torch.zeros(2, C + 1, S, S), torch.zeros(2, GATE_IN_FEATURES), r"roi_feats must be \[N, 8, h, w\]"),
        (
            torch.zeros(2, C, S, S),
            torch.zeros(3, GATE_IN_FEATURES),
            "gate_inputs has 3 rows but there are 2 ROIs",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(feats: torch.Tensor, gate_in: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_branches()(feats, gate_in)


def test_config_from_dict() -> None:
    cfg = from_dict(BranchGateConfig, {"hidden": 8, "threshold": 0.6})
    lb = LocalBranches(C, K, GATE_IN_FEATURES, cfg).eval()
    lb.gate = FixedGate(torch.tensor([[0.3, 0.5, 0.0]]))  # p = 0.574, 0.622, 0.5
    assert lb(rois(1), torch.zeros(1, GATE_IN_FEATURES)).active.tolist() == [[False, True, False]]
    with pytest.raises(ConfigError, match="threshold must be in"):
        from_dict(BranchGateConfig, {"threshold": 1.0})
