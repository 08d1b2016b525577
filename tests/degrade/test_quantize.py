"""DoReFa pixel quantisation (paper A) checked against its definition."""

from __future__ import annotations

import pytest
import torch

from lr_lightning.degrade import dorefa_quantize


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 8])
def test_levels_are_exactly_j_over_2k_minus_1(bits: int) -> None:
    x = torch.linspace(0, 1, 10001)
    q = dorefa_quantize(x, bits)
    levels = torch.unique(q)
    n = 2**bits - 1
    assert levels.numel() == 2**bits
    assert torch.equal(levels, torch.arange(n + 1, dtype=torch.float32) / n)
    # every input goes to its nearest level
    assert (q - x).abs().max() <= 0.5 / n + 1e-7


def test_sixteen_bits_has_65536_levels() -> None:
    x = torch.linspace(0, 1, 2**18)
    assert torch.unique(dorefa_quantize(x, 16)).numel() == 2**16


def test_matches_reference_formula_and_is_idempotent() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=g)
    for bits in (2, 3, 5, 8, 12, 16, 20, 24, 25, 28, 31):
        n = 2**bits - 1
        q = dorefa_quantize(x, bits)
        if bits <= 24:  # DoReFa's formula in float32, as its reference code
            ref = torch.round(x * float(n)) / float(n)
        else:  # levels not exact in float32: float64 then cast back
            ref = (torch.round(x.double() * n) / n).float()
        assert torch.equal(q, ref), bits
        if bits <= 20:  # float32 still resolves the levels: q is one of the two levels around x
            exact = x.double() * n
            j = torch.round(q.double() * n)
            assert torch.equal(q, (j / n).float()), bits
            assert bool(((j == exact.floor()) | (j == exact.ceil())).all()), bits
        if bits <= 24:  # re-quantising a level is a no-op
            assert torch.equal(dorefa_quantize(q, bits), q), bits


def test_32_bits_is_the_identity_on_unit_interval() -> None:
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    assert torch.equal(dorefa_quantize(x, 32), x)
    assert torch.equal(
        dorefa_quantize(torch.tensor([-0.5, 0.3, 1.5]), 32), torch.tensor([0.0, 0.3, 1.0])
    )


def test_inputs_outside_unit_interval_are_clamped() -> None:
    q = dorefa_quantize(torch.tensor([-1.0, -0.01, 0.49, 0.51, 1.01, 7.0]), 1)
    assert torch.equal(q, torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))


@pytest.mark.parametrize("bits", [1, 3, 8, 28, 32])
def test_straight_through_gradient(bits: int) -> None:
    x = torch.rand(2, 3, 8, 8).requires_grad_(True)
    q = dorefa_quantize(x, bits)
    q.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    # forward value is still the quantised one when the graph is built
    assert torch.equal(q.detach(), dorefa_quantize(x.detach(), bits))
    # outside [0, 1] the clamp saturates: zero gradient; the endpoints themselves pass gradient 1
    y = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5], requires_grad=True)
    dorefa_quantize(y, bits).sum().backward()
    assert torch.equal(y.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))


@pytest.mark.parametrize("bits", [0, 33, -1, 2.5, True, "8"])
def test_invalid_bits_raise(bits: object) -> None:
    with pytest.raises(ValueError, match="1..32"):
        dorefa_quantize(torch.rand(1, 1, 2, 2), bits)  # type: ignore[arg-type]


def test_non_float_input_raises() -> None:
    with pytest.raises(TypeError):
        dorefa_quantize(torch.zeros(1, 1, 2, 2, dtype=torch.uint8), 4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtype_and_device_preserved(dtype: torch.dtype) -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        x = torch.linspace(0, 1, 1001, dtype=torch.float64).to(device=device, dtype=dtype)
        for bits in (2, 4, 8, 16, 32):
            q = dorefa_quantize(x, bits)
            assert q.dtype == dtype and q.device == x.device
        q3 = dorefa_quantize(x, 3)
        assert torch.unique(q3).numel() == 8
        work = torch.float64 if dtype == torch.float64 else torch.float32
        expected = (torch.round(x.to(work) * 7) / 7).to(dtype)
        assert torch.equal(q3, expected)
