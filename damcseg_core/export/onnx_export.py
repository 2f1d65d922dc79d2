"""Export DAMCSeg's weight-bearing networks to ONNX (one dense graph per modality subset).

What goes into the graphs and what stays in the shared post-processing
(:class:`damcseg_core.models.refinement.RefinementHead`) is described in ``docs/deployment.md``:

* ``dense_<subset>.onnx`` (one per modality subset, e.g. ``dense_rgb+depth.onnx``): inputs are
  the present modalities in canonical units (``[1,C,H,W]``, H and W dynamic multiples of 32);
  the graph runs normaliser, encoders, MCN (for the absent modalities), modal attention,
  backbone, the raw detection head and the global path, and returns :class:`DenseOutputs`
  tensors (anchors aside). One graph per subset keeps the missing-modality behaviour exact: the
  MCN input layout and presence vector are fixed per subset.
* ``local.onnx`` (shared by every subset): the local path's sub-network, merge and gated branch
  heads on a dynamic number of ROIs. Inputs ``crops [N,6,R,R]``, ``context [N,C,r,r]``
  (both ``torchvision.ops.roi_align`` in the shared glue) and ``gate_inputs [N,5]``. The eval
  gate (a branch is skipped for ROIs whose gate probability is below the threshold) is exported
  as a 0/1 mask on every branch's contribution, which gives the same sum.

Every file carries a JSON blob under the ``metadata_props`` key ``damcseg`` (variant, model
config, modality subset, glue parameters, class names and palette), so the folder is
self-contained.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from itertools import combinations
from pathlib import Path

import torch
from torch import nn

from damcseg_core import MODALITIES
from damcseg_core.config import to_dict
from damcseg_core.models.refinement import REFINEMENT_MODULES

__all__ = [
    "ALL_SUBSETS",
    "DENSE_OUTPUTS",
    "EXPORT_FORMAT",
    "EXPORT_FORMAT_VERSION",
    "LOCAL_FILE",
    "METADATA_KEY",
    "dense_file_name",
    "detection_feature_sizes",
    "export_onnx",
    "parse_subset",
]

EXPORT_FORMAT = "damcseg-onnx"
EXPORT_FORMAT_VERSION = 1
METADATA_KEY = "damcseg"
LOCAL_FILE = "local.onnx"
OPSET = 17
DENSE_OUTPUTS = (
    "cls_logits",
    "box_deltas",
    "global_logits",
    "seg_feature",
    "image_stack",
    "omega",
)
LOCAL_INPUTS = ("crops", "context", "gate_inputs")
LOCAL_OUTPUTS = ("roi_logits", "gate_probs")
# Every non-empty subset of MODALITIES, in MODALITIES order, largest first.
ALL_SUBSETS: tuple[tuple[str, ...], ...] = tuple(
    c for n in range(len(MODALITIES), 0, -1) for c in combinations(MODALITIES, n)
)
# Modules of the refinement head whose (few, scalar) parameters travel in the metadata.
GLUE_MODULES = REFINEMENT_MODULES


def parse_subset(spec: str | Iterable[str]) -> tuple[str, ...]:
    """``"depth,rgb"`` / ``"rgb+depth"`` / ``("rgb", "depth")`` -> ``("rgb", "depth")`` (MODALITIES order).

    Raises:
        ValueError: empty, unknown or repeated names.
    """
    names = [n.strip() for n in spec.replace("+", ",").split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    unknown = sorted(set(names) - set(MODALITIES))
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(
            f"invalid modality subset {spec!r}: give distinct names from {list(MODALITIES)}, e.g. rgb,depth"
        )
    return tuple(m for m in MODALITIES if m in names)


def dense_output_names(dense) -> tuple[str, ...]:
    """The outputs of a dense graph: :data:`DENSE_OUTPUTS`, and ``completed_depth`` where the
    model's depth image completer fills in a missing depth (``DenseOutputs.completed_depth``)."""
    return DENSE_OUTPUTS + (("completed_depth",) if dense.completed_depth is not None else ())


