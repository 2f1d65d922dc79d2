"""Per-sample modality dropout: which sensors each sample of a batch trains with.

The MCN (paper eq. 3) only learns to complete a sensor if training shows it that sensor
missing. :func:`sample_keep_mask` draws, for every sample of a batch independently, the
modalities it keeps, as a ``[B, 3]`` bool mask in ``MODALITIES`` order, which the trainer passes
to ``model(inputs, drop=keep)``:

* with probability ``p_full = 1 - p`` a sample keeps every present modality;
* otherwise it keeps one of the 6 proper non-empty subsets of (rgb, depth, thermal), drawn with
  the weights of ``augment.modality_dropout_subsets`` (uniform by default; RGB missing
  included), intersected with the modalities the batch has. Subsets that would leave a sample
  without any present modality get weight 0; a batch with a single modality never drops.
* ``p`` follows a schedule: a linear ramp from ``modality_dropout_start`` to
  ``modality_dropout`` over the first ``modality_dropout_ramp_steps`` steps of a stage, so the
  heads first see real features of freshly unfrozen encoders before completed ones.

Why per sample and not per batch: with one subset per batch (the old scheme), a whole batch is
either completed or real. Train-mode BatchNorm after the fusion then normalises completed
batches with their own statistics, hiding the MCN's distribution shift, while the running
statistics used at inference come almost only from real-sensor batches; in eval a completed
frame is normalised with statistics it never matched (measured in issue #16: recalibrating the
BatchNorm statistics alone lifted the MCN from 36.9 to 38.5 mIoU). With a per-sample draw every
batch mixes completed and real features, so batch and running statistics both cover the
mixture the model sees at inference, and the MCN is pushed to produce features the following
layers accept. Per-subset normalisation would multiply BatchNorm parameters by 7 and still need
calibration; recalibration is a post-hoc fix that has to be redone for every checkpoint.
``modality_dropout_mode: batch`` keeps the old behaviour for comparison.

Every draw comes from the ``torch.Generator`` passed in (resume and DDP reproduce it) and is
vectorised over the batch (no Python loop per sample).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch

from damcseg_core import MODALITIES

if TYPE_CHECKING:
    from damcseg_core.train.config import AugmentConfig

__all__ = [
    "ALL_SUBSETS",
    "DROP_SUBSETS",
    "SUBSET_MASKS",
    "drop_probability",
    "sample_keep_mask",
    "subset_name",
    "subset_weights",
]

ALL_SUBSETS: tuple[tuple[str, ...], ...] = tuple(
    c for r in range(1, len(MODALITIES) + 1) for c in itertools.combinations(MODALITIES, r)
)
"""The 7 non-empty modality subsets, in ``MODALITIES`` order, smallest first."""

DROP_SUBSETS: tuple[tuple[str, ...], ...] = ALL_SUBSETS[:-1]
"""The 6 proper subsets a dropped sample may keep."""

SUBSET_MASKS = torch.tensor([[m in s for m in MODALITIES] for s in ALL_SUBSETS], dtype=torch.bool)
"""``[7, 3]`` keep mask of each of :data:`ALL_SUBSETS`."""


def subset_name(subset: tuple[str, ...] | list[str]) -> str:
    """``("rgb", "depth")`` -> ``"rgb+depth"`` (the key format of ``modality_dropout_subsets``)."""
    return "+".join(m for m in MODALITIES if m in subset)


def _parse_name(name: str) -> tuple[str, ...]:
    parts = [p.strip() for p in str(name).replace(",", "+").split("+")]
    unknown = [p for p in parts if p not in MODALITIES]
    if unknown or len(set(parts)) != len(parts):
        raise ValueError(
            f"augment.modality_dropout_subsets: {name!r} is not a subset name; use modality names "
            f"joined by '+', e.g. {[subset_name(s) for s in DROP_SUBSETS]}"
        )
    return tuple(m for m in MODALITIES if m in parts)


def subset_weights(weights: Mapping[str, float] | None) -> torch.Tensor:
    """``[6]`` normalised probabilities of :data:`DROP_SUBSETS` from a name -> weight dict.

    An empty dict (or ``None``) gives the uniform distribution; names not in the dict weigh 0.

    Raises:
        ValueError: unknown names, the full subset (use ``modality_dropout``), negative or
            non-finite weights, or all weights 0. The message names the field.
    """
    if not weights:
        return torch.full((len(DROP_SUBSETS),), 1.0 / len(DROP_SUBSETS))
    out = torch.zeros(len(DROP_SUBSETS), dtype=torch.float64)
    for name, w in weights.items():
        subset = _parse_name(name)
        if subset == MODALITIES:
            raise ValueError(
                f"augment.modality_dropout_subsets: {name!r} keeps every modality; its probability "
                "is p_full = 1 - augment.modality_dropout, set that instead"
            )
        w = float(w)
        if not (w >= 0.0 and w < float("inf")):
            raise ValueError(
                f"augment.modality_dropout_subsets[{name!r}] must be a finite weight >= 0, got {w}"
            )
        out[DROP_SUBSETS.index(subset)] += w
    if out.sum() <= 0:
        raise ValueError(
            "augment.modality_dropout_subsets: every weight is 0; give at least one subset a positive "
            "weight or set augment.modality_dropout to 0 to disable dropout"
        )
    return (out / out.sum()).float()


def drop_probability(cfg: AugmentConfig, step_in_stage: int | None = None) -> float:
    """The probability that a sample drops a modality, ``step_in_stage`` steps into a stage.

    ``None`` (or no ramp configured) gives ``cfg.modality_dropout``.
    """
    ramp = cfg.modality_dropout_ramp_steps
    if step_in_stage is None or ramp <= 0 or step_in_stage >= ramp:
        return float(cfg.modality_dropout)
    t = max(0, step_in_stage) / ramp
    return float(cfg.modality_dropout_start + t * (cfg.modality_dropout - cfg.modality_dropout_start))


def sample_keep_mask(
    g: torch.Generator,
    batch_size: int,
    present: tuple[str, ...] | list[str],
    cfg: AugmentConfig,
    step_in_stage: int | None = None,
    p: float | None = None,
) -> torch.Tensor:
    """Draw each sample's kept modalities (see the module docstring).

    Args:
        g: CPU generator; the only source of randomness.
        batch_size: ``B``.
        present: modalities the batch has.
        cfg: the augmentation config (probability, subset weights, schedule, mode).
        step_in_stage: optimizer steps since the current stage began (for the ramp).
        p: override of the drop probability (e.g. 0 in a stage without dropout).

    Returns:
        ``[B, 3]`` bool CPU tensor in ``MODALITIES`` order: ``True`` = the sample keeps that
        modality. Every row keeps at least one present modality; absent modalities are ``False``.

    Raises:
        ValueError: ``present`` is empty or names an unknown modality, or ``batch_size < 1``.
    """
    if not present:
        raise ValueError("the batch has no modality; every sample needs at least one of rgb/depth/thermal")
    unknown = sorted(set(present) - set(MODALITIES))
    if unknown:
        raise ValueError(f"unknown modality {unknown}; valid names are {list(MODALITIES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    have = torch.tensor([m in present for m in MODALITIES], dtype=torch.bool)
    p = drop_probability(cfg, step_in_stage) if p is None else float(p)
    probs = subset_weights(cfg.modality_dropout_subsets)
    kept = SUBSET_MASKS[:-1] & have  # [6, 3] what each subset keeps of this batch
    probs = probs * kept.any(dim=1)  # subsets that keep nothing present are impossible
    full = have.expand(batch_size, -1).clone()
    n = batch_size if cfg.modality_dropout_mode == "sample" else 1
    # Both draws happen whatever p is, so the generator stream does not depend on the schedule.
    drops = torch.rand(n, generator=g) < p
    if probs.sum() <= 0:  # e.g. a single-modality batch: nothing can be dropped
        return full
    idx = torch.multinomial(probs, n, replacement=True, generator=g)
    rows = torch.where(drops[:, None], kept[idx], have.expand(n, -1))
    return rows.expand(batch_size, -1).clone() if n == 1 else rows
