"""WarmupEMA: the averaged weights against an independent recursion, and no averaging before
its start step (validation, checkpoint and the end of training use the raw weights)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lr_lightning.callbacks import WarmupEMA
from lr_lightning.callbacks.ema import ema_decay


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(3, 2)
        self.raw: list[Tensor] = []  # weights after every optimizer step
        self.val_weights: list[Tensor] = []

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def on_train_batch_end(self, outputs: object, batch: object, batch_idx: int) -> None:
        self.raw.append(self.net.weight.detach().clone())

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        if batch_idx == 0:
            self.val_weights.append(self.net.weight.detach().clone())
        self.log("val/loss", nn.functional.mse_loss(self.net(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.2)


def _fit(tmp_path: Path, ema: WarmupEMA, steps: int, val_every: int, checkpoint: pl.Callback | None = None) -> tuple[_Tiny, pl.Trainer]:
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(64, 3, generator=g), torch.randn(64, 2, generator=g))
    model = _Tiny()
    trainer = pl.Trainer(max_steps=steps, callbacks=[ema, *([checkpoint] if checkpoint else [])], logger=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, val_check_interval=val_every, check_val_every_n_epoch=None, limit_val_batches=1,
                         accelerator="cpu", default_root_dir=tmp_path, enable_checkpointing=checkpoint is not None)
    trainer.fit(model, DataLoader(data, batch_size=4, shuffle=False), DataLoader(data, batch_size=8))
    return model, trainer


def test_decay_schedule() -> None:
    assert ema_decay(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay(0.999, 100) == pytest.approx(101 / 110)
    assert ema_decay(0.999, 10**6) == 0.999
    assert ema_decay(0.999, 1, warmup=False) == 0.999


@pytest.mark.parametrize("start_step", [0, 5])
def test_average_matches_independent_recursion(tmp_path: Path, start_step: int) -> None:
    decay, steps = 0.9, 12
    model, _ = _fit(tmp_path, WarmupEMA(decay=decay, start_step=start_step), steps, val_every=100)
    # independent: ema = w_start; then ema <- d_n ema + (1 - d_n) w with d_n = min(d, (1+n)/(10+n))
    ema = model.raw[start_step].clone()
    for n, w in enumerate(model.raw[start_step + 1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        ema = d * ema + (1 - d) * w
    torch.testing.assert_close(model.net.weight.detach(), ema, rtol=0, atol=1e-6)  # the average is copied in at the end
    assert not torch.allclose(ema, model.raw[-1])


def test_inert_before_start_step(tmp_path: Path) -> None:
    """Before its first update the callback swaps nothing in: validation and the end of training
    use the raw weights (Lightning's EMAWeightAveraging would hand over its copy of the initial
    weights), and a checkpoint holds the raw weights."""
    ema = WarmupEMA(decay=0.999, start_step=1000)
    model, trainer = _fit(tmp_path, ema, steps=6, val_every=3)
    assert ema.num_updates == 0 and not ema.started
    torch.testing.assert_close(model.val_weights[0], model.raw[2], rtol=0, atol=0)  # validation after step 3
    torch.testing.assert_close(model.net.weight.detach(), model.raw[-1], rtol=0, atol=0)
    ckpt = tmp_path / "x.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)
    torch.testing.assert_close(state["state_dict"]["net.weight"], model.raw[-1], rtol=0, atol=0)
    assert "current_model_state" not in state


def test_validation_uses_average_once_started(tmp_path: Path) -> None:
    ema = WarmupEMA(decay=0.9, start_step=0)
    model, _ = _fit(tmp_path, ema, steps=6, val_every=3)
    assert ema.num_updates == 6
    assert not torch.allclose(model.val_weights[0], model.raw[2])  # the average, not the raw weights


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="decay"):
        WarmupEMA(decay=1.5)
    with pytest.raises(ValueError, match="start_step"):
        WarmupEMA(start_step=-1)


def test_test_after_fit_evaluates_the_checkpoint_average(tmp_path: Path) -> None:
    """The same callback instance still attached after ``fit``: ``test(ckpt_path=...)`` runs the
    checkpoint's averaged weights, not the raw ones Lightning's WeightAveraging would reload."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    ema = WarmupEMA(decay=0.9)
    saver = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=6, save_top_k=-1)  # at the last step, before on_train_end
    model, trainer = _fit(tmp_path, ema, steps=6, val_every=100, checkpoint=saver)
    ckpt = next((tmp_path / "ck").glob("*.ckpt"))
    state = torch.load(ckpt, weights_only=True)
    average, raw = state["state_dict"]["net.weight"], state["current_model_state"]["net.weight"]
    assert not torch.allclose(average, raw)
    torch.testing.assert_close(raw, model.raw[-1], rtol=0, atol=0)
    seen: list[Tensor] = []
    model.test_step = lambda batch, *_: seen.append(model.net.weight.detach().clone())  # type: ignore[method-assign]
    g = torch.Generator().manual_seed(2)
    trainer.test(model, DataLoader(TensorDataset(torch.randn(8, 3, generator=g)), batch_size=8), ckpt_path=ckpt, verbose=False)
    torch.testing.assert_close(seen[0], average, rtol=0, atol=0)
