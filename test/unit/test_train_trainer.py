"""The trainer end to end on damcseg_tiny: outputs, resume equivalence (also after SIGKILL), DDP."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from damcseg_core.checkpoint import load_checkpoint, load_model
from damcseg_core.config import from_dict, load_yaml
from damcseg_core.data.collate import collate
from damcseg_core.train.config import DEFAULT_GROUPS, TrainConfig

ROOT = Path(__file__).resolve().parents[2]
H, W = 64, 128


class TinyScenes:
    """Six deterministic frames following the sample-dict contract (a car moving right)."""

    def __init__(self, n: int = 6) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        sem = torch.zeros(H, W, dtype=torch.int64)
        sem[: H // 3] = 10
        inst = torch.zeros(H, W, dtype=torch.int32)
        x = 10 + 7 * i
        sem[30:50, x : x + 20] = 13
        inst[30:50, x : x + 20] = 1
        return {
            "rgb": torch.rand(3, H, W, generator=g),
            "depth": 5 + torch.rand(1, H, W, generator=g),
            "thermal": torch.rand(1, H, W, generator=g),
            "present": torch.tensor([True, True, True]),
            "semantic": sem,
            "instance": inst,
            "boxes": torch.tensor([[float(x), 30.0, x + 20.0, 50.0]]),
            "labels": torch.tensor([13]),
            "occlusion": torch.tensor([0.2]),
            "areas": torch.tensor([400.0]),
            "condition": "day",
            "meta": {"dataset": "tiny", "frame": i},
        }


def config(out_dir: Path, **extra) -> TrainConfig:
    """A 6-step, three-stage damcseg_tiny run."""
    data = {
        "model": "damcseg_tiny",
        "batch_size": 2,
        "total_steps": 6,
        "log_every": 1,
        "val_every": 3,
        "ckpt_every": 2,
        "out_dir": str(out_dir),
        "device": "cpu",
        # One thread everywhere: float reductions then run in the same order in this process and
        # in the killed/resumed child processes, so "same weights" can be checked tightly.
        "threads": 1,
        "progress": False,
        "data": {"train": "unused", "val": "unused"},
        "stages": [
            {"name": "warmup", "fraction": 1 / 3, "lr": {"det_head": 2e-3, "seg_head": 2e-3}, "align_loss": False},
            {"name": "joint", "fraction": 1 / 3, "lr": {"backbone": 1e-3, "det_head": 1e-3, "seg_head": 2e-3, "fusion": 1e-3}},
            {"name": "finetune", "fraction": 1 / 3, "lr": {"fusion": 5e-4, "backbone": 5e-5, "det_head": 5e-5, "seg_head": 5e-5}},
        ],
    }  # fmt: skip
    data.update(extra)
    return from_dict(TrainConfig, data)


def run(out_dir: Path, stop_at: int | None = None, **extra) -> dict:
    from damcseg_core.train.trainer import Trainer

    threads = torch.get_num_threads()
    try:
        trainer = Trainer(
            config(out_dir, **extra), train_set=TinyScenes(), val_set=TinyScenes(2), collate_fn=collate
        )
        return trainer.fit(stop_at=stop_at)
    finally:
        torch.set_num_threads(threads)  # Trainer sets cfg.threads process-wide; other tests keep theirs


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), rtol=1e-5, atol=1e-6), k


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight")
    run(out)
    return out


def test_run_writes_config_logs_and_checkpoints(straight):
    assert {"config.yaml", "metrics.csv", "val.csv", "last.pt", "best.pt", "summary.json", "tb"} <= {
        p.name for p in straight.iterdir()
    }
    reloaded = load_yaml(TrainConfig, straight / "config.yaml")
    assert reloaded == config(straight)
    rows = list(csv.DictReader(open(straight / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [float(r["stage"]) for r in rows] == [0, 0, 1, 1, 2, 2]
    assert float(rows[0]["lr_backbone"]) == 0.0 and float(rows[2]["lr_backbone"]) > 0  # frozen, then trains
    assert float(rows[0]["loss_align"]) == 0.0 and float(rows[2]["loss_align"]) > 0  # DSJL after warm-up
    val = list(csv.DictReader(open(straight / "val.csv")))
    assert [int(r["step"]) for r in val] == [3, 6]
    assert 0.0 <= float(val[-1]["val_miou"]) <= 1.0
    assert 0.0 <= float(val[-1]["val_map_50"]) <= 1.0  # the 400-px car is a valid detection target
    assert float(val[-1]["val_joint"]) == pytest.approx(
        (float(val[-1]["val_miou"]) + float(val[-1]["val_map_50"])) / 2
    )
    ckpt = load_checkpoint(straight / "last.pt")
    assert ckpt["step"] == 6 and ckpt["train_config"]["total_steps"] == 6
    model = load_model(straight / "last.pt")
    assert model.config.name == "damcseg_tiny" and not model.training
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["step"] == 6 and summary["mean_sec_per_step"] > 0


def test_resume_in_fresh_objects_matches_straight_run(straight, tmp_path):
    run(tmp_path, stop_at=3)
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3
    summary = run(tmp_path)  # resume: auto picks up last.pt
    assert summary["step"] == 6
    assert_same_weights(straight / "last.pt", tmp_path / "last.pt")
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]


def test_warm_start_loads_matching_weights_and_keeps_the_rest(straight, tmp_path, capsys):
    from damcseg_core.train.trainer import Trainer

    # Another anchor layout: the detection prediction layers change shape, the rest is reused.
    cfg = config(
        tmp_path, init_from=str(straight / "last.pt"), total_steps=1,
        model_overrides={"detection": {"aspect_ratios": [1.0]}},
    )  # fmt: skip
    trainer = Trainer(cfg, train_set=TinyScenes(), val_set=TinyScenes(2), collate_fn=collate)
    result = trainer.warm_start()
    src = weights(straight / "last.pt")
    assert sorted(result["skipped"]) == sorted(
        f"det_head.{net}.pred.1.{p}" for net in ("class_net", "box_net") for p in ("weight", "bias")
    )
    own = trainer.model.state_dict()
    for k in result["loaded"]:
        assert torch.equal(own[k], src[k]), k
    assert "warm start from" in capsys.readouterr().out


_COMPLETION_ONLY = {
    # The default groups with the MCN moved out of "fusion" into a group of its own.
    "optim": {
        "groups": {
            **DEFAULT_GROUPS,
            "fusion": [p for p in DEFAULT_GROUPS["fusion"] if p != "completion"],
            "completion": ["completion"],
        }
    },
    "augment": {"modality_dropout": 1.0},
    "val_every": 0,
}


@pytest.mark.parametrize("frozen_eval", [True, False])
def test_completion_stage_trains_only_the_mcn_and_frozen_eval_keeps_the_network(
    straight, tmp_path, frozen_eval
):
    """A stage that trains the MCN alone inside a finished network (issue #16): with frozen_eval
    every other weight *and* BatchNorm statistic stays bit-identical, so all-sensor outputs do too;
    without it the frozen BatchNorm layers still follow the (completed) training batches."""
    stage = {"name": "completion", "fraction": 1.0, "lr": {"completion": 1e-2}, "frozen_eval": frozen_eval}
    run(tmp_path, init_from=str(straight / "last.pt"), total_steps=3, stages=[stage], **_COMPLETION_ONLY)
    before, after = weights(straight / "last.pt"), weights(tmp_path / "last.pt")
    mcn = [k for k in after if k.startswith("completion.")]
    assert mcn and any(not torch.equal(before[k], after[k]) for k in mcn)
    frozen_params = [
        k for k in after if not k.startswith("completion.") and "running_" not in k and "num_batches" not in k
    ]
    assert all(torch.equal(before[k], after[k]) for k in frozen_params)
    stats = [k for k in after if "running_mean" in k or "running_var" in k]
    assert stats
    unchanged_stats = all(torch.equal(before[k], after[k]) for k in stats)
    assert unchanged_stats == frozen_eval

    model_before, model_after = load_model(straight / "last.pt"), load_model(tmp_path / "last.pt")
    sample = collate([TinyScenes()[0]])
    inputs = {m: sample[m] for m in ("rgb", "depth", "thermal")}
    with torch.no_grad():
        full_before, full_after = model_before.eval()(inputs), model_after.eval()(inputs)
    same = torch.equal(full_before.seg_logits, full_after.seg_logits)
    assert same == frozen_eval


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_logit_distillation_is_logged_and_trains_the_mcn_only_when_weighted(straight, tmp_path, weight):
    """loss.logit_distill_weight > 0 makes the trainer ask the model for the teacher's global
    logits; the term is then > 0 on steps that drop a sensor (every step here), else exactly 0."""
    stage = {"name": "completion", "fraction": 1.0, "lr": {"completion": 1e-2}, "frozen_eval": True}
    run(tmp_path, init_from=str(straight / "last.pt"), total_steps=2, stages=[stage],
        loss={"logit_distill_weight": weight, "logit_distill_temperature": 2.0}, **_COMPLETION_ONLY)  # fmt: skip
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    values = [float(r["loss_logit_distill"]) for r in rows]
    assert all(v > 0 for v in values) if weight else all(v == 0.0 for v in values)


def test_frozen_eval_switches_whole_frozen_modules_and_keeps_trainable_ones_training():
    from damcseg_core.train.trainer import eval_frozen_modules

    net = torch.nn.Sequential(
        torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2), torch.nn.Dropout()),
        torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1), torch.nn.BatchNorm2d(2)),
    ).train()
    for p in net[0].parameters():
        p.requires_grad_(False)
    net[1][1].weight.requires_grad_(False)
    net[1][1].bias.requires_grad_(False)
    assert eval_frozen_modules(net) == ["0", "1.1"]
    assert not net[0].training and not net[0][2].training  # the dropout follows its frozen parent
    assert net.training and net[1].training and net[1][0].training and not net[1][1].training


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"select_metric": "val_map"}, "select_metric must be val_miou, val_map_50 or val_joint"),
        ({"init_from": "weights.bin"}, "init_from must be a path to a .pt checkpoint"),
    ],
)
def test_bad_selection_and_init_settings_are_named(tmp_path, extra, message):
    from damcseg_core.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        config(tmp_path, **extra).validate()


def test_resume_never_starts_over(tmp_path):
    run(tmp_path, stop_at=2)
    summary = run(tmp_path, stop_at=1, resume="never")
    assert summary["step"] == 1


_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {test_dir!r})
    from pathlib import Path
    import test_train_trainer as t
    t.run(Path({out!r}), **{extra!r})
    """
)


