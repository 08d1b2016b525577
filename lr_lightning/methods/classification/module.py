"""Supervised classifier on ``batch["hr"]`` (HR-CNN) or ``batch["lr"]`` (LR-CNN).

Also the robustness evaluation: with ``test_degradations`` the test run reports the accuracy
under every listed degradation of the HR test images (``test/acc/<name>``) and writes one
Markdown table, ``robustness.md``, into the run's log directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lr_lightning.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from lr_lightning.degrade import Degradation
from lr_lightning.methods.base import BaseTask, batch_entry
from lr_lightning.methods.optim import CLASSIFIER_OPTIM, OptimSpec
from lr_lightning.nn.weights import load_module_weights


class ImageClassifier(BaseTask):
    """Cross-entropy classifier over any injected network.

    Args:
        net: the classifier network (e.g. ``lr_lightning.nn.CifarResNet``); outputs logits.
        num_classes: number of classes (checked against the network's output).
        input_key: ``"hr"`` for the HR-CNN baseline, ``"lr"`` for LR-CNN (the data module's
            ``degradation`` makes ``batch["lr"]``).
        mean / std: per-channel normalisation applied inside the task (inputs are in [0, 1]).
        label_smoothing: cross-entropy label smoothing.
        test_degradations: degradation names (see ``Degradation.from_name``, e.g.
            ``"bicubic4+up"``) applied to the HR test images, one accuracy each.
        init_checkpoint: weights that initialise ``net`` (an ImageClassifier checkpoint, whose
            ``net.*`` entries are used, or a plain state dict), e.g. an LR-CNN initialised from
            the HR-CNN as PatchDrop (paper C, Sec. 5.1) does; ``None`` = the network's own init.
        optim: optimiser and schedule (default: SGD 0.1, Nesterov, wd 5e-4, cosine).
        channels_last: NHWC memory format (see :class:`BaseTask`).
    """

    monitor = "val/acc"
    mode = "max"

    def __init__(
        self,
        *,
        net: nn.Module,
        num_classes: int = 10,
        input_key: Literal["hr", "lr"] = "lr",
        mean: tuple[float, float, float] = CIFAR10_MEAN,
        std: tuple[float, float, float] = CIFAR10_STD,
        label_smoothing: float = 0.0,
        test_degradations: list[str] | None = None,
        init_checkpoint: str | None = None,
        optim: OptimSpec = CLASSIFIER_OPTIM,
        channels_last: bool = True,
    ) -> None:
        self.test_degradation_list = [Degradation.from_name(n) for n in (test_degradations or [])]
        super().__init__(optim=optim, channels_last=channels_last, modules={"net": net})

    net: nn.Module

    def configure_models(self) -> None:
        self.register_normalization(self.hparams.mean, self.hparams.std)
        if self.hparams.get("init_checkpoint"):
            load_module_weights(self.net, self.hparams.init_checkpoint, "net.")

    def configure_losses(self) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=self.hparams.label_smoothing)

    def configure_metrics(self) -> MetricCollection:
        n = self.hparams.num_classes
        metrics: dict[str, Any] = {"acc": MulticlassAccuracy(n, average="micro")}
        if n > 5:
            metrics["acc_top5"] = MulticlassAccuracy(n, top_k=5, average="micro")
        self.degradation_metrics = nn.ModuleDict(
            {d.name: MulticlassAccuracy(n, average="micro") for d in self.test_degradation_list}
        )
        return MetricCollection(metrics)

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Logits for images in [0, 1]."""
        logits = self.net(self.normalize(x))
        if logits.shape[-1] != self.hparams.num_classes:
            raise ValueError(
                f"the network outputs {logits.shape[-1]} logits but num_classes is "
                f"{self.hparams.num_classes}; set the same number in both"
            )
        return logits

    def _input(self, batch: dict[str, Any]) -> Tensor:
        return batch_entry(batch, self.hparams.input_key, type(self).__name__)

    def _step(self, batch: dict[str, Any], metrics: MetricCollection, stage: str) -> Tensor:
        logits = self(self._input(batch))
        y = batch["label"]
        loss = self.criterion(logits, y)
        bs = y.shape[0]
        metrics.update(logits.detach().float(), y)
        # docs/metrics.md: train/loss is the objective, val|test/ce the cross-entropy of the prediction
        if stage == "train":
            self.log("train/loss", loss, batch_size=bs, prog_bar=True)
        else:
            ce = loss if self.hparams.label_smoothing == 0 else F.cross_entropy(logits.float(), y)
            self.log(f"{stage}/ce", ce, batch_size=bs, prog_bar=stage == "val", sync_dist=True)
        self.log_dict(metrics, batch_size=bs, prog_bar=stage == "val", on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, self.train_metrics, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, self.val_metrics, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, self.test_metrics, "test")
        y = batch["label"]
        for deg in self.test_degradation_list:
            metric = self.degradation_metrics[deg.name]
            metric.update(self(deg(batch["hr"])).float(), y)
            self.log(f"test/acc/{deg.name}", metric, batch_size=y.shape[0], on_step=False, on_epoch=True)

    def on_test_epoch_end(self) -> None:
        if not self.test_degradation_list or self.trainer.sanity_checking:
            return
        rows = [(d.name, float(self.degradation_metrics[d.name].compute()) * 100) for d in self.test_degradation_list]
        table = "| degradation | acc (%) |\n| --- | ---: |\n" + "".join(f"| {n} | {a:.2f} |\n" for n, a in rows)
        log_dir = self.trainer.log_dir
        if log_dir is not None and self.trainer.is_global_zero:
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            (Path(log_dir) / "robustness.md").write_text(table)

    def inference_step(self, batch: dict[str, Any]) -> Tensor:
        """Test-time prediction: logits of the classifier on its input."""
        return self(self._input(batch))

    def export_networks(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``classifier``: image in [0, 1] (the ``input_key`` entry) -> logits."""
        from lr_lightning.export import ExportNet, Normalized

        x = self._input(batch).float()
        return {"classifier": ExportNet(Normalized(self.net, self.mean, self.std), (x,), ["image"], ["logits"])}

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        logits = self(self._input(batch))
        return {"pred": logits.argmax(-1), "prob": F.softmax(logits.float(), -1)}
