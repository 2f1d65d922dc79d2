"""End-to-end forward/backward of the DAMCSeg variants over every modality subset."""

from __future__ import annotations

import itertools

import pytest
import torch

from damcseg_core import MODALITIES
from damcseg_core.data.classes import DETECTION_TRAIN_IDS
from damcseg_core.models import DamcsegOutput, DamcsegTrainOutput, build_model

SUBSETS = [s for r in (1, 2, 3) for s in itertools.combinations(MODALITIES, r)]
H, W = 64, 128


def make_inputs(subset, b=2, h=H, w=W, seed=0):
    g = torch.Generator().manual_seed(seed)
    full = {
        "rgb": torch.rand(b, 3, h, w, generator=g),
        "depth": torch.rand(b, 1, h, w, generator=g) * 40.0,
        "thermal": torch.rand(b, 1, h, w, generator=g),
    }
    full["depth"][:, :, :8] = 0.0  # a band of invalid depth, as from a real sensor
    return {m: full[m] for m in subset}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    # Threshold 0 so that the random model detects boxes and the local/post paths really run.
    return build_model("damcseg_tiny", detection={"score_threshold": 0.0})


@pytest.fixture(scope="module")
def edge():
    torch.manual_seed(0)
    return build_model("damcseg_edge").eval()


@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
def test_tiny_eval_every_subset(tiny, subset):
    tiny.eval()
    with torch.no_grad():
        out = tiny(make_inputs(subset))
    assert type(out) is DamcsegOutput
    assert out.seg_logits.shape == (2, 19, H, W)
    assert torch.isfinite(out.seg_logits).all()
    assert out.present == subset
    assert out.completed == tuple(m for m in MODALITIES if m not in subset)
    assert out.omega.shape == (2, 3)
    assert ((out.omega > 0) & (out.omega < 1)).all()
    assert out.alpha_beta_gamma.shape == (2, 3) and torch.isfinite(out.alpha_beta_gamma).all()
    assert out.scene.S.shape == (2,) and out.scene.category.shape == (2,)
    for boxes, scores, labels, tw in zip(out.boxes, out.scores, out.labels, out.target_alpha_beta_gamma):
        n = len(boxes)
        assert 1 <= n <= 8  # threshold 0 -> detections, capped by max_detections=8
        assert boxes.shape == (n, 4) and scores.shape == (n,) and tw.shape == (n, 3)
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= W).all() and (boxes[:, 3] <= H).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert set(labels.tolist()) <= set(DETECTION_TRAIN_IDS)
        assert (scores[:-1] >= scores[1:]).all()


@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
def test_tiny_train_every_subset_backward(tiny, subset):
    tiny.train()
    tiny.zero_grad()
    out = tiny(make_inputs(subset))
    assert type(out) is DamcsegTrainOutput
    a = out.anchors.shape[0]
    assert out.cls_logits.shape == (2, a, len(DETECTION_TRAIN_IDS))
    assert out.box_deltas.shape == (2, a, 4) and out.anchors.shape == (a, 4)
    assert set(out.branch_logits) == {"global", "local", "post"}
    for logits in [out.seg_logits, *out.branch_logits.values()]:
        assert logits.shape == (2, 19, H, W) and torch.isfinite(logits).all()
    assert out.local_coverage.shape == (2, 1, H, W) and out.local_coverage.sum() > 0
    assert out.completion == {}  # nothing dropped
    loss = out.seg_logits.logsumexp(1).mean() + out.cls_logits.sigmoid().mean() + out.box_deltas.abs().mean()
    loss.backward()
    grads = [p.grad for p in tiny.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    # Gradients reach the encoders of the present modalities and the MCN of the missing ones.
    for m in subset:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny.encoders[m].parameters())
    for m in out.completed:
        assert tiny.completion.heads[m].out.weight.grad.abs().sum() > 0
    tiny.eval()


