"""Data order that a checkpoint can resume in the middle of an epoch, exactly.

Lightning saves and restores the state of any training loader with ``state_dict`` /
``load_state_dict`` (its ``_Stateful`` protocol). :class:`ResumableSampler` makes the order of
epoch ``e`` a pure function of ``(seed, e)`` (not of the global RNG), and counts the samples the
*training* has used (:class:`~lr_lightning.callbacks.ResumeState` counts them at every
``on_train_batch_start``, after Lightning's one-batch prefetch, so the count is what was trained
on, not what was fetched). On resume the
epoch's permutation is rebuilt and the used samples are skipped; nothing is decoded twice.

Datasets whose items are random (random crops of SR patches, torchvision transforms of image
folders) set ``seeded_items = True``: the sampler then yields *item keys* ``epoch * n + i`` and the
dataset seeds each item from its key (:func:`item_seed`), so an item is the same whether it is
drawn before or after a resume, and whatever the number of workers.

Written here rather than taken from ``torchdata.stateful_dataloader``: that loader's state counts
fetched batches (prefetch included) and knows nothing of per-item randomness; ours is 60 lines.
Under DDP the sampler shards the epoch's order itself (it is a ``DistributedSampler``, so
Lightning does not wrap it and re-shuffle): rank ``r`` of ``W`` takes positions ``r, r + W, ...``,
so the ranks' batches of size ``B`` together are exactly the single-process batch of size
``W * B`` (the last ``n mod W`` samples of each epoch are left out, as ``drop_last``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler


def item_seed(seed: int, key: int) -> int:
    """A 63-bit seed for item ``key`` of a data set seeded with ``seed`` (splitmix64-style mix)."""
    z = (seed * 0x9E3779B97F4A7C15 + key * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z ^= z >> 31
    z = (z * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 29)) & 0x7FFFFFFFFFFFFFFF


class ResumableSampler(DistributedSampler):
    """Shuffled indices of ``range(n)``, one seeded permutation per epoch, resumable mid-epoch,
    sharded over ``world_size`` ranks.

    Args:
        n: data set length.
        seed: the permutation of epoch ``e`` is ``randperm(n)`` from ``item_seed(seed, e)``.
        item_keys: yield ``epoch * n + i`` instead of ``i`` (for ``seeded_items`` data sets).
        rank / world_size: this process's share (``1`` process: everything).
    """

    def __init__(self, n: int, seed: int, item_keys: bool = False, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(range(n), num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.n, self.seed, self.item_keys = n, seed, item_keys
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.samples_used = 0  # samples of the current epoch this rank's training has consumed
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch."""
        if epoch != self.epoch:
            self.epoch, self.samples_used, self._skip = epoch, 0, 0

    def __len__(self) -> int:
        return self.n // self.world_size

    def __iter__(self) -> Iterator[int]:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(item_seed(self.seed, self.epoch)))
        perm = perm[self.rank : len(self) * self.world_size : self.world_size]
        start, self._skip = self._skip, 0
        self.samples_used = start
        offset = self.epoch * self.n if self.item_keys else 0
        for i in perm[start:].tolist():
            yield offset + i

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "samples_used": self.samples_used, "seed": self.seed, "n": self.n,
                "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state.get("n", self.n)) != self.n or int(state.get("seed", self.seed)) != self.seed:
            raise ValueError(
                f"the checkpoint's training order is for {state.get('n')} samples with seed {state.get('seed')}, "
                f"this data module has {self.n} samples with seed {self.seed}; resume with the same data and seed"
            )
        self.epoch = int(state["epoch"])
        if int(state.get("world_size", 1)) == self.world_size:  # another sharding restarts the epoch
            self.samples_used = self._skip = int(state["samples_used"])


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` that tells Lightning it resumes mid-epoch (its ``_Stateful`` protocol, so no
    "not resumable" warning). The position itself is restored once, by the data module's
    ``load_state_dict`` before the loader exists (``LRDataModule``): Lightning's own loader-state
    reload is skipped whenever ``configure_optimizers`` estimated the stepping batches, so it
    cannot be the mechanism, and restoring twice would be two writers of one state."""

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict() if isinstance(self.sampler, ResumableSampler) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to do: see the class docstring."""
