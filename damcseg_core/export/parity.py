"""Parity of two DAMCSeg backends (PyTorch vs onnxruntime) on the same inputs.

Tolerances (``docs/deployment.md``): segmentation masks (argmax of ``seg_logits``) agree on at
least 99.9 % of the pixels, the same number of boxes matched one-to-one within 1 px (every
coordinate), the same labels, scene complexity ``S`` within 1e-4, branch and modality weights
within 1e-3.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

__all__ = ["MASK_AGREEMENT_MIN", "ParityReport", "compare_outputs", "run_parity", "synthetic_inputs"]

MASK_AGREEMENT_MIN = 0.999
BOX_TOLERANCE_PX = 1.0
SCENE_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 1e-3


@dataclasses.dataclass
class ParityReport:
    """Differences between a reference and a candidate ``DamcsegOutput`` (worst over frames when merged)."""

    mask_agreement: float = 1.0  # share of pixels with the same argmax class
    boxes_ref: int = 0  # boxes of the reference (all frames)
    boxes_got: int = 0  # boxes of the candidate
    max_box_error_px: float = 0.0  # worst coordinate difference of one-to-one matched boxes
    labels_equal: bool = True  # matched boxes carry the same label
    max_scene_error: float = 0.0  # |S_ref - S_got|
    max_alpha_beta_gamma_error: float = 0.0
    max_omega_error: float = 0.0
    frames: int = 0

    @property
    def ok(self) -> bool:
        """All tolerances met."""
        return (
            self.mask_agreement >= MASK_AGREEMENT_MIN
            and self.boxes_ref == self.boxes_got
            and self.max_box_error_px <= BOX_TOLERANCE_PX
            and self.labels_equal
            and self.max_scene_error <= SCENE_TOLERANCE
            and self.max_alpha_beta_gamma_error <= WEIGHT_TOLERANCE
            and self.max_omega_error <= WEIGHT_TOLERANCE
        )

    def merge(self, other: ParityReport) -> ParityReport:
        """Worst case of two reports."""
        return ParityReport(
            mask_agreement=min(self.mask_agreement, other.mask_agreement),
            boxes_ref=self.boxes_ref + other.boxes_ref,
            boxes_got=self.boxes_got + other.boxes_got,
            max_box_error_px=max(self.max_box_error_px, other.max_box_error_px),
            labels_equal=self.labels_equal and other.labels_equal,
            max_scene_error=max(self.max_scene_error, other.max_scene_error),
            max_alpha_beta_gamma_error=max(self.max_alpha_beta_gamma_error, other.max_alpha_beta_gamma_error),
            max_omega_error=max(self.max_omega_error, other.max_omega_error),
            frames=self.frames + other.frames,
        )

    def summary(self) -> str:
        """One line for logs and the CLI."""
        return (
            f"mask agreement {100 * self.mask_agreement:.3f}% | boxes {self.boxes_ref} vs {self.boxes_got}, "
            f"max error {self.max_box_error_px:.4f}px, labels {'equal' if self.labels_equal else 'DIFFER'} | "
            f"|dS| {self.max_scene_error:.2e} | alpha,beta,gamma {self.max_alpha_beta_gamma_error:.2e} | "
            f"omega {self.max_omega_error:.2e} | {'OK' if self.ok else 'FAIL'}"
        )


def _match(ref: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of boxes minimising the worst coordinate difference (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    cost = np.abs(ref[:, None, :] - got[None, :, :]).max(axis=2)
    return linear_sum_assignment(cost)


def compare_outputs(ref, got) -> ParityReport:
    """Compare two ``DamcsegOutput`` of the same batch."""
    mask_ref = ref.seg_logits.argmax(1)
    mask_got = got.seg_logits.to(ref.seg_logits).argmax(1)
    report = ParityReport(
        mask_agreement=float((mask_ref == mask_got).float().mean()),
        max_scene_error=float((ref.scene.S - got.scene.S.to(ref.scene.S)).abs().max()),
        max_alpha_beta_gamma_error=float(
            (ref.alpha_beta_gamma - got.alpha_beta_gamma.to(ref.alpha_beta_gamma)).abs().max()
        ),
        max_omega_error=float((ref.omega - got.omega.to(ref.omega)).abs().max()),
        frames=int(mask_ref.shape[0]),
    )
    for bx_r, bx_g, lab_r, lab_g in zip(ref.boxes, got.boxes, ref.labels, got.labels):
        report.boxes_ref += len(bx_r)
        report.boxes_got += len(bx_g)
        if len(bx_r) and len(bx_g):
            r = bx_r.detach().float().cpu().numpy()
            g = bx_g.detach().float().cpu().numpy()
            rows, cols = _match(r, g)
            report.max_box_error_px = max(report.max_box_error_px, float(np.abs(r[rows] - g[cols]).max()))
            if not np.array_equal(lab_r.cpu().numpy()[rows], lab_g.cpu().numpy()[cols]):
                report.labels_equal = False
    return report


def synthetic_inputs(
    frames: int, size: tuple[int, int], subset: Sequence[str], seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """``frames`` synthetic driving frames as batched canonical inputs of one modality subset."""
    from damcseg_core.data.registry import build_dataset

    h, w = size
    dataset = build_dataset(f"synthetic:frames={frames},size={h}x{w},seed={seed}")
    return [{m: dataset[i][m][None] for m in subset} for i in range(frames)]


def run_parity(
    reference: Callable,
    candidate: Callable,
    subsets: Iterable[Sequence[str]],
    frames: int,
    size: tuple[int, int],
    seed: int = 0,
) -> dict[tuple[str, ...], ParityReport]:
    """Run both backends on ``frames`` synthetic frames per modality subset and compare them."""
    out = {}
    for subset in subsets:
        subset = tuple(subset)
        report = ParityReport(frames=0)
        for inputs in synthetic_inputs(frames, size, subset, seed):
            with torch.inference_mode():
                report = report.merge(compare_outputs(reference(inputs), candidate(inputs)))
        out[subset] = report
    return out
