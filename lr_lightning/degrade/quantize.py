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
    ``d q / d x`` is exactly 1 for ``0 <= x <= 1`` (both ends included) and
    0 outside ``[0, 1]``, where the clamp saturates.  When no gradient is
    required the STE bookkeeping is skipped.

    Precision: float16/bfloat16 inputs are quantised in float32; for
    ``bits > 24`` (``2**k - 1`` no longer exact in float32's 24-bit
    significand) the quantisation is computed in float64.  The result is cast
    back to the input dtype, so it is the correctly rounded level of the
    input's dtype.  The output has the input's dtype and device.

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
        raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    y = x.clamp(0.0, 1.0)
    if bits == 32:
        return y
    if bits > 24:
        work = torch.float64
    elif x.dtype in _REDUCED_PRECISION:
        work = torch.float32
    else:
        work = x.dtype
    levels = float(2**bits - 1)
    with torch.no_grad():
        q = torch.round(y.to(work) * levels).div_(levels).to(x.dtype)
    if not (torch.is_grad_enabled() and y.requires_grad):
        return q
    # Straight-through: the value of q exactly (q + 0), the gradient of y
    # (= clamp's gradient).
    return q + (y - y.detach())
