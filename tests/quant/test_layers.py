"""Integer layers vs the independent numpy int64 reference, bit for bit (forward, input gradient,
32-bit weight gradient), int32 saturation, Eq. 15 on a hand case, and integer vs float model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from lr_lightning.nn import ZSSR8
from lr_lightning.quant import (
    IntAdd,
    IntConv2d,
    IntLinear,
    convert_to_integer,
    dequantize,
    dynamic_scale,
    eq15_update,
    integer_layers,
    quantize,
)
from tests.quant import reference as ref


def _int8(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """int8 values whose max |v| is in (64, 128], so the dynamic scale of v * 2^(s-7) is exactly s."""
    v = rng.integers(-128, 128, shape)
    v.flat[0] = -128  # the int8 extreme is always present
    return v


def _float(v: np.ndarray, s: int) -> torch.Tensor:
    return torch.from_numpy(v.astype(np.float64) * 2.0 ** (s - 7)).float()


def _int8_conv(w8: np.ndarray, sw: int, rounding: str = "nearest", **kw) -> IntConv2d:
    conv = nn.Conv2d(w8.shape[1], w8.shape[0], w8.shape[2:], bias=False, **kw)
    layer = IntConv2d(conv, weight_bits=8)
    layer.book.rounding = rounding
    layer.weight_v.copy_(torch.from_numpy(w8).to(torch.int8))
    layer.weight_scale = sw
    layer.sync_float_weight()
    return layer


@pytest.mark.parametrize(
    "cin,cout,k,stride,pad,dil,hw,rounding",
    [
        (3, 8, 3, 1, 1, 1, 9, "floor"),
        (8, 5, 3, 2, 1, 1, 10, "floor"),
        (4, 6, 1, 1, 0, 1, 7, "floor"),
        (5, 4, 3, 1, 2, 2, 8, "floor"),
        (64, 16, 3, 1, 1, 1, 6, "floor"),  # K = 576: the largest reduction of ZSSR8, fp32 path
        (128, 4, 3, 1, 1, 1, 5, "floor"),  # K = 1152 > 1024: float64 path
        (8, 8, 3, 1, 1, 1, 7, "nearest"),
        (8, 5, 3, 2, 1, 1, 10, "nearest"),
        (5, 4, 3, 1, 2, 2, 8, "nearest"),
        (64, 16, 3, 1, 1, 1, 6, "nearest"),
    ],
)
def test_int_conv2d_bit_exact_forward_and_backward(cin, cout, k, stride, pad, dil, hw, rounding) -> None:
    rng = np.random.default_rng(cin * 100 + cout)
    sx, sw, sg = 1, -2, -9
    vx, w8 = _int8(rng, (2, cin, hw, hw)), _int8(rng, (cout, cin, k, k))
    layer = _int8_conv(w8, sw, rounding, stride=stride, padding=pad, dilation=dil)
    x = _float(vx, sx).requires_grad_(True)
    y = layer(x)
    st, pd, dl = (stride, stride), (pad, pad), (dil, dil)
    acc = ref.conv2d(vx, w8, st, pd, dl)
    vy, sy = ref.requant(acc, sx + sw - 14, 8, rounding)
    assert torch.equal(y.double(), torch.from_numpy(vy * 2.0 ** (sy - 7)))
    vg = _int8(rng, tuple(y.shape))
    y.backward(_float(vg, sg))
    # activation gradient: int32 accumulation of conv^T, requantized to int8 (dynamic scale)
    acc_x = ref.conv2d_input_grad(vg, w8, vx.shape, st, pd, dl)
    vgx, sgx = ref.requant(acc_x, sg + sw - 14, 8, rounding)
    assert torch.equal(x.grad.double(), torch.from_numpy(vgx * 2.0 ** (sgx - 7)))
    # weight gradient: kept in 32 bits (Eq. 15), real value = wgrad * 2^(sx + sg - 14)
    acc_w = ref.sat32(ref.conv2d_weight_grad(vx, vg, (k, k), st, pd, dl))
    assert layer.wgrad_exp == sx + sg - 14
    assert np.array_equal(layer.wgrad.long().numpy(), acc_w)
    assert layer.weight.grad is None  # no float gradient: a float optimiser cannot touch it


@pytest.mark.parametrize("rounding", ["nearest", "floor"])
def test_int_linear_bit_exact_and_int32_saturation(rounding: str) -> None:
    rng = np.random.default_rng(3)
    lin = IntLinear(nn.Linear(20, 7, bias=False), weight_bits=8, rounding=rounding)
    w8 = _int8(rng, (7, 20))
    lin.weight_v.copy_(torch.from_numpy(w8).to(torch.int8))
    lin.weight_scale = 0
    vx = _int8(rng, (6, 20))
    x = _float(vx, 2).requires_grad_(True)
    y = lin(x)
    vy, sy = ref.requant(vx @ w8.T, 2 + 0 - 14, 8, rounding)
    assert torch.equal(y.double(), torch.from_numpy(vy * 2.0 ** (sy - 7)))
    vg = _int8(rng, (6, 7))
    y.backward(_float(vg, -4))
    vgx, sgx = ref.requant(vg @ w8, -4 + 0 - 14, 8, rounding)
    assert torch.equal(x.grad.double(), torch.from_numpy(vgx * 2.0 ** (sgx - 7)))
    assert np.array_equal(lin.wgrad.long().numpy(), vg.T @ vx)
    # int32 saturation of the weight-gradient accumulator: 2^17 + 1 products of (-128)(-128)
    big = IntLinear(nn.Linear(1, 1, bias=False), weight_bits=8)
    n = 2**17 + 1
    xb = torch.full((n, 1), -1.0, requires_grad=True)  # -128 * 2^(0-7)
    yb = big(xb)
    yb.backward(torch.full((n, 1), -1.0))
    exact = n * 128 * 128
    assert exact > 2**31 - 1 and big.wgrad.item() == 2**31 - 1


@pytest.mark.parametrize("rounding", ["nearest", "floor"])
def test_int_add_bit_exact(rounding: str) -> None:
    rng = np.random.default_rng(4)
    va, vb = _int8(rng, (50,)), _int8(rng, (50,))
    sa, sb = 3, -2
    a, b = _float(va, sa), _float(vb, sb)
    out = IntAdd(rounding=rounding)(a, b)
    acc = (va << (sa - sb)) + vb  # aligned to the finer scale, exponent sb - 7
    v, s = ref.requant(acc, sb - 7, 8, rounding)
    assert torch.equal(out.double(), torch.from_numpy(v * 2.0 ** (s - 7)))
    # 16 bits: the same accumulator requantized with b = 16; 32 bits: the accumulator itself
    v16, s16 = ref.requant(acc, sb - 7, 16, rounding)
    assert torch.equal(IntAdd(16, rounding)(a, b).double(), torch.from_numpy(v16 * 2.0 ** (s16 - 15)))
    assert torch.equal(IntAdd(32, rounding)(a, b).double(), torch.from_numpy(acc * 2.0 ** (sb - 7)))


def test_int_add_wider_output_is_closer_to_the_float_sum() -> None:
    """ZSSR8's global residual: bicubic image + small residual. The operands are int8 (their own
    error remains in every variant); the int8 sum adds a second rounding of the sum, int16 almost
    none, the int32 accumulator none (it is the exact sum of the quantized operands)."""
    torch.manual_seed(0)
    up = torch.rand(2, 3, 16, 16)
    res = 0.03 * torch.randn(2, 3, 16, 16)
    exact = up.double() + res.double()
    out = {bits: IntAdd(bits)(up, res).double() for bits in (8, 16, 32)}
    err = {bits: (o - exact).abs().mean().item() for bits, o in out.items()}
    assert err[16] < 0.6 * err[8] and err[32] <= err[16], err  # measured: 0.0043 / 0.0020 / 0.0020
    va, vb = quantize(up, dynamic_scale(up)), quantize(res, dynamic_scale(res))
    operands = dequantize(va, dynamic_scale(up)).double() + dequantize(vb, dynamic_scale(res)).double()
    assert torch.equal(out[32], operands)
    assert (out[16] - operands).abs().max() <= 2.0 ** (dynamic_scale(operands) - 16)  # half an int16 step
    with pytest.raises(ValueError, match="output_bits"):
        IntAdd(12)  # type: ignore[arg-type]
    net = convert_to_integer(ZSSR8(2, width=8), add_output_bits=32)
    assert net.add.output_bits == 32


def test_bias_is_int32_at_accumulator_scale() -> None:
    conv = nn.Conv2d(2, 3, 1, bias=True)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 0] = 0.375  # int8 copy: s = -1, v = 96 (exact)
        conv.bias.copy_(torch.tensor([0.25, -0.125, 0.0]))
    layer = IntConv2d(conv, weight_bits=32)
    x = torch.zeros(1, 2, 1, 1)
    x[0, 0] = 0.75  # s = 0, v = 96
    # 0.75 * 0.375 + bias = 0.53125, 0.15625, 0.28125: all multiples of 2^-7 below 1 -> exact
    assert layer(x).flatten().tolist() == [0.53125, 0.15625, 0.28125]
    # floor at every requantization: x = 2/3 -> v = 85 (s = 0); w = 0.75 -> v = 96 (s = 0);
    # acc = 8160 * 2^-14 -> s_y = ceil(log2 8160) - 14 = -1, v_y = floor(8160 / 64) = 127;
    # round half up: 127.5 -> 128, saturated to 127 (Eq. 11's scale leaves no room for +128)
    with torch.no_grad():
        conv2 = nn.Conv2d(1, 1, 1, bias=False)
        conv2.weight.fill_(0.75)
    assert IntConv2d(conv2, rounding="floor")(torch.full((1, 1, 1, 1), 2.0 / 3.0)).item() == 127 / 256
    assert IntConv2d(conv2)(torch.full((1, 1, 1, 1), 2.0 / 3.0)).item() == 127 / 256
    # x = 0.3: s_x = -1, 256 x = 76.8 -> floor 76 / half up 77; w = 0.75 -> 96; acc = 7296 / 7392 at
    # 2^-15 -> s_y = -2, acc / 64 = 114 (exact) / 115.5 -> 116 (half up)
    x3 = torch.full((1, 1, 1, 1), 0.3)
    assert IntConv2d(conv2, rounding="floor")(x3).item() == 114 / 512
    assert IntConv2d(conv2)(x3).item() == 116 / 512
    # x = -0.3: -76.8 -> -77 both ways; acc = -7392 -> -115.5: floor -116, half up -115
    assert IntConv2d(conv2, rounding="floor")(-x3).item() == -116 / 512
    assert IntConv2d(conv2)(-x3).item() == -115 / 512


@pytest.mark.parametrize("rounding", ["floor", "nearest"])
def test_weight_int8_copy_of_32bit_storage(rounding: str) -> None:
    conv = nn.Conv2d(1, 1, 1, bias=False)
    layer = IntConv2d(conv, weight_bits=32, headroom=1, rounding=rounding)
    v32 = 2**29 + 2**23 + 1  # real value = v32 * 2^(s_theta - 31)
    layer.weight_v.fill_(v32)
    layer.sync_float_weight()
    v8, s8 = layer.weight_int8()
    # max |v32| = v32 -> ceil(log2 v32) = 30 -> s8 = s_theta - 1, v8 = R(v32 / 2^23) = R(65.0000001) = 65
    assert s8 == layer.weight_scale - 1 and v8.item() == 65
    layer.weight_v.fill_(-(2**29) - 1)  # -64.0000001: floor -> -65, round half up -> -64
    layer.sync_float_weight()
    assert layer.weight_int8()[0].item() == (-65 if rounding == "floor" else -64)
    layer.weight_v.fill_(-(2**29) - 2**22)  # -64.5 exactly: floor -> -65, round half up -> -64
    layer.sync_float_weight()
    assert layer.weight_int8()[0].item() == (-65 if rounding == "floor" else -64)


@pytest.mark.parametrize("rounding", ["floor", "nearest"])
def test_eq15_update_hand_case(rounding: str) -> None:
    conv = nn.Conv2d(1, 2, 1, bias=False)
    layer = IntConv2d(conv, weight_bits=32, weight_grad_rounding=rounding)
    layer.weight_scale = 0
    layer.weight_v.copy_(torch.tensor([2**30, -(2**29)], dtype=torch.int32).view(2, 1, 1, 1))
    # gradient real value = wgrad * 2^-14: [0.25, -1.0] -> v_scaled = Q32(., 0) = [2^29, -2^31]
    layer.wgrad = torch.tensor([2.0**12, -(2.0**14)], dtype=torch.float64).view(2, 1, 1, 1)
    layer.wgrad_exp, layer.wgrad_keep = -14, None
    eq15_update(layer, lr=0.5)
    # v <- Q32(v - 0.5 v_scaled): 2^30 - 2^28 and -2^29 + 2^30
    assert layer.weight_v.flatten().tolist() == [2**30 - 2**28, 2**29]
    # masked: only kept rows change (m = [0, 1]); the update's Q rounds an odd product
    layer.wgrad = torch.tensor([[3.0]], dtype=torch.float64).view(1, 1, 1, 1)
    layer.wgrad_exp, layer.wgrad_keep = -31 + 0 + 0, torch.tensor([1])  # v_scaled = 3 (exp = -31)
    before = layer.weight_v.clone()
    eq15_update(layer, lr=0.5)
    assert layer.weight_v[0].item() == before[0].item()
    # 2^29 - 1.5: floor -> 2^29 - 2, round half up -> 2^29 - 1
    assert layer.weight_v[1].item() == (2**29 - 2 if rounding == "floor" else 2**29 - 1)
    # the scaling of Eq. 15 rounds too: gradient -5 * 2^-33 at s_theta = 0 -> v_scaled = R(-1.25) = -2 / -1
    layer.weight_v.fill_(0)
    layer.wgrad = torch.full((2, 1, 1, 1), -5.0, dtype=torch.float64)
    layer.wgrad_exp, layer.wgrad_keep = -33, None
    eq15_update(layer, lr=1.0)
    assert layer.weight_v.flatten().tolist() == ([2, 2] if rounding == "floor" else [1, 1])
    # 8-bit storage (Eq. 12/13): the update saturates at the int8 bound
    l8 = IntConv2d(nn.Conv2d(1, 1, 1, bias=False), weight_bits=8, weight_grad_rounding=rounding)
    l8.weight_scale = 0
    l8.weight_v.fill_(120)
    l8.wgrad = torch.full((1, 1, 1, 1), -(2.0**20), dtype=torch.float64)
    l8.wgrad_exp, l8.wgrad_keep = -20, None  # gradient -1.0 -> int8 (-128, s=0) -> v_scaled = -128
    eq15_update(l8, lr=0.25)
    assert l8.weight_v.item() == 127  # 120 + 32 saturates


def test_single_layer_error_within_quantization_bound() -> None:
    """|conv_int(x) - conv(x)| <= sum|w| dx + sum|x| dw + dy (the steps of the three floors)."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    x = torch.randn(2, 8, 10, 10)
    y = conv(x)
    layer = IntConv2d(conv)
    yi = layer(x)
    dx = 2.0 ** (dynamic_scale(x) - 7)
    _, s8 = layer.weight_int8()
    dw = 2.0 ** (s8 - 7)
    dy = 2.0 ** (dynamic_scale(yi) - 7)
    ones = torch.ones_like(conv.weight)
    bound = torch.nn.functional.conv2d(torch.ones_like(x), conv.weight.abs(), padding=1) * dx
    bound += torch.nn.functional.conv2d(x.abs(), ones, padding=1) * dw + dy
    assert ((yi - y).abs() <= bound + 1e-6).all()
    assert (yi - y).abs().max() > 0  # really quantized