def _child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def test_sigkill_then_resume_matches_straight_run(straight, tmp_path):
    code = _CHILD.format(test_dir=str(Path(__file__).parent), out=str(tmp_path), extra={"ckpt_every": 3})
    proc = subprocess.Popen([sys.executable, "-c", code], env=_child_env(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (tmp_path / "last.pt").exists():  # the first checkpoint is written at step 3 of 6
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 3  # killed before the next checkpoint
    assert run(tmp_path, ckpt_every=3)["step"] == 6
    assert_same_weights(straight / "last.pt", tmp_path / "last.pt")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_a_random_moment_then_resume_completes_with_the_same_weights(straight, tmp_path, seed):
    """Killed anywhere (mid-step, mid-checkpoint-write), a run resumes from an intact last.pt."""
    code = _CHILD.format(test_dir=str(Path(__file__).parent), out=str(tmp_path), extra={"ckpt_every": 1})
    proc = subprocess.Popen([sys.executable, "-c", code], env=_child_env(), stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (tmp_path / "last.pt").exists():  # training has started once the first step is saved
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.005)
    time.sleep(random.Random(seed).uniform(0.0, 0.4))  # a random moment in steps 1..6
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(tmp_path / "last.pt")["step"]  # loads: never half-written
    assert 1 <= killed_at <= 6
    assert run(tmp_path, ckpt_every=1)["step"] == 6
    assert_same_weights(straight / "last.pt", tmp_path / "last.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_DDP_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {test_dir!r})
    from pathlib import Path
    import test_train_trainer as t
    t.run(Path({out!r}), total_steps=4, val_every=0, ckpt_every=2, batch_size=1)
    """
)


def test_ddp_two_cpu_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "ddp_child.py"
    out = tmp_path / "run"
    script.write_text(_DDP_CHILD.format(test_dir=str(Path(__file__).parent), out=str(out)))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), str(script),
    ]  # fmt: skip
    res = subprocess.run(cmd, env=_child_env(), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["step"] == 4
    a, b = summary["rank_param_checksums"]
    assert a == b
    assert load_checkpoint(out / "last.pt")["step"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", "config/train/nope.yaml"], "config file not found"),
        (
            ["--config", str(ROOT / "config/train/tiny_smoke.yaml"), "batch_sise=2"],
            "Did you mean 'batch_size'",
        ),
        (
            ["--config", str(ROOT / "config/train/tiny_smoke.yaml"), "--resume", "missing.pt"],
            "no such checkpoint",
        ),
    ],
)
def test_cli_reports_config_errors(args, message, capsys, tmp_path):
    from damcseg_core.cli.train import main

    assert main([*args, f"out_dir={tmp_path}"]) == 2
    assert message in capsys.readouterr().err


def test_cli_trains_the_smoke_config_on_the_synthetic_world(tmp_path, capsys):
    from damcseg_core.cli.train import main

    assert (
        main(
            ["--config", str(ROOT / "config/train/tiny_smoke.yaml"), f"out_dir={tmp_path}", "progress=false"]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        summary["step"] == yaml.safe_load((ROOT / "config/train/tiny_smoke.yaml").read_text())["total_steps"]
    )
    assert load_checkpoint(tmp_path / "last.pt")["train_config"]["data"]["train"].startswith("synthetic:")
    # Running the same command again resumes from last.pt and has nothing left to do.
    assert (
        main(
            ["--config", str(ROOT / "config/train/tiny_smoke.yaml"), f"out_dir={tmp_path}", "progress=false"]
        )
        == 0
    )
    assert "resumed from" in capsys.readouterr().out
