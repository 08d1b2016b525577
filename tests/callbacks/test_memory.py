"""Load held: the resident memory of a 3-epoch run does not grow from epoch to epoch (MAML with
second-order meta-gradients, whose graphs are the likeliest to be kept alive by mistake), and
MemoryMonitor logs it; benchmarks record their peak RSS."""

from __future__ import annotations

from pathlib import Path

import pytest

from lr_lightning.callbacks.memory import peak_rss_mb, rss_mb
from lr_lightning.cli import main
from tests.conftest import REPO
from tests.test_configs import TINY_MODEL_ARGS

GROWTH_LIMIT_MB = 24.0  # between the ends of epochs 1 and 3; a second-order graph kept per step is more


@pytest.mark.skipif(rss_mb() is None, reason="needs /proc/self/status (Linux)")
def test_maml_second_order_memory_does_not_grow(tiny_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = main([
        "fit", "--config", str(REPO / "configs" / "maml_degradation" / "cifar10_maml_conv4_x2.yaml"),
        f"--data.init_args.root={tiny_cifar}", "--data.init_args.batch_size=8", *TINY_MODEL_ARGS["MAMLDegradationClassifier"],
        "--trainer.max_epochs=3", "--trainer.limit_train_batches=10", "--trainer.limit_val_batches=1",
        "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
        "--trainer.callbacks+=lr_lightning.callbacks.MemoryMonitor",
    ])
    assert cli.model.hparams.first_order is False  # second-order meta-gradients
    monitor = next(c for c in cli.trainer.callbacks if type(c).__name__ == "MemoryMonitor")
    assert len(monitor.history) == 3
    growth = monitor.history[2] - monitor.history[0]
    assert growth < GROWTH_LIMIT_MB, f"RSS per epoch end {monitor.history} MiB"
    logged = cli.trainer.callback_metrics
    assert float(logged["train/rss_mb"]) == pytest.approx(monitor.history[-1])
    assert float(logged["train/peak_rss_mb"]) >= max(monitor.history) - 1.0


def test_benchmarks_record_peak_rss() -> None:
    from benchmarks.common import environment

    env = environment()
    assert env["peak_rss_mb"] == pytest.approx(peak_rss_mb(), abs=1.0) and env["peak_rss_mb"] > 10
