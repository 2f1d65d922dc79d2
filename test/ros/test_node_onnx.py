"""The node with backend:=onnxruntime: same masks as the torch backend, clear configure errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
rclpy = pytest.importorskip("rclpy")
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from damcseg_core.export import export_onnx  # noqa: E402
from damcseg_core.inference import load_predictor  # noqa: E402
from damcseg_core.models import build_model  # noqa: E402
from damcseg_ros import conversions, params  # noqa: E402

pytestmark = pytest.mark.ros

ALL = ("rgb", "depth", "thermal")


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory):
    """damcseg_tiny with the node's random weights (model:=damcseg_tiny is seed 0), all sensors."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model("damcseg_tiny")
    out = tmp_path_factory.mktemp("onnx") / "tiny"
    export_onnx(model, out, modalities=[ALL])
    return out


@pytest.fixture(scope="module")
def node(kit):
    yield from kit.unconfigured_node("damcseg_onnx_test")


def _set(node, **values):
    node.set_parameters([Parameter(k, value=v) for k, v in values.items()])


@pytest.fixture
def onnx_node(node, onnx_dir):
    _set(node, backend="onnxruntime", onnx_path=str(onnx_dir), model="damcseg_tiny", checkpoint="")
    yield node
    _set(node, backend="torch", onnx_path="", model="", checkpoint="")


def test_backend_name_is_validated(node):
    (result,) = node.set_parameters([Parameter("backend", value="tensorrt")])
    assert not result.successful
    assert "backend must be one of ['torch', 'onnxruntime'], got 'tensorrt'" in result.reason


def test_configure_with_onnxruntime_runs_the_export(onnx_node):
    assert onnx_node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    try:
        model = onnx_node._predictor.model
        assert type(model).__name__ == "OnnxRuntimeModel"
        assert model.subsets == (ALL,)
    finally:
        onnx_node.trigger_cleanup()


def _corrupt(onnx_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in onnx_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "dense_rgb+depth+thermal.onnx").write_bytes(b"\x08\x07garbage" * 100)
    return bad


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        pytest.param({"onnx_path": ""}, "backend:=onnxruntime needs parameter 'onnx_path'", id="no-path"),
        pytest.param({"onnx_path": "/nonexistent/onnx"}, "/nonexistent/onnx does not exist", id="missing"),
        pytest.param({"onnx_path": "CORRUPT"}, r"dense_rgb\+depth\+thermal\.onnx is corrupt", id="corrupt"),
        pytest.param(
            {"model": "damcseg_edge"},
            "holds a 'damcseg_tiny' model, but 'damcseg_edge' was requested",
            id="other-variant",
        ),
        pytest.param(
            {"model": "", "checkpoint": "damcseg_core/weights/damcseg_edge.pt"},
            "holds a 'damcseg_tiny' model, but 'damcseg_edge' was requested",
            id="other-variant-checkpoint",
        ),
        pytest.param(
            {"use_depth": False},
            r"no graph for the enabled inputs rgb\+thermal.*--modalities rgb,thermal",
            id="subset",
        ),
    ],
)
def test_bad_onnx_settings_fail_configure_with_the_fix(onnx_node, onnx_dir, tmp_path, settings, message):
    if settings.get("onnx_path") == "CORRUPT":
        settings = {"onnx_path": str(_corrupt(onnx_dir, tmp_path))}
    _set(onnx_node, **settings)
    try:
        onnx_node.p = params.read(onnx_node)
        with pytest.raises(Exception, match=message):
            onnx_node._load_model()
        assert onnx_node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert onnx_node._predictor is None
    finally:
        _set(onnx_node, use_depth=True)


@pytest.mark.slow
def test_node_process_publishes_the_torch_mask(kit, ros_context, onnx_dir, tmp_path):
    """The onnxruntime node's published masks equal the torch backend's on the same frames."""
    node = ros_context
    proc = kit.NodeProcess(
        ["-p", "model:=damcseg_tiny", "-p", "backend:=onnxruntime", "-p", f"onnx_path:={onnx_dir}"],
        tmp_path / "node.log",
    )
    masks = kit.Collector(node, Image, "/damcseg/segmentation", kit.reliable_qos())
    sent = {m: kit.Collector(node, Image, f"/{m}/image", kit.sensor_qos()) for m in ALL}
    frames = kit.FramePublisher(node, rate=5.0)
    try:
        proc.wait_for_output(lambda: len(masks.msgs) >= 2, "masks")
    finally:
        frames.destroy()
        proc.stop()
    assert "onnxruntime" in proc.log()
    # The node's own detection settings (parameter defaults), so both run the same ROIs.
    defaults = params.from_values({s.name: s.default for s in params.PARAMETERS})
    torch_predictor = load_predictor(model="damcseg_tiny", seed=0, detection=defaults.detection)
    checked = 0
    for msg in list(masks.msgs)[:2]:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        inputs = {}
        for m in ALL:
            image = next(i for i in sent[m].msgs if (i.header.stamp.sec, i.header.stamp.nanosec) == stamp)
            inputs[m] = conversions.to_modality(image, m)
        expected = torch_predictor.predict(inputs).mask
        got = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width)
        assert got.shape == expected.shape
        assert (got == expected).mean() >= 0.999
        checked += 1
    assert checked == 2
