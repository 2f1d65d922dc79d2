"""Checkpoints: one file holds everything to resume a run *and* to rebuild the model.

A checkpoint is a ``torch.save`` of a plain dict (tensors, numbers, strings, lists, dicts only,
so that :func:`torch.load` with ``weights_only=True`` reads it without unpickling code):

==================  ===============================================================
``format``          ``"damcseg-checkpoint"`` (how we recognise our files)
``format_version``  ``1``
``model_name``      registered variant, e.g. ``"damcseg_edge"``
``model_config``    ``to_dict(model.config)``; :func:`load_model` rebuilds from it
``model``           the model ``state_dict``
``optimizer``       optimizer ``state_dict`` (or ``None``)
``scheduler``       learning-rate schedule ``state_dict`` (or ``None``)
``step``            optimizer steps done
``best_metric``     best validation metric so far (or ``None``)
``rng``             python / numpy / torch / cuda RNG states, as tensors
``train_config``    the resolved training config as a dict (or ``None``)
``class_names``     names of the segmentation class ids (the model's ``class_names``)
``palette``         ``[K, 3]`` colours of the classes
==================  ===============================================================

Files without ``class_names`` / ``palette`` (older ones) get the Cityscapes train ids.

Writes are atomic: the file is written to a temporary file in the same directory, flushed and
fsync'ed, then ``os.replace``'d over the target, so a run killed mid-write (even with SIGKILL)
leaves the previous checkpoint intact.

Example:
    >>> save_checkpoint("runs/x/last.pt", model, step=100)
    >>> model = load_model("runs/x/last.pt")  # needs nothing else
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from damcseg_core.config import ConfigError, from_dict, to_dict

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "capture_rng_state",
    "class_info",
    "load_checkpoint",
    "load_model",
    "restore_rng_state",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "damcseg-checkpoint"
FORMAT_VERSION = 1
GET_ONE = (
    "use the shipped damcseg_core/weights/damcseg_edge.pt, train one with damcseg-train, "
    "or copy the file again from where it was made"
)
"""How to get a good checkpoint; every load error ends with it."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message says why and what to do."""


