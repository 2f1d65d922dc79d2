"""Target characteristic adaptation and dynamic weighting of the DSAF module (paper Sec. III.D.2-3).

Per target: size ``S_z`` = box area / image area and semantic ambiguity ``A`` (below);
``delta_beta = sigmoid(a S_z + b A + c)`` (eq. 6) with learnable ``a, b, c``; then

    alpha = alpha_init (1 - delta_beta)      (eq. 7, global path)
    beta  = beta_init  (1 + delta_beta)      (eq. 8, local path)
    gamma = gamma_init (1 + 0.5 delta_beta)  (eq. 9, post-processing path)

**Ambiguity.** The paper's "variance of pixel-level classification probabilities in the target
region" is taken as the variance of each pixel's classification: a pixel with class
distribution ``p`` has a one-hot label whose per-class Bernoulli variances sum to
``sum_k p_k (1 - p_k) = 1 - sum_k p_k^2``. That is 0 for a confident pixel and at most
``1 - 1/K`` for a uniform one, so ``A`` = the box mean of ``(1 - sum_k p_k^2) / (1 - 1/K)`` lies in
[0, 1]. The spread of probabilities *between* pixels is deliberately not used: a detection box
always contains some background (road around a car), which would make every clean target look
ambiguous. For two competing classes ``A > 0.3`` means a top probability below about 0.8
(``p = (0.8, 0.2)`` gives 0.338 with K = 19, ``(0.9, 0.1)`` gives 0.190).

**Initial a, b, c** (``a = -50, b = 5, c = -1``): at the paper's two thresholds ``S_z = 0.01``
and ``A = 0.3`` the logit is exactly 0 (``delta_beta = 0.5``); smaller or more ambiguous targets
get more, large clear ones almost none (``S_z = 0.1, A = 0.05`` -> 0.002).

:meth:`DSAF.fuse` mixes the *probabilities* of the three paths with per-pixel weights
(:meth:`DSAF.weight_maps`) renormalised over the paths present at that pixel, and returns their
logarithm, so that ``softmax`` of the result is the fused distribution and ``nll_loss`` /
``cross_entropy`` apply directly.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from damcseg_core.models.scene_complexity import INITIAL_BRANCH_WEIGHTS

__all__ = ["DSAF", "FIXED_BRANCH_WEIGHTS", "DSAFConfig", "DSAFWeights"]

# (alpha, beta, gamma) of the non-adaptive ablation baseline: the moderate scene's initial weights.
FIXED_BRANCH_WEIGHTS: tuple[float, float, float] = INITIAL_BRANCH_WEIGHTS[1]


@dataclasses.dataclass
class DSAFConfig:
    """Initial values of the learnable eq. 6 parameters and numerical settings."""

    a_init: float = -50.0  # size coefficient; < 0 so small targets (S_z < 0.01) get larger delta_beta
    b_init: float = 5.0  # ambiguity coefficient; > 0 so ambiguous targets (A > 0.3) get larger delta_beta
    c_init: float = -1.0  # bias; a*0.01 + b*0.3 + c = 0 puts delta_beta = 0.5 at the paper's thresholds
    eps: float = 1e-8  # floor of fused probabilities and weight sums before log / division
    # False: the ablation baseline "fixed fusion" - every frame and target gets the moderate
    # scene's initial weights, no scene-complexity choice and no eq. 6-9 adjustment.
    adaptive: bool = True


@dataclasses.dataclass
class DSAFWeights:
    """Dynamic branch weights of a batch.

    Attributes:
        delta_beta: per image ``[N]`` eq. 6 adjustment of each target, in (0, 1).
        target_alpha_beta_gamma: per image ``[N, 3]`` (alpha, beta, gamma) of each target (eq. 7-9).
        alpha_beta_gamma: ``[B, 3]`` eq. 7-9 with the image's mean ``delta_beta`` (the initial
            weights when the image has no target); used outside every box.
    """

    delta_beta: list[torch.Tensor]
    target_alpha_beta_gamma: list[torch.Tensor]
    alpha_beta_gamma: torch.Tensor


def _pixel_boxes(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Whole-pixel ``[N, 4]`` int64 ``x1, y1, x2, y2`` of ``boxes [N, 4]``: rounded half-up (not
    banker's rounding), clipped to the image, at least one pixel."""
    r = (boxes.detach().reshape(-1, 4).double() + 0.5).floor().long()
    x1, y1 = r[:, 0].clamp(0, w - 1), r[:, 1].clamp(0, h - 1)
    x2 = torch.maximum(x1 + 1, r[:, 2].clamp(max=w))
    y2 = torch.maximum(y1 + 1, r[:, 3].clamp(max=h))
    return torch.stack([x1, y1, x2, y2], 1)


