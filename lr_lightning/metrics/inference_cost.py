"""Inference cost of a method's test-time prediction: MACs per image and parameters used.

MACs come from torch's own ``torch.utils.flop_counter.FlopCounterMode`` (it counts the FLOPs of
convolutions, matrix products and attention from their shapes, 2 FLOPs per multiply-add), so
they follow the *actual* computation: a patch-based classifier that computes only the kept
patches costs less per image than one that sees the whole masked image. Element-wise ops
(activations, normalisation) are not counted, as in the usual MAC tables.

The parameters are those of the modules that the prediction called (forward pre-hooks on every
sub-module), so a network that is only used in training (a hard-positive policy, a frozen
teacher used only for validation) does not count.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def inference_cost(module: nn.Module, predict: Callable[[], Any], num_images: int) -> tuple[float, int]:
    """``(MACs per image, parameters used)`` of ``predict()`` (a closure over one batch of
    ``num_images`` images) run once without gradients."""
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    called: dict[int, nn.Module] = {}

    def record(mod: nn.Module, _args: Any) -> None:
        called[id(mod)] = mod

    handles = [m.register_forward_pre_hook(record) for m in module.modules()]
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            predict()
    finally:
        for h in handles:
            h.remove()
    seen: set[int] = set()
    params = 0
    for m in called.values():
        for p in m.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                params += p.numel()
    return counter.get_total_flops() / 2 / num_images, params
