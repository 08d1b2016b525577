"""Module swap: a float network -> integer-arithmetic training (paper E, Sec. V.B).

Supported layers:

* ``nn.Conv2d`` (zero padding, any stride/dilation/groups, with or without bias) -> :class:`IntConv2d`;
  ``nn.Linear`` -> :class:`IntLinear`;
* ``nn.ReLU``, ``nn.MaxPool2d``, ``nn.Flatten``, ``nn.Identity``: kept as they are (``nn.ReLU``
  becomes :class:`IntReLU`, the same function that also passes on the record that its values
  are on the integer grid); on the power-of-two int8 activations they travel as, they are exact
  integer ops (max/compare/reshape), and so is their backward (selection of int8 gradients);
* ``nn.BatchNorm2d`` directly after a ``Conv2d`` in an ``nn.Sequential``: only with
  ``fold_batchnorm=True``: folded once into the conv's weight and bias with its current running
  statistics, then replaced by ``nn.Identity`` (the integer net trains *without* normalisation;
  batch statistics need division and square roots, which integer training of paper E does not have);
* ``lr_lightning.nn.ZSSR8``: its global residual ``up + body(up)`` becomes :class:`IntAdd` (the
  bicubic upsampling is input preprocessing, like the image itself), with ``add_output_bits``
  bits for the sum (8 = the paper's all-int8 reading; 16 or 32 keep more of the output);
* ``lr_lightning.nn.Conv4``: its own forward is ``classifier(flatten(features(x)))``, exact.

Anything else raises a ``TypeError`` that names every unsupported layer by its qualified name.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from lr_lightning.nn.conv4 import Conv4
from lr_lightning.nn.zssr import ZSSR8
from lr_lightning.quant.core import ACT_ROUNDINGS, ROUNDINGS, ActRounding, Rounding, check_rounding
from lr_lightning.quant.layers import (
    AddBits,
    IntAdd,
    IntConv2d,
    IntegerLayer,
    IntLinear,
    IntReLU,
    ScaleBook,
    WgradMethod,
)

EXACT_AS_IS = (nn.ReLU, nn.MaxPool2d, nn.Flatten, nn.Identity)
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict, Conv4)


class IntegerZSSR8(nn.Module):
    """ZSSR8 with an integer global residual: ``IntAdd(up, body(up))`` (``body`` converted).

    ``output_bits`` (8, 16 or 32) is the precision of the residual sum, i.e. of the network output
    (:class:`IntAdd`); 8 by default (the paper's all-int8 reading).
    """

    def __init__(self, net: ZSSR8, output_bits: AddBits = 8, rounding: ActRounding = "nearest") -> None:
        super().__init__()
        self.scale, self.upsample_mode = net.scale, net.upsample_mode
        self.upsample_input = net.upsample_input
        self.body = net.body
        self.add = IntAdd(output_bits=output_bits, rounding=rounding)

    def forward(self, lr: Tensor) -> Tensor:
        up = self.upsample_input(lr)
        return self.add(up, self.body(up))


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold ``bn`` (running statistics, affine) into ``conv`` in place (adds a bias if missing)."""
    with torch.no_grad():
        std = (bn.running_var + bn.eps).sqrt()
        gamma = bn.weight if bn.affine else torch.ones_like(std)
        beta = bn.bias if bn.affine else torch.zeros_like(std)
        factor = gamma / std
        conv.weight.mul_(factor.view(-1, 1, 1, 1))
        b = conv.bias if conv.bias is not None else torch.zeros_like(std)
        new_b = (b - bn.running_mean) * factor + beta
        if conv.bias is None:
            conv.bias = nn.Parameter(new_b.clone())
        else:
            conv.bias.copy_(new_b)


def find_unsupported(net: nn.Module, fold_bn: bool) -> list[str]:
    """Qualified names and types of layers integer training cannot run."""
    bad: list[str] = []

    def visit(mod: nn.Module, prefix: str) -> None:
        if isinstance(mod, (IntegerLayer, IntAdd, IntegerZSSR8)):
            for name, child in mod.named_children():
                visit(child, f"{prefix}.{name}" if prefix else name)
            return
        if isinstance(mod, ZSSR8):
            visit(mod.body, f"{prefix}.body" if prefix else "body")
            return
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            if isinstance(mod, nn.Conv2d) and mod.padding_mode != "zeros":
                bad.append(f"{prefix or '<net>'} ({type(mod).__name__}, padding_mode={mod.padding_mode!r})")
            return
        if isinstance(mod, EXACT_AS_IS):
            return
        if isinstance(mod, nn.BatchNorm2d):
            if not fold_bn:
                bad.append(f"{prefix or '<net>'} (BatchNorm2d: set fold_batchnorm=true to fold it into the conv)")
            return
        if isinstance(mod, CONTAINERS):
            children = list(mod.named_children())
            for i, (name, child) in enumerate(children):
                if isinstance(child, nn.BatchNorm2d) and fold_bn and isinstance(mod, nn.Sequential):
                    prev = children[i - 1][1] if i > 0 else None
                    if not isinstance(prev, nn.Conv2d):
                        bad.append(f"{prefix}.{name} (BatchNorm2d not directly after a Conv2d: cannot fold)")
                        continue
                visit(child, f"{prefix}.{name}" if prefix else name)
            return
        bad.append(f"{prefix or '<net>'} ({type(mod).__module__}.{type(mod).__name__})")

    visit(net, "")
    return bad


def convert_to_integer(
    net: nn.Module,
    weight_bits: Literal[8, 32] = 32,
    scales: Literal["dynamic", "static"] = "dynamic",
    fold_bn: bool = False,
    headroom: int = 1,
    rounding: ActRounding = "nearest",
    *,
    weight_grad_rounding: Rounding = "nearest",
    add_output_bits: AddBits = 8,
    seed: int | None = None,
    wgrad_method: WgradMethod = "auto",
) -> nn.Module:
    """Swap the supported layers of ``net`` for integer ones; returns the (possibly new) root.

    Args:
        net: the float network (modified in place where possible).
        weight_bits: 32 (Eq. 14/15, "8-bit (Ours)") or 8 ("standard 8-bit", Eq. 12/13).
        scales: ``dynamic`` (Eq. 11 per tensor) or ``static`` (fixed per point; calibrate them with
            :func:`lr_lightning.quant.calibrate_static_scales` or load them with
            :func:`lr_lightning.quant.load_scale_state`).
        fold_bn: fold ``BatchNorm2d`` after ``Conv2d`` into the conv.
        headroom: extra bits of the stored weight scale.
        rounding: activations and activation gradients: ``nearest`` (default, ``floor(x + 1/2)``)
            or ``floor`` (Eq. 10 literally, the ablation); also used for Eq. 14's weight conversion.
        weight_grad_rounding: Eq. 12/13/15 (weight gradient -> weight scale, the update):
            ``nearest`` (default), ``floor`` or ``stochastic``.
        add_output_bits: precision of ZSSR8's global residual sum (:class:`IntAdd`): 8, 16 or 32.
        seed: seed of one ``torch.Generator`` shared by all layers for stochastic rounding
            (``None``: the global torch RNG).
        wgrad_method: exact weight gradient (:func:`~lr_lightning.quant.conv2d_weight_exact`): ``auto``
            (float32, unsplit where a data bound allows), ``split`` (float32 split) or ``float64``.

    Raises ``TypeError`` naming every unsupported layer before changing anything.
    """
    check_rounding(rounding, ACT_ROUNDINGS, "rounding")
    check_rounding(weight_grad_rounding, ROUNDINGS, "weight_grad_rounding")
    if add_output_bits not in (8, 16, 32):
        raise ValueError(f"add_output_bits must be 8, 16 or 32, got {add_output_bits}")
    bad = find_unsupported(net, fold_bn)
    if bad:
        raise TypeError(
            "integer-arithmetic training does not support these layers: " + "; ".join(bad)
            + ". Supported: Conv2d, Linear, ReLU, MaxPool2d, Flatten, Identity, BatchNorm2d after Conv2d "
            "(fold_batchnorm=true), ZSSR8, Conv4 and Sequential containers."
        )

    if fold_bn:
        for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
            children = list(seq.named_children())
            for i, (name, child) in enumerate(children):
                if isinstance(child, nn.BatchNorm2d):
                    fold_batchnorm(children[i - 1][1], child)  # placement checked above
                    setattr(seq, name, nn.Identity())

    def swap(mod: nn.Module, prefix: str) -> nn.Module:
        if isinstance(mod, ZSSR8):
            mod = IntegerZSSR8(mod, output_bits=add_output_bits, rounding=rounding)
            mod.add.name = f"{prefix}.add" if prefix else "add"
        rkw = {"rounding": rounding, "weight_grad_rounding": weight_grad_rounding}
        if isinstance(mod, nn.Conv2d) and not isinstance(mod, IntegerLayer):
            new: nn.Module = IntConv2d(mod, weight_bits, headroom, wgrad_method=wgrad_method, **rkw)
        elif isinstance(mod, nn.Linear) and not isinstance(mod, IntegerLayer):
            new = IntLinear(mod, weight_bits, headroom, **rkw)
        elif type(mod) is nn.ReLU:
            return IntReLU(inplace=mod.inplace)  # same values; keeps the integer-grid record
        else:
            for name, child in list(mod.named_children()):
                new_child = swap(child, f"{prefix}.{name}" if prefix else name)
                if new_child is not child:
                    setattr(mod, name, new_child)
            return mod
        new.name = prefix or "net"
        return new

    root = swap(net, "")
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    for book in scale_books(root):
        book.mode = scales
        book.rounding = rounding
        book.weight_grad_rounding = weight_grad_rounding
        book.generator = generator
    return root


def integer_layers(net: nn.Module) -> list[IntegerLayer]:
    """The integer Conv2d / Linear layers of ``net`` in registration order."""
    return [m for m in net.modules() if isinstance(m, IntegerLayer)]


def scale_books(net: nn.Module) -> list[ScaleBook]:
    """The :class:`ScaleBook` of every integer layer and integer add of ``net``."""
    return [m.book for m in net.modules() if isinstance(m, (IntegerLayer, IntAdd))]
