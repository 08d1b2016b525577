"""Pixel quantisation used as a low-resolution degradation.

Paper A (meta-learning on downsampling and quantization, Sec. 4.2) degrades
images by downsampling *and* quantising every pixel value to
k in {2, 3, 4, 8, 16, 32} bits with the activation quantiser of DoReFa-Net
(Zhou et al., 2016, ref. [30] of paper A).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dorefa_quantize"]

_REDUCED_PRECISION = (torch.float16, torch.bfloat16)


def dorefa_quantize(x: Tensor, bits: int) -> Tensor:
    """DoReFa-Net activation quantiser on ``[0, 1]`` with a straight-through gradient.

    Forward::

        q = round((2**k - 1) * clamp(x, 0, 1)) / (2**k - 1)

    so the output takes exactly the ``2**k`` levels ``j / (2**k - 1)``,
    ``j = 0 .. 2**k - 1`` (``torch.round`` rounds exact ties to even, like
    the ``tf.round`` of the original DoReFa code).

    ``bits = 32`` is treated as "no quantisation" (paper A's 32-bit task):
    the result is ``clamp(x, 0, 1)``, i.e. the identity on inputs already in
    ``[0, 1]``.

    Backward (straight-through estimator): the rounding is skipped, so
    ``d q / d x`` is exactly 1 for ``0 <= x <= 1`` (both ends included, so
    saturated pixels still pass gradient) and 0 outside ``[0, 1]``, where the
    clamp saturates.  When no gradient is required the STE bookkeeping is
    skipped.

    Precision: like DoReFa's reference code, ``round(x * n) / n`` is computed
    in the input's precision (float16/bfloat16 in float32), so an input
    within float rounding of a midpoint between two levels may go to either
    of them.  For ``bits > 24``, where ``2**k - 1`` and the levels are no
    longer exact in float32's 24-bit significand, it is computed in float64
    (float32 on MPS, which has no float64).  The result is cast back: the
    output has the input's dtype and device.

    Args:
        x: float tensor of any shape (normally ``(B, C, H, W)`` images).
        bits: bit width ``k``, an integer in ``1..32``.

    Raises:
        ValueError: ``bits`` is not an integer in ``1..32``.
        TypeError: ``x`` is not a floating-point tensor.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 32:
        raise ValueError(f"bits must be an integer in 1..32 (32 = no quantisation), got {bits!r}")
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}"
        )
    with torch.no_grad():
        q = x.clamp(0.0, 1.0)  # a fresh tensor: safe to update in place below
        if bits < 32:
            if bits > 24 and x.device.type != "mps":  # MPS has no float64
                q = q.to(torch.float64)
            elif x.dtype in _REDUCED_PRECISION:
                q = q.to(torch.float32)
            levels = float(2**bits - 1)
            q = q.mul_(levels).round_().div_(levels).to(x.dtype)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return q
    # Straight-through estimator: the value is exactly q (q + 0), the gradient is
    # 1 on [0, 1] (endpoints included) and 0 outside.  (torch.clamp's own
    # backward would zero the gradient at exactly 0 and 1, i.e. at every
    # saturated pixel, so the mask is built explicitly.)
    inside = (x >= 0) & (x <= 1)
    return q + torch.where(inside, x - x.detach(), torch.zeros_like(x))
