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

**Where the output lives.** Every encoder ends in a ReLU (``RgbEncoder.act`` and the last
``_DilatedBlock.act`` of ``DilatedModalEncoder``), so real features are non-negative and
41-44 % exact zeros. A linear output layer trained with MSE + cosine regresses to the mean
there (issue #16: 0.2-0.7 % zeros, normalised MSE 0.80-0.96, worse downstream than zero-fill).
``output="relu"`` (the default of new models, ``CompletionConfig.output``) puts the same ReLU on
the prediction: it can produce exact zeros and never the negative values the following layers
have never seen. Measured on a toy (thermal = ReLU(A rgb + b + sigma z), rgb = sparse ReLU
features, z an unobserved noise, C = 8, hidden 32, 300 Adam steps of the completion loss, mean of
3 seeds; ``test/unit/test_modality_dropout.py`` keeps the sigma = 0 case as a test):

==========  ========================  =====================  ==========================
sigma       normalised MSE lin/relu/sp  exact zeros lin/relu/sp  target zeros, zero-fill NMSE
0           0.023 / 0.030 / 0.017     0.00 / 0.59 / 0.00     0.56, 1.30
0.5         0.150 / 0.144 / 0.143     0.00 / 0.46 / 0.00     0.55, 1.33
1.0         0.389 / 0.382 / 0.380     0.00 / 0.28 / 0.00     0.54, 1.37
==========  ========================  =====================  ==========================

The MSE is the same for all three (the MSE-optimal prediction is the conditional mean, whatever
the output layer), so the choice is about *where* the prediction lives: only ReLU reproduces the
encoder's support (exact zeros, no negative values), and it is the encoder's own activation.
What makes the completion useful downstream is the distillation term and per-sample dropout
(:mod:`damcseg_core.losses.completion`, :mod:`damcseg_core.train.modality_dropout`), not the
output layer. Completing before the activation would need the encoders' pre-activations (a
change of every encoder); a residual on a learned prior still needs a non-negative output.
``output="linear"`` is the old behaviour (checkpoints
written before the field existed load with it).