@pytest.mark.parametrize(
    "drop", [("rgb",), ("depth",), ("thermal",), ("rgb", "depth"), ("depth", "thermal")], ids="+".join
)
def test_drop_gives_completion_targets(tiny, drop):
    tiny.train()
    out = tiny(make_inputs(MODALITIES), drop=drop)
    tiny.eval()
    assert out.present == MODALITIES
    assert out.completed == drop
    assert set(out.completion) == set(drop)
    for pred, real in out.completion.values():
        assert pred.shape == real.shape == (2, 32, H // 8, W // 8)
        assert pred.requires_grad and not real.requires_grad


@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
def test_mcn_replaces_only_missing_features(tiny, subset):
    tiny.eval()
    x = make_inputs(subset)
    with torch.no_grad():
        feats = tiny.forward_features(x)
        for m in subset:
            direct = tiny.encoders[m](tiny.normalizer(m, x[m]))
            assert torch.equal(feats.completed_feats[m], direct)
        for m in feats.completed:
            predicted = tiny.completion.predict({k: feats.encoded[k] for k in subset}, m)
            assert torch.equal(feats.completed_feats[m], predicted)
            assert not torch.equal(predicted, torch.zeros_like(predicted))
    assert set(feats.completed_feats) == set(MODALITIES)


def test_roi_boxes_drive_local_and_post_paths(tiny):
    tiny.train()
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 56.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([13]), torch.zeros(0, dtype=torch.int64)]
    out = tiny(make_inputs(("rgb",)), roi_boxes=boxes, roi_labels=labels)
    tiny.eval()
    cov = out.local_coverage
    assert cov[0, 0, 8:56, 8:40].eq(1).all() and cov[0].sum() == 48 * 32
    assert cov[1].sum() == 0
    assert torch.equal(out.post_coverage, out.local_coverage)
    assert [len(b) for b in out.roi_boxes] == [1, 0]
    assert [tuple(t.shape) for t in out.target_alpha_beta_gamma] == [(1, 3), (0, 3)]


def test_local_path_off_fuses_global_and_depth_prior_only():
    """refinement.use_local = False: the local path never runs and covers nothing, the depth-prior
    path still refines the same boxes, and the weights are the same model's."""
    torch.manual_seed(0)
    on = build_model("damcseg_tiny").eval()
    off = build_model("damcseg_tiny", refinement={"use_local": False}).eval()
    off.load_state_dict(on.state_dict())
    off.local_path.forward = lambda *a, **k: pytest.fail("the local path ran with use_local = False")
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 56.0]])]
    labels = [torch.tensor([13])]
    inputs = make_inputs(("rgb", "depth"), b=1)
    with torch.no_grad():
        a = on(inputs, roi_boxes=boxes, roi_labels=labels)
        b = off(inputs, roi_boxes=boxes, roi_labels=labels)
        no_boxes = off(inputs)  # the untrained head detects nothing
    assert a.seg_logits.shape == b.seg_logits.shape and torch.isfinite(b.seg_logits).all()
    assert not torch.allclose(a.seg_logits, b.seg_logits)  # the local path had changed the output
    assert not torch.allclose(b.seg_logits, no_boxes.seg_logits)  # the depth prior still uses the box


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "non-empty dict"),
        ({"lidar": torch.rand(1, 1, 64, 64)}, "valid keys are ['rgb', 'depth', 'thermal']"),
        ({"rgb": torch.rand(1, 3, 60, 128)}, "pad to 64x128"),
        ({"rgb": torch.rand(1, 3, 64, 100)}, "pad to 64x128"),
        ({"rgb": torch.rand(3, 64, 64)}, "must be a [B,3,H,W] tensor"),
        ({"depth": torch.rand(1, 3, 64, 64)}, "must be a [B,1,H,W] tensor"),
        ({"thermal": torch.zeros(1, 1, 64, 64, dtype=torch.uint8)}, "floating point"),
        ({"rgb": torch.rand(1, 3, 64, 64), "depth": torch.rand(1, 1, 32, 64)}, "share batch and size"),
    ],
)
def test_invalid_inputs_raise_clear_errors(tiny, inputs, message):
    with pytest.raises(ValueError) as info:
        tiny(inputs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([torch.tensor([255])], "one train id in [0, 19)"),
        ([torch.tensor([13, 11])], "2 labels"),
        (None, "both"),
    ],
)
def test_invalid_roi_labels(tiny, labels, message):
    with pytest.raises(ValueError) as info:
        tiny(make_inputs(("rgb",), b=1), roi_boxes=[torch.tensor([[0.0, 0.0, 8.0, 8.0]])], roi_labels=labels)
    assert message in str(info.value)


@pytest.mark.parametrize(("drop", "message"), [(("rgb",), "not in the inputs"), (("depth",), "every input")])
def test_invalid_drop(tiny, drop, message):
    with pytest.raises(ValueError, match=message):
        tiny(make_inputs(("depth",)), drop=drop)


@pytest.mark.parametrize("subset", SUBSETS, ids="+".join)
def test_edge_eval_every_subset(edge, subset):
    with torch.no_grad():
        out = edge(make_inputs(subset, b=1))
    assert type(out) is DamcsegOutput
    assert out.seg_logits.shape == (1, 19, H, W) and torch.isfinite(out.seg_logits).all()
    # At the paper's 0.3 threshold an untrained head (prior p = 0.01) detects nothing.
    assert [len(b) for b in out.boxes] == [0]
    assert out.completed == tuple(m for m in MODALITIES if m not in subset)
    assert out.scene.S.shape == (1,) and torch.isfinite(out.omega).all()


