"""Data for paper E's zero-shot SR: HR training patches, and evaluation images degraded by known
blur kernels (Eq. 1: blur, then direct subsampling), served with their kernel.

* training batches: ``{"hr": uint8 patches}``; the task makes the LR images on the device
  (``D_bic`` / ``D_meta`` / meta-learning tasks are the task's degradation distribution);
* validation / test batches (one image each): ``{"hr", "lr", "kernel", "name"}``, ``lr`` the
  mod-cropped HR blurred by ``kernel`` and subsampled, stored on the 8-bit grid like a file;
* predict batches: ``{"lr", "kernel", "name"}`` from a folder of LR images and one kernel file
  (the online stage super-resolves them).

Test kernels are files (``.npy``, e.g. ``sr/kernels/*.npy`` of the shared data root); validation
kernels are drawn once from :class:`~lr_lightning.degrade.zero_shot.KernelDistribution` with
the data module's seed, so model selection never sees a test kernel. ``pairing="cycle"`` gives
image ``i`` kernel ``i mod K`` (one LR image per HR image); ``"all"`` pairs every image with every
kernel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from lr_lightning.data.base import LRDataModule
from lr_lightning.data.image_io import list_images, missing_root_error, read_image
from lr_lightning.data.sr import PatchDataset, load_folder_images
from lr_lightning.degrade.kernels import load_kernel
from lr_lightning.degrade.zero_shot import KernelDistribution, kernel_downsample, mod_crop

#: the isotropic Gaussian kernels of the shared data root (KAIR sigma 0.7/1.2/1.6/2.0, MZSR g20)
DEFAULT_TEST_KERNELS = [
    "sr/kernels/kair_kernels12_00_iso_sigma0.7_25x25.npy",
    "sr/kernels/kair_kernels12_01_iso_sigma1.2_25x25.npy",
    "sr/kernels/mzsr_g20_iso_var2.0_21x21.npy",
    "sr/kernels/kair_kernels12_02_iso_sigma1.6_25x25.npy",
    "sr/kernels/kair_kernels12_03_iso_sigma2.0_25x25.npy",
]

Pairing = Literal["cycle", "all"]


class KernelImageDataset(Dataset):
    """Whole HR images, each paired with a blur kernel; the LR image is made once, here."""

    def __init__(self, images: list[Tensor], names: list[str], kernels: list[Tensor], kernel_names: list[str],
                 scale: int, pairing: Pairing) -> None:
        if not kernels:
            raise ValueError("no blur kernels given for the evaluation images")
        if pairing == "cycle":
            pairs = [(i, i % len(kernels)) for i in range(len(images))]
        elif pairing == "all":
            pairs = [(i, j) for i in range(len(images)) for j in range(len(kernels))]
        else:
            raise ValueError(f"pairing must be 'cycle' or 'all', got {pairing!r}")
        self.items = []
        for i, j in pairs:
            hr = mod_crop(images[i], scale)
            lr = kernel_downsample(hr.float().unsqueeze(0) / 255, kernels[j], scale)[0]
            lr8 = (lr.clamp(0, 1) * 255).round().to(torch.uint8)
            self.items.append({"hr": hr, "lr": lr8, "kernel": kernels[j], "name": f"{names[i]}@{kernel_names[j]}"})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return dict(self.items[i])


class LRFolderDataset(Dataset):
    """LR images of a folder (uint8) with one shared kernel, for ``predict``."""

    def __init__(self, folder: Path, kernel: Tensor) -> None:
        if not folder.is_dir():
            raise missing_root_error(folder, "folder of LR images to super-resolve")
        self.files = list_images(folder)
        if not self.files:
            raise FileNotFoundError(f"no image files in {str(folder)!r}")
        self.kernel = kernel

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"lr": read_image(self.files[i]), "kernel": self.kernel, "name": self.files[i].stem}


class KernelSRDataModule(LRDataModule):
    """HR patches for offline training; kernel-degraded images for validation/test; LR folders
    for prediction (paper E, Sec. VII.A; DIV2K stand-in: ``sr/Urban100``).

    Args:
        train_dirs / val_dirs / test_dirs: HR folders relative to ``root``. Default: train on
            ``sr/Urban100`` (point it at DIV2K if you have it), validate on ``sr/Set14``, test on
            ``sr/Set5``; a table is never evaluated on a folder it trained on.
        scale: SR factor (x4 as the paper's Table 1, x2 profile).
        patch_size / patches_per_epoch / batch_size: HR training patches (64 in the paper).
        test_kernels: kernel files for the test images (default: the five isotropic Gaussian
            kernels of ``sr/kernels``).
        val_kernel_count: kernels drawn once from ``p(k)`` for validation (seeded).
        pairing: ``cycle`` (image i gets kernel i mod K) or ``all`` (every image x every kernel).
        val_pairing: the same for validation.
        predict_dir / predict_kernel: LR images and their kernel file for ``predict``.
    """

    def __init__(
        self,
        *,
        root: str | None = None,
        train_dirs: list[str] | None = None,
        val_dirs: list[str] | None = None,
        test_dirs: list[str] | None = None,
        scale: int = 4,
        patch_size: int = 64,
        patches_per_epoch: int = 1600,
        batch_size: int = 16,
        num_workers: int = 0,
        test_kernels: list[str] | None = None,
        val_kernel_count: int = 2,
        pairing: Pairing = "cycle",
        val_pairing: Pairing = "cycle",
        predict_dir: str | None = None,
        predict_kernel: str | None = None,
        augment: bool = True,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__(root=root, batch_size=batch_size, eval_batch_size=1, num_workers=num_workers,
                         degradation=None, seed=seed, pin_memory=pin_memory)
        if patch_size % scale:
            raise ValueError(f"patch_size {patch_size} is not divisible by scale {scale}")
        if val_kernel_count < 1:
            raise ValueError(f"val_kernel_count must be >= 1, got {val_kernel_count}")
        self.train_dirs = train_dirs if train_dirs is not None else ["sr/Urban100"]
        self.val_dirs = val_dirs if val_dirs is not None else ["sr/Set14"]
        self.test_dirs = test_dirs if test_dirs is not None else ["sr/Set5"]
        overlap = {str(Path(d)) for d in self.train_dirs} & {str(Path(d)) for d in self.val_dirs + self.test_dirs}
        if overlap:
            raise ValueError(f"folders {sorted(overlap)} are both trained and evaluated on; use disjoint folders")
        self.scale, self.patch_size, self.patches_per_epoch = scale, patch_size, patches_per_epoch
        self.test_kernels = test_kernels if test_kernels is not None else list(DEFAULT_TEST_KERNELS)
        self.val_kernel_count = val_kernel_count
        self.pairing, self.val_pairing = pairing, val_pairing
        self.predict_dir, self.predict_kernel = predict_dir, predict_kernel
        self.augment = augment
        self.test_sets: list[Dataset] = []
        self.predict_set: Dataset | None = None

    @property
    def test_names(self) -> list[str]:
        return [Path(d).name for d in self.test_dirs]

    def _path(self, p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else self.root / q

    def file_kernels(self, files: list[str]) -> tuple[list[Tensor], list[str]]:
        return [load_kernel(self._path(f)) for f in files], [Path(f).stem for f in files]

    def val_kernels(self) -> tuple[list[Tensor], list[str]]:
        gen = torch.Generator().manual_seed(self.seed + 104729)
        ks = KernelDistribution.for_scale(self.scale).sample(self.val_kernel_count, gen)
        return ks, [f"val{i}" for i in range(len(ks))]

    def _eval(self, dirs: list[str], kernels: tuple[list[Tensor], list[str]], pairing: Pairing) -> list[Dataset]:
        out: list[Dataset] = []
        for d in dirs:
            images, names = load_folder_images(self._path(d))
            out.append(KernelImageDataset(images, names, kernels[0], kernels[1], self.scale, pairing))
        return out

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit") and self.train_set is None:
            images: list[Tensor] = []
            for d in self.train_dirs:
                images.extend(load_folder_images(self._path(d))[0])
            self.train_set = PatchDataset(images, self.patch_size, self.patches_per_epoch, self.augment, self.seed)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = ConcatDataset(self._eval(self.val_dirs, self.val_kernels(), self.val_pairing))
        if stage in (None, "test") and not self.test_sets:
            self.test_sets = self._eval(self.test_dirs, self.file_kernels(self.test_kernels), self.pairing)
        if stage == "predict" and self.predict_set is None:
            if self.predict_dir is None or self.predict_kernel is None:
                raise ValueError("predict needs data.predict_dir (LR images) and data.predict_kernel (a .npy kernel)")
            self.predict_set = LRFolderDataset(self._path(self.predict_dir), load_kernel(self._path(self.predict_kernel)))

    def test_dataloader(self) -> list[DataLoader]:  # type: ignore[override]
        return [self._loader(s, False, 1) for s in self.test_sets]

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, False, 1)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        for key in ("hr", "lr"):
            if key in batch and batch[key].dtype == torch.uint8:
                batch[key] = batch[key].float().div_(255.0)
        return batch
