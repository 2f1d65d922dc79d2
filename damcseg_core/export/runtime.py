"""onnxruntime backend: run an exported DAMCSeg folder like the PyTorch model.

:class:`OnnxRuntimeModel` duck-types :class:`~damcseg_core.models.DAMCSeg` for the
:class:`~damcseg_core.inference.Predictor` (``.config``, ``.eval()``, ``.to()``, ``__call__``
returning :class:`~damcseg_core.models.outputs.DamcsegOutput`). The dense graph of the frame's
modality subset and the local graph run in onnxruntime; the data-dependent rest is the very
same :class:`~damcseg_core.models.refinement.RefinementHead` the PyTorch model calls.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.ops import roi_align

from damcseg_core import MODALITIES
from damcseg_core.export.onnx_export import (
    DENSE_OUTPUTS,
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    LOCAL_FILE,
    METADATA_KEY,
    dense_file_name,
    detection_feature_sizes,
)

__all__ = [
    "OnnxExportError",
    "OnnxRuntimeModel",
    "import_onnxruntime",
    "preferred_providers",
    "read_metadata",
]

# Graph output names of exports made before the paper's names reached the model outputs (#19).
LEGACY_OUTPUT_NAMES = {"omega": "modality_weights"}
REEXPORT = "re-export it with damcseg-export (docs/deployment.md)"
_PREFERRED = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


class OnnxExportError(ValueError):
    """An ONNX file or folder that is missing, corrupt, foreign or does not fit the request."""


def import_onnxruntime():
    """``import onnxruntime`` with an error that says how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(
            "the onnxruntime backend needs the onnxruntime package, which is not installed: "
            "run pip install -e .[onnx] (CPU) or install onnxruntime-gpu for CUDA/TensorRT"
        ) from exc
    return onnxruntime