def test_eval_type_same_without_crf():
    model = build_model("damcseg_tiny", refinement={"use_crf": False}).eval()
    with torch.no_grad():
        out = model(make_inputs(("thermal",), b=1))
    assert type(out) is DamcsegOutput and model.refinement.crf is None


def test_paper_forward_small():
    torch.manual_seed(0)
    model = build_model("damcseg_paper").eval()
    with torch.no_grad():
        out = model(make_inputs(("rgb", "thermal"), b=1, h=64, w=64))
    assert out.seg_logits.shape == (1, 19, 64, 64) and torch.isfinite(out.seg_logits).all()
    assert out.completed == ("depth",)


def test_tiny_stays_a_test_sized_model(tiny):
    """The tiny variant keeps the suite fast: a multiply-add budget (deterministic, unlike a clock)."""
    from torch.utils.flop_counter import FlopCounterMode

    tiny.eval()
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        tiny(make_inputs(MODALITIES, b=1))
    assert 0 < counter.get_total_flops() / 2 < 60e6  # multiply-adds at 64x128


def test_a_sensor_dropped_for_one_sample_never_reaches_its_refinement(tiny):
    """Per-sample dropout: the CRF guide, scene complexity and depth prior of a sample that dropped
    rgb and depth see thermal only; the other sample keeps its real images."""
    from damcseg_core.models.damcseg import DAMCSeg

    tiny.train()
    x = make_inputs(MODALITIES)
    keep = torch.tensor([[False, False, True], [True, True, True]])
    feats = tiny.forward_features(x, drop=keep)
    used = tuple(m for m in feats.present if m in feats.normalized)
    seen = DAMCSeg._refine_inputs(feats, x, used)
    assert not seen["rgb"][0].any() and not seen["depth"][0].any()
    assert torch.equal(seen["rgb"][1], x["rgb"][1]) and torch.equal(seen["depth"][1], x["depth"][1])
    guide = tiny.refinement.guide_image(seen, used, feats.completed_mask)
    assert torch.equal(guide[0], x["thermal"][0].clamp(0, 1).expand(3, -1, -1))
    assert torch.equal(guide[1], x["rgb"][1].clamp(0, 1))
    tiny.eval()


@pytest.mark.parametrize("stride", [2, 4])
def test_fusion_stride_keeps_output_at_input_size(stride):
    torch.manual_seed(0)
    model = build_model(
        "damcseg_tiny", detection={"score_threshold": 0.0}, segmentation={"fusion_stride": stride}
    )
    out = model.train()(make_inputs(("rgb", "depth"), b=1))
    assert out.seg_logits.shape == (1, 19, H, W)
    assert all(v.shape == (1, 19, H, W) for v in out.branch_logits.values())
    assert out.local_coverage.shape == out.post_coverage.shape == (1, 1, H, W)
    assert set(out.local_coverage.unique().tolist()) <= {0.0, 1.0} and out.local_coverage.sum() > 0
    out.seg_logits.logsumexp(1).mean().backward()
    assert model.refinement.dsaf.a.grad is not None and torch.isfinite(model.refinement.dsaf.a.grad)
    with torch.no_grad():
        ev = model.eval()(make_inputs(("rgb", "depth"), b=1))
    assert ev.seg_logits.shape == (1, 19, H, W) and torch.isfinite(ev.seg_logits).all()


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_bfloat16_autocast(mode):
    # The trainer runs under bf16 autocast on GPUs; CPU autocast exercises the same dtype mixing.
    torch.manual_seed(0)
    model = build_model("damcseg_tiny", detection={"score_threshold": 0.0})
    getattr(model, mode)()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(mode == "train"):
        out = model(make_inputs(("depth", "thermal"), b=1))
    assert out.seg_logits.shape == (1, 19, H, W) and torch.isfinite(out.seg_logits.float()).all()
    if mode == "train":
        out.seg_logits.float().logsumexp(1).mean().backward()
        assert torch.isfinite(model.refinement.post_path.log_strength.grad)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_tiny_on_cuda(mode):
    torch.manual_seed(0)
    model = build_model("damcseg_tiny", detection={"score_threshold": 0.0}).cuda()
    getattr(model, mode)()
    inputs = {k: v.cuda() for k, v in make_inputs(("rgb", "depth")).items()}
    with torch.set_grad_enabled(mode == "train"):
        out = model(inputs)
    assert out.seg_logits.is_cuda and torch.isfinite(out.seg_logits).all()
    assert all(b.is_cuda for b in out.boxes)
    if mode == "train":
        out.seg_logits.logsumexp(1).mean().backward()
