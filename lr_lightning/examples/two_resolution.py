"""The example method of docs/adding_a_method.md: an HR and an LR network whose class
probabilities are fused. Run by ``configs/examples/two_resolution_cifar10.yaml`` (fit and test in
tests/test_metric_contract.py and tests/test_adding_a_method.py)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lr_lightning.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from lr_lightning.methods import BaseTask
from lr_lightning.methods.base import batch_entry
from lr_lightning.methods.optim import OptimSpec

#: The method's defaults, declared once (a config overrides only the fields it names).
TWO_RESOLUTION_OPTIM = OptimSpec(name="adam", learning_rate=1e-3)


class TwoResolutionClassifier(BaseTask):
    """Fuses the class probabilities of a network on the HR image and one on the LR image.

    Args:
        hr_net / lr_net: classifiers (logits out) on the HR / LR image.
        num_classes: classes of both networks.
        fusion: ``mean`` or ``max`` of the two softmax outputs.
        optim: optimiser over the parameter groups ``hr_net`` and ``lr_net``.
        channels_last: NHWC memory format.
    """

    monitor = "val/acc"  # one of the keys in docs/metrics.md; selects the best checkpoint
    mode = "max"

    def __init__(
        self,
        *,
        hr_net: nn.Module,
        lr_net: nn.Module,
        num_classes: int = 10,
        fusion: Literal["mean", "max"] = "mean",
        optim: OptimSpec = TWO_RESOLUTION_OPTIM,
        channels_last: bool = False,
    ) -> None:
        # keyword-only, typed arguments: LightningCLI validates configs against them
        super().__init__(optim=optim, channels_last=channels_last, modules={"hr_net": hr_net, "lr_net": lr_net})

    hr_net: nn.Module
    lr_net: nn.Module

    def configure_models(self) -> None:
        self.register_normalization(CIFAR10_MEAN, CIFAR10_STD)

    def configure_metrics(self) -> MetricCollection:  # cloned as train/, val/, test/
        return MetricCollection({"acc": MulticlassAccuracy(self.hparams.num_classes, average="micro")})

    def parameter_groups(self) -> dict[str, list[Tensor]]:
        """Named groups: ``optim.group_learning_rates: {lr_net: ...}`` gives one its own rate."""
        return {"hr_net": list(self.hr_net.parameters()), "lr_net": list(self.lr_net.parameters())}

    def forward(self, hr: Tensor, lr: Tensor) -> Tensor:
        """Log-probabilities of the fused prediction."""
        p_hr = F.softmax(self.hr_net(self.normalize(hr)).float(), -1)
        p_lr = F.softmax(self.lr_net(self.normalize(lr)).float(), -1)
        p = (p_hr + p_lr) / 2 if self.hparams.fusion == "mean" else torch.maximum(p_hr, p_lr)
        return torch.log(p / p.sum(-1, keepdim=True))

    def _step(self, batch: dict[str, Any], stage: str) -> Tensor:
        logp = self(batch["hr"], batch_entry(batch, "lr", type(self).__name__))
        y = batch["label"]
        loss = F.nll_loss(logp, y)
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(logp.detach(), y)
        # docs/metrics.md: train/loss is the objective; val|test/ce the prediction's cross-entropy
        self.log("train/loss" if stage == "train" else f"{stage}/ce", loss, batch_size=len(y), sync_dist=stage != "train")
        self.log_dict(metrics, batch_size=len(y), on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")

    def inference_step(self, batch: dict[str, Any]) -> Tensor:
        """The test-time prediction, counted for test/macs_per_image and test/params."""
        return self(batch["hr"], batch_entry(batch, "lr", type(self).__name__))

    def hr_pixel_fraction(self, batch: dict[str, Any]) -> float:
        """The HR network sees every HR pixel."""
        return 1.0
