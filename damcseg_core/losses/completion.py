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
features it reads), never pulls the real encoder towards the prediction.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

__all__ = ["CompletionLossConfig", "completion_loss"]


@dataclasses.dataclass
class CompletionLossConfig:
    """Weights of the completion loss."""

    mse_weight: float = 1.0  # weight of the variance-normalised MSE
    cos_weight: float = 1.0  # weight of the (1 - cosine similarity) term


def completion_loss(
    completion: dict[str, tuple[torch.Tensor, torch.Tensor]],
    cfg: CompletionLossConfig | None = None,
    reference: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The completion loss.

    Args:
        completion: modality -> (predicted, real) features, as in ``DamcsegTrainOutput``.
        cfg: weights.
        reference: any tensor of the graph, used to place a zero loss when ``completion`` is empty.

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
        real = real.detach()
        nmse = F.mse_loss(pred, real) / (real.var(unbiased=False) + 1e-6)
        cos = 1.0 - F.cosine_similarity(pred, real, dim=1, eps=1e-6).mean()
        terms.append(cfg.mse_weight * nmse + cfg.cos_weight * cos)
    if not terms:
        zero = reference.sum().mul(0.0).abs() if reference is not None else torch.zeros(())
        return {"completion": zero}
    return {"completion": torch.stack(terms).mean()}
