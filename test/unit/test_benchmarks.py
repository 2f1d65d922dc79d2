"""Benchmark suite (``benchmarks/run.py``): quick mode end to end, ratio maths, missing extras.

No wall-clock asserts: only the structure of the results and that every derived number is
computed from the measured ones.
"""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from benchmarks import models as bm
from benchmarks import run as bench_run

QUICK_SIZE = "64x128"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    assert bench_run.main(["--quick", "--threads", "1", "--out", str(out), "--tag", "_test"]) == 0
    md = next(out.glob("peers_*_test.md"))
    js = next(out.glob("peers_*_test.json"))
    return md.read_text(), json.loads(js.read_text())


def test_quick_json_structure(quick):
    _, result = quick
    for key in ("command", "machine", "loadavg_start", "loadavg_end", "gemm", "gemm_peak_gflops_per_s"):
        assert key in result
    assert result["machine"]["threads"] == 1 and result["machine"]["cpu"]
    assert "--quick" in result["command"]
    assert result["gemm_peak_gflops_per_s"] == max(g["gflops_per_s"] for g in result["gemm"])
    block = result["sizes"][QUICK_SIZE]
    assert set(block["rows"]) == set(bench_run.QUICK_CASES)
    for row in block["rows"].values():
        assert len(row["times_ms"]) == block["iters"] == 2
        assert row["params_m"] > 0 and row["gflops"] > 0
        assert math.isclose(row["fps"], 1000.0 / row["median_ms"])
        assert math.isclose(row["gflops_per_s"], row["gflops"] / (row["median_ms"] / 1000.0))
        assert row["p90_ms"] >= row["median_ms"]
        ref = block["rows"]["lraspp_mbv3l"]["median_ms"]
        assert math.isclose(row["fps_vs_lraspp"], ref / row["median_ms"])


def test_quick_ratios_come_from_medians(quick):
    _, result = quick
    block = result["sizes"][QUICK_SIZE]
    rows, ratios = block["rows"], block["ratios"]
    assert {"tiny_no_thermal_extra_latency", "tiny_predictor_extra_latency"} <= set(ratios)
    for r in ratios.values():
        q = rows[r["a"]]["median_ms"] / rows[r["b"]]["median_ms"]
        assert math.isclose(r["value"], q if r["kind"] == "fps" else q - 1.0)
        if r["goal"] is not None:
            assert r["met"] == (r["value"] >= r["goal"] if r["kind"] == "fps" else r["value"] <= r["goal"])


def test_quick_peak_rss_from_subprocesses(quick):
    _, result = quick
    rss = result["sizes"][QUICK_SIZE]["rss_mb"]
    assert set(rss) == {"baseline", *bench_run.QUICK_RSS}
    assert all(isinstance(v, float) and v > 0 for v in rss.values())


def test_quick_markdown_table(quick):
    md, result = quick
    assert "| case | what | params (M) | GFLOPs | median ms | p90 ms | FPS | FPS vs LRASPP |" in md
    assert "| ratio | formula | value | same-round pairs | goal | met |" in md
    for name in bench_run.QUICK_CASES:
        assert f"| `{name}` |" in md
    # Peers outside quick mode get one line each: skipped by the mode, or how to install them.
    for peer in ("smp_dlv3p_mbv2", "smp_dlv3p_r50", "segformer_b0"):
        why = result["sizes"][QUICK_SIZE]["skipped"][peer]
        assert why == "not measured in --quick mode" or "not installed" in why
        assert f"- `{peer}`: {why}" in md


def test_missing_peer_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a)
    )
    with pytest.raises(
        bm.CaseUnavailable, match=r"not installed: transformers \(pip install -e \.\[bench\]\)"
    ):
        bm.build_case("segformer_b0", (64, 128))