def dense_file_name(subset: Sequence[str]) -> str:
    """File name of the dense graph of a modality subset, e.g. ``dense_rgb+thermal.onnx``."""
    return f"dense_{'+'.join(parse_subset(subset))}.onnx"


class _DenseGraph(nn.Module):
    """Forward of the exported dense graph: modality tensors -> :data:`DENSE_OUTPUTS`."""

    def __init__(self, model: nn.Module, subset: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.subset = subset

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        inputs = dict(zip(self.subset, tensors))
        dense = self.model.forward_dense(self.model.forward_features(inputs), inputs)
        return tuple(getattr(dense, name) for name in dense_output_names(dense))


class _LocalGraph(nn.Module):
    """Forward of the exported local graph (mirrors ``LocalPath.forward`` after its ``roi_align``
    and ``LocalBranches.forward`` in eval mode, with the gate as a 0/1 mask)."""

    def __init__(self, local_path: nn.Module) -> None:
        super().__init__()
        self.local_path = local_path

    def forward(
        self, crops: torch.Tensor, context: torch.Tensor, gate_inputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from damcseg_core.models.branch_gating import BRANCH_NAMES

        lp = self.local_path
        feats = lp.merge(torch.cat([lp.trunk(crops)[-1], context], dim=1))
        heads = lp.branches
        probs = torch.sigmoid(heads.gate(gate_inputs))
        on = probs * (probs >= heads.cfg.threshold).to(probs.dtype)
        base = heads.base(feats)
        logits = base
        for k, name in enumerate(BRANCH_NAMES):
            logits = logits + heads.branches[name](feats, base) * on[:, k, None, None, None]
        return logits, probs


def _glue_state(model: nn.Module) -> dict[str, dict[str, list]]:
    out: dict[str, dict[str, list]] = {}
    for name in GLUE_MODULES:
        module = getattr(model.refinement, name)
        if module is not None:
            out[name] = {k: v.detach().cpu().float().tolist() for k, v in module.state_dict().items()}
    return out


def _metadata(model: nn.Module, name: str | None, size: tuple[int, int], **extra) -> dict:
    from damcseg_core.checkpoint import class_info
    from damcseg_core.models.encoders import FEATURE_STRIDE

    lp = model.local_path
    class_names, palette = class_info(model)
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "model_name": name,
        "model_config": to_dict(model.config),
        "export_size": list(size),
        "backbone_channels": list(model.backbone.channels),
        "roi_size": lp.roi_size,
        "roi_out_size": lp.out_size,
        "feature_stride": FEATURE_STRIDE,
        "glue_state": _glue_state(model),
        "class_names": class_names,
        "palette": palette,
        "torch_version": torch.__version__,
        **extra,
    }


def _onnx_export(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]],
    metadata: dict,
) -> None:
    import onnx

    # A fresh wrapper module is in train mode: without eval() the tracer's run would update the
    # BatchNorm running statistics of the caller's model.
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints from shapes
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
        )
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    proto.producer_name = "damcseg-export"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def export_onnx(
    model: nn.Module,
    out_dir: str | Path,
    size: tuple[int, int] | None = None,
    modalities: Iterable[Sequence[str] | str] | None = None,
    model_name: str | None = None,
) -> list[Path]:
    """Export ``model`` to a folder of ONNX graphs (see the module docstring).

    Args:
        model: a :class:`~damcseg_core.models.DAMCSeg` (put in eval mode; moved to CPU float32 for export).
        out_dir: folder to write (created; existing files of the same names are replaced).
        size: ``(H, W)`` of the example inputs, multiples of 32 (default: ``model.config.input_size``).
            The graphs accept any multiple of 32; this is the size the Predictor feeds by default.
        modalities: subsets to export (each a name sequence or ``"rgb,depth"``); default every
            non-empty subset (7 graphs).
        model_name: the registered variant (stored and checked at load); default from the config.

    Returns:
        Paths written: the dense graphs (in the order asked) followed by ``local.onnx``.

    Raises:
        ValueError: a size that is not a multiple of 32, or an invalid subset.
    """
    from damcseg_core.models.damcseg import DAMCSeg

    if not isinstance(model, DAMCSeg):
        raise TypeError(f"export_onnx needs a DAMCSeg model, got {type(model).__name__}")
    size = tuple(int(v) for v in (size or model.config.input_size))
    if len(size) != 2 or min(size) < 32 or size[0] % 32 or size[1] % 32:
        raise ValueError(f"size must be HxW multiples of 32, got {size}")
    subsets = ALL_SUBSETS if modalities is None else tuple(parse_subset(s) for s in modalities)
    subsets = tuple(dict.fromkeys(subsets))
    if not subsets:
        raise ValueError("modalities: give at least one subset")
    name = model_name or getattr(model.config, "name", None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model = model.cpu().float().eval()
    channels = {"rgb": 3, "depth": 1, "thermal": 1}
    h, w = size
    gen = torch.Generator().manual_seed(0)
    written = []
    try:
        with torch.no_grad():
            for subset in subsets:
                example = {m: torch.rand(1, channels[m], h, w, generator=gen) for m in subset}
                if "depth" in example:
                    example["depth"] = example["depth"] * model.config.normalization.max_depth
                feats = model.forward_features(example)
                dense = model.forward_dense(feats, example)
                levels = model.det_head.levels
                meta = _metadata(
                    model,
                    name,
                    size,
                    graph="dense",
                    modalities=list(subset),
                    completed=list(feats.completed),
                    input_names=list(subset),
                    output_names=list(dense_output_names(dense)),
                    detection_levels=list(levels),
                    num_anchors=int(dense.anchors.shape[0]),
                )
                path = out_dir / dense_file_name(subset)
                axes = {m: {2: "height", 3: "width"} for m in subset}
                axes.update({k: {1: "anchors"} for k in ("cls_logits", "box_deltas")})
                names = dense_output_names(dense)
                for k in ("global_logits", "seg_feature", "image_stack", "completed_depth"):
                    if k in names:
                        axes[k] = {2: f"{k}_height", 3: f"{k}_width"}
                _onnx_export(
                    _DenseGraph(model, subset).eval(),
                    tuple(example[m] for m in subset),
                    path,
                    subset,
                    names,
                    axes,
                    meta,
                )
                written.append(path)
            lp = model.local_path
            n = 2
            crops = torch.rand(n, dense.image_stack.shape[1], lp.roi_size, lp.roi_size, generator=gen)
            ctx = torch.rand(n, dense.seg_feature.shape[1], lp.out_size, lp.out_size, generator=gen)
            gates = torch.rand(n, 5, generator=gen)
            meta = _metadata(
                model,
                name,
                size,
                graph="local",
                input_names=list(LOCAL_INPUTS),
                output_names=list(LOCAL_OUTPUTS),
            )
            path = out_dir / LOCAL_FILE
            axes = {k: {0: "rois"} for k in (*LOCAL_INPUTS, *LOCAL_OUTPUTS)}
            _onnx_export(
                _LocalGraph(lp).eval(), (crops, ctx, gates), path, LOCAL_INPUTS, LOCAL_OUTPUTS, axes, meta
            )
            written.append(path)
    finally:
        model.train(was_training)
    return written


def detection_feature_sizes(height: int, width: int, levels: Sequence[int]) -> list[tuple[int, int]]:
    """BiFPN level sizes for an input of ``height x width`` (P6/P7 are stride-2, pad-1 max pools)."""
    return [(math.ceil(height / 2**lv), math.ceil(width / 2**lv)) for lv in levels]