# --------------------------------------------------------------------------- RNG state
def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states as tensors, loadable with ``weights_only=True``."""
    version, mt, gauss = random.getstate()
    # The legacy global numpy RNG is what third-party code draws from, so that is what we keep.
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()  # noqa: NPY002
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only where CUDA is available)."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state(  # noqa: NPY002
        (nps["name"], nps["keys"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"], nps["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


# --------------------------------------------------------------------------- class names
def class_info(source: Any) -> tuple[list[str], list[list[int]]]:
    """``(class_names, palette)`` of a model (its attributes) or a checkpoint dict (its keys).

    Either missing: the Cityscapes train ids and palette (what every damcseg variant predicts).
    """
    from damcseg_core.data.classes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

    get = source.get if isinstance(source, dict) else lambda key: getattr(source, key, None)
    names, palette = get("class_names"), get("palette")
    names = [str(n) for n in names] if names is not None else list(CITYSCAPES_CLASSES)
    if palette is None:
        palette = CITYSCAPES_PALETTE.tolist() if len(names) == len(CITYSCAPES_CLASSES) else []
    palette = palette.tolist() if hasattr(palette, "tolist") else [list(map(int, c)) for c in palette]
    return names, palette


# --------------------------------------------------------------------------- save
def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    step: int = 0,
    best_metric: float | None = None,
    train_config: Any = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Atomically write a checkpoint (see module docstring for the keys).

    Args:
        path: target file; its directory is created if needed.
        model: the model (a DDP wrapper is unwrapped); must have ``.config``.
        optimizer: optimizer whose state to keep for resuming.
        scheduler: object with ``state_dict()`` (the LR schedule).
        step: optimizer steps done.
        best_metric: best validation metric so far.
        train_config: training config dataclass or dict, stored as a dict.
        extra: more plain-data entries (e.g. the train loader state).

    Returns:
        The path written.
    """
    net = _unwrap(model)
    cfg = getattr(net, "config", None)
    if cfg is None:
        raise CheckpointError("the model has no .config; build it with damcseg_core.models.build_model")
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "model_name": cfg.name,
        "model_config": to_dict(cfg),
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
        "best_metric": None if best_metric is None else float(best_metric),
        "rng": capture_rng_state(),
        "train_config": to_dict(train_config) if train_config is not None else None,
        **dict(zip(("class_names", "palette"), class_info(net))),
    }
    if extra:
        payload.update(extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # Persist the rename itself (directory entry); not possible on every platform.
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


# --------------------------------------------------------------------------- load
def _what_the_file_is(path: Path) -> str:
    """A short description of a file that is not a readable PyTorch checkpoint."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the weights (run git lfs pull)"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (e.g. Keras weights), not a PyTorch archive"
    if path.suffix == ".onnx" or (head[:1] == b"\x08" and b"onnx" in head.lower()):
        return "an ONNX model, not a PyTorch archive (run it with backend onnxruntime)"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "a safetensors file, not a PyTorch archive"
    if head[:1] == b"\x80":
        return "a pickle that breaks off or holds data torch cannot read (corrupt or truncated)"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return f"a text file (it starts with {head[:24].decode('ascii', 'replace')!r}), not a PyTorch archive"
    return f"not a PyTorch archive (it starts with bytes {head[:8].hex(' ')})"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated, corrupt, holds pickled code, or is not a
            damcseg checkpoint; the message names the file and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (train one with damcseg-train, or pass the path of an existing .pt file)"
        )
    with open(path, "rb") as f:
        head = f.read(4)
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); the run that wrote it did not finish")
    if head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"checkpoint {path} is truncated (its zip directory is missing, {path.stat().st_size} bytes); "
            "the copy or the run that wrote it was cut short; copy it again or use an earlier checkpoint"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc):
            raise CheckpointError(
                f"checkpoint {path} contains pickled Python code or objects, which damcseg refuses to load "
                "(unpickling can run arbitrary code); re-save it as plain tensors with "
                "damcseg_core.checkpoint.save_checkpoint"
            ) from None
        # torch's own text advises weights_only=False (running the file's code): never repeat it.
        raise CheckpointError(f"checkpoint {path} is corrupt: {_what_the_file_is(path)}; {GET_ONE}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a PyTorch file: {_what_the_file_is(path)} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); {GET_ONE}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        keys = sorted(map(str, ckpt))[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path} is not a damcseg checkpoint (expected 'format': '{CHECKPOINT_FORMAT}'; found {keys}); "
            "pass a file written by damcseg-train"
        )
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format_version {ckpt['format_version']}, newer than this damcseg "
            f"({FORMAT_VERSION}); upgrade damcseg"
        )
    missing = [k for k in ("model_name", "model_config", "model") if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; it is incomplete, use another checkpoint")
    return ckpt


# Model-config fields added after checkpoints were shipped: a config written before a field
# existed gets the value that reproduces the model it was trained as (new models get the
# dataclass default). Issue #16: the ReLU MCN output, the completion flag of the attention and its sign.
LEGACY_MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "completion": {"output": "linear"},
    "fusion": {"completion_flag": False, "completion_offset": "free"},
}


def legacy_model_config(model_config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored ``model_config`` with :data:`LEGACY_MODEL_DEFAULTS` filled in where absent."""
    out = dict(model_config)
    for section, defaults in LEGACY_MODEL_DEFAULTS.items():
        stored = out.get(section)
        if isinstance(stored, dict):
            out[section] = {**defaults, **stored}
        elif stored is None:
            out[section] = dict(defaults)
    return out


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    expected_name: str | None = None,
    eval_mode: bool = True,
) -> torch.nn.Module:
    """Rebuild a model from a checkpoint alone (config + weights).

    Args:
        path: checkpoint file.
        device: where to put the model.
        expected_name: if given, the variant the caller wants (e.g. ``"damcseg_edge"``).
        eval_mode: return the model in eval mode (default) or train mode.

    Raises:
        FileNotFoundError / CheckpointError: see :func:`load_checkpoint`; also a wrong variant
            or weights that do not fit the stored config.
    """
    from damcseg_core.models import ModelConfig, build_model_from_config

    ckpt = load_checkpoint(path, map_location="cpu")
    name = ckpt["model_name"]
    if expected_name is not None and name != expected_name:
        raise CheckpointError(
            f"checkpoint {path} holds a '{name}' model, but '{expected_name}' was requested; "
            f"pass a {expected_name} checkpoint or ask for '{name}'"
        )
    try:
        cfg = from_dict(ModelConfig, legacy_model_config(ckpt["model_config"]), path="model_config")
    except ConfigError as exc:
        raise CheckpointError(f"checkpoint {path} has an invalid model_config: {exc}") from exc
    model = build_model_from_config(cfg)
    fix = "the file was written by a different version of the model or its model_config was edited"
    try:
        result = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(
            f"checkpoint {path}: the weights do not fit the '{name}' model built from its model_config "
            f"({str(exc).splitlines()[-1].strip()[:300]}); {fix}"
        ) from exc
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint {path}: the weights do not fit the '{name}' model built from its model_config "
            f"(missing {list(result.missing_keys)[:5]}, unexpected {list(result.unexpected_keys)[:5]}); {fix}"
        )
    # Class names travel with the model: the Predictor, the ONNX export and the node read them.
    model.class_names, palette = (tuple(v) for v in class_info(ckpt))
    model.palette = [list(c) for c in palette] or None
    model.to(device)
    return model.eval() if eval_mode else model.train()
