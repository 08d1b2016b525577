"""The exact float32 split weight gradient (g = 16 g_h + g_l, chunked below 2^24) equals the float64
path bit for bit: random int8 data with the extremes -128 / 127, several geometries, masked and
unmasked layers, the row-band split and the float64 fallback; the chunks respect the bound."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lr_lightning.nn import ZSSR8
from lr_lightning.quant import (
    IntConv2d,
    conv2d_weight_exact,
    convert_to_integer,
    integer_layers,
    split_plan,
)
from lr_lightning.quant.layers import SPLIT_MAX_TERMS, plain_chunks


def _extreme_int8(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Random int8 values, a quarter of them at -128 or 127."""
    v = torch.randint(-128, 128, shape, generator=gen).float()
    ext = torch.rand(shape, generator=gen) < 0.25
    sign = torch.rand(shape, generator=gen) < 0.5
    v[ext & sign] = -128.0
    v[ext & ~sign] = 127.0
    return v


GEOMETRIES = [
    # n, c_in, h, w, c_out, kernel, stride, padding, dilation
    (8, 64, 48, 48, 64, (3, 3), 1, 1, 1),  # ZSSR8 hidden layer at 48x48: 3 images per chunk
    (8, 3, 48, 48, 64, (3, 3), 1, 1, 1),  # first layer
    (4, 16, 21, 19, 5, (3, 5), 2, (1, 2), 1),  # stride 2, non-square kernel and padding
    (3, 6, 17, 17, 4, (3, 3), 1, 2, 2),  # dilation 2
    (2, 4, 100, 100, 6, (3, 3), 1, 1, 1),  # 10,000 outputs per image > 8,738: bands of rows
    (1, 3, 120, 97, 2, (3, 3), 2, 0, 1),  # bands with stride 2 and no padding
]


def _small_grads(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """int8 gradients as the backward produces them: a few large values, most small (so the
    data-dependent bound of the "auto" method allows unsplit chunks), with -128 and 127 present."""
    v = (torch.randn(shape, generator=gen) * 6).round().clamp(-128, 127)
    v.view(-1)[:3] = torch.tensor([-128.0, 127.0, -128.0])
    return v


@pytest.mark.parametrize("method", ["auto", "split"])
@pytest.mark.parametrize("small", [False, True])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_fast_paths_equal_float64_bit_for_bit(geometry: tuple, small: bool, method: str) -> None:
    n, cin, h, w, cout, k, stride, pad, dil = geometry
    gen = torch.Generator().manual_seed(n * 1000 + cin + h)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dil, bias=False)
    x = _extreme_int8((n, cin, h, w), gen)
    shape = tuple(conv(x).shape)
    g = _small_grads(shape, gen) if small else _extreme_int8(shape, gen)
    wshape = (cout, cin, *k)
    kw = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation}
    ref = conv2d_weight_exact(x, wshape, g, method="float64", **kw)
    fast = conv2d_weight_exact(x, wshape, g, method=method, **kw)
    assert fast.dtype == torch.float64 and torch.equal(fast, ref)
    # int8 storage of the inputs (as the layers save them) gives the same
    assert torch.equal(conv2d_weight_exact(x.to(torch.int8), wshape, g, method=method, **kw), ref)


def test_split_path_is_exact_where_one_float32_sum_cannot_be() -> None:
    """A weight-gradient sum of 2^24 + 1: no float32 holds it, so one float32 convolution must be
    wrong; the split parts stay below 2^24 and the result is exact."""
    # 1040 products 127*127 + 24 products 1*127 + one 1*9 = 16,774,160 + 3,048 + 9 = 2^24 + 1
    x = torch.tensor([127.0] * 1040 + [1.0] * 25).view(1, 1, 1, -1)
    g = torch.tensor([127.0] * 1040 + [127.0] * 24 + [9.0]).view(1, 1, 1, -1)
    exact = 2**24 + 1
    assert conv2d_weight_exact(x, (1, 1, 1, 1), g).item() == exact
    assert conv2d_weight_exact(x, (1, 1, 1, 1), g, method="split").item() == exact
    assert conv2d_weight_exact(x, (1, 1, 1, 1), g, method="float64").item() == exact
    assert torch.nn.grad.conv2d_weight(x, (1, 1, 1, 1), g).item() != exact


