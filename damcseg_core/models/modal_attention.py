"""Modal adaptive attention of the LMMF module (DAMCSeg paper, eq. 1-2).

``omega_m = sigmoid(W_m F_m + b_m)`` and ``F_fusion = sum_m omega_m * F_m``.

``W_m`` is a 1x1 convolution producing one reliability map per *head*: the ``C`` channels of
``F_m`` are split into ``heads`` groups (paper: 8) and every group gets its own spatial weight
map, so a modality can be trusted for some feature groups (e.g. geometry from depth) and not
for others at the same pixel. The weights are not normalised across modalities, as in eq. 2;
missing modalities are completed by the MCN first, so the sum always has the same three terms.

**Completed vs real** (issue #16, ``FusionConfig.completion_flag``): the gate cannot tell an
MCN prediction from a real sensor by the features alone (it gave completed thermal the same
weight as real thermal). With the flag on, a learned per-modality, per-head offset ``e_m`` is
added to the gate logit of every sample whose modality ``m`` was completed::

    omega_m = sigmoid(W_m F_m + b_m + c_m * e_m),   c_m = 1 if F_m is an MCN prediction, else 0

``FusionConfig.completion_offset`` says what sign ``e_m`` may take:

* ``"nonpositive"`` (the default): ``e_m = -softplus(p_m)`` with a learned ``p_m`` (init 0, so
  ``e_m`` starts at ``-ln 2``). A completed feature is a prediction from the *other* sensors, so it
  holds no evidence they do not; the gate may trust it as much as the real sensor (``e_m -> 0``) but
  never more. Left free, ``e_m`` of the edge-v2 checkpoint trained to tiny values of mixed sign
  (|e| < 0.18) and completed thermal got a higher mean omega than real thermal (0.858 vs 0.847).
* ``"free"``: ``e_m = p_m``, init 0 (the flag changes nothing until training gives it a sign);
  checkpoints from before the field load with it.

``e_m`` costs ``3 x heads`` parameters and, for a modality that is real for every sample, is never
computed. In the ONNX graphs (one per modality subset) ``c`` is a constant of the subset.

**Scene context** (issue #16, ``FusionConfig.context``): eq. 1 gives each gate only its own
modality's features, so the thermal gate cannot see that the RGB camera is blind at night - yet
that is when thermal should be trusted most. With the option on, every gate logit also gets a
per-sample, per-head offset from a scene descriptor, the spatial mean of all three (completed)
modalities' features::

    omega_m = sigmoid(W_m F_m + b_m + c_m * e_m + V_m [mean F_rgb, mean F_depth, mean F_thermal])

``V`` is one linear layer (``3C -> 3 x heads``), zero-initialised, so switching it on changes
nothing until it is trained. An absent modality (no MCN) contributes zeros to the descriptor.
The weights only mean "reliability" if something asks the gates not to trust everything: the
``omega_cost_weight`` of :class:`~damcseg_core.losses.dsjl.LossConfig` charges the mean weight.
"""

from __future__ import annotations

import torch
from torch import nn

from damcseg_core import MODALITIES

__all__ = ["ConcatFusion", "ModalAdaptiveAttention"]


