"""Condition x protocol table with bootstrap noise estimates: does a sensor, or the MCN that
stands in for it, pay, and is the gain larger than the noise of the test set?

Rows are the samples' ``condition`` tags (day / dusk / night / fog for the synthetic world, a
real set's own tags, ``unknown`` without one) and ``all``; columns are robustness protocols
(:mod:`damcseg_core.eval.protocols`), typically all sensors (``full``), a sensor missing and
completed by the MCN (``missing:<m>``), zero-filled (``zero-fill:<m>``) and absent with the MCN
off (``absent:<m>``). Every cell holds, over the row's frames:

* ``miou``: mIoU of the summed confusion matrix (the definition of
  :mod:`~damcseg_core.eval.segmentation_metrics`: classes absent from ground truth and prediction
  are left out of the mean);
* ``iou``: IoU of the key classes person, rider, car, bicycle, and ``key_miou`` their mean (a
  class absent from the row is left out of it);
* ``omega``: mean modality reliability weight omega_m per modality (paper eq. 1; the model's
  ``omega``, the mean over heads and pixels; 0 for a modality the fusion did not
  see), and the mean scene complexity ``S`` (eq. 5) and target density ``D``.

**Noise estimate**: the percentile bootstrap over frames. A resample draws the row's n frames
with replacement; the per-frame confusion matrices of the drawn frames are summed and every
number is recomputed. The interval is the ``(1 - c) / 2`` and ``(1 + c) / 2`` percentiles of
``resamples`` such values (``c = confidence``, default 90%). The draws of a row are seeded by
``(seed, row name)``, so they do not depend on which other rows or protocols were evaluated. The
interval says how far a number would move on another test set of the same size from the same
source; it does not include training noise (another seed of the checkpoint). Resamples in which
a class does not occur are left out of that class's interval. A row of a single frame has no
interval (``None``): one frame says nothing about the spread.

**Paired differences**: for a protocol pair ``(a, b)`` the *same* resampled frames are used for
``a`` and ``b``; the interval of ``a - b`` is that of the difference itself, much narrower than
two separate intervals when both protocols find the same frames hard. A difference whose interval
excludes 0 is marked ``outside_noise`` (the report puts a ``*`` next to it). The default pairs
(:func:`default_comparisons`) per modality set ``m``: completed - zero-filled
(``missing:m`` - ``zero-fill:m``), all - zero-filled (``full`` - ``zero-fill:m``) and completed -
absent (``missing:m`` - ``absent:m``); a pair is made when both protocols were evaluated. With
``full`` evaluated, completed - zero-filled also carries ``recovery`` = ``(completed -
zero-filled) / (all - zero-filled)`` of the mIoU, the share of the sensor's worth the MCN wins
back (point value). It is NaN where there is no gap to recover: all - zero-filled <= 0, or, with
a bootstrap, its paired interval includes 0 or the row has one frame (a ratio to a difference
inside the noise means nothing).

**Fusion-weight checks** (``omega_checks``, issue #16): does the modal attention trust a sensor
more where it helps, and a real sensor more than its MCN prediction? With ``full`` evaluated,
every condition row gets omega_m minus the ``day`` row's, all sensors present; the two rows hold
different frames, so the interval is that of the difference of their independent resamples (an
unpaired bootstrap). With ``missing:m`` evaluated too, every row gets omega_m of the completed
modality minus omega_m of the real one, paired over the same resampled frames.

Numbers are fractions in [0, 1] (differences in [-1, 1]), as in the rest of ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import warnings
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from damcseg_core import MODALITIES
from damcseg_core.data.classes import CITYSCAPES_CLASSES, IGNORE_INDEX, NUM_CLASSES
from damcseg_core.eval.segmentation_metrics import as_numpy, confusion_matrix

__all__ = [
    "CONDITION_ORDER",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_RESAMPLES",
    "KEY_CLASSES",
    "ConditionTable",
    "bootstrap_counts",
    "default_comparisons",
    "iou_from_confusion",
    "miou_from_confusion",
    "percentile_interval",
    "protocol_label",
    "row_order",
    "row_rng",
]

KEY_CLASSES: tuple[str, ...] = ("person", "rider", "car", "bicycle")
"""Classes whose IoU every cell reports on its own (road users that thermal should help find)."""

CONDITION_ORDER: tuple[str, ...] = ("day", "dusk", "night", "fog")
"""Row order of the synthetic world's conditions; other tags follow alphabetically, ``all`` last."""

