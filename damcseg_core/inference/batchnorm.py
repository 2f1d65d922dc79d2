"""BatchNorm folding: the Predictor's inference copy of a model (same outputs, fewer ops)."""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

__all__ = ["fold_batchnorm", "optimize_for_inference"]


def _example_inputs(
    model: nn.Module,
) -> tuple[dict[str, torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """All-modality inputs at the model's input size plus one ROI, so every path runs once."""
    h, w = (math.ceil(v / 32) * 32 for v in model.config.input_size)
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    inputs = {
        "rgb": torch.rand(1, 3, h, w, generator=gen),
        "depth": torch.rand(1, 1, h, w, generator=gen) * 40 + 1,
        "thermal": torch.rand(1, 1, h, w, generator=gen),
    }
    box = torch.tensor([[w * 0.25, h * 0.25, w * 0.5, h * 0.75]])
    return {k: v.to(dev) for k, v in inputs.items()}, [box.to(dev)], [torch.tensor([13], device=dev)]


def _conv_bn_pairs(model: nn.Module, run: Any) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """(conv, bn) pairs where the BatchNorm's input is always exactly that conv's output.

    Found by one traced forward (``run()``) rather than by module names, so timm blocks, the
    model's own conv blocks and any later refactoring are covered alike. A conv shared by several
    BatchNorms (the detection head's per-level norms) is not paired.
    """
    produced: dict[int, nn.Conv2d] = {}
    keep: list[torch.Tensor] = []  # keeps outputs alive so their ids stay unique during the trace
    seen: dict[nn.Module, set] = {}
    calls: dict[nn.Module, int] = {}

    def conv_hook(mod, _inp, out):
        produced[id(out)] = mod
        keep.append(out)
        calls[mod] = calls.get(mod, 0) + 1

    def bn_hook(mod, inp):
        seen.setdefault(mod, set()).add(produced.get(id(inp[0])))
        calls[mod] = calls.get(mod, 0) + 1

    handles = []
    for mod in model.modules():
        if type(mod) is nn.Conv2d:
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.BatchNorm2d):
            handles.append(mod.register_forward_pre_hook(bn_hook))
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    pairs, used = [], set()
    for bn, convs in seen.items():
        (conv,) = convs if len(convs) == 1 else (None,)
        if conv is None or conv in used or calls[conv] != calls[bn]:
            continue
        if bn.running_mean is None or not bn.affine:
            continue
        used.add(conv)
        pairs.append((conv, bn))
    return pairs


def _replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for parent in root.modules():
        for name, child in list(parent.named_children()):
            if child is old:
                setattr(parent, name, new)


@torch.no_grad()
def fold_batchnorm(model: nn.Module, run: Any = None) -> nn.Module:
    """Fold every eval-mode BatchNorm that directly follows a convolution into that convolution, in place.

    ``conv -> bn`` becomes one conv with ``w' = w * gamma / sqrt(var + eps)`` and
    ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``; the BatchNorm is replaced by its
    activation (timm's ``BatchNormAct2d``) or an identity. Only for inference: the folded model
    has a different ``state_dict`` and no batch statistics, so call it on a copy
    (:func:`optimize_for_inference` does) and never save or train the result.

    Args:
        model: a module in eval mode.
        run: a callable running one forward of ``model`` that reaches every conv; default: a
            DAMCSeg forward with all modalities and one ROI at ``model.config.input_size``.

    Returns:
        ``model`` itself.
    """
    if run is None:
        inputs, boxes, labels = _example_inputs(model)

        def run():
            return model(inputs, roi_boxes=boxes, roi_labels=labels)

    pairs = _conv_bn_pairs(model, run)
    for conv, bn in pairs:
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias, requires_grad=False)
        if type(bn) is nn.BatchNorm2d:
            _replace_module(model, bn, nn.Identity())
        else:  # timm BatchNormAct2d: batch_norm -> drop -> act; keep drop and act
            _replace_module(model, bn, nn.Sequential(bn.drop, bn.act))
    return model


def optimize_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with BatchNorm folded into the convolutions and NHWC conv weights.

    ``copy(model)(inputs)`` gives the same outputs as ``model(inputs)`` up to float rounding
    (``test/unit/test_perf_equivalence.py``); ``model`` itself, its ``state_dict`` and checkpoints
    are untouched. Models without a DAMCSeg ``config`` or without BatchNorm (e.g. an ONNX Runtime
    wrapper) are returned as they are.
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        return model
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    fast = copy.deepcopy(model).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    fold_batchnorm(fast)
    return fast
