"""Modal missing completion network, MCN (DAMCSeg paper, eq. 3): ``F_m_hat = MCN(F_exist)``.

The MCN is a lightweight MLP applied at every spatial location (1x1 convolutions). Its input
is the concatenation of all modality features with absent ones zeroed, so one network serves
every subset; two learned embeddings tell it *which* modalities are present and what the scene
looks like globally:

* a presence embedding (a linear map of the 0/1 presence vector), added to the first layer;
* a pooled context vector (global average of the present features), also added there, so
  per-pixel predictions can use image-level cues such as overall illumination.

There is one MLP head per target modality. Predicted features replace *only* the missing
modality's features; present modalities keep their encoder output untouched.
"""

from __future__ import annotations

import torch
from torch import nn

from damcseg_core import MODALITIES

__all__ = ["ModalCompletionNetwork"]


class _CompletionMLP(nn.Module):
    """Per-location MLP ``3C -> hidden (-> hidden)* -> C`` with presence and context embeddings."""

    def __init__(self, channels: int, hidden: int, layers: int) -> None:
        super().__init__()
        n = len(MODALITIES)
        self.inp = nn.Conv2d(n * channels, hidden, kernel_size=1)
        self.presence = nn.Linear(n, hidden, bias=False)
        self.context = nn.Linear(n * channels, hidden, bias=False)
        hidden_layers = []
        for _ in range(layers - 1):
            hidden_layers += [nn.Conv2d(hidden, hidden, kernel_size=1), nn.GELU()]
        self.hidden = nn.Sequential(*hidden_layers)
        self.out = nn.Conv2d(hidden, channels, kernel_size=1)
        self.act = nn.GELU()

    def forward(self, stacked: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        bias = self.presence(presence) + self.context(stacked.mean(dim=(2, 3)))
        x = self.act(self.inp(stacked) + bias[:, :, None, None])
        return self.out(self.hidden(x))


class ModalCompletionNetwork(nn.Module):
    """Predicts missing modality features from the present ones.

    Args:
        channels: feature channels ``C`` of every modality.
        hidden: hidden width of each per-location MLP.
        layers: hidden layers of each MLP.
    """

    def __init__(self, channels: int, hidden: int = 256, layers: int = 2) -> None:
        super().__init__()
        self.channels = channels
        self.heads = nn.ModuleDict({m: _CompletionMLP(channels, hidden, layers) for m in MODALITIES})

    def predict(self, feats: dict[str, torch.Tensor], target: str) -> torch.Tensor:
        """Predict features of modality ``target`` from ``feats`` (which must not contain it)."""
        if target in feats:
            raise ValueError(f"'{target}' is present; the MCN only predicts missing modalities")
        if not feats:
            raise ValueError("the MCN needs at least one present modality")
        ref = next(iter(feats.values()))
        parts = [feats[m] if m in feats else torch.zeros_like(ref) for m in MODALITIES]
        presence = ref.new_tensor([float(m in feats) for m in MODALITIES]).expand(ref.shape[0], -1)
        return self.heads[target](torch.cat(parts, dim=1), presence)

    def forward(self, feats: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
        """Complete ``feats`` to all modalities.

        Args:
            feats: modality -> ``[B, C, h, w]`` encoder features of the present modalities.

        Returns:
            A new dict with every modality (present ones are the very same tensors as in
            ``feats``) and the tuple of modalities that were predicted, in ``MODALITIES`` order.
        """
        out = dict(feats)
        completed = tuple(m for m in MODALITIES if m not in feats)
        for m in completed:
            out[m] = self.predict(feats, m)
        return out, completed
