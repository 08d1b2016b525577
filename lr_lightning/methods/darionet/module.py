"""DarioNet (paper B): an SR network fine-tuned by a frozen classifier's logits (teacher-student).

Pipeline (paper B, Fig. 1): HR image -> "Scaler" (downsampling) -> SR network ("DarioNet", an
ESRGAN RRDBNet pre-trained with L1, see :class:`~lr_lightning.methods.sr.SuperResolutionTask`)
-> classifier (the teacher, frozen). Only the SR network is trained; see
:mod:`lr_lightning.methods.darionet.loss` for the losses.

LR inputs come either from the data module (``batch["lr"]``, e.g. bicubic x4 on CIFAR, 32 ->
8) or, with ``lr_degradation``, from paper B's recipe (Gaussian blur k=3 sigma=0.2, resize to
0.32x: :class:`~lr_lightning.degrade.ResizeDegradation`); when the SR output is not the HR size
(0.32 x 4 != 1) it is resized back to the HR size before the teacher sees it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lr_lightning.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from lr_lightning.degrade import ResizeDegradation, upsample
from lr_lightning.methods.base import BaseTask
from lr_lightning.methods.darionet.loss import (
    cross_entropy_gap,
    feature_distillation_loss,
    logit_distillation_loss,
)
from lr_lightning.methods.optim import DARIONET_OPTIM, OptimSpec
from lr_lightning.methods.sr.module import lr_from_batch
from lr_lightning.metrics import PSNRY, SSIMY
from lr_lightning.nn.weights import load_module_weights, load_state_dict_file


def clamp_unit(x: Tensor, how: Literal["straight_through", "hard", "off"]) -> Tensor:
    """``x`` clamped to [0, 1]: ``hard`` = ``x.clamp(0, 1)``; ``straight_through`` = the same
    values with the identity gradient (``x + (clamp(x) - x).detach()``); ``off`` = ``x``."""
    if how == "off":
        return x
    clamped = x.clamp(0, 1)
    return clamped if how == "hard" else x + (clamped - x).detach()


def load_weights(module: nn.Module, path: str, prefix: str | None = "auto") -> nn.Module:
    """Load ``path`` (plain state dict, BasicSR file or Lightning checkpoint) into ``module``
    with ``weights_only=True``. ``prefix="auto"`` strips ``"net."`` when the file's keys carry it
    (checkpoints of the project's classifier / SR / DarioNet tasks), else nothing."""
    if prefix == "auto":
        return load_module_weights(module, path, "net.")
    return load_state_dict_file(module, path, prefix=prefix)


class DarioNetTask(BaseTask):
    """Fine-tune an SR network so a frozen teacher classifies its outputs as it does HR images.

    Args:
        net: the SR network ``lr -> sr`` (e.g. :class:`~lr_lightning.nn.RRDBNet`, or ``ZSSR8``).
        teacher: the classifier (e.g. ``CifarResNet`` or ``TimmClassifier``); frozen: eval
            mode (kept when Lightning calls ``.train()``), ``requires_grad=False``.
        net_ckpt: SR weights (a checkpoint of the SR pre-training config, an ESRGAN/BasicSR
            file); ``None`` = the net's own initialisation (warned: DarioNet starts from a
            pre-trained SR net).
        teacher_ckpt: teacher weights (a checkpoint of the HR-CNN config, or a plain state
            dict); ``None`` = the teacher as constructed (warned unless it loads its own
            weights, e.g. ``TimmClassifier(weights_path=...)``).
        net_ckpt_prefix / teacher_ckpt_prefix: key prefix to strip; ``"auto"`` strips
            ``"net."`` if present.
        scale: SR factor (also the PSNR/SSIM border shave).
        num_classes: teacher outputs.
        teacher_mean / teacher_std: normalisation the teacher was trained with.
        lr_degradation: make the LR input from ``batch["hr"]`` with this (paper B: blur +
            0.32x); ``None`` uses ``batch["lr"]`` from the data module.
        resize_mode: how an SR output of another size is resized to the HR size.
        train_clamp: clamp the SR image to [0, 1] before the teacher (and the pixel loss) in
            training too, as in evaluation: ``straight_through`` (default) clamps the forward
            pass and passes the gradient through unchanged, so a pixel pushed out of range
            still gets a gradient back; ``hard`` is ``Tensor.clamp`` (zero gradient outside);
            ``off`` trains on the unclamped image (the first release; 9 % of pixels out of
            range after distillation, issue #15).
        logit_weight: weight of the paper's logit MSE (1).
        pixel_weight: weight of an L1 pixel loss to the HR image (0 in the paper).
        feature_weight: weight of the feature MSE on ``feature_layers`` (0 in the paper).
        feature_layers: teacher sub-module names (``teacher.get_submodule``), e.g.
            ``["layers.1", "layers.2"]`` (stages 2 and 3 of ``CifarResNet``).
        optim: optimiser of the SR net (default Adam 1e-4, betas (0.9, 0.99)).
        channels_last: NHWC memory format (see :class:`BaseTask`).
    """

    monitor = "val/ce_gap"
    mode = "min"
    # an object, not a hyper-parameter: kept out of the checkpoint so it loads with
    # weights_only=True (the CLI's saved config records it)
    network_args = ("lr_degradation",)

    def __init__(
        self,
        *,
        net: nn.Module,
        teacher: nn.Module,
        net_ckpt: str | None = None,
        teacher_ckpt: str | None = None,
        net_ckpt_prefix: str | None = "auto",
        teacher_ckpt_prefix: str | None = "auto",
        scale: int = 4,
        num_classes: int = 10,
        teacher_mean: tuple[float, float, float] = CIFAR10_MEAN,
        teacher_std: tuple[float, float, float] = CIFAR10_STD,
        lr_degradation: ResizeDegradation | None = None,
        resize_mode: Literal["bicubic", "bilinear"] = "bicubic",
        train_clamp: Literal["straight_through", "hard", "off"] = "straight_through",
        logit_weight: float = 1.0,
        pixel_weight: float = 0.0,
        feature_weight: float = 0.0,
        feature_layers: list[str] | None = None,
        optim: OptimSpec = DARIONET_OPTIM,
        channels_last: bool = False,
    ) -> None:
        if feature_weight > 0 and not feature_layers:
            raise ValueError("feature_weight > 0 needs feature_layers (teacher sub-module names)")
        if min(logit_weight, pixel_weight, feature_weight) < 0:
            raise ValueError("loss weights must be non-negative")
        if net_ckpt is not None:
            load_weights(net, net_ckpt, net_ckpt_prefix)
        else:
            warnings.warn("net_ckpt is null: the SR net starts from its own initialisation, not from "
                          "an SR-L1 pre-trained checkpoint", stacklevel=2)
        if teacher_ckpt is not None:
            load_weights(teacher, teacher_ckpt, teacher_ckpt_prefix)
        else:
            warnings.warn("teacher_ckpt is null: the teacher keeps the weights it was built with "
                          "(random unless it loaded its own weights file)", stacklevel=2)
        self.lr_degradation = lr_degradation
        super().__init__(optim=optim, channels_last=channels_last, modules={"net": net, "teacher": teacher})

    net: nn.Module
    teacher: nn.Module
    lr_degradation: ResizeDegradation | None

    # -- set-up --------------------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[Tensor]]:
        """``net``: only the SR network trains (the teacher is frozen)."""
        return {"net": list(self.net.parameters())}

    def configure_models(self) -> None:
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        hp = self.hparams
        self.register_normalization(hp.teacher_mean, hp.teacher_std)
        self._features: list[Tensor] = []
        for name in hp.feature_layers or []:
            layer = self.teacher.get_submodule(name)  # raises AttributeError naming the missing layer
            layer.register_forward_hook(lambda _m, _i, out: self._features.append(out))

    def configure_metrics(self) -> MetricCollection:
        n = self.hparams.num_classes
        self.val_image_metrics = MetricCollection(
            {"psnr_y": PSNRY(shave=self.hparams.scale), "ssim_y": SSIMY(shave=self.hparams.scale)}, prefix="val/"
        )
        self.test_image_metrics = self.val_image_metrics.clone(prefix="test/")
        self.val_acc_hr = MulticlassAccuracy(n, average="micro")
        self.test_acc_hr = MulticlassAccuracy(n, average="micro")
        # per-class accuracies for the test-time figure (paper B, Fig. 3/5)
        self.test_class_acc = nn.ModuleDict({k: MulticlassAccuracy(n, average="none") for k in ("HR", "SR")})
        self._grid: dict[str, Tensor] | None = None
        return MetricCollection({"acc": MulticlassAccuracy(n, average="micro")})

    def train(self, mode: bool = True) -> DarioNetTask:
        """Switch the SR net's mode; the teacher always stays in eval mode (frozen BatchNorm)."""
        super().train(mode)
        self.teacher.eval()
        return self

    # -- forward -------------------------------------------------------------------------------
    def lr_input(self, batch: dict[str, Any]) -> Tensor:
        return lr_from_batch(batch, self.lr_degradation, type(self).__name__)

    def super_resolve(self, lr: Tensor, size: tuple[int, int]) -> Tensor:
        """``SR(lr)`` resized to ``size`` when the net's output has another size."""
        sr = self.net(self.to_input(lr))
        if tuple(sr.shape[-2:]) != tuple(size):
            sr = upsample(sr, size, mode=self.hparams.resize_mode)
        return sr

    def forward(self, lr: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """SR image for an LR batch (resized to ``size`` if given)."""
        return self.net(self.to_input(lr)) if size is None else self.super_resolve(lr, size)

    def teacher_logits(self, x: Tensor) -> Tensor:
        """Teacher logits for images in [0, 1] (normalised here)."""
        return self.teacher(self.normalize(x)).float()

    def _teacher_pass(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        self._features = []
        logits = self.teacher_logits(x)
        feats, self._features = self._features, []
        return logits, feats

    # -- steps ---------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        hr = batch["hr"]
        raw = self.super_resolve(self.lr_input(batch), tuple(hr.shape[-2:]))
        hp = self.hparams
        sr = clamp_unit(raw, hp.train_clamp)
        with torch.no_grad():
            logits_hr, feats_hr = self._teacher_pass(hr)
        logits_sr, feats_sr = self._teacher_pass(sr)
        bs = hr.shape[0]
        logit_loss = logit_distillation_loss(logits_sr, logits_hr)
        loss = hp.logit_weight * logit_loss
        self.log("train/loss_logit", logit_loss, batch_size=bs)
        with torch.no_grad():  # share of SR pixels outside [0, 1] before the clamp
            self.log("train/out_of_range", ((raw < 0) | (raw > 1)).float().mean(), batch_size=bs)
        if hp.pixel_weight > 0:
            pixel = F.l1_loss(sr.float(), hr.float())
            loss = loss + hp.pixel_weight * pixel
            self.log("train/loss_pixel", pixel, batch_size=bs)
        if hp.feature_weight > 0:
            feat = feature_distillation_loss(feats_sr, feats_hr)
            loss = loss + hp.feature_weight * feat
            self.log("train/loss_feature", feat, batch_size=bs)
        self.log("train/loss", loss, batch_size=bs, prog_bar=True)
        return loss

    def _eval_step(self, batch: dict[str, Any], stage: Literal["val", "test"]) -> tuple[Tensor, ...]:
        hr = batch["hr"]
        lr = self.lr_input(batch)
        sr = self.super_resolve(lr, tuple(hr.shape[-2:])).float().clamp(0, 1)
        logits_sr = self.teacher_logits(sr)
        logits_hr = self.teacher_logits(hr)
        # SR folders have no labels: the teacher's HR prediction stands in for them.
        y = batch["label"] if "label" in batch else logits_hr.argmax(-1)
        bs = hr.shape[0]
        self.log(f"{stage}/ce_gap", cross_entropy_gap(logits_sr, logits_hr, y), batch_size=bs, sync_dist=True,
                 prog_bar=stage == "val")
        self.log(f"{stage}/ce", F.cross_entropy(logits_sr, y), batch_size=bs, sync_dist=True)
        self.log(f"{stage}/ce_hr", F.cross_entropy(logits_hr, y), batch_size=bs, sync_dist=True)
        self.log(f"{stage}/cross_loss", logit_distillation_loss(logits_sr, logits_hr), batch_size=bs, sync_dist=True)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        image_metrics = self.val_image_metrics if stage == "val" else self.test_image_metrics
        acc_hr = self.val_acc_hr if stage == "val" else self.test_acc_hr
        metrics.update(logits_sr, y)
        image_metrics.update(sr, hr)
        acc_hr.update(logits_hr, y)
        self.log_dict(metrics, batch_size=bs, prog_bar=stage == "val")
        self.log_dict(image_metrics, batch_size=bs)
        self.log(f"{stage}/acc_hr", acc_hr, batch_size=bs)
        return lr, sr, logits_sr, logits_hr, y

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        lr, sr, logits_sr, logits_hr, y = self._eval_step(batch, "test")
        hr = batch["hr"]
        self.test_class_acc["HR"].update(logits_hr, y)
        self.test_class_acc["SR"].update(logits_sr, y)
        if batch_idx == 0:
            k = min(8, hr.shape[0])
            up = upsample(lr[:k].float(), tuple(hr.shape[-2:]), mode="bicubic")
            self._grid = {"HR": hr[:k], "LR": lr[:k], "bicubic": up, "SR": sr[:k]}

    def on_test_epoch_end(self) -> None:
        """Write the per-class accuracy differences (SR vs HR) and an image grid of the first
        test batch (HR / LR / bicubic / SR) to ``<log_dir>/figures`` and log them to loggers
        that take images (W&B ``log_image``)."""
        acc = {k: (m.compute() * 100).tolist() for k, m in self.test_class_acc.items()}
        for m in self.test_class_acc.values():
            m.reset()
        log_dir = self.trainer.log_dir
        if log_dir is None or not self.trainer.is_global_zero or self._grid is None:
            return
        from lr_lightning.methods.darionet.figures import save_image_grid, save_per_class_figure

        names = getattr(self.trainer.datamodule, "classes", None)
        if not names or len(names) != len(acc["HR"]):  # e.g. an ImageNet teacher on a few-class folder
            names = [str(c) for c in range(len(acc["HR"]))]
        paths = [
            save_per_class_figure(Path(log_dir) / "figures" / "per_class_acc.png", names, acc,
                                  title="Per-class accuracy of the teacher on SR vs on HR"),
            save_image_grid(Path(log_dir) / "figures" / "grid.png", self._grid),
        ]
        self.log_image_files("test/darionet", paths)

    def export_networks(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``sr``: the distilled SR network, LR image in [0, 1] -> SR image."""
        from lr_lightning.export import ExportNet

        return {"sr": ExportNet(self.net, (self.lr_input(batch).float(),), ["lr_image"], ["sr_image"], dynamic_size=True)}

    def inference_step(self, batch: dict[str, Any]) -> Tensor:
        """Test-time prediction: the teacher's logits on the super-resolved image."""
        hr = batch["hr"]
        sr = self.super_resolve(self.lr_input(batch), tuple(hr.shape[-2:])).float().clamp(0, 1)
        return self.teacher_logits(sr)

    def hr_pixel_fraction(self, batch: dict[str, Any]) -> float:
        """The prediction sees only the LR image (the HR pass is a reference)."""
        return 0.0

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        with torch.no_grad():
            hr = batch["hr"]
            return self.super_resolve(self.lr_input(batch), tuple(hr.shape[-2:])).float().clamp(0, 1)