def test_chunks_respect_the_bound_and_stack_2_cout(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    orig = torch.nn.grad.conv2d_weight

    def spy(x, wshape, g, *args, **kwargs):
        calls.append((x.dtype, tuple(wshape), tuple(g.shape)))
        return orig(x, wshape, g, *args, **kwargs)

    monkeypatch.setattr(torch.nn.grad, "conv2d_weight", spy)
    gen = torch.Generator().manual_seed(0)
    x, g = _extreme_int8((8, 8, 48, 48), gen), _extreme_int8((8, 5, 48, 48), gen)
    conv2d_weight_exact(x, (5, 8, 3, 3), g, padding=1, method="split")
    assert split_plan(8, 48, 48) == (3, 48) and SPLIT_MAX_TERMS == 2**24 // 1920
    assert [c[2][0] for c in calls] == [3, 3, 2]  # images per chunk: 3 * 2304 = 6912 <= 8738 products
    assert all(c[0] == torch.float32 and c[1] == (10, 8, 3, 3) and c[2][1] == 10 for c in calls)
    assert all(c[2][0] * c[2][2] * c[2][3] * 128 * 15 <= 2**24 for c in calls)
    calls.clear()
    x, g = _extreme_int8((1, 2, 100, 100), gen), _extreme_int8((1, 3, 100, 100), gen)
    conv2d_weight_exact(x, (3, 2, 3, 3), g, padding=1, method="split")
    assert all(c[0] == torch.float32 and c[2][2] * c[2][3] <= SPLIT_MAX_TERMS for c in calls)
    assert sum(c[2][2] for c in calls) == 100  # the bands cover every output row once
    # "auto" on extreme data: no image fits the data-dependent bound, so it is the split path
    calls.clear()
    conv2d_weight_exact(x, (3, 2, 3, 3), g, padding=1)
    assert all(c[1] == (6, 2, 3, 3) for c in calls)


def test_auto_runs_unsplit_chunks_within_the_data_dependent_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    orig = torch.nn.grad.conv2d_weight
    monkeypatch.setattr(torch.nn.grad, "conv2d_weight", lambda x, ws, g, *a, **k: calls.append(tuple(g.shape)) or orig(x, ws, g, *a, **k))
    gen = torch.Generator().manual_seed(3)
    x = _extreme_int8((8, 8, 48, 48), gen)
    g = _small_grads((8, 5, 48, 48), gen)
    chunks, alone = plain_chunks(x, g)
    for a, b in chunks:  # the bound really holds for every chunk: max|x| * max_o sum |g| <= 2^24
        assert x[a:b].abs().max() * g[a:b].abs().sum((0, 2, 3)).max() <= 2**24
    assert chunks and not alone and chunks[-1][1] == 8
    conv2d_weight_exact(x, (5, 8, 3, 3), g, padding=1)
    assert calls == [(b - a, 5, 48, 48) for a, b in chunks]  # unsplit: 5 outputs, not 2 x 5
    # an image with a huge gradient goes alone through the split path, the others stay unsplit
    g[3] = _extreme_int8((5, 48, 48), gen)
    chunks, alone = plain_chunks(x, g)
    assert alone == [3] and all(not (a <= 3 < b) for a, b in chunks)
    ref = conv2d_weight_exact(x, (5, 8, 3, 3), g, padding=1, method="float64")
    assert torch.equal(conv2d_weight_exact(x, (5, 8, 3, 3), g, padding=1), ref)


def test_float64_fallback_when_one_row_exceeds_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    orig = torch.nn.grad.conv2d_weight
    monkeypatch.setattr(torch.nn.grad, "conv2d_weight", lambda x, *a, **k: calls.append(x.dtype) or orig(x, *a, **k))
    gen = torch.Generator().manual_seed(1)
    w_out = SPLIT_MAX_TERMS + 1
    assert split_plan(1, 1, w_out) is None
    x, g = _extreme_int8((1, 2, 1, w_out), gen), _extreme_int8((1, 3, 1, w_out), gen)
    out = conv2d_weight_exact(x, (3, 2, 1, 3), g, padding=(0, 1))
    assert calls == [torch.float64]
    calls.clear()
    ref = orig(x.double(), (3, 2, 1, 3), g.double(), padding=(0, 1))
    assert torch.equal(out, ref)
    # grouped convolutions also take the float64 path (stacking g_h / g_l would mix the groups)
    x, g = _extreme_int8((2, 4, 8, 8), gen), _extreme_int8((2, 6, 8, 8), gen)
    out = conv2d_weight_exact(x, (6, 2, 3, 3), g, padding=1, groups=2)
    assert calls == [torch.float64]
    assert torch.equal(out, orig(x.double(), (6, 2, 3, 3), g.double(), padding=1, groups=2))


@pytest.mark.parametrize("method", ["auto", "split"])
@pytest.mark.parametrize("masked", [False, True])
def test_integer_zssr8_weight_gradients_fast_equals_float64(masked: bool, method: str) -> None:
    """Whole-network check: every layer's 32-bit weight gradient and every activation gradient are
    identical with the split path and the float64 path (masked: 24 of 32 kept, pruned propagation)."""
    torch.manual_seed(0)
    base = ZSSR8(2, width=32)
    fast = convert_to_integer(copy.deepcopy(base), wgrad_method=method)
    ref = convert_to_integer(copy.deepcopy(base), wgrad_method="float64")
    if masked:
        for net in (fast, ref):
            layers = integer_layers(net)
            keep = [torch.arange(0, 32, 4)] + [torch.randperm(32, generator=torch.Generator().manual_seed(i))[:24].sort().values for i in range(6)]
            for layer, k in zip(layers[:-1], keep, strict=True):
                layer.grad_keep = k
            for prev, cur in zip(layers[:-1], layers[1:], strict=True):
                cur.grad_in_keep = prev.grad_keep
    lr = torch.rand(4, 3, 24, 24)
    hr = torch.rand(4, 3, 48, 48)
    outs = []
    for net in (fast, ref):
        x = lr.clone().requires_grad_(True)
        (net(x) - hr).abs().mean().backward()
        outs.append(x.grad)
    assert torch.equal(outs[0], outs[1])
    for a, b in zip(integer_layers(fast), integer_layers(ref), strict=True):
        assert a.wgrad is not None and torch.equal(a.wgrad, b.wgrad) and a.wgrad_exp == b.wgrad_exp
        if masked and a.grad_keep is not None:
            assert a.wgrad.shape[0] == len(a.grad_keep)


def test_int_conv2d_uses_the_split_path_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    orig = torch.nn.grad.conv2d_weight
    monkeypatch.setattr(torch.nn.grad, "conv2d_weight", lambda x, ws, g, *a, **k: calls.append((x.dtype, tuple(ws))) or orig(x, ws, g, *a, **k))
    layer = IntConv2d(nn.Conv2d(4, 6, 3, padding=1, bias=False))
    layer.grad_keep = torch.tensor([1, 3])
    layer(torch.randn(2, 4, 8, 8)).sum().backward()
    assert calls == [(torch.float32, (2, 4, 3, 3))]  # auto: 2 kept filters, unsplit (small sums)
    calls.clear()
    layer.wgrad_method = "split"
    layer(torch.randn(2, 4, 8, 8)).sum().backward()
    assert calls == [(torch.float32, (4, 4, 3, 3))]  # split: 2 kept filters -> 2 x 2 stacked outputs
    calls.clear()
    layer.wgrad_method = "float64"
    layer(torch.randn(2, 4, 8, 8)).sum().backward()
    assert calls == [(torch.float64, (2, 4, 3, 3))]
