"""Inference speed-ups (issue #9) give the same results as the plain paths they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import damcseg_core.models.encoders as encoders
from damcseg_core.inference import Predictor, fold_batchnorm, optimize_for_inference, upsampled_argmax
from damcseg_core.models import build_model
from damcseg_core.models.config import EncoderConfig


def _smooth_logits(k: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Logits with class regions (like a segmentation model's), not per-pixel noise."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, k, max(1, h // 6), max(1, w // 6), generator=gen) * 3
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ((64, 86), (120, 160)),  # the Predictor's usual up-scaling (4:3 frame, model 2:1)
        ((37, 53), (97, 203)),  # odd sizes, different factors per axis
        ((40, 40), (20, 20)),  # down-scaling
        ((1, 1), (5, 7)),  # single source pixel
        ((1, 9), (4, 30)),  # single source row
        ((32, 64), (32, 64)),  # same size: a plain arg-max
    ],
    ids=["up-4:3", "odd", "down", "1x1", "one-row", "same"],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_upsampled_argmax_equals_full_upsampling(src, dst, seed):
    logits = _smooth_logits(19, *src, seed)
    full = F.interpolate(logits[None], size=dst, mode="bilinear", align_corners=False)[0].argmax(0)
    got = upsampled_argmax(logits, dst)
    assert got.shape == dst and got.dtype == torch.int64
    assert (got == full).float().mean().item() >= 0.9995


def test_upsampled_argmax_uniform_and_ties():
    logits = torch.zeros(5, 6, 8)
    logits[3] = 1.0
    assert (upsampled_argmax(logits, (13, 17)) == 3).all()
    # All classes equal everywhere: the first class wins, as with argmax.
    assert (upsampled_argmax(torch.zeros(4, 3, 3), (7, 5)) == 0).all()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = build_model("damcseg_tiny", detection={"score_threshold": 0.0}).eval()
    # Non-trivial BatchNorm statistics, so folding has something to fold.
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model


def _inputs(model, subset, seed=0):
    h, w = model.config.input_size
    gen = torch.Generator().manual_seed(seed)
    full = {
        "rgb": torch.rand(1, 3, h, w, generator=gen),
        "depth": torch.rand(1, 1, h, w, generator=gen) * 30,
        "thermal": torch.rand(1, 1, h, w, generator=gen),
    }
    return {m: full[m] for m in subset}


SUBSETS = [("rgb", "depth", "thermal"), ("rgb",), ("depth", "thermal"), ("thermal",)]


def _assert_same_output(a, b):
    scale = a.seg_logits.abs().max()
    assert ((a.seg_logits - b.seg_logits).abs().max() / scale).item() < 1e-4
    for x, y in zip(a.boxes, b.boxes):
        assert x.shape == y.shape and torch.allclose(x, y, atol=1e-3)
    for x, y in zip(a.scores, b.scores):
        assert torch.allclose(x, y, atol=1e-5)
    assert all(torch.equal(x, y) for x, y in zip(a.labels, b.labels))
    assert torch.allclose(a.scene.S, b.scene.S, atol=1e-6)
    assert torch.equal(a.scene.category, b.scene.category)
    assert a.present == b.present and a.completed == b.completed


@pytest.mark.parametrize("subset", SUBSETS, ids=["+".join(s) for s in SUBSETS])
def test_optimized_copy_matches_model(tiny, subset):
    fast = optimize_for_inference(tiny)
    with torch.inference_mode():
        _assert_same_output(tiny(_inputs(tiny, subset)), fast(_inputs(tiny, subset)))


def test_optimize_leaves_model_and_state_dict_alone(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    fast = optimize_for_inference(tiny)
    assert fast is not tiny
    after = tiny.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    bn = sum(isinstance(m, nn.BatchNorm2d) for m in tiny.modules())
    bn_fast = sum(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    # Only the detection head's per-level norms (one conv shared by several norms) stay.
    assert bn_fast < bn / 2


def test_fold_batchnorm_on_a_plain_block():
    torch.manual_seed(0)
    block = encoders.ConvBNAct(4, 6, kernel=3).eval()
    block[1].running_mean.uniform_(-1, 1)
    block[1].running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 9, 11)
    with torch.no_grad():
        ref = block(x)
        fold_batchnorm(block, run=lambda: block(x))
        got = block(x)
    assert isinstance(block[1], nn.Identity) and block[0].bias is not None
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("subset", SUBSETS[:2], ids=["all", "rgb"])
def test_channels_last_switch_keeps_outputs(tiny, subset, monkeypatch):
    with torch.inference_mode():
        monkeypatch.setattr(encoders, "EVAL_CHANNELS_LAST", False)
        ref = tiny(_inputs(tiny, subset, seed=3))
        monkeypatch.setattr(encoders, "EVAL_CHANNELS_LAST", True)
        got = tiny(_inputs(tiny, subset, seed=3))
    _assert_same_output(ref, got)


@pytest.mark.parametrize(("in_chans", "mode"), [(1, "eval"), (2, "eval"), (1, "train")])
def test_modal_encoder_runs_nhwc_in_eval_even_on_one_channel(in_chans, mode, monkeypatch):
    # A [B, 1, H, W] thermal frame is NCHW- and NHWC-contiguous at once: without the re-layout
    # after the first block oneDNN kept the whole thermal encoder in NCHW (1.3x slower than depth).
    torch.manual_seed(0)
    enc = encoders.DilatedModalEncoder(in_chans, EncoderConfig(widths=(8, 16, 24, 32)))
    enc.train(mode == "train")
    x = torch.rand(2, in_chans, 64, 96)
    with torch.no_grad():
        out = enc(x)
        channels_last = out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
        assert channels_last == (mode == "eval")
        if mode == "eval":  # only the layout differs
            monkeypatch.setattr(encoders, "EVAL_CHANNELS_LAST", False)
            ref = enc(x)
            assert ref.is_contiguous()
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_predictor_optimized_matches_plain(tiny):
    import numpy as np

    rng = np.random.default_rng(0)
    frame = {
        "rgb": rng.integers(0, 256, (97, 203, 3), dtype=np.uint8),
        "depth": rng.uniform(1, 40, (97, 203)).astype(np.float32),
        "thermal": rng.uniform(0, 1, (97, 203)).astype(np.float32),
    }
    plain = Predictor(tiny, optimize=False).predict(frame)
    fast_pred = Predictor(tiny)
    fast = fast_pred.predict(frame)
    assert fast_pred.model is tiny
    assert (plain.mask == fast.mask).mean() >= 0.995
    np.testing.assert_allclose(plain.boxes, fast.boxes, atol=1e-3)
    np.testing.assert_allclose(plain.scores, fast.scores, atol=1e-5)
    assert plain.category == fast.category


@pytest.mark.parametrize(
    ("local_on", "post_on"), [(False, False), (True, False), (False, True), (True, True)], ids=str
)
def test_dsaf_fuse_skips_uncovered_paths_exactly(local_on, post_on):
    from damcseg_core.models.dsaf import DSAF

    gen = torch.Generator().manual_seed(0)
    g, loc, post = (torch.randn(2, 19, 8, 12, generator=gen) * 3 for _ in range(3))
    cov_l = torch.zeros(2, 1, 8, 12)
    cov_p = torch.zeros(2, 1, 8, 12)
    if local_on:
        cov_l[0, :, 2:5, 3:7] = 1.0
    if post_on:
        cov_p[1, :, 1:4, 0:9] = 1.0
    maps = torch.rand(2, 3, 8, 12, generator=gen) + 0.1
    dsaf = DSAF()
    with torch.no_grad():
        reference = dsaf.fuse(g, loc, cov_l, post, cov_p, maps)  # grad mode below runs every path
    with torch.enable_grad():
        every_path = dsaf.fuse(g, loc, cov_l, post, cov_p, maps)
    assert torch.equal(reference, every_path.detach())
    with torch.no_grad():  # the refinement head hands in the softmax it already computed
        reused = dsaf.fuse(g, loc, cov_l, post, cov_p, maps, global_probs=torch.softmax(g, dim=1))
    assert torch.equal(reference, reused)


def test_dsaf_fuse_refuses_global_probs_of_another_shape():
    from damcseg_core.models.dsaf import DSAF

    g = torch.randn(1, 19, 8, 12)
    zeros, maps = torch.zeros(1, 1, 8, 12), torch.rand(1, 3, 8, 12)
    with pytest.raises(
        ValueError, match=r"global_probs must have the shape of global_logits \(1, 19, 8, 12\)"
    ):
        DSAF().fuse(g, g, zeros, g, zeros, maps, global_probs=torch.rand(1, 19, 4, 6))
