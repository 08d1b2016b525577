"""Float ``Conv2d`` / ``Linear`` whose backward computes only the kept gradient filters (paper E, Eq. 6).

With ``grad_keep`` (indices of kept output channels) set, the weight gradient is computed for the
kept filters only (a sliced ``convolution_backward``), not computed-then-zeroed; masked filters
get a zero gradient. ``propagate="pruned"`` also computes the activation gradient from the kept
channels only, for the kept channels of the previous layer (``grad_in_keep``), as in the cost
model of Eq. 9; ``propagate="full"`` keeps the exact activation gradient.
These are drop-in subclasses (same parameters and state dict as ``nn.Conv2d`` / ``nn.Linear``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _MaskedGradMixin:
    grad_keep: Tensor | None = None
    grad_in_keep: Tensor | None = None
    propagate: Literal["pruned", "full"] = "pruned"
    frozen: bool = False


class GradMaskedConv2d(_MaskedGradMixin, nn.Conv2d):
    """``nn.Conv2d`` with output-channel gradient pruning in its backward."""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> GradMaskedConv2d:
        """Re-class ``conv`` in place (the same Parameter objects, so optimisers keep them)."""
        conv.__class__ = cls
        return conv  # type: ignore[return-value]

    def forward(self, x: Tensor) -> Tensor:
        if self.grad_keep is None and self.grad_in_keep is None:
            return super().forward(x)
        return _MaskedConvFn.apply(x, self.weight, self.bias, self)


class _MaskedConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None, mod: GradMaskedConv2d) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.mod, ctx.has_bias = mod, b is not None
        return F.conv2d(x, w, b, mod.stride, mod.padding, mod.dilation, mod.groups)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        x, w = ctx.saved_tensors
        mod: GradMaskedConv2d = ctx.mod
        kw = {"stride": mod.stride, "padding": mod.padding, "dilation": mod.dilation, "groups": mod.groups}
        keep = mod.grad_keep
        g_k = g if keep is None else g.index_select(1, keep)
        w_k = w if keep is None else w.index_select(0, keep)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            keep_in = mod.grad_in_keep if mod.propagate == "pruned" else None
            g_in, w_in = (g, w) if mod.propagate == "full" else (g_k, w_k)
            shape = tuple(x.shape)
            if keep_in is not None:
                w_in = w_in.index_select(1, keep_in)
                shape = (shape[0], len(keep_in), *shape[2:])
            gx = torch.nn.grad.conv2d_input(shape, w_in, g_in, **kw)
            if keep_in is not None:
                full = gx.new_zeros(x.shape)
                full.index_copy_(1, keep_in, gx)
                gx = full
        if ctx.needs_input_grad[1]:
            if keep is None:
                gw = torch.nn.grad.conv2d_weight(x, w.shape, g, **kw)
            else:
                gw = w.new_zeros(w.shape)
                if len(keep):
                    gw.index_copy_(0, keep, torch.nn.grad.conv2d_weight(x, tuple(w_k.shape), g_k, **kw))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.new_zeros(g.shape[1])
            gb.index_copy_(0, keep, g_k.sum((0, 2, 3))) if keep is not None else gb.copy_(g.sum((0, 2, 3)))
        return gx, gw, gb, None


class GradMaskedLinear(_MaskedGradMixin, nn.Linear):
    """``nn.Linear`` with output-feature gradient pruning in its backward."""

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> GradMaskedLinear:
        linear.__class__ = cls
        return linear  # type: ignore[return-value]

    def forward(self, x: Tensor) -> Tensor:
        if self.grad_keep is None:
            return super().forward(x)
        return _MaskedLinearFn.apply(x, self.weight, self.bias, self)


class _MaskedLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None, mod: GradMaskedLinear) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.mod, ctx.has_bias = mod, b is not None
        return F.linear(x, w, b)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        x, w = ctx.saved_tensors
        keep = ctx.mod.grad_keep
        g_k, w_k = g.index_select(-1, keep), w.index_select(0, keep)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = g @ w if ctx.mod.propagate == "full" else g_k @ w_k
        if ctx.needs_input_grad[1]:
            gw = w.new_zeros(w.shape)
            gw.index_copy_(0, keep, g_k.reshape(-1, len(keep)).T @ x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.new_zeros(g.shape[-1])
            gb.index_copy_(0, keep, g_k.reshape(-1, len(keep)).sum(0))
        return gx, gw, gb, None
