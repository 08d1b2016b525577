"""Numerical faults: a training step whose loss (or gradient) is NaN / inf stops the run with a
message naming the step and the loss terms, or, when a config asks, has its update skipped.

Every :class:`~lr_lightning.methods.base.BaseTask` gets a ``NonFiniteGuard(action="stop")``
unless the trainer already has one, so a config changes the behaviour by adding its own::

    trainer:
      callbacks:
        - class_path: lr_lightning.callbacks.NonFiniteGuard
          init_args: {action: skip, max_consecutive_skips: 10}

Where it looks (Lightning hooks, so automatic and manual optimisation are both covered):

* ``on_before_backward``: the loss handed to ``backward`` / ``manual_backward``;
* ``on_before_optimizer_step``: every gradient (``check_gradients``), which catches an overflow
  that a finite loss can hide (e.g. ``sqrt`` at 0); not under fp16 mixed precision, whose
  ``GradScaler`` expects and skips inf gradients itself.

The terms a task logged this step (``train/...``, recorded by ``BaseTask.log``) are listed in the
message, the non-finite ones marked. ``skip`` drops the gradients of every parameter before the
optimiser step (optimisers skip parameters without a gradient, so weights and their moments stay
as they were) and logs the running count as ``train/nonfinite_skipped``; buffers changed by the
forward (BatchNorm running statistics) cannot be undone, so a non-finite buffer stops the run in
either mode. Updates made outside an optimiser (integer training, paper E) are not skipped:
with ``IntegerTrainingCallback`` use ``stop``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor


class NonFiniteLossError(FloatingPointError):
    """A training step produced a NaN / inf loss or gradient (raised by :class:`NonFiniteGuard`)."""


def _fmt(value: Any) -> str:
    v = float(value.detach().float().mean()) if isinstance(value, Tensor) else float(value)
    return f"{v:.6g}" + ("" if math.isfinite(v) else " (non-finite)")


def _finite(value: Any) -> bool:
    if isinstance(value, Tensor):
        return bool(torch.isfinite(value.detach()).all())
    return math.isfinite(float(value))


class NonFiniteGuard(Callback):
    """Stop on (``action="stop"``, default) or skip (``"skip"``) steps with a non-finite loss.

    Args:
        action: ``"stop"`` raises :class:`NonFiniteLossError`; ``"skip"`` drops that step's update.
        max_consecutive_skips: with ``skip``, stop anyway after this many non-finite steps in a
            row (the run has diverged rather than hit a bad batch).
        check_gradients: also check every gradient before the optimiser step.
    """

    def __init__(
        self,
        *,
        action: Literal["stop", "skip"] = "stop",
        max_consecutive_skips: int = 10,
        check_gradients: bool = True,
    ) -> None:
        if action not in ("stop", "skip"):
            raise ValueError(f"action must be 'stop' or 'skip', got {action!r}")
        if max_consecutive_skips < 1:
            raise ValueError(f"max_consecutive_skips must be >= 1, got {max_consecutive_skips}")
        self.action = action
        self.max_consecutive_skips = max_consecutive_skips
        self.check_gradients = check_gradients
        self.skipped = 0
        self.consecutive = 0
        self._fault: str | None = None

    # -- bookkeeping -------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._fault = None
        self._batch_idx = batch_idx
        terms = getattr(pl_module, "step_terms", None)
        if isinstance(terms, dict):
            terms.clear()

    def _where(self, trainer: Trainer) -> str:
        return (
            f"at global step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
            f"{getattr(self, '_batch_idx', '?')})"
        )

    def _terms(self, pl_module: LightningModule) -> str:
        terms = getattr(pl_module, "step_terms", None) or {}
        if not terms:
            return "no loss terms logged yet this step"
        return "loss terms logged this step: " + ", ".join(f"{k}={_fmt(v)}" for k, v in terms.items())

    def _fail(self, trainer: Trainer, msg: str) -> None:
        if self.action == "stop":
            raise NonFiniteLossError(msg + "; to skip such steps instead, add the callback "
                                     "lr_lightning.callbacks.NonFiniteGuard with action: skip")
        self._fault = self._fault or msg

    # -- checks ------------------------------------------------------------------------------
    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        if not _finite(loss):
            self._fail(trainer, f"non-finite loss {_fmt(loss)} handed to backward {self._where(trainer)}; "
                                f"{self._terms(pl_module)}")

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: torch.optim.Optimizer) -> None:
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if self._fault is None and self.check_gradients and scaler is None:  # fp16's GradScaler skips inf steps itself
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            if params:
                norms = torch._foreach_norm([p.grad for p in params])  # one reduction per tensor, one sync
                finite = torch.isfinite(torch.stack([n.float() for n in norms]))
                if not bool(finite.all()):
                    names = {id(p): n for n, p in pl_module.named_parameters()}
                    bad = [names.get(id(p), "?") for p, ok in zip(params, finite.tolist(), strict=True) if not ok]
                    self._fail(trainer, f"non-finite gradient of {', '.join(bad[:5])}"
                                        f"{' ...' if len(bad) > 5 else ''} {self._where(trainer)}; {self._terms(pl_module)}")
        if self._fault is not None:  # action == "skip"
            for group in optimizer.param_groups:
                for p in group["params"]:
                    p.grad = None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        buffers = [(n, b) for n, b in pl_module.named_buffers() if b.is_floating_point() and b.numel()]
        finite = torch.stack([torch.isfinite(b).all() for _, b in buffers]) if buffers else None
        if finite is not None and not bool(finite.all()):  # one device sync per step, not one per buffer
            bad_buffers = [n for (n, _), ok in zip(buffers, finite.tolist(), strict=True) if not ok]
            raise NonFiniteLossError(
                f"non-finite buffer(s) {', '.join(bad_buffers[:5])} after the step {self._where(trainer)} "
                f"(e.g. BatchNorm statistics of a NaN input); {self._terms(pl_module)}"
            )
        if self._fault is None:
            self.consecutive = 0
            return
        self.skipped += 1
        self.consecutive += 1
        pl_module.log("train/nonfinite_skipped", float(self.skipped), on_step=True, on_epoch=False, batch_size=1)
        if self.consecutive >= self.max_consecutive_skips:
            raise NonFiniteLossError(
                f"{self.consecutive} consecutive training steps were non-finite (limit "
                f"max_consecutive_skips={self.max_consecutive_skips}); the last: {self._fault}"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
        self.consecutive = int(state_dict.get("consecutive", 0))
