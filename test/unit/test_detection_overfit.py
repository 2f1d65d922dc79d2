"""The detector can learn: damcseg_tiny overfits 4 synthetic frames to mAP@0.5 >= 0.9 on them.

Behaviour, not timing: a few hundred detection steps on a 0.45M-parameter model. Before the
valid-object rule and ATSS, this model could not get there (most targets were 1-16 px
fragments and 44% of them had no positive anchor).
"""

from __future__ import annotations

import pytest
import torch

from damcseg_core.data.collate import collate
from damcseg_core.data.registry import build_dataset
from damcseg_core.eval.detection_metrics import DetectionMAP
from damcseg_core.losses import DSJLoss

STEPS = 300


@pytest.fixture(scope="module")
def trained():
    from damcseg_core.models import build_model

    torch.manual_seed(0)
    data = build_dataset("synthetic:frames=4,size=128x256,seed=7")
    batch = collate([data[i] for i in range(4)])
    model = build_model(
        "damcseg_tiny", detection={"score_threshold": 0.2, "max_detections": 30, "pre_nms_top_k": 300}
    )
    params = [p for n, p in model.named_parameters() if not n.startswith(("global_path", "local_path"))]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.0)
    loss_fn = DSJLoss()
    inputs = {m: batch[m] for m in ("rgb", "depth", "thermal")}
    model.train()
    first = None
    for _ in range(STEPS):
        losses = loss_fn(model(inputs), batch)
        first = first if first is not None else losses["det"].item()
        opt.zero_grad(set_to_none=True)
        losses["det"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        out = model(inputs)
    return batch, out, first, losses["det"].item()


def test_detection_loss_falls(trained):
    _, _, first, last = trained
    assert last < first / 4


# AP integrates every box down to the model's score_threshold (0.2 here); false positives are
# counted among the confident ones a user would publish. The 0.2-0.6 tail moves with float
# summation order: 1.0 vs 1.5 FP/frame above 0.2 with 1 vs 2 threads on the same machine.
CONFIDENT = 0.5


def _metric(batch, out, min_score: float = 0.0) -> dict:
    metric = DetectionMAP()
    for i in range(4):
        keep = out.scores[i] >= min_score
        metric.update(
            out.boxes[i][keep], out.scores[i][keep], out.labels[i][keep], batch["boxes"][i], batch["labels"][i],
            batch["areas"][i], batch["occlusion"][i],
        )  # fmt: skip
    return metric.compute()


def test_overfit_reaches_map50_of_09_on_its_frames(trained):
    batch, out, _, _ = trained
    res = _metric(batch, out)
    assert res["num_gt"] >= 8  # the frames hold enough valid objects for the number to mean something
    assert res["map_50"] >= 0.9, res
    confident = _metric(batch, out, CONFIDENT)
    assert confident["recall_50"] >= 0.9, confident
    assert confident["fp_per_frame"] <= 1.0, confident
