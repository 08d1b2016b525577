"""CIFAR-10/100: torchvision's download when online, or ImageFolder PNGs offline."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from lr_lightning.data.augment import random_crop_flip
from lr_lightning.data.base import DictTensorDataset, LRDataModule, mixed_order, seeded_split
from lr_lightning.data.image_io import load_class_folders_in_memory, missing_root_error
from lr_lightning.degrade import Degradation

_TV_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class CIFARDataModule(LRDataModule):
    """CIFAR-10 or CIFAR-100 held in memory as uint8 (32x32 HR).

    Two on-disk layouts are read, looked up under ``root`` in this order:

    1. ImageFolder PNGs: ``root/<variant>/{train,test}/<class>/*.png`` (the layout of this
       repository's offline CI data, ``../shared/data/cifar10``);
    2. torchvision's pickles: ``root/cifar-10-batches-py`` (``root/cifar-100-python``), which
       ``download: true`` fetches in ``prepare_data`` when the machine is online.

    Args:
        variant: ``"cifar10"`` or ``"cifar100"``.
        download: let torchvision download the data set if neither layout is present.
        val_fraction: share of the training split held out (seeded) for validation.
        train_subset: keep only this many (seeded, random) training images, e.g. for quick runs.
        augment: random crop (pad 4) + horizontal flip on training batches.
        skip_corrupt: leave undecodable PNGs out (one warning names them) instead of failing.
        (others: see :class:`LRDataModule`)
    """

    def __init__(
        self,
        *,
        root: str | None = None,
        variant: Literal["cifar10", "cifar100"] = "cifar10",
        download: bool = False,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        degradation: Degradation | None = None,
        val_fraction: float = 0.1,
        train_subset: int | None = None,
        augment: bool = True,
        skip_corrupt: bool = False,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            root=root, batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, degradation=degradation,
            seed=seed, pin_memory=pin_memory,
        )
        self.variant = variant
        self.download = download
        self.val_fraction = val_fraction
        self.train_subset = train_subset
        self.augment = augment
        self.skip_corrupt = skip_corrupt
        self.num_classes = 10 if variant == "cifar10" else 100
        self.check_divisible((32, 32), f"{variant} image size")

    @property
    def folder_root(self) -> Path:
        return self.root / self.variant

    @property
    def torchvision_root(self) -> Path:
        return self.root / _TV_DIRS[self.variant]

    def _tv_class(self):  # noqa: ANN202
        from torchvision import datasets

        return datasets.CIFAR10 if self.variant == "cifar10" else datasets.CIFAR100

    def prepare_data(self) -> None:
        if (self.folder_root / "train").is_dir() or self.torchvision_root.is_dir():
            return
        if self.download:
            try:
                for train in (True, False):
                    self._tv_class()(str(self.root), train=train, download=True)
            except (OSError, RuntimeError) as err:  # URLError is an OSError
                raise RuntimeError(
                    f"could not download {self.variant} into {str(self.root)!r} ({err}). Offline, put "
                    f"the ImageFolder layout {self.variant}/{{train,test}}/<class>/*.png or torchvision's "
                    f"{_TV_DIRS[self.variant]} under the data root (LR_LIGHTNING_DATA)"
                ) from err

    def load_split(self, split: Literal["train", "test"]) -> tuple[Tensor, Tensor]:
        """All images of a split as ``(uint8[N,3,32,32], int64[N])``."""
        folder = self.folder_root / split
        if folder.is_dir():
            images, labels, classes = load_class_folders_in_memory(folder, size=(32, 32), skip_corrupt=self.skip_corrupt)
            if len(classes) != self.num_classes:
                raise ValueError(
                    f"{str(folder)!r} has {len(classes)} class folders, {self.variant} has "
                    f"{self.num_classes}"
                )
            return images, labels
        if self.torchvision_root.is_dir():
            ds = self._tv_class()(str(self.root), train=split == "train", download=False)
            images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
            return images, torch.tensor(ds.targets, dtype=torch.long)
        raise missing_root_error(
            self.root,
            f"{self.variant} ({folder} or {self.torchvision_root})",
            "or set `download: true` on a machine with internet access",
        )

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            images, labels = self.load_split("train")
            train_idx, val_idx = seeded_split(len(images), self.val_fraction, self.seed)
            if self.train_subset is not None:
                g = torch.Generator().manual_seed(self.seed + 1)
                train_idx = train_idx[torch.randperm(len(train_idx), generator=g)[: self.train_subset]]
            self.train_set = DictTensorDataset(images, labels, train_idx)
            self.val_set = DictTensorDataset(images, labels, val_idx)
        if stage in (None, "test", "predict") and self.test_set is None:
            images, labels = self.load_split("test")
            self.test_set = DictTensorDataset(images, labels, mixed_order(len(images), self.seed))

    def augment_batch(self, hr: Tensor) -> Tensor:
        return random_crop_flip(hr, padding=4) if self.augment else hr
