"""Build any dataset from one spec string, as given on command lines and in configs.

A spec is ``kind:options`` where options are comma-separated ``key=value`` pairs; file-based kinds
take their root path as the first, bare option::

    synthetic:frames=200,size=256x512,seed=1,conditions=day+night
    synthetic:frames=200,depth=mix,lidar_fraction=0.5,thermal=realistic   (sensor models, default ideal)
    synthetic:frames=4000,size=256x512,seed=2,cache=runs/cache/s2   (render once, then memory-map)
    synthetic-folder:/data/synth_run3
    synthetic-packed:runs/cache/s2
    cityscapes:/data/cityscapes,split=val,size=512x1024
    kitti360:/data/KITTI-360,split=val
    mfnet:/data/MFNet,split=test_night
    darkzurich:/data/Dark_Zurich,split=val
    deliver:/data/DELIVER,split=val,conditions=fog+night
    bag:/data/bags/drive_01,slop_s=0.02

Values are converted by the option's declared type: ``HxW`` for sizes, ``a+b`` for lists,
``true``/``false``, numbers, ``none``. Keyword arguments of :func:`build_dataset` override or add
options with already-typed values. Unknown kinds and options fail with the valid ones listed.

``synthetic`` also takes ``cache=DIR`` (and ``cache_workers=N``, rendering processes, default one
per core): the scenes are rendered once into a packed cache at ``DIR`` (relative paths are relative
to the working directory) and memory-mapped from then on; samples are identical to the uncached
ones. A ``DIR`` holding another spec's scenes is an error, never reused
(:mod:`damcseg_core.data.synthetic.packed`).
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Callable
from typing import Any

from damcseg_core.config import ConfigError, from_dict
from damcseg_core.data.io_utils import parse_size

__all__ = ["DATASET_KINDS", "BagConfig", "build_dataset", "parse_spec"]


@dataclasses.dataclass
class BagConfig:
    """Options of the ``bag:`` kind (:class:`damcseg_core.data.rosbag_io.BagDataset`)."""

    path: str = ""  # rosbag2 directory (sqlite3 or mcap)
    slop_s: float = 0.01  # largest stamp difference inside one frame, seconds
    size: tuple[int, int] | None = None  # output (H, W); None keeps the recorded size


@dataclasses.dataclass(frozen=True)
class _Kind:
    module: str  # module holding the dataset
    config: str  # config dataclass name in that module ("" = BagConfig here)
    build: str  # dataset class (with from_config) or factory name in that module
    positional: str | None  # option a bare first value fills (root / path), None if none


DATASET_KINDS: dict[str, _Kind] = {
    "synthetic": _Kind("damcseg_core.data.synthetic", "SyntheticConfig", "SyntheticDataset", None),
    "synthetic-folder": _Kind(
        "damcseg_core.data.synthetic", "SyntheticFolderConfig", "SyntheticFolderDataset", "root"
    ),
    "cityscapes": _Kind("damcseg_core.data.cityscapes", "CityscapesConfig", "CityscapesDataset", "root"),
    "kitti360": _Kind("damcseg_core.data.kitti360", "Kitti360Config", "Kitti360Dataset", "root"),
    "mfnet": _Kind("damcseg_core.data.mfnet", "MFNetConfig", "MFNetDataset", "root"),
    "darkzurich": _Kind("damcseg_core.data.dark_zurich", "DarkZurichConfig", "DarkZurichDataset", "root"),
    "deliver": _Kind("damcseg_core.data.deliver", "DeliverConfig", "DeliverDataset", "root"),
    "bag": _Kind("damcseg_core.data.rosbag_io", "", "BagDataset", "path"),
    "synthetic-packed": _Kind(
        "damcseg_core.data.synthetic", "SyntheticPackedConfig", "SyntheticPackedDataset", "root"
    ),
}
"""Spec kind -> where its config and dataset live."""

_SYNTHETIC_CACHE_OPTIONS = {"cache": str, "cache_workers": int}
"""Options of the ``synthetic`` kind that pick where its scenes come from, not what they are."""


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """Split ``kind:first,key=value,...`` into ``(kind, bare first value or None, options)``.

    Raises:
        ConfigError: No kind, an unknown kind, a repeated key or a malformed option.
    """
    kind, sep, rest = spec.partition(":")
    kind = kind.strip()
    if kind not in DATASET_KINDS:
        raise ConfigError(
            f"unknown dataset kind {kind!r} in spec {spec!r}; valid kinds: {', '.join(DATASET_KINDS)} "
            "(e.g. cityscapes:/data/cityscapes,split=val)"
        )
    positional = None
    options: dict[str, str] = {}
    items = [p for p in rest.split(",")] if sep and rest else []
    for i, item in enumerate(items):
        if "=" not in item:
            if i == 0 and item.strip():
                positional = item.strip()
                continue
            raise ConfigError(f"dataset option {item!r} in {spec!r} must look like key=value")
        key, value = (s.strip() for s in item.split("=", 1))
        if not key:
            raise ConfigError(f"dataset option {item!r} in {spec!r} has an empty key")
        if key in options:
            raise ConfigError(f"dataset option {key!r} given twice in {spec!r}")
        options[key] = value
    return kind, positional, options


def _convert(tp: Any, text: str, key: str) -> Any:
    """Turn an option's text into the field type ``tp`` (from_dict then checks the result)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null", "") and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], text, key) if len(inner) == 1 else text
    if origin in (tuple, list):
        if args == (int, int):  # sizes
            try:
                return parse_size(text)
            except ValueError as exc:
                raise ConfigError(f"dataset option {key}: {exc}") from exc
        item = args[0] if args else str
        return [_convert(item, part, key) for part in text.split("+") if part]
    if tp is bool:
        low = text.lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"dataset option {key} must be true or false, got {text!r}")
    if tp in (int, float):
        try:
            return tp(text)
        except ValueError:
            raise ConfigError(
                f"dataset option {key} must be {'an integer' if tp is int else 'a number'}, got {text!r}"
            ) from None
    return text


