"""``lr-lightning`` command: LightningCLI with subclass mode for model and data.

``lr-lightning fit --config configs/quickstart.yaml`` works like ``lightning fit --config``:
the model and data are any :class:`~lightning.pytorch.LightningModule` /
:class:`~lightning.pytorch.LightningDataModule` given by ``class_path``. A CSV logger always
writes (alongside W&B or others configured under ``trainer.logger``), so every run leaves a
``metrics.csv`` for side-by-side comparison.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger

# Lightning 2.6.6 + torch 2.14 warn that the pytree ``LeafSpec`` is deprecated (not our code).
warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)


class LRLightningCLI(LightningCLI):
    """LightningCLI that always adds a CSV logger next to the configured ones and shows a rich
    progress bar unless the config disables the bar or brings its own."""

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        configured = [*(config.get("callbacks") or []), *callbacks]
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in configured
        ):
            callbacks = [*callbacks, RichProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        loggers = list(trainer.loggers)
        if loggers and not any(isinstance(lg, CSVLogger) for lg in loggers):
            first = loggers[0]
            save_dir = getattr(first, "save_dir", None) or trainer.default_root_dir
            trainer.loggers = [*loggers, CSVLogger(save_dir=save_dir, name=first.name or "lightning_logs", version=first.version)]
        return trainer


def main(args: list[str] | dict[str, Any] | None = None, run: bool = True) -> LightningCLI:
    """Run the command line (``args=None`` reads ``sys.argv``); returns the CLI object."""
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    return LRLightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": "logs"},
            },
        },
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


if __name__ == "__main__":
    main()
