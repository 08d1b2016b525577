"""Online zero-shot adaptation of paper E (Alg. 2), as a pure function of (network, image, kernel).

Per test image: copy the (meta-learned) float parameters theta into a fresh network (Eq. 14: in
integer arithmetic the copy is quantised to 32-bit integer weights), make the son
``I_son = (I_LR * k) downarrow_s``, run ``n`` masked gradient updates on the pair
``(I_son, I_LR)`` (integer: Eq. 15 through :func:`lr_lightning.quant.eq15_update`; float: plain
SGD, Eq. 6), and return ``F(I_LR)``. theta itself is never modified (the copy is discarded), so
the next image starts from the same point.

Gradient masks (Eq. 6) are given as kept output-channel indices per prunable layer (the first
``L - 1`` convs; the last is never pruned); masked filters' weight gradients are not computed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from lr_lightning.degrade.zero_shot import make_son
from lr_lightning.metrics import psnr_y
from lr_lightning.quant import (
    GradMaskedConv2d,
    IntConv2d,
    convert_to_integer,
    eq15_update,
    integer_layers,
    load_scale_state,
)

Arithmetic = Literal["float", "integer"]


@dataclass
class OnlineResult:
    """Output of :func:`zero_shot_adapt`: the SR image, the son-pair L1 loss of every update, the
    PSNR-Y after every update (index 0 = before adaptation; empty without ``hr``/``curve``) and the
    wall seconds of the adaptation + final inference (curve evaluations excluded)."""

    sr: Tensor
    losses: list[float] = field(default_factory=list)
    psnr_curve: list[float] = field(default_factory=list)
    seconds: float = 0.0


def conv_layers(net: nn.Module) -> list[nn.Module]:
    """The conv layers (float or integer) of ``net`` in registration order."""
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, IntConv2d))]


def install_masks(net: nn.Module, keep: Sequence[Tensor | None] | None, propagate: Literal["pruned", "full"] = "pruned") -> None:
    """Set the kept output channels (Eq. 6) of the first ``len(keep)`` convs; with
    ``propagate="pruned"`` the next conv restricts its activation gradient to them too (Eq. 9)."""
    layers = conv_layers(net)
    for m in layers:
        m.propagate = propagate
    if keep is None:
        return
    if len(keep) >= len(layers):
        raise ValueError(f"{len(keep)} masks for {len(layers)} conv layers; the last layer is never pruned")
    for m, k in zip(layers, keep, strict=False):
        if k is not None and len(k) == 0:  # a layer with no kept filter is frozen (layer-wise baseline)
            m.frozen = True
            m.grad_keep = None
            if not isinstance(m, IntConv2d):
                m.weight.requires_grad_(False)
            continue
        full = k is None or len(k) == m.out_channels
        m.grad_keep = None if full else k.to(m.weight.device)
    if propagate == "pruned":
        for prev, cur in zip(layers[:-1], layers[1:], strict=True):
            if isinstance(cur, IntConv2d) and not prev.frozen:
                cur.grad_in_keep = prev.grad_keep


def prepare_network(
    theta: nn.Module,
    *,
    arithmetic: Arithmetic,
    keep: Sequence[Tensor | None] | None = None,
    weight_bits: Literal[8, 32] = 32,
    scales: Literal["dynamic", "static"] = "dynamic",
    scale_state: dict[str, int] | None = None,
) -> nn.Module:
    """A fresh trainable copy of ``theta`` (float, or converted to integer arithmetic) with masks."""
    net = copy.deepcopy(theta).float()
    net.train()
    for p in net.parameters():
        p.requires_grad_(True)
        p.grad = None
    if arithmetic == "integer":
        net = convert_to_integer(net, weight_bits, scales)
        if scale_state is not None:  # the offline-calibrated static scales
            load_scale_state(net, scale_state)
    else:
        for m in net.modules():
            if type(m) is nn.Conv2d:
                GradMaskedConv2d.from_conv(m)
    install_masks(net, keep)
    return net


def _sgd_masked(net: nn.Module, learning_rate: float) -> None:
    """Float Eq. 6: ``theta <- theta - gamma m g`` (masked rows have zero gradient, never computed)."""
    with torch.no_grad():
        for p in net.parameters():
            if p.grad is not None:
                p.sub_(p.grad, alpha=learning_rate)
                p.grad = None


def zero_shot_adapt(
    theta: nn.Module,
    lr: Tensor,
    kernel: Tensor,
    scale: int,
    *,
    steps: int = 10,
    learning_rate: float = 0.01,
    arithmetic: Arithmetic = "integer",
    keep: Sequence[Tensor | None] | None = None,
    weight_bits: Literal[8, 32] = 32,
    scales: Literal["dynamic", "static"] = "dynamic",
    scale_state: dict[str, int] | None = None,
    hr: Tensor | None = None,
    curve: bool = False,
) -> OnlineResult:
    """Alg. 2 on one LR image ``lr`` (1, 3, h, w) with its degradation ``kernel`` (K, K).

    Returns the SR image (clamped to [0, 1]) after ``steps`` updates. With ``hr`` and ``curve``
    the PSNR-Y (shave = scale) is measured before and after every update.
    """
    if lr.dim() != 4 or lr.shape[0] != 1:
        raise ValueError(f"zero_shot_adapt takes one image (1, C, h, w), got {tuple(lr.shape)}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    # gradients inside Lightning's test/predict loops, which run under torch.inference_mode:
    # leave it, and copy the (inference-mode) batch tensors into normal ones
    with torch.inference_mode(False), torch.enable_grad():
        lr, kernel = lr.float().clone(), kernel.clone()
        hr = None if hr is None else hr.clone()
        net = prepare_network(theta, arithmetic=arithmetic, keep=keep, weight_bits=weight_bits, scales=scales,
                              scale_state=scale_state)
        son, target = make_son(lr, kernel.to(lr.device), scale)
        result = OnlineResult(sr=lr)
        spent = 0.0

        def measure() -> None:
            if curve and hr is not None:
                with torch.no_grad():
                    sr = net(lr).clamp(0, 1)
                result.psnr_curve.append(float(psnr_y(sr, hr, shave=scale)[0]))

        measure()
        for _ in range(steps):
            t0 = time.perf_counter()
            loss = (net(son) - target).abs().mean()  # Alg. 2 line 5 (L1, Eq. 2)
            loss.backward()
            if arithmetic == "integer":
                for layer in integer_layers(net):
                    if layer.frozen:
                        layer.wgrad = layer.bgrad = None
                    elif layer.wgrad is not None:
                        eq15_update(layer, learning_rate)
            else:
                _sgd_masked(net, learning_rate)
            spent += time.perf_counter() - t0
            result.losses.append(float(loss.detach()))
            measure()
        t0 = time.perf_counter()
        with torch.no_grad():
            result.sr = net(lr).clamp(0, 1)
        result.seconds = spent + time.perf_counter() - t0
    return result
