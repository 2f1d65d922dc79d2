"""Pre-rendered synthetic scenes in one packed, memory-mapped cache (render once, train many epochs).

Rendering a 256x512 scene of :class:`~damcseg_core.data.synthetic.SyntheticDataset` costs about
80 ms of CPU; a training run draws every scene many times. The packed cache renders each of the
``N`` scenes once (in parallel processes) into flat ``.npy`` arrays that are memory-mapped on
read, so a sample costs a page-cache copy instead of a render. A sample read back is *identical*
(same keys, dtypes and values, ``torch.equal``) to the one ``SyntheticDataset`` returns for the
same spec and index.

Layout of a cache folder ``DIR``::

    DIR/meta.json       {"format": "damcseg-synthetic-packed/1", "spec": {frames, size, seed,
                         conditions, crowd, depth, thermal, lidar_fraction}, "frames", "size",
                         "arrays": {name: {dtype, shape}}, "checksum": "sha256:...", "generator"}
    DIR/rgb.npy         uint8   [N, H, W, 3]  RGB order
    DIR/depth.npy       float32 [N, H, W]     metres, 0 = invalid (exactly the sample's depth)
    DIR/thermal.npy     uint16  [N, H, W]     radiometric counts (100 * kelvin); the sample's thermal
                                              is counts / 65535 clipped to [0, 1], as make_sample does
                                              (half the bytes of float32, bit-identical result)
    DIR/semantic.npy    uint8   [N, H, W]     Cityscapes train ids, 255 = ignore
    DIR/instance.npy    int16   [N, H, W]     0 = none, k = object row k-1 of the frame
    DIR/objects.npz     per-frame objects: ``offsets`` [N+1] into ``boxes`` [M,4] float32,
                        ``labels`` [M] int64, ``occlusion`` [M] float32, ``areas`` [M] float32;
                        ``records`` (JSON text: condition and meta of every frame) and ``digests``
                        (one BLAKE2b digest per frame of its five arrays, for :meth:`verify`)

``checksum`` is the SHA-256 of the frame digests and the object arrays; :meth:`SyntheticPackedDataset.verify`
re-reads everything and names the first frame that differs. 4000 frames of 256x512 take 6.3 GB on
disk; they are written frame by frame into the memory maps, so writing never holds more than a few
frames in RAM.

Ways to get one:

* ``damcseg-make-synthetic --format packed --out DIR --frames 4000 --size 256x512 --seed 2``
* a training spec with ``cache=``: ``synthetic:frames=4000,size=256x512,seed=2,cache=runs/cache/s2``
  builds the cache on first use (``cache_workers=N`` processes, default: one per available core)
  and memory-maps it afterwards (:func:`open_or_build_packed`). A cache whose spec differs from the
  requested one is an error that says which fields differ and how to fix it, never reused.
* read one with ``SyntheticPackedDataset(DIR)`` or the spec ``synthetic-packed:DIR``.

On opening, frame 0 is rendered again and compared with the cached frame (``check_frames``,
100 ms): a cache written by another version of the generator is refused rather than silently
training on other data than the spec names. Caches are written under ``DIR.partial-<pid>`` and
renamed when complete, so an interrupted write never looks like a cache; concurrent builders (DDP
ranks) serialise on ``DIR.lock``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from damcseg_core import MODALITIES
from damcseg_core.config import ConfigError
from damcseg_core.data.io_utils import DatasetFormatError, require_dir, require_file
from damcseg_core.data.synthetic.drive import SyntheticConfig, SyntheticDataset, frame_to_sample

__all__ = [
    "PACKED_FORMAT",
    "SyntheticPackedConfig",
    "SyntheticPackedDataset",
    "open_or_build_packed",
    "spec_of",
    "write_synthetic_packed",
]

PACKED_FORMAT = "damcseg-synthetic-packed/1"
_SPEC_FIELDS = ("frames", "size", "seed", "conditions", "crowd", "depth", "thermal", "lidar_fraction")
_ARRAYS = ("rgb", "depth", "thermal", "semantic", "instance")
_OBJECT_KEYS = ("boxes", "labels", "occlusion", "areas")
_THERMAL_SCALE = 65535.0  # make_sample's full scale of uint16 thermal counts


def spec_of(cfg: SyntheticConfig) -> dict[str, Any]:
    """The generator spec a cache must match (JSON types): every field but ``modalities``.

    ``modalities`` is left out on purpose: a cache holds all three and a dataset reads any subset.
    """
    out = {}
    for name in _SPEC_FIELDS:
        v = getattr(cfg, name)
        out[name] = list(v) if isinstance(v, (tuple, list)) else v
    return out


def _spec_text(spec: dict[str, Any]) -> str:
    parts = []
    for k in _SPEC_FIELDS:
        v = spec[k]
        if k == "size":
            text = f"{v[0]}x{v[1]}"
        elif isinstance(v, list):
            text = "+".join(str(x) for x in v)
        else:
            text = str(v)
        parts.append(f"{k}={text}")
    return "synthetic:" + ",".join(parts)


def _shapes(n: int, h: int, w: int) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    return {
        "rgb": (np.dtype(np.uint8), (n, h, w, 3)),
        "depth": (np.dtype(np.float32), (n, h, w)),
        "thermal": (np.dtype(np.uint16), (n, h, w)),
        "semantic": (np.dtype(np.uint8), (n, h, w)),
        "instance": (np.dtype(np.int16), (n, h, w)),
    }


def _frame_digest(arrays: Sequence[np.ndarray]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.digest()


def _render(ds: SyntheticDataset, index: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and object record of scene ``index`` (from the very sample the dataset returns)."""
    frame = ds.frame(index)
    sample = frame_to_sample(frame)  # all modalities; a reader selects its subset
    instance = sample["instance"].numpy()
    if int(instance.max(initial=0)) > np.iinfo(np.int16).max:
        raise ValueError(
            f"scene {index} has more than 32767 objects, which the int16 instance map cannot hold"
        )
    arrays = {
        "rgb": frame.rgb,
        "depth": sample["depth"][0].numpy(),
        "thermal": np.asarray(frame.thermal, np.uint16),
        "semantic": sample["semantic"].numpy().astype(np.uint8),
        "instance": instance.astype(np.int16),
    }
    meta = dict(sample["meta"])
    record = {
        "condition": sample["condition"],
        "meta": meta,
        **{k: sample[k].numpy() for k in _OBJECT_KEYS},
    }
    return arrays, record


