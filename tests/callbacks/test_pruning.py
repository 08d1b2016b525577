"""Gradient pruning: sliced backward equals the unmasked backward on kept channels (float and
integer, bit for bit for integer), masked weights stay unchanged, the slicing is real, and the
callbacks work in a Lightning fit."""

from __future__ import annotations

import copy

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lr_lightning.callbacks import GradientPruningCallback, IntegerTrainingCallback
from lr_lightning.nn import ZSSR8
from lr_lightning.quant import GradMaskedConv2d, IntConv2d, integer_layers

KEEP = torch.tensor([0, 2, 3, 6])


def _conv_pair(seed: int = 0) -> tuple[nn.Conv2d, GradMaskedConv2d]:
    torch.manual_seed(seed)
    ref = nn.Conv2d(5, 8, 3, padding=1, bias=True)
    masked = GradMaskedConv2d.from_conv(copy.deepcopy(ref))
    return ref, masked


def test_float_full_propagation_equals_unmasked_on_kept_channels() -> None:
    ref, masked = _conv_pair()
    masked.grad_keep, masked.propagate = KEEP, "full"
    x = torch.randn(2, 5, 7, 7)
    g = torch.randn(2, 8, 7, 7)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ref(x1).backward(g)
    masked(x2).backward(g)
    torch.testing.assert_close(masked.weight.grad[KEEP], ref.weight.grad[KEEP], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(masked.bias.grad[KEEP], ref.bias.grad[KEEP])
    others = torch.ones(8, dtype=torch.bool)
    others[KEEP] = False
    assert (masked.weight.grad[others] == 0).all() and (masked.bias.grad[others] == 0).all()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-5, atol=1e-5)  # exact activation gradient


def test_float_pruned_propagation_equals_computed_then_zeroed() -> None:
    ref, masked = _conv_pair(1)
    keep_in = torch.tensor([1, 4])
    masked.grad_keep, masked.grad_in_keep, masked.propagate = KEEP, keep_in, "pruned"
    x = torch.randn(2, 5, 7, 7)
    g = torch.randn(2, 8, 7, 7)
    g_zeroed = torch.zeros_like(g)
    g_zeroed[:, KEEP] = g[:, KEEP]
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ref(x1).backward(g_zeroed)  # the reference: masked channels' gradients computed, then zeroed
    masked(x2).backward(g)
    torch.testing.assert_close(masked.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x2.grad[:, keep_in], x1.grad[:, keep_in], rtol=1e-5, atol=1e-5)


