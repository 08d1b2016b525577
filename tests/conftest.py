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
