"""Unlabelled HR crops from image folders, for self-supervised pretext tasks (paper D).

Batches are ``{"hr": float[B,3,hr_size,hr_size] in [0, 1]}``: random ``crop_size`` crops of the
folder images, average-pooled by ``crop_size // hr_size`` (so a large crop of a photograph looks
like a small whole image, as 256x256 images do in paper D). Training crops are drawn afresh
every epoch (``patches_per_epoch`` of them); validation crops are drawn once with a fixed seed
from *other* folders. The pretext task makes the LR image and the super patch from ``hr``.

The default folders (``sr/BSD100``, ``sr/Urban100`` for training, ``sr/Set14`` for validation)
contain no CIFAR-10 image, so a classifier tested on CIFAR-10 never sees a test image before
the test.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset

from lr_lightning.data.base import DictTensorDataset, LRDataModule
from lr_lightning.data.resumable import item_seed
from lr_lightning.data.sr import load_folder_images


class RandomCropDataset(Dataset):
    """``length`` random ``crop_size`` crops (random horizontal flip) average-pooled to ``hr_size``.

    Item ``key`` (from the training sampler, unique per epoch: ``seeded_items``) is cropped with a
    generator seeded by ``(seed, key)``: the same crops whatever the workers, and after a resume.
    """

    seeded_items = True

    def __init__(self, images: list[Tensor], crop_size: int, hr_size: int, length: int, flip: bool = True, seed: int = 0) -> None:
        kept = [im for im in images if min(im.shape[-2:]) >= crop_size]
        if not kept:
            raise ValueError(f"crop_size {crop_size} is larger than every image ({len(images)} images); use a smaller crop_size")
        if len(kept) < len(images):
            warnings.warn(f"{len(images) - len(kept)} of {len(images)} images are smaller than crop_size {crop_size} and are skipped", stacklevel=2)
        images = kept
        self.images, self.crop_size, self.hr_size, self.length, self.flip = images, crop_size, hr_size, length, flip
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def crop(self, generator: torch.Generator | None = None) -> Tensor:
        img = self.images[int(torch.randint(len(self.images), (), generator=generator))]
        h, w = img.shape[-2:]
        c = self.crop_size
        y = int(torch.randint(h - c + 1, (), generator=generator))
        x = int(torch.randint(w - c + 1, (), generator=generator))
        patch = img[:, y : y + c, x : x + c].float().div(255.0)
        if self.flip and bool(torch.rand((), generator=generator) < 0.5):
            patch = patch.flip(-1)
        f = c // self.hr_size
        if f > 1:
            patch = F.avg_pool2d(patch[None], f)[0]
        return patch.contiguous()

    def __getitem__(self, key: int) -> dict[str, Tensor]:
        return {"hr": self.crop(torch.Generator().manual_seed(item_seed(self.seed, int(key))))}


class PretextFolderDataModule(LRDataModule):
    """Unlabelled HR images from folders (e.g. the SR sets) for the autoresolution pretext.

    Args:
        train_dirs / val_dirs: folders relative to ``root`` (or absolute).
        test_dirs: folders of the test split (fixed crops like validation; ``None`` = ``val_dirs``,
            so ``test`` scores the pretext on the validation crops: say so when you report it).
        crop_size: side of the crop taken from a folder image.
        hr_size: side of the HR image served (``crop_size`` must be a multiple of it).
        patches_per_epoch: random crops per training epoch.
        val_crops: fixed (seeded) validation crops.
        (others: see :class:`LRDataModule`)
    """

    def __init__(
        self,
        *,
        root: str | None = None,
        train_dirs: list[str] | None = None,
        val_dirs: list[str] | None = None,
        test_dirs: list[str] | None = None,
        crop_size: int = 128,
        hr_size: int = 32,
        patches_per_epoch: int = 16_000,
        val_crops: int = 1_000,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(
            root=root, batch_size=batch_size, eval_batch_size=None, num_workers=num_workers, degradation=None,
            seed=seed, pin_memory=pin_memory,
        )
        if crop_size % hr_size:
            raise ValueError(f"crop_size {crop_size} is not a multiple of hr_size {hr_size}")
        self.train_dirs = train_dirs if train_dirs is not None else ["sr/BSD100", "sr/Urban100"]
        self.val_dirs = val_dirs if val_dirs is not None else ["sr/Set14"]
        self.test_dirs = test_dirs if test_dirs is not None else self.val_dirs
        self.crop_size, self.hr_size = crop_size, hr_size
        self.patches_per_epoch, self.val_crops = patches_per_epoch, val_crops

    def _images(self, dirs: list[str]) -> list[Tensor]:
        images: list[Tensor] = []
        for d in dirs:
            images.extend(load_folder_images(self.root / d)[0])  # RGB uint8 (grey files converted)
        return images

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = RandomCropDataset(self._images(self.train_dirs), self.crop_size, self.hr_size, self.patches_per_epoch,
                                               seed=self.seed)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = self._fixed_crops(self.val_dirs, self.seed)
        if stage in (None, "test") and self.test_set is None:
            self.test_set = self._fixed_crops(self.test_dirs, self.seed + 1)

    def _fixed_crops(self, dirs: list[str], seed: int) -> DictTensorDataset:
        """``val_crops`` seeded crops of the images in ``dirs`` (the same every run)."""
        ds = RandomCropDataset(self._images(dirs), self.crop_size, self.hr_size, self.val_crops)
        g = torch.Generator().manual_seed(seed)
        crops = torch.stack([ds.crop(g) for _ in range(self.val_crops)])
        return DictTensorDataset(crops, torch.zeros(len(crops), dtype=torch.long))
