"""The two training-side Table IV switches: joint_training and the targeted-loss weights."""

from __future__ import annotations

import pytest
import torch

from damcseg_core.config import from_dict
from damcseg_core.data.registry import build_dataset
from damcseg_core.losses.segmentation import SegmentationLossConfig, segmentation_loss
from damcseg_core.train.config import DETECTION_ONLY_PREFIXES, TrainConfig
from damcseg_core.train.trainer import Trainer

_DATA = build_dataset("synthetic:frames=2,size=64x128,seed=1")


def _grads(tmp_path, joint: bool, det_weight: float, lambda2: float = 0.5) -> dict[str, torch.Tensor]:
    """Gradients after one training step of damcseg_tiny (no clipping, no modality dropout)."""
    cfg = from_dict(
        TrainConfig,
        {
            "model": "damcseg_tiny", "batch_size": 2, "total_steps": 1, "device": "cpu", "threads": 1,
            "progress": False, "out_dir": str(tmp_path), "joint_training": joint,
            "data": {"train": "unused", "val": None},
            "stages": [{"name": "joint", "lr": {"backbone": 1e-3, "det_head": 1e-3, "seg_head": 1e-3,
                                                 "fusion": 1e-3}, "modality_dropout": False}],
            "optim": {"grad_clip": 0.0},
            "loss": {"lambda2": lambda2, "detection": {"cls_weight": det_weight, "box_weight": det_weight}},
        },
    )  # fmt: skip
    trainer = Trainer(cfg, train_set=_DATA)
    batch = trainer.collate_fn([trainer.train_set[(i, 0, 0, i)] for i in range(2)])
    trainer._enter_stage(0)
    row = trainer.train_step(batch)
    assert (row["loss_det"] > 0) is (det_weight > 0)
    if not joint:
        assert row["loss_align"] == 0.0  # no alignment term without joint training
    return {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}


@pytest.fixture(scope="module")
def grads(tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    d = tmp_path_factory.mktemp("grads")
    return {
        "joint": _grads(d / "a", joint=True, det_weight=1.0),
        # L_align on matched predictions also reaches the detector, so the detection-only
        # reference for joint_training: false is the joint step without L_align.
        "joint_no_align": _grads(d / "d", joint=True, det_weight=1.0, lambda2=0.0),
        "separate": _grads(d / "b", joint=False, det_weight=1.0),
        # The reference for the shared layers without joint training: no L_det and no L_align at all.
        "no_det": _grads(d / "c", joint=True, det_weight=0.0, lambda2=0.0),
    }


def _select(g: dict[str, torch.Tensor], detection_only: bool) -> dict[str, torch.Tensor]:
    return {n: v for n, v in g.items() if n.startswith(DETECTION_ONLY_PREFIXES) is detection_only}


@pytest.mark.parametrize("prefix", ["encoders.", "attention.", "backbone.shared.", "backbone.input_proj."])
def test_without_joint_training_shared_layers_get_no_detection_gradient(grads, prefix):
    sep = {n: v for n, v in grads["separate"].items() if n.startswith(prefix)}
    ref = {n: v for n, v in grads["no_det"].items() if n.startswith(prefix)}
    joint = {n: v for n, v in grads["joint"].items() if n.startswith(prefix)}
    assert sep and set(sep) == set(ref)
    for n in sep:
        torch.testing.assert_close(sep[n], ref[n], rtol=1e-5, atol=1e-7, msg=n)
    # with joint training the detection loss does reach them
    assert any(not torch.allclose(joint[n], ref[n], rtol=1e-3, atol=1e-6) for n in sep)


def test_without_joint_training_detection_layers_still_learn_detection(grads):
    sep, joint = _select(grads["separate"], True), _select(grads["joint_no_align"], True)
    assert sep and set(sep) == set(joint)
    for n in sep:
        torch.testing.assert_close(sep[n], joint[n], rtol=1e-5, atol=1e-7, msg=n)
    assert any(v.abs().sum() > 0 for v in sep.values())


@pytest.mark.parametrize(("tiny_weight", "occlusion_weight"), [(0.0, 0.0), (1.0, 0.0), (0.0, 2.0)])
def test_targeted_loss_weights_switch_their_terms(tiny_weight, occlusion_weight):
    sample = _DATA[0]
    logits = torch.randn(1, 19, 64, 128, generator=torch.Generator().manual_seed(0))
    cfg = SegmentationLossConfig(tiny_weight=tiny_weight, occlusion_weight=occlusion_weight)
    out = segmentation_loss(
        logits, sample["semantic"][None], sample["instance"][None], [sample["occlusion"]], cfg
    )
    assert out["seg_tiny"] > 0 and out["seg_occlusion"] > 0  # the frame has small and occluded objects
    expected = (
        out["seg_ce"] + out["seg_boundary"] + 0.5 * out["seg_dice"]
        + tiny_weight * out["seg_tiny"] + occlusion_weight * out["seg_occlusion"]
    )  # fmt: skip
    torch.testing.assert_close(out["seg"], expected)
