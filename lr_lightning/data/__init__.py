"""LightningDataModules shared by every method (see :class:`LRDataModule` for the batch format)."""

from lr_lightning.data.augment import random_crop_flip
from lr_lightning.data.base import DictTensorDataset, LRDataModule, mixed_order, seeded_split
from lr_lightning.data.cifar import CIFAR10_MEAN, CIFAR10_STD, CIFARDataModule
from lr_lightning.data.image_io import (
    DATA_ENV,
    SkippedImagesWarning,
    UnsupportedImageError,
    default_data_root,
    read_image,
    read_images,
)
from lr_lightning.data.imagefolder import ImageFolderDataModule
from lr_lightning.data.kernel_sr import KernelSRDataModule
from lr_lightning.data.sr import SRDataModule

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATA_ENV",
    "CIFARDataModule",
    "DictTensorDataset",
    "ImageFolderDataModule",
    "KernelSRDataModule",
    "LRDataModule",
    "SRDataModule",
    "SkippedImagesWarning",
    "UnsupportedImageError",
    "default_data_root",
    "mixed_order",
    "random_crop_flip",
    "read_image",
    "read_images",
    "seeded_split",
]