DEFAULT_RESAMPLES = 500
DEFAULT_CONFIDENCE = 0.9


def iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU of confusion matrices ``[..., C, C + 1]`` (layout of
    :func:`~damcseg_core.eval.segmentation_metrics.confusion_matrix`) -> ``[..., C]``, NaN where
    a class is absent from ground truth and prediction."""
    conf = np.asarray(confusion, dtype=np.float64)
    c = conf.shape[-2]
    tp = np.diagonal(conf[..., :c], axis1=-2, axis2=-1)
    union = conf.sum(axis=-1) + conf[..., :c].sum(axis=-2) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def miou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """mIoU of confusion matrices ``[..., C, C + 1]`` -> ``[...]``: the mean of
    :func:`iou_from_confusion` over the classes present (NaN where none is)."""
    return _nanmean(iou_from_confusion(confusion))


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN where every value is NaN (no warning)."""
    finite = ~np.isnan(x)
    count = finite.sum(axis=-1)
    total = np.where(finite, x, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def bootstrap_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``[resamples, n]`` float64: how often each of ``n`` frames is drawn in each resample
    (``n`` draws with replacement per resample; every row sums to ``n``)."""
    if n < 1 or resamples < 1:
        return np.zeros((max(resamples, 0), max(n, 0)))
    draws = rng.integers(0, n, size=(resamples, n))
    flat = (np.arange(resamples)[:, None] * n + draws).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def percentile_interval(samples: np.ndarray, confidence: float = DEFAULT_CONFIDENCE) -> np.ndarray:
    """``[2, ...]`` lower / upper percentile bounds over axis 0 of ``samples``, NaN values left
    out; NaN where no sample is finite."""
    samples = np.asarray(samples, dtype=np.float64)
    q = [50.0 * (1.0 - confidence), 50.0 * (1.0 + confidence)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: NaN, said in the docstring
        return np.nanpercentile(samples, q, axis=0)


def protocol_label(name: str, completed: Sequence[str] = (), image: Sequence[str] = ()) -> str:
    """A column header for a protocol: ``full`` -> "all sensors", ``missing:thermal`` ->
    "thermal completed (MCN)" when the model completed it (else "thermal missing"),
    ``zero-fill:thermal`` -> "thermal zero-filled", ``absent:thermal`` -> "thermal absent".

    ``image`` names the modalities the model completes as an image rather than MCN features
    (``model.completion.depth_image``): ``missing:depth`` -> "depth completed (depth image)".
    """
    kind, _, mods = name.partition(":")
    shown = mods.replace("+", " + ")
    if name == "full":
        return "all sensors"
    if kind == "missing":
        names = mods.split("+")
        if not set(names) <= set(completed):
            return f"{shown} missing"
        how = [f"{m} image" for m in names if m in image]
        how += ["MCN"] if any(m not in image for m in names) else []
        return f"{shown} completed ({' + '.join(how)})"
    if kind == "zero-fill":
        return f"{shown} zero-filled"
    if kind == "absent":
        return f"{shown} absent (no MCN)"
    return name


def default_comparisons(protocols: Sequence[str]) -> list[tuple[str, str]]:
    """The paired differences worth reporting among ``protocols`` (module docstring): per
    zero-filled modality set ``m``, in the order first met, ``(missing:m, zero-fill:m)``,
    ``(full, zero-fill:m)`` and ``(missing:m, absent:m)`` when both protocols are given."""
    given = set(protocols)
    pairs: list[tuple[str, str]] = []
    seen: list[str] = []
    for name in protocols:
        kind, sep, mods = name.partition(":")
        if sep and kind in ("missing", "zero-fill", "absent") and mods not in seen:
            seen.append(mods)
    for mods in seen:
        for a, b in (
            (f"missing:{mods}", f"zero-fill:{mods}"),
            ("full", f"zero-fill:{mods}"),
            (f"missing:{mods}", f"absent:{mods}"),
        ):
            if a in given and b in given:
                pairs.append((a, b))
    return pairs


def _comparison_label(a: str, b: str, labels: dict[str, str]) -> str:
    short = {"full": "all", "missing": "completed", "zero-fill": "zero-filled", "absent": "absent"}
    ka, _, ma = a.partition(":")
    kb, _, mb = b.partition(":")
    mods = mb or ma
    if ka in short and kb in short and (not ma or not mb or ma == mb):
        return f"{mods.replace('+', ' + ')}: {short[ka]} - {short[kb]}"
    return f"{labels.get(a, a)} - {labels.get(b, b)}"


def row_order(conditions: Sequence[str]) -> list[str]:
    """The rows for frames tagged ``conditions``: :data:`CONDITION_ORDER` first, other tags
    alphabetically, ``all`` last."""
    tags = set(conditions)
    known = [c for c in CONDITION_ORDER if c in tags]
    return [*known, *sorted(tags - set(known)), "all"]


def row_rng(seed: int, row: str) -> np.random.Generator:
    """The bootstrap generator of one row, seeded by ``(seed, row)``: independent of the other rows."""
    return np.random.default_rng([int(seed), zlib.crc32(row.encode("utf-8"))])


def _weight_check(diff: float, samples: np.ndarray | None, confidence: float) -> dict[str, Any]:
    """A difference of mean weights, its bootstrap interval and whether that excludes 0."""
    if samples is None:
        return {"diff": float(diff), "interval": None, "outside_noise": None}
    lo, hi = (float(v) for v in percentile_interval(samples, confidence))
    return {"diff": float(diff), "interval": [lo, hi], "outside_noise": bool(lo > 0 or hi < 0)}


@dataclasses.dataclass(slots=True)
class _Frame:
    """One frame of one protocol: its condition, confusion matrix, omega [3], S, D, completed."""

    condition: str
    confusion: np.ndarray
    omega: np.ndarray
    S: float
    D: float
    completed: tuple[str, ...]


class ConditionTable:
    """Collect per-frame confusion matrices and modality weights per protocol; :meth:`compute`
    builds the condition x protocol table (module docstring).

    Args:
        num_classes: size of the label space.
        ignore_index: ground-truth label that is not evaluated.
        class_names: names of the class ids (finds the key classes).
        key_classes: classes reported one by one; those not in ``class_names`` are skipped.
        image_completed: modalities the model completes as an image (:func:`protocol_label`).

    Example:
        >>> table = ConditionTable()
        >>> table.update("full", 0, sample, prediction)  # every protocol, every frame
        >>> table.compute(resamples=500)["cells"]["night"]["full"]["miou"]
    """

    def __init__(
        self,
        num_classes: int = NUM_CLASSES,
        ignore_index: int = IGNORE_INDEX,
        class_names: Sequence[str] = CITYSCAPES_CLASSES,
        key_classes: Sequence[str] = KEY_CLASSES,
        image_completed: Sequence[str] = (),
    ) -> None:
        self.num_classes = num_classes
        self.image_completed = tuple(image_completed)
        self.ignore_index = ignore_index
        names = list(class_names)[:num_classes]
        self.key_classes = tuple(c for c in key_classes if c in names)
        self._key_index = np.array([names.index(c) for c in self.key_classes], dtype=np.int64)
        self._frames: dict[str, dict[int, _Frame]] = {}

    @property
    def protocols(self) -> list[str]:
        """Protocol names in the order first added."""
        return list(self._frames)

    def update(self, protocol: str, frame: int, sample: dict[str, Any], prediction: Any) -> None:
        """Add one frame's prediction under ``protocol`` (``frame``: the sample's index, the same
        for every protocol so that protocols can be paired).

        Raises:
            ValueError: the sample has no ``semantic`` ground truth.
        """
        if "semantic" not in sample:
            raise ValueError(
                f"sample has no 'semantic' ground truth (keys: {sorted(sample)}); the condition "
                "table needs labelled data"
            )
        conf = confusion_matrix(prediction.mask, sample["semantic"], self.num_classes, self.ignore_index)
        omega = getattr(prediction, "omega", None)
        self.add(
            protocol,
            frame,
            str(sample.get("condition", "unknown")),
            conf,
            omega=None if omega is None else as_numpy(omega),
            S=getattr(prediction, "S", None),
            D=getattr(prediction, "D", None),
            completed=tuple(getattr(prediction, "completed", ()) or ()),
        )

    def add(
        self,
        protocol: str,
        frame: int,
        condition: str,
        confusion: np.ndarray,
        omega: np.ndarray | None = None,
        S: float | None = None,
        D: float | None = None,
        completed: Sequence[str] = (),
    ) -> None:
        """Add precomputed per-frame values (``confusion``: ``[C, C + 1]``; ``omega``: ``(3,)``
        in ``MODALITIES`` order; missing values become NaN).

        Raises:
            ValueError: a confusion matrix of the wrong shape, the same frame twice under one
                protocol, or a frame whose condition differs from an earlier protocol's.
        """
        conf = np.asarray(confusion, dtype=np.int64)
        if conf.shape != (self.num_classes, self.num_classes + 1):
            raise ValueError(
                f"confusion matrix has shape {conf.shape}, expected {(self.num_classes, self.num_classes + 1)} "
                "(segmentation_metrics.confusion_matrix with the table's num_classes)"
            )
        frames = self._frames.setdefault(protocol, {})
        if frame in frames:
            raise ValueError(f"frame {frame} was already added under protocol {protocol!r}")
        for other in self._frames.values():
            if frame in other and other[frame].condition != condition:
                raise ValueError(
                    f"frame {frame} has condition {condition!r} here and {other[frame].condition!r} "
                    "under another protocol; give every protocol the same frame index for the same sample"
                )
        w = np.full(len(MODALITIES), np.nan) if omega is None else np.asarray(omega, np.float64).reshape(-1)
        if w.shape != (len(MODALITIES),):
            raise ValueError(f"omega must hold {len(MODALITIES)} values ({MODALITIES}), got shape {w.shape}")
        frames[frame] = _Frame(
            condition,
            conf,
            w,
            np.nan if S is None else float(S),
            np.nan if D is None else float(D),
            tuple(completed),
        )

    # ------------------------------------------------------------------ compute
    def _stats(self, conf: np.ndarray, extra: np.ndarray) -> dict[str, np.ndarray]:
        """Every number of a cell from summed confusions ``[..., C, C + 1]`` and the mean of
        the per-frame extras ``[..., 5]`` (omega x3, S, D)."""
        iou = iou_from_confusion(conf)
        key = iou[..., self._key_index]
        return {"miou": _nanmean(iou), "iou": iou, "key": key, "key_miou": _nanmean(key), "extra": extra}

    def compute(
        self,
        resamples: int = DEFAULT_RESAMPLES,
        confidence: float = DEFAULT_CONFIDENCE,
        seed: int = 0,
        comparisons: Sequence[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        """The table (JSON-ready after :func:`~damcseg_core.eval.evaluator.to_jsonable`)::

            {"bootstrap": {"resamples", "confidence", "seed", "unit": "frame", "method"},
             "key_classes": [...], "modalities": [...], "rows": [...], "counts": {row: n},
             "protocols": {name: {"label", "completed": [...]}},
             "cells": {row: {protocol: {"num_frames", "miou", "miou_interval", "iou_per_class",
                                        "iou": {cls: v}, "iou_interval": {cls: [lo, hi]},
                                        "key_miou", "key_miou_interval",
                                        "omega": {m: v}, "omega_interval": {m: [lo, hi]},
                                        "S", "D"}}},
             "comparisons": [{"a", "b", "label", "cells": {row: {"miou_diff",
                 "miou_diff_interval", "miou_outside_noise", "key_miou_diff", ...,
                 "omega_diff": {m: v}, "omega_diff_interval": {m: [lo, hi]}, "recovery"}}}],
             "omega_checks": {"reference_row": "day" or None,
                 "minus_reference": {row: {m: {"diff", "interval", "outside_noise"}}},
                 "completed_minus_real": {row: {m: {"diff", "interval", "outside_noise"}}}}}

        (``omega_checks``: module docstring; empty dicts where ``full`` / ``missing:m`` or the
        ``day`` row were not evaluated.)

        Intervals are ``None`` with ``resamples == 0``.

        Args:
            resamples: bootstrap resamples per row (0: point values only).
            confidence: coverage of the percentile intervals, in (0, 1).
            seed: seed of the resampling.
            comparisons: protocol pairs ``(a, b)`` for paired differences ``a - b``; ``None``
                uses :func:`default_comparisons`.

        Raises:
            ValueError: nothing added, protocols that did not see the same frames, a bad
                ``resamples`` / ``confidence``, or a comparison naming an unknown protocol.
        """
        if not self._frames:
            raise ValueError("the condition table is empty; add frames with update() first")
        if resamples < 0:
            raise ValueError(f"resamples must be >= 0 (0 = no bootstrap), got {resamples}")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), e.g. 0.9, got {confidence}")
        protocols = self.protocols
        frame_ids = sorted(self._frames[protocols[0]])
        for name in protocols[1:]:
            if sorted(self._frames[name]) != frame_ids:
                raise ValueError(
                    f"protocols {protocols[0]!r} and {name!r} saw different frames; pairing needs "
                    "every protocol evaluated on the same frames"
                )
        pairs = list(default_comparisons(protocols) if comparisons is None else comparisons)
        for a, b in pairs:
            for p in (a, b):
                if p not in self._frames:
                    raise ValueError(
                        f"comparison ({a!r}, {b!r}) names protocol {p!r}, not evaluated; known: {protocols}"
                    )
        conditions = np.array([self._frames[protocols[0]][f].condition for f in frame_ids])
        completed = {
            name: [m for m in MODALITIES if any(m in fr.completed for fr in self._frames[name].values())]
            for name in protocols
        }
        labels = {name: protocol_label(name, completed[name], self.image_completed) for name in protocols}
        conf = {
            name: np.stack([self._frames[name][f].confusion for f in frame_ids]).astype(np.float64)
            for name in protocols
        }
        extra = {
            name: np.stack(
                [
                    np.r_[self._frames[name][f].omega, self._frames[name][f].S, self._frames[name][f].D]
                    for f in frame_ids
                ]
            )
            for name in protocols
        }
        rows = row_order(conditions.tolist())
        cells: dict[str, dict[str, Any]] = {}
        diffs: list[dict[str, Any]] = [
            {"a": a, "b": b, "label": _comparison_label(a, b, labels), "cells": {}} for a, b in pairs
        ]
        counts: dict[str, int] = {}
        full_omega: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        completed_real: dict[str, dict[str, dict[str, Any]]] = {}
        for row in rows:
            sel = np.ones(len(frame_ids), bool) if row == "all" else conditions == row
            n = int(sel.sum())
            counts[row] = n
            weights = bootstrap_counts(n, resamples, row_rng(seed, row)) if resamples and n > 1 else None
            point, boot = {}, {}
            for name in protocols:
                c, e = conf[name][sel], extra[name][sel]
                point[name] = self._stats(c.sum(axis=0), e.mean(axis=0))
                if weights is not None:
                    flat = c.reshape(n, -1)
                    boot[name] = self._stats(
                        (weights @ flat).reshape(resamples, *c.shape[1:]), (weights @ e) / n
                    )
            cells[row] = {name: self._cell(n, point[name], boot.get(name), confidence) for name in protocols}
            if "full" in point:
                full_omega[row] = (point["full"]["extra"][:3], boot["full"]["extra"][:, :3] if boot else None)
                checks = {}
                for i, m in enumerate(MODALITIES):
                    if f"missing:{m}" in point:
                        a = point[f"missing:{m}"]["extra"][i] - point["full"]["extra"][i]
                        b = (
                            boot[f"missing:{m}"]["extra"][:, i] - boot["full"]["extra"][:, i]
                            if boot
                            else None
                        )
                        checks[m] = _weight_check(a, b, confidence)
                if checks:
                    completed_real[row] = checks
            for entry, (a, b) in zip(diffs, pairs):
                entry["cells"][row] = self._diff(point[a], point[b], boot.get(a), boot.get(b), confidence)
                if (
                    a.startswith("missing:")
                    and b == a.replace("missing:", "zero-fill:", 1)
                    and "full" in point
                ):
                    gap = point["full"]["miou"] - point[b]["miou"]
                    gain = point[a]["miou"] - point[b]["miou"]
                    real = gap > 0
                    if real and resamples:  # with a bootstrap, the gap must also be outside the noise
                        real = weights is not None and bool(
                            percentile_interval(boot["full"]["miou"] - boot[b]["miou"], confidence)[0] > 0
                        )
                    entry["cells"][row]["recovery"] = float(gain / gap) if real else float("nan")
        reference = "day" if "day" in full_omega else None
        minus_reference: dict[str, dict[str, dict[str, Any]]] = {}
        if reference is not None:
            ref_point, ref_boot = full_omega[reference]
            for row, (pt, bt) in full_omega.items():
                if row in (reference, "all"):
                    continue
                minus_reference[row] = {
                    m: _weight_check(
                        pt[i] - ref_point[i],
                        None if bt is None or ref_boot is None else bt[:, i] - ref_boot[:, i],
                        confidence,
                    )
                    for i, m in enumerate(MODALITIES)
                }
        return {
            "bootstrap": {
                "resamples": int(resamples),
                "confidence": float(confidence),
                "seed": int(seed),
                "unit": "frame",
                "method": "percentile; paired differences use the same resampled frames for both protocols",
            },
            "key_classes": list(self.key_classes),
            "modalities": list(MODALITIES),
            "rows": rows,
            "counts": counts,
            "protocols": {name: {"label": labels[name], "completed": completed[name]} for name in protocols},
            "cells": cells,
            "comparisons": diffs,
            "omega_checks": {
                "reference_row": reference,
                "minus_reference": minus_reference,
                "completed_minus_real": completed_real,
            },
        }

    def _cell(
        self, n: int, point: dict[str, np.ndarray], boot: dict[str, np.ndarray] | None, confidence: float
    ) -> dict[str, Any]:
        def interval(key: str) -> Any:
            return None if boot is None else percentile_interval(boot[key], confidence)

        iou_iv, key_iv, extra_iv = interval("key"), interval("key_miou"), interval("extra")
        miou_iv = interval("miou")
        e = point["extra"]
        return {
            "num_frames": n,
            "miou": float(point["miou"]),
            "miou_interval": None if miou_iv is None else [float(v) for v in miou_iv],
            "iou_per_class": [float(v) for v in point["iou"]],
            "iou": {c: float(v) for c, v in zip(self.key_classes, point["key"])},
            "iou_interval": {
                c: None if iou_iv is None else [float(iou_iv[0, i]), float(iou_iv[1, i])]
                for i, c in enumerate(self.key_classes)
            },
            "key_miou": float(point["key_miou"]),
            "key_miou_interval": None if key_iv is None else [float(v) for v in key_iv],
            "omega": {m: float(e[i]) for i, m in enumerate(MODALITIES)},
            "omega_interval": {
                m: None if extra_iv is None else [float(extra_iv[0, i]), float(extra_iv[1, i])]
                for i, m in enumerate(MODALITIES)
            },
            "S": float(e[3]),
            "D": float(e[4]),
        }

    @staticmethod
    def _diff(
        pa: dict[str, np.ndarray],
        pb: dict[str, np.ndarray],
        ba: dict[str, np.ndarray] | None,
        bb: dict[str, np.ndarray] | None,
        confidence: float,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("miou", "key_miou"):
            d = float(pa[key] - pb[key])
            iv = (
                None if ba is None else [float(v) for v in percentile_interval(ba[key] - bb[key], confidence)]
            )
            out[f"{key}_diff"] = d
            out[f"{key}_diff_interval"] = iv
            out[f"{key}_outside_noise"] = (
                None if iv is None or np.isnan(iv[0]) else bool(iv[0] > 0 or iv[1] < 0)
            )
        od = pa["extra"][:3] - pb["extra"][:3]
        ov = None if ba is None else percentile_interval(ba["extra"][:, :3] - bb["extra"][:, :3], confidence)
        out["omega_diff"] = {m: float(od[i]) for i, m in enumerate(MODALITIES)}
        out["omega_diff_interval"] = {
            m: None if ov is None else [float(ov[0, i]), float(ov[1, i])] for i, m in enumerate(MODALITIES)
        }
        return out