def preferred_providers(available: Sequence[str] | None = None) -> list[str]:
    """TensorRT, then CUDA, then CPU execution providers, as far as onnxruntime offers them."""
    if available is None:
        available = import_onnxruntime().get_available_providers()
    chosen = [p for p in _PREFERRED if p in available]
    return chosen or list(available)


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``damcseg`` metadata of an exported ONNX file (parses the whole file: a corrupt one fails).

    Raises:
        FileNotFoundError: no such file.
        OnnxExportError: not a readable ONNX model, or one not written by damcseg-export.
    """
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist; export one with damcseg-export")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError, RuntimeError) as exc:
        raise OnnxExportError(f"ONNX file {path} is corrupt and cannot be read ({exc}); {REEXPORT}") from exc
    if len(proto.graph.node) == 0:
        raise OnnxExportError(f"ONNX file {path} is corrupt or empty (no graph nodes); {REEXPORT}")
    props = {p.key: p.value for p in proto.metadata_props}
    try:
        meta = json.loads(props[METADATA_KEY])
    except (KeyError, json.JSONDecodeError) as exc:
        raise OnnxExportError(
            f"ONNX file {path} has no damcseg metadata, so it was not written by damcseg-export; {REEXPORT}"
        ) from exc
    if meta.get("format") != EXPORT_FORMAT or meta.get("format_version") != EXPORT_FORMAT_VERSION:
        raise OnnxExportError(
            f"ONNX file {path} has export format {meta.get('format')!r} v{meta.get('format_version')}, "
            f"this damcseg reads {EXPORT_FORMAT!r} v{EXPORT_FORMAT_VERSION}; {REEXPORT}"
        )
    return meta


class _GlueParts(nn.Module):
    """The detection post-processing and the refinement head, rebuilt from the metadata."""

    def __init__(self, cfg, backbone_channels: list[int], glue_state: dict[str, dict[str, list]]) -> None:
        super().__init__()
        from damcseg_core.models.detection_head import DetectionHead
        from damcseg_core.models.refinement import RefinementHead

        # Only anchors() and postprocess() are used; its conv weights stay in the ONNX graph.
        self.det_head = DetectionHead(backbone_channels, cfg.detection, cfg.num_det_classes)
        self.refinement = RefinementHead(cfg)
        for name, state in glue_state.items():  # "dsaf", "post_path", "crf" (GLUE_MODULES)
            module = getattr(self.refinement, name)
            module.load_state_dict({k: torch.tensor(v, dtype=torch.float32) for k, v in state.items()})
        self.eval()


class OnnxRuntimeModel:
    """An exported DAMCSeg folder run by onnxruntime, usable wherever the PyTorch model is.

    Args:
        path: the folder written by :func:`~damcseg_core.export.export_onnx` (``dense_*.onnx`` and
            ``local.onnx``), or one ``dense_*.onnx`` file inside it (only that subset is loaded).
        providers: onnxruntime execution providers; default :func:`preferred_providers`.
        num_threads: intra-op threads of the CPU provider; default ``torch.get_num_threads()``.
        expected_name: variant the caller needs (e.g. the node's ``model``); another is an error.
        expected_size: ``(H, W)`` the caller will feed; an export for another size is an error.

    Raises:
        ImportError: onnxruntime is not installed (the message names ``pip install -e .[onnx]``).
        FileNotFoundError / OnnxExportError: missing, corrupt, foreign or inconsistent files.
    """

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] | None = None,
        num_threads: int | None = None,
        expected_name: str | None = None,
        expected_size: tuple[int, int] | None = None,
    ) -> None:
        from damcseg_core.config import ConfigError, from_dict
        from damcseg_core.models.config import ModelConfig

        ort = import_onnxruntime()
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"ONNX path {path} does not exist; export it with damcseg-export --checkpoint CKPT --out DIR"
            )
        if path.is_dir():
            dense_files = sorted(path.glob("dense_*.onnx"))
            folder = path
            if not dense_files:
                raise FileNotFoundError(
                    f"ONNX folder {path} holds no dense_*.onnx graphs; export them with "
                    f"damcseg-export --checkpoint CKPT --out {path}"
                )
        else:
            dense_files, folder = [path], path.parent
        local_file = folder / LOCAL_FILE
        if not local_file.is_file():
            raise FileNotFoundError(
                f"{local_file} is missing (the local-path graph every subset needs); {REEXPORT}"
            )
        metas = {f: read_metadata(f) for f in [*dense_files, local_file]}
        first = metas[dense_files[0]]
        for f, meta in metas.items():
            expected_graph = "local" if f == local_file else "dense"
            if meta.get("graph") != expected_graph:
                raise OnnxExportError(
                    f"ONNX file {f} holds a {meta.get('graph')!r} graph, expected {expected_graph!r}"
                )
            if meta["model_name"] != first["model_name"] or meta["model_config"] != first["model_config"]:
                raise OnnxExportError(
                    f"ONNX files {dense_files[0]} and {f} come from different models; "
                    f"export them together with one damcseg-export run"
                )
        self.model_name: str = first["model_name"]
        self.export_size = tuple(first["export_size"])
        if expected_name is not None and self.model_name != expected_name:
            raise OnnxExportError(
                f"ONNX export {path} holds a '{self.model_name}' model, but '{expected_name}' was requested; "
                f"export a {expected_name} checkpoint with damcseg-export or ask for '{self.model_name}'"
            )
        if expected_size is not None and tuple(expected_size) != self.export_size:
            raise OnnxExportError(
                f"ONNX export {path} was made for input size {self.export_size[0]}x{self.export_size[1]}, "
                f"but {expected_size[0]}x{expected_size[1]} was requested; re-export with "
                f"damcseg-export --size {expected_size[0]}x{expected_size[1]}"
            )
        try:
            cfg = from_dict(ModelConfig, first["model_config"])
        except (ConfigError, ValueError, TypeError) as exc:
            raise OnnxExportError(
                f"ONNX export {path} has an invalid model_config ({exc}); {REEXPORT}"
            ) from exc
        # The Predictor resizes frames to config.input_size: use the size the graphs were made for.
        self.config = cfg if tuple(cfg.input_size) == self.export_size else _with_size(cfg, self.export_size)
        self.providers = list(providers) if providers is not None else preferred_providers()
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(num_threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        # The shared post-processing runs in torch right after each graph: spinning onnxruntime
        # workers would keep the cores busy while torch needs them (2 threads, edge, 256x512:
        # 145 ms per frame with spinning, 87 ms without; torch alone 110 ms).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session_options = options

        def session(f: Path):
            try:
                return ort.InferenceSession(str(f), options, providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own exception types
                raise OnnxExportError(f"onnxruntime cannot load {f} ({exc}); {REEXPORT}") from exc

        self._dense: dict[tuple[str, ...], Any] = {}
        self._dense_meta: dict[tuple[str, ...], dict] = {}
        self._dense_names: dict[tuple[str, ...], list[str]] = {}
        for f in dense_files:
            subset = tuple(metas[f]["modalities"])
            if f.name != dense_file_name(subset):
                raise OnnxExportError(
                    f"ONNX file {f} holds the graph of {list(subset)}; do not rename exported files"
                )
            self._dense[subset] = session(f)
            self._dense_meta[subset] = metas[f]
            graph = {o.name for o in self._dense[subset].get_outputs()}
            self._dense_names[subset] = [
                LEGACY_OUTPUT_NAMES.get(n, n) if n not in graph else n for n in DENSE_OUTPUTS
            ] + (["completed_depth"] if "completed_depth" in graph else [])
        self._local = session(local_file)
        self._local_meta = metas[local_file]
        self._parts = _GlueParts(cfg, first["backbone_channels"], first["glue_state"])
        # Exports older than class names in the metadata get the Cityscapes ones (class_info).
        from damcseg_core.checkpoint import class_info

        names, palette = class_info(first)
        self.class_names: tuple[str, ...] = tuple(names)
        self.palette: list[list[int]] | None = palette or None
        self.path = path

    # ------------------------------------------------------------------ nn.Module look-alike
    @property
    def subsets(self) -> tuple[tuple[str, ...], ...]:
        """The modality subsets this export can run."""
        return tuple(self._dense)

    def eval(self) -> OnnxRuntimeModel:
        return self

    def train(self, mode: bool = True) -> OnnxRuntimeModel:
        if mode:
            raise RuntimeError("an ONNX export is inference-only; train the PyTorch model")
        return self

    def to(self, *args: Any, **kwargs: Any) -> OnnxRuntimeModel:
        """No-op (the execution provider decides the device); returns ``self``."""
        return self

    @property
    def training(self) -> bool:
        return False

    @property
    def det_head(self):
        """The detection head whose post-processing (``cfg``) runs on the graph's raw outputs."""
        return self._parts.det_head

    # ------------------------------------------------------------------ inference
    def _run_local(
        self, image: torch.Tensor, p3: torch.Tensor, boxes: list[torch.Tensor], gates: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # Same roi_align calls as LocalPath.forward; the rest is local.onnx.
        meta = self._local_meta
        rois = [b.to(image.dtype) for b in boxes]
        crops = roi_align(
            image, rois, output_size=meta["roi_size"], spatial_scale=1.0, sampling_ratio=2, aligned=True
        )
        ctx = roi_align(
            p3,
            rois,
            output_size=meta["roi_out_size"],
            spatial_scale=1.0 / meta["feature_stride"],
            sampling_ratio=2,
            aligned=True,
        )
        feed = {
            "crops": crops.numpy(),
            "context": ctx.numpy(),
            "gate_inputs": gates.to(torch.float32).numpy(),
        }
        logits, probs = self._local.run(None, feed)
        return torch.from_numpy(logits), torch.from_numpy(probs).mean()

    def run_dense(self, inputs: dict[str, torch.Tensor]):
        """Run only the dense graph: :class:`~damcseg_core.models.outputs.DenseOutputs` (benchmarks)."""
        from damcseg_core.models.outputs import check_inputs

        _, h, w = check_inputs(inputs)
        return self._run_dense(inputs, h, w)

    def _run_dense(self, inputs: dict[str, torch.Tensor], h: int, w: int):
        from damcseg_core.models.outputs import DenseOutputs

        subset = tuple(m for m in MODALITIES if m in inputs)
        if subset not in self._dense:
            have = ", ".join("+".join(s) for s in self._dense) or "none"
            raise OnnxExportError(
                f"no ONNX graph for modality subset {'+'.join(subset)} in {self.path} (exported: {have}); "
                f"re-export with damcseg-export --modalities {','.join(subset)} (or without --modalities for all)"
            )
        meta = self._dense_meta[subset]
        feed = {m: inputs[m].detach().to("cpu", torch.float32).contiguous().numpy() for m in subset}
        outs = dict(
            zip(
                (*DENSE_OUTPUTS, "completed_depth"),
                (torch.from_numpy(o) for o in self._dense[subset].run(self._dense_names[subset], feed)),
            )
        )
        anchors = self._parts.det_head.anchors(
            detection_feature_sizes(h, w, meta["detection_levels"]), torch.device("cpu")
        )
        if anchors.shape[0] != outs["cls_logits"].shape[1]:
            raise OnnxExportError(
                f"{self.path}: the graph gives {outs['cls_logits'].shape[1]} anchors, the config {anchors.shape[0]}; "
                f"{REEXPORT}"
            )
        return DenseOutputs(anchors=anchors, **outs)

    def __call__(self, inputs: dict[str, torch.Tensor]):
        """Detect and segment a batch (batch size 1); returns a ``DamcsegOutput``."""
        from damcseg_core.models.outputs import check_inputs

        _, h, w = check_inputs(inputs)
        subset = tuple(m for m in MODALITIES if m in inputs)
        cpu_inputs = {m: inputs[m].detach().to("cpu", torch.float32) for m in subset}
        batch = {x.shape[0] for x in cpu_inputs.values() if x.dim() == 4}
        if batch - {1}:
            raise ValueError(
                f"the onnxruntime backend runs one frame at a time, got batch size {sorted(batch)}"
            )
        with torch.inference_mode():
            dense = self._run_dense(cpu_inputs, h, w)
            detections = self._parts.det_head.postprocess(
                dense.cls_logits, dense.box_deltas, dense.anchors, (h, w)
            )
            r = self._parts.refinement(dense, detections, cpu_inputs, subset, self._run_local)
        meta = self._dense_meta[subset]
        return r.to_output(dense.omega, subset, tuple(meta["completed"]))

    forward = __call__


def _with_size(cfg, size: tuple[int, int]):
    import dataclasses

    return dataclasses.replace(cfg, input_size=tuple(size))
