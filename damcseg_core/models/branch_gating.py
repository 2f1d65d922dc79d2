"""Branch adaptive selection of the local path (DAMCSeg paper, Sec. III.E.2).

A 2-layer MLP looks at each target (ROI) and decides which of the three local-path branches
to run: the **edge** branch (boundary refinement), the **context** branch (dilated / pooled
context) and the **consistency** branch (pulls the ROI's pixels towards the ROI's dominant
class). A base 1x1 classifier always runs; the branches add corrections to its logits.

* Eval mode: a branch whose gate probability is below ``threshold`` (0.5) is switched off for
  that ROI and is really skipped: it runs only on the subset of ROIs that need it, and is not
  called at all when none does. Active branches contribute ``p * branch(roi)`` as in training.
* Train mode: soft gating, every branch runs on every ROI and contributes ``p * branch(roi)``,
  so the gate learns through its probabilities. ``gate_cost`` (mean gate probability, i.e. the
  expected share of branch evaluations) is a compute penalty the loss may add with a small
  weight, pushing gates of branches that do not help towards "off".
* ``force_all=True`` runs every branch on every ROI in any mode (benchmarks, ablations).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

__all__ = [
    "BRANCH_NAMES",
    "GATE_IN_FEATURES",
    "BranchGate",
    "BranchGateConfig",
    "LocalBranchOutput",
    "LocalBranches",
    "gate_features",
]

BRANCH_NAMES: tuple[str, str, str] = ("edge", "context", "consistency")
GATE_IN_FEATURES = 5  # columns of gate_features()


@dataclasses.dataclass
class BranchGateConfig:
    """Settings of the branch gate and of the local branches."""

    hidden: int = 16  # hidden width of the 2-layer gate MLP
    threshold: float = 0.5  # eval: a branch runs for an ROI when its gate probability >= this
    initial_on_bias: float = 2.0  # initial gate logit bias: sigmoid(2) = 0.88, all branches start on
    branch_channels: int = 32  # hidden channels of the context branch
    context_dilations: tuple[int, int] = (2, 4)  # dilations of the context branch's two 3x3 convs

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.branch_channels < 1:
            raise ValueError(
                f"hidden and branch_channels must be >= 1, got {self.hidden} and {self.branch_channels}"
            )
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold} (paper behaviour: 0.5)")


def _flat(x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    if isinstance(x, (list, tuple)):
        return torch.cat([t.reshape(-1) for t in x]) if len(x) else torch.zeros(0)
    return x.reshape(-1)


def gate_features(
    sizes: torch.Tensor | list[torch.Tensor],
    ambiguity: torch.Tensor | list[torch.Tensor],
    scene_S: torch.Tensor,
    scores: torch.Tensor | list[torch.Tensor],
    edge_strength: torch.Tensor | list[torch.Tensor],
) -> torch.Tensor:
    """Gate inputs of every target, ``[N, GATE_IN_FEATURES]``, all columns in [0, 1].

    Columns:
        0. ``sqrt(S_z)``: linear size of the box relative to the image (the square root spreads
           the small targets, where the decision matters, over a wider range).
        1. ``A``: semantic ambiguity of the target (DSAF, eq. 6).
        2. ``S``: scene complexity of the target's image (eq. 5).
        3. detection score of the target.
        4. edge strength: normalised Canny edge density inside the box
           (``SceneComplexity.box_edge_density``); clear edges make the edge branch redundant.

    Every argument is either a flat ``[N]`` tensor (``scene_S`` then holds each target's image
    score) or a per-image list of ``[N_i]`` tensors; in the list form ``scene_S`` is ``[B]`` and
    is repeated for each image's targets, and rows follow image order.

    Raises:
        ValueError: lengths that disagree.
    """
    if isinstance(sizes, (list, tuple)):
        counts = torch.tensor([len(t.reshape(-1)) for t in sizes])
        if scene_S.numel() != len(sizes):
            raise ValueError(
                f"per-image lists need scene_S of shape [B] = [{len(sizes)}], got {tuple(scene_S.shape)}"
            )
        s_col = torch.repeat_interleave(scene_S.reshape(-1), counts.to(scene_S.device))
    else:
        s_col = scene_S.reshape(-1)
    cols = [_flat(sizes), _flat(ambiguity), s_col, _flat(scores), _flat(edge_strength)]
    n = cols[0].numel()
    names = ("sizes", "ambiguity", "scene_S", "scores", "edge_strength")
    for name, col in zip(names, cols):
        if col.numel() != n:
            raise ValueError(
                f"gate_features: {name} has {col.numel()} values but sizes has {n}; give one per target"
            )
    device = cols[0].device
    cols[0] = cols[0].clamp(0, 1).sqrt()
    return torch.stack([c.to(device, torch.float32).clamp(0, 1) for c in cols], dim=1)


class BranchGate(nn.Module):
    """2-layer MLP: gate features ``[N, F]`` -> 3 logits (edge, context, consistency).

    Args:
        in_features: ``F`` (``GATE_IN_FEATURES`` for :func:`gate_features`).
        hidden: hidden width.
        initial_on_bias: bias of the output layer at initialisation (positive = branches start on).
    """

    def __init__(
        self, in_features: int = GATE_IN_FEATURES, hidden: int = 16, initial_on_bias: float = 2.0
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.mlp = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 3))
        nn.init.constant_(self.mlp[2].bias, initial_on_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, F]`` -> ``[N, 3]`` gate logits."""
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(
                f"gate inputs must be [N, {self.in_features}] (see gate_features), got {tuple(x.shape)}"
            )
        return self.mlp(x)


