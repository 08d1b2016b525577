"""The callbacks through ``lr-lightning fit --config`` on their own configs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from lr_lightning.callbacks import GradientPruningCallback
from lr_lightning.cli import main
from lr_lightning.quant import IntegerZSSR8, integer_layers
from tests.conftest import REPO, write_image_folder, write_images


def _run(cfg: dict, tmp_path: Path, steps: int):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return main([
        "fit", "--config", str(path), f"--trainer.max_steps={steps}", "--trainer.max_epochs=1",
        f"--trainer.limit_train_batches={steps}", "--trainer.limit_val_batches=1", "--trainer.log_every_n_steps=1",
        "--trainer.num_sanity_val_steps=0", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp_path}",
        "--data.init_args.batch_size=2",
    ])


@pytest.mark.slow
def test_sr_integer_pruned_config_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = yaml.safe_load((REPO / "configs/integer/urban100_zssr8_x2_int8.yaml").read_text())
    for d in ("sr/Urban100", "sr/Set5", "sr/Set14", "sr/BSD100"):
        write_images(tmp_path / "srdata" / d, 2, 48)
    cfg["data"]["init_args"].update(root=str(tmp_path / "srdata"), patch_size=32)
    cfg["trainer"]["callbacks"][1]["init_args"]["mask_batches"] = 2
    cli = _run(cfg, tmp_path, steps=4)
    net = cli.model.net
    assert isinstance(net, IntegerZSSR8) and len(integer_layers(net)) == 8
    prune = next(c for c in cli.trainer.callbacks if isinstance(c, GradientPruningCallback))
    assert prune.kept is not None and len(prune.kept) == 7
    assert sum(m.grad_keep is not None for m in prune.layers) >= 1
    header = next(csv.reader((Path(cli.trainer.log_dir) / "metrics.csv").open()))
    assert "prune/filters_pruned" in header and "val/psnr_y" in header


@pytest.mark.slow
def test_unsupported_layer_is_named_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = yaml.safe_load((REPO / "configs/integer/cifar10_conv4_lr_int8.yaml").read_text())
    cfg["trainer"]["callbacks"][0]["init_args"]["fold_batchnorm"] = False
    for split in ("train", "test"):
        write_image_folder(tmp_path / "data" / "cifar10" / split, 10, 2, 32)
    cfg["data"]["init_args"]["root"] = str(tmp_path / "data")
    with pytest.raises(TypeError, match=r"features\.0\.1 \(BatchNorm2d: set fold_batchnorm=true"):
        _run(cfg, tmp_path, steps=1)