@pytest.mark.parametrize("rounding", ["floor", "nearest"])
def test_integer_zssr8_tracks_float_model(rounding: str) -> None:
    torch.manual_seed(0)
    net = ZSSR8(2, width=16)
    lr = torch.rand(2, 3, 12, 12)
    float_out = net(lr)
    (float_out - lr.mean()).abs().mean().backward()
    float_grads = [m.weight.grad.clone() for m in net.modules() if isinstance(m, nn.Conv2d)]
    inet = convert_to_integer(net, rounding=rounding)
    int_out = inet(lr)
    assert (int_out - float_out).abs().max() < (0.02 if rounding == "floor" else 0.01)
    (int_out - lr.mean()).abs().mean().backward()
    cos = [
        float(torch.nn.functional.cosine_similarity(layer.weight_grad_float().flatten(), g.flatten(), dim=0))
        for layer, g in zip(integer_layers(inet), float_grads, strict=True)
    ]
    if rounding == "nearest":
        assert min(cos) > 0.9, cos
    else:
        # Eq. 10's floor biases every small gradient towards -1 LSB; the bias compounds towards the
        # input (measured: cosine ~0.0 for layer 1, ~0.9 for the last two layers)
        assert min(cos[-2:]) > 0.8, cos
        assert cos[0] < 0.5, cos  # documents the floor effect (docs/integer_training.md)