**Spatial context** (``context``, ``row_embedding``; issue #16). A per-location MLP can only
map the present sensors' features at a pixel to the missing one's at the same pixel. Depth is
geometry: where the ground is, how far an object is, where a silhouette ends - cues spread over
a neighbourhood and tied to the image row (the ground plane). ``context = k`` adds k residual
blocks (depthwise 3x3 with dilation 1, 2, 4, ..., GELU, 1x1) after the first layer; the receptive
field on the stride-8 feature map grows to +-(2^k - 1) cells. ``row_embedding`` adds a learned
function of the normalised row (-1 top, +1 bottom). Both start at exactly zero (zero-initialised
last layers), so a trained per-location MCN can be warm-started into the larger one. Cost: the
MCN only runs for a missing sensor. Measured on edge v6 (``config/train/edge_v6_mcn_context.yaml``,
docs/edge_v6/probes_2026-12-02.md): the same 700-step MCN stage on top of v6's MCN, with and
without ``context=3`` + row embedding, paired against v6 with the sensor missing
(``tools/compare_checkpoints.py --protocol missing:<m>``, 90 % bootstrap):

==============================  ======================  ======================  ==============
depth missing, mIoU vs v6       validation 1001          held-out 2024 (48)      2025 (200)
==============================  ======================  ======================  ==============
700 more steps, per-location    +0.2 [-0.0, +0.5]        -                       -
context 3 + row embedding       +1.0 [+0.2, +1.9]        -0.3 [-1.5, +0.5]       +0.2 [-0.3, +0.6]
==============================  ======================  ======================  ==============

Thermal missing: +0.7 / +0.9 / +0.4, RGB missing: - / +0.5 / +0.2. The validation gain on depth
did not hold on the held-out seeds, so the shipped model keeps the per-location MCN (context 0).
The completed depth features are not worse than the completed thermal ones (normalised MSE
0.41 vs 0.43 for v6, 0.37 vs 0.39 with context; zero-fill 1.46 / 1.52), yet they recover 17-37 %
of the depth gap against 55-64 % for thermal: the network downstream, trained on real depth,
is what the completion fails to satisfy, not the per-pixel regression.

**Where the depth gap is** (``tools/completion_gap.py``, docs/edge_v6_2/probes_2026-12-03.md).
On edge v6.2 the real depth features *without* the raw depth image in the refinement recover
89 % / 84 % / 86 % of the depth gap (seeds 1001 / 2024 / 2025), the MCN 17 % / 32 % / 22 %; in the
global path alone the completed depth recovers 15-22 %, thermal 59-64 %. Three more trainings of
this MCN moved depth by at most +0.3 mIoU (300 more steps, every sample dropping depth, a
global-path logit distillation from the real-sensor teacher, ``loss.logit_distill_weight``), so
the per-location completion of stride-8 depth features is at its ceiling here.

**Per-sample presence.** :meth:`ModalCompletionNetwork.complete_masked` takes a ``[B, 3]`` keep
mask: each sample is completed from its own kept modalities (the MLP input and the presence
vector are per sample), and only the dropped entries are replaced (``torch.where``; kept
entries are bit-identical to the encoder output).
"""

from __future__ import annotations

import torch
from torch import nn

from damcseg_core import MODALITIES

__all__ = ["MCN_OUTPUTS", "ModalCompletionNetwork"]

MCN_OUTPUTS = ("relu", "softplus", "linear")
"""Output activations of the MCN (see the module docstring)."""


class _ContextBlock(nn.Module):
    """Residual ``x + pw(GELU(dw(x)))``: a depthwise 3x3 convolution with ``dilation``, then 1x1."""

    def __init__(self, hidden: int, dilation: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=dilation, dilation=dilation, groups=hidden)
        self.pw = nn.Conv2d(hidden, hidden, kernel_size=1)
        self.act = nn.GELU()
        # Zero-initialised: a new block starts as the identity, so context can be added to a
        # trained per-location MCN (init_from) without changing its predictions at step 0.
        nn.init.zeros_(self.pw.weight)
        nn.init.zeros_(self.pw.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw(self.act(self.dw(x)))


class _CompletionMLP(nn.Module):
    """Per-location MLP ``3C -> hidden (-> hidden)* -> C`` with presence and context embeddings.

    With ``context > 0`` the first hidden map passes through that many :class:`_ContextBlock`
    (dilations 1, 2, 4, ...) before the 1x1 layers; with ``row_embedding`` a learned function of
    the normalised image row is added to the first layer (see the module docstring).
    """

    def __init__(
        self,
        channels: int,
        hidden: int,
        layers: int,
        output: str = "relu",
        context: int = 0,
        row_embedding: bool = False,
    ) -> None:
        super().__init__()
        n = len(MODALITIES)
        self.inp = nn.Conv2d(n * channels, hidden, kernel_size=1)
        self.presence = nn.Linear(n, hidden, bias=False)
        self.context = nn.Linear(n * channels, hidden, bias=False)
        # 1 -> 16 -> hidden: a smooth function of the row (a 1x1 conv on the row alone would be linear).
        self.row = (
            nn.Sequential(
                nn.Conv2d(1, 16, kernel_size=1), nn.GELU(), nn.Conv2d(16, hidden, kernel_size=1, bias=False)
            )
            if row_embedding
            else None
        )
        if self.row is not None:  # starts at 0 (see _ContextBlock)
            nn.init.zeros_(self.row[2].weight)
        self.spatial = nn.Sequential(*[_ContextBlock(hidden, 2**i) for i in range(context)])
        hidden_layers = []
        for _ in range(layers - 1):
            hidden_layers += [nn.Conv2d(hidden, hidden, kernel_size=1), nn.GELU()]
        self.hidden = nn.Sequential(*hidden_layers)
        self.out = nn.Conv2d(hidden, channels, kernel_size=1)
        self.act = nn.GELU()
        self.out_act = {"relu": nn.ReLU(), "softplus": nn.Softplus(), "linear": nn.Identity()}[output]

    def forward(self, stacked: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        bias = self.presence(presence) + self.context(stacked.mean(dim=(2, 3)))
        pre = self.inp(stacked) + bias[:, :, None, None]
        if self.row is not None:
            h = stacked.shape[2]
            rows = torch.linspace(-1.0, 1.0, h, device=stacked.device, dtype=stacked.dtype).view(1, 1, h, 1)
            pre = pre + self.row(rows)  # [1, hidden, h, 1], broadcast over batch and columns
        x = self.spatial(self.act(pre))
        return self.out_act(self.out(self.hidden(x)))


class ModalCompletionNetwork(nn.Module):
    """Predicts missing modality features from the present ones.

    Args:
        channels: feature channels ``C`` of every modality.
        hidden: hidden width of each per-location MLP.
        layers: hidden layers of each MLP.
        output: output activation, one of :data:`MCN_OUTPUTS` (see the module docstring).
        context: residual dilated depthwise-3x3 blocks per head (0 = per-location MLP).
        row_embedding: add a learned embedding of the image row to each head's first layer.
    """

    def __init__(
        self,
        channels: int,
        hidden: int = 256,
        layers: int = 2,
        output: str = "relu",
        context: int = 0,
        row_embedding: bool = False,
    ) -> None:
        super().__init__()
        if output not in MCN_OUTPUTS:
            raise ValueError(f"MCN output must be one of {list(MCN_OUTPUTS)}, got {output!r}")
        self.channels = channels
        self.output = output
        self.heads = nn.ModuleDict(
            {m: _CompletionMLP(channels, hidden, layers, output, context, row_embedding) for m in MODALITIES}
        )

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

    def complete_masked(self, feats: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
        """Complete each sample from its own kept modalities.

        Args:
            feats: modality -> ``[B, C, h, w]`` encoder features of every modality that at least
                one sample keeps (entries of samples that drop it are ignored).
            keep: ``[B, 3]`` bool, ``MODALITIES`` order: ``True`` = the sample keeps it. Every row
                must keep at least one modality of ``feats``.

        Returns:
            modality -> features of all three modalities: ``feats[m]`` itself (the same tensor)
            where every sample keeps ``m``; else the MCN prediction where ``keep`` is ``False``
            and ``feats[m]`` (bit-identical) where it is ``True``.
        """
        if not feats:
            raise ValueError("the MCN needs at least one present modality")
        ref = next(iter(feats.values()))
        b = ref.shape[0]
        if keep.shape != (b, len(MODALITIES)) or keep.dtype != torch.bool:
            raise ValueError(
                f"keep must be a [{b}, {len(MODALITIES)}] bool mask, got {tuple(keep.shape)} {keep.dtype}"
            )
        host = keep.cpu()
        lacking = [m for i, m in enumerate(MODALITIES) if m not in feats and bool(host[:, i].any())]
        if lacking:
            raise ValueError(f"keep marks {lacking} as kept but feats has no such features")
        if not bool(host.any(dim=1).all()):
            raise ValueError("every sample must keep at least one modality (a row of keep is all False)")
        kept_by_all = {m: bool(host[:, i].all()) for i, m in enumerate(MODALITIES)}
        keep = keep.to(ref.device)
        cols = {m: keep[:, i] for i, m in enumerate(MODALITIES)}
        zero = ref.new_zeros(())
        # The MLP input: a sample's dropped modalities are zeros, exactly as for a missing sensor.
        parts = [
            torch.where(cols[m][:, None, None, None], feats[m], zero) if m in feats else torch.zeros_like(ref)
            for m in MODALITIES
        ]
        stacked = torch.cat(parts, dim=1)
        presence = keep.to(ref.dtype)
        out: dict[str, torch.Tensor] = {}
        for m in MODALITIES:
            if kept_by_all[m]:
                out[m] = feats[m]
                continue
            pred = self.heads[m](stacked, presence)
            out[m] = torch.where(cols[m][:, None, None, None], feats[m], pred) if m in feats else pred
        return out
