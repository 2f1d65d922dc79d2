"""The two model switches the Table IV ablation needs: fusion.mode and refinement.dsaf.adaptive."""

from __future__ import annotations

import pytest
import torch

from damcseg_core.config import ConfigError
from damcseg_core.models import build_model
from damcseg_core.models.dsaf import DSAF, FIXED_BRANCH_WEIGHTS, DSAFConfig


def _inputs(modalities: tuple[str, ...]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    make = {
        "rgb": lambda: torch.rand(1, 3, 64, 128, generator=g),
        "depth": lambda: torch.rand(1, 1, 64, 128, generator=g) * 30,
        "thermal": lambda: torch.rand(1, 1, 64, 128, generator=g),
    }
    return {m: make[m]() for m in modalities}


@pytest.mark.parametrize(
    ("modalities", "presence"),
    [
        (("rgb", "depth", "thermal"), [1.0, 1.0, 1.0]),
        (("depth",), [0.0, 1.0, 0.0]),
        (("rgb", "thermal"), [1.0, 0.0, 1.0]),
    ],
)
def test_concat_fusion_has_no_completion_and_reports_presence(modalities, presence):
    torch.manual_seed(0)
    model = build_model("damcseg_tiny", fusion={"mode": "concat"}).eval()
    assert model.completion is None
    assert not any(name.startswith("completion.") for name, _ in model.named_parameters())
    with torch.no_grad():
        out = model(_inputs(modalities))
    assert out.completed == ()
    assert out.omega.tolist() == [presence]
    assert out.seg_logits.shape == (1, 19, 64, 128)
    assert torch.isfinite(out.seg_logits).all()


def test_concat_fusion_trains_with_a_dropped_modality():
    torch.manual_seed(0)
    model = build_model("damcseg_tiny", fusion={"mode": "concat"}).train()
    out = model(_inputs(("rgb", "depth")), drop=("depth",))
    assert out.completion == {}
    out.seg_logits.mean().backward()
    assert model.attention.mix[0].weight.grad is not None


def test_unknown_fusion_mode_names_the_valid_ones():
    with pytest.raises(ConfigError, match=r"fusion\.mode must be 'lmmf' or 'concat', got 'sum'"):
        build_model("damcseg_tiny", fusion={"mode": "sum"})


def test_non_adaptive_dsaf_gives_fixed_weights_whatever_the_targets():
    dsaf = DSAF(DSAFConfig(adaptive=False))
    init = torch.tensor([[0.6, 0.2, 0.1], [0.4, 0.4, 0.3]])
    sizes = [torch.tensor([0.001, 0.5]), torch.zeros(0)]
    amb = [torch.tensor([0.9, 0.0]), torch.zeros(0)]
    out = dsaf(init, sizes, amb)
    fixed = torch.tensor(FIXED_BRANCH_WEIGHTS)
    assert torch.equal(out.alpha_beta_gamma, fixed.expand(2, 3))
    assert torch.equal(out.target_alpha_beta_gamma[0], fixed.expand(2, 3))
    assert out.target_alpha_beta_gamma[1].shape == (0, 3)
    assert out.delta_beta[0].tolist() == [0.0, 0.0]


def test_adaptive_dsaf_differs_for_small_ambiguous_targets():
    dsaf = DSAF(DSAFConfig())
    init = torch.tensor([[0.5, 0.3, 0.2]])
    out = dsaf(init, [torch.tensor([0.001])], [torch.tensor([0.9])])
    # a small, ambiguous target moves weight from the global to the local branch (eq. 7-8)
    assert out.target_alpha_beta_gamma[0][0, 0] < 0.5 and out.target_alpha_beta_gamma[0][0, 1] > 0.3
