"""Generic class-folder data sets (Food-101, ImageNet, fMoW-style, medical crops, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from lr_lightning.data.base import LRDataModule, mixed_order, seeded_split
from lr_lightning.data.image_io import (
    AlphaMode,
    Precision,
    find_corrupt,
    missing_root_error,
    read_image,
    scan_class_folders,
    warn_skipped,
)
from lr_lightning.data.resumable import item_seed
from lr_lightning.degrade import Degradation


class FolderDataset(Dataset):
    """Files + labels, decoded on access (:func:`read_image`) and transformed to (3, S, S).

    With ``seed`` set (training), items are *keys* ``epoch * n + i`` from the training sampler
    (``seeded_items``) and each item's random transform is drawn from the global RNG re-seeded by
    ``(seed, key)`` inside ``torch.random.fork_rng`` (torchvision's transforms draw from the
    global RNG): the crops do not depend on workers and repeat exactly after a resume.
    """

    def __init__(
        self,
        files: list[Path],
        labels: list[int],
        transform: v2.Transform,
        precision: Precision = "uint8",
        alpha: AlphaMode = "drop",
        seed: int | None = None,
    ) -> None:
        self.files = files
        self.seed = seed
        self.seeded_items = seed is not None
        self.labels = labels
        self.transform = transform
        self.precision: Precision = precision
        self.alpha: AlphaMode = alpha

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int) -> dict[str, Any]:
        i = int(key) % len(self.files)
        img = read_image(self.files[i], precision=self.precision, alpha=self.alpha)
        if self.seed is None:
            img = self.transform(img)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(item_seed(self.seed, int(key)))
                img = self.transform(img)
        return {"hr": img, "label": torch.tensor(self.labels[i])}


class ImageFolderDataModule(LRDataModule):
    """Class folders ``root/<train_dir>/<class>/*`` resized to a square HR size.

    Training images are resized (shorter side ``resize_size``), randomly cropped to ``hr_size``
    and flipped; evaluation images are resized and centre-cropped. Images are decoded in the
    workers, so set ``num_workers`` for large data sets.

    Args:
        train_dir / val_dir / test_dir: sub-folders of ``root``; ``val_dir=None`` holds out
            ``val_fraction`` of ``train_dir`` (seeded); ``test_dir=None`` tests on the val split.
        hr_size: side of the square HR image (must divide by the degradation factor).
        resize_size: shorter side before cropping (default ``hr_size * 8 // 7``).
        precision: ``"uint8"`` (default) or ``"float32"``, which keeps 16-bit / float files at full
            precision up to the device (see :mod:`lr_lightning.data.image_io` for every mode).
        alpha: an alpha channel is ``"drop"``-ped (default) or composited over ``"white"`` /
            ``"black"``.
        skip_corrupt: decode every file once at setup and leave the undecodable ones out, with one
            warning naming them (default: an undecodable file stops the run, naming it).
        allow_empty_classes: keep a class folder without images as a class (with a warning)
            instead of the default error naming it.
    """

    def __init__(
        self,
        *,
        root: str | None = None,
        train_dir: str = "train",
        val_dir: str | None = None,
        test_dir: str | None = "test",
        hr_size: int = 224,
        resize_size: int | None = None,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        degradation: Degradation | None = None,
        val_fraction: float = 0.1,
        precision: Precision = "uint8",
        alpha: AlphaMode = "drop",
        skip_corrupt: bool = False,
        allow_empty_classes: bool = False,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            root=root, batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers, degradation=degradation,
            seed=seed, pin_memory=pin_memory,
        )
        self.train_dir, self.val_dir, self.test_dir = train_dir, val_dir, test_dir
        self.hr_size = hr_size
        self.resize_size = resize_size or hr_size * 8 // 7
        self.val_fraction = val_fraction
        self.precision: Precision = precision
        self.alpha: AlphaMode = alpha
        self.skip_corrupt = skip_corrupt
        self.allow_empty_classes = allow_empty_classes
        self.check_divisible((hr_size, hr_size), "hr_size")
        self.classes: list[str] = []

    def _transforms(self, train: bool) -> v2.Transform:
        resize = v2.Resize(self.resize_size, antialias=True)
        if train:
            return v2.Compose([resize, v2.RandomCrop(self.hr_size), v2.RandomHorizontalFlip()])
        return v2.Compose([resize, v2.CenterCrop(self.hr_size)])

    def _mixed(self, files: list[Path], labels: list[int]) -> tuple[list[Path], list[int]]:
        order = mixed_order(len(files), self.seed).tolist()
        return [files[i] for i in order], [labels[i] for i in order]

    def _scan(self, sub: str) -> tuple[list[Path], list[int]]:
        folder = self.root / sub
        if not folder.is_dir():
            raise missing_root_error(folder, f"image folder {sub!r}")
        files, labels, classes = scan_class_folders(folder, allow_empty=self.allow_empty_classes)
        if self.skip_corrupt:
            bad = set(find_corrupt(files))
            warn_skipped([files[i] for i in sorted(bad)], str(folder))
            files = [f for i, f in enumerate(files) if i not in bad]
            labels = [c for i, c in enumerate(labels) if i not in bad]
            if not files:
                raise FileNotFoundError(f"no decodable image file under {str(folder)!r}")
        if self.classes and classes != self.classes:
            raise ValueError(f"class folders of {str(folder)!r} differ from those of {self.train_dir!r}")
        self.classes = classes
        return files, labels

    def _dataset(self, files: list[Path], labels: list[int], train: bool) -> FolderDataset:
        return FolderDataset(files, labels, self._transforms(train), self.precision, self.alpha,
                             seed=self.seed if train else None)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            files, labels = self._scan(self.train_dir)
            if self.val_dir is None:
                tr, va = seeded_split(len(files), self.val_fraction, self.seed)
                val_files, val_labels = [files[i] for i in va], [labels[i] for i in va]
                files, labels = [files[i] for i in tr], [labels[i] for i in tr]
            else:
                val_files, val_labels = self._mixed(*self._scan(self.val_dir))
            self.train_set = self._dataset(files, labels, True)
            self.val_set = self._dataset(val_files, val_labels, False)
        if stage in (None, "test", "predict") and self.test_set is None:
            if self.test_dir is None:
                self.test_set = self.val_set
            else:
                files, labels = self._mixed(*self._scan(self.test_dir))
                self.test_set = self._dataset(files, labels, False)
