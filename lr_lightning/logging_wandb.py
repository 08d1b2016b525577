"""W&B runs that compare: group, job type, tags and the full resolved config of a CLI run.

LightningCLI hands a ``WandbLogger`` nothing but the model's hyper-parameters, so W&B runs of
different methods, stages and degradations look alike. The CLI (:mod:`lr_lightning.cli`) calls
:func:`configure_wandb_logger` with :func:`describe_run` before the W&B run starts, and
:class:`SaveConfigToLoggers` sends the config that ``config.yaml`` holds into the run config.
See ``docs/logging.md`` for the dashboard recipe.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger


@dataclass(frozen=True)
class RunInfo:
    """What a run is, for grouping and filtering across runs.

    Attributes:
        method: the model class name (e.g. ``ImageClassifier``, ``PatchDropTask``).
        job_type: the method's ``stage`` hyper-parameter if it has one (PatchDrop's ``pt`` /
            ``ft1`` / ``ft2``), else the subcommand (``fit``, ``test``, ...), else ``None``.
        subcommand: the CLI subcommand (``None`` without one).
        datamodule: the data module class name.
        dataset: the data set name (``variant`` such as ``cifar10``, else the data root's folder
            name), or ``None`` when the module has neither.
        degradation: the name of the HR -> LR degradation
            (:attr:`lr_lightning.degrade.Degradation.name`, e.g. ``bicubic4+up``), ``"none"``
            when the data module has none, ``None`` when it is not known.
    """

    method: str
    job_type: str | None
    subcommand: str | None
    datamodule: str | None
    dataset: str | None
    degradation: str | None

    @property
    def tags(self) -> list[str]:
        """W&B tags: ``datamodule:<class>``, ``data:<name>``, ``degradation:<name>``."""
        tags = []
        if self.datamodule:
            tags.append(f"datamodule:{self.datamodule}")
        if self.dataset:
            tags.append(f"data:{self.dataset}")
        if self.degradation:
            tags.append(f"degradation:{self.degradation}")
        return [t[:64] for t in tags]  # W&B's tag length limit


def degradation_name(obj: Any) -> str | None:
    """``obj.name`` for a degradation object, the string itself for a degradation name, else
    ``None``."""
    if isinstance(obj, str):
        return obj
    name = getattr(obj, "name", None)
    return name if isinstance(name, str) else None


def describe_run(model: LightningModule, datamodule: LightningDataModule | None, subcommand: str | None) -> RunInfo:
    """The :class:`RunInfo` of a CLI run from its instantiated model and data module
    (``subcommand`` is ``None`` for ``main(run=False)``, where the caller runs the trainer).

    The degradation is the data module's ``degradation`` (what the inputs go through), else a
    model's own ``degradation`` / ``lr_degradation`` (methods that degrade inside the task).
    """
    stage = getattr(model, "hparams", {}).get("stage")
    dataset = None
    degradation: str | None = None
    if datamodule is not None:
        variant = getattr(datamodule, "variant", None)
        root = getattr(datamodule, "root", None)
        dataset = str(variant) if variant else (Path(root).name if root else None)
        if hasattr(datamodule, "degradation"):
            degradation = degradation_name(datamodule.degradation) or "none"
    if degradation in (None, "none"):
        for attr in ("degradation", "lr_degradation"):
            name = degradation_name(getattr(model, attr, None))
            if name:
                degradation = name
                break
    return RunInfo(
        method=type(model).__name__,
        job_type=str(stage) if stage else subcommand,
        subcommand=subcommand,
        datamodule=type(datamodule).__name__ if datamodule is not None else None,
        dataset=dataset,
        degradation=degradation,
    )


def new_run_id(length: int = 8) -> str:
    """A random W&B run id (lower-case letters and digits, as W&B's own ids)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def configure_wandb_logger(logger: WandbLogger, info: RunInfo) -> None:
    """Set the W&B run's ``group`` (method) and ``job_type`` (stage) unless the config set them,
    add :attr:`RunInfo.tags` to the configured tags, and fix the run id if none is configured.
    Must run before the W&B run starts (``logger.experiment`` first accessed), as these are
    ``wandb.init`` arguments. (A W&B run already active in the process is reused by
    ``WandbLogger`` as it is: call ``wandb.finish()`` between in-process runs.)
    """
    init = logger._wandb_init  # the wandb.init kwargs WandbLogger keeps until the run starts
    if init.get("group") is None:
        init["group"] = info.method
    if init.get("job_type") is None and info.job_type:
        init["job_type"] = info.job_type
    tags = list(init.get("tags") or [])
    init["tags"] = tags + [t for t in info.tags if t not in tags]
    if init.get("id") is None and getattr(logger, "_experiment", None) is None:
        # fix the run id now, so ``logger.version`` is known before the run starts and the CSV
        # log beside it can use the same folder (save_dir/project/<run id>) as the checkpoints
        init["id"] = logger._id = new_run_id()


class SaveConfigToLoggers(SaveConfigCallback):
    """``SaveConfigCallback`` that also sends the resolved config where comparisons need it.

    * every ``WandbLogger``: the whole config (``trainer``, ``model``, ``data``,
      ``seed_everything``, ``ckpt_path``, ...) into the W&B run config, so runs can be filtered
      by ``model.class_path`` or any hyper-parameter and re-run from it; plus
      ``lr_lightning.subcommand``;
    * every ``CSVLogger`` whose folder is not the trainer's ``log_dir`` (with W&B as the first
      logger, ``config.yaml`` goes to the W&B ``save_dir``): a ``config.yaml`` next to its
      ``metrics.csv``, which ``lr-lightning report`` reads.

    Runs on rank zero only (Lightning calls :meth:`save_config` there).
    """

    def config_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (what ``config.yaml`` holds)."""
        return yaml.safe_load(self.parser.dump(self.config, skip_none=False))

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Rank zero only: no collectives here (``trainer.log_dir`` broadcasts, so it would hang
        # DDP); where Lightning wrote config.yaml is recomputed the way ``Trainer.log_dir`` does.
        first = trainer.loggers[0] if trainer.loggers else None
        written = None
        if first is not None:
            written = first.log_dir if isinstance(first, (CSVLogger, TensorBoardLogger)) else first.save_dir
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                config = self.config_dict()
                config["lr_lightning"] = {"subcommand": trainer.state.fn.value if trainer.state.fn else stage}
                lg.experiment.config.update(config, allow_val_change=True)
            elif isinstance(lg, CSVLogger) and (written is None or Path(lg.log_dir).resolve() != Path(written).resolve()):
                Path(lg.log_dir).mkdir(parents=True, exist_ok=True)
                self.parser.save(self.config, str(Path(lg.log_dir) / self.config_filename), skip_none=False, overwrite=True)
