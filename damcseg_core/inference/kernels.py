"""Post-processing kernels of the Predictor: logits -> class mask at the input resolution.

The bilinear taps are :func:`damcseg_core.models.crf.bilinear_taps`, the one implementation the
CRF's joint upsampling uses too.
"""

from __future__ import annotations

import torch

from damcseg_core.models.crf import bilinear_taps

__all__ = ["bilinear_taps", "channel_argmax", "upsampled_argmax"]


def channel_argmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(dim=0)`` for ``[K, ...]``: a running max over K contiguous maps.

    ``argmax`` along the outer, strided dimension is several times slower on CPU; strict ``>``
    keeps the first maximal class on ties, as ``argmax`` does.
    """
    best = logits[0].clone()
    idx = torch.zeros(logits.shape[1:], dtype=torch.int64, device=logits.device)
    for c in range(1, logits.shape[0]):
        better = logits[c] > best
        best = torch.maximum(best, logits[c])
        idx.masked_fill_(better, c)
    return idx


def upsampled_argmax(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(logits[None], size, mode="bilinear").argmax(1)[0]`` without up-sampling all K maps.

    A bilinear output pixel is a convex combination of its 4 source pixels' logit vectors; when
    those 4 agree on the arg-max class ``c``, ``c`` is also the arg-max of the combination
    (``l_i[c] >= l_i[k]`` for every corner ``i`` survives the weighted sum). So only output pixels
    whose corners disagree (class borders, a few % of the frame) are interpolated, over all K
    classes; the rest copy the source arg-max. The result equals the full up-sampling except for
    exact ties between two classes (float rounding of the weights).

    Args:
        logits: ``[K, h, w]`` float logits.
        size: output ``(H, W)``.

    Returns:
        ``[H, W]`` int64 class indices.
    """
    k, h, w = logits.shape
    if (h, w) == tuple(size):
        return channel_argmax(logits)
    out_h, out_w = size
    dev = logits.device
    y0, y1, ly = bilinear_taps(h, out_h, dev)
    x0, x1, lx = bilinear_taps(w, out_w, dev)
    src = channel_argmax(logits)  # [h, w]
    # The 2x2 block (y..y+1, x..x+1), edge-replicated, of every source pixel: one arg-max class?
    right = torch.cat([src[:, 1:], src[:, -1:]], dim=1)
    down = torch.cat([src[1:], src[-1:]], dim=0)
    diag = torch.cat([right[1:], right[-1:]], dim=0)
    mixed = (src != right) | (src != down) | (src != diag)
    # Mark mixed blocks with -1 and pick every output pixel's block with two 1-D gathers.
    idx = src.masked_fill(mixed, -1).index_select(0, y0).index_select(1, x0)
    ys, xs = (idx < 0).nonzero(as_tuple=True)
    if ys.numel():
        # Per-pixel bilinear blend of the 4 corner vectors, as rows [M, K] (arg-max along rows is fast).
        flat = logits.reshape(k, h * w).t()
        a0, a1, wy = y0[ys] * w, y1[ys] * w, ly[ys, None]
        b0, b1, wx = x0[xs], x1[xs], lx[xs, None]
        top = flat[a0 + b0] * (1 - wx) + flat[a0 + b1] * wx
        bottom = flat[a1 + b0] * (1 - wx) + flat[a1 + b1] * wx
        idx[ys, xs] = (top * (1 - wy) + bottom * wy).argmax(dim=1)
    return idx
