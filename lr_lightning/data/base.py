"""The base DataModule every method uses.

Batches are dicts. Images travel as uint8 (4x less to copy) and become float in [0, 1] on the
device in :meth:`LRDataModule.on_after_batch_transfer`, where the batch augmentation and the
degradation also run, so both use the accelerator when there is one:

* classification: ``{"hr": float[B,3,H,W] in [0,1], "label": int64[B]}`` plus ``"lr"`` when a
  ``degradation`` is set;
* super-resolution: ``{"hr": ..., "lr": ...}`` (plus ``"name"`` for whole evaluation images).

Normalisation (mean/std) is the model's job, so degradations that assume [0, 1] (DoReFa
quantisation, paper A) see real pixel values.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lr_lightning.data.image_io import resolve_root
from lr_lightning.data.resumable import ResumableDataLoader, ResumableSampler
from lr_lightning.degrade import Degradation


class DictTensorDataset(Dataset):
    """Images (uint8, N x 3 x H x W) and labels held in memory, served as dicts."""

    def __init__(self, images: Tensor, labels: Tensor, indices: Tensor | None = None) -> None:
        self.images = images
        self.labels = labels
        self.indices = indices if indices is not None else torch.arange(len(images))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        j = int(self.indices[i])
        return {"hr": self.images[j], "label": self.labels[j]}


def seeded_split(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split ``range(n)`` into (train, val) index tensors with a fixed seed.

    The validation indices stay in their (seeded) random order, so evaluation batches of a
    class-sorted folder are class-mixed; see :func:`mixed_order`.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * val_fraction))
    return perm[n_val:].sort().values, perm[:n_val]


def mixed_order(n: int, seed: int) -> Tensor:
    """A fixed, seeded permutation of ``range(n)`` for evaluation sets.

    Class folders are read class by class; served in that order, every evaluation batch would
    hold a single class, which breaks anything that uses batch statistics at evaluation time
    (transductive BatchNorm in MAML, per-batch normalisation). The order is fixed by the seed,
    so evaluations are reproducible and comparable.
    """
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))


class LRDataModule(LightningDataModule):
    """Base class: loaders, uint8 -> float conversion, batch augmentation and degradation.

    Args:
        root: data root; ``None`` reads ``$LR_LIGHTNING_DATA`` (default ``./data``).
        batch_size: training batch size.
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        num_workers: DataLoader workers (0 is fastest for in-memory data sets).
        degradation: how ``batch["lr"]`` is made from ``batch["hr"]``; ``None`` gives HR only.
        seed: seed of the train/val split (and of anything else the subclass samples once).
        pin_memory: pin host memory (useful with a GPU).
    """

    def __init__(
        self,
        *,
        root: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        degradation: Degradation | None = None,
        seed: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        self.root = resolve_root(root)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.degradation = degradation
        self.seed = seed
        self.pin_memory = pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    # -- loaders -------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset | None, train: bool, batch_size: int) -> DataLoader:
        """Evaluation: in order. Training: a :class:`~lr_lightning.data.resumable.ResumableSampler`
        (order of epoch ``e`` fixed by ``seed`` and ``e``; exact mid-epoch resume)."""
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not created this split")
        sampler = None
        if train:
            keys = bool(getattr(dataset, "seeded_items", False))
            trainer = self.trainer
            rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
            sampler = ResumableSampler(len(dataset), self.seed, item_keys=keys, rank=rank, world_size=world)  # type: ignore[arg-type]
            pending = getattr(self, "_pending_train_order", None)
            if pending:
                sampler.load_state_dict(pending)
                self._pending_train_order = None
            self._train_sampler = sampler
        return ResumableDataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=train and len(sampler if sampler is not None else dataset) > batch_size,  # type: ignore[arg-type]
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    # -- checkpoints: the training order (exact mid-epoch resume) -------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: where the training is in its epoch's data order."""
        sampler = getattr(self, "_train_sampler", None)
        return {"train_order": sampler.state_dict()} if sampler is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Called by Lightning on resume, before the training loader exists: the next training
        loader continues the checkpoint's epoch where it stopped."""
        self._pending_train_order = state_dict.get("train_order")

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, False, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    # -- on-device batch processing ------------------------------------------------------------
    def augment_batch(self, hr: Tensor) -> Tensor:
        """Training-time augmentation of a float batch in [0, 1]; identity by default."""
        return hr

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        hr = batch["hr"]
        if hr.dtype == torch.uint8:
            hr = hr.float().div_(255.0)
        if self.trainer is not None and self.trainer.training:
            hr = self.augment_batch(hr)
        batch["hr"] = hr
        if self.degradation is not None and "lr" not in batch:
            batch["lr"] = self.degradation(hr)
        elif "lr" in batch and batch["lr"].dtype == torch.uint8:
            batch["lr"] = batch["lr"].float().div_(255.0)
        return batch

    def check_divisible(self, size: tuple[int, int], what: str) -> None:
        """Raise if ``size`` does not divide by the degradation factor, naming the fix."""
        if self.degradation is None:
            return
        f = self.degradation.factor
        if size[0] % f or size[1] % f:
            raise ValueError(
                f"{what} is {size[1]}x{size[0]} (WxH), not divisible by the degradation factor "
                f"{f}; choose a factor that divides it or crop/resize the images to a multiple of {f}"
            )
