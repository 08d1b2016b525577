"""The shared base task every method subclasses.

A method is a :class:`BaseTask` subclass that overrides the hooks it needs:

* :meth:`configure_models` builds the networks (from ``self.hparams`` and injected modules),
* :meth:`configure_losses` builds the criteria,
* :meth:`configure_metrics` builds one ``MetricCollection`` that is cloned per stage with the
  prefixes ``train/``, ``val/`` and ``test/``, so metric names are the same across methods,
* ``training_step`` etc. as usual; multi-network / RL / meta-learning methods set
  ``automatic_optimization = False`` and use ``manual_backward``.

Networks can be injected (``net: nn.Module`` in a subclass's ``__init__``, given by
``class_path`` in the config) and are passed to this class in ``modules``; they are attached
before the hooks run and left out of the saved hyper-parameters (the config saved by the CLI
records them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torchmetrics import MetricCollection

from lr_lightning.callbacks.checkpoint import BestAndLastCheckpoint

OptimizerName = Literal["adam", "adamw", "sgd"]
SchedulerName = Literal["none", "cosine", "multistep"]


class BaseTask(LightningModule):
    """Base LightningModule: hyper-parameters, hooks, default optimiser/scheduler, checkpoints.

    Class attributes ``monitor`` / ``mode`` name the validation metric that selects the best
    checkpoint (a ``ModelCheckpoint(save_last=True)`` is added by :meth:`configure_callbacks`).

    Args:
        optimizer: ``adam``, ``adamw`` or ``sgd`` (Nesterov when ``momentum > 0``).
        lr: learning rate.
        weight_decay: L2 / decoupled weight decay.
        momentum: SGD momentum (also Adam's beta1 when not 0.9 is wanted: see ``betas``).
        betas: Adam betas.
        scheduler: ``none``, ``cosine`` (per step, to zero over the whole run) or ``multistep``.
        milestones: epochs at which ``multistep`` multiplies the rate by ``gamma``.
        gamma: ``multistep`` factor.
        channels_last: keep networks and inputs in NHWC memory format (faster convolutions on
            CPUs with AVX-512 and on tensor-core GPUs).
        modules: networks built outside (dependency injection), attached by name.
    """

    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    #: ``__init__`` arguments of a subclass that are objects (networks, degradations) not passed in
    #: ``modules``; they are kept out of the saved hyper-parameters like injected networks.
    network_args: tuple[str, ...] = ()

    def __init__(
        self,
        optimizer: OptimizerName = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        scheduler: SchedulerName = "none",
        milestones: list[int] | None = None,
        gamma: float = 0.1,
        channels_last: bool = True,
        modules: dict[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        modules = modules or {}
        self.save_hyperparameters(ignore=["modules", *modules, *self.network_args])
        for name, module in modules.items():
            setattr(self, name, module)
        self.configure_models()
        self.configure_losses()
        metrics = self.configure_metrics()
        if metrics is not None:
            self.train_metrics = metrics.clone(prefix="train/")
            self.val_metrics = metrics.clone(prefix="val/")
            self.test_metrics = metrics.clone(prefix="test/")
        if channels_last:
            self.to(memory_format=torch.channels_last)

    # -- hooks ---------------------------------------------------------------------------------
    def configure_models(self) -> None:
        """Build networks; injected ones are already attributes."""

    def configure_losses(self) -> None:
        """Build loss modules."""

    def configure_metrics(self) -> MetricCollection | None:
        """Return the metrics of one stage (without prefix), or ``None``."""
        return None

    # -- helpers -------------------------------------------------------------------------------
    def register_normalization(self, mean: tuple[float, ...] | list[float], std: tuple[float, ...] | list[float]) -> None:
        """Per-channel ``mean`` / ``std`` buffers (not saved) used by :meth:`normalize`."""
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def normalize(self, x: Tensor) -> Tensor:
        """Images in [0, 1] -> ``(x - mean) / std`` in the task's memory format (a network input).
        Needs :meth:`register_normalization` in ``configure_models``."""
        return self.to_input((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))

    def log_image_files(self, key: str, paths: list[str] | list[Path]) -> None:
        """Send saved figures (PNG files) to every logger that takes images: W&B (``log_image``)
        and TensorBoard (``add_image``). The CSV logger keeps only the files."""
        for logger in self.loggers:
            if hasattr(logger, "log_image"):  # e.g. WandbLogger
                logger.log_image(key=key, images=[str(p) for p in paths], step=self.global_step)
            elif hasattr(getattr(logger, "experiment", None), "add_image"):  # TensorBoard
                import numpy as np
                from PIL import Image

                for i, p in enumerate(paths):
                    img = torch.from_numpy(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1)
                    logger.experiment.add_image(f"{key}/{i}" if len(paths) > 1 else key, img, self.global_step)

    def to_input(self, x: Tensor) -> Tensor:
        """Put an input batch in the task's memory format."""
        if self.hparams.get("channels_last", False) and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def optimized_parameters(self) -> list[Tensor] | list[dict[str, Any]]:
        """Parameters (or parameter groups) the default optimiser trains; override to restrict."""
        return [p for p in self.parameters() if p.requires_grad]

    def build_optimizer(self, params: Any, lr: float | None = None) -> torch.optim.Optimizer:
        """The optimiser named by the hyper-parameters, over ``params``."""
        hp = self.hparams
        lr = hp.lr if lr is None else lr
        if hp.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=lr, momentum=hp.momentum, weight_decay=hp.weight_decay, nesterov=hp.momentum > 0
            )
        cls = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)

    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer(self.optimized_parameters())
        hp = self.hparams
        if hp.scheduler == "cosine":
            total = max(1, int(self.trainer.estimated_stepping_batches))
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        if hp.scheduler == "multistep":
            sched = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=hp.milestones or [], gamma=hp.gamma)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        return optimizer

    def configure_callbacks(self) -> list[Callback]:
        """Best-by-``monitor`` and last checkpoints, so ``test --ckpt_path`` finds a trained model."""
        return [
            BestAndLastCheckpoint(
                monitor=self.monitor,
                mode=self.mode,
                save_last=True,
                filename="best-{epoch}-{step}",
                auto_insert_metric_name=False,
            )
        ]
