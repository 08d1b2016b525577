"""Power-of-two integer tensors of paper E (Sec. V.B): Q(X, s) (Eq. 10), DQ, Eq. 11 scales, Eq. 14.

A real tensor ``X`` is represented by an integer value tensor ``v`` and one integer scale ``s``::

    Q_b(X, s)  = sat_b( R(2^(b-1) * X / 2^s) ) = v              (Eq. 10 for b = 8, Eq. 14 for b = 32)
    DQ_b(v, s) = v * 2^(s - (b-1))
    s          = ceil(log2(max|X|))                             (Eq. 11, "dynamic" scale)

``R`` is the rounding (:data:`Rounding`):

* ``"nearest"`` (the **default**): round half up, ``floor(y + 1/2)``: ``2.5 -> 3``, ``-2.5 -> -2``,
  ``-0.5 -> 0``. NITI, whose arithmetic paper E says it follows, rounds activations and errors
  this way; an unbiased rounding is what the paper's small float/integer gaps need (see
  ``docs/integer_training.md``).
* ``"floor"``: Eq. 10 read literally, ``floor(y)``; kept as the ablation. It biases every
  requantisation by -1/2 LSB.
* ``"stochastic"``: ``floor(y + u)``, ``u ~ U[0, 1)`` from a ``torch.Generator`` (unbiased in
  expectation, reproducible for a fixed seed); meant for weight gradients (Eq. 12/13/15).

``sat_b`` clamps to ``[-2^(b-1), 2^(b-1) - 1]``; it is explicit because Eq. 11 allows
``2^7 X / 2^s = +128`` when ``max|X|`` is a power of two (and static scales can be exceeded).

Storage convention (CPU, no integer convolution kernels in PyTorch): integer values are held in
float32 tensors while every intermediate is an integer below 2^24 in magnitude (exact in float32:
products of int8 summed over <= 1024 terms) and in float64 below 2^53 (int32 accumulators of
weight gradients). Power-of-two rescaling of such values is exact in floating point, so
``floor(v * 2^k)`` is the arithmetic shift ``v >> -k``, and ``floor(y + 1/2)`` is computed as
``floor(y) + [y - floor(y) >= 1/2]`` (both steps exact for every float, unlike ``y + 0.5``, which
rounds in float32). Every op here is checked bit for bit against numpy int64 references in
``tests/quant``.
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

#: rounding of a requantisation: ``floor(y + 1/2)`` / ``floor(y)`` (Eq. 10) / ``floor(y + u)``
Rounding = Literal["nearest", "floor", "stochastic"]
#: roundings allowed for activations and activation gradients (deterministic)
ActRounding = Literal["nearest", "floor"]
ROUNDINGS: tuple[str, ...] = ("nearest", "floor", "stochastic")
ACT_ROUNDINGS: tuple[str, ...] = ("nearest", "floor")

#: the largest right shift the exact integer stochastic rounding draws random bits for
_MAX_RANDOM_BITS = 62


def check_rounding(rounding: str, allowed: tuple[str, ...] = ROUNDINGS, what: str = "rounding") -> str:
    """Validate a rounding name (raises ``ValueError`` naming the allowed ones)."""
    if rounding not in allowed:
        raise ValueError(f"{what} must be one of {list(allowed)}, got {rounding!r}")
    return rounding


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


def floor_half_up_(y: Tensor) -> Tensor:
    """``floor(y + 1/2)`` of a float tensor, exact for every float value; **consumes** ``y``
    (its storage is reused as scratch). ``2.5 -> 3``, ``-2.5 -> -2``, ``-0.5 -> 0``, ``0.49999997 -> 0``.

    ``floor(y)`` and the fraction ``y - floor(y)`` are exact in binary floating point, so the
    comparison with ``1/2`` decides the half-up rounding without the float32 rounding of ``y + 0.5``.
    """
    f = torch.floor(y)
    frac = y.sub_(f).ge_(0.5)  # in place: 1.0 where the fraction is >= 1/2, else 0.0
    return f.add_(frac)


def _uniform(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> Tensor:
    u = torch.rand(shape, generator=generator, dtype=torch.float64, device=generator.device if generator else device)
    return u.to(device)


def _random_bits(shape: torch.Size, bits: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    gen_device = generator.device if generator is not None else device
    r = torch.randint(0, 2**bits, shape, generator=generator, dtype=torch.int64, device=gen_device)
    return r.to(device)


#: attribute of a float tensor whose values are known to be integers times ``2^e``: ``(e, version)``
_GRID_ATTR = "_lr_quant_grid"


def mark_grid(t: Tensor, lsb_exponent: int) -> Tensor:
    """Record that every value of ``t`` is an integer multiple of ``2^lsb_exponent`` (e.g. the
    output ``DQ(v, s)`` of an integer op: ``lsb_exponent = s - (b - 1)``). The record holds only
    while ``t`` is not modified in place (it stores ``t._version``, which every in-place op bumps,
    also through views; only writes through ``t.data`` escape it, as they escape autograd);
    copies, views and new tensors do not carry it. :func:`quantize` then skips the rounding where
    it is a no-op."""
    try:
        setattr(t, _GRID_ATTR, (int(lsb_exponent), t._version))
    except (RuntimeError, AttributeError):  # inference tensors have no version counter
        pass
    return t


def grid_exponent(t: Tensor) -> int | None:
    """The ``lsb_exponent`` recorded by :func:`mark_grid` if ``t`` is unchanged since, else ``None``."""
    rec = getattr(t, _GRID_ATTR, None)
    if rec is None:
        return None
    try:
        return rec[0] if t._version == rec[1] else None
    except RuntimeError:
        return None


def quantize(
    x: Tensor, s: int, bits: int = 8, rounding: Rounding = "nearest", generator: torch.Generator | None = None
) -> Tensor:
    """Eq. 10 / Eq. 14: ``sat_b(R(2^(b-1) X / 2^s))``; integer values in ``x``'s float dtype.

    Exact for float inputs: multiplying by a power of two only changes the exponent, and the
    roundings are done without inexact float additions (:func:`floor_half_up_`). ``rounding``:
    ``nearest`` (default, ``floor(y + 1/2)``), ``floor`` (Eq. 10 literally) or ``stochastic``
    (``floor(y + u)``, ``u ~ U[0,1)`` drawn in float64 from ``generator``, or the global RNG).
    If ``x`` carries a :func:`mark_grid` record showing that ``2^(b-1) X / 2^s`` is already an
    integer, the (no-op) rounding is skipped.
    """
    check_rounding(rounding)
    lo, hi = int_bounds(bits)
    y = x * pow2(bits - 1 - s)  # a new tensor (exact)
    e = grid_exponent(x)
    if e is not None and s - (bits - 1) <= e:  # y = integer * 2^(e - s + b - 1): no rounding needed
        return y.clamp_(lo, hi)
    if rounding == "floor":
        return y.floor_().clamp_(lo, hi)  # in-place floor/clamp on the fresh tensor
    if rounding == "nearest":
        return floor_half_up_(y).clamp_(lo, hi)
    u = _uniform(y.shape, generator, y.device)
    return torch.floor(y.double() + u).clamp_(lo, hi).to(x.dtype)


def dequantize(v: Tensor, s: int, bits: int = 8, dtype: torch.dtype = torch.float32) -> Tensor:
    """``DQ_b(v, s) = v * 2^(s - (b-1))`` (``v`` integer-valued; the result is :func:`mark_grid`-ed)."""
    return mark_grid(v.to(dtype) * pow2(s - (bits - 1)), s - (bits - 1))


def shift_floor(v: Tensor, k: int) -> Tensor:
    """``floor(v * 2^k)`` for integer-valued ``v`` (left shift for ``k >= 0``, arithmetic right shift
    otherwise). Works on float tensors holding integers (exact) and on int64 tensors."""
    if v.dtype.is_floating_point:
        return (v * pow2(k)).floor_() if k < 0 else v * pow2(k)
    if k >= 0:
        # clamp first so the shift cannot overflow int64; results beyond int32 saturate anyway
        lim = 2 ** max(0, 62 - k)
        return v.clamp(-lim, lim) << k
    return v >> min(-k, 63)  # arithmetic shift on signed integers = floor division by 2^-k


def shift_round(
    v: Tensor, k: int, rounding: Rounding = "nearest", generator: torch.Generator | None = None,
    abs_max_v: float | None = None,
) -> Tensor:
    """``R(v 2^k)`` for integer-valued ``v``: a left shift for ``k >= 0`` (exact, no rounding);
    for ``k < 0`` the right shift by ``m = -k`` bits rounded by ``rounding``:

    * ``floor``: ``v >> m``;
    * ``nearest``: ``floor(v 2^-m + 1/2)`` = ``(v + 2^(m-1)) >> m`` (int64; float tensors when
      ``abs_max_v``, a bound on ``|v|``, shows ``|v| + 2^(m-1)`` is exact in their dtype), else
      :func:`floor_half_up_` (float tensors holding integers);
    * ``stochastic``: ``floor(v 2^-m + u)`` = ``(v + r) >> m`` with ``r`` uniform on
      ``{0, ..., 2^m - 1}`` (int64, from ``generator``): exactly ``floor(x + u)`` for
      ``u ~ U[0, 1)``, since ``x = v 2^-m`` has ``m`` fractional bits; rounds up with probability
      equal to the fraction, so it is unbiased. Float inputs are converted to int64 and back.
      Shifts beyond 62 bits draw 62 random bits after a floor shift of the excess.
    """
    check_rounding(rounding)
    if k >= 0 or rounding == "floor":
        return shift_floor(v, k)
    m = -k
    if rounding == "nearest":
        if v.dtype.is_floating_point:
            exact_below = 2.0 / torch.finfo(v.dtype).eps  # 2^24 (float32), 2^53 (float64): every integer exact
            if abs_max_v is not None and abs_max_v + pow2(m - 1) <= exact_below:
                # v 2^k + 1/2 in one pass: v 2^k is exact, and so is the sum (v + 2^(m-1) <= 2^24)
                half = torch.tensor(0.5, dtype=v.dtype, device=v.device)
                return torch.add(half, v, alpha=pow2(k)).floor_()
            return floor_half_up_(v * pow2(k))
        return (v + 2 ** (m - 1)) >> m if m < 63 else torch.zeros_like(v)  # |v| < 2^62: rounds to 0
    # stochastic
    if v.dtype.is_floating_point:
        return shift_round(v.long(), k, "stochastic", generator).to(v.dtype)
    if m > _MAX_RANDOM_BITS:
        v, m = v >> (m - _MAX_RANDOM_BITS), _MAX_RANDOM_BITS
    return (v + _random_bits(v.shape, m, generator, v.device)) >> m


def requantize(
    acc: Tensor, exp: int, s: int | None, bits: int = 8, rounding: Rounding = "nearest",
    generator: torch.Generator | None = None, *, acc_abs_max: float | None = None,
) -> tuple[Tensor, int]:
    """Integer accumulator with real value ``acc * 2^exp`` -> ``(v, s)`` with ``b`` bits (Eq. 10).

    ``s=None`` picks the dynamic scale (Eq. 11) from ``max|acc|`` with integer arithmetic only.
    ``rounding`` as in :func:`shift_round` (default ``nearest``). ``acc_abs_max``: ``max|acc|`` if
    the caller knows it (saves a pass; it lets round-half-up add the half step in place).
    """
    if s is None or (acc_abs_max is None and acc.dtype.is_floating_point and rounding == "nearest"):
        acc_abs_max = abs_max(acc) if acc_abs_max is None else acc_abs_max
    if s is None:
        m = acc_abs_max
        s = ceil_log2(m) + exp if m > 0 else ZERO_SCALE
    lo, hi = int_bounds(bits)
    out = shift_round(acc, exp + (bits - 1) - s, rounding, generator, acc_abs_max)
    if out is acc:  # (a zero shift of a float tensor returns the input itself)
        out = out.clone()
    return out.clamp_(lo, hi), s


@dataclass
class QTensor:
    """An integer tensor: values ``v`` (integers held in a float/int tensor), scale ``s``, ``bits``."""

    v: Tensor
    s: int
    bits: int = 8

    @classmethod
    def from_float(cls, x: Tensor, s: int | None = None, bits: int = 8, rounding: Rounding = "nearest") -> QTensor:
        """Quantize with the given (static) scale or the dynamic one (Eq. 11)."""
        s = dynamic_scale(x) if s is None else s
        return cls(quantize(x, s, bits, rounding), s, bits)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        return dequantize(self.v, self.s, self.bits, dtype)
