"""Shared test set-up: offline environment, data locations and small synthetic data sets.

Real data is read from ``$LR_LIGHTNING_DATA`` (``make test`` points it at ``../shared/data``);
tests that need it are skipped, with the reason, when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path | None:
    root = os.environ.get("LR_LIGHTNING_DATA")
    if root and Path(root).is_dir():
        return Path(root).resolve()
    return None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real data root, or skip."""
    root = shared_data_root()
    if root is None:
        pytest.skip("real data not available: set LR_LIGHTNING_DATA (make test uses ../shared/data)")
    return root


@pytest.fixture(scope="session")
def cifar_root(data_root: Path) -> Path:
    if not (data_root / "cifar10" / "train").is_dir():
        pytest.skip(f"no CIFAR-10 ImageFolder copy under {data_root}/cifar10")
    return data_root


def write_image_folder(root: Path, classes: int, per_class: int, size: int, seed: int = 0) -> Path:
    """Create ``root/<class_i>/<j>.png`` with random images; returns ``root``."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(d / f"{j:04d}.png")
    return root


def write_images(folder: Path, n: int, size: int, seed: int = 0) -> Path:
    """Create ``folder/img_<j>.png`` (flat, as SR test sets are); returns ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for j in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"img_{j:03d}.png")
    return folder


@pytest.fixture
def tiny_cifar(tmp_path: Path) -> Path:
    """A tiny CIFAR-10 in the ImageFolder layout: root/cifar10/{train,test}/<10 classes>/*.png."""
    for split, n in (("train", 6), ("test", 2)):
        write_image_folder(tmp_path / "cifar10" / split, classes=10, per_class=n, size=32)
    return tmp_path


RANK_DUMP = """
from lightning.pytorch import Callback
import torch, os
class Dump(Callback):
    def _save(self, trainer, pl_module, name):
        gen = getattr(pl_module, "task_generator", None)
        torch.save({"state": pl_module.state_dict(), "tasks": gen.get_state() if gen is not None else None},
                   os.path.join(os.environ["DUMP_DIR"], f"{name}{trainer.global_rank}.pt"))
    def on_train_start(self, trainer, pl_module):
        self._save(trainer, pl_module, "start")
    def on_train_end(self, trainer, pl_module):
        self._save(trainer, pl_module, "rank")
"""


def run_ddp_fit(config: Path, data_root: Path, tmp_path: Path, args: list[str], extra_path: Path | None = None,
                timeout: int = 300) -> None:
    """Run ``lr-lightning fit --config config`` with ``strategy=ddp`` on 2 CPU processes as a CLI
    subprocess (with a timeout; ``extra_path`` joins PYTHONPATH) and assert that it succeeded."""
    import subprocess
    import sys

    env = {**os.environ, "LR_LIGHTNING_DATA": str(data_root), "DUMP_DIR": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(REPO), *([str(extra_path)] if extra_path else [])])}
    cmd = [
        sys.executable, "-m", "lr_lightning", "fit", "--config", str(config),
        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
        "--trainer.limit_val_batches=1", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false", *args,
    ]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    assert list(tmp_path.rglob("last.ckpt")), out.stderr[-2000:]


def ddp_fit_rank_dumps(config: Path, data_root: Path, tmp_path: Path, args: list[str], timeout: int = 300) -> tuple[dict, dict, dict]:
    """Run ``lr-lightning fit`` with ``strategy=ddp`` on 2 CPU processes (:func:`run_ddp_fit`) and
    return what rank 0 held at the start and what ranks 0 and 1 held at the end:
    ``{"state": module state dict, "tasks": task-generator state or None}`` each."""
    import torch

    (tmp_path / "rankdump.py").write_text(RANK_DUMP)
    extra = tmp_path / "cb.yaml"
    extra.write_text("trainer:\n  callbacks:\n    - class_path: rankdump.Dump\n")
    run_ddp_fit(config, data_root, tmp_path, ["--config", str(extra), *args], extra_path=tmp_path, timeout=timeout)
    load = lambda name: torch.load(tmp_path / f"{name}.pt", weights_only=True)  # noqa: E731
    return load("start0"), load("rank0"), load("rank1")