def test_masked_weight_gradient_is_really_sliced(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fused = torch.ops.aten.convolution_backward
    wgrad = torch.nn.grad.conv2d_weight

    class Spy:
        def __call__(self, g, x, w, *args):
            calls.append(("fused", tuple(w.shape), tuple(g.shape)))
            return fused(g, x, w, *args)

    def spy_wgrad(x, wshape, g, *args, **kwargs):
        calls.append(("wgrad", tuple(wshape), tuple(g.shape)))
        return wgrad(x, wshape, g, *args, **kwargs)

    monkeypatch.setattr(torch.ops.aten, "convolution_backward", Spy())
    monkeypatch.setattr(torch.nn.grad, "conv2d_weight", spy_wgrad)
    _, masked = _conv_pair()
    masked.grad_keep = KEEP
    masked(torch.randn(1, 5, 6, 6)).sum().backward()
    assert calls == [("fused", (4, 5, 3, 3), (1, 4, 6, 6))]  # the float layer: 4 of the 8 filters
    calls.clear()
    layer = IntConv2d(nn.Conv2d(5, 8, 3, padding=1, bias=False))
    layer.grad_keep = KEEP
    layer(torch.randn(1, 5, 6, 6)).sum().backward()
    # the integer layer: the exact float32 weight gradient of the 4 kept filters (here the sums are
    # small enough for one unsplit call; conv2d_weight runs the native backward inside)
    assert calls[0] == ("wgrad", (4, 5, 3, 3), (1, 4, 6, 6)), calls
    assert all(c[1] == (4, 5, 3, 3) and c[2] == (1, 4, 6, 6) for c in calls), calls
    calls.clear()
    layer.wgrad_method = "split"  # the split path stacks g_h and g_l of the 4 kept filters (2 x 4)
    layer(torch.randn(1, 5, 6, 6)).sum().backward()
    assert calls[0] == ("wgrad", (8, 5, 3, 3), (1, 8, 6, 6)), calls


@pytest.mark.parametrize("propagate", ["full", "pruned"])
def test_integer_masked_backward_bit_exact_on_kept_channels(propagate: str) -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(6, 8, 3, padding=1, bias=False)
    full = IntConv2d(copy.deepcopy(conv))
    masked = IntConv2d(copy.deepcopy(conv))
    masked.grad_keep, masked.propagate = KEEP, propagate
    x = torch.randn(2, 6, 5, 5)
    g = torch.randn(2, 8, 5, 5)
    g[0, KEEP[0], 0, 0] = 10.0  # the gradient's maximum is on a kept channel (same dynamic scale)
    g_zeroed = torch.zeros_like(g)
    g_zeroed[:, KEEP] = g[:, KEEP]
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    full(x1).backward(g if propagate == "full" else g_zeroed)
    masked(x2).backward(g)
    assert torch.equal(masked.wgrad, full.wgrad[KEEP]) and masked.wgrad_exp == full.wgrad_exp
    assert torch.equal(x2.grad, x1.grad)


def test_masked_integer_update_leaves_masked_weights_unchanged() -> None:
    from lr_lightning.quant import eq15_update

    layer = IntConv2d(nn.Conv2d(4, 8, 3, padding=1, bias=True))
    layer.grad_keep = KEEP
    before_w, before_b = layer.weight_v.clone(), layer.bias_v.clone()
    layer(torch.randn(2, 4, 6, 6)).square().sum().backward()
    eq15_update(layer, lr=0.1)
    others = torch.ones(8, dtype=torch.bool)
    others[KEEP] = False
    assert torch.equal(layer.weight_v[others], before_w[others])
    assert torch.equal(layer.bias_v[others], before_b[others])
    assert not torch.equal(layer.weight_v[KEEP], before_w[KEEP])


class _TinySR(LightningModule):
    def __init__(self, optimizer: str = "adam") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = ZSSR8(2, width=16, depth=4)
        self.opt = optimizer

    def training_step(self, batch, batch_idx):
        lr, hr = batch
        return (self.net(lr) - hr).abs().mean()

    def configure_optimizers(self):
        if self.opt == "adam":
            return torch.optim.Adam(self.parameters(), lr=1e-2, weight_decay=0.1)
        return torch.optim.SGD(self.parameters(), lr=1e-2)


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(24, 3, 16, 16, generator=g)
    lr = torch.nn.functional.avg_pool2d(hr, 2)
    return DataLoader(TensorDataset(lr, hr), batch_size=4)


def _fit(model: LightningModule, callbacks: list, steps: int) -> Trainer:
    trainer = Trainer(
        max_steps=steps, callbacks=callbacks, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )
    trainer.fit(model, _loader())
    return trainer


@pytest.mark.parametrize("integer", [False, True])
def test_pruning_callback_learns_masks_and_freezes_masked_filters(integer: bool) -> None:
    model = _TinySR()
    prune = GradientPruningCallback(prune_ratio=0.5, mask_batches=2)
    callbacks = [IntegerTrainingCallback(lr=0.05), prune] if integer else [prune]
    _fit(model, callbacks, steps=2)  # mask phase only: parameters frozen
    layers = prune.all_layers
    weights0 = [m.weight.detach().clone() for m in layers]
    assert prune.kept is not None and len(prune.kept) == 3  # depth 4: the last layer is never pruned
    assert all(c in (8, 16) for c in prune.kept) and prune.summary["cost"] <= prune.summary["budget"]
    if integer:
        assert all(isinstance(m, IntConv2d) for m in layers)
    # continue training with the masks (a new fit on the same model keeps the callback state)
    trainer = Trainer(
        max_steps=5, callbacks=callbacks, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )
    trainer.fit(model, _loader())
    for m, w0 in zip(prune.layers, weights0, strict=False):
        if m.grad_keep is None:
            continue
        masked = torch.ones(w0.shape[0], dtype=torch.bool)
        masked[m.grad_keep.cpu()] = False
        assert torch.equal(m.weight.detach()[masked], w0[masked]), "masked filters moved"
        assert not torch.equal(m.weight.detach()[~masked], w0[~masked]), "kept filters did not train"


def test_mask_phase_freezes_parameters() -> None:
    model = _TinySR()
    before = [p.detach().clone() for p in model.parameters()]
    _fit(model, [GradientPruningCallback(mask_batches=3)], steps=3)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_integer_callback_trains_and_rejects_bad_setups() -> None:
    model = _TinySR(optimizer="sgd")
    cb = IntegerTrainingCallback(lr=0.05)
    _fit(model, [cb], steps=3)
    layers = integer_layers(model.net)
    assert len(layers) == 4 and all(m.weight.grad is None for m in layers)
    # Eq. 15 moved the integer weights (and the float mirror follows them)
    assert any(not torch.equal(m.weight.detach(), m.weight.detach().round()) for m in layers)
    bad = _TinySR()
    bad.net.body.append(nn.GELU())
    with pytest.raises(TypeError, match=r"body\.7 \(torch\.nn\.modules\.activation\.GELU\)"):
        _fit(bad, [IntegerTrainingCallback()], steps=1)
    trainer = Trainer(max_steps=1, precision="bf16-mixed", callbacks=[IntegerTrainingCallback()], logger=False,
                      enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    with pytest.raises(ValueError, match="32-true"):
        trainer.fit(_TinySR(), _loader())


def test_static_scales_are_calibrated_then_fixed() -> None:
    model = _TinySR(optimizer="sgd")
    cb = IntegerTrainingCallback(lr=0.05, scales="static", calibration_batches=2)
    _fit(model, [cb], steps=4)
    layer = integer_layers(model.net)[1]  # (the first layer has no input gradient)
    assert layer.book.mode == "static" and {"x", "y", "g", "gx"} <= {k.split(".")[-1] for k in layer.book.scales}
    # a static scale is kept even for a much larger input: values saturate at the int8 bound
    s_x = layer.book.scales[f"{layer.name}.x"]
    big = torch.full((1, 16, 8, 8), 2.0 ** (s_x + 3))
    layer.book.calibrating = False
    from lr_lightning.quant import quantize

    assert quantize(big, s_x).max().item() == 127
    out_static = layer(big)
    layer.book.mode = "dynamic"
    assert not torch.equal(out_static, layer(big))


def test_integer_callback_defaults_are_round_half_up() -> None:
    model = _TinySR(optimizer="sgd")
    _fit(model, [IntegerTrainingCallback(lr=0.05)], steps=1)
    layer = integer_layers(model.net)[0]
    assert layer.book.rounding == "nearest" and layer.book.weight_grad_rounding == "nearest"
    assert model.net.add.output_bits == 8
    model = _TinySR(optimizer="sgd")
    _fit(model, [IntegerTrainingCallback(lr=0.05, rounding="floor", add_output_bits=16)], steps=1)
    assert integer_layers(model.net)[0].book.rounding == "floor" and model.net.add.output_bits == 16


def test_integer_callback_loads_offline_scales_and_keeps_them(tmp_path) -> None:
    from lr_lightning.quant import (
        calibrate_static_scales,
        convert_to_integer,
        save_scale_state,
        scale_state,
    )

    model = _TinySR(optimizer="sgd")
    # offline: the same weights, calibrated on a separate calibration set (not the training batches)
    calib = convert_to_integer(copy.deepcopy(model.net), scales="static")
    g = torch.Generator().manual_seed(7)
    cal_batches = [(torch.rand(2, 3, 8, 8, generator=g) * 0.4, torch.rand(2, 3, 16, 16, generator=g)) for _ in range(3)]
    state = calibrate_static_scales(calib, cal_batches, lambda out, hr: (out - hr).abs().mean())
    path = tmp_path / "scales.json"
    save_scale_state(calib, path)
    cb = IntegerTrainingCallback(lr=0.05, scales="static", scales_file=str(path), calibration_batches=2)
    _fit(model, [cb], steps=4)
    assert scale_state(model.net) == state  # loaded, never recalibrated on the run's own batches
    assert all(b.mode == "static" for b in (m.book for m in integer_layers(model.net)))
    with pytest.raises(ValueError, match="static"):
        IntegerTrainingCallback(scales_file=str(path))


def test_integer_callback_stochastic_rounding_is_seeded() -> None:
    def weights(seed: int) -> torch.Tensor:
        model = _TinySR(optimizer="sgd")
        cb = IntegerTrainingCallback(lr=0.05, weight_bits=8, weight_grad_rounding="stochastic", rounding_seed=seed)
        _fit(model, [cb], steps=3)
        return torch.cat([m.weight_v.flatten().float() for m in integer_layers(model.net)])

    a, b, c = weights(0), weights(0), weights(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
