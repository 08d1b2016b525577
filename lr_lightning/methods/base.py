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
from lr_lightning.callbacks.finite import NonFiniteGuard
from lr_lightning.callbacks.resume import ResumeState
from lr_lightning.callbacks.test_keys import SharedTestKeys
from lr_lightning.methods.optim import OptimSpec, build_optimizer, build_scheduler


def batch_entry(batch: dict[str, Any], key: str, owner: str = "this task") -> Tensor:
    """``batch[key]``, or a ``KeyError`` that says where the entry comes from. The one error for
    a missing low-resolution image (``key="lr"``: made by the data module's ``degradation``)."""
    if key in batch:
        return batch[key]
    hint = (
        "the low-resolution image `lr` is made by the data module's `degradation`: give the data module one"
        if key == "lr"
        else f"the data module does not provide {key!r}"
    )
    raise KeyError(f"{owner} needs batch[{key!r}] but the batch has only {sorted(batch)}; {hint}")


class BaseTask(LightningModule):
    """Base LightningModule: hyper-parameters, hooks, the optimiser from an :class:`OptimSpec`,
    checkpoints.

    Class attributes ``monitor`` / ``mode`` name the validation metric that selects the best
    checkpoint (a ``ModelCheckpoint(save_last=True)`` is added by :meth:`configure_callbacks`);
    ``monitor`` must be one of the keys in ``docs/metrics.md``.

    Args (keyword-only):
        optim: optimiser and schedule (:class:`~lr_lightning.methods.optim.OptimSpec`); each
            method's signature declares its paper's default once. Saved in the hyper-parameters
            as a plain dict.
        channels_last: keep networks and inputs in NHWC memory format (faster convolutions on
            CPUs with AVX-512 and on tensor-core GPUs).
        modules: networks built outside (dependency injection), attached by name.
    """

    monitor: str = "val/acc"
    mode: Literal["min", "max"] = "max"
    #: ``__init__`` arguments of a subclass that are objects (networks, degradations) not passed in
    #: ``modules``; they are kept out of the saved hyper-parameters like injected networks.
    network_args: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        optim: OptimSpec | None = None,
        channels_last: bool = True,
        modules: dict[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        modules = modules or {}
        self.optim_spec = OptimSpec.coerce(optim)
        self.save_hyperparameters(ignore=["modules", *modules, *self.network_args])
        # plain data in the checkpoint, so it loads with weights_only=True
        self.hparams["optim"] = self.optim_spec.to_dict()
        self.hparams["channels_last"] = channels_last  # read by to_input
        for name, module in modules.items():
            setattr(self, name, module)
        #: the ``train/...`` values logged in the current training step (read by NonFiniteGuard)
        self.step_terms: dict[str, Any] = {}
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

    def inference_step(self, batch: dict[str, Any]) -> Any:
        """The method's test-time prediction on ``batch``, without metric updates or logging:
        what ``test/macs_per_image`` and ``test/params`` count (docs/metrics.md, logged by
        :class:`~lr_lightning.callbacks.test_keys.SharedTestKeys`). Every method overrides it;
        without it no cost is logged."""
        raise NotImplementedError

    def export_networks(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The networks a device runs, by name, as :class:`~lr_lightning.export.ExportNet` (a plain
        module taking images in [0, 1] and example inputs made from ``batch``), for
        ``lr-lightning export``. Default: none; each method overrides it."""
        return {}

    def hr_pixel_fraction(self, batch: dict[str, Any]) -> float | Tensor | None:
        """Share of the HR image's pixels the test-time prediction used (``test/hr_pixel_fraction``).

        Default: from an ``input_key`` hyper-parameter (1 for ``"hr"``, 0 for ``"lr"``: the HR-CNN
        and LR-CNN style tasks); ``None`` otherwise, i.e. when the method logs it itself
        (PatchDrop, from each image's actions) or it does not apply. Other methods override it."""
        key = self.hparams.get("input_key")
        return None if key not in ("hr", "lr") else float(key == "hr")

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

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """``LightningModule.log`` (``log_dict`` calls it too), remembering this step's training
        terms in :attr:`step_terms` (a reference, no device sync) so a numerical fault can be
        reported by name (:class:`~lr_lightning.callbacks.NonFiniteGuard`)."""
        if name.startswith("train/") and isinstance(value, (Tensor, int, float)):
            self.step_terms[name] = value
        super().log(name, value, *args, **kwargs)

    def to_input(self, x: Tensor) -> Tensor:
        """Put an input batch in the task's memory format."""
        if self.hparams.get("channels_last", False) and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def parameter_groups(self) -> dict[str, list[Tensor]]:
        """Named parameter groups the optimiser trains (names usable in
        ``optim.group_learning_rates``). Default: one group ``all`` with every parameter that
        requires a gradient. Multi-network methods override this (e.g. PatchDrop's ``policy`` /
        ``hr_classifier``)."""
        return {"all": [p for p in self.parameters() if p.requires_grad]}

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The optimiser of ``self.optim_spec`` over :meth:`parameter_groups`."""
        return build_optimizer(self.optim_spec, self.parameter_groups())

    def configure_optimizers(self) -> Any:
        optimizer = self.build_optimizer()
        total = int(self.trainer.estimated_stepping_batches) if self.optim_spec.scheduler == "cosine" else 1
        built = build_scheduler(self.optim_spec, optimizer, total)
        if built is None:
            return optimizer
        sched, interval = built
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": interval}}

    def _step_manual_scheduler(self, interval: str) -> None:
        """Lightning steps schedulers only under automatic optimisation; manual-optimisation tasks
        (PatchDrop, MAML, paper E) get theirs stepped here, per optimiser step or per epoch as the
        spec says, so ``optim.scheduler`` is never silently ignored."""
        if self.automatic_optimization:
            return
        for config in self.trainer.lr_scheduler_configs:
            if config.interval == interval:
                config.scheduler.step()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._step_manual_scheduler("step")

    def on_train_epoch_end(self) -> None:
        self._step_manual_scheduler("epoch")

    def configure_callbacks(self) -> list[Callback]:
        """Best-by-``monitor`` and last checkpoints, so ``test --ckpt_path`` finds a trained model,
        the shared test keys (:class:`~lr_lightning.callbacks.test_keys.SharedTestKeys`) and, unless
        the trainer has one from the config, a :class:`~lr_lightning.callbacks.NonFiniteGuard`
        that stops on a NaN / inf loss, and the random state for exact resume
        (:class:`~lr_lightning.callbacks.ResumeState`)."""
        trainer = self._trainer
        guarded = trainer is not None and any(isinstance(c, NonFiniteGuard) for c in trainer.callbacks)
        return [
            *([] if guarded else [NonFiniteGuard()]),
            ResumeState(),
            SharedTestKeys(),
            BestAndLastCheckpoint(
                monitor=self.monitor,
                mode=self.mode,
                save_last=True,
                filename="best-{epoch}-{step}",
                auto_insert_metric_name=False,
            )
        ]
