"""The training recipe of paper D Sec. 3.1, shared by the pretext and the transfer tasks.

* RMSprop with decay 0.9 and epsilon 1.0 in TensorFlow's form (epsilon inside the square root),
  i.e. ``timm.optim.RMSpropTF`` (``optim.name: rmsprop_tf``); torch's ``RMSprop`` adds epsilon
  outside the root, which with ``eps=1.0`` is a different optimiser (``optim.name: rmsprop``).
  Momentum is not stated in the paper; 0.9 is the value of the Inception recipe (Szegedy et al.
  2015) this paper's setup follows, and is configurable.
* Learning rate x 0.94 every 2 epochs (``optim.scheduler: step``), gradients clipped to global
  norm 10 (``clip_grad_norm``).
* Evaluation with a running average of the parameters: Lightning's ``WeightAveraging`` callback
  (``torch.optim.swa_utils.AveragedModel``) with TensorFlow's ``ExponentialMovingAverage``
  decay schedule ``min(decay, (1 + n) / (10 + n))``; validation, the saved checkpoints (so the
  best checkpoint and ``validate`` / ``test`` from it) and the weights after ``fit`` are the
  averaged ones (:class:`EvaluationEMA`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from lr_lightning.methods.base import BaseTask
from lr_lightning.methods.optim import OptimSpec


def tf_ema_avg_fn(decay: float) -> Callable[[Tensor, Tensor, Tensor | int], Tensor]:
    """``AveragedModel`` average function of ``tf.train.ExponentialMovingAverage(decay,
    num_updates)``: ``avg <- d avg + (1 - d) param`` with ``d = min(decay, (1 + n) / (10 + n))``,
    so early steps are not dominated by the random initialisation."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"ema_decay must be in [0, 1], got {decay}")

    @torch.no_grad()
    def avg_fn(averaged: Tensor, current: Tensor, num_averaged: Tensor | int) -> Tensor:
        n = float(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        if not averaged.is_floating_point():  # e.g. BatchNorm's num_batches_tracked
            return current.clone()
        return averaged * d + current.to(averaged.dtype) * (1.0 - d)

    return avg_fn


class EvaluationEMA(WeightAveraging):
    """``WeightAveraging`` whose averaged weights are also what ``validate`` / ``test`` /
    ``predict`` with a checkpoint evaluate.

    During ``fit`` it behaves like the parent (swap in the average for validation, save the
    average as the checkpoint's ``state_dict``). When the same callback instance is still
    attached after ``fit`` (a callback given to the ``Trainer``), the parent's
    ``validate/test(ckpt_path=...)`` would reload the raw weights (``current_model_state``) and,
    for ``validate``, swap in the average of the *end of fit* rather than the checkpoint's; here
    the module keeps the checkpoint's ``state_dict``, i.e. the average saved with it. (The
    instance returned by ``configure_callbacks`` is re-created for every trainer entry point and
    has no average outside ``fit``, so there both behave the same.)
    """

    @staticmethod
    def _fitting(trainer: Trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._fitting(trainer):
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._fitting(trainer):
            super().on_validation_epoch_end(trainer, pl_module)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._fitting(trainer):
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class PaperRecipeTask(BaseTask):
    """:class:`BaseTask` with paper D's gradient clipping and parameter EMA; the optimiser and
    schedule of Sec. 3.1 are the default ``optim`` of its subclasses
    (:data:`~lr_lightning.methods.optim.AUTORESOLUTION_OPTIM`: TF RMSprop, decay 0.9, eps 1.0,
    x0.94 every 2 epochs).

    Args (keyword-only, besides :class:`BaseTask`'s ``optim`` and ``channels_last``):
        clip_grad_norm: global-norm clipping threshold (10, Sec. 3.1); ``None`` disables it.
        ema_decay: decay of the parameter running average used for evaluation; ``None`` disables
            it (the paper does not give the value; TF's Inception used 0.9999 for long runs).
    """

    def __init__(
        self,
        *,
        optim: OptimSpec,
        clip_grad_norm: float | None,
        ema_decay: float | None,
        channels_last: bool,
        modules: dict[str, torch.nn.Module],
    ) -> None:
        super().__init__(optim=optim, channels_last=channels_last, modules=modules)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Global-norm clipping at ``clip_grad_norm`` (Sec. 3.1) unless the trainer sets its own."""
        if gradient_clip_val is None and self.hparams.clip_grad_norm is not None:
            gradient_clip_val, gradient_clip_algorithm = self.hparams.clip_grad_norm, "norm"
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm)

    def configure_callbacks(self) -> list[Callback]:
        callbacks = super().configure_callbacks()
        if self.hparams.ema_decay is not None:
            callbacks.append(EvaluationEMA(avg_fn=tf_ema_avg_fn(self.hparams.ema_decay)))
        return callbacks