def _render_chunk(root: str, cfg_dict: dict[str, Any], indices: list[int]) -> list[dict[str, Any]]:
    """Worker: render ``indices`` straight into the memory maps under ``root``; return their objects."""
    torch.set_num_threads(1)
    cfg = SyntheticConfig(**cfg_dict)
    ds = SyntheticDataset.from_config(cfg)
    maps = {name: np.load(Path(root) / f"{name}.npy", mmap_mode="r+") for name in _ARRAYS}
    records = []
    for i in indices:
        arrays, record = _render(ds, i)
        for name in _ARRAYS:
            maps[name][i] = arrays[name]
        record["digest"] = _frame_digest([arrays[n] for n in _ARRAYS])
        record["index"] = i
        records.append(record)
    for m in maps.values():
        m.flush()
    return records


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _generator_fingerprint() -> str:
    """Hash of the synthetic generator's sources (informational; the frame-0 check decides)."""
    h = hashlib.sha256()
    src = Path(__file__).parent
    for name in ("drive.py", "render.py", "sensors.py", "world.py"):
        h.update((src / name).read_bytes())
    return h.hexdigest()[:16]


def write_synthetic_packed(
    root: str | Path,
    config: SyntheticConfig,
    workers: int = 0,
    progress: bool = False,
    chunk: int = 8,
) -> Path:
    """Render every scene of ``config`` into a packed cache at ``root`` (see the module docstring).

    Args:
        root: Cache folder to create; it must not exist yet.
        config: The scenes (``SyntheticDataset`` options; ``modalities`` is ignored: all are kept).
        workers: Rendering processes; 0 = one per available core, 1 = in this process.
        progress: Show a tqdm progress bar.
        chunk: Scenes per task handed to a worker.

    Returns:
        ``root``.

    Raises:
        FileExistsError: ``root`` exists (remove it, or pick another folder).
    """
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root} exists; remove it or write the packed cache to another folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f"{root.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        n, (h, w) = config.frames, config.size
        shapes = _shapes(n, h, w)
        for name, (dtype, shape) in shapes.items():
            np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=shape).flush()
        cfg_dict = dataclasses.asdict(config)
        cfg_dict["modalities"] = list(MODALITIES)
        chunks = [list(range(s, min(n, s + chunk))) for s in range(0, n, chunk)]
        workers = _default_workers() if workers <= 0 else workers
        workers = min(workers, len(chunks))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=n, desc="packed synthetic frames", unit="frame")
        records: list[dict[str, Any] | None] = [None] * n

        def take(result: list[dict[str, Any]]) -> None:
            for r in result:
                records[r.pop("index")] = r
            if bar is not None:
                bar.update(len(result))

        if workers == 1:
            for c in chunks:
                take(_render_chunk(str(tmp), cfg_dict, c))
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            # spawn: a forked child of a process that already ran OpenMP kernels can hang.
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                for result in pool.map(
                    _render_chunk, [str(tmp)] * len(chunks), [cfg_dict] * len(chunks), chunks
                ):
                    take(result)
        if bar is not None:
            bar.close()
        _write_objects(tmp, records, config, shapes)  # type: ignore[arg-type]
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _write_objects(
    root: Path,
    records: list[dict[str, Any]],
    config: SyntheticConfig,
    shapes: dict[str, tuple[np.dtype, tuple[int, ...]]],
) -> None:
    counts = [len(r["labels"]) for r in records]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    objects = {
        "offsets": offsets,
        "boxes": np.concatenate([r["boxes"].reshape(-1, 4) for r in records]).astype(np.float32),
        "labels": np.concatenate([r["labels"] for r in records]).astype(np.int64),
        "occlusion": np.concatenate([r["occlusion"] for r in records]).astype(np.float32),
        "areas": np.concatenate([r["areas"] for r in records]).astype(np.float32),
    }
    digests = np.frombuffer(b"".join(r["digest"] for r in records), np.uint8).reshape(len(records), -1)
    text = json.dumps([{"condition": r["condition"], "meta": r["meta"]} for r in records])
    np.savez(root / "objects.npz", records=np.array(text), digests=digests, **objects)
    meta = {
        "format": PACKED_FORMAT,
        "spec": spec_of(config),
        "frames": config.frames,
        "size": list(config.size),
        "arrays": {k: {"dtype": str(d), "shape": list(s)} for k, (d, s) in shapes.items()},
        "checksum": "sha256:" + _checksum(digests, objects),
        "generator": _generator_fingerprint(),
        "written_by": f"damcseg_core.data.synthetic.packed (torch {torch.__version__}, numpy {np.__version__})",
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=2))


