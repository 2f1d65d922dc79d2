"""Robustness protocols: what happens to the sensors before the model sees a test sample.

Each protocol is a pure function ``protocol(sample, rng) -> new sample`` on the sample dicts of
``docs/interfaces.md`` (torch tensors or numpy arrays in canonical units). The input sample is
never modified; the returned one gets an updated ``present`` and ``meta["protocol"]``. Randomness
comes only from ``rng`` (a ``numpy.random.Generator``); :func:`sample_rng` derives one per sample
from a seed and the sample's index, so results do not depend on evaluation order or batching.

Names understood by :func:`build_protocol` (modalities ``rgb``, ``depth``, ``thermal``; joined
with ``+``)::

    full                          the sample as recorded
    missing:thermal               entire-missing: drop these modalities from every frame (a
                                  model with an MCN completes their features)
    missing:depth+thermal
    random-missing:0.2            drop each present modality independently with probability p per
                                  frame; if that would drop all of them, one, chosen uniformly
                                  among the present ones, is kept (a frame with no sensor is no
                                  test of robustness, and the model cannot run on it)
    zero-fill:thermal             keep the key but replace the image by zeros, as a sensor that
                                  sends black frames (compares the completion network with
                                  zero-filling; ``present`` stays True)
    absent:thermal                drop the modality as ``missing:`` does *and* switch the
                                  completion network (MCN) off for the frame: the fusion sums only
                                  the present modalities' features (the same as zero features
                                  for the absent one), and its omega is 0. The baseline the MCN
                                  has to beat; :attr:`Protocol.use_completion` is False and the
                                  evaluator honours it (a model without an MCN is unaffected)
    noise:depth:gaussian=0.1      add N(0, sigma) in canonical units (rgb / thermal in [0, 1] and
                                  clipped back to it; depth in metres, invalid pixels stay 0 and
                                  negative results become 0 = invalid)
    noise:rgb:dead=0.05           set this fraction of pixels to 0 (black / invalid / cold)
    noise:thermal:shift=3         misregister: translate by (±s, ±s) pixels, signs drawn per
                                  frame, vacated border filled with 0
    noise:depth:gaussian=0.1,dead=0.01   several effects, applied in the order written

A noise or zero-fill protocol on a modality the sample lacks leaves it unchanged.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from damcseg_core import MODALITIES

__all__ = [
    "COMPLETION_SUITE",
    "PROTOCOL_FORMS",
    "ROBUSTNESS_SUITE",
    "Protocol",
    "build_protocol",
    "sample_rng",
]

PROTOCOL_FORMS = (
    "full",
    "missing:<m>[+<m>...]",
    "random-missing:<p in (0,1)>",
    "zero-fill:<m>[+<m>...]",
    "absent:<m>[+<m>...]",
    "noise:<m>:gaussian=<sigma>|dead=<fraction>|shift=<pixels>[,...]",
)
"""Valid protocol name forms; ``<m>`` is one of rgb, depth, thermal."""

ROBUSTNESS_SUITE: tuple[str, ...] = (
    "full",
    *(f"missing:{m}" for m in MODALITIES),
    *(f"missing:{a}+{b}" for a, b in itertools.combinations(MODALITIES, 2)),
    "random-missing:0.1",
    "random-missing:0.2",
    "random-missing:0.5",
)
"""The default robustness sweep: full input, each modality and each pair entirely missing, and
random per-frame missing at p = 0.1, 0.2, 0.5."""

COMPLETION_SUITE: tuple[str, ...] = (
    "full",
    *(f"{kind}:{m}" for m in ("thermal", "depth", "rgb") for kind in ("missing", "zero-fill", "absent")),
)
"""The condition x protocol sweep of a missing sensor: all sensors, then per modality the sensor
missing and completed by the MCN, zero-filled, and absent with the MCN off."""

_CHANNELS = {"rgb": 3, "depth": 1, "thermal": 1}


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for sample ``index`` under ``seed`` (independent of evaluation order)."""
    return np.random.default_rng([int(seed), int(index)])


