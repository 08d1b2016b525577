"""The installed ``lr-lightning`` console script as a user runs it: exit status, error text, and
``--ckpt_path best|last`` of a previous run in a new process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lr_lightning.cli import CheckpointNotFoundError, console_main, find_run_checkpoint, main
from tests.conftest import REPO

QUICK = str(REPO / "configs" / "quickstart.yaml")
SCRIPT = Path(sys.executable).with_name("lr-lightning")


def tiny_args(data_root: Path, logs: Path) -> list[str]:
    """Overrides that make the quick-start config a seconds-long run that still validates once
    (so a best checkpoint exists) and writes its logs under ``logs``."""
    return [
        f"--data.init_args.root={data_root}",
        "--data.init_args.batch_size=8",
        "--data.init_args.val_fraction=0.25",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.limit_test_batches=1",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={logs}",
        f"--trainer.default_root_dir={logs.parent}",
    ]


def run_script(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed console script (not ``main()`` in-process) and capture its output."""
    if not SCRIPT.exists():
        pytest.skip("package not installed as a console script (pip install -e .)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def csv_values(path: Path, key: str) -> list[float]:
    """Every logged value of ``key`` in a Lightning ``metrics.csv``."""
    return [float(r[key]) for r in csv.DictReader(path.open()) if r.get(key)]


@pytest.mark.slow
def test_console_script_exit_status_and_ckpt_best_in_a_new_process(tiny_cifar: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    fit = run_script(["fit", "--config", QUICK, *tiny_args(tiny_cifar, logs)], tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "LRLightningCLI object" not in fit.stdout  # the CLI object is no longer printed
    run0 = logs / "quickstart" / "version_0"
    best = sorted((run0 / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1 and (run0 / "checkpoints" / "last.ckpt").is_file()

    # the quick-start config header's command, in a new process: loads run 0's best checkpoint
    test = run_script(["test", "--config", QUICK, *tiny_args(tiny_cifar, logs), "--ckpt_path", "best"], tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    run1 = logs / "quickstart" / "version_1"
    assert f"--ckpt_path best -> {best[0].resolve()}" in test.stdout + test.stderr
    saved = yaml.safe_load((run1 / "config.yaml").read_text())
    assert saved["ckpt_path"] == str(best[0].resolve())  # the record says which file was tested
    acc = csv_values(run1 / "metrics.csv", "test/acc")
    assert len(acc) == 1 and 0.0 <= acc[0] <= 1.0

    # a failing command: non-zero status and the error (the unknown key) on stderr
    bad = run_script(["fit", "--config", QUICK, *tiny_args(tiny_cifar, logs), "--model.init_args.learning_rat=1"], tmp_path)
    assert bad.returncode != 0
    assert "learning_rat" in bad.stderr and "not accepted" in bad.stderr


@pytest.mark.slow
def test_ckpt_last_loads_the_trained_weights(tiny_cifar: Path, tmp_path: Path) -> None:
    import torch

    logs = tmp_path / "logs"
    fit = main(["fit", "--config", QUICK, *tiny_args(tiny_cifar, logs)])
    trained = {k: v.clone() for k, v in fit.model.state_dict().items()}
    last = Path(fit.trainer.checkpoint_callback.last_model_path).resolve()
    cli = main(["test", "--config", QUICK, *tiny_args(tiny_cifar, logs), "--ckpt_path=last"])
    assert cli.config["test"]["ckpt_path"] == str(last)
    for k, v in cli.model.state_dict().items():
        assert torch.equal(v, trained[k]), k
    assert "test/acc" in cli.trainer.callback_metrics


def test_missing_checkpoint_names_where_it_looked(tiny_cifar: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    with pytest.raises(CheckpointNotFoundError, match=r"no best-\*\.ckpt under .*logs/quickstart/\*/checkpoints"):
        main(["test", "--config", QUICK, *tiny_args(tiny_cifar, logs), "--ckpt_path=best"])
    # the console entry point turns it into a message and exit status 2, without a traceback
    assert console_main(["test", "--config", QUICK, *tiny_args(tiny_cifar, logs), "--ckpt_path=last"]) == 2
    err = capsys.readouterr().err
    assert f"lr-lightning: error: --ckpt_path last: no last.ckpt under {logs.resolve()}/quickstart/*/checkpoints" in err
    assert "Traceback" not in err


def _touch(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    os.utime(path, (mtime, mtime))
    return path


def test_find_run_checkpoint_picks_the_latest_run(tmp_path: Path) -> None:
    now = time.time()
    root = tmp_path / "logs" / "cfg"
    _touch(root / "version_0" / "checkpoints" / "best-3-30.ckpt", now - 30)
    _touch(root / "version_0" / "checkpoints" / "last.ckpt", now - 20)
    newer_best = _touch(root / "version_1" / "checkpoints" / "best-1-10.ckpt", now - 10)
    newer_last = _touch(root / "version_1" / "checkpoints" / "last.ckpt", now - 5)
    (root / "version_2").mkdir()  # a test run: metrics, no checkpoints
    dirs = sorted(root.glob("*/checkpoints"))
    assert find_run_checkpoint("best", dirs) == newer_best
    assert find_run_checkpoint("last", dirs) == newer_last
    # resuming run 0 later makes it the latest
    resumed = _touch(root / "version_0" / "checkpoints" / "last.ckpt", now)
    assert find_run_checkpoint("last", dirs) == resumed
    assert find_run_checkpoint("best", [tmp_path / "nothing"]) is None


def test_find_run_checkpoint_several_best_files_uses_the_recorded_best(tmp_path: Path) -> None:
    import torch

    ckpts = tmp_path / "version_0" / "checkpoints"
    older = _touch(ckpts / "best-0-5.ckpt", time.time() - 10)
    _touch(ckpts / "best-1-10.ckpt", time.time())  # newer but not the best (e.g. save_top_k=2)
    torch.save({"callbacks": {"BestAndLastCheckpoint{'monitor': 'val/acc'}": {"best_model_path": f"/elsewhere/{older.name}"}}},
               ckpts / "last.ckpt")
    assert find_run_checkpoint("best", [ckpts]) == older


def test_help_mentions_report_and_checkpoint_aliases(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        console_main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "lr-lightning report RUN_DIRS" in text and "--ckpt_path best|last" in text
