"""Eq. 10 / 11 / 14 on hand cases, the three roundings (nearest = round half up, floor, stochastic),
saturation at the int8 / int32 bounds, exact shifts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lr_lightning.quant import (
    QTensor,
    ScaleBook,
    ceil_log2,
    dequantize,
    dynamic_scale,
    quantize,
    requantize,
    saturate,
    shift_floor,
    shift_round,
)
from tests.quant.reference import ceil_log2_int


def test_eq10_hand_cases() -> None:
    x = torch.tensor([0.5, -0.5, 0.3, -0.3, 0.0, 0.999])
    # floor (Eq. 10 literally), s = 0: v = floor(128 x): 64, -64, floor(38.4) = 38, floor(-38.4) = -39, 0, 127
    assert quantize(x, 0, rounding="floor").tolist() == [64, -64, 38, -39, 0, 127]
    # s = 1: v = floor(64 x)
    assert quantize(x, 1, rounding="floor").tolist() == [32, -32, 19, -20, 0, 63]
    # the default is round half up: floor(38.4 + 0.5) = 38, floor(-38.4 + 0.5) = -38, 127.872 -> 128 -> 127
    assert quantize(x, 0).tolist() == [64, -64, 38, -38, 0, 127]
    assert quantize(x, 1).tolist() == [32, -32, 19, -19, 0, 64]
    assert dequantize(torch.tensor([64.0, -39.0]), 0).tolist() == [0.5, -39 / 128]


# y = 2^7 x / 2^s with s = 7, i.e. y = x: the rounding is applied to these values directly
HALF_WAY = [-2.5, 2.5, -0.5, 0.5, -1.5, 1.5, -3.5, 3.5]
OFF_HALF = [-2.7, -2.2, -0.2, 0.2, 2.2, 2.7, -127.6, 126.6]


def test_nearest_is_round_half_up_on_hand_cases() -> None:
    # exact half-way values go up (towards +inf), never to even and never away from zero
    assert quantize(torch.tensor(HALF_WAY), 7).tolist() == [-2, 3, 0, 1, -1, 2, -3, 4]
    assert quantize(torch.tensor(OFF_HALF), 7).tolist() == [-3, -2, 0, 0, 2, 3, -128, 127]
    # floor on the same values (Eq. 10): always towards -inf
    assert quantize(torch.tensor(HALF_WAY), 7, rounding="floor").tolist() == [-3, 2, -1, 0, -2, 1, -4, 3]
    assert quantize(torch.tensor(OFF_HALF), 7, rounding="floor").tolist() == [-3, -3, -1, 0, 2, 2, -128, 126]
    # the float32 value just below 1/2: 0.49999997 + 0.5 rounds to 1.0 in float32, the exact rounding gives 0
    below_half = torch.tensor([0.5 - 2.0**-25, -0.5 - 2.0**-24, 1.5 - 2.0**-23], dtype=torch.float32)
    assert quantize(below_half, 7).tolist() == [0, -1, 1]
    assert quantize(below_half.double(), 7).tolist() == [0, -1, 1]


def test_shift_round_integer_and_float_hand_cases() -> None:
    # v * 2^-1 for v = -5..5: -2.5 -2 -1.5 -1 -0.5 0 0.5 1 1.5 2 2.5
    v = torch.arange(-5, 6)
    assert shift_round(v, -1).tolist() == [-2, -2, -1, -1, 0, 0, 1, 1, 2, 2, 3]
    assert shift_round(v.float(), -1).tolist() == [-2, -2, -1, -1, 0, 0, 1, 1, 2, 2, 3]
    assert shift_round(v, -1, "floor").tolist() == [-3, -2, -2, -1, -1, 0, 0, 1, 1, 2, 2]
    assert shift_round(v, 2).tolist() == (v * 4).tolist()  # left shifts never round
    # requantize rounds the same way (exp = -1: real value acc / 2; scale 7: v = acc / 2)
    assert requantize(v.float(), -1, 7)[0].tolist() == [-2, -2, -1, -1, 0, 0, 1, 1, 2, 2, 3]
    assert requantize(v.float(), -1, 7, rounding="floor")[0].tolist() == [-3, -2, -2, -1, -1, 0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("dtype", [torch.int64, torch.float64])
def test_stochastic_rounding_unbiased_and_reproducible(dtype: torch.dtype) -> None:
    # x = v / 8 with fractions 0, 1/8, ..., 7/8 and negative values: E[floor(x + u)] = x
    v = torch.tensor([-13, -8, -5, -1, 0, 1, 3, 7, 12], dtype=dtype)
    n = 20000
    g = torch.Generator().manual_seed(1234)
    draws = torch.stack([shift_round(v, -3, "stochastic", g) for _ in range(n)]).double()
    x = v.double() / 8
    # every draw is floor(x) or floor(x) + 1 (and exactly x on integers)
    assert ((draws == x.floor()) | (draws == x.floor() + 1)).all()
    assert (draws[:, v.remainder(8) == 0] == x[v.remainder(8) == 0]).all()
    # mean within 4 standard errors of x (std of one draw <= 1/2)
    assert (draws.mean(0) - x).abs().max() < 4 * 0.5 / n**0.5
    # the same seed gives the same draws; another seed does not
    a = shift_round(v.repeat(50), -3, "stochastic", torch.Generator().manual_seed(7))
    b = shift_round(v.repeat(50), -3, "stochastic", torch.Generator().manual_seed(7))
    c = shift_round(v.repeat(50), -3, "stochastic", torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_stochastic_quantize_of_floats() -> None:
    x = torch.full((40000,), -2.3)
    g = torch.Generator().manual_seed(0)
    v = quantize(x, 7, rounding="stochastic", generator=g)  # y = x
    assert set(v.unique().tolist()) == {-3.0, -2.0}
    assert abs(v.double().mean().item() + 2.3) < 4 * 0.5 / 200
    assert torch.equal(v, quantize(x, 7, rounding="stochastic", generator=torch.Generator().manual_seed(0)))


def test_rounding_names_are_checked() -> None:
    with pytest.raises(ValueError, match="rounding"):
        quantize(torch.zeros(2), 0, rounding="even")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rounding"):
        ScaleBook(rounding="stochastic")  # type: ignore[arg-type]  # activations: deterministic only
    assert ScaleBook().rounding == "nearest" and ScaleBook().weight_grad_rounding == "nearest"
    assert ScaleBook(weight_grad_rounding="stochastic").weight_grad_rounding == "stochastic"


def test_eq11_dynamic_scale_hand_cases() -> None:
    assert dynamic_scale(torch.tensor([0.3, -0.7])) == 0  # ceil(log2 0.7) = 0
    assert dynamic_scale(torch.tensor([3.0])) == 2
    assert dynamic_scale(torch.tensor([4.0])) == 2  # exact power of two: ceil(log2 4) = 2
    assert dynamic_scale(torch.tensor([4.0001])) == 3
    assert dynamic_scale(torch.tensor([-2.0**-20])) == -20
    assert dynamic_scale(torch.zeros(3)) == 0
    for m in [1, 2, 3, 5, 127, 128, 129, 2**31 - 1, 2**31, 2**31 + 1]:
        assert ceil_log2(float(m)) == ceil_log2_int(m)
    assert ceil_log2(0.75) == 0 and ceil_log2(0.5) == -1 and ceil_log2(0.3) == -1


def test_int8_saturation_is_explicit() -> None:
    # max|X| a power of two: Eq. 10 gives +128 for the maximum, which saturates to 127
    x = torch.tensor([4.0, -4.0, 1.0])
    s = dynamic_scale(x)
    assert quantize(x, s).tolist() == [127, -128, 32]
    assert quantize(x, s, rounding="floor").tolist() == [127, -128, 32]
    # a static scale that is too small: both ends clamp
    assert quantize(torch.tensor([10.0, -10.0, 0.25]), 0).tolist() == [127, -128, 32]
    # int32 bounds are exact in float64 (where the library keeps int32 accumulators) and int64
    assert saturate(torch.tensor([-(2.0**40), 2.0**40], dtype=torch.float64), 32).tolist() == [-(2**31), 2**31 - 1]
    assert saturate(torch.tensor([-(2**40), 2**40]), 32).tolist() == [-(2**31), 2**31 - 1]


def test_eq14_q32_hand_cases_and_saturation() -> None:
    x = torch.tensor([0.5, -0.25, 1.0, -1.0, 2.0**-31], dtype=torch.float64)
    assert quantize(x, 0, bits=32).tolist() == [2**30, -(2**29), 2**31 - 1, -(2**31), 1]
    # 8-bit copy of a 32-bit weight (floor of the arithmetic shift by 24 bits when s8 = s_theta)
    v32 = torch.tensor([2**30 + 5, -(2**30) - 5, 2**24 - 1, -1], dtype=torch.int64)
    v8, s8 = requantize(v32, -31, None, 8, rounding="floor")  # real values v32 * 2^-31, max 0.5000000023 -> s8 = 0
    assert s8 == 0
    assert v8.tolist() == [64, -65, 0, -1]
    # round half up: 64.0000003 -> 64, -64.0000003 -> -64, 0.99999994 -> 1, -2^-24 -> 0
    assert requantize(v32, -31, None, 8)[0].tolist() == [64, -64, 1, 0]


def test_shift_floor_float_and_int_agree_with_numpy() -> None:
    rng = np.random.default_rng(0)
    v = rng.integers(-(2**30), 2**30, 1000)
    for k in [-20, -7, -1, 0, 3]:
        ref = v >> -k if k < 0 else v << k
        assert shift_floor(torch.from_numpy(v), k).numpy().tolist() == ref.tolist()
        assert shift_floor(torch.from_numpy(v).double(), k).long().numpy().tolist() == ref.tolist()


@pytest.mark.parametrize("rounding", ["floor", "nearest"])
def test_requantize_dynamic_matches_integer_reference(rounding: str) -> None:
    rng = np.random.default_rng(1)
    for exp, top in itertools.product([-20, -3, 0, 5], [2**24, 2**22 + 3]):
        acc = rng.integers(-top, top + 1, 500)
        # 2^24: the float32 extreme, where acc + half would round (floor_half_up_ path); below
        # 2^23 the half step is added in place (exact)
        acc[:2] = [-top, top]
        for dtype in (torch.float32, torch.float64, torch.int64):
            v, s = requantize(torch.from_numpy(acc).to(dtype), exp, None, 8, rounding)
            m = int(np.abs(acc).max())
            s_ref = ceil_log2_int(m) + exp
            assert s == s_ref
            k = ceil_log2_int(m) - 7
            ref = (acc + (1 << (k - 1)) if rounding == "nearest" else acc) >> k
            assert v.long().numpy().tolist() == np.clip(ref, -128, 127).tolist()


def test_qtensor_roundtrip_is_within_half_a_step() -> None:
    x = torch.randn(1000) * 3
    q = QTensor.from_float(x)
    err = x - q.dequantize()
    step = 2.0 ** (q.s - 7)
    top = x.abs() < 2.0**q.s - step  # away from the saturated top step
    assert (err[top] >= -step / 2).all() and (err[top] < step / 2).all()  # nearest: error in [-step/2, step/2)
    qf = QTensor.from_float(x, rounding="floor")
    err = x - qf.dequantize()
    assert (err >= 0).all() and (err < step).all()  # floor: error in [0, step)


def test_grid_record_is_sound_and_skips_only_no_op_roundings() -> None:
    from lr_lightning.quant import grid_exponent, mark_grid

    v = torch.tensor([-128.0, -3.0, 0.0, 5.0, 127.0])
    x = dequantize(v, 2)  # DQ marks its output: values are integers times 2^(2 - 7)
    assert grid_exponent(x) == -5
    for rounding in ("floor", "nearest"):
        plain = x.clone()  # a copy carries no record: the ordinary rounding path
        assert grid_exponent(plain) is None
        for s in (0, 1, 2, 3, 4):  # s <= 2: the rounding is a no-op and skipped; s > 2: really rounds
            assert torch.equal(quantize(x, s, rounding=rounding), quantize(plain, s, rounding=rounding))
    # an in-place change invalidates the record (version counter), also through a view
    y = dequantize(v, 2)
    y[1:3].mul_(0.3)
    assert grid_exponent(y) is None
    z = mark_grid(torch.tensor([0.3, 0.7]), -7)  # a false record is trusted: only integer ops mark
    assert grid_exponent(z) == -7