def _resolve(kind: str) -> tuple[type, Callable[[Any], Any]]:
    entry = DATASET_KINDS[kind]
    try:
        module = importlib.import_module(entry.module)
    except ImportError as exc:
        raise ConfigError(
            f"dataset kind {kind!r} needs {entry.module}, which failed to import: {exc}"
        ) from exc
    config_cls = BagConfig if not entry.config else getattr(module, entry.config, None)
    target = getattr(module, entry.build, None)
    if config_cls is None or target is None:
        raise ConfigError(
            f"dataset kind {kind!r}: {entry.module} lacks {entry.config or 'BagConfig'}/{entry.build}"
        )
    if kind == "bag":
        return config_cls, lambda cfg: target(cfg.path, slop_s=cfg.slop_s, size=cfg.size)
    return config_cls, target.from_config


def build_dataset(spec: str, **overrides: Any) -> Any:
    """Build the dataset a spec string names (module docstring lists the kinds).

    Args:
        spec: ``kind:options`` string.
        **overrides: Typed option values that replace or add to those of the spec.

    Raises:
        ConfigError: Unknown kind (valid kinds listed), unknown option (valid options listed),
            or a value of the wrong type.
    """
    kind, positional, options = parse_spec(spec)
    entry = DATASET_KINDS[kind]
    if positional is not None:
        if entry.positional is None:
            raise ConfigError(
                f"dataset kind {kind!r} takes only key=value options, got bare value {positional!r}"
            )
        options = {entry.positional: positional, **options}
    config_cls, build = _resolve(kind)
    hints = typing.get_type_hints(config_cls)
    fields = {f.name for f in dataclasses.fields(config_cls)}
    extra = _SYNTHETIC_CACHE_OPTIONS if kind == "synthetic" else {}
    data: dict[str, Any] = {}
    source: dict[str, Any] = {}
    for key, text in options.items():
        if key in extra:
            source[key] = _convert(extra[key], text, key)
            continue
        if key not in fields:
            raise ConfigError(
                f"unknown option {key!r} for dataset kind {kind!r}; valid options: "
                f"{', '.join(sorted(fields | set(extra)))}"
            )
        data[key] = _convert(hints[key], text, key)
    source.update({k: overrides.pop(k) for k in list(overrides) if k in extra})
    data.update(overrides)
    try:
        cfg = from_dict(config_cls, data, path=kind)
    except ConfigError as exc:
        raise ConfigError(f"dataset spec {spec!r}: {exc}") from exc
    if entry.positional and not getattr(cfg, entry.positional):
        raise ConfigError(f"dataset kind {kind!r} needs a {entry.positional}: {kind}:/path/to/data")
    if source.get("cache"):
        from damcseg_core.data.synthetic.packed import open_or_build_packed

        return open_or_build_packed(cfg, source["cache"], workers=source.get("cache_workers", 0))
    if "cache_workers" in source:
        raise ConfigError(f"dataset spec {spec!r}: cache_workers needs cache=DIR (the packed cache to build)")
    return build(cfg)
