"""Completion loss of the modal missing completion network (MCN, DAMCSeg paper eq. 3).

In training, modalities that are present in the batch but dropped (modality dropout) are
predicted by the MCN from the remaining ones; the real encoder features supervise the
prediction. For each such modality with prediction ``P`` and detached real features ``R``
(both ``[B, C, h, w]``):

* ``nmse = mean((P - R)^2) / (var(R) + eps)``: MSE normalised by the variance of the real
  features, so the term does not depend on the features' scale (which drifts in training);
* ``cos = 1 - mean over locations of cos_sim(P[:, :, y, x], R[:, :, y, x])`` along channels.

``L_comp = mean over dropped modalities of (mse_weight * nmse + cos_weight * cos)``; 0 when
nothing was dropped. ``R`` is detached by the model, so the loss only trains the MCN (and the
features it reads), never pulls the real encoder towards the prediction. With per-sample
dropout (a ``[B]`` mask per modality) only the samples that dropped the modality count.

**Distillation** (:func:`distillation_loss`, issue #16): feature regression alone asks the MCN
for the mean of the missing sensor, not for what the rest of the network needs. The teacher is
the modal attention applied to the *real* encoder features of every given modality of the same
sample (``LMMFFeatures.teacher_fused``, computed under ``torch.no_grad()``; the real features of
a dropped modality are computed anyway as completion targets, so it costs one attention pass);
the student is the fused feature with the completed modality. Same form as above (nmse +
cosine), averaged over the samples that dropped a given modality (``distill_mask``).

**Logit distillation** (:func:`logit_distillation_loss`): a feature error does not cost the same
everywhere downstream. Measured on edge v6.2 (``tools/completion_gap.py``), the completed depth
features recover a far smaller share of the depth gap in the global path than the completed
thermal ones, although their normalised MSE is the same. The logit term asks the completion for
what the segmentation does with it: the global path run on the teacher fusion (no gradient,
``DamcsegTrainOutput.teacher_global_logits``) gives per-pixel class distributions, and the
student's global logits are pulled to them with ``T^2 * KL(softmax(t / T) || softmax(s / T))``
(Hinton et al. 2015), averaged over the pixels of the samples in ``distill_mask``.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from damcseg_core.models.depth_completion import DENSE_FRACTION, MIN_DEPTH

__all__ = [
    "CompletionLossConfig",
    "completion_loss",
    "depth_completion_loss",
    "distillation_loss",
    "logit_distillation_loss",
]


@dataclasses.dataclass
class CompletionLossConfig:
    """Weights of the completion loss."""

    mse_weight: float = 1.0  # weight of the variance-normalised MSE
    cos_weight: float = 1.0  # weight of the (1 - cosine similarity) term


def _feature_match(
    pred: torch.Tensor, real: torch.Tensor, rows: torch.Tensor | None, cfg: CompletionLossConfig
) -> torch.Tensor:
    """``mse_weight * nmse + cos_weight * cos`` over the samples ``rows`` (all if ``None``)."""
    real = real.detach()
    if rows is not None:
        rows = rows.to(pred.device, torch.bool).reshape(-1)
        pred, real = pred[rows], real[rows]
    pred, real = pred.float(), real.float()
    nmse = F.mse_loss(pred, real) / (real.var(unbiased=False) + 1e-6)
    cos = 1.0 - F.cosine_similarity(pred, real, dim=1, eps=1e-6).mean()
    return cfg.mse_weight * nmse + cfg.cos_weight * cos


def _zero(reference: torch.Tensor | None) -> torch.Tensor:
    return reference.sum().mul(0.0).abs() if reference is not None else torch.zeros(())


def completion_loss(
    completion: dict[str, tuple[torch.Tensor, torch.Tensor]],
    cfg: CompletionLossConfig | None = None,
    reference: torch.Tensor | None = None,
    masks: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The completion loss.

    Args:
        completion: modality -> (predicted, real) features, as in ``DamcsegTrainOutput``.
        cfg: weights.
        reference: any tensor of the graph, used to place a zero loss when ``completion`` is empty.
        masks: optional modality -> ``[B]`` bool, the samples whose features of that modality
            were completed (per-sample dropout); the others (where predicted == real) are left
            out. A modality whose mask is all ``False`` contributes nothing.

    Returns:
        ``completion`` (the loss).
    """
    cfg = cfg or CompletionLossConfig()
    terms = []
    for name, (pred, real) in completion.items():
        if pred.shape != real.shape:
            raise ValueError(
                f"completion '{name}': predicted {tuple(pred.shape)} != real {tuple(real.shape)}"
            )
        rows = masks.get(name) if masks is not None else None
        if rows is not None and not bool(rows.any()):
            continue
        terms.append(_feature_match(pred, real, rows, cfg))
    if not terms:
        return {"completion": _zero(reference)}
    return {"completion": torch.stack(terms).mean()}


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    mask: torch.Tensor | None,
    cfg: CompletionLossConfig | None = None,
    reference: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Fused-feature distillation from the full-modality teacher (module docstring).

    Args:
        student: ``[B, C, h, w]`` fused features with completed modalities.
        teacher: ``[B, C, h, w]`` fused real features (detached here too), or ``None``.
        mask: ``[B]`` bool, the samples with a completed modality whose real input exists.
        cfg: the same weights as the completion loss.
        reference: graph tensor for a zero loss when there is nothing to distil.

    Returns:
        ``distill`` (the loss).
    """
    cfg = cfg or CompletionLossConfig()
    if teacher is None or mask is None or not bool(mask.any()):
        return {"distill": _zero(reference if reference is not None else student)}
    if student.shape != teacher.shape:
        raise ValueError(f"distillation: student {tuple(student.shape)} != teacher {tuple(teacher.shape)}")
    return {"distill": _feature_match(student, teacher, mask, cfg)}


def logit_distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor | None,
    mask: torch.Tensor | None,
    temperature: float = 1.0,
    reference: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-pixel KL from the real-sensor teacher's logits to the student's (module docstring).

    Args:
        student: ``[B, K, H, W]`` logits of the network with completed modalities.
        teacher: ``[B, K, H, W]`` logits of the same network on the real-sensor fusion (detached
            here too), or ``None``.
        mask: ``[B]`` bool, the samples with a completed modality whose real input exists.
        temperature: softening ``T`` of both distributions (> 0); the loss is scaled by ``T^2`` so
            its gradient keeps its size across temperatures.
        reference: graph tensor for a zero loss when there is nothing to distil.

    Returns:
        ``logit_distill`` (the loss).

    Raises:
        ValueError: a temperature <= 0, or student and teacher of different shapes.
    """
    if not temperature > 0:
        raise ValueError(f"logit distillation temperature must be > 0, got {temperature}")
    if teacher is None or mask is None or not bool(mask.any()):
        return {"logit_distill": _zero(reference if reference is not None else student)}
    if student.shape != teacher.shape:
        raise ValueError(
            f"logit distillation: student {tuple(student.shape)} != teacher {tuple(teacher.shape)}"
        )
    rows = mask.to(student.device, torch.bool).reshape(-1)
    s = student[rows].float() / temperature
    t = teacher.detach()[rows].float() / temperature
    # KL(p_t || p_s) per pixel: sum over classes of p_t (log p_t - log p_s), then the mean over pixels.
    log_ps, log_pt = F.log_softmax(s, dim=1), F.log_softmax(t, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=1).mean()
    return {"logit_distill": kl * temperature**2}