@dataclasses.dataclass(frozen=True)
class Protocol:
    """A named, seeded sensor perturbation; call it as ``protocol(sample, rng)``."""

    name: str  # canonical name, as accepted by build_protocol
    apply: Callable[[dict[str, Any], np.random.Generator], dict[str, Any]]  # the perturbation
    use_completion: bool = True  # False: run the model with its MCN switched off (absent:<m>)

    def __call__(self, sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        out = self.apply(dict(sample), rng)
        out["present"] = _present_like(sample.get("present"), out)
        out["meta"] = {**(sample.get("meta") or {}), "protocol": self.name}
        return out


def _present_like(template: Any, sample: dict[str, Any]) -> Any:
    flags = [m in sample for m in MODALITIES]
    if isinstance(template, np.ndarray):
        return np.array(flags, dtype=bool)
    return torch.tensor(flags, dtype=torch.bool)


def _modalities(text: str, name: str) -> tuple[str, ...]:
    mods = tuple(m.strip() for m in text.split("+"))
    bad = [m for m in mods if m not in MODALITIES]
    if bad or not text:
        raise ValueError(
            f"protocol {name!r}: unknown modality {bad[0] if bad else '(empty)'!r}; use "
            f"{', '.join(MODALITIES)} joined with '+' (e.g. missing:depth+thermal)"
        )
    if len(set(mods)) != len(mods):
        raise ValueError(f"protocol {name!r}: a modality is listed twice")
    return tuple(m for m in MODALITIES if m in mods)  # canonical order


def _drop(mods: tuple[str, ...], name: str):
    def apply(sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        present = [m for m in MODALITIES if m in sample]
        if present and all(m in mods for m in present):
            raise ValueError(
                f"protocol {name!r} would remove every modality of this sample (it has {present}); "
                "the model needs at least one, so evaluate this protocol on data with more sensors"
            )
        for m in mods:
            sample.pop(m, None)
        return sample

    return apply


def _random_missing(p: float):
    def apply(sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        present = [m for m in MODALITIES if m in sample]
        drop = rng.random(len(present)) < p
        if present and drop.all():
            drop[rng.integers(len(present))] = False  # keep one: never an empty frame
        for m, d in zip(present, drop):
            if d:
                del sample[m]
        return sample

    return apply


def _to_numpy(x: Any) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """Array as float32 numpy plus a function turning a result back into the input's type."""
    if isinstance(x, torch.Tensor):
        device, dtype = x.device, x.dtype
        return x.detach().cpu().numpy().astype(np.float32), lambda a: torch.from_numpy(a).to(device, dtype)
    return np.asarray(x, dtype=np.float32), lambda a: a


def _zero_fill(mods: tuple[str, ...]):
    def apply(sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        for m in mods:
            if m in sample:
                arr, back = _to_numpy(sample[m])
                sample[m] = back(np.zeros_like(arr))
        return sample

    return apply


def _gaussian(modality: str, sigma: float):
    def effect(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noisy = a + rng.normal(0.0, sigma, a.shape).astype(np.float32)
        if modality == "depth":
            return np.where(a > 0, np.maximum(noisy, 0.0), 0.0).astype(np.float32)
        return np.clip(noisy, 0.0, 1.0)

    return effect


def _dead(fraction: float):
    def effect(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        dead = rng.random(a.shape[-2:]) < fraction  # same pixels in every channel
        return np.where(dead, 0.0, a).astype(np.float32)

    return effect


def _shift(pixels: int):
    def effect(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        dy, dx = (int(v) * pixels for v in rng.choice([-1, 1], size=2))
        out = np.zeros_like(a)
        h, w = a.shape[-2:]
        src_y, dst_y = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        src_x, dst_x = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        out[..., dst_y, dst_x] = a[..., src_y, src_x]
        return out

    return effect


def _noise(modality: str, effects: list[Callable[[np.ndarray, np.random.Generator], np.ndarray]]):
    def apply(sample: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        if modality in sample:
            arr, back = _to_numpy(sample[modality])
            for effect in effects:
                arr = effect(arr, rng)
            sample[modality] = back(arr)
        return sample

    return apply


def _number(text: str, name: str, kind: type = float) -> float:
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"protocol {name!r}: {text!r} is not a valid {kind.__name__}") from None


def _parse_noise(rest: str, name: str) -> Callable:
    modality, sep, spec = rest.partition(":")
    if not sep or not spec:
        raise ValueError(
            f"protocol {name!r}: expected noise:<modality>:<effect>=<value>, e.g. noise:depth:gaussian=0.1"
        )
    mods = _modalities(modality, name)
    if len(mods) != 1:
        raise ValueError(f"protocol {name!r}: noise takes one modality; write one protocol per modality")
    modality = mods[0]
    effects = []
    for item in spec.split(","):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise ValueError(f"protocol {name!r}: effect {item!r} needs a value, e.g. gaussian=0.1")
        if key == "gaussian":
            sigma = _number(value, name)
            if sigma < 0:
                raise ValueError(f"protocol {name!r}: gaussian sigma must be >= 0, got {sigma}")
            effects.append(_gaussian(modality, sigma))
        elif key == "dead":
            fraction = _number(value, name)
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"protocol {name!r}: dead fraction must be in [0, 1], got {fraction}")
            effects.append(_dead(fraction))
        elif key == "shift":
            pixels = int(_number(value, name, int))
            if pixels < 0:
                raise ValueError(f"protocol {name!r}: shift must be >= 0 pixels, got {pixels}")
            effects.append(_shift(pixels))
        else:
            raise ValueError(f"protocol {name!r}: unknown noise effect {key!r}; valid: gaussian, dead, shift")
    return _noise(modality, effects)


def build_protocol(name: str) -> Protocol:
    """Build a protocol from its name (forms in the module docstring and :data:`PROTOCOL_FORMS`).

    Raises:
        ValueError: an unknown form or a bad argument; the message lists the valid forms.
    """
    name = name.strip()
    kind, sep, rest = name.partition(":")
    try:
        if name == "full":
            return Protocol(name, lambda sample, rng: sample)
        if kind == "missing" and sep:
            mods = _modalities(rest, name)
            if len(mods) == len(MODALITIES):
                raise ValueError(f"protocol {name!r} removes every modality; keep at least one")
            return Protocol(f"missing:{'+'.join(mods)}", _drop(mods, name))
        if kind == "absent" and sep:
            mods = _modalities(rest, name)
            if len(mods) == len(MODALITIES):
                raise ValueError(f"protocol {name!r} removes every modality; keep at least one")
            return Protocol(f"absent:{'+'.join(mods)}", _drop(mods, name), use_completion=False)
        if kind == "zero-fill" and sep:
            mods = _modalities(rest, name)
            return Protocol(f"zero-fill:{'+'.join(mods)}", _zero_fill(mods))
        if kind == "random-missing" and sep:
            p = _number(rest, name)
            if not 0.0 < p < 1.0:
                raise ValueError(f"protocol {name!r}: probability must be in (0, 1), got {p}")
            return Protocol(name, _random_missing(p))
        if kind == "noise" and sep:
            return Protocol(name, _parse_noise(rest, name))
    except ValueError as exc:
        raise ValueError(f"{exc}. Valid forms: {'; '.join(PROTOCOL_FORMS)}") from None
    raise ValueError(f"unknown protocol {name!r}. Valid forms: {'; '.join(PROTOCOL_FORMS)}")
