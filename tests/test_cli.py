"""The command line: entry points, W&B offline logging beside CSV, test from a checkpoint, DDP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lr_lightning.cli import main
from tests.conftest import REPO, run_ddp_fit

QUICK = str(REPO / "configs" / "quickstart.yaml")


def _tiny(root: Path) -> list[str]:
    return [
        f"--data.init_args.root={root}",
        "--data.init_args.batch_size=8",
        "--data.init_args.val_fraction=0.25",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.num_sanity_val_steps=0",
    ]


def test_entry_points_print_help() -> None:
    for cmd in (["lr-lightning"], [sys.executable, "-m", "lr_lightning"]):
        exe = cmd[0] if cmd[0] != "lr-lightning" else str(Path(sys.executable).with_name("lr-lightning"))
        if not Path(exe).exists():
            pytest.skip("package not installed as a console script (pip install -e .)")
        out = subprocess.run([exe, *cmd[1:], "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and all(s in out.stdout for s in ("fit", "validate", "test", "predict"))


def test_fit_then_test_uses_trained_weights(tiny_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", "--config", QUICK, *_tiny(tiny_cifar)])
    last = Path(cli.trainer.checkpoint_callback.last_model_path)
    assert last.is_file()
    trained = {k: v.clone() for k, v in cli.model.state_dict().items()}
    # a fresh CLI `test --ckpt_path` must evaluate the trained weights, not a new initialisation
    cli2 = main(["test", "--config", QUICK, *_tiny(tiny_cifar), f"--ckpt_path={last}"])
    for k, v in cli2.model.state_dict().items():
        assert torch.equal(v, trained[k]), k
    assert "test/acc" in cli2.trainer.callback_metrics


def test_wandb_offline_logs_beside_csv(tiny_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cli = main([
        "fit", "--config", QUICK, *_tiny(tiny_cifar),
        "--trainer.logger=lightning.pytorch.loggers.WandbLogger",
        "--trainer.logger.init_args.project=lr-lightning-test",
        "--trainer.logger.init_args.offline=true",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ])
    kinds = [type(lg).__name__ for lg in cli.trainer.loggers]
    assert kinds == ["WandbLogger", "CSVLogger"]
    import wandb

    wandb.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*")), "no offline W&B run written"
    assert list(tmp_path.rglob("metrics.csv")), "CSV logger did not write"


def test_robustness_table(tiny_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = main([
        "fit", "--config", str(REPO / "configs" / "baselines" / "cifar10_hr_cnn.yaml"), *_tiny(tiny_cifar),
        "--trainer.max_steps=1",
    ])
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="last")
    table = (Path(cli.trainer.log_dir) / "robustness.md").read_text()
    for name in ("nearest2+up", "bicubic4+up", "avgpool4+up"):
        assert f"| {name} |" in table
        assert f"test/acc/{name}" in cli.trainer.callback_metrics


@pytest.mark.slow
def test_ddp_two_cpu_processes(tiny_cifar: Path, tmp_path: Path) -> None:
    """LR-CNN with strategy=ddp on 2 CPU processes, as a subprocess of the CLI (with a timeout)."""
    run_ddp_fit(REPO / "configs" / "baselines" / "cifar10_lr_cnn.yaml", tiny_cifar, tmp_path,
                ["--trainer.max_steps=2", "--data.init_args.batch_size=4"])
