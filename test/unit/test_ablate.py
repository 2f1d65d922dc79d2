"""damcseg-ablate end to end on config/ablation/smoke.yaml: table, deltas, stored switches, resume, errors."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from damcseg_core.checkpoint import load_checkpoint
from damcseg_core.cli.ablate import main
from damcseg_core.data.registry import build_dataset
from damcseg_core.train.ablation import COLUMNS, _FrameCache, row_dir_name

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "config" / "ablation" / "smoke.yaml"
ROWS = ["baseline", "+dsaf", "+joint", "+lmmf", "+targeted", "complete"]


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)  # the configs name their base file relative to the repository root
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    finally:
        os.chdir(cwd)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ablate") / "smoke"
    rc, stdout, stderr = _run(["--config", str(SMOKE), "--out", str(out)])
    assert rc == 0, stderr
    return {"out": out, "stdout": stdout, "table": json.loads((out / "table.json").read_text())}


def test_table_has_every_row_and_column(smoke):
    table = smoke["table"]
    assert [r["name"] for r in table["rows"]] == ROWS
    assert [c["key"] for c in table["columns"]] == [k for k, _, _ in COLUMNS]
    assert table["budget"]["total_steps"] == 3 and table["budget"]["threads"] == 1
    assert table["command"].startswith("damcseg-ablate --config")
    md = (smoke["out"] / "table.md").read_text()
    for _, header, _ in COLUMNS:
        assert header in md
    for row in table["rows"]:
        assert f"| {row['label']} |" in md
        assert set(row["values"]) == {k for k, _, _ in COLUMNS}


@pytest.mark.parametrize("name", ROWS)
def test_deltas_are_row_minus_baseline(smoke, name):
    rows = {r["name"]: r for r in smoke["table"]["rows"]}
    base, row = rows["baseline"], rows[name]
    for key, _, _ in COLUMNS:
        assert row["deltas"][key] == pytest.approx(row["values"][key] - base["values"][key], abs=1e-9)


@pytest.mark.parametrize("name", ROWS[1:])
def test_markdown_shows_value_and_delta(smoke, name):
    row = next(r for r in smoke["table"]["rows"] if r["name"] == name)
    md = (smoke["out"] / "table.md").read_text()
    line = next(li for li in md.splitlines() if li.startswith(f"| {row['label']} |"))
    assert f"{row['values']['miou']:.1f} ({row['deltas']['miou']:+.1f})" in line
    assert f"| {row['values']['params_m']:.2f} |" in line


@pytest.mark.parametrize(
    ("name", "fusion", "adaptive", "joint", "tiny"),
    [
        ("baseline", "concat", False, False, 0.0),
        ("+dsaf", "concat", True, False, 0.0),
        ("+joint", "concat", False, True, 0.0),
        ("+lmmf", "lmmf", False, False, 0.0),
        ("+targeted", "concat", False, False, 1.0),
        ("complete", "lmmf", True, True, 1.0),
    ],
)
def test_checkpoint_holds_the_rows_switches(smoke, name, fusion, adaptive, joint, tiny):
    ckpt = load_checkpoint(smoke["out"] / row_dir_name(name) / "last.pt")
    assert ckpt["step"] == 3
    assert ckpt["model_config"]["fusion"]["mode"] == fusion
    assert ckpt["model_config"]["refinement"]["dsaf"]["adaptive"] is adaptive
    assert ckpt["train_config"]["joint_training"] is joint
    seg = ckpt["train_config"]["loss"]["segmentation"]
    assert (seg["tiny_weight"], seg["occlusion_weight"]) == (tiny, tiny)
    assert any(k.startswith("completion.") for k in ckpt["model"]) is (fusion == "lmmf")


def test_progress_names_every_row(smoke):
    for i, name in enumerate(ROWS, 1):
        assert f"row {i}/6 '{name}': trained in" in smoke["stdout"]


@pytest.mark.parametrize(("rows", "skipped"), [(None, ROWS), ("complete,baseline", ["baseline", "complete"])])
def test_resume_skips_finished_rows(smoke, rows, skipped):
    out = smoke["out"]
    before = {n: (out / row_dir_name(n) / "last.pt").stat().st_mtime_ns for n in ROWS}
    argv = ["--config", str(SMOKE), "--out", str(out), "--resume"] + (["--rows", rows] if rows else [])
    rc, stdout, stderr = _run(argv)
    assert rc == 0, stderr
    for name in skipped:
        assert f"'{name}': finished earlier, skipping" in stdout
    assert "trained in" not in stdout
    assert {n: (out / row_dir_name(n) / "last.pt").stat().st_mtime_ns for n in ROWS} == before
    table = json.loads((out / "table.json").read_text())
    assert [r["name"] for r in table["rows"]] == ROWS  # the table holds every finished row


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ablation.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("yaml_text", "rows", "message"),
    [
        ("base: config/train/tiny_smoke.yaml\n", "baseline,+dsa",
         "unknown row(s) ['+dsa'] in --rows; rows defined in {cfg}: baseline, +dsaf, +joint, +lmmf, "
         "+targeted, complete"),
        ("base: config/train/tiny_smoke.yaml\nbudget: {total_step: 3}\n", None,
         "unknown config key 'budget.total_step'. Did you mean 'total_steps'?"),
        ("base: config/train/tiny_smoke.yaml\nswitches: {joint: {train: {joint_trainin: false}}}\n", None,
         "row 'baseline': unknown config key 'joint_trainin'. Did you mean 'joint_training'?"),
        ("base: config/train/tiny_smoke.yaml\nswitches: {lmmf: {model: {fusion: {mod: concat}}}}\n", None,
         "row 'baseline': unknown config key 'fusion.mod'. Did you mean 'mode'?"),
        ("base: config/train/nope.yaml\n", None, "base training config not found: config/train/nope.yaml"),
        ("base: config/train/tiny_smoke.yaml\nrows: {baseline: {}, x: {innovations: [dsa]}}\n", None,
         "row 'x' turns on unknown switch(es) ['dsa']; switches: dsaf, joint, lmmf, targeted"),
        ("base: config/train/tiny_smoke.yaml\nrows: {plain: {}}\n", None,
         "rows must include 'baseline' (the deltas are taken against it)"),
    ],
)  # fmt: skip
def test_bad_config_or_rows_fail_with_a_clear_message(tmp_path, yaml_text, rows, message):
    cfg = _write(tmp_path, yaml_text)
    argv = ["--config", str(cfg), "--out", str(tmp_path / "out")] + (["--rows", rows] if rows else [])
    rc, _, stderr = _run(argv)
    assert rc == 2
    assert stderr.startswith("damcseg-ablate: error:")
    assert message.format(cfg=cfg) in stderr
    assert not (tmp_path / "out").exists()  # nothing trained


def test_missing_config_file_is_an_error(tmp_path):
    rc, _, stderr = _run(["--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "out")])
    assert rc == 2
    assert f"config file not found: {tmp_path / 'none.yaml'}" in stderr


@pytest.mark.parametrize("index", [0, 3])
def test_frame_cache_returns_the_rendered_frame(index):
    base = build_dataset("synthetic:frames=4,size=64x128,seed=1")
    cache = _FrameCache(base)
    expected = base[index]
    for _ in range(2):  # first read fills the cache, second comes from it
        got = cache[index]
        assert set(got) == set(expected)
        for key, value in expected.items():
            if torch.is_tensor(value):
                assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
            else:
                assert got[key] == value, key
    got["rgb"].zero_()  # a caller's in-place edit does not reach the cache
    assert torch.equal(cache[index]["rgb"], expected["rgb"])


def test_resume_continues_an_interrupted_row(smoke, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(smoke["out"], out)
    (out / row_dir_name("+lmmf") / "ablation_row.json").unlink()  # as if killed before the evaluation
    rc, stdout, stderr = _run(["--config", str(SMOKE), "--out", str(out), "--resume", "--rows", "+lmmf"])
    assert rc == 0, stderr
    assert "resumed from" in stdout and "(resumed; this session only)" in stdout
    row = json.loads((out / row_dir_name("+lmmf") / "ablation_row.json").read_text())
    assert row["resumed"] is True and row["switch_state"]["step"] == 3
