"""W&B runs that compare: an offline fit + test through the CLI, read back from the run files.

wandb 0.31 keeps an offline run in one transaction log, ``wandb/offline-run-*/run-<id>.wandb``
(the records ``wandb sync`` uploads; ``files/config.yaml`` and ``wandb-summary.json`` are only
written for online runs), so the test decodes that log: LevelDB log framing around
``wandb_internal_pb2.Record`` messages.
"""

from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import WandbLogger

from lr_lightning.cli import main
from lr_lightning.logging_wandb import RunInfo, configure_wandb_logger, describe_run
from tests.conftest import REPO

QUICK = str(REPO / "configs" / "quickstart.yaml")


def _log_records(path: Path) -> Iterator[bytes]:
    """The records of a W&B transaction log (LevelDB log format, 32 KiB blocks, after a 7-byte
    ``:W&B`` file header; each chunk has a 7-byte header: crc32, length, type)."""
    data = path.read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert (ident, magic) == (b":W&B", 0xBEE1), f"{path} is not a W&B transaction log"
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # block trailer padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:  # full
            yield chunk
        elif kind == 2:  # first
            pending = chunk
        elif kind == 3:  # middle
            pending += chunk
        elif kind == 4:  # last
            yield pending + chunk


@dataclass
class OfflineRun:
    """What an offline W&B run holds: its ``wandb.init`` fields, config and final summary."""

    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    run_records: list[tuple[str, str, list[str]]] = field(default_factory=list)  # (group, job type, tags) as logged


def read_offline_run(run_dir: Path) -> OfflineRun:
    """Decode ``run_dir/run-*.wandb`` (config and summary updates applied in order)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (log,) = run_dir.glob("run-*.wandb")
    run = OfflineRun()

    def apply(target: dict[str, Any], items: Any) -> None:
        for item in items:
            key = "/".join(item.nested_key) or item.key
            target[key] = json.loads(item.value_json)

    for raw in _log_records(log):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            # upsert semantics, as the server applies them on sync: a field a later run record
            # leaves empty keeps the value an earlier one set
            run.run_records.append((record.run.run_group, record.run.job_type, list(record.run.tags)))
            run.group = record.run.run_group or run.group
            run.job_type = record.run.job_type or run.job_type
            run.tags = list(record.run.tags) or run.tags
            apply(run.config, record.run.config.update)
        elif kind == "config":
            apply(run.config, record.config.update)
        elif kind == "summary":
            apply(run.summary, record.summary.update)
    return run


def csv_last(path: Path, key: str) -> float:
    """The last logged value of ``key`` in a Lightning ``metrics.csv``."""
    return [float(r[key]) for r in csv.DictReader(path.open()) if r.get(key)][-1]


def _wandb_args(tiny_cifar: Path, save_dir: Path) -> list[str]:
    return [
        "--config", QUICK,
        f"--data.init_args.root={tiny_cifar}", "--data.init_args.batch_size=8", "--data.init_args.val_fraction=0.25",
        "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1", "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.logger=lightning.pytorch.loggers.WandbLogger",
        "--trainer.logger.init_args.project=lr-lightning-test",
        "--trainer.logger.init_args.offline=true",
        f"--trainer.logger.init_args.save_dir={save_dir}",
    ]


@pytest.mark.slow
def test_offline_run_holds_resolved_config_grouping_and_summary(
    tiny_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    save_dir = tmp_path / "runs"
    runs, live = {}, {}
    for subcommand, extra in (("fit", []), ("test", ["--ckpt_path=best"])):
        cli = main([subcommand, *_wandb_args(tiny_cifar, save_dir), *extra])
        experiment = cli.trainer.loggers[0].experiment
        run_id, live[subcommand] = experiment.id, (experiment.group, experiment.job_type)
        csv_dir = Path(cli.trainer.loggers[1].log_dir)
        wandb.finish()
        (run_dir,) = (save_dir / "wandb").glob(f"offline-run-*-{run_id}")
        runs[subcommand] = (read_offline_run(run_dir), run_dir, csv_dir)

    fit, fit_dir, fit_csv = runs["fit"]
    test, test_dir, test_csv = runs["test"]
    # group = method, job type = subcommand (no `stage` hparam), tags = data set / degradation
    assert live == {"fit": ("ImageClassifier", "fit"), "test": ("ImageClassifier", "test")}  # the runs' settings
    assert (fit.group, fit.job_type) == ("ImageClassifier", "fit"), fit.run_records  # what `wandb sync` uploads
    assert (test.group, test.job_type) == ("ImageClassifier", "test"), test.run_records
    assert set(fit.tags) == {"datamodule:CIFARDataModule", "data:cifar10", "degradation:bicubic4+up"}
    # the full resolved config, CLI overrides included (LightningCLI alone sends only hparams)
    assert fit.config["model"]["class_path"] == "lr_lightning.methods.ImageClassifier"
    assert fit.config["model"]["init_args"]["net"]["init_args"]["depth"] == 20
    assert fit.config["data"]["init_args"]["batch_size"] == 8
    assert fit.config["trainer"]["limit_train_batches"] == 2
    assert fit.config["lr_lightning"]["subcommand"] == "fit"
    best = next((fit_csv / "checkpoints").glob("best-*.ckpt"))
    assert test.config["ckpt_path"] == str(best.resolve())  # the test run records what it tested
    # summary metrics = the values the CSV log beside it holds
    assert fit.summary["val/acc"] == pytest.approx(csv_last(fit_csv / "metrics.csv", "val/acc"))
    assert test.summary["test/acc"] == pytest.approx(csv_last(test_csv / "metrics.csv", "test/acc"))
    # CSV log, its config.yaml and the checkpoints share the W&B run's folder
    assert fit_csv == save_dir / "lr-lightning-test" / fit_dir.name.rsplit("-", 1)[1]
    assert (fit_csv / "config.yaml").is_file() and (test_csv / "config.yaml").is_file()
    # syncable: `wandb sync` recognises the offline run (dry run: nothing is uploaded)
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run([str(wandb_cli), "sync", "--dry-run", str(fit_dir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Would sync 1 run" in out.stdout + out.stderr, out.stdout + out.stderr


class _StagedTask(LightningModule):
    def __init__(self, stage: str = "ft1") -> None:
        super().__init__()
        self.save_hyperparameters()


def test_job_type_is_the_stage_and_user_settings_win(tmp_path: Path) -> None:
    info = describe_run(_StagedTask("ft2"), None, "fit")
    assert info == RunInfo(method="_StagedTask", job_type="ft2", subcommand="fit", datamodule=None, dataset=None, degradation=None)
    logger = WandbLogger(project="p", save_dir=str(tmp_path), offline=True, group="mine", tags=["ablation"])
    configure_wandb_logger(logger, RunInfo("PatchDropTask", "pt", "fit", "CIFARDataModule", "cifar10", "bicubic4+up"))
    init = logger._wandb_init
    assert init["group"] == "mine" and init["job_type"] == "pt"
    assert init["tags"] == ["ablation", "datamodule:CIFARDataModule", "data:cifar10", "degradation:bicubic4+up"]
    assert init["id"] and logger.version == init["id"]  # known before the run starts
