"""The shared test-time keys of docs/metrics.md, logged for every task by one callback.

* ``test/macs_per_image`` and ``test/params``: :func:`~lr_lightning.metrics.inference_cost.inference_cost`
  of the task's ``inference_step`` on the first test batch;
* ``test/hr_pixel_fraction``: the mean over test images of the task's ``hr_pixel_fraction(batch)``
  (tasks that log it themselves, per image, return ``None``).

A callback rather than task hooks so that tasks overriding ``on_test_epoch_end`` cannot drop
them, and so that several test loaders (SR folders) give one value per key.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torchmetrics import MeanMetric

from lr_lightning.metrics.inference_cost import inference_cost


def _batch_size(batch: dict[str, Any]) -> int:
    for v in batch.values():
        if isinstance(v, Tensor) and v.ndim > 0:
            return int(v.shape[0])
    return 1


class SharedTestKeys(Callback):
    """Logs ``test/macs_per_image``, ``test/params`` and ``test/hr_pixel_fraction`` for a
    :class:`~lr_lightning.methods.base.BaseTask` (added by its ``configure_callbacks``)."""

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.counted = False  # the cost is measured once, on the first test batch
        self.cost: tuple[float, int] | None = None  # None: the task has no inference_step
        self.fraction = MeanMetric().to(pl_module.device)
        self.has_fraction = False

    def on_test_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not isinstance(batch, dict):
            return
        n = _batch_size(batch)
        if not self.counted:
            self.counted = True
            try:
                self.cost = inference_cost(pl_module, lambda: pl_module.inference_step(batch), n)
            except NotImplementedError:
                self.cost = None
        frac = pl_module.hr_pixel_fraction(batch)
        if frac is not None:
            self.has_fraction = True
            self.fraction.update(float(frac), weight=n)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.cost is not None:
            pl_module.log("test/macs_per_image", self.cost[0], batch_size=1)
            pl_module.log("test/params", float(self.cost[1]), batch_size=1)
        if self.has_fraction:
            pl_module.log("test/hr_pixel_fraction", self.fraction.compute(), batch_size=1)