def _adjust(init: torch.Tensor, delta_beta: torch.Tensor) -> torch.Tensor:
    """Eq. 7-9: ``init [..., 3] * (1 - db, 1 + db, 1 + 0.5 db)``."""
    factors = torch.stack([1 - delta_beta, 1 + delta_beta, 1 + 0.5 * delta_beta], dim=-1)
    return init * factors


class DSAF(nn.Module):
    """Learnable eq. 6 adjustment, eq. 7-9 weights, per-pixel weight maps and weighted fusion.

    Args:
        cfg: initial parameters; defaults to :class:`DSAFConfig`.
    """

    def __init__(self, cfg: DSAFConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or DSAFConfig()
        self.a = nn.Parameter(torch.tensor(float(self.cfg.a_init)))
        self.b = nn.Parameter(torch.tensor(float(self.cfg.b_init)))
        self.c = nn.Parameter(torch.tensor(float(self.cfg.c_init)))

    # ------------------------------------------------------------------ target features
    def target_features(
        self, probs: torch.Tensor, boxes: list[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Size ``S_z`` and ambiguity ``A`` of every target.

        Args:
            probs: ``[B, K, H, W]`` per-pixel class probabilities (softmax of the global path).
            boxes: per image ``[N, 4]`` xyxy pixel boxes.

        Returns:
            ``(sizes, ambiguity)``: per image ``[N]`` tensors in [0, 1]. ``S_z`` uses the box
            clipped to the image; ``A`` averages over the box's whole pixels (see module docstring).
        """
        if probs.dim() != 4:
            raise ValueError(f"probs must be [B, K, H, W] class probabilities, got {tuple(probs.shape)}")
        b, k, h, w = probs.shape
        if len(boxes) != b:
            raise ValueError(f"boxes must be a list with one [N, 4] tensor per image ({b}), got {len(boxes)}")
        if k < 2:
            raise ValueError(f"need at least 2 classes to measure ambiguity, got K = {k}")
        impurity = (1 - probs.pow(2).sum(dim=1)) / (1 - 1 / k)  # [B, H, W]
        # Integral image: each box mean in O(1), independent of the box size.
        integral = torch.nn.functional.pad(impurity.cumsum(1).cumsum(2), (1, 0, 1, 0))
        sizes, ambiguity = [], []
        for i in range(b):
            bx = boxes[i].reshape(-1, 4).to(probs.device, probs.dtype)
            clipped = torch.stack(
                [bx[:, 0].clamp(0, w), bx[:, 1].clamp(0, h), bx[:, 2].clamp(0, w), bx[:, 3].clamp(0, h)], 1
            )
            area = (clipped[:, 2] - clipped[:, 0]).clamp_min(0) * (clipped[:, 3] - clipped[:, 1]).clamp_min(0)
            sizes.append(area / (h * w))
            x1, y1, x2, y2 = _pixel_boxes(bx, h, w).to(probs.device).unbind(1)
            ii = integral[i]
            total = ii[y2, x2] - ii[y1, x2] - ii[y2, x1] + ii[y1, x1]
            ambiguity.append((total / ((x2 - x1) * (y2 - y1)).to(total.dtype)).clamp(0, 1))
        return sizes, ambiguity

    # ------------------------------------------------------------------ weights
    def delta_beta(self, sizes: torch.Tensor, ambiguity: torch.Tensor) -> torch.Tensor:
        """Eq. 6: ``sigmoid(a * S_z + b * A + c)`` elementwise."""
        return torch.sigmoid(self.a * sizes + self.b * ambiguity + self.c)

    def forward(
        self, init_weights: torch.Tensor, sizes: list[torch.Tensor], ambiguity: list[torch.Tensor]
    ) -> DSAFWeights:
        """Per-target and per-image branch weights (eq. 6-9).

        Args:
            init_weights: ``[B, 3]`` initial (alpha, beta, gamma) from the scene category
                (:func:`damcseg_core.models.scene_complexity.initial_alpha_beta_gamma`).
            sizes: per image ``[N]`` size coefficients ``S_z``.
            ambiguity: per image ``[N]`` ambiguity coefficients ``A``.

        Returns:
            :class:`DSAFWeights`.
        """
        if init_weights.dim() != 2 or init_weights.shape[1] != 3:
            raise ValueError(
                f"init_weights must be [B, 3] (alpha, beta, gamma), got {tuple(init_weights.shape)}"
            )
        b = init_weights.shape[0]
        if len(sizes) != b or len(ambiguity) != b:
            raise ValueError(
                f"sizes and ambiguity must be lists with one [N] tensor per image ({b}), "
                f"got {len(sizes)} and {len(ambiguity)}"
            )
        if not self.cfg.adaptive:
            fixed = init_weights.new_tensor(FIXED_BRANCH_WEIGHTS)
            deltas = [s.reshape(-1).to(init_weights) * 0 for s in sizes]
            targets = [fixed.expand(len(d), 3).clone() for d in deltas]
            return DSAFWeights(
                delta_beta=deltas,
                target_alpha_beta_gamma=targets,
                alpha_beta_gamma=fixed.expand(b, 3).clone(),
            )
        deltas, targets, images = [], [], []
        for i in range(b):
            sz = sizes[i].reshape(-1).to(init_weights)
            am = ambiguity[i].reshape(-1).to(init_weights)
            if sz.shape != am.shape:
                raise ValueError(f"image {i}: {sz.numel()} sizes but {am.numel()} ambiguity values")
            db = self.delta_beta(sz, am)
            deltas.append(db)
            targets.append(_adjust(init_weights[i].expand(len(db), 3), db))
            images.append(_adjust(init_weights[i], db.mean()) if len(db) else init_weights[i])
        return DSAFWeights(
            delta_beta=deltas, target_alpha_beta_gamma=targets, alpha_beta_gamma=torch.stack(images)
        )

    # ------------------------------------------------------------------ maps and fusion
    @staticmethod
    def weight_maps(
        alpha_beta_gamma: torch.Tensor,
        boxes: list[torch.Tensor],
        target_alpha_beta_gamma: list[torch.Tensor],
        height: int,
        width: int,
    ) -> torch.Tensor:
        """Paint per-pixel (alpha, beta, gamma): each target's weights inside its box, image weights elsewhere.

        Boxes are painted largest first, so where boxes overlap the smaller target's weights win
        (a small target inside a large one keeps its own, larger local weight).

        Returns:
            ``[B, 3, H, W]``, differentiable w.r.t. both weight inputs.
        """
        b = alpha_beta_gamma.shape[0]
        if len(boxes) != b or len(target_alpha_beta_gamma) != b:
            raise ValueError(
                f"boxes and target_alpha_beta_gamma must be lists with one tensor per image ({b}), "
                f"got {len(boxes)} and {len(target_alpha_beta_gamma)}"
            )
        device = alpha_beta_gamma.device
        ys = torch.arange(height, device=device)
        xs = torch.arange(width, device=device)
        per_image = []
        for i in range(b):
            bx = boxes[i].reshape(-1, 4)
            if len(bx) != len(target_alpha_beta_gamma[i]):
                raise ValueError(
                    f"image {i}: {len(bx)} boxes but {len(target_alpha_beta_gamma[i])} target weights"
                )
            background = alpha_beta_gamma[i][:, None, None].expand(3, height, width)
            if len(bx) == 0:
                per_image.append(background)
                continue
            x1, y1, x2, y2 = _pixel_boxes(bx, height, width).to(device).unbind(1)
            inside = ((ys[None] >= y1[:, None]) & (ys[None] < y2[:, None]))[:, :, None] & (
                (xs[None] >= x1[:, None]) & (xs[None] < x2[:, None])
            )[:, None, :]  # [N, H, W]
            # Painting largest first (stable for equal areas) lets the last painted win: the owner
            # of a pixel is the covering box painted last.
            area = (x2 - x1) * (y2 - y1)
            order = torch.sort(-area, stable=True).indices
            rank = torch.empty_like(order)
            rank[order] = torch.arange(len(order), device=device)
            owner = torch.where(inside, rank[:, None, None], -1).max(dim=0).values  # paint rank
            covered = owner >= 0
            owner_box = order[owner.clamp(min=0)]  # [H, W] box index
            painted = (
                target_alpha_beta_gamma[i].to(alpha_beta_gamma.dtype)[owner_box].permute(2, 0, 1)
            )  # [3, H, W]
            per_image.append(torch.where(covered[None], painted, background))
        return torch.stack(per_image)

    def fuse(
        self,
        global_logits: torch.Tensor,
        local_logits: torch.Tensor,
        local_coverage: torch.Tensor,
        post_logits: torch.Tensor,
        post_coverage: torch.Tensor,
        weight_maps: torch.Tensor,
        global_probs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Weighted mixture of the three paths' class probabilities, as log-probabilities.

        ``p = sum_i w_i softmax(logits_i) / sum_i w_i`` with ``w = (alpha, beta * local_coverage,
        gamma * post_coverage)``: the local and post-processing paths only count where their
        coverage is > 0 (fractionally on soft ROI borders), and the weights are renormalised to
        sum to 1 at every pixel, so the global path alone gives back its own distribution.

        Args:
            global_logits: ``[B, K, H, W]`` global path.
            local_logits: ``[B, K, H, W]`` local path (pasted ROIs; ignored where coverage is 0).
            local_coverage: ``[B, 1, H, W]`` in [0, 1].
            post_logits: ``[B, K, H, W]`` post-processing path.
            post_coverage: ``[B, 1, H, W]`` in [0, 1].
            weight_maps: ``[B, 3, H, W]`` from :meth:`weight_maps`.
            global_probs: optional ``softmax(global_logits, dim=1)`` when the caller already has
                it (the refinement head computes it for :meth:`target_features`): one
                ``[B, K, H, W]`` softmax fewer per frame.

        Returns:
            ``[B, K, H, W]`` log-probabilities (``logsumexp`` over K is 0).
        """
        shape = global_logits.shape
        for name, t in (("local_logits", local_logits), ("post_logits", post_logits)):
            if t.shape != shape:
                raise ValueError(
                    f"{name} must have the shape of global_logits {tuple(shape)}, got {tuple(t.shape)}"
                )
        for name, t, c in (
            ("local_coverage", local_coverage, 1),
            ("post_coverage", post_coverage, 1),
            ("weight_maps", weight_maps, 3),
        ):
            if t.shape != (shape[0], c, *shape[2:]):
                raise ValueError(
                    f"{name} must be [B, {c}, H, W] = {(shape[0], c, *shape[2:])}, got {tuple(t.shape)}"
                )
        w = torch.cat(
            [
                weight_maps[:, 0:1],
                weight_maps[:, 1:2] * local_coverage.clamp(0, 1),
                weight_maps[:, 2:3] * post_coverage.clamp(0, 1),
            ],
            dim=1,
        )
        w = w / w.sum(dim=1, keepdim=True).clamp_min(self.cfg.eps)
        if global_probs is None:
            global_probs = torch.softmax(global_logits, dim=1)
        elif global_probs.shape != shape:
            raise ValueError(
                f"global_probs must have the shape of global_logits {tuple(shape)}, got {tuple(global_probs.shape)}"
            )
        fused = w[:, 0:1] * global_probs
        for i, (logits, coverage) in enumerate(
            ((local_logits, local_coverage), (post_logits, post_coverage)), 1
        ):
            # A path that covers no pixel has weight exactly 0 everywhere: its softmax (a third of
            # the fusion's cost) would add exact zeros, so inference skips it (simple scenes).
            if torch.is_grad_enabled() or bool((coverage > 0).any()):
                if torch.is_grad_enabled():
                    fused = fused + w[:, i : i + 1] * torch.softmax(logits, dim=1)
                else:  # inference: accumulate in place (one fresh [B, K, H, W] buffer fewer), same sums
                    fused.add_(w[:, i : i + 1] * torch.softmax(logits, dim=1))
        if torch.is_grad_enabled():
            return fused.clamp_min(self.cfg.eps).log()
        return fused.clamp_min_(self.cfg.eps).log_()
