"""Float ``Conv2d`` / ``Linear`` whose backward computes only the kept gradient filters (paper E, Eq. 6).

With ``grad_keep`` (indices of kept output channels) set, the weight gradient is computed for the
kept filters only (a sliced native ``convolution_backward``), not computed-then-zeroed; masked
filters get a zero gradient. ``propagate="pruned"`` also computes the activation gradient from the
kept channels only (in the same fused call), as in the cost model of Eq. 9; unlike the integer
layers, the float layer does not restrict it to the previous layer's kept channels
(``grad_in_keep``), because a second, narrower call costs more than the fused one saves.
``propagate="full"`` keeps the exact activation gradient.
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
        conv_bwd = torch.ops.aten.convolution_backward
        geo = (list(mod.stride), list(mod.padding), list(mod.dilation), False, [0, 0], mod.groups)
        keep, need_x, need_b = mod.grad_keep, ctx.needs_input_grad[0], ctx.has_bias and ctx.needs_input_grad[2]
        if keep is None:  # no mask: one fused native backward
            gx, gw, gb = conv_bwd(g, x, w, [w.shape[0]] if need_b else None, *geo, [need_x, True, need_b])
            return gx, gw, gb, None
        g_k, w_k = g.index_select(1, keep), w.index_select(0, keep)
        bias_k = [len(keep)] if need_b else None
        if mod.propagate == "pruned":
            # one fused call on the kept channels only: weight gradient of the kept filters and the
            # activation gradient propagated through them (Eq. 9; the fused kernel computes it for
            # all input channels, the previous layer then slices its own kept ones)
            gx, gw_k, gb_k = conv_bwd(g_k, x, w_k, bias_k, *geo, [need_x, True, need_b])
        else:
            gx = conv_bwd(g, x, w, None, *geo, [True, False, False])[0] if need_x else None
            _, gw_k, gb_k = conv_bwd(g_k, x, w_k, bias_k, *geo, [False, True, need_b])
        gw = w.new_zeros(w.shape)
        gw.index_copy_(0, keep, gw_k)
        gb = None
        if need_b:
            gb = g.new_zeros(g.shape[1])
            gb.index_copy_(0, keep, gb_k)
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
