"""``load_predictor``: the one way every tool gets a :class:`Predictor` (node, demo, eval, benchmarks).

Which model to load, and with which back-end, is decided here and nowhere else:

* ``backend="torch"``: an explicit ``checkpoint`` (a path that must exist, or the bare name of a
  checkpoint shipped in ``damcseg_core/weights``, e.g. ``damcseg_edge_fast``; never silently
  replaced by random weights), else ``model`` (a registered variant with RANDOM weights, for tests
  and bring-up, or a model object), else the shipped default checkpoint (:func:`default_checkpoint`).
* ``backend="onnxruntime"``: the graphs in ``onnx_path`` (``damcseg-export``), checked against
  the variant and input size that ``checkpoint`` / ``model`` / the default checkpoint name, and
  against the modality subsets the caller will feed.

``detection`` overrides the model's detection post-processing (:data:`DETECTION_KEYS`) with
``dataclasses.replace``, on the PyTorch model's and the ONNX export's detection head alike.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from damcseg_core import MODALITIES
from damcseg_core.inference.predictor import Predictor

__all__ = [
    "BACKENDS",
    "DEFAULT_CHECKPOINT_NAME",
    "DETECTION_KEYS",
    "default_checkpoint",
    "load_predictor",
    "packaged_checkpoints",
    "release_memory",
    "resolve_model_source",
]

BACKENDS = ("torch", "onnxruntime")
DEFAULT_CHECKPOINT_NAME = "damcseg_edge.pt"
DETECTION_KEYS = ("score_threshold", "max_detections", "class_agnostic_nms")
"""Keys of ``load_predictor(detection=...)``: fields of the model's ``DetectionConfig``."""

_log = logging.getLogger("damcseg_core.inference")


def default_checkpoint() -> Path:
    """The checkpoint shipped inside the installed package (``damcseg_core/weights``).

    Found through ``importlib.resources``, so it is right wherever the package is installed; the
    file may be absent (a checkout without weights): callers check ``is_file()``.
    """
    return Path(str(resources.files("damcseg_core") / "weights" / DEFAULT_CHECKPOINT_NAME))


def packaged_checkpoints() -> dict[str, Path]:
    """The checkpoints shipped inside the installed package, by name (file stem), e.g.
    ``{"damcseg_edge": .../damcseg_edge.pt, "damcseg_edge_fast": ...}``; empty without weights."""
    folder = default_checkpoint().parent
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.pt")) if p.is_file()}


def _packaged(name: str) -> Path | None:
    """``name`` (``damcseg_edge_fast`` or ``damcseg_edge_fast.pt``, no folder) as a shipped checkpoint."""
    if not name or Path(name).name != name:
        return None
    return packaged_checkpoints().get(name[:-3] if name.endswith(".pt") else name)


def resolve_model_source(
    checkpoint: str | Path | None, model: str | None, default: Path | None = None
) -> tuple[str, str]:
    """Decide what to load: ``("checkpoint", path)`` or ``("model", variant)``.

    Explicit settings win over the package default: an explicit ``checkpoint`` must be an existing
    file or the name of a shipped one (:func:`packaged_checkpoints`), then an explicit ``model``
    (random init), then ``default`` (:func:`default_checkpoint`) if present.

    Raises:
        FileNotFoundError: ``checkpoint`` names a missing file.
        ValueError: nothing to load; the message names the settings to give.
    """
    default = default_checkpoint() if default is None else Path(default)
    if checkpoint:
        if Path(checkpoint).is_file():
            return "checkpoint", str(checkpoint)
        shipped = _packaged(str(checkpoint))
        if shipped is not None:
            return "checkpoint", str(shipped)
        names = ", ".join(packaged_checkpoints()) or "none in this install"
        raise FileNotFoundError(
            f"parameter 'checkpoint' names a missing file: {checkpoint} (checkpoint not found: train "
            "one with damcseg-train, pass the path of an existing .pt file, or the name of a shipped "
            f"checkpoint: {names})"
        )
    if model:
        return "model", model
    if default.is_file():
        return "checkpoint", str(default)
    raise ValueError(
        f"no model to load: the default checkpoint {default} does not exist. Set parameter 'checkpoint' "
        "to a trained .pt file, or (tests / bring-up only, random weights) 'model' to a variant such as "
        "damcseg_tiny"
    )


def _onnx_expectations(
    checkpoint: str | Path | None, model: str | None
) -> tuple[str | None, tuple[int, int] | None]:
    """Variant and input size an ONNX export must have for ``checkpoint`` / ``model``.

    An explicit ``checkpoint`` wins, then ``model``; with neither, the default checkpoint if
    present, else no expectation (the export is taken as it is).
    """
    try:
        kind, source = resolve_model_source(checkpoint, model)
    except ValueError:
        return None, None
    if kind == "checkpoint":
        from damcseg_core.checkpoint import load_checkpoint

        ckpt = load_checkpoint(source)
        size = ckpt["model_config"].get("input_size")
        return ckpt["model_name"], (tuple(int(v) for v in size) if size else None)
    from damcseg_core.models import get_config

    return source, tuple(get_config(source).input_size)


def _apply_detection(target: Any, detection: Mapping[str, Any] | None, warn: Callable[[str], None]) -> None:
    """Replace ``target.det_head.cfg`` by a copy with the ``detection`` overrides."""
    if not detection:
        return
    unknown = sorted(set(detection) - set(DETECTION_KEYS))
    if unknown:
        raise ValueError(f"unknown detection setting(s) {unknown}; valid keys are {list(DETECTION_KEYS)}")
    head = target.det_head
    fields = {f.name for f in dataclasses.fields(head.cfg)}
    skipped = sorted(k for k in detection if k not in fields)
    if skipped:
        warn(f"detection setting(s) {skipped} not supported by this damcseg_core's DetectionConfig; ignored")
    head.cfg = dataclasses.replace(head.cfg, **{k: v for k, v in detection.items() if k in fields})