def depth_completion_loss(
    log_depth: torch.Tensor,
    valid_logit: torch.Tensor,
    target: torch.Tensor,
    validity_weight: float = 0.5,
    dense_fraction: float = DENSE_FRACTION,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(depth_l1, validity_bce)`` of :meth:`~damcseg_core.models.depth_completion.DepthImageCompleter.forward_raw` against a depth image.

    ``depth_l1`` is the mean absolute log-depth error over the target's valid pixels (a relative
    error: 10 % off counts the same at 5 m and at 50 m). ``validity_bce`` is the binary
    cross-entropy of the validity logit, only on samples whose target is dense (more than
    ``dense_fraction`` of the pixels valid): a lidar's sparse rows say where the scanner sampled,
    not where a return exists, so they teach nothing about sky. Both are 0 when nothing counts.
    The second value is already multiplied by ``validity_weight``.
    """
    valid = torch.isfinite(target) & (target > 0)
    logt = torch.log(torch.where(valid, target, torch.ones_like(target)).clamp_min(MIN_DEPTH))
    n = valid.sum()
    l1 = (log_depth - logt).abs().mul(valid).sum() / n.clamp_min(1)
    dense = valid.flatten(1).float().mean(1) > dense_fraction
    if bool(dense.any()):
        bce = F.binary_cross_entropy_with_logits(valid_logit[dense], valid[dense].to(valid_logit.dtype))
    else:
        bce = valid_logit.sum() * 0.0
    return l1, validity_weight * bce
