"""Accuracy-at-budget suite (``benchmarks/accuracy_at_budget.py``): the peers' inputs, the
scoring wiring, the CPU-time budget and resume. No accuracy or wall-clock asserts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import accuracy_at_budget as ab
from damcseg_core.checkpoint import save_checkpoint
from damcseg_core.data.registry import build_dataset
from damcseg_core.data.targets import valid_objects
from damcseg_core.models import build_model
from damcseg_core.models.config import NormalizationConfig

TINY = "synthetic:frames=4,size=64x128,seed=5"
VAL = "synthetic:frames=2,size=64x128,seed=6"
TEST = "synthetic:frames=3,size=64x128,seed=7"


@pytest.fixture(scope="module")
def frames():
    return build_dataset(TINY)


@pytest.mark.parametrize(("peer", "channels"), [("fcos_rgb", 3), ("fcos_stacked", 5), ("lraspp_stacked", 5)])
def test_inputs_stack_depth_and_thermal_as_extra_channels(frames, peer, channels):
    s = frames[0]
    x = ab.Inputs(peer)(s)
    assert x.shape == (channels, 64, 128)
    cfg = NormalizationConfig()
    rgb = (s["rgb"] - torch.tensor(cfg.rgb_mean).view(3, 1, 1)) / torch.tensor(cfg.rgb_std).view(3, 1, 1)
    torch.testing.assert_close(x[:3], rgb, atol=1e-5, rtol=1e-5)
    if channels == 5:
        invalid = s["depth"][0] <= 0
        assert torch.all(x[3][invalid] == 0)  # invalid depth carries no signal
        assert torch.corrcoef(torch.stack([x[4].flatten(), s["thermal"].flatten()]))[0, 1] > 0.999
    # the model takes that input
    model = ab.build_peer(peer, (64, 128)).eval()
    with torch.inference_mode():
        out = model([x]) if peer.startswith("fcos") else model(x[None])["out"]
    if peer.startswith("fcos"):
        assert set(out[0]) == {"boxes", "scores", "labels"} and len(out[0]["boxes"]) <= ab.AP_MAX_DETECTIONS
    else:
        assert out.shape == (1, ab.NUM_CLASSES, 64, 128)


class _Oracle(torch.nn.Module):
    """Returns the ground truth of the frames in order: the valid objects (score 0.9) or nothing."""

    def __init__(self, data, empty: bool = False) -> None:
        super().__init__()
        self.data, self.empty, self.i = data, empty, 0

    def forward(self, images):
        s = self.data[self.i]
        self.i += 1
        keep = valid_objects(s["boxes"], s["areas"], s["occlusion"])
        n = 0 if self.empty else int(keep.sum())
        return [
            {"boxes": s["boxes"][keep][:n], "labels": s["labels"][keep][:n], "scores": torch.full((n,), 0.9)}
        ]


@pytest.mark.parametrize(("empty", "expected"), [(False, 1.0), (True, 0.0)])
def test_detection_scoring_uses_our_metric(frames, empty, expected):
    assert int(sum(valid_objects(f["boxes"], f["areas"], f["occlusion"]).sum() for f in frames)) > 0
    stats = ab.frame_stats("fcos_rgb", _Oracle(frames, empty), frames, ab.Inputs("fcos_rgb"))
    res = ab.summarise("fcos_rgb", stats, np.arange(len(frames)))
    assert res["map_50"] == pytest.approx(expected)
    assert res["recall_50"] == pytest.approx(expected)


def test_segmentation_scoring_perfect_and_constant(frames):
    class Perfect(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.i = 0

        def forward(self, x):
            y = frames[self.i]["semantic"].clamp(max=ab.NUM_CLASSES - 1)
            self.i += 1
            return {"out": torch.nn.functional.one_hot(y, ab.NUM_CLASSES).permute(2, 0, 1)[None].float()}

    tags: list[str] = []
    stats = ab.frame_stats("lraspp_rgb", Perfect(), frames, ab.Inputs("lraspp_rgb"), tags)
    assert ab.summarise("lraspp_rgb", stats, np.arange(len(frames)))["miou"] == pytest.approx(1.0)
    assert tags == [str(f["condition"]) for f in frames]


def test_scores_per_condition_pair_ours_and_peer_on_the_same_frames(frames):
    """``by_condition``: rows in the synthetic world's order, frames counted per tag, a point value
    per tag, an interval only where a tag has more than one frame, and ours - peer per tag."""
    probe = ab.SegmentationIoU()
    truth = [f["semantic"].numpy() for f in frames]
    peer = [probe.sample_stats(t, t) for t in truth]  # perfect
    ours = [probe.sample_stats(np.zeros_like(t), t) for t in truth]  # everything "road"
    tags = ["night", "day", "night", "fog"]
    rows = ab.by_condition("lraspp_rgb", {"peer": peer, "ours": ours}, tags, boots=20)
    assert list(rows) == ["day", "night", "fog"]
    assert [rows[t]["frames"] for t in rows] == [1, 2, 1]
    for tag, row in rows.items():
        idx = np.flatnonzero(np.asarray(tags) == tag)
        expected = ab.summarise("lraspp_rgb", ours, idx)["miou"]
        assert row["peer"]["point"]["miou"] == pytest.approx(1.0)
        assert row["ours"]["point"]["miou"] == pytest.approx(expected) and expected < 0.5
        assert row["ours_minus_peer"]["point"] == pytest.approx(expected - 1.0)
    assert (
        rows["day"]["peer"]["interval_90"] is None and rows["day"]["ours_minus_peer"]["interval_90"] is None
    )
    lo, hi = rows["night"]["ours_minus_peer"]["interval_90"]
    assert -1.0 <= lo <= hi < 0.0  # ours is worse on every resample
    assert rows["night"]["peer"]["interval_90"] == pytest.approx([1.0, 1.0])
    # a tag's draws do not depend on the other tags
    alone = ab.by_condition("lraspp_rgb", {"peer": peer[::2], "ours": ours[::2]}, tags[::2], boots=20)
    assert alone["night"]["ours_minus_peer"]["interval_90"] == rows["night"]["ours_minus_peer"]["interval_90"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fcos")
    result = out / "record.json"
    torch.manual_seed(0)
    ours = save_checkpoint(out / "ours.pt", build_model("damcseg_tiny"))
    argv = ["--peer", "fcos_stacked", "--budget-min", "0.03", "--threads", "1", "--out", str(out / "run"),
            "--train", TINY, "--val", VAL, "--test", TEST, "--boots", "5", "--result", str(result),
            "--ours", str(ours)]  # fmt: skip
    assert ab.main(argv) == 0
    return out, argv, json.loads(result.read_text())


def test_run_spends_its_cpu_budget_and_records_it(tiny_run):
    rec = tiny_run[2]
    assert rec["peer"] == "fcos_stacked" and rec["threads"] == 1 and rec["steps"] >= 1
    assert rec["cpu_min"] >= 0.03  # stopped only once the CPU time was spent
    fractions = [h["fraction"] for h in rec["val_history"]]
    assert fractions == sorted(fractions) and set(fractions) <= set(ab.VAL_FRACTIONS) and fractions[-1] == 1.0
    assert rec["best_step"] in [h["step"] for h in rec["val_history"]]
    assert rec["best_step"] == max(rec["val_history"], key=lambda h: h["val"])["step"]
    (res,) = rec["results"]
    assert res["data"] == TEST and res["frames"] == 3
    for who in ("peer", "ours"):
        lo, hi = res[who]["interval_90"]["map_50"]
        assert 0.0 <= lo <= hi <= 1.0 and 0.0 <= res[who]["point"]["map_50"] <= 1.0
    diff = res["ours_minus_peer"]
    assert diff["point"] == pytest.approx(res["ours"]["point"]["map_50"] - res["peer"]["point"]["map_50"])
    assert diff["interval_90"][0] <= diff["interval_90"][1]
    rows = res["by_condition"]
    assert sum(row["frames"] for row in rows.values()) == 3
    for row in rows.values():
        assert row["ours_minus_peer"]["point"] == pytest.approx(
            row["ours"]["point"]["map_50"] - row["peer"]["point"]["map_50"], nan_ok=True
        )  # NaN where a tag's frames hold no valid object
    assert rec["ours"].endswith("ours.pt")
    assert "--budget-min 0.03" in rec["command"] and rec["machine"]["cpu"]


def test_resume_continues_a_finished_run_without_training(tiny_run):
    out, argv, rec = tiny_run
    assert ab.main(argv) == 0  # budget already spent: evaluates again, no new step
    again = json.loads((out / "record.json").read_text())
    assert again["steps"] == rec["steps"] and again["results"][0]["peer"] == rec["results"][0]["peer"]


def test_resume_refuses_another_peer_or_budget(tiny_run):
    argv = tiny_run[1]
    other = [a if a != "0.03" else "0.05" for a in argv]
    with pytest.raises(SystemExit, match=r"fcos_stacked run with a 0\.0-min budget; use another --out"):
        ab.main(other)


def test_eval_only_without_a_run_names_the_fix(tmp_path):
    with pytest.raises(SystemExit, match=r"no .*best\.pt; train first"):
        ab.main(["--peer", "fcos_rgb", "--out", str(tmp_path), "--eval-only"])
