"""Config helpers and config errors. Every YAML under configs/ is run (2 training steps, one
validation and one test batch, via main()) by tests/test_metric_contract.py, which also checks
the keys it logs.

Configs are globbed, never listed by hand. Data comes from $LR_LIGHTNING_DATA; a config whose
data is not there runs on a small synthetic stand-in of the same layout instead.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lr_lightning.cli import main
from tests.conftest import REPO, shared_data_root, write_image_folder, write_images

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


#: Trainer overrides of every tiny test run: 2 training batches, one validation / test batch,
#: every step logged, no sanity check, progress bar or summary.
TINY_TRAINER_ARGS = [
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=1",
    "--trainer.limit_test_batches=1",
    "--trainer.log_every_n_steps=1",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


#: model overrides that make a config's run tiny without changing what it computes
TINY_MODEL_ARGS = {
    "MAMLDegradationClassifier": ["--model.init_args.adapt_k=4"],  # the meta-test support set of the tiny data
    # paper E: a meta-batch of 2 tasks x (1 + 1) patches = data batch 4; 1 online update per test image
    "ZSSRMetaLearn": ["--model.init_args.tasks_per_step=2", "--model.init_args.support_size=1",
                      "--model.init_args.query_size=1", "--model.init_args.inner_steps=2",
                      "--model.init_args.val_online_steps=1", "--model.init_args.online.steps=1"],
    "ZSSRPretrain": ["--model.init_args.online.steps=1"],
    "GradientMasks": ["--model.init_args.online.steps=1"],
    "OnlineZSSR": ["--model.init_args.online.steps=1"],
}


def _fast_args(tmp_path: Path) -> list[str]:
    return ["--trainer.max_steps=2", "--trainer.max_epochs=1", *TINY_TRAINER_ARGS, f"--trainer.default_root_dir={tmp_path}"]


def _data_args(cfg: dict, tmp_path: Path) -> list[str]:
    """Point the data at real data if present, else at a synthetic stand-in; small batches."""
    data = cfg.get("data", {})
    cls = data.get("class_path", "")
    args = ["--data.init_args.batch_size=4"]
    root = shared_data_root()
    if cls.endswith("CIFARDataModule"):
        if root is None or not (root / "cifar10").is_dir():
            for split in ("train", "test"):
                write_image_folder(tmp_path / "data" / "cifar10" / split, 10, 2, 32)
            args.append(f"--data.init_args.root={tmp_path / 'data'}")
    elif cls.endswith("SRDataModule"):
        init = data.get("init_args", {})
        dirs = [*init.get("train_dirs", []), *init.get("val_dirs", []), *init.get("test_dirs", [])]
        if root is None or not all((root / d).is_dir() for d in dirs):
            size = max(96, 2 * int(init.get("patch_size", 48)))  # larger than the training patch
            for d in dirs:
                write_images(tmp_path / "srdata" / d, 2, size)
            args.append(f"--data.init_args.root={tmp_path / 'srdata'}")
            if cls.endswith("KernelSRDataModule"):  # the blur kernels of the test images, too
                import numpy as np

                from lr_lightning.data.kernel_sr import DEFAULT_TEST_KERNELS
                from lr_lightning.degrade import gaussian_kernel

                for f in DEFAULT_TEST_KERNELS:
                    (tmp_path / "srdata" / f).parent.mkdir(parents=True, exist_ok=True)
                    np.save(tmp_path / "srdata" / f, gaussian_kernel(9, sigma=1.2).numpy())
        if cls.endswith("KernelSRDataModule"):
            args.append("--data.init_args.patch_size=16")
    elif cls.endswith("PretextFolderDataModule"):
        init = data.get("init_args", {})
        dirs = [*init.get("train_dirs", []), *init.get("val_dirs", [])]
        if root is None or not all((root / d).is_dir() for d in dirs):
            for d in dirs:
                write_images(tmp_path / "pretextdata" / d, 2, init.get("crop_size", 128))
            args.append(f"--data.init_args.root={tmp_path / 'pretextdata'}")
        args += ["--data.init_args.val_crops=4", "--data.init_args.patches_per_epoch=8"]
    elif cls.endswith("ImageFolderDataModule"):
        init = data.get("init_args", {})
        for sub in (init.get("train_dir", "train"), init.get("test_dir") or "test"):
            write_image_folder(tmp_path / "folder" / sub, 3, 4, 40)
        args.append(f"--data.init_args.root={tmp_path / 'folder'}")
        args.append("--data.init_args.num_workers=0")
    return args


def test_configs_exist() -> None:
    assert len(CONFIGS) >= 5, CONFIGS


def test_unknown_config_key_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    cfg["model"]["init_args"]["learning_rat"] = 0.1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(path)])
    assert "learning_rat" in capsys.readouterr().err


def test_bad_literal_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(REPO / "configs" / "quickstart.yaml"), "--model.init_args.optim.name=adagrad"])
    assert "adagrad" in capsys.readouterr().err
