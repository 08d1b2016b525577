"""Super-resolution data: random HR patches for training, whole images for evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lr_lightning.data.base import LRDataModule
from lr_lightning.data.image_io import list_images, missing_root_error, read_images
from lr_lightning.data.resumable import item_seed
from lr_lightning.degrade import Degradation


def load_folder_images(folder: Path, skip_corrupt: bool = False) -> tuple[list[Tensor], list[str]]:
    """All images of an SR folder (e.g. ``sr/Set5``) as uint8 (3, H, W) tensors and names.

    ``skip_corrupt`` leaves undecodable files out with one warning naming them.
    """
    if not folder.is_dir():
        raise missing_root_error(folder, "super-resolution image folder")
    files = list_images(folder)
    if not files:
        raise FileNotFoundError(f"no image files in {str(folder)!r}")
    images, kept = read_images(files, skip_corrupt=skip_corrupt, where=str(folder))
    if not images:
        raise FileNotFoundError(f"no decodable image file in {str(folder)!r}")
    return images, [files[i].stem for i in kept]


class PatchDataset(Dataset):
    """Random ``patch_size`` HR crops (with flips and 90-degree rotations) from a few images.

    ``length`` crops make an epoch. Each item is drawn from its own generator seeded by
    ``(seed, key)`` (``seeded_items``: the training sampler gives keys unique per epoch), so an
    epoch's crops are fixed by the seed, do not depend on the number of workers, and are the
    same after a mid-epoch resume.
    """

    seeded_items = True

    def __init__(self, images: list[Tensor], patch_size: int, length: int, augment: bool = True, seed: int = 0) -> None:
        small = [tuple(im.shape[-2:]) for im in images if min(im.shape[-2:]) < patch_size]
        if small:
            raise ValueError(f"patch_size {patch_size} is larger than training image(s) of size {small[:3]}")
        self.images = images
        self.patch_size = patch_size
        self.length = length
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(item_seed(self.seed, int(key)))
        img = self.images[int(torch.randint(len(self.images), (), generator=g))]
        h, w = img.shape[-2:]
        p = self.patch_size
        y = int(torch.randint(h - p + 1, (), generator=g))
        x = int(torch.randint(w - p + 1, (), generator=g))
        patch = img[:, y : y + p, x : x + p]
        if self.augment:
            if torch.rand((), generator=g) < 0.5:
                patch = patch.flip(-1)
            k = int(torch.randint(4, (), generator=g))
            patch = torch.rot90(patch, k, dims=(-2, -1))
        return {"hr": patch.contiguous()}


class WholeImageDataset(Dataset):
    """Whole evaluation images, mod-cropped to a multiple of ``scale`` (top-left kept)."""

    def __init__(self, images: list[Tensor], names: list[str], scale: int, mod_crop: bool, folder: Path) -> None:
        out = []
        for img, name in zip(images, names, strict=True):
            h, w = img.shape[-2:]
            if (h % scale or w % scale) and not mod_crop:
                raise ValueError(
                    f"image {name!r} in {str(folder)!r} is {w}x{h}, not divisible by scale {scale}; "
                    f"set mod_crop: true to crop it to a multiple of the scale"
                )
            out.append(img[:, : h - h % scale, : w - w % scale])
        self.images, self.names = out, names

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"hr": self.images[i], "name": self.names[i]}


class SRDataModule(LRDataModule):
    """Super-resolution folders under ``root`` (e.g. ``sr/Urban100`` for training patches,
    ``sr/Set5``, ``sr/Set14``, ``sr/BSD100`` for evaluation).

    ``batch["lr"]`` is made on the device by ``degradation`` (default: MATLAB-compatible bicubic
    by ``scale``, the convention of SR benchmarks). Evaluation images have different sizes, so
    they are served one per batch; each test folder is its own test dataloader, named by
    :attr:`test_names`.

    Args:
        train_dirs / val_dirs / test_dirs: folders relative to ``root`` (or absolute).
        scale: SR factor; ``patch_size`` must be divisible by it.
        patch_size: HR training patch side.
        patches_per_epoch: random patches per training epoch.
        mod_crop: crop evaluation images to a multiple of ``scale`` (else a size that does not
            divide is an error).
        skip_corrupt: leave undecodable files out (one warning per folder names them).
    """

    def __init__(
        self,
        *,
        root: str | None = None,
        train_dirs: list[str] | None = None,
        val_dirs: list[str] | None = None,
        test_dirs: list[str] | None = None,
        scale: int = 2,
        patch_size: int = 96,
        patches_per_epoch: int = 1600,
        batch_size: int = 16,
        num_workers: int = 0,
        degradation: Degradation | None = None,
        mod_crop: bool = True,
        augment: bool = True,
        skip_corrupt: bool = False,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> None:
        if degradation is None:
            degradation = Degradation(mode="bicubic_matlab", factor=scale)
        if degradation.factor != scale:
            raise ValueError(f"degradation factor {degradation.factor} differs from scale {scale}")
        super().__init__(
            root=root, batch_size=batch_size, eval_batch_size=1, num_workers=num_workers, degradation=degradation,
            seed=seed, pin_memory=pin_memory,
        )
        if patch_size % scale:
            raise ValueError(f"patch_size {patch_size} is not divisible by scale {scale}; use a multiple of {scale}")
        self.train_dirs = train_dirs if train_dirs is not None else ["sr/Urban100"]
        self.val_dirs = val_dirs if val_dirs is not None else ["sr/Set5"]
        self.test_dirs = test_dirs if test_dirs is not None else ["sr/Set5", "sr/Set14", "sr/BSD100"]
        self.scale = scale
        self.patch_size = patch_size
        self.patches_per_epoch = patches_per_epoch
        self.mod_crop = mod_crop
        self.augment = augment
        self.skip_corrupt = skip_corrupt
        self.test_sets: list[WholeImageDataset] = []

    @property
    def test_names(self) -> list[str]:
        return [Path(d).name for d in self.test_dirs]

    def _eval_set(self, dirs: list[str]) -> list[WholeImageDataset]:
        sets = []
        for d in dirs:
            folder = self.root / d
            images, names = load_folder_images(folder, self.skip_corrupt)
            sets.append(WholeImageDataset(images, names, self.scale, self.mod_crop, folder))
        return sets

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            images: list[Tensor] = []
            for d in self.train_dirs:
                images.extend(load_folder_images(self.root / d, self.skip_corrupt)[0])
            self.train_set = PatchDataset(images, self.patch_size, self.patches_per_epoch, self.augment, self.seed)
        if stage in (None, "fit", "validate") and self.val_set is None:
            sets = self._eval_set(self.val_dirs)
            self.val_set = torch.utils.data.ConcatDataset(sets)
        if stage in (None, "test", "predict") and not self.test_sets:
            self.test_sets = self._eval_set(self.test_dirs)

    def test_dataloader(self) -> list[DataLoader]:  # type: ignore[override]
        return [self._loader(s, False, 1) for s in self.test_sets]
