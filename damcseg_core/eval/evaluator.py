"""Run a Predictor over a dataset under robustness protocols and collect every metric.

The dataset is read once: each sample is perturbed by every protocol (with a per-sample RNG from
:func:`~damcseg_core.eval.protocols.sample_rng`, so protocol ``random-missing:0.2`` drops the same
sensors in every run with the same seed), converted to the Predictor's numpy inputs and scored by
one :class:`~damcseg_core.eval.metrics.MetricSuite` per protocol.

Every frame also goes into a :class:`~damcseg_core.eval.conditions.ConditionTable` per
protocol: the condition x protocol table with bootstrap intervals and paired differences
(``condition_table`` below; definitions in :mod:`damcseg_core.eval.conditions`). An ``absent:<m>``
protocol runs the model with its completion network switched off for that frame.

The result's ``metrics`` dict is JSON-ready (NaN and inf become ``null``)::

    {"model": {"name", "parameters", "device"}, "num_samples", "seed",
     "metric_config": {...}, "memory": {"peak_bytes", "kind"},
     "robustness": {protocol: {"miou", "boundary_f", "small_miou", "det_map_50", "det_boxes_per_frame"}},
     "protocols": {protocol: MetricSuite.compute()},
     "condition_table": ConditionTable.compute()}
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from damcseg_core import MODALITIES
from damcseg_core.config import to_dict
from damcseg_core.data.classes import CITYSCAPES_CLASSES
from damcseg_core.eval.conditions import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, ConditionTable
from damcseg_core.eval.metrics import MetricConfig, MetricSuite, count_parameters, peak_memory
from damcseg_core.eval.protocols import Protocol, build_protocol, sample_rng
from damcseg_core.eval.segmentation_metrics import as_numpy

__all__ = ["EvaluationResult", "Evaluator", "completion_disabled", "sample_to_inputs", "to_jsonable"]


def sample_to_inputs(sample: dict[str, Any]) -> dict[str, np.ndarray]:
    """Turn a sample dict's canonical tensors into the Predictor's numpy inputs.

    ``rgb [3,H,W]`` in [0, 1] -> ``HxWx3`` uint8; ``depth`` / ``thermal`` ``[1,H,W]`` -> ``HxW``
    float32 (same units). Only present modality keys are passed.

    Raises:
        ValueError: the sample holds no modality.
    """
    inputs: dict[str, np.ndarray] = {}
    for m in MODALITIES:
        if m not in sample:
            continue
        arr = as_numpy(sample[m]).astype(np.float32)
        if m == "rgb":
            inputs[m] = np.ascontiguousarray(
                (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)
            )
        else:
            inputs[m] = np.ascontiguousarray(arr.reshape(arr.shape[-2:]))
    if not inputs:
        raise ValueError(
            f"sample holds no modality (keys: {sorted(sample)}); expected some of {list(MODALITIES)}"
        )
    return inputs


def to_jsonable(value: Any) -> Any:
    """Recursively convert numpy / tuples / non-string keys to JSON types; NaN and inf -> None."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@contextlib.contextmanager
def completion_disabled(predictor: Any) -> Iterator[None]:
    """Run ``predictor`` with its model's completion network (MCN, and a depth image completer) off.

    The model then takes the path it has without an MCN (the fusion sums only the present
    modalities' features; ``completed`` stays empty). Both the Predictor's model and its inference
    copy are switched, and restored on exit, also after an error. A model without an MCN (the
    ``concat`` ablation) is left as it is.

    Raises:
        ValueError: the predictor runs no torch DAMCSeg model (e.g. an ONNX export, whose graph
            has the MCN built in).
    """
    modules = []
    for mod in (getattr(predictor, "model", None), getattr(predictor, "_runner", None)):
        if mod is not None and all(mod is not m for m in modules):
            modules.append(mod)
    if not modules or not all(hasattr(mod, "completion") for mod in modules):
        kinds = ", ".join(type(m).__name__ for m in modules) or type(predictor).__name__
        raise ValueError(
            f"absent:<m> protocols switch the completion network off inside a torch DAMCSeg model, "
            f"but this predictor runs {kinds}; evaluate the checkpoint (--checkpoint) instead of an "
            "export, or use missing:<m> / zero-fill:<m>"
        )
    # The depth image completer (completion.depth_image) is completion too: off with the MCN.
    saved = [(mod.completion, getattr(mod, "depth_completer", None)) for mod in modules]
    try:
        for mod in modules:
            mod.completion = None
            if hasattr(mod, "depth_completer"):
                mod.depth_completer = None
        yield
    finally:
        for mod, (completion, depth_completer) in zip(modules, saved):
            mod.completion = completion
            if hasattr(mod, "depth_completer"):
                mod.depth_completer = depth_completer


