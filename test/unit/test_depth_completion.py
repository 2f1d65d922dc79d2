"""The depth image completer (completion.depth_image, issue #16): a missing depth sensor filled in
as a depth image that the real depth encoder, the detector and the depth-prior path read."""

from __future__ import annotations

import math

import pytest
import torch

from damcseg_core import MODALITIES
from damcseg_core.losses import DSJLoss, LossConfig
from damcseg_core.losses.completion import depth_completion_loss
from damcseg_core.models import build_model
from damcseg_core.models.depth_completion import MIN_DEPTH, DepthImageCompleter

B, H, W = 3, 64, 128
D = MODALITIES.index("depth")


def _inputs(b: int = B, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    depth = 1.0 + 30 * torch.rand(b, 1, H, W, generator=g)
    depth[:, :, : H // 4] = 0.0  # "sky": no return
    return {
        "rgb": torch.rand(b, 3, H, W, generator=g),
        "depth": depth,
        "thermal": torch.rand(b, 1, H, W, generator=g),
    }


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("damcseg_tiny", completion={"depth_image": 16}).eval()


# ----------------------------------------------------------------------------- the module
def test_completer_outputs_metres_in_range_and_zero_where_invalid():
    torch.manual_seed(0)
    dc = DepthImageCompleter(16, max_depth=80.0, width=16).eval()
    with torch.no_grad():
        dc.head.bias.copy_(torch.tensor([math.log(200.0), 0.0]))  # beyond range -> clamped
        dc.head.weight[1].normal_(0, 1.0)  # validity varies per pixel
        f = torch.randn(2, 16, H // 8, W // 8).relu()
        img = torch.randn(2, 4, H, W)
        log_depth, valid_logit = dc.forward_raw(f, f, img)
        depth = dc(f, f, img)
    assert depth.shape == (2, 1, H, W)
    valid = valid_logit > 0
    assert 0 < valid.float().mean() < 1
    assert (depth[~valid] == 0).all()
    assert torch.allclose(depth[valid], log_depth.exp()[valid])
    assert depth[valid].min() >= MIN_DEPTH - 1e-6 and depth[valid].max() <= 80.0 + 1e-4


def test_depth_loss_is_the_mean_log_error_over_valid_pixels_and_bce_only_on_dense_targets():
    target = torch.zeros(2, 1, 4, 4)
    target[0] = 10.0
    target[0, :, 0] = 0.0  # a dense sample, its top row invalid (12 of 16 valid)
    target[1, :, 1, 1] = 20.0  # a lidar-like sparse sample: 1 of 16 pixels
    log_depth = torch.full((2, 1, 4, 4), math.log(5.0))
    valid_logit = torch.zeros(2, 1, 4, 4)
    l1, bce = depth_completion_loss(log_depth, valid_logit, target, validity_weight=0.5)
    expected = (12 * math.log(2.0) + math.log(4.0)) / 13
    assert l1.item() == pytest.approx(expected, rel=1e-6)
    # Logit 0 everywhere: BCE is log 2 per pixel, over the dense sample only (any target).
    assert bce.item() == pytest.approx(0.5 * math.log(2.0), rel=1e-6)
    # The sparse sample alone: no validity loss at all.
    _, bce_sparse = depth_completion_loss(log_depth[1:], valid_logit[1:], target[1:])
    assert bce_sparse.item() == 0.0


def test_completer_learns_depth_that_is_a_function_of_the_image_better_than_a_constant():
    """A toy pair where depth is a known function of the rgb image (red = distance, blue > 0.7 =
    sky): a few hundred steps beat the best constant prediction by a wide margin and find the sky."""
    torch.manual_seed(0)
    h, w = 32, 64
    dc = DepthImageCompleter(8, max_depth=80.0, width=16)
    opt = torch.optim.Adam(dc.parameters(), lr=3e-3)

    def batch(n: int):
        rgb = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 8), size=(h, w), mode="bilinear")
        depth = 2.0 + 60.0 * rgb[:, :1]
        depth = torch.where(rgb[:, 2:3] > 0.7, torch.zeros_like(depth), depth)
        img = torch.cat([(rgb - 0.5) / 0.25, torch.zeros(n, 1, h, w)], dim=1)
        return torch.zeros(n, 8, h // 8, w // 8), img, depth

    for _ in range(300):
        f, img, depth = batch(8)
        l1, bce = depth_completion_loss(*dc.forward_raw(f, f, img), depth)
        opt.zero_grad()
        (l1 + bce).backward()
        opt.step()
    dc.eval()
    f, img, depth = batch(16)
    with torch.no_grad():
        l1, _ = depth_completion_loss(*dc.forward_raw(f, f, img), depth)
        pred = dc(f, f, img)
    valid = depth > 0
    logs = depth[valid].log()
    constant = (logs - logs.median()).abs().mean()  # the best constant in log-L1
    assert l1.item() < 0.35 * constant.item()
    assert ((pred > 0) == valid).float().mean() > 0.9  # sky says "no return"


# ----------------------------------------------------------------------------- in the model
@pytest.mark.parametrize("subset", [("rgb", "thermal"), ("rgb",), ("thermal",)], ids="+".join)
def test_missing_depth_is_read_exactly_like_a_sensor_image(model, subset):
    """With depth missing the model runs the completer, then everything downstream treats its
    image as the depth sensor's: the same frame with that image given as depth gives the same
    result (the MCN completes only what is still missing)."""
    inputs = {m: x for m, x in _inputs().items() if m in subset}
    with torch.no_grad():
        feats = model.forward_features(inputs)
        out = model(inputs)
        given = model(dict(inputs, depth=feats.completed_depth))
    assert feats.completed_depth.shape == (B, 1, H, W)
    assert "depth" in out.completed and "depth" not in out.present
    assert not feats.completed_mask[:, D].any()  # completion_flag off for an image by default
    torch.testing.assert_close(out.seg_logits, given.seg_logits)
    for a, b in zip(out.boxes, given.boxes):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(out.omega, given.omega)


def test_given_depth_never_runs_the_completer_and_matches_the_model_without_it(model):
    plain = build_model("damcseg_tiny").eval()
    plain.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("depth_completer.")}
    )
    inputs = _inputs()
    calls = []
    hook = model.depth_completer.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            ref, got = plain(inputs), model(inputs)
    finally:
        hook.remove()
    assert calls == []
    assert torch.equal(ref.seg_logits, got.seg_logits)


