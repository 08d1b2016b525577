"""Exponential moving average of the weights that can be trusted at any run length.

Lightning's :class:`~lightning.pytorch.callbacks.EMAWeightAveraging` applies a constant decay
from the first step (``ema_t = d * ema_{t-1} + (1 - d) * w_t``, ``ema_0 = w_0``). With
``d = 0.999`` the average still holds ``0.999^t`` of the initial (random) weights after ``t``
steps: 64 % after 450 steps, which is why a short SR-L1 run scored 9.5 dB with its EMA weights
and 22.4 dB with its raw ones (issue #15). It also swaps its average into validation and into
the saved checkpoint before it has averaged anything.

:class:`WarmupEMA` fixes both:

* **warm-up** (TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` rule): the decay at
  the ``n``-th update is ``min(decay, (1 + n) / (10 + n))``, so early averages follow the
  weights closely and the configured decay is reached after ``(10 d - 1) / (1 - d)`` updates
  (8 991 for 0.999);
* **start step**: no averaging before ``start_step``; until the first update the callback is
  inert, so validation, checkpoints and the end of training use the raw weights.

Both build on :class:`EvaluationEMA` (first written for paper D's recipe): a ``WeightAveraging``
whose average is also what ``validate`` / ``test`` with a checkpoint evaluate when the same
callback instance is still attached after ``fit`` (Lightning's own reloads the raw weights there).

The averaging itself is Lightning's (:class:`~lightning.pytorch.callbacks.WeightAveraging`
over :class:`torch.optim.swa_utils.AveragedModel`); the decay rule, the evaluation guard and
the "not yet started" guard are written here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

__all__ = ["EvaluationEMA", "WarmupEMA", "ema_decay", "tf_ema_avg_fn"]


def ema_decay(decay: float, num_updates: int | float, warmup: bool = True) -> float:
    """Decay used at the ``num_updates``-th averaging step (``num_updates >= 1``):
    ``min(decay, (1 + n) / (10 + n))`` with warm-up, else ``decay``."""
    if not warmup:
        return decay
    n = float(num_updates)
    return min(decay, (1.0 + n) / (10.0 + n))


def tf_ema_avg_fn(decay: float, warmup: bool = True) -> Callable[[Tensor, Tensor, Tensor | int], Tensor]:
    """``AveragedModel`` average function of ``tf.train.ExponentialMovingAverage(decay,
    num_updates)``: ``avg <- d avg + (1 - d) param`` with ``d = ema_decay(decay, n, warmup)``,
    so early steps are not dominated by the random initialisation. Integer buffers (BatchNorm's
    ``num_batches_tracked``) take the current value."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")

    @torch.no_grad()
    def avg_fn(averaged: Tensor, current: Tensor, num_averaged: Tensor | int) -> Tensor:
        d = ema_decay(decay, float(num_averaged), warmup)
        if not averaged.is_floating_point():
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


class WarmupEMA(EvaluationEMA):
    """EMA of the weights with a warm-up decay and an optional start step.

    Validation and the saved checkpoints use the averaged weights once averaging has started
    (as Lightning's ``EMAWeightAveraging``), the raw weights before; ``validate`` / ``test``
    from a checkpoint evaluate that checkpoint's weights (:class:`EvaluationEMA`).

    Args:
        decay: the decay the warm-up rises to (0.999 as BasicSR / ESRGAN).
        warmup: use ``min(decay, (1 + n) / (10 + n))`` at the ``n``-th update; ``False`` is the
            constant decay of ``EMAWeightAveraging``.
        start_step: first optimizer step (0-based) that is averaged; the average starts as a
            copy of the weights at that step.
        update_every_n_steps: average every n-th optimizer step from ``start_step`` on.
        use_buffers: also average buffers (BatchNorm statistics).
        device: where the average lives (``None`` = the model's device).
    """

    def __init__(
        self,
        decay: float = 0.999,
        warmup: bool = True,
        start_step: int = 0,
        update_every_n_steps: int = 1,
        use_buffers: bool = True,
        device: str | None = None,
    ) -> None:
        if start_step < 0 or update_every_n_steps < 1:
            raise ValueError(f"start_step must be >= 0 and update_every_n_steps >= 1, got {start_step}, "
                             f"{update_every_n_steps}")
        super().__init__(device=device, use_buffers=use_buffers, avg_fn=tf_ema_avg_fn(decay, warmup))
        self.decay = decay
        self.warmup = warmup
        self.start_step = start_step
        self.update_every_n_steps = update_every_n_steps

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return (step_idx is not None and step_idx >= self.start_step
                and (step_idx - self.start_step) % self.update_every_n_steps == 0)

    @property
    def num_updates(self) -> int:
        """Number of averaging steps so far (0 = not started: the raw weights are used)."""
        return 0 if self._average_model is None else int(self._average_model.n_averaged)

    @property
    def started(self) -> bool:
        return self.num_updates > 0

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.started:
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.started:
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.started:
            super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self.started:
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        # a checkpoint saved before averaging started holds only the raw weights: nothing to restore
        if self._average_model is not None and "current_model_state" not in checkpoint:
            return
        super().on_load_checkpoint(trainer, pl_module, checkpoint)