def _check_modalities(modalities: Sequence[str] | None) -> tuple[str, ...] | None:
    if modalities is None:
        return None
    chosen = tuple(modalities)
    bad = sorted(set(chosen) - set(MODALITIES))
    if not chosen or bad:
        raise ValueError(f"modalities must be a non-empty subset of {list(MODALITIES)}, got {list(chosen)}")
    return tuple(m for m in MODALITIES if m in chosen)


def load_predictor(
    backend: str = "torch",
    *,
    checkpoint: str | Path | None = None,
    model: str | torch.nn.Module | None = None,
    onnx_path: str | Path | None = None,
    device: str | torch.device = "cpu",
    modalities: Sequence[str] | None = None,
    detection: Mapping[str, Any] | None = None,
    min_confidence: float = 0.0,
    expected_name: str | None = None,
    seed: int = 0,
    optimize: bool = True,
    warn: Callable[[str], None] | None = None,
) -> Predictor:
    """A ready :class:`Predictor` (rules in the module docstring).

    Args:
        backend: ``"torch"`` or ``"onnxruntime"``.
        checkpoint: a damcseg checkpoint (``.pt``); for onnxruntime, what the export must match.
        model: a registered variant name (RANDOM weights, seeded by ``seed``) or a model object
            (torch backend only; the detection overrides are applied to it in place).
        onnx_path: onnxruntime only: the folder written by ``damcseg-export`` or one graph in it.
        device: torch device (the onnxruntime execution provider picks its own).
        modalities: the sensors that will be fed; onnxruntime checks that graphs exist for them.
        detection: overrides of the detection post-processing, keys from :data:`DETECTION_KEYS`.
        min_confidence: see :class:`Predictor`.
        expected_name: the checkpoint must hold this variant (e.g. ``"damcseg_edge"``).
        seed: seed of a random-init variant.
        optimize: see :class:`Predictor`.
        warn: receives warnings (random weights, subsets an export lacks); default ``logging``.

    Raises:
        ValueError: unknown backend, detection key or modality; nothing to load; an export
            without a graph for ``modalities``.
        FileNotFoundError / CheckpointError / OnnxExportError: missing, corrupt or mismatching
            files (the messages say how to get a good one).
        RuntimeError: a CUDA device without CUDA.
    """
    warn = warn or _log.warning
    chosen = _check_modalities(modalities)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got '{backend}'")
    if backend == "onnxruntime":
        return _load_onnx(onnx_path, checkpoint, model, chosen, detection, min_confidence, warn)
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device} but CUDA is not available; set device:=cpu")
    if isinstance(model, torch.nn.Module):
        _apply_detection(model, detection, warn)
        return Predictor(model, device, min_confidence=min_confidence, optimize=optimize)
    kind, source = resolve_model_source(checkpoint, model)
    if kind == "checkpoint":
        from damcseg_core.checkpoint import load_model

        net = load_model(source, device, expected_name=expected_name)
        label = Path(source).name
    else:
        from damcseg_core.models import build_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_model(source)
        label = f"{source} (random init)"
        warn(
            f"NO CHECKPOINT: running '{source}' with RANDOM weights; outputs are meaningless "
            "(tests / bring-up only). Set parameter 'checkpoint' for real use."
        )
    _apply_detection(net, detection, warn)
    return Predictor(net, device, min_confidence=min_confidence, optimize=optimize, label=label)


def _load_onnx(
    onnx_path: str | Path | None,
    checkpoint: str | Path | None,
    model: str | torch.nn.Module | None,
    modalities: tuple[str, ...] | None,
    detection: Mapping[str, Any] | None,
    min_confidence: float,
    warn: Callable[[str], None],
) -> Predictor:
    from damcseg_core.export.onnx_export import ALL_SUBSETS
    from damcseg_core.export.runtime import OnnxRuntimeModel

    if not onnx_path:
        raise ValueError(
            "backend:=onnxruntime needs parameter 'onnx_path': the folder written by "
            "damcseg-export --checkpoint CKPT --out DIR (docs/deployment.md)"
        )
    if isinstance(model, torch.nn.Module):
        model = model.config.name
    expected_name, expected_size = _onnx_expectations(checkpoint, model)
    ort_model = OnnxRuntimeModel(onnx_path, expected_name=expected_name, expected_size=expected_size)
    if modalities is not None:
        if modalities not in ort_model.subsets:
            raise ValueError(
                f"onnx_path {onnx_path} has no graph for the enabled inputs {'+'.join(modalities)}; re-export "
                f"with damcseg-export --modalities {','.join(modalities)} (or without --modalities)"
            )
        lacking = [s for s in ALL_SUBSETS if set(s) <= set(modalities) and s not in ort_model.subsets]
        if lacking:
            warn(
                "frames where only "
                + " / ".join("+".join(s) for s in lacking)
                + " arrive will fail (reported on /diagnostics): those subsets were not exported"
            )
    _apply_detection(ort_model, detection, warn)
    # Graph inputs/outputs are host tensors; the execution provider picks the device.
    label = f"{Path(onnx_path).name} ({ort_model.model_name}, onnxruntime)"
    return Predictor(ort_model, device="cpu", min_confidence=min_confidence, label=label)


def release_memory(device: str) -> None:
    """After the last reference to a predictor is dropped: collect it now, and hand a CUDA
    device's cached blocks back to the driver (another process on the GPU can use them)."""
    gc.collect()
    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