class ModalAdaptiveAttention(nn.Module):
    """Per-modality, per-head sigmoid reliability weights and their weighted sum.

    Args:
        channels: feature channels ``C`` of every modality.
        heads: reliability maps per modality; ``channels`` must be divisible by it.
        completion_flag: learn the completed-vs-real offset ``e_m`` (module docstring); ``False``
            is the old behaviour (no extra parameters).
        completion_offset: ``"nonpositive"`` or ``"free"``: the sign ``e_m`` may take (module
            docstring).
        context: add the scene-context offset ``V_m [...]`` (module docstring); ``False`` is eq. 1.
    """

    def __init__(
        self,
        channels: int,
        heads: int = 8,
        completion_flag: bool = True,
        completion_offset: str = "nonpositive",
        context: bool = False,
    ) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        if completion_offset not in ("nonpositive", "free"):
            raise ValueError(f"completion_offset must be 'nonpositive' or 'free', got {completion_offset!r}")
        self.completion_offset = completion_offset
        self.heads = heads
        self.channels = channels
        self.gates = nn.ModuleDict({m: nn.Conv2d(channels, heads, kernel_size=1) for m in MODALITIES})
        # p_m of the module docstring (e_m = -softplus(p_m) or p_m): row m = one value per head.
        self.completion_embed = nn.Parameter(torch.zeros(len(MODALITIES), heads)) if completion_flag else None
        self.context: nn.Linear | None = None
        if context:
            self.context = nn.Linear(len(MODALITIES) * channels, len(MODALITIES) * heads)
            nn.init.zeros_(self.context.weight)
            nn.init.zeros_(self.context.bias)

    def forward(
        self, feats: dict[str, torch.Tensor], completed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse modality features.

        Args:
            feats: modality -> ``[B, C, h, w]``; any non-empty subset of ``MODALITIES``.
            completed: optional ``[B, 3]`` (bool or 0/1 float, ``MODALITIES`` order): 1 where the
                sample's features of that modality are an MCN prediction. ``None`` = all real.

        Returns:
            ``F_fusion [B, C, h, w]`` and ``omega [B, 3]``: mean ``omega_m`` per
            modality in ``MODALITIES`` order (0 for a modality absent from ``feats``).
        """
        if not feats:
            raise ValueError("ModalAdaptiveAttention needs at least one modality")
        first = next(iter(feats.values()))
        b, c, h, w = first.shape
        fused = torch.zeros_like(first)
        weights = first.new_zeros(b, len(MODALITIES))
        offsets = None
        scene = None
        if self.context is not None:
            desc = torch.cat(
                [feats[m].mean(dim=(2, 3)) if m in feats else first.new_zeros(b, c) for m in MODALITIES],
                dim=1,
            )
            scene = self.context(desc).view(b, len(MODALITIES), self.heads)
        for i, m in enumerate(MODALITIES):
            if m not in feats:
                continue
            f = feats[m]
            logit = self.gates[m](f)  # [B, heads, h, w]
            if scene is not None:
                logit = logit + scene[:, i, :, None, None]
            if completed is not None and self.completion_embed is not None:
                if offsets is None:
                    offsets = self.offsets().to(logit.dtype)
                flag = completed[:, i].to(logit.dtype)
                logit = logit + flag[:, None, None, None] * offsets[i][None, :, None, None]
            omega = torch.sigmoid(logit)  # eq. 1
            weights[:, i] = omega.mean(dim=(1, 2, 3))
            # Each head's map weights its own C/heads channel group (eq. 2 per group).
            fused = fused + (f.view(b, self.heads, c // self.heads, h, w) * omega.unsqueeze(2)).view(
                b, c, h, w
            )
        return fused, weights

    def offsets(self) -> torch.Tensor:
        """``e [3, heads]``: the gate-logit offset of each modality's heads when it is completed."""
        if self.completion_embed is None:
            raise ValueError("this attention was built with completion_flag=False: it has no offsets")
        if self.completion_offset == "free":
            return self.completion_embed
        return -nn.functional.softplus(self.completion_embed)


class ConcatFusion(nn.Module):
    """Ablation baseline without LMMF: concatenate all modalities' features and mix them 1x1.

    A missing modality contributes zeros (no completion network); the reported modality
    "weights" are simply the presence flags.

    Args:
        channels: feature channels ``C`` of every modality.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mix = nn.Sequential(
            nn.Conv2d(channels * len(MODALITIES), channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )

    def forward(
        self, feats: dict[str, torch.Tensor], completed: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same contract as :meth:`ModalAdaptiveAttention.forward` (``completed`` is ignored:
        this baseline has no MCN, a missing modality is zeros)."""
        if not feats:
            raise ValueError("ConcatFusion needs at least one modality")
        ref = next(iter(feats.values()))
        parts = [feats[m] if m in feats else torch.zeros_like(ref) for m in MODALITIES]
        presence = ref.new_tensor([float(m in feats) for m in MODALITIES]).expand(ref.shape[0], -1)
        return self.mix(torch.cat(parts, dim=1)), presence