@dataclasses.dataclass
class EvaluationResult:
    """What :meth:`Evaluator.run` returns."""

    metrics: dict[str, Any]  # JSON-ready metrics (module docstring)
    examples: list[dict[str, Any]]  # a few frames for the report: rgb, prediction, ground truth


class Evaluator:
    """Evaluate a Predictor under a list of robustness protocols.

    Args:
        predictor: a :class:`damcseg_core.inference.Predictor` (anything with ``predict`` and
            ``model``).
        protocols: protocol names (see :mod:`damcseg_core.eval.protocols`) or built protocols.
        metric_config: metric settings; ``None`` uses the defaults.
        seed: seed of the protocols' per-sample RNGs.
        num_examples: frames of the first protocol kept for the report's overlays.
        progress: show a tqdm progress bar.
        bootstrap: resamples of the condition table's bootstrap over frames (0: point values).
        confidence: coverage of its percentile intervals.
        bootstrap_seed: seed of the resampling (independent of ``seed``).
        comparisons: protocol pairs ``(a, b)`` whose paired difference ``a - b`` the table
            reports; ``None``: :func:`~damcseg_core.eval.conditions.default_comparisons`.

    Raises:
        ValueError: no protocol, a repeated one, an unknown protocol name, a bad bootstrap
            setting, or a comparison naming a protocol not in ``protocols``.
    """

    def __init__(
        self,
        predictor: Any,
        protocols: Sequence[str | Protocol] = ("full",),
        metric_config: MetricConfig | None = None,
        seed: int = 0,
        num_examples: int = 4,
        progress: bool = True,
        bootstrap: int = DEFAULT_RESAMPLES,
        confidence: float = DEFAULT_CONFIDENCE,
        bootstrap_seed: int = 0,
        comparisons: Sequence[tuple[str, str]] | None = None,
    ) -> None:
        if not protocols:
            raise ValueError("give at least one protocol, e.g. ['full']")
        self.protocols = [p if isinstance(p, Protocol) else build_protocol(p) for p in protocols]
        names = [p.name for p in self.protocols]
        if len(set(names)) != len(names):
            raise ValueError(f"protocols repeat: {names}; list each once")
        if bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0 resamples (0 = no intervals), got {bootstrap}")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0, 1), e.g. 0.9, got {confidence}")
        self.comparisons = None
        if comparisons is not None:
            canonical = [(build_protocol(a).name, build_protocol(b).name) for a, b in comparisons]
            unknown = sorted({p for pair in canonical for p in pair} - set(names))
            if unknown:
                raise ValueError(
                    f"comparisons name protocols that are not evaluated: {unknown}; evaluated: {names}"
                )
            self.comparisons = canonical
        self.bootstrap = bootstrap
        self.confidence = confidence
        self.bootstrap_seed = bootstrap_seed
        self.predictor = predictor
        self.metric_config = metric_config or MetricConfig()
        self.seed = seed
        self.num_examples = num_examples
        self.progress = progress

    @staticmethod
    def _iterate(dataset: Iterable[dict[str, Any]] | Any, limit: int | None) -> Iterator[dict[str, Any]]:
        # Map-style datasets are indexed (a torch Dataset need not stop iterating on its own).
        if hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__"):
            n = len(dataset) if limit is None else min(limit, len(dataset))
            for i in range(n):
                yield dataset[i]
            return
        for i, sample in enumerate(dataset):
            if limit is not None and i >= limit:
                return
            yield sample

    def run(self, dataset: Iterable[dict[str, Any]] | Any, limit: int | None = None) -> EvaluationResult:
        """Evaluate on the first ``limit`` samples (all when ``None``).

        Raises:
            ValueError: ``limit`` < 1, or the dataset yields no sample.
        """
        from tqdm import tqdm

        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 (or None for the whole dataset), got {limit}")
        device = str(getattr(self.predictor, "device", "cpu"))
        if device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(device)
        suites = {p.name: MetricSuite(self.metric_config) for p in self.protocols}
        names = getattr(self.predictor, "class_names", None)
        if names is None or len(names) != self.metric_config.num_classes:
            names = CITYSCAPES_CLASSES
        cfg = getattr(getattr(self.predictor, "model", None), "config", None)
        image = ("depth",) if getattr(getattr(cfg, "completion", None), "depth_image", 0) else ()
        table = ConditionTable(
            self.metric_config.num_classes, self.metric_config.ignore_index, names, image_completed=image
        )
        examples: list[dict[str, Any]] = []
        total = None
        if hasattr(dataset, "__len__"):
            total = len(dataset) if limit is None else min(limit, len(dataset))
            total *= len(self.protocols)
        num_samples = 0
        with tqdm(total=total, disable=not self.progress, desc="eval", unit="frame") as bar:
            for index, sample in enumerate(self._iterate(dataset, limit)):
                num_samples += 1
                for protocol in self.protocols:
                    perturbed = protocol(sample, sample_rng(self.seed, index))
                    result = self._predict(protocol, perturbed)
                    suites[protocol.name].update(perturbed, result)
                    table.update(protocol.name, index, perturbed, result)
                    if protocol is self.protocols[0] and len(examples) < self.num_examples:
                        examples.append(self._example(sample, result, protocol.name))
                    bar.update(1)
        if num_samples == 0:
            raise ValueError("the dataset yielded no sample; check the data spec and --limit")
        protocols = {name: suite.compute() for name, suite in suites.items()}
        model = getattr(self.predictor, "model", None)
        config = getattr(model, "config", None)
        metrics = {
            "model": {
                "name": getattr(config, "name", type(model).__name__ if model is not None else "unknown"),
                "parameters": count_parameters(model) if model is not None else None,
                "device": device,
            },
            "num_samples": num_samples,
            "seed": self.seed,
            "metric_config": to_dict(self.metric_config),
            "memory": peak_memory(device),
            "robustness": {
                name: {
                    k: p["all"].get(k)
                    for k in ("miou", "boundary_f", "small_miou", "det_map_50", "det_boxes_per_frame")
                }
                for name, p in protocols.items()
            },
            "protocols": protocols,
            "condition_table": table.compute(
                self.bootstrap, self.confidence, self.bootstrap_seed, self.comparisons
            ),
        }
        return EvaluationResult(to_jsonable(metrics), examples)

    def _predict(self, protocol: Protocol, sample: dict[str, Any]) -> Any:
        inputs = sample_to_inputs(sample)
        if protocol.use_completion:
            return self.predictor.predict(inputs)
        with completion_disabled(self.predictor):
            result = self.predictor.predict(inputs)
        if getattr(result, "completed", ()):
            raise RuntimeError(
                f"protocol {protocol.name!r}: the model still completed {list(result.completed)} with "
                "the completion network switched off; the predictor wraps a model this evaluator "
                "cannot reach (give it the Predictor itself)"
            )
        return result

    @staticmethod
    def _example(sample: dict[str, Any], result: Any, protocol: str) -> dict[str, Any]:
        # The unperturbed rgb is shown so the overlay stays readable under missing-rgb protocols.
        rgb = as_numpy(sample["rgb"]).transpose(1, 2, 0) if "rgb" in sample else None
        meta = sample.get("meta") or {}
        return {
            "rgb": rgb,
            "prediction": np.asarray(result.mask),
            "ground_truth": as_numpy(sample["semantic"]),
            "protocol": protocol,
            "title": f"{meta.get('dataset', '')} {meta.get('sequence', '')} {meta.get('frame', '')}".strip(),
            "condition": sample.get("condition", "unknown"),
        }
