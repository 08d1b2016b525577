"""Eq. 10 / 11 / 14 on hand cases, saturation at the int8 / int32 bounds, exact shifts."""

from __future__ import annotations

import numpy as np
import torch

from lr_lightning.quant import (
    QTensor,
    ceil_log2,
    dequantize,
    dynamic_scale,
    quantize,
    requantize,
    saturate,
    shift_floor,
)
from tests.quant.reference import ceil_log2_int


def test_eq10_hand_cases() -> None:
    x = torch.tensor([0.5, -0.5, 0.3, -0.3, 0.0, 0.999])
    # s = 0: v = floor(128 x): 64, -64, floor(38.4) = 38, floor(-38.4) = -39 (floor, not round), 0, 127
    assert quantize(x, 0).tolist() == [64, -64, 38, -39, 0, 127]
    # s = 1: v = floor(64 x)
    assert quantize(x, 1).tolist() == [32, -32, 19, -20, 0, 63]
    assert dequantize(torch.tensor([64.0, -39.0]), 0).tolist() == [0.5, -39 / 128]


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
    v8, s8 = requantize(v32, -31, None, 8)  # real values v32 * 2^-31, max = 0.5000000023 -> s8 = 0
    assert s8 == 0
    assert v8.tolist() == [64, -65, 0, -1]


def test_shift_floor_float_and_int_agree_with_numpy() -> None:
    rng = np.random.default_rng(0)
    v = rng.integers(-(2**30), 2**30, 1000)
    for k in [-20, -7, -1, 0, 3]:
        ref = v >> -k if k < 0 else v << k
        assert shift_floor(torch.from_numpy(v), k).numpy().tolist() == ref.tolist()
        assert shift_floor(torch.from_numpy(v).double(), k).long().numpy().tolist() == ref.tolist()


def test_requantize_dynamic_matches_integer_reference() -> None:
    rng = np.random.default_rng(1)
    for exp in [-20, -3, 0, 5]:
        acc = rng.integers(-(2**23), 2**23, 500)
        v, s = requantize(torch.from_numpy(acc).float(), exp, None, 8)
        m = int(np.abs(acc).max())
        s_ref = ceil_log2_int(m) + exp
        assert s == s_ref
        assert v.long().numpy().tolist() == np.clip(acc >> (ceil_log2_int(m) - 7), -128, 127).tolist()


def test_qtensor_roundtrip_is_within_one_step() -> None:
    x = torch.randn(1000) * 3
    q = QTensor.from_float(x)
    err = x - q.dequantize()
    step = 2.0 ** (q.s - 7)
    assert (err >= 0).all() and (err < step).all()  # floor: error in [0, step)
