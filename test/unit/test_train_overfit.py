"""Overfitting one small batch with damcseg_tiny: the DSJL total must fall by a large factor."""

from __future__ import annotations

import torch

from damcseg_core.losses import DSJLoss
from damcseg_core.train.config import DEFAULT_GROUPS
from damcseg_core.train.schedule import build_optimizer

B, H, W = 2, 64, 128


def _batch() -> dict:
    g = torch.Generator().manual_seed(0)
    sem = torch.zeros(B, H, W, dtype=torch.int64)  # road
    sem[:, :20] = 10  # sky
    sem[:, 20:32] = 2  # building
    inst = torch.zeros(B, H, W, dtype=torch.int32)
    sem[:, 30:50, 20:44] = 13  # a car
    inst[:, 30:50, 20:44] = 1
    sem[:, 36:52, 80:88] = 11  # a person, tiny and occluded
    inst[:, 36:52, 80:88] = 2
    return {
        "rgb": torch.rand(B, 3, H, W, generator=g),
        "depth": 5 + torch.rand(B, 1, H, W, generator=g),
        "thermal": torch.rand(B, 1, H, W, generator=g),
        "semantic": sem,
        "instance": inst,
        "boxes": [torch.tensor([[20.0, 30, 44, 50], [80, 36, 88, 52]])] * B,
        "labels": [torch.tensor([13, 11])] * B,
        "occlusion": [torch.tensor([0.0, 0.6])] * B,
    }


def test_tiny_model_overfits_one_batch():
    from damcseg_core.models import build_model

    torch.manual_seed(0)
    model = build_model("damcseg_tiny").train()
    opt, _ = build_optimizer(model, DEFAULT_GROUPS, 1e-4, (0.9, 0.999))
    for pg in opt.param_groups:
        pg["lr"] = 3e-3
    loss_fn = DSJLoss()
    batch = _batch()
    inputs = {m: batch[m] for m in ("rgb", "depth", "thermal")}
    totals = []
    for _ in range(45):
        losses = loss_fn(model(inputs, roi_boxes=batch["boxes"], roi_labels=batch["labels"]), batch)
        assert torch.isfinite(losses["total"])
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        totals.append(losses["total"].item())
    assert totals[-1] < totals[0] / 5, totals