def test_state_dict_restores_integer_weights_and_scales() -> None:
    torch.manual_seed(0)
    a = convert_to_integer(ZSSR8(2, width=8))
    with torch.no_grad():
        layer = integer_layers(a)[0]
        layer.weight_scale = layer.weight_scale + 2  # a different scale than a fresh conversion gives
    b = convert_to_integer(ZSSR8(2, width=8))
    x = torch.rand(1, 3, 8, 8)
    b.load_state_dict(a.state_dict())
    assert integer_layers(b)[0].weight_scale == integer_layers(a)[0].weight_scale
    assert torch.equal(a(x), b(x))


def _stochastic_layer(weight_bits: int, n: int = 4000) -> IntConv2d:
    layer = IntConv2d(nn.Conv2d(1, n, 1, bias=False), weight_bits=weight_bits, weight_grad_rounding="stochastic")
    layer.weight_scale = 0
    layer.weight_v.zero_()
    return layer


def test_eq15_stochastic_rounding_is_unbiased_and_seeded() -> None:
    # 32-bit storage: gradient -5 * 2^-33 at s_theta = 0 -> v_scaled = floor(-1.25 + u) in {-2, -1}
    # (mean -1.25); lr = 1 -> the update adds -v_scaled exactly (mean +1.25)
    def run(seed: int) -> torch.Tensor:
        layer = _stochastic_layer(32)
        layer.wgrad = torch.full((4000, 1, 1, 1), -5.0, dtype=torch.float64)
        layer.wgrad_exp, layer.wgrad_keep = -33, None
        eq15_update(layer, lr=1.0, generator=torch.Generator().manual_seed(seed))
        return layer.weight_v.flatten().long()

    a, b, c = run(0), run(0), run(1)
    assert set(a.unique().tolist()) == {1, 2}
    assert abs(a.double().mean().item() - 1.25) < 4 * 0.5 / 4000**0.5
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the book's generator (convert_to_integer(seed=...)) is used when none is passed
    nets = [convert_to_integer(ZSSR8(2, width=8), weight_grad_rounding="stochastic", seed=s) for s in (3, 3, 4)]
    for net in nets:
        torch.manual_seed(0)
        with torch.no_grad():
            for layer in integer_layers(net):
                layer.weight_v.copy_(torch.randint(-(2**28), 2**28, layer.weight_v.shape))
                layer.weight_scale = 0
        (net(torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))) - 0.5).abs().mean().backward()
        for layer in integer_layers(net):
            eq15_update(layer, lr=1e-3)
    w = [torch.cat([m.weight_v.flatten() for m in integer_layers(n)]) for n in nets]
    assert torch.equal(w[0], w[1]) and not torch.equal(w[0], w[2])


