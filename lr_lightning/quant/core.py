"""Power-of-two integer tensors of paper E (Sec. V.B): Q(X, s) (Eq. 10), DQ, Eq. 11 scales, Eq. 14.

A real tensor ``X`` is represented by an integer value tensor ``v`` and one integer scale ``s``::

    Q_b(X, s)  = sat_b( floor(2^(b-1) * X / 2^s) ) = v         (Eq. 10 for b = 8, Eq. 14 for b = 32)
    DQ_b(v, s) = v * 2^(s - (b-1))
    s          = ceil(log2(max|X|))                             (Eq. 11, "dynamic" scale)

``sat_b`` clamps to ``[-2^(b-1), 2^(b-1) - 1]``; it is explicit because Eq. 11 allows
``2^7 X / 2^s = +128`` when ``max|X|`` is a power of two (and static scales can be exceeded).

Storage convention (CPU, no integer convolution kernels in PyTorch): integer values are held in
float32 tensors while every intermediate is an integer below 2^24 in magnitude (exact in float32:
products of int8 summed over <= 1024 terms) and in float64 below 2^53 (int32 accumulators of
weight gradients). Power-of-two rescaling of such values is exact in floating point, so
``floor(v * 2^k)`` is the arithmetic shift ``v >> -k``. Every op here is checked bit for bit
against numpy int64 references in ``tests/quant``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

INT8_MIN, INT8_MAX = -(2**7), 2**7 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

#: the largest reduction length for which an int8 x int8 sum is exact in float32 (2^14 * K <= 2^24)
FP32_EXACT_TERMS = 2**24 // 2**14


def int_bounds(bits: int) -> tuple[int, int]:
    """``(-2^(bits-1), 2^(bits-1) - 1)``."""
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def abs_max(x: Tensor) -> float:
    """``max|x|`` in one pass (``aminmax``, no ``abs`` temporary); 0 for an empty tensor."""
    if x.numel() == 0:
        return 0.0
    lo, hi = torch.aminmax(x.detach())
    return max(-float(lo), float(hi))


def saturate(v: Tensor, bits: int) -> Tensor:
    """Clamp integer values to the signed ``bits`` range (explicit saturation)."""
    lo, hi = int_bounds(bits)
    return v.clamp(lo, hi)


def ceil_log2(m: float) -> int:
    """``ceil(log2(m))`` for ``m > 0``, exact (via the binary exponent, no float log)."""
    if not m > 0 or not math.isfinite(m):
        raise ValueError(f"ceil_log2 needs a finite positive number, got {m}")
    f, e = math.frexp(m)  # m = f * 2^e, 0.5 <= f < 1
    return e - 1 if f == 0.5 else e


#: scale used for an all-zero tensor (any scale represents it; this keeps shifts small)
ZERO_SCALE = 0


def dynamic_scale(x: Tensor) -> int:
    """Eq. 11: ``s = ceil(log2(max|X|))`` (``ZERO_SCALE`` for an all-zero tensor)."""
    m = abs_max(x)
    return ceil_log2(m) if m > 0 else ZERO_SCALE


def pow2(k: int) -> float:
    """``2^k`` as a Python float (exact)."""
    return math.ldexp(1.0, k)


Rounding = Literal["floor", "nearest"]


def quantize(x: Tensor, s: int, bits: int = 8, rounding: Rounding = "floor") -> Tensor:
    """Eq. 10 / Eq. 14: ``sat_b(floor(2^(b-1) X / 2^s))``; integer values in ``x``'s float dtype.

    Exact for float inputs: multiplying by a power of two only changes the exponent.
    ``rounding="nearest"`` (an option, not the paper's Eq. 10) uses ``floor(. + 1/2)``, computed
    in float64 so the half-step addition is exact.
    """
    if rounding == "nearest":
        return saturate(torch.floor(x.double() * pow2(bits - 1 - s) + 0.5), bits).to(x.dtype)
    lo, hi = int_bounds(bits)
    return (x * pow2(bits - 1 - s)).floor_().clamp_(lo, hi)  # one new tensor, in-place floor/clamp


def dequantize(v: Tensor, s: int, bits: int = 8, dtype: torch.dtype = torch.float32) -> Tensor:
    """``DQ_b(v, s) = v * 2^(s - (b-1))``."""
    return v.to(dtype) * pow2(s - (bits - 1))


def shift_floor(v: Tensor, k: int) -> Tensor:
    """``floor(v * 2^k)`` for integer-valued ``v`` (left shift for ``k >= 0``, arithmetic right shift
    otherwise). Works on float tensors holding integers (exact) and on int64 tensors."""
    if v.dtype.is_floating_point:
        return (v * pow2(k)).floor_() if k < 0 else v * pow2(k)
    if k >= 0:
        # clamp first so the shift cannot overflow int64; results beyond int32 saturate anyway
        lim = 2 ** max(0, 62 - k)
        return v.clamp(-lim, lim) << k
    return v >> (-k)  # arithmetic shift on signed integers = floor division by 2^-k


def shift_round(v: Tensor, k: int, rounding: Rounding = "floor") -> Tensor:
    """``floor(v 2^k)`` or, for ``nearest``, ``floor(v 2^k + 1/2)`` = ``(v + 2^(-k-1)) >> -k``."""
    if rounding == "nearest" and k < 0:
        half = 2 ** (-k - 1)
        return shift_floor(v + half, k)
    return shift_floor(v, k)


def requantize(
    acc: Tensor, exp: int, s: int | None, bits: int = 8, rounding: Rounding = "floor"
) -> tuple[Tensor, int]:
    """Integer accumulator with real value ``acc * 2^exp`` -> ``(v, s)`` with ``b`` bits (Eq. 10).

    ``s=None`` picks the dynamic scale (Eq. 11) from ``max|acc|`` with integer arithmetic only.
    """
    if s is None:
        m = abs_max(acc)
        s = ceil_log2(m) + exp if m > 0 else ZERO_SCALE
    lo, hi = int_bounds(bits)
    return shift_round(acc, exp + (bits - 1) - s, rounding).clamp_(lo, hi), s  # fresh tensor: in place


@dataclass
class QTensor:
    """An integer tensor: values ``v`` (integers held in a float/int tensor), scale ``s``, ``bits``."""

    v: Tensor
    s: int
    bits: int = 8

    @classmethod
    def from_float(cls, x: Tensor, s: int | None = None, bits: int = 8) -> QTensor:
        """Quantize with the given (static) scale or the dynamic one (Eq. 11)."""
        s = dynamic_scale(x) if s is None else s
        return cls(quantize(x, s, bits), s, bits)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return dequantize(self.v, self.s, self.bits, dtype)
