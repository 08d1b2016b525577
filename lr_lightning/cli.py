"""``lr-lightning`` command: LightningCLI with subclass mode for model and data.

``lr-lightning fit --config configs/quickstart.yaml`` works like ``lightning fit --config``:
the model and data are any :class:`~lightning.pytorch.LightningModule` /
:class:`~lightning.pytorch.LightningDataModule` given by ``class_path``. A CSV logger always
writes (alongside W&B or others configured under ``trainer.logger``), so every run leaves a
``metrics.csv`` for side-by-side comparison. On top of LightningCLI:

* ``validate`` / ``test`` / ``predict`` with ``--ckpt_path best`` or ``last`` in a new process
  load the best / last checkpoint of the latest run of that config (see
  :func:`find_run_checkpoint`);
* a ``WandbLogger`` gets group / job type / tags and the full resolved config
  (:mod:`lr_lightning.logging_wandb`);
* ``lr-lightning report RUN_DIRS...`` compares finished runs (:mod:`lr_lightning.report`);
* ``lr-lightning export --ckpt_path ... --format onnx|torch_export`` exports the networks a
  device runs (:mod:`lr_lightning.export`).

:func:`console_main` is the console script (exit status 0 on success); :func:`main` returns the
CLI object for in-process use.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from lr_lightning.logging_wandb import SaveConfigToLoggers, configure_wandb_logger, describe_run

# Lightning 2.6.6 + torch 2.14 warn that the pytree ``LeafSpec`` is deprecated (not our code).
warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)

CheckpointAlias = Literal["best", "last"]

DESCRIPTION = (
    "lr-lightning: LightningCLI for low-resolution vision. Subcommands fit / validate / test / "
    "predict take --config YAML files; --ckpt_path best|last in validate / test / predict loads "
    "the latest run's checkpoint. `lr-lightning report RUN_DIRS... [--out DIR]` compares finished "
    "runs (Markdown table + plots). `lr-lightning export --ckpt_path CKPT --format onnx|torch_export` "
    "exports the networks a device runs, checked against PyTorch."
)


class CheckpointNotFoundError(FileNotFoundError):
    """``--ckpt_path best|last`` found no checkpoint; the message says where it looked."""


def checkpoint_search_dirs(trainer: Trainer) -> list[Path]:
    """The ``checkpoints/`` folders a fit with this trainer's configuration may have written.

    ``ModelCheckpoint`` without a ``dirpath`` saves to
    ``<save_dir of the first logger>/<its name>/<its version>/checkpoints``: every run of the same
    config shares ``save_dir/name``, and each run has its own version folder (``version_N`` for
    CSV / TensorBoard, the run id for W&B). Without a logger it saves to
    ``<default_root_dir>/checkpoints``. A ``ModelCheckpoint`` configured with an explicit
    ``dirpath`` adds that folder.
    """
    root = _runs_root(trainer)
    dirs = [Path(trainer.default_root_dir) / "checkpoints"] if root is None else sorted(
        p for p in root.glob("*/checkpoints") if p.is_dir()
    )
    dirs += [Path(cb.dirpath) for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
    return dirs


def _runs_root(trainer: Trainer) -> Path | None:
    """``<save_dir>/<name>`` of the first logger (the folder holding one sub-folder per run), or
    ``None`` without a logger."""
    if not trainer.loggers:
        return None
    first = trainer.loggers[0]
    save_dir = Path(first.save_dir or trainer.default_root_dir)
    return save_dir / first.name if first.name else save_dir


def search_description(trainer: Trainer) -> str:
    """Human-readable glob of where :func:`checkpoint_search_dirs` looks (for error messages)."""
    root = _runs_root(trainer)
    if root is None:
        return str(Path(trainer.default_root_dir).resolve() / "checkpoints")
    return str(root.resolve() / "*" / "checkpoints")


def _recorded_best(directory: Path) -> Path | None:
    """The best checkpoint that ``last.ckpt`` in ``directory`` records (``ModelCheckpoint``
    state), if that file is in ``directory``; used when several ``best-*.ckpt`` files exist."""
    last = directory / "last.ckpt"
    if not last.is_file():
        return None
    import pickle

    import torch

    try:  # weights_only: never run code from a checkpoint found on disk
        state = torch.load(last, map_location="cpu", mmap=True, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError):  # a checkpoint with custom objects: use the newest file
        return None
    for key, cb_state in (state.get("callbacks") or {}).items():
        best = cb_state.get("best_model_path") if isinstance(cb_state, dict) else None
        if "Checkpoint" in str(key) and best and (directory / Path(best).name).is_file():
            return directory / Path(best).name
    return None


def find_run_checkpoint(which: CheckpointAlias, dirs: list[Path]) -> Path | None:
    """The ``best`` or ``last`` checkpoint of the latest run among ``dirs`` (``checkpoints/``
    folders), or ``None``.

    ``last`` is ``last.ckpt``; ``best`` is the ``best-*.ckpt`` file that
    :class:`~lr_lightning.callbacks.BestAndLastCheckpoint` keeps (if a run holds several, the
    one its ``last.ckpt`` records as best). The latest run is the folder whose matching file was
    written most recently, so a ``test`` run (which writes a new version folder without
    checkpoints) does not hide the run it tested, and a resumed older run counts as latest.
    """
    candidates: list[tuple[float, Path]] = []
    for d in dirs:
        files = [d / "last.ckpt"] if which == "last" else sorted(d.glob("best-*.ckpt"))
        files = [f for f in files if f.is_file()]
        if not files:
            continue
        newest = max(files, key=lambda f: f.stat().st_mtime)
        chosen = newest if len(files) == 1 else (_recorded_best(d) or newest)
        candidates.append((newest.stat().st_mtime, chosen))
    if not candidates:
        return None
    return max(candidates, key=lambda c: c[0])[1]


class LRLightningCLI(LightningCLI):
    """LightningCLI that always adds a CSV logger next to the configured ones, shows a rich
    progress bar unless the config disables the bar or brings its own, fills in a W&B run's
    group / job type / tags, and resolves ``--ckpt_path best|last`` from disk."""

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Callback]) -> Trainer:
        configured = [*(config.get("callbacks") or []), *callbacks]
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in configured
        ):
            callbacks = [*callbacks, RichProgressBar()]
        return super()._instantiate_trainer(config, callbacks)

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if wandb_loggers:
            info = describe_run(self.model, self.datamodule, self.subcommand)
            for lg in wandb_loggers:
                configure_wandb_logger(lg, info)
        loggers = list(trainer.loggers)
        if loggers and not any(isinstance(lg, CSVLogger) for lg in loggers):
            # same folder as the first logger's run (with W&B: save_dir/project/<run id>, where
            # the checkpoints go too), so metrics.csv, config.yaml and checkpoints/ sit together
            first = loggers[0]
            save_dir = getattr(first, "save_dir", None) or trainer.default_root_dir
            trainer.loggers = [*loggers, CSVLogger(save_dir=save_dir, name=first.name or "lightning_logs", version=first.version)]
        return trainer

    # -- --ckpt_path best / last ---------------------------------------------------------------
    def _resolve_ckpt_path(self, subcommand: str) -> None:
        """Replace ``ckpt_path: best|last`` by the file of the latest run of this config.

        Lightning resolves ``best`` only from the ``ModelCheckpoint`` of a ``fit`` in the same
        process, and ``last`` only in the current run's (new, empty) folder, so in a new process
        both fail or silently test untrained weights. The resolved path is also written into the
        config this run saves (``config.yaml``, W&B), so the record says which file was tested.
        """
        ckpt = self.config_init[subcommand].get("ckpt_path")
        if ckpt not in ("best", "last"):
            return
        path = find_run_checkpoint(ckpt, checkpoint_search_dirs(self.trainer))
        if path is None:
            pattern = "last.ckpt" if ckpt == "last" else "best-*.ckpt"
            raise CheckpointNotFoundError(
                f"--ckpt_path {ckpt}: no {pattern} under {search_description(self.trainer)} "
                "(the checkpoints of earlier runs of this config). Run `lr-lightning fit` with the "
                "same config and logger first (and with validation, for `best`), or pass the path "
                "of a .ckpt file."
            )
        path = path.resolve()
        rank_zero_info(f"--ckpt_path {ckpt} -> {path}")
        self.config_init[subcommand]["ckpt_path"] = str(path)
        self.config[subcommand]["ckpt_path"] = str(path)

    def before_fit(self) -> None:
        if self.config_init["fit"].get("ckpt_path") == "last":  # resume the latest run of this config
            self._resolve_ckpt_path("fit")

    def before_validate(self) -> None:
        self._resolve_ckpt_path("validate")

    def before_test(self) -> None:
        self._resolve_ckpt_path("test")

    def before_predict(self) -> None:
        self._resolve_ckpt_path("predict")


def main(args: list[str] | dict[str, Any] | None = None, run: bool = True) -> LRLightningCLI:
    """Run the command line (``args=None`` reads ``sys.argv``) and return the CLI object, whose
    ``trainer`` / ``model`` / ``datamodule`` in-process callers and tests inspect."""
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    return LRLightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_callback=SaveConfigToLoggers,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": {
                "class_path": "lightning.pytorch.loggers.CSVLogger",
                "init_args": {"save_dir": "logs"},
            },
        },
        parser_kwargs={"description": DESCRIPTION},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def console_main(argv: list[str] | None = None) -> int:
    """The ``lr-lightning`` console script and ``python -m lr_lightning``: the exit status.

    0 after a successful run; argument errors exit with 2 (jsonargparse prints the error and the
    valid options), a missing ``--ckpt_path best|last`` checkpoint returns 2 with the message,
    and any other error propagates (traceback, status 1). ``report`` dispatches to
    :func:`lr_lightning.report.main` and ``export`` to :func:`lr_lightning.export.main` before
    LightningCLI parses anything.
    """
    words = sys.argv[1:] if argv is None else argv
    if words[:1] == ["report"]:
        from lr_lightning.report import main as report_main

        return report_main(words[1:])
    if words[:1] == ["export"]:
        from lr_lightning.export import main as export_main

        return export_main(words[1:])
    try:
        main(argv)  # None: LightningCLI reads sys.argv itself (no "args given" warning)
    except CheckpointNotFoundError as err:
        print(f"lr-lightning: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(console_main())
