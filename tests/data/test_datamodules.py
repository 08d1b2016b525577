"""DataModules on real data (skipped when absent) and on tiny synthetic folders; bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lr_lightning.data import (
    CIFARDataModule,
    ImageFolderDataModule,
    SRDataModule,
    random_crop_flip,
    seeded_split,
)
from lr_lightning.degrade import Degradation
from tests.conftest import write_image_folder


def _first_batch(dm, loader) -> dict:
    batch = next(iter(loader))
    return dm.on_after_batch_transfer(batch, 0)


def test_cifar_imagefolder_real(cifar_root: Path) -> None:
    dm = CIFARDataModule(root=str(cifar_root), batch_size=16, degradation=Degradation("avg", 2, bits=3))
    dm.setup("fit")
    dm.setup("test")
    assert len(dm.train_set) + len(dm.val_set) == 20_000 and len(dm.val_set) == 2_000
    assert len(dm.test_set) == 10_000
    batch = _first_batch(dm, dm.val_dataloader())
    assert batch["hr"].shape == (16, 3, 32, 32) and batch["hr"].dtype == torch.float32
    assert 0.0 <= float(batch["hr"].min()) and float(batch["hr"].max()) <= 1.0
    assert batch["lr"].shape == (16, 3, 16, 16)
    assert len(torch.unique(batch["lr"])) <= 2**3  # 3-bit DoReFa levels
    assert batch["label"].dtype == torch.long
    # class folders in alphabetical order give the usual CIFAR-10 labels (airplane=0 ... truck=9)
    assert torch.bincount(dm.test_set.labels).tolist() == [1000] * 10


def test_split_is_seeded_and_disjoint() -> None:
    a_tr, a_va = seeded_split(100, 0.2, seed=3)
    b_tr, b_va = seeded_split(100, 0.2, seed=3)
    c_tr, _ = seeded_split(100, 0.2, seed=4)
    assert torch.equal(a_tr, b_tr) and torch.equal(a_va, b_va) and not torch.equal(a_tr, c_tr)
    assert len(set(a_tr.tolist()) & set(a_va.tolist())) == 0 and len(a_tr) + len(a_va) == 100


def test_cifar_missing_root_names_path_and_fix(tmp_path: Path) -> None:
    dm = CIFARDataModule(root=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere.*LR_LIGHTNING_DATA.*download: true"):
        dm.setup("fit")


def test_cifar_reads_env_var(tiny_cifar: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LR_LIGHTNING_DATA", str(tiny_cifar))
    dm = CIFARDataModule(batch_size=4, val_fraction=0.5)
    dm.setup("fit")
    assert dm.root == tiny_cifar and len(dm.train_set) == 30


def test_corrupt_image_is_named(tiny_cifar: Path) -> None:
    bad = tiny_cifar / "cifar10" / "train" / "class3" / "0002.png"
    bad.write_bytes(b"not a png at all")
    dm = CIFARDataModule(root=str(tiny_cifar))
    with pytest.raises(RuntimeError, match="0002.png"):
        dm.setup("fit")


def test_wrong_image_size_is_named(tiny_cifar: Path) -> None:
    write_image_folder(tiny_cifar / "cifar10" / "train", classes=1, per_class=1, size=30, seed=1)
    # overwrote class0/0000.png with a 30x30 image
    dm = CIFARDataModule(root=str(tiny_cifar))
    with pytest.raises(ValueError, match="0000.png.*30x30"):
        dm.setup("fit")


def test_factor_must_divide_image_size() -> None:
    with pytest.raises(ValueError, match="not divisible by the degradation factor 3"):
        CIFARDataModule(degradation=Degradation("bicubic", 3))
    with pytest.raises(ValueError, match="not divisible"):
        ImageFolderDataModule(hr_size=100, degradation=Degradation("avg", 8))


def test_empty_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    dm = ImageFolderDataModule(root=str(tmp_path), hr_size=32, test_dir=None)
    with pytest.raises(FileNotFoundError, match="train/a'.*hold no image file"):
        dm.setup("fit")


def test_imagefolder_module(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", classes=3, per_class=5, size=50)
    write_image_folder(tmp_path / "test", classes=3, per_class=2, size=40)
    dm = ImageFolderDataModule(
        root=str(tmp_path), hr_size=32, batch_size=4, num_workers=0, degradation=Degradation("max", 4)
    )
    dm.setup("fit")
    dm.setup("test")
    assert dm.num_classes == 3 and len(dm.test_set) == 6
    batch = _first_batch(dm, dm.test_dataloader())
    assert batch["hr"].shape == (4, 3, 32, 32) and batch["lr"].shape == (4, 3, 8, 8)


def test_random_crop_flip_matches_per_sample_reference() -> None:
    x = torch.rand(6, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = random_crop_flip(x, padding=2, generator=g)
    # replay the same random numbers and crop each sample by hand
    g = torch.Generator().manual_seed(0)
    oy = torch.randint(0, 5, (6,), generator=g)
    ox = torch.randint(0, 5, (6,), generator=g)
    flip = torch.rand(6, generator=g) < 0.5
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(6):
        ref = padded[i, :, oy[i] : oy[i] + 8, ox[i] : ox[i] + 8]
        ref = ref.flip(-1) if flip[i] else ref
        assert torch.equal(out[i], ref)


def test_sr_datamodule_real(data_root: Path) -> None:
    if not (data_root / "sr" / "Set5").is_dir():
        pytest.skip("no sr/Set5 under the data root")
    dm = SRDataModule(
        root=str(data_root), train_dirs=["sr/Set5"], val_dirs=["sr/Set5"], test_dirs=["sr/Set5", "sr/Set14"],
        scale=3, patch_size=48, patches_per_epoch=8, batch_size=4,
    )
    dm.setup("fit")
    dm.setup("test")
    batch = _first_batch(dm, dm.train_dataloader())
    assert batch["hr"].shape == (4, 3, 48, 48) and batch["lr"].shape == (4, 3, 16, 16)
    loaders = dm.test_dataloader()
    assert dm.test_names == ["Set5", "Set14"] and len(loaders) == 2
    for b in loaders[1]:  # Set14 has odd sizes and a grayscale file (bridge): mod-cropped RGB
        b = dm.on_after_batch_transfer(b, 1)
        h, w = b["hr"].shape[-2:]
        assert h % 3 == 0 and w % 3 == 0 and b["hr"].shape[1] == 3
        assert b["lr"].shape[-2:] == (h // 3, w // 3)


def test_sr_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="patch_size 50 is not divisible by scale 4"):
        SRDataModule(root=str(tmp_path), scale=4, patch_size=50)
    (tmp_path / "imgs").mkdir()
    write_image_folder(tmp_path / "imgs", classes=1, per_class=1, size=31)
    dm = SRDataModule(root=str(tmp_path), val_dirs=["imgs/class0"], scale=2, patch_size=16, mod_crop=False)
    with pytest.raises(ValueError, match="0000.*31x31.*mod_crop"):
        dm.setup("validate")
    dm = SRDataModule(root=str(tmp_path), val_dirs=["missing"], scale=2, patch_size=16)
    with pytest.raises(FileNotFoundError, match="missing"):
        dm.setup("validate")


def test_download_failure_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision import datasets

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(datasets.CIFAR10, "__init__", offline)
    dm = CIFARDataModule(root=str(tmp_path), download=True)
    with pytest.raises(RuntimeError, match="could not download cifar10.*LR_LIGHTNING_DATA"):
        dm.prepare_data()


def test_evaluation_batches_are_class_mixed(cifar_root: Path) -> None:
    """Class folders are read class by class; evaluation batches must not be single-class."""
    dm = CIFARDataModule(root=str(cifar_root), eval_batch_size=64)
    dm.setup("fit")
    dm.setup("test")
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        labels = next(iter(loader))["label"]
        assert len(torch.unique(labels)) >= 8
    # the order is fixed: two data modules with the same seed serve the same first test batch
    dm2 = CIFARDataModule(root=str(cifar_root), eval_batch_size=64)
    dm2.setup("test")
    assert torch.equal(next(iter(dm2.test_dataloader()))["label"], next(iter(dm.test_dataloader()))["label"])
