"""NonFiniteGuard: a NaN / inf loss or gradient stops the run naming the step and the terms, or
skips exactly that update when a config asks; every task has one by default."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch import Callback
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lr_lightning.callbacks import NonFiniteGuard, NonFiniteLossError
from lr_lightning.cli import main
from lr_lightning.methods import BaseTask
from lr_lightning.methods.optim import OptimSpec
from tests.conftest import REPO


class _TwoTerms(BaseTask):
    """loss = a + b; b is NaN at the global steps in ``bad`` (or its gradient, with ``grad_fault``)."""

    def __init__(self, bad: tuple[int, ...] = (), manual: bool = False, grad_fault: bool = False) -> None:
        super().__init__(optim=OptimSpec(name="adam", learning_rate=0.1), channels_last=False,
                         modules={"net": nn.Linear(3, 1)})
        self.bad, self.grad_fault = bad, grad_fault
        self.automatic_optimization = not manual

    def _loss(self, x: torch.Tensor) -> torch.Tensor:
        a = self.net(x).pow(2).mean()
        if self.global_step in self.bad and self.grad_fault:
            b = torch.sqrt((self.net.weight * 0.0).sum())  # finite value 0, gradient 0 * inf = nan
        elif self.global_step in self.bad:
            b = a * float("nan")
        else:
            b = a * 0.5
        self.log("train/loss_a", a.detach(), batch_size=len(x))
        self.log("train/loss_b", b.detach(), batch_size=len(x))
        return a + b

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch[0])
        if self.automatic_optimization:
            return loss
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        return loss.detach()


class _Weights(Callback):
    """Parameters after every step."""

    def __init__(self) -> None:
        self.after: list[torch.Tensor] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.after.append(pl_module.net.weight.detach().clone())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after.append(pl_module.net.weight.detach().clone())


def _fit(task: BaseTask, tmp_path: Path, callbacks: list[Callback], steps: int = 6) -> pl.Trainer:
    torch.manual_seed(0)
    loader = DataLoader(TensorDataset(torch.randn(4 * steps, 3)), batch_size=4)
    trainer = pl.Trainer(max_epochs=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, callbacks=callbacks)
    trainer.fit(task, loader)
    return trainer


@pytest.mark.parametrize("manual", [False, True])
def test_default_guard_stops_naming_step_and_term(tmp_path: Path, manual: bool) -> None:
    with pytest.raises(NonFiniteLossError, match=r"global step 2 .*batch 2.*train/loss_b=nan \(non-finite\)"):
        _fit(_TwoTerms(bad=(2,), manual=manual), tmp_path, [])


def test_gradient_fault_under_a_finite_loss_is_caught(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradient of net.weight at global step 1"):
        _fit(_TwoTerms(bad=(1,), grad_fault=True), tmp_path, [])


@pytest.mark.parametrize("manual", [False, True])
def test_skip_leaves_exactly_the_bad_updates_out(tmp_path: Path, manual: bool) -> None:
    weights = _Weights()
    guard = NonFiniteGuard(action="skip")
    trainer = _fit(_TwoTerms(bad=(1, 4), manual=manual), tmp_path, [guard, weights])
    w = weights.after
    assert len(w) == 7 and guard.skipped == 2
    for step in range(6):  # w[step + 1] is after step `step`
        changed = not torch.equal(w[step + 1], w[step])
        assert changed == (step not in (1, 4)), step
    assert all(torch.isfinite(x).all() for x in w)
    assert float(trainer.callback_metrics["train/nonfinite_skipped"]) == 2.0
    # the config's guard replaced the default one (no second guard that would stop)
    assert sum(isinstance(c, NonFiniteGuard) for c in trainer.callbacks) == 1


def test_skip_gives_up_after_consecutive_faults(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError, match="3 consecutive training steps"):
        _fit(_TwoTerms(bad=(2, 3, 4)), tmp_path, [NonFiniteGuard(action="skip", max_consecutive_skips=3)])


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="action"):
        NonFiniteGuard(action="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_consecutive_skips"):
        NonFiniteGuard(max_consecutive_skips=0)


class InjectNaN(Callback):
    """Puts a NaN into the first image of the batch at ``step`` (a real method, a real config)."""

    def __init__(self, step: int = 1) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            for key in ("hr", "lr"):
                if key in batch:
                    batch[key][0, 0, 0, 0] = float("nan")


def test_a_real_method_stops_with_its_terms(tiny_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [
        "fit", "--config", str(REPO / "configs" / "darionet" / "darionet_cifar10_x4.yaml"),
        f"--data.init_args.root={tiny_cifar}", "--data.init_args.batch_size=8", "--data.init_args.val_fraction=0.25",
        "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false", "--trainer.num_sanity_val_steps=0",
        "--trainer.callbacks+=tests.callbacks.test_finite.InjectNaN", "--trainer.callbacks.step=1",
    ]
    with pytest.raises(NonFiniteLossError, match=r"global step 1 .*train/loss_logit=nan \(non-finite\).*train/loss=nan"):
        main(args)
