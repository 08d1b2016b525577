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

import torch
from lightning.pytorch.callbacks import Callback

from lr_lightning.callbacks.ema import EvaluationEMA, tf_ema_avg_fn
from lr_lightning.methods.base import BaseTask
from lr_lightning.methods.optim import OptimSpec


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
