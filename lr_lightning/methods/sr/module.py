"""Supervised SR on ``(batch["lr"], batch["hr"])`` pairs with an L1 (or L2) pixel loss.

Validation/test report PSNR on Y with ``shave = scale``: ``val/psnr_y``, ``test/psnr_y`` (mean
over every test image) and, per test folder, ``test/psnr_y/<name>`` from
:attr:`SRDataModule.test_names` (docs/metrics.md). Paper B uses this task
as the "SR-L1" stage before DarioNet; paper E trains its ZSSR-8 net with it.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection

from lr_lightning.degrade import ResizeDegradation, upsample
from lr_lightning.methods.base import BaseTask, batch_entry
from lr_lightning.methods.optim import SR_OPTIM, OptimSpec
from lr_lightning.metrics import PSNRY


def lr_from_batch(batch: dict[str, Any], degradation: ResizeDegradation | None, owner: str) -> Tensor:
    """The LR input of a batch: ``degradation(batch["hr"])`` when the task makes its own LR
    (paper B's blur + 0.32x), else the data module's ``batch["lr"]`` (an error names ``owner``)."""
    if degradation is not None:
        return degradation(batch["hr"])
    return batch_entry(batch, "lr", f"{owner} (or give the task an `lr_degradation`)")


class SuperResolutionTask(BaseTask):
    """Pixel-loss SR training for any injected ``net(lr) -> sr`` network.

    Args:
        net: the SR network (e.g. ``lr_lightning.nn.ZSSR8``); output must be the HR size.
        scale: SR factor; also the PSNR border shave.
        loss: ``l1`` (ESRGAN/EDSR PSNR-oriented pre-training) or ``l2``.
        optim: optimiser and schedule (default Adam 2e-4, betas (0.9, 0.99) as BasicSR/ESRGAN).
        channels_last: NHWC memory format (see :class:`BaseTask`).
        lr_degradation: make the LR input from ``batch["hr"]`` with this (paper B's blur +
            0.32x, :class:`~lr_lightning.degrade.ResizeDegradation`); ``None`` uses
            ``batch["lr"]`` from the data module.
        resize_mode: ``none`` (the net's output must be the HR size) or the resampler that
            brings an output of another size to the HR size before the loss and the metrics
            (paper B, Fig. 1: x4 of a 0.32x image, resized back), as in ``DarioNetTask``.
    """

    monitor = "val/psnr_y"
    mode = "max"
    network_args = ("lr_degradation",)

    def __init__(
        self,
        *,
        net: nn.Module,
        scale: int = 2,
        loss: Literal["l1", "l2"] = "l1",
        optim: OptimSpec = SR_OPTIM,
        channels_last: bool = False,
        lr_degradation: ResizeDegradation | None = None,
        resize_mode: Literal["none", "bicubic", "bilinear"] = "none",
    ) -> None:
        self.lr_degradation = lr_degradation
        super().__init__(optim=optim, channels_last=channels_last, modules={"net": net})

    net: nn.Module
    lr_degradation: ResizeDegradation | None

    def lr_input(self, batch: dict[str, Any]) -> Tensor:
        return lr_from_batch(batch, self.lr_degradation, type(self).__name__)

    def super_resolve(self, batch: dict[str, Any]) -> Tensor:
        """``SR(lr)`` for a batch, resized to the HR size when ``resize_mode`` says so."""
        sr = self(self.lr_input(batch))
        hr = batch.get("hr")
        if self.hparams.resize_mode != "none" and hr is not None and tuple(sr.shape[-2:]) != tuple(hr.shape[-2:]):
            sr = upsample(sr, tuple(hr.shape[-2:]), mode=self.hparams.resize_mode)
        return sr

    def configure_losses(self) -> None:
        self.criterion = nn.L1Loss() if self.hparams.loss == "l1" else nn.MSELoss()

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"psnr_y": PSNRY(shave=self.hparams.scale)})

    def forward(self, lr: Tensor) -> Tensor:
        return self.net(self.to_input(lr))

    def _check(self, sr: Tensor, hr: Tensor) -> None:
        if sr.shape != hr.shape:
            raise ValueError(
                f"SR output {tuple(sr.shape)} differs from HR {tuple(hr.shape)}; check that the net's "
                f"scale equals the data module's scale ({self.hparams.scale}), or set resize_mode"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        sr = self.super_resolve(batch)
        self._check(sr, batch["hr"])
        loss = self.criterion(sr.float(), batch["hr"])
        self.log("train/loss", loss, batch_size=sr.shape[0], prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        sr = self.super_resolve(batch).float().clamp(0, 1)
        self._check(sr, batch["hr"])
        self.log("val/pixel_loss", self.criterion(sr, batch["hr"]), batch_size=sr.shape[0], sync_dist=True)
        self.val_metrics.update(sr, batch["hr"])
        self.log_dict(self.val_metrics, batch_size=sr.shape[0], prog_bar=True)

    def on_test_epoch_start(self) -> None:
        loaders = self.trainer.test_dataloaders
        n = len(loaders) if isinstance(loaders, list) else 1
        names = getattr(self.trainer.datamodule, "test_names", None) or [str(i) for i in range(n)]
        self._test_names = names
        self.test_psnr = nn.ModuleList([PSNRY(shave=self.hparams.scale) for _ in names]).to(self.device)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        sr = self.super_resolve(batch).float().clamp(0, 1)
        self._check(sr, batch["hr"])
        metric = self.test_psnr[dataloader_idx]
        metric.update(sr, batch["hr"])
        self.log(
            f"test/psnr_y/{self._test_names[dataloader_idx]}", metric, batch_size=sr.shape[0],
            add_dataloader_idx=False,
        )

    def on_test_epoch_end(self) -> None:
        # the mean over every test image, from the per-folder states (no second PSNR pass); logged
        # here, not per step, where the same key from several test loaders would be split by loader
        total, count = 0.0, 0
        for metric in self.test_psnr:
            with metric.sync_context():  # the states summed over DDP ranks
                total, count = total + float(metric.total), count + int(metric.count)
        self.log("test/psnr_y", total / max(count, 1), batch_size=1)

    def export_networks(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``sr``: the SR network (float), LR image in [0, 1] -> SR image."""
        from lr_lightning.export import ExportNet

        lr = self.lr_input(batch).float()
        return {"sr": ExportNet(self.net, (lr,), ["lr_image"], ["sr_image"], dynamic_size=True)}

    def inference_step(self, batch: dict[str, Any]) -> Tensor:
        """Test-time prediction: the SR image."""
        return self.super_resolve(batch)

    def hr_pixel_fraction(self, batch: dict[str, Any]) -> float:
        """SR sees only the LR image."""
        return 0.0

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        with torch.no_grad():
            return self.super_resolve(batch).float().clamp(0, 1)
