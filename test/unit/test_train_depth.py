"""``damcseg-train-depth``: adds a trained depth image completer to a checkpoint, leaves every other
weight as it was, resumes an interrupted run to the same result, refuses bad input with a reason."""

from __future__ import annotations

import json

import pytest
import torch

import damcseg_core.train.depth_completion as depth_training
from damcseg_core.checkpoint import load_checkpoint, load_model, save_checkpoint
from damcseg_core.cli.train_depth import main
from damcseg_core.models import build_model
from damcseg_core.train.depth_completion import DepthTrainArgs, train_depth_completer

DATA = "synthetic:frames=4,size=64x128,seed=0"


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("init") / "tiny.pt"
    save_checkpoint(path, build_model("damcseg_tiny"), step=7)
    return path


def _args(init, out, **kw) -> DepthTrainArgs:
    base = dict(init=str(init), data=[DATA], out=str(out), steps=6, batch_size=2, width=16, threads=1,
                log_every=2, ckpt_every=3)  # fmt: skip
    return DepthTrainArgs(**{**base, **kw})


def test_writes_a_checkpoint_with_the_completer_and_the_rest_unchanged(init, tmp_path, capsys):
    out = tmp_path / "with_depth.pt"
    summary = train_depth_completer(_args(init, out))
    model, base = load_model(out), load_model(init)
    assert model.config.completion.depth_image == 16 and base.config.completion.depth_image == 0
    state, ref = model.state_dict(), base.state_dict()
    assert set(state) - set(ref) == {k for k in state if k.startswith("depth_completer.")}
    assert all(torch.equal(state[k], v) for k, v in ref.items())
    fresh = build_model("damcseg_tiny", completion={"depth_image": 16}).depth_completer.state_dict()
    assert any(not torch.equal(v, fresh[k]) for k, v in model.depth_completer.state_dict().items())
    stored = load_checkpoint(out)["train_config"]
    assert stored["command"] == "damcseg-train-depth" and stored["args"]["steps"] == 6
    assert summary["steps_per_s"] > 0 and stored["machine"]["available_cpus"] >= 1
    assert not (tmp_path / "with_depth.pt.state").exists()
    logged = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [json.loads(line)["step"] for line in logged] == [2, 4, 6]
    # With depth missing the new checkpoint completes it as an image.
    with torch.no_grad():
        feats = model.forward_features({"rgb": torch.rand(1, 3, 64, 128)})
    assert feats.completed_depth is not None and feats.completed_depth.shape == (1, 1, 64, 128)


def test_an_interrupted_run_resumes_to_the_same_weights(init, tmp_path, monkeypatch):
    straight = tmp_path / "straight.pt"
    train_depth_completer(_args(init, straight))
    resumed = tmp_path / "resumed.pt"
    monkeypatch.setattr(depth_training, "depth_completion_loss", _crash_after(4))  # in step 5
    with pytest.raises(KeyboardInterrupt):
        train_depth_completer(_args(init, resumed))
    assert (tmp_path / "resumed.pt.state").is_file() and not resumed.exists()  # saved at step 3
    monkeypatch.undo()
    train_depth_completer(_args(init, resumed))
    a, b = load_model(straight).depth_completer.state_dict(), load_model(resumed).depth_completer.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_state_of_other_arguments_is_refused(init, tmp_path, monkeypatch):
    out = tmp_path / "x.pt"
    monkeypatch.setattr(depth_training, "depth_completion_loss", _crash_after(4))
    with pytest.raises(KeyboardInterrupt):
        train_depth_completer(_args(init, out))
    monkeypatch.undo()
    with pytest.raises(ValueError, match="other arguments; delete it"):
        train_depth_completer(_args(init, out, lr=1e-3))


def _crash_after(n: int):
    real = depth_training.depth_completion_loss
    calls = {"n": 0}

    def loss(*a, **kw):
        calls["n"] += 1
        if calls["n"] > n:
            raise KeyboardInterrupt
        return real(*a, **kw)

    return loss


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rgb-drop", "0.6", "--thermal-drop", "0.5"], "sum below 1"),
        (["--steps", "0"], "steps and batch_size must be >= 1"),
    ],
    ids=["drop-sum", "steps"],
)
def test_cli_refuses_bad_arguments_with_the_reason(init, tmp_path, capsys, argv, message):
    rc = main(["--init", str(init), "--data", DATA, "--out", str(tmp_path / "o.pt"), *argv])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("damcseg-train-depth: error:") and message in err


def test_cli_names_a_missing_init_checkpoint(tmp_path, capsys):
    rc = main(["--init", str(tmp_path / "nope.pt"), "--data", DATA, "--out", str(tmp_path / "o.pt")])
    assert rc == 2
    assert "nope.pt" in capsys.readouterr().err


def test_a_completer_of_another_width_is_refused(init, tmp_path):
    out = tmp_path / "w16.pt"
    train_depth_completer(_args(init, out, steps=2))
    with pytest.raises(ValueError, match="pass --width 16"):
        train_depth_completer(_args(out, tmp_path / "w32.pt", width=32, steps=2))


def test_feature_loss_is_zero_for_the_real_image_skips_sparse_targets_and_reaches_the_prediction():
    torch.manual_seed(0)
    model = build_model("damcseg_tiny").eval()
    target = 2.0 + 30 * torch.rand(2, 1, 64, 128)
    target[1] = 0.0
    target[1, :, ::16] = 10.0  # lidar-like rows: 1/16 of the pixels
    same = depth_training.depth_feature_loss(model, target.clone(), target)
    assert same.item() == pytest.approx(0.0, abs=1e-7)
    predicted = (target * 1.2).requires_grad_(True)
    loss = depth_training.depth_feature_loss(model, predicted, target)
    loss.backward()
    assert loss.item() > 0
    assert predicted.grad[0].abs().sum() > 0 and predicted.grad[1].abs().sum() == 0  # sparse: skipped
    only_sparse = depth_training.depth_feature_loss(model, predicted[1:], target[1:])
    assert only_sparse.item() == 0.0


def test_feature_weight_trains_with_the_feature_term(init, tmp_path, capsys):
    train_depth_completer(_args(init, tmp_path / "f.pt", feature_weight=2.0, steps=2, log_every=1))
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert all(rec["feature"] > 0 for rec in logged)
    assert load_checkpoint(tmp_path / "f.pt")["train_config"]["args"]["feature_weight"] == 2.0
