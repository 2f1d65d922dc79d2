"""Scene complexity evaluation of the DSAF module (DAMCSeg paper, Sec. III.D.1, eq. 5).

``S = 0.4 D + 0.3 O + 0.3 E`` with target density ``D``, occlusion coefficient ``O`` and edge
density ``E``. The paper defines the three indicators only loosely and only with ground truth in
mind; at inference time there is no ground truth, so this module fixes them as follows (every
indicator lies in [0, 1] so that ``S`` does too and the 0.3 / 0.7 category thresholds apply):

* **Target density** ``D = 1 - exp(-N / n_ref)`` where ``N`` is the number of detections with
  score ``>= score_threshold`` and ``n_ref = density_ref_count`` (default 10). The paper's
  "targets / image area" measures area in units of the whole frame, so the same scene gives the
  same ``D`` whatever resolution the model runs at (the model sees a resized image; a
  "targets per megapixel" count would change with the resize). The exponential saturates
  smoothly: 1 target -> 0.10, 3 -> 0.26, 10 -> 0.63, 20 -> 0.86.
* **Occlusion coefficient** ``O`` = occluded target pixels / all target pixels, estimated from
  the detected boxes: a pixel of a box is occluded when it lies inside a box that is *nearer*.
  Nearer means a smaller median valid depth inside the box when depth is given (boxes without
  valid depth count as farthest), otherwise a lower bottom edge (larger ``y2``), which is
  nearer for a forward-looking road camera; ties are broken by the bottom edge. The median is
  taken over a regular subsample of at most ~1024 of the box's pixels. (A box more
  than half hidden takes its occluder's median depth and ties with it; the bottom edge then
  decides, which is what the camera geometry suggests anyway.) Boxes are
  rasterised (coordinates rounded to whole pixels) and processed nearest first while a
  coverage mask accumulates their union, so a pixel covered by several nearer boxes is counted
  once. The denominator is the sum of the box areas (each target's own pixels). The nearness
  order decides *which* target is occluded (``SceneComplexity.box_occlusion``, per target); the
  frame total is the same for any order (it equals ``1 - union area / sum of box areas``).
* **Edge density** ``E = min(1, raw / edge_ref)`` where ``raw`` = Canny edge pixels / image
  pixels, computed with ``cv2.Canny(gray8, canny_low=100, canny_high=200)`` on the 8-bit
  grayscale image (ITU-R 601 luma). Frames taller than ``edge_work_height`` (256) are first
  downscaled (area interpolation) to that height, so ``raw`` does not fall with resolution
  (edge pixels grow with the side length, the area with its square). Natural images give
  ``raw`` of about 0.02-0.15, hence ``edge_ref = 0.2``.

``S`` is a control signal: it is computed without gradients, on the CPU with OpenCV (a GPU
input is copied to the host), and costs about 1-3 ms at 256x512 with 15 boxes and depth.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import torch

__all__ = [
    "INITIAL_BRANCH_WEIGHTS",
    "SceneComplexity",
    "SceneComplexityConfig",
    "estimate_scene_complexity",
    "initial_alpha_beta_gamma",
    "scene_category",
]

# Paper Sec. IV.A.3: (alpha, beta, gamma) = (global, local, post-processing) per category.
INITIAL_BRANCH_WEIGHTS: tuple[tuple[float, float, float], ...] = (
    (0.6, 0.2, 0.1),  # 0 simple      S < 0.3
    (0.5, 0.3, 0.2),  # 1 moderate    0.3 <= S <= 0.7
    (0.4, 0.4, 0.3),  # 2 complex     S > 0.7
)


@dataclasses.dataclass
class SceneComplexityConfig:
    """Settings of the scene complexity score (eq. 5) and of its three indicators."""

    weight_density: float = 0.4  # eq. 5 weight of the target density D
    weight_occlusion: float = 0.3  # eq. 5 weight of the occlusion coefficient O
    weight_edges: float = 0.3  # eq. 5 weight of the edge density E
    simple_below: float = 0.3  # S < this -> simple scene (paper: 0.3)
    complex_above: float = 0.7  # S > this -> complex scene (paper: 0.7); in between -> moderate
    score_threshold: float = 0.3  # detections below this score are not targets (paper ROI threshold)
    density_ref_count: float = 10.0  # n_ref in D = 1 - exp(-N / n_ref); D(n_ref) = 0.63
    edge_ref: float = 0.2  # raw Canny edge density that maps to E = 1
    canny_low: float = 100.0  # cv2.Canny hysteresis low threshold on the 8-bit gray image
    canny_high: float = 200.0  # cv2.Canny hysteresis high threshold on the 8-bit gray image
    edge_work_height: int = 256  # taller frames are downscaled to this height before Canny; 0 = never

    def __post_init__(self) -> None:
        if not 0.0 <= self.simple_below <= self.complex_above <= 1.0:
            raise ValueError(
                f"need 0 <= simple_below <= complex_above <= 1, got {self.simple_below} and "
                f"{self.complex_above} (paper: 0.3 and 0.7)"
            )
        for name in ("density_ref_count", "edge_ref"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.canny_low <= self.canny_high:
            raise ValueError(
                f"need 0 <= canny_low <= canny_high, got {self.canny_low} and {self.canny_high} (e.g. 100 and 200)"
            )
        if self.edge_work_height < 0:
            raise ValueError(
                f"edge_work_height must be >= 0 (0 disables resizing), got {self.edge_work_height}"
            )


@dataclasses.dataclass
class SceneComplexity:
    """Scene complexity of a batch of ``B`` frames.

    Attributes:
        S: ``[B]`` float score of eq. 5, in [0, 1].
        D: ``[B]`` float target density in [0, 1].
        O: ``[B]`` float occlusion coefficient in [0, 1].
        E: ``[B]`` float edge density in [0, 1].
        category: ``[B]`` int64, 0 simple / 1 moderate / 2 complex.
        box_edge_density: per image ``[N]`` float, the normalised Canny edge density inside each
            given box (same normalisation as ``E``), aligned with the boxes passed in; an input of
            the branch gate (:func:`damcseg_core.models.branch_gating.gate_features`).
        box_occlusion: per image ``[N]`` float, share of each box's pixels covered by nearer
            targets, aligned with the boxes passed in (0 for boxes below the score threshold,
            which are not targets).
    """

    S: torch.Tensor
    D: torch.Tensor
    O: torch.Tensor  # noqa: E741 - the paper's name for the occlusion coefficient
    E: torch.Tensor
    category: torch.Tensor
    box_edge_density: list[torch.Tensor] = dataclasses.field(default_factory=list)
    box_occlusion: list[torch.Tensor] = dataclasses.field(default_factory=list)


def scene_category(S: torch.Tensor, cfg: SceneComplexityConfig | None = None) -> torch.Tensor:
    """Map scores to categories: 0 simple (``S < 0.3``), 1 moderate (``0.3 <= S <= 0.7``), 2 complex.

    Both boundaries belong to the moderate category, as in the paper.

    Args:
        S: ``[B]`` scene complexity scores.
        cfg: thresholds; defaults to the paper's.

    Returns:
        ``[B]`` int64 categories on the device of ``S``.
    """
    cfg = cfg or SceneComplexityConfig()
    cat = torch.ones_like(S, dtype=torch.int64)
    cat = torch.where(S < cfg.simple_below, torch.zeros_like(cat), cat)
    return torch.where(S > cfg.complex_above, torch.full_like(cat, 2), cat)


def initial_alpha_beta_gamma(category: torch.Tensor) -> torch.Tensor:
    """Initial (alpha, beta, gamma) of each frame from its category (paper Sec. IV.A.3).

    Args:
        category: ``[B]`` int64 in {0, 1, 2}.

    Returns:
        ``[B, 3]`` float32 on the device of ``category``.

    Raises:
        ValueError: a category outside {0, 1, 2}.
    """
    if category.numel() and (int(category.min()) < 0 or int(category.max()) > 2):
        raise ValueError(
            f"categories must be 0 (simple), 1 (moderate) or 2 (complex), got {category.tolist()}; "
            "compute them with scene_category(S)"
        )
    table = torch.tensor(INITIAL_BRANCH_WEIGHTS, dtype=torch.float32, device=category.device)
    return table[category.long()]


def _rasterise(box: np.ndarray, h: int, w: int) -> tuple[int, int, int, int]:
    """Whole-pixel ``(x1, y1, x2, y2)`` of a box, clipped to the image (may be empty)."""
    x1, y1, x2, y2 = (math.floor(float(v) + 0.5) for v in box)  # half-up, not banker's rounding
    return max(0, x1), max(0, y1), min(w, x2), min(h, y2)


def _occlusion(boxes: np.ndarray, depth: np.ndarray | None, h: int, w: int) -> tuple[float, np.ndarray]:
    """Frame occlusion coefficient and per-box occluded share (see module docstring)."""
    per_box = np.zeros(len(boxes), dtype=np.float64)
    if len(boxes) < 2:
        return 0.0, per_box
    rects = [_rasterise(b, h, w) for b in boxes]
    keys = []
    for (x1, y1, x2, y2), box in zip(rects, boxes):
        near = math.inf
        if depth is not None and x2 > x1 and y2 > y1:
            # A regular subsample of at most ~1024 pixels gives the same median for practical
            # purposes and keeps the cost independent of the box size.
            step = max(1, int(math.sqrt((x2 - x1) * (y2 - y1) / 1024)))
            patch = depth[y1:y2:step, x1:x2:step]
            valid = patch[np.isfinite(patch) & (patch > 0)]
            if valid.size:
                near = float(np.median(valid))
        # Sort key: nearest depth first; without depth (or on ties) the lower bottom edge first.
        keys.append((near, -float(box[3])))
    order = sorted(range(len(rects)), key=lambda i: keys[i])
    covered = np.zeros((h, w), dtype=bool)
    occluded = 0
    total = 0
    for i in order:
        x1, y1, x2, y2 = rects[i]
        if x2 <= x1 or y2 <= y1:
            continue
        region = covered[y1:y2, x1:x2]
        hidden = int(region.sum())
        per_box[i] = hidden / region.size
        occluded += hidden
        total += region.size
        region[...] = True
    return (occluded / total if total else 0.0), per_box


def _edge_map(image: torch.Tensor, cfg: SceneComplexityConfig) -> np.ndarray:
    """Boolean Canny edge map of one ``[C, H, W]`` image in [0, 1] (possibly downscaled)."""
    img = image.detach().float().cpu()
    if img.shape[0] == 3:
        luma = torch.tensor([0.299 * 255, 0.587 * 255, 0.114 * 255])  # ITU-R 601, as cv2's RGB2GRAY
    else:
        luma = torch.full((img.shape[0],), 255.0 / img.shape[0])
    # One BLAS call instead of per-channel arithmetic: this runs on every frame.
    gray = torch.tensordot(luma, img, dims=1)
    gray8 = gray.add_(0.5).clamp_(0, 255).to(torch.uint8).numpy()
    h, w = gray8.shape
    if cfg.edge_work_height and h > cfg.edge_work_height:
        new_w = max(1, round(w * cfg.edge_work_height / h))
        gray8 = cv2.resize(gray8, (new_w, cfg.edge_work_height), interpolation=cv2.INTER_AREA)
    return cv2.Canny(gray8, cfg.canny_low, cfg.canny_high) > 0


@torch.no_grad()
def estimate_scene_complexity(
    image: torch.Tensor,
    boxes: list[torch.Tensor],
    scores: list[torch.Tensor],
    depth: torch.Tensor | None = None,
    cfg: SceneComplexityConfig | None = None,
) -> SceneComplexity:
    """Scene complexity (eq. 5) of a batch, with the indicator definitions of the module docstring.

    Args:
        image: ``[B, C, H, W]`` guide image in [0, 1] (C = 3 RGB, or 1).
        boxes: per image ``[N, 4]`` xyxy pixel boxes (detections).
        scores: per image ``[N]`` detection scores; boxes below ``cfg.score_threshold`` are not
            counted as targets for D and O.
        depth: optional ``[B, 1, H, W]`` depth in metres, 0 (or non-finite) = invalid.
        cfg: indicator settings; defaults to :class:`SceneComplexityConfig`.

    Returns:
        :class:`SceneComplexity` with ``[B]`` tensors on the device of ``image``.

    Raises:
        ValueError: shapes that do not match.
    """
    cfg = cfg or SceneComplexityConfig()
    if image.dim() != 4:
        raise ValueError(f"image must be [B, C, H, W] in [0, 1], got shape {tuple(image.shape)}")
    b, _, h, w = image.shape
    if len(boxes) != b or len(scores) != b:
        raise ValueError(
            f"boxes and scores must be lists with one tensor per image ({b}), got {len(boxes)} and {len(scores)}"
        )
    if depth is not None and (depth.dim() != 4 or depth.shape[0] != b or depth.shape[-2:] != (h, w)):
        raise ValueError(
            f"depth must be [B, 1, H, W] = [{b}, 1, {h}, {w}] metres, got {tuple(depth.shape)}; "
            "resize it to the image size (nearest) first"
        )
    d_vals, o_vals, e_vals, box_edges, box_occ = [], [], [], [], []
    for i in range(b):
        bx = boxes[i].detach().reshape(-1, 4).float().cpu().numpy()
        sc = scores[i].detach().reshape(-1).float().cpu().numpy()
        if len(sc) != len(bx):
            raise ValueError(f"image {i}: {len(bx)} boxes but {len(sc)} scores; give one score per box")
        keep = sc >= cfg.score_threshold
        n = int(keep.sum())
        d_vals.append(1.0 - math.exp(-n / cfg.density_ref_count))
        dep = depth[i, 0].detach().float().cpu().numpy() if depth is not None else None
        o_frame, o_box = _occlusion(bx[keep], dep, h, w)
        o_vals.append(o_frame)
        o_all = np.zeros(len(bx), dtype=np.float32)
        o_all[keep] = o_box
        box_occ.append(torch.from_numpy(o_all).to(image.device))

        edges = _edge_map(image[i], cfg)
        e_vals.append(min(1.0, np.count_nonzero(edges) / edges.size / cfg.edge_ref))
        # Per-box edge density on the (possibly downscaled) edge map.
        eh, ew = edges.shape
        sx, sy = ew / w, eh / h
        per_box = []
        for box in bx:
            x1, y1, x2, y2 = _rasterise(box * np.array([sx, sy, sx, sy]), eh, ew)
            x2, y2 = max(x2, min(ew, x1 + 1)), max(y2, min(eh, y1 + 1))  # at least one pixel
            x1, y1 = min(x1, x2 - 1), min(y1, y2 - 1)
            count = np.count_nonzero(edges[y1:y2, x1:x2])
            per_box.append(min(1.0, count / ((x2 - x1) * (y2 - y1)) / cfg.edge_ref))
        box_edges.append(torch.tensor(per_box, dtype=torch.float32, device=image.device))

    def as_tensor(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=image.device)

    D, O, E = as_tensor(d_vals), as_tensor(o_vals), as_tensor(e_vals)  # noqa: E741
    S = (cfg.weight_density * D + cfg.weight_occlusion * O + cfg.weight_edges * E).clamp(0, 1)
    return SceneComplexity(
        S=S, D=D, O=O, E=E, category=scene_category(S, cfg), box_edge_density=box_edges, box_occlusion=box_occ
    )
