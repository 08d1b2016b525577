"""``IntegerTrainingCallback``: train any supported network in integer arithmetic (paper E, Sec. V.B).

At ``setup`` the LightningModule's network (attribute ``module``, ``net`` by default) is swapped
for integer layers (:func:`lr_lightning.quant.convert_to_integer`; unsupported layers raise a
``TypeError`` naming them). Forward and backward then run int8 x int8 -> int32 arithmetic, and the
parameter update of the converted layers is replaced by Eq. 15 (32-bit weights) or Eq. 12/13
(8-bit weights) with learning rate ``lr``: autograd gives these weights no float gradient, so the
task's own optimiser leaves them alone (it still trains any other parameter).

Static scales (Table 3): either loaded from a scales file (``scales_file``, JSON written by
:func:`lr_lightning.quant.save_scale_state` after :func:`lr_lightning.quant.calibrate_static_scales`
over a calibration set: the paper's offline calibration), or, without a file, calibrated on the
first ``calibration_batches`` training batches of this run (dynamic scales while the per-tensor
maximum of Eq. 11 is recorded); from then on the scales are fixed.
"""

from __future__ import annotations

from typing import Any, Literal

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from lr_lightning.callbacks._target import target_network
from lr_lightning.quant import (
    convert_to_integer,
    eq15_update,
    integer_layers,
    load_scale_state,
    scale_books,
)
from lr_lightning.quant.core import ACT_ROUNDINGS, ROUNDINGS, check_rounding


class IntegerTrainingCallback(Callback):
    """Integer-arithmetic training of ``pl_module.<module>`` (module swap + Eq. 15 update).

    Args:
        lr: learning rate γ of Eq. 15 (plain SGD as in the paper's internal learning), applied as a
            fixed-point integer with ``frac_bits`` fractional bits.
        weight_bits: 32 (paper's "8-bit (Ours)": 32-bit stored weights, Eq. 14/15) or 8 (the
            "standard 8-bit" network, Eq. 12/13).
        scales: ``dynamic`` (Eq. 11 per tensor and step) or ``static`` (calibrated maxima).
        calibration_batches: training batches used to calibrate static scales (ignored when
            ``scales_file`` is given).
        scales_file: JSON file of static scales calibrated offline (``save_scale_state``); loaded
            at setup, needs ``scales="static"``; the run then never recalibrates.
        fold_batchnorm: fold ``BatchNorm2d`` after ``Conv2d`` into the conv at conversion (the net
            then trains without normalisation); otherwise BatchNorm is rejected.
        headroom: extra bits of the stored weight scale (weights may grow ``2^headroom``-fold
            before saturating at the int32/int8 bound).
        frac_bits: fractional bits of the fixed-point learning rate.
        rounding: activations and activation gradients: ``nearest`` (default, ``floor(x + 1/2)``,
            as NITI) or ``floor`` (Eq. 10 literally, the ablation: it biases every requantisation
            by -1/2 LSB, see ``docs/integer_training.md``).
        weight_grad_rounding: rounding of the weight-gradient scaling and update (Eq. 12/13/15):
            ``nearest`` (default), ``floor`` or ``stochastic``.
        rounding_seed: seed of the generator of stochastic rounding (``None``: global torch RNG,
            which ``seed_everything`` seeds).
        add_output_bits: precision of ZSSR8's global residual sum: 8 (default), 16 or 32.
        wgrad_method: exact weight gradient: ``auto`` (float32, unsplit where a data bound allows),
            ``split`` (float32, g = 16 g_h + g_l) or ``float64`` (the reference).
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
        rounding: Literal["nearest", "floor"] = "nearest",
        module: str = "net",
        *,
        weight_grad_rounding: Literal["nearest", "floor", "stochastic"] = "nearest",
        rounding_seed: int | None = None,
        add_output_bits: Literal[8, 16, 32] = 8,
        scales_file: str | None = None,
        wgrad_method: Literal["auto", "split", "float64"] = "auto",
    ) -> None:
        if weight_bits not in (8, 32):
            raise ValueError(f"weight_bits must be 8 or 32, got {weight_bits}")
        check_rounding(rounding, ACT_ROUNDINGS, "rounding")
        check_rounding(weight_grad_rounding, ROUNDINGS, "weight_grad_rounding")
        if scales_file is not None and scales != "static":
            raise ValueError(f"scales_file holds static scales: set scales='static' (got {scales!r})")
        self.lr, self.weight_bits, self.scales = lr, weight_bits, scales
        self.calibration_batches, self.fold_batchnorm = calibration_batches, fold_batchnorm
        self.headroom, self.frac_bits, self.module = headroom, frac_bits, module
        self.rounding, self.weight_grad_rounding, self.rounding_seed = rounding, weight_grad_rounding, rounding_seed
        self.add_output_bits, self.scales_file, self.wgrad_method = add_output_bits, scales_file, wgrad_method

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
            net, self.weight_bits, self.scales, self.fold_batchnorm, self.headroom, self.rounding,
            weight_grad_rounding=self.weight_grad_rounding, add_output_bits=self.add_output_bits,
            seed=self.rounding_seed, wgrad_method=self.wgrad_method,
        )
        if new is not net:
            setattr(pl_module, self.module, new)
        if self.scales_file is not None:
            load_scale_state(new, self.scales_file)
        pl_module.to(pl_module.device)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        calibrating = (
            self.scales == "static" and self.scales_file is None and trainer.global_step < self.calibration_batches
        )
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
                eq15_update(layer, self.lr, self.frac_bits)  # rounding: the layer's weight_grad_rounding