class EdgeBranch(nn.Module):
    """Boundary refinement: two depthwise 3x3 convs (local gradients per channel) -> 1x1 to K."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1),
        )

    def forward(self, feats: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
        return self.body(feats)


class ContextBranch(nn.Module):
    """Context: two dilated 3x3 convs plus the ROI-pooled feature, fused by a 1x1 conv to K."""

    def __init__(self, channels: int, num_classes: int, hidden: int, dilations: tuple[int, int]) -> None:
        super().__init__()
        d1, d2 = dilations
        self.dilated = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=d1, dilation=d1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=d2, dilation=d2),
            nn.ReLU(inplace=True),
        )
        self.pooled = nn.Conv2d(channels, hidden, 1)
        self.out = nn.Conv2d(hidden, num_classes, 1)

    def forward(self, feats: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
        pooled = torch.relu(self.pooled(feats.mean(dim=(2, 3), keepdim=True)))
        return self.out(self.dilated(feats) + pooled)


class ConsistencyBranch(nn.Module):
    """Semantic consistency: mixes 3x3-smoothed base logits with the ROI's mean base logits.

    Pulls pixels that disagree with the ROI's dominant class (and isolated outliers) towards it,
    so a target is labelled as one object.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.smooth = nn.Conv2d(num_classes, num_classes, 3, padding=1, groups=num_classes, bias=False)
        nn.init.constant_(self.smooth.weight, 1 / 9)  # starts as a box filter
        self.mix = nn.Conv2d(2 * num_classes, num_classes, 1)

    def forward(self, feats: torch.Tensor, base_logits: torch.Tensor) -> torch.Tensor:
        roi_mean = base_logits.mean(dim=(2, 3), keepdim=True).expand_as(base_logits)
        return self.mix(torch.cat([self.smooth(base_logits) - base_logits, roi_mean - base_logits], dim=1))


@dataclasses.dataclass
class LocalBranchOutput:
    """Result of :class:`LocalBranches`.

    Attributes:
        logits: ``[N, K, h, w]`` base logits plus the gated branch contributions.
        active: ``[N, 3]`` bool, which branches were computed and added for each ROI
            (edge, context, consistency); all True in train mode and with ``force_all``.
        gate_probs: ``[N, 3]`` sigmoid gate probabilities.
        gate_cost: scalar, mean gate probability (compute penalty; 0 when N = 0).
    """

    logits: torch.Tensor
    active: torch.Tensor
    gate_probs: torch.Tensor
    gate_cost: torch.Tensor


class LocalBranches(nn.Module):
    """Base classifier + three gated branch heads on ROI features.

    Args:
        in_channels: ``C`` of the ROI features.
        num_classes: ``K``.
        gate_in_features: ``F`` of the gate inputs (``GATE_IN_FEATURES``).
        cfg: gate and branch settings; defaults to :class:`BranchGateConfig`.
    """

    GATE_IN_FEATURES = GATE_IN_FEATURES

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        gate_in_features: int = GATE_IN_FEATURES,
        cfg: BranchGateConfig | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg or BranchGateConfig()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.base = nn.Conv2d(in_channels, num_classes, 1)
        self.gate = BranchGate(gate_in_features, self.cfg.hidden, self.cfg.initial_on_bias)
        self.branches = nn.ModuleDict(
            {
                "edge": EdgeBranch(in_channels, num_classes),
                "context": ContextBranch(
                    in_channels, num_classes, self.cfg.branch_channels, self.cfg.context_dilations
                ),
                "consistency": ConsistencyBranch(num_classes),
            }
        )

    def forward(
        self, roi_feats: torch.Tensor, gate_inputs: torch.Tensor, force_all: bool = False
    ) -> LocalBranchOutput:
        """Classify ROI features with the gated branches.

        Args:
            roi_feats: ``[N, C, h, w]`` ROI features.
            gate_inputs: ``[N, F]`` from :func:`gate_features`.
            force_all: run every branch on every ROI regardless of the gate.

        Returns:
            :class:`LocalBranchOutput`.
        """
        if roi_feats.dim() != 4 or roi_feats.shape[1] != self.in_channels:
            raise ValueError(f"roi_feats must be [N, {self.in_channels}, h, w], got {tuple(roi_feats.shape)}")
        n = roi_feats.shape[0]
        if gate_inputs.shape[0] != n:
            raise ValueError(
                f"gate_inputs has {gate_inputs.shape[0]} rows but there are {n} ROIs; give one per ROI"
            )
        probs = torch.sigmoid(self.gate(gate_inputs.to(roi_feats)))
        base = self.base(roi_feats)
        if n == 0:
            return LocalBranchOutput(base, probs.new_zeros(0, 3, dtype=torch.bool), probs, probs.sum())
        gate_cost = probs.mean()
        run_all = self.training or force_all
        active = torch.ones_like(probs, dtype=torch.bool) if run_all else probs >= self.cfg.threshold
        logits = base
        for k, name in enumerate(BRANCH_NAMES):
            branch = self.branches[name]
            if run_all:
                logits = logits + probs[:, k, None, None, None] * branch(roi_feats, base)
                continue
            idx = active[:, k].nonzero().flatten()
            if idx.numel() == 0:
                continue  # no ROI needs this branch: do not run it at all
            out = branch(roi_feats[idx], base[idx]) * probs[idx, k, None, None, None]
            logits = logits.index_add(0, idx, out)
        return LocalBranchOutput(logits=logits, active=active, gate_probs=probs, gate_cost=gate_cost)
