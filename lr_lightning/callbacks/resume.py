"""Exact resume: the random state a checkpoint needs beyond weights, optimiser and loop counters.

Lightning checkpoints hold the model, the optimisers, the schedulers, the loop progress and the
state of stateful training loaders (ours: :mod:`lr_lightning.data.resumable`, the data order).
:class:`ResumeState` adds every random state a method draws from, so that a run killed in the
middle of an epoch and resumed from its checkpoint ends with the same weights and metrics as
the run that was never stopped (on CPU; see ``docs/foundation.md`` for GPUs):

* the global RNGs: torch (CPU and every CUDA device), NumPy, Python's ``random``;
* every ``torch.Generator`` held as an attribute of the task, its sub-modules, the data module
  or its degradation (MAML's task generator, paper E's kernel generator, ...), by attribute path.

The states are captured when the checkpoint is written and put back at ``on_train_start`` of the
resumed fit (not when the checkpoint is read): what Lightning does in between (sanity
validation, creating the loader iterator) draws random numbers that the uninterrupted run did
not; ``on_train_start`` comes after those and before the first batch is transferred and augmented.
Every :class:`~lr_lightning.methods.base.BaseTask` adds this callback.

:class:`LastEveryNSteps` makes ``last.ckpt`` a mid-epoch checkpoint, so ``--ckpt_path last``
resumes close to where a run was killed.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lr_lightning.callbacks.test_keys import _batch_size

KEY = "lr_lightning_random_state"


def _generators(trainer: Trainer, pl_module: LightningModule) -> dict[str, torch.Generator]:
    """Every ``torch.Generator`` attribute of the task's modules and of the data module, by path."""
    found: dict[str, torch.Generator] = {}
    for name, module in pl_module.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, torch.Generator):
                found[f"model.{name + '.' if name else ''}{attr}"] = value
    dm = trainer.datamodule
    for owner, obj in (("data", dm), ("data.degradation", getattr(dm, "degradation", None))):
        if obj is not None and hasattr(obj, "__dict__"):
            for attr, value in vars(obj).items():
                if isinstance(value, torch.Generator):
                    found[f"{owner}.{attr}"] = value
    return found


def capture(trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
    """The random state now, in types ``torch.load(weights_only=True)`` accepts."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "python_gauss": random.getstate()[2],
        "generators": {k: g.get_state() for k, g in _generators(trainer, pl_module).items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(trainer: Trainer, pl_module: LightningModule, state: dict[str, Any]) -> None:
    """Put back a :func:`capture`; a generator that no longer exists (or a new one) is an error."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    py = state["python"]
    random.setstate((py[-1], tuple(py[:-1]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    gens = _generators(trainer, pl_module)
    saved = state["generators"]
    if set(gens) != set(saved):
        raise RuntimeError(
            f"the checkpoint's random generators {sorted(saved)} differ from this run's {sorted(gens)}; "
            "resume with the same config"
        )
    for k, g in gens.items():
        g.set_state(saved[k])


class ResumeState(Callback):
    """Saves the random state in every checkpoint and restores it when a resumed fit starts; counts
    the samples each training step takes from the :class:`~lr_lightning.data.resumable.ResumableSampler`
    (the data order's resume point)."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[KEY] = capture(trainer, pl_module)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get(KEY)

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        from lr_lightning.data.resumable import ResumableSampler

        sampler = getattr(trainer.train_dataloader, "sampler", None)
        if isinstance(sampler, ResumableSampler) and isinstance(batch, dict):  # the data order's resume point
            sampler.samples_used += _batch_size(batch)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after the sanity check and the loader iterator's creation, before the first batch is
        # transferred (the data module's on-device augmentation draws from the global RNG there)
        if self._pending is not None:
            restore(trainer, pl_module, self._pending)
            self._pending = None


class LastEveryNSteps(Callback):
    """Rewrite ``last.ckpt`` every ``every_n_train_steps`` optimiser steps (mid-epoch), through the
    task's :class:`~lr_lightning.callbacks.BestAndLastCheckpoint` (one writer of ``last.ckpt``,
    which Lightning runs after every other callback, so the checkpoint holds the step's updates of
    all of them, e.g. the EMA weights)::

        trainer:
          callbacks:
            - class_path: lr_lightning.callbacks.LastEveryNSteps
              init_args: {every_n_train_steps: 200}
    """

    def __init__(self, *, every_n_train_steps: int = 500) -> None:
        if every_n_train_steps < 1:
            raise ValueError(f"every_n_train_steps must be >= 1, got {every_n_train_steps}")
        self.every_n_train_steps = every_n_train_steps

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from lr_lightning.callbacks.checkpoint import BestAndLastCheckpoint

        writers = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, BestAndLastCheckpoint) and cb.save_last]
        if not writers:
            raise RuntimeError("LastEveryNSteps needs the BestAndLastCheckpoint every lr-lightning task adds")
        for cb in writers:
            cb.last_every_n_train_steps = self.every_n_train_steps
