"""last.ckpt is the end of training even when the monitored metric stops improving."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lr_lightning.methods import BaseTask
from lr_lightning.methods.optim import OptimSpec


class _WorseEveryEpoch(BaseTask):
    monitor = "val/acc"
    mode = "max"

    def __init__(self) -> None:
        super().__init__(optim=OptimSpec(learning_rate=0.01), channels_last=False, modules={"net": nn.Linear(2, 1)})

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", -float(self.current_epoch), batch_size=len(batch[0]))  # best = epoch 0


def test_last_checkpoint_is_the_final_step(tmp_path: Path) -> None:
    loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4)
    trainer = pl.Trainer(
        max_epochs=3, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    trainer.fit(_WorseEveryEpoch(), loader, loader)
    cb = trainer.checkpoint_callback
    best = torch.load(cb.best_model_path, map_location="cpu", weights_only=True)
    last = torch.load(cb.last_model_path, map_location="cpu", weights_only=True)
    assert best["global_step"] == 2 and best["epoch"] == 0
    assert last["global_step"] == trainer.global_step == 6 and last["epoch"] == 2
