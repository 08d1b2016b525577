"""``IntegerTrainingCallback``: train any supported network in integer arithmetic (paper E, Sec. V.B).

At ``setup`` the LightningModule's network (attribute ``module``, ``net`` by default) is swapped
for integer layers (:func:`lr_lightning.quant.convert_to_integer`; unsupported layers raise a
``TypeError`` naming them). Forward and backward then run int8 x int8 -> int32 arithmetic, and the
parameter update of the converted layers is replaced by Eq. 15 (32-bit weights) or Eq. 12/13
(8-bit weights) with learning rate ``lr``: autograd gives these weights no float gradient, so the
task's own optimiser leaves them alone (it still trains any other parameter).

Static scales (Table 3): the first ``calibration_batches`` training batches run with dynamic
scales while the per-tensor maximum of Eq. 11 is recorded; from then on the scales are fixed.
"""

from __future__ import annotations

from typing import Any, Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from lr_lightning.callbacks._target import target_network
from lr_lightning.quant import convert_to_integer, eq15_update, integer_layers, scale_books


class IntegerTrainingCallback(Callback):
    """Integer-arithmetic training of ``pl_module.<module>`` (module swap + Eq. 15 update).

    Args:
        lr: learning rate γ of Eq. 15 (plain SGD as in the paper's internal learning), applied as a
            fixed-point integer with ``frac_bits`` fractional bits.
        weight_bits: 32 (paper's "8-bit (Ours)": 32-bit stored weights, Eq. 14/15) or 8 (the
            "standard 8-bit" network, Eq. 12/13).
        scales: ``dynamic`` (Eq. 11 per tensor and step) or ``static`` (calibrated maxima).
        calibration_batches: training batches used to calibrate static scales.
        fold_batchnorm: fold ``BatchNorm2d`` after ``Conv2d`` into the conv at conversion (the net
            then trains without normalisation); otherwise BatchNorm is rejected.
        headroom: extra bits of the stored weight scale (weights may grow ``2^headroom``-fold
            before saturating at the int32/int8 bound).
        frac_bits: fractional bits of the fixed-point learning rate.
        rounding: ``floor`` (Eq. 10, the paper) or ``nearest`` (``floor(x + 1/2)``, an option: floor
            biases small gradients towards -1 LSB, see ``docs/integer_training.md``).
        module: attribute of the LightningModule holding the network.
    """

    def __init__(
        self,
        lr: float = 1e-3,
        weight_bits: Literal[8, 32] = 32,
        scales: Literal["dynamic", "static"] = "dynamic",
        calibration_batches: int = 10,
        fold_batchnorm: bool = False,
        headroom: int = 1,
        frac_bits: int = 24,
        rounding: Literal["floor", "nearest"] = "floor",
        module: str = "net",
    ) -> None:
        if weight_bits not in (8, 32):
            raise ValueError(f"weight_bits must be 8 or 32, got {weight_bits}")
        self.lr, self.weight_bits, self.scales = lr, weight_bits, scales
        self.calibration_batches, self.fold_batchnorm = calibration_batches, fold_batchnorm
        self.headroom, self.frac_bits, self.module = headroom, frac_bits, module
        self.rounding = rounding

    def net(self, pl_module: LightningModule) -> nn.Module:
        return target_network(pl_module, self.module)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        precision = str(trainer.precision)
        if precision not in ("32-true", "32", "64-true", "64"):
            raise ValueError(
                f"IntegerTrainingCallback needs trainer.precision='32-true' (got {precision!r}): mixed precision "
                "would round the integer values carried between layers"
            )
        if trainer.world_size > 1:
            raise NotImplementedError(
                "IntegerTrainingCallback keeps 32-bit weight gradients outside autograd and does not all-reduce "
                "them: multi-process (DDP) integer training is not supported"
            )
        if trainer.accumulate_grad_batches != 1:
            raise NotImplementedError("IntegerTrainingCallback updates after every backward: accumulate_grad_batches must be 1")
        net = self.net(pl_module)
        if integer_layers(net):
            return  # already converted (second setup call)
        new = convert_to_integer(
            net, self.weight_bits, self.scales, self.fold_batchnorm, self.headroom, self.rounding
        )
        if new is not net:
            setattr(pl_module, self.module, new)
        pl_module.to(pl_module.device)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        calibrating = self.scales == "static" and trainer.global_step < self.calibration_batches
        for book in scale_books(self.net(pl_module)):
            book.calibrating = calibrating

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        for book in scale_books(self.net(pl_module)):
            book.calibrating = False

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        for layer in integer_layers(self.net(pl_module)):
            if layer.frozen:
                layer.wgrad = layer.bgrad = None
                continue
            if layer.wgrad is not None:
                eq15_update(layer, self.lr, self.frac_bits)