def test_completion_flag_option_marks_the_image_as_completed():
    torch.manual_seed(0)
    flagged = build_model("damcseg_tiny", completion={"depth_image": 16, "depth_image_flag": True}).eval()
    inputs = {m: x for m, x in _inputs().items() if m != "depth"}
    with torch.no_grad():
        feats = flagged.forward_features(inputs)
        out = flagged(inputs)
    assert feats.completed_mask[:, D].all()
    assert out.seg_logits.isfinite().all()


def test_per_sample_drop_replaces_only_the_dropped_samples_depth_and_trains_the_completer(model):
    keep = torch.tensor([[True, False, True], [True, True, True], [False, False, True]])
    inputs = _inputs()
    model.train()
    try:
        out = model(inputs, drop=keep)
    finally:
        model.eval()
    lmmf = out.lmmf
    depth = lmmf.completed_depth
    assert torch.equal(depth[1], inputs["depth"][1])  # kept: the sensor's image, bit-identical
    for i in (0, 2):
        assert not torch.allclose(depth[i], inputs["depth"][i])
    # The MCN completes rgb for sample 2, never depth; the depth loss compares with the real image.
    assert lmmf.completed_mask[:, D].tolist() == [False, False, False]
    assert lmmf.completed_mask[2, MODALITIES.index("rgb")]
    assert "depth" not in out.completion and "rgb" in out.completion
    log_depth, valid_logit, target = lmmf.depth_prediction
    assert torch.equal(target, inputs["depth"])
    assert log_depth.requires_grad and valid_logit.shape == (B, 1, H, W)
    # Sample 2 dropped rgb too: its image input to the completer is thermal alone.
    batch = {
        "semantic": torch.randint(0, 19, (B, H, W)),
        "boxes": [torch.zeros(0, 4)] * B,
        "labels": [torch.zeros(0, dtype=torch.long)] * B,
    }
    losses = DSJLoss()(out, batch)
    assert losses["depth_image"].item() > 0 and losses["total"].isfinite()
    off = DSJLoss(LossConfig(depth_image_weight=0.0))(out, batch)
    weighted = DSJLoss(LossConfig(depth_image_weight=2.5))(out, batch)
    assert (weighted["total"] - off["total"]).item() == pytest.approx(
        2.5 * losses["depth_image"].item(), rel=1e-4
    )
    losses["total"].backward()
    grads = [p.grad for p in model.depth_completer.parameters()]
    assert all(g is not None and g.isfinite().all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    model.zero_grad(set_to_none=True)


def test_invalid_depth_image_width_names_the_field():
    with pytest.raises(ValueError, match=r"completion\.depth_image must be 0"):
        build_model("damcseg_tiny", completion={"depth_image": 10})


def test_absent_protocol_switches_the_depth_completer_off_and_restores_it(model):
    from types import SimpleNamespace

    from damcseg_core.eval.evaluator import completion_disabled

    completer = model.depth_completer
    inputs = {m: x for m, x in _inputs().items() if m != "depth"}
    with completion_disabled(SimpleNamespace(model=model)), torch.no_grad():
        assert model.depth_completer is None and model.completion is None
        feats = model.forward_features(inputs)
    assert feats.completed_depth is None and feats.completed == ()
    assert model.depth_completer is completer and model.completion is not None


def test_evaluation_tables_name_the_depth_image_as_the_completion(model):
    from damcseg_core.data.registry import build_dataset
    from damcseg_core.eval.evaluator import Evaluator
    from damcseg_core.inference import Predictor

    samples = [build_dataset("synthetic:frames=2,size=64x128,seed=0")[i] for i in range(2)]
    protocols = ["full", "missing:depth", "missing:thermal", "absent:depth"]
    result = Evaluator(Predictor(model), protocols, num_examples=0, progress=False, bootstrap=20).run(samples)
    labels = {k: v["label"] for k, v in result.metrics["condition_table"]["protocols"].items()}
    assert labels == {
        "full": "all sensors",
        "missing:depth": "depth completed (depth image)",
        "missing:thermal": "thermal completed (MCN)",
        "absent:depth": "depth absent (no MCN)",
    }
