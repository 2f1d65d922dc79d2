"""ONNX export + onnxruntime backend: parity with PyTorch per modality subset, and clear errors.

Tolerances are the ones of the issue and docs/deployment.md (``damcseg_core.export.parity``).
"""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from damcseg_core.export import (
    ALL_SUBSETS,
    OnnxExportError,
    OnnxRuntimeModel,
    dense_file_name,
    export_onnx,
    parse_subset,
    preferred_providers,
    read_metadata,
)
from damcseg_core.export.parity import (
    BOX_TOLERANCE_PX,
    MASK_AGREEMENT_MIN,
    SCENE_TOLERANCE,
    WEIGHT_TOLERANCE,
    compare_outputs,
    synthetic_inputs,
)
from damcseg_core.inference import Predictor, load_predictor
from damcseg_core.models import build_model

SIZE = (128, 256)
EDGE_CHECKPOINT = "damcseg_core/weights/damcseg_edge.pt"


def detecting_tiny() -> torch.nn.Module:
    """damcseg_tiny whose random weights detect (so NMS, the local path and paste-back run) and
    whose gate switches the context branch off and the consistency branch on for some ROIs."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("damcseg_tiny").eval()
    with torch.no_grad():
        model.det_head.class_net.pred[1].bias.fill_(0.0)  # sigmoid 0.5 > score_threshold 0.3
        model.local_path.branches.gate.mlp[2].bias.copy_(torch.tensor([3.0, -3.0, 0.0]))
    return model


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return detecting_tiny()


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory) -> tuple:
    out = tmp_path_factory.mktemp("onnx") / "tiny"
    paths = export_onnx(tiny, out, size=SIZE)
    return out, paths, OnnxRuntimeModel(out, num_threads=1)


def test_export_writes_one_graph_per_subset_and_local(exported) -> None:
    out, paths, runtime = exported
    assert [p.name for p in paths] == [dense_file_name(s) for s in ALL_SUBSETS] + ["local.onnx"]
    assert sorted(runtime.subsets) == sorted(ALL_SUBSETS)
    meta = read_metadata(out / "dense_rgb+thermal.onnx")
    assert meta["model_name"] == "damcseg_tiny"
    assert meta["modalities"] == ["rgb", "thermal"]
    assert meta["completed"] == ["depth"]
    assert meta["export_size"] == list(SIZE)


def test_export_leaves_the_model_unchanged(tmp_path) -> None:
    model = detecting_tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path, size=(64, 128), modalities=["rgb,depth"])
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == []
    assert not model.training


@pytest.mark.parametrize("subset", ALL_SUBSETS, ids=["+".join(s) for s in ALL_SUBSETS])
def test_parity_per_modality_subset(tiny, exported, subset) -> None:
    runtime = exported[2]
    boxes = 0
    for inputs in synthetic_inputs(2, SIZE, subset, seed=3):
        with torch.inference_mode():
            ref, got = tiny(inputs), runtime(inputs)
        report = compare_outputs(ref, got)
        assert report.mask_agreement >= MASK_AGREEMENT_MIN
        assert report.boxes_ref == report.boxes_got
        assert report.max_box_error_px <= BOX_TOLERANCE_PX
        assert report.labels_equal
        assert report.max_scene_error <= SCENE_TOLERANCE
        assert report.max_alpha_beta_gamma_error <= WEIGHT_TOLERANCE
        assert report.max_omega_error <= WEIGHT_TOLERANCE
        assert (got.present, got.completed) == (ref.present, ref.completed)
        for a, b in zip(ref.target_alpha_beta_gamma, got.target_alpha_beta_gamma):
            torch.testing.assert_close(b, a, atol=WEIGHT_TOLERANCE, rtol=0)
        boxes += report.boxes_ref
    assert boxes > 0  # the data-dependent path (NMS, local path, paste-back) was exercised


def test_context_mcn_exports_and_matches_torch(tmp_path) -> None:
    # completion.context / row_embedding (dilated 3x3 blocks, a row embedding) in the graphs that
    # complete a sensor; non-zero weights so the blocks change the completed features.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("damcseg_tiny", completion={"context": 2, "row_embedding": True}).eval()
        with torch.no_grad():
            for name, p in model.completion.named_parameters():
                if ".spatial." in name or ".row." in name:
                    p.normal_(0.0, 0.2)
    export_onnx(model, tmp_path, size=(64, 128), modalities=["rgb,thermal"])
    runtime = OnnxRuntimeModel(tmp_path, num_threads=1)
    for inputs in synthetic_inputs(2, (64, 128), ("rgb", "thermal"), seed=5):
        with torch.inference_mode():
            ref, got = model(inputs), runtime(inputs)
        assert got.completed == ref.completed == ("depth",)
        report = compare_outputs(ref, got)
        assert report.mask_agreement >= MASK_AGREEMENT_MIN
        assert report.max_omega_error <= WEIGHT_TOLERANCE


@pytest.mark.parametrize("subset", [("rgb", "thermal"), ("rgb",)], ids=["rgb+thermal", "rgb"])
def test_depth_image_completer_exports_and_matches_torch(tmp_path, subset) -> None:
    # completion.depth_image: the graphs without depth give the completed depth image as an extra
    # output, and the refinement reads it on both backends (depth prior, scene complexity).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("damcseg_tiny", completion={"depth_image": 16}).eval()
    export_onnx(model, tmp_path, size=(64, 128), modalities=[",".join(subset)])
    runtime = OnnxRuntimeModel(tmp_path, num_threads=1)
    assert "completed_depth" in read_metadata(tmp_path / dense_file_name(subset))["output_names"]
    for inputs in synthetic_inputs(2, (64, 128), subset, seed=5):
        with torch.inference_mode():
            ref, got = model(inputs), runtime(inputs)
            feats = model.forward_features(inputs)
        assert "depth" in got.completed and got.completed == ref.completed
        dense = runtime._run_dense(inputs, 64, 128)
        torch.testing.assert_close(dense.completed_depth, feats.completed_depth, rtol=1e-4, atol=1e-3)
        report = compare_outputs(ref, got)
        assert report.mask_agreement >= MASK_AGREEMENT_MIN
        assert report.max_omega_error <= WEIGHT_TOLERANCE


def test_context_attention_exports_and_matches_torch(tmp_path) -> None:
    # fusion.context (a scene descriptor into every gate), with non-zero weights so the gates move;
    # one graph with a completed sensor, one with all three.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("damcseg_tiny", fusion={"context": True}).eval()
        with torch.no_grad():
            model.attention.context.weight.normal_(0.0, 0.05)
            model.attention.context.bias.normal_(0.0, 0.5)
    export_onnx(model, tmp_path, size=(64, 128), modalities=["rgb,thermal", "rgb,depth,thermal"])
    runtime = OnnxRuntimeModel(tmp_path, num_threads=1)
    for mods in (("rgb", "thermal"), ("rgb", "depth", "thermal")):
        for inputs in synthetic_inputs(1, (64, 128), mods, seed=7):
            with torch.inference_mode():
                ref, got = model(inputs), runtime(inputs)
            report = compare_outputs(ref, got)
            assert report.mask_agreement >= MASK_AGREEMENT_MIN
            assert report.max_omega_error <= WEIGHT_TOLERANCE


def test_export_from_before_the_omega_rename_still_runs(tiny, exported, tmp_path) -> None:
    import onnx

    out, _, runtime = exported
    old = tmp_path / "old"
    shutil.copytree(out, old)
    for f in old.glob("dense_*.onnx"):  # the graph output was called modality_weights then
        g = onnx.load(str(f))
        for o in g.graph.output:
            if o.name == "omega":
                o.name = "modality_weights"
        for n in g.graph.node:
            n.output[:] = ["modality_weights" if v == "omega" else v for v in n.output]
        onnx.save(g, str(f))
    assert "modality_weights" in {o.name for o in onnx.load(str(old / "dense_rgb.onnx")).graph.output}
    (inputs,) = synthetic_inputs(1, SIZE, ("rgb",), seed=4)
    with torch.inference_mode():
        got, ref = OnnxRuntimeModel(old, num_threads=1)(inputs), runtime(inputs)
    torch.testing.assert_close(got.omega, ref.omega)


@pytest.mark.parametrize("frame_hw", [(128, 256), (100, 150)], ids=["export-size", "other-aspect"])
def test_predictor_on_onnxruntime_matches_torch(tiny, exported, frame_hw) -> None:
    """The Predictor runs the ORT model unchanged; another aspect ratio needs the dynamic H/W axes."""
    runtime = exported[2]
    sample = synthetic_inputs(1, frame_hw, ("rgb", "depth"), seed=5)[0]
    frame = {
        "rgb": (sample["rgb"][0].permute(1, 2, 0).numpy() * 255).astype(np.uint8),
        "depth": sample["depth"][0, 0].numpy(),
    }
    torch_predictor = Predictor(tiny)
    # The ORT model reports the export size as config.input_size; feed torch the same size.
    assert runtime.config.input_size == SIZE
    torch_predictor.input_size = SIZE
    ref = torch_predictor.predict(frame)
    got = Predictor(runtime).predict(frame)
    assert got.mask.shape == frame_hw
    assert (ref.mask == got.mask).mean() >= MASK_AGREEMENT_MIN
    assert len(ref.boxes) == len(got.boxes)
    np.testing.assert_allclose(got.boxes, ref.boxes, atol=BOX_TOLERANCE_PX)
    assert abs(ref.S - got.S) <= SCENE_TOLERANCE


def test_parity_shipped_edge_checkpoint_all_modalities(tmp_path) -> None:
    from damcseg_core.checkpoint import load_model

    model = load_model(EDGE_CHECKPOINT)
    subset = ("rgb", "depth", "thermal")
    export_onnx(model, tmp_path, modalities=[subset])
    runtime = OnnxRuntimeModel(
        tmp_path, num_threads=1, expected_name="damcseg_edge", expected_size=(256, 512)
    )
    inputs = synthetic_inputs(1, (256, 512), subset, seed=1)[0]
    with torch.inference_mode():
        report = compare_outputs(model(inputs), runtime(inputs))
    assert report.ok, report.summary()


def test_class_names_palette_and_detection_settings_reach_the_onnx_predictor(tmp_path) -> None:
    model = detecting_tiny()
    model.class_names = tuple(f"k{i}" for i in range(19))
    model.palette = [[i, i, i] for i in range(19)]
    export_onnx(model, tmp_path, modalities=[("rgb",)])  # at the variant's own input size
    assert read_metadata(tmp_path / "dense_rgb.onnx")["class_names"] == list(model.class_names)
    predictor = load_predictor(
        "onnxruntime", onnx_path=tmp_path, model="damcseg_tiny", detection={"max_detections": 2}
    )
    assert predictor.class_names == model.class_names
    assert predictor.palette.tolist() == model.palette
    assert predictor.label == f"{tmp_path.name} (damcseg_tiny, onnxruntime)"
    assert predictor.model.det_head.cfg.max_detections == 2


# ---------------------------------------------------------------------- errors
@pytest.fixture
def rgb_only(exported, tmp_path):
    """A folder with only the rgb graph (and local.onnx)."""
    out = exported[0]
    for name in ("dense_rgb.onnx", "local.onnx"):
        shutil.copy(out / name, tmp_path / name)
    return tmp_path


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: b"this is not an onnx model" * 10,
        lambda data: data[: len(data) // 2],
        lambda data: b"",
    ],
    ids=["garbage", "truncated", "empty"],
)
def test_corrupt_onnx_file_names_file_and_fix(rgb_only, damage) -> None:
    path = rgb_only / "dense_rgb.onnx"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(OnnxExportError, match="damcseg-export") as err:
        OnnxRuntimeModel(rgb_only)
    assert str(path) in str(err.value)


def test_wrong_variant_is_refused(rgb_only) -> None:
    with pytest.raises(
        OnnxExportError, match="holds a 'damcseg_tiny' model, but 'damcseg_edge' was requested"
    ):
        OnnxRuntimeModel(rgb_only, expected_name="damcseg_edge")


def test_wrong_input_size_is_refused(rgb_only) -> None:
    with pytest.raises(OnnxExportError, match=r"made for input size 128x256.*--size 256x512"):
        OnnxRuntimeModel(rgb_only, expected_size=(256, 512))


def test_missing_local_graph(rgb_only) -> None:
    (rgb_only / "local.onnx").unlink()
    with pytest.raises(FileNotFoundError, match=r"local\.onnx is missing"):
        OnnxRuntimeModel(rgb_only)


def test_missing_subset_names_the_export_command(rgb_only) -> None:
    runtime = OnnxRuntimeModel(rgb_only / "dense_rgb.onnx", num_threads=1)
    assert runtime.subsets == (("rgb",),)
    inputs = synthetic_inputs(1, SIZE, ("depth", "thermal"))[0]
    with pytest.raises(
        OnnxExportError, match=r"no ONNX graph for modality subset depth\+thermal.*--modalities depth,thermal"
    ):
        runtime(inputs)


def test_foreign_onnx_file_is_refused(rgb_only) -> None:
    import onnx

    path = rgb_only / "dense_rgb.onnx"
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.save(proto, str(path))
    with pytest.raises(OnnxExportError, match="not written by damcseg-export"):
        OnnxRuntimeModel(rgb_only)


def test_missing_onnxruntime_names_the_install_command(rgb_only, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ImportError, match=r"pip install -e \.\[onnx\]"):
        OnnxRuntimeModel(rgb_only)


@pytest.mark.parametrize(
    ("available", "expected"),
    [
        (["CPUExecutionProvider"], ["CPUExecutionProvider"]),
        (
            ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"],
            ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
        (
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
        ),
    ],
)
def test_preferred_providers(available, expected) -> None:
    assert preferred_providers(available) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("depth,rgb", ("rgb", "depth")), ("thermal+rgb", ("rgb", "thermal")), (["depth"], ("depth",))],
)
def test_parse_subset(spec, expected) -> None:
    assert parse_subset(spec) == expected


@pytest.mark.parametrize("spec", ["", "rgb,lidar", "rgb,rgb"])
def test_parse_subset_rejects(spec) -> None:
    with pytest.raises(ValueError, match="invalid modality subset"):
        parse_subset(spec)


@pytest.mark.parametrize("threads", [1, 2])
def test_sessions_do_not_spin_and_use_the_given_threads(rgb_only, threads) -> None:
    # Spinning onnxruntime workers starve the torch post-processing that follows every graph.
    runtime = OnnxRuntimeModel(rgb_only, num_threads=threads)
    options = runtime.session_options
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == threads