def test_eq12_13_stochastic_moves_8bit_weights_that_nearest_cannot() -> None:
    """Standard 8-bit path (Eq. 12/13): with a small learning rate, gamma * v_scaled < 1/2 LSB, so
    round-to-nearest never moves the int8 weights (Fig. 4's collapse); stochastic rounding does,
    with the right mean."""
    moved = {}
    for rnd in ("nearest", "stochastic"):
        layer = _stochastic_layer(8)
        layer.book.weight_grad_rounding = rnd
        layer.wgrad = torch.full((4000, 1, 1, 1), -(2.0**20), dtype=torch.float64)
        layer.wgrad_exp, layer.wgrad_keep = -20, None  # gradient -1.0 -> int8 (-128, s = 0) -> v_scaled = -128
        eq15_update(layer, lr=2.0**-9, generator=torch.Generator().manual_seed(0))  # gamma v_scaled = -0.25
        moved[rnd] = layer.weight_v.flatten().double()
    assert (moved["nearest"] == 0).all()
    assert set(moved["stochastic"].unique().tolist()) == {0.0, 1.0}
    assert abs(moved["stochastic"].mean().item() - 0.25) < 4 * 0.5 / 4000**0.5


def test_outputs_and_gradients_are_float32_on_the_float64_paths() -> None:
    """K > 1024 (float64 convolutions) and a bias (float64 accumulator): still float32 tensors out."""
    layer = IntConv2d(nn.Conv2d(128, 120, 3, padding=1, bias=True))  # K = 1152 and 1080
    x = torch.randn(1, 128, 5, 5, requires_grad=True)
    y = layer(x)
    assert y.dtype == torch.float32
    y.square().sum().backward()
    assert x.grad.dtype == torch.float32


def test_grid_records_change_no_value_of_the_integer_net() -> None:
    """IntReLU passes on the integer-grid record so that the next layer skips no-op roundings;
    with plain nn.ReLU (no records) every output and gradient is the same, bit for bit."""
    from lr_lightning.quant import IntReLU

    torch.manual_seed(0)
    base = ZSSR8(2, width=16)
    fast = convert_to_integer(copy.deepcopy(base))
    slow = convert_to_integer(copy.deepcopy(base))
    assert sum(isinstance(m, IntReLU) for m in fast.modules()) == 7
    for i, m in enumerate(slow.body):
        if isinstance(m, IntReLU):
            slow.body[i] = nn.ReLU(inplace=True)
    lr, hr = torch.rand(2, 3, 12, 12), torch.rand(2, 3, 24, 24)
    res = []
    for net in (fast, slow):
        x = lr.clone().requires_grad_(True)
        out = net(x)
        (out - hr).abs().mean().backward()
        res.append((out.detach(), x.grad, [m.wgrad.clone() for m in integer_layers(net)]))
    assert torch.equal(res[0][0], res[1][0]) and torch.equal(res[0][1], res[1][1])
    assert all(torch.equal(a, b) for a, b in zip(res[0][2], res[1][2], strict=True))