@pytest.mark.parametrize(
    ("kind", "a_ms", "b_ms", "value", "met"),
    [
        ("fps", 200.0, 100.0, 2.0, True),
        ("fps", 50.0, 100.0, 0.5, False),
        ("extra", 105.0, 100.0, 0.05, True),
        ("extra", 125.0, 100.0, 0.25, False),
    ],
)
def test_compute_ratios_formula(kind, a_ms, b_ms, value, met):
    a, b = ("lraspp_mbv3l", "edge") if kind == "fps" else ("edge-no_depth", "edge")
    rows = {a: {"median_ms": a_ms}, b: {"median_ms": b_ms}}
    key = "edge_fps_vs_lraspp" if kind == "fps" else "edge_no_depth_extra_latency"
    r = bench_run.compute_ratios(rows)[key]
    assert math.isclose(r["value"], value)
    assert r["met"] is met


def test_unknown_case_lists_valid_ones():
    with pytest.raises(KeyError, match="lraspp_mbv3l"):
        bm.build_case("nope", (64, 128))


@pytest.mark.parametrize(
    ("argv", "cases"),
    [
        (
            ["--cases", "lraspp_mbv3l,edge", "--backends", "torch,onnxruntime"],
            ["lraspp_mbv3l", "edge", "edge-onnxruntime"],
        ),
        (
            ["--cases", "edge,edge-onnxruntime", "--backends", "torch,onnxruntime"],
            ["edge", "edge-onnxruntime"],
        ),
        (["--cases", "lraspp_mbv3l,edge"], ["lraspp_mbv3l", "edge"]),
    ],
    ids=["added-to-explicit-cases", "not-twice", "torch-only"],
)
def test_onnxruntime_backend_adds_its_case_to_explicit_cases(argv, cases):
    assert bench_run.parse_args(argv).case_list == cases


def test_ratio_between_models_at_different_sizes_is_left_out():
    rows = {
        "edge": {"median_ms": 400.0, "model_size": None},
        "edge-predictor": {"median_ms": 150.0, "model_size": "256x512"},
    }
    assert "edge_predictor_extra_latency" not in bench_run.compute_ratios(rows, "512x1024")
    assert "edge_predictor_extra_latency" in bench_run.compute_ratios(rows, "256x512")


def test_profile_edge_stage_hooks_fire_and_undo():
    """``profile_edge.py``'s per-stage breakdown: every named stage of one forward is timed, and
    removing the hooks restores the wrapped functions (it broke once, silently, when the
    refinement head took over the stage functions from ``damcseg.py``)."""
    import torch

    import damcseg_core.models.refinement as rf
    from benchmarks import profile_edge
    from damcseg_core.models import build_model

    originals = {n: getattr(rf, n) for n in ("estimate_scene_complexity", "gate_features", "paste_rois")}
    torch.manual_seed(0)
    model = build_model("damcseg_edge").eval()
    inputs = {"rgb": torch.rand(1, 3, 64, 128), "depth": torch.rand(1, 1, 64, 128) * 0.5,
              "thermal": torch.rand(1, 1, 64, 128)}  # fmt: skip
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 40.0], [60.0, 20.0, 100.0, 60.0]])]
    timer = profile_edge.instrument(model)
    with torch.no_grad():
        model(inputs, roi_boxes=boxes, roi_labels=[torch.tensor([11, 13])])
    stages = dict(timer.total)
    timer.remove()
    expected = {
        "forward (total)", "refinement (everything after the dense outputs)", "encoder rgb", "backbone",
        "det head (BiFPN + nets)", "global path", "scene complexity", "gate features", "paste_rois",
        "local path (roi_align + sub-net + branches)", "depth-prior path", "DSAF fuse", "CRF",
    }  # fmt: skip
    assert expected <= set(stages), f"stages never entered: {sorted(expected - set(stages))}"
    assert all(v > 0 for v in stages.values())
    assert stages["refinement (everything after the dense outputs)"] < stages["forward (total)"]
    assert timer.depth["CRF"] > timer.depth["refinement (everything after the dense outputs)"]
    assert {n: getattr(rf, n) for n in originals} == originals