def _checksum(digests: np.ndarray, objects: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(np.ascontiguousarray(digests).tobytes())
    for k in ("offsets", *_OBJECT_KEYS):
        h.update(np.ascontiguousarray(objects[k]).tobytes())
    return h.hexdigest()


@dataclasses.dataclass
class SyntheticPackedConfig:
    """Options of :class:`SyntheticPackedDataset` (registry spec ``synthetic-packed:DIR``)."""

    root: str = ""  # cache folder written by damcseg-make-synthetic --format packed
    modalities: list[str] | None = None  # subset of rgb/depth/thermal; None = all three
    check_frames: int = 1  # scenes re-rendered on opening and compared with the cache (0 = none)


class SyntheticPackedDataset(torch.utils.data.Dataset):
    """Reads a packed cache (module docstring) as the samples ``SyntheticDataset`` would return.

    Args:
        root: Cache folder.
        modalities: Subset of ``rgb``/``depth``/``thermal`` to return; ``None`` = all three.
        check_frames: Number of scenes (0, then spread over the cache) re-rendered and compared
            on opening; 0 skips the check.

    Raises:
        DatasetFormatError: Missing files, another format, arrays of the wrong shape, or cached
            scenes that differ from what the generator renders today.
    """

    dataset_name = "synthetic-packed"

    def __init__(
        self, root: str | Path, modalities: Sequence[str] | None = None, check_frames: int = 1
    ) -> None:
        self.root = require_dir(
            root,
            "a packed synthetic cache",
            "create one with damcseg-make-synthetic --format packed --out DIR",
        )
        meta_path = require_file(self.root / "meta.json", "the cache description of a packed synthetic cache")
        try:
            self.meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{meta_path} is not valid JSON: {exc}; rebuild the cache") from exc
        if self.meta.get("format") != PACKED_FORMAT:
            raise DatasetFormatError(
                f"{meta_path}: format {self.meta.get('format')!r} is not {PACKED_FORMAT!r}; rebuild it with "
                "damcseg-make-synthetic --format packed (a synthetic-folder layout reads as synthetic-folder:DIR)"
            )
        mods = list(MODALITIES) if modalities is None else list(modalities)
        bad = [m for m in mods if m not in MODALITIES]
        if not mods or bad:
            raise ValueError(f"modalities must be a non-empty subset of {list(MODALITIES)}, got {mods}")
        self.modalities = tuple(m for m in MODALITIES if m in mods)
        spec = dict(self.meta["spec"])
        self.config = SyntheticConfig(
            **{
                **spec,
                "size": tuple(spec["size"]),
                "crowd": tuple(spec["crowd"]),
                "modalities": list(self.modalities),
            }
        )
        self._n = int(self.meta["frames"])
        objects_path = require_file(self.root / "objects.npz", "the object lists of a packed synthetic cache")
        with np.load(objects_path, allow_pickle=False) as z:
            self._objects = {k: z[k] for k in ("offsets", *_OBJECT_KEYS)}
            self._records = json.loads(str(z["records"]))
            self._digests = z["digests"]
        if len(self._records) != self._n or len(self._objects["offsets"]) != self._n + 1:
            raise DatasetFormatError(f"{objects_path} does not hold {self._n} frames; rebuild the cache")
        self._maps: dict[str, np.ndarray] | None = None
        self._open()
        for i in _check_indices(self._n, check_frames):
            self._check_frame(i)

    @classmethod
    def from_config(cls, cfg: SyntheticPackedConfig) -> SyntheticPackedDataset:
        """Build from a :class:`SyntheticPackedConfig` (used by the dataset registry)."""
        return cls(cfg.root, cfg.modalities, cfg.check_frames)

    def _open(self) -> dict[str, np.ndarray]:
        if self._maps is None:
            maps = {}
            for name, (dtype, shape) in _shapes(self._n, *self.config.size).items():
                path = require_file(
                    self.root / f"{name}.npy", f"the {name} array of a packed synthetic cache"
                )
                try:
                    arr = np.load(path, mmap_mode="r")
                except ValueError as exc:
                    raise DatasetFormatError(
                        f"{path} is not a readable .npy array ({exc}); rebuild the cache"
                    ) from exc
                if arr.dtype != dtype or arr.shape != shape:
                    raise DatasetFormatError(
                        f"{path} holds {arr.dtype} {list(arr.shape)}, expected {dtype} {list(shape)}; rebuild the cache"
                    )
                maps[name] = arr
            self._maps = maps
        return self._maps

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps are reopened in the receiving process (a pickled memmap would copy the data).
        state = dict(self.__dict__)
        state["_maps"] = None
        return state

    def __len__(self) -> int:
        return self._n

    def _check_frame(self, i: int) -> None:
        arrays, _ = _render(SyntheticDataset.from_config(self.config), i)
        maps = self._open()
        if _frame_digest([arrays[n] for n in _ARRAYS]) != _frame_digest([maps[n][i] for n in _ARRAYS]):
            raise DatasetFormatError(
                f"packed cache {self.root}: scene {i} differs from what the synthetic generator renders for "
                f"{_spec_text(self.meta['spec'])} (the generator changed since the cache was written); "
                f"remove {self.root} and rebuild it (damcseg-make-synthetic --format packed, or cache=)"
            )

    def verify(self) -> None:
        """Re-read every frame and compare it with the digests and checksum of the cache.

        Raises:
            DatasetFormatError: Naming the first frame whose arrays differ, or the object lists.
        """
        maps = self._open()
        for i in range(self._n):
            if _frame_digest([maps[n][i] for n in _ARRAYS]) != self._digests[i].tobytes():
                raise DatasetFormatError(
                    f"packed cache {self.root}: frame {i} does not match its digest (corrupt file); rebuild the cache"
                )
        if "sha256:" + _checksum(self._digests, self._objects) != self.meta.get("checksum"):
            raise DatasetFormatError(
                f"packed cache {self.root}: objects.npz does not match the checksum in meta.json; rebuild the cache"
            )

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self._n <= index < self._n:
            raise IndexError(f"synthetic-packed index {index} out of range for {self._n} samples")
        i = index % self._n
        maps = self._open()
        sample: dict[str, Any] = {}
        if "rgb" in self.modalities:
            rgb = np.ascontiguousarray(maps["rgb"][i].transpose(2, 0, 1))
            sample["rgb"] = torch.from_numpy(rgb).float() / 255.0
        if "depth" in self.modalities:
            sample["depth"] = torch.from_numpy(np.array(maps["depth"][i])).unsqueeze(0)
        if "thermal" in self.modalities:
            unit = maps["thermal"][i].astype(np.float32) / _THERMAL_SCALE
            sample["thermal"] = torch.from_numpy(np.clip(unit, 0.0, 1.0)).unsqueeze(0)
        sample["present"] = torch.tensor([m in self.modalities for m in MODALITIES], dtype=torch.bool)
        sample["semantic"] = torch.from_numpy(maps["semantic"][i].astype(np.int64))
        sample["instance"] = torch.from_numpy(maps["instance"][i].astype(np.int32))
        a, b = int(self._objects["offsets"][i]), int(self._objects["offsets"][i + 1])
        sample["boxes"] = torch.from_numpy(self._objects["boxes"][a:b].copy()).reshape(-1, 4)
        for key in ("labels", "occlusion", "areas"):
            sample[key] = torch.from_numpy(self._objects[key][a:b].copy())
        record = self._records[i]
        sample["condition"] = record["condition"]
        sample["meta"] = {**record["meta"], "index": index}
        return sample


def _check_indices(n: int, k: int) -> list[int]:
    if k <= 0:
        return []
    return sorted({round(j * (n - 1) / max(1, k - 1)) for j in range(k)}) if k > 1 else [0]


def open_or_build_packed(
    config: SyntheticConfig, root: str | Path, workers: int = 0, progress: bool = True
) -> SyntheticPackedDataset:
    """The cache of ``config`` at ``root``: memory-mapped if it exists, rendered first if not.

    Args:
        config: Scenes the cache must hold (its ``modalities`` select what samples return).
        root: Cache folder.
        workers: Rendering processes when building (0 = one per available core).
        progress: Progress bar while building.

    Raises:
        ConfigError: ``root`` holds a cache of another spec (the differing fields are named) or
            something that is not a packed cache.
    """
    import fcntl

    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another rank may be building it: wait for it
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()  # an empty folder is no cache
        if not root.exists():
            print(
                f"[damcseg] rendering {config.frames} synthetic scenes once into the packed cache {root} ...",
                flush=True,
            )
            write_synthetic_packed(root, config, workers=workers, progress=progress)
    meta_path = root / "meta.json"
    if not meta_path.is_file():
        raise ConfigError(
            f"cache={root} exists but is not a packed synthetic cache (no meta.json); remove it or pick "
            "another cache= folder"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"cache={root}: meta.json is not valid JSON ({exc}); remove {root} to rebuild it"
        ) from exc
    want = spec_of(config)
    have = meta.get("spec", {})
    diff = [k for k in _SPEC_FIELDS if have.get(k) != want[k]]
    if meta.get("format") != PACKED_FORMAT or diff:
        what = ", ".join(f"{k}: cache {have.get(k)!r} vs spec {want[k]!r}" for k in diff) or (
            f"format {meta.get('format')!r}"
        )
        raise ConfigError(
            f"cache={root} holds other scenes than the spec asks for ({what}); point cache= at another "
            f"folder (one per spec, e.g. {root.parent}/frames{want['frames']}_seed{want['seed']}) or remove "
            f"{root} to re-render it"
        )
    return SyntheticPackedDataset(root, modalities=config.modalities)
