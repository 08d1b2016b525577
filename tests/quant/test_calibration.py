"""Offline static-scale calibration (paper E, Sec. V.B): the maximum of Eq. 11 per quantization
point over a calibration set, saved to JSON and loaded into another run, which then reproduces the
calibrated network exactly and never changes its scales."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from lr_lightning.nn import ZSSR8
from lr_lightning.quant import (
    calibrate_static_scales,
    convert_to_integer,
    dynamic_scale,
    eq15_update,
    integer_layers,
    load_scale_state,
    quantization_points,
    save_scale_state,
    scale_books,
    scale_state,
)


def _batches(n: int, seed: int = 0, gain: float = 1.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        # different ranges (scales -2, -1, 0 of the images; ZSSR8's upsampling clips to [0, 1])
        hr = torch.rand(2, 3, 16, 16, generator=g) * min(1.0, gain * (0.2, 0.45, 1.0)[i % 3])
        out.append((torch.nn.functional.avg_pool2d(hr, 2), hr))
    return out


def _l1(out: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return (out - hr).abs().mean()


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return convert_to_integer(ZSSR8(2, width=8, depth=4), scales="static")


def test_calibration_records_the_maximum_of_eq11_over_the_set() -> None:
    net = _net()
    batches = _batches(3)
    weights = [m.weight_v.clone() for m in integer_layers(net)]
    state = calibrate_static_scales(net, batches, _l1)
    # every forward and backward point of every layer and of the residual add is calibrated
    # (except the first layer's input gradient, which the backward never computes)
    points = set(quantization_points(net))
    first = integer_layers(net)[0].name
    assert set(state) == points - {f"{first}.gx"}
    # the recorded scale is the maximum over the batches of the per-batch dynamic scale
    per_batch = [calibrate_static_scales(copy.deepcopy(_net()), [b], _l1) for b in batches]
    assert state == {k: max(s[k] for s in per_batch) for k in state}
    assert len({s[f"{first}.x"] for s in per_batch}) > 1  # the batches really differ in range
    assert state[f"{first}.x"] == dynamic_scale(batches[-1][0])  # the widest batch sets the input scale
    # calibration changes no weight, leaves no weight gradient, and fixes the books to static
    assert all(torch.equal(m.weight_v, w) for m, w in zip(integer_layers(net), weights, strict=True))
    assert all(m.wgrad is None and m.weight.grad is None for m in integer_layers(net))
    assert all(b.mode == "static" and not b.calibrating for b in scale_books(net))


def test_forward_only_calibration_covers_forward_points() -> None:
    net = _net()
    state = calibrate_static_scales(net, [b[0] for b in _batches(2)])  # plain input tensors
    assert {k.rsplit(".", 1)[1] for k in state} == {"x", "y", "a", "b"}


def test_loaded_scales_reproduce_the_calibrated_net_exactly(tmp_path: Path) -> None:
    calibrated = _net()
    fresh = copy.deepcopy(calibrated)  # same weights, no scales yet
    state = calibrate_static_scales(calibrated, _batches(3), _l1)
    path = tmp_path / "scales.json"
    assert save_scale_state(calibrated, path) == state
    assert json.loads(path.read_text())["scales"] == state
    assert load_scale_state(fresh, path) == state
    # a batch outside the calibration set, with another range: both nets alike
    lr, hr = _batches(1, seed=5, gain=2.0)[0]
    outs, grads = [], []
    for net in (calibrated, fresh):
        x = lr.clone().requires_grad_(True)
        out = net(x)
        _l1(out, hr).backward()
        outs.append(out.detach())
        grads.append((x.grad, [m.wgrad.clone() for m in integer_layers(net)]))
    assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0][0], grads[1][0])
    assert all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1], strict=True))
    # the static net differs from the dynamic one on this batch (the scales are really fixed)
    for book in scale_books(fresh):
        book.mode = "dynamic"
    assert not torch.equal(fresh(lr), outs[1])


def test_static_scales_do_not_change_during_training() -> None:
    net = _net()
    state = calibrate_static_scales(net, _batches(2), _l1)
    for lr, hr in _batches(4, seed=3, gain=3.0):  # training batches with a wider range
        _l1(net(lr), hr).backward()
        for layer in integer_layers(net):
            eq15_update(layer, 0.05)
    assert scale_state(net) == state


def test_strict_loading_rejects_another_networks_scales() -> None:
    net = _net()
    with pytest.raises(KeyError, match="no quantization point"):
        load_scale_state(net, {"encoder.0.x": 3})
    load_scale_state(net, {"encoder.0.x": 3, "body.0.x": 1}, strict=False)
    assert scale_state(net) == {"body.0.x": 1}
