"""``GradientPruningCallback``: cost-constrained gradient pruning (paper E, Sec. IV.B, Alg. 1 l. 11-16).

Per-layer output-channel gradient masks ``m^(l)`` (Eq. 6) are learned on the first
``mask_batches`` training batches with the parameters frozen (Alg. 1: only the masks are
trained): per-filter L2 norms of the weight gradient are summed over those batches, L2-normalised
per layer, sorted and accumulated (Eq. 7); the number of kept filters
``c^(l) in {8, 16, ..., 8 floor(c_out/8)}`` maximises the importance subject to the Eq. 9 cost
budget ``tau`` (Eq. 8), solved exactly by meet in the middle
(:func:`~lr_lightning.callbacks.cost.solve_masks`). The last layer is never pruned.

From then on the masked filters' weight gradients are **not computed**: the layers' backward
slices the kept channels (:class:`~lr_lightning.quant.GradMaskedConv2d` for float nets, built into
the integer layers), and masked weights are left unchanged (integer nets: Eq. 15 touches only
kept rows; float nets: masked rows are restored after the optimiser step, so momentum or weight
decay cannot move them either).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor, nn

from lr_lightning.callbacks._target import target_network
from lr_lightning.callbacks.cost import (
    chain_cost,
    channel_choices,
    importance_values,
    solve_masks,
    uniform_kept,
)
from lr_lightning.quant import (
    GradMaskedConv2d,
    GradMaskedLinear,
    IntConv2d,
    IntegerLayer,
    IntLinear,
)

PRUNABLE = (GradMaskedConv2d, GradMaskedLinear, IntConv2d, IntLinear)


def prunable_layers(net: nn.Module) -> list[nn.Module]:
    """Conv/Linear layers (float masked or integer) in registration order."""
    return [m for m in net.modules() if isinstance(m, PRUNABLE)]


def _out_channels(m: nn.Module) -> int:
    return m.out_channels if hasattr(m, "out_channels") else m.out_features


def _in_channels(m: nn.Module) -> int:
    return m.in_channels if hasattr(m, "in_channels") else m.in_features


def _weight_grad(m: nn.Module) -> Tensor | None:
    if isinstance(m, IntegerLayer):
        return m.weight_grad_float()
    return None if m.weight.grad is None else m.weight.grad.detach()


class GradientPruningCallback(Callback):
    """Learn cost-constrained gradient masks (Eq. 7-9), then train with sliced backward (Eq. 6).

    Args:
        prune_ratio: the budget ``tau`` is the Eq. 9 cost of pruning this fraction of the filters of
            every prunable layer uniformly; the knapsack then redistributes the kept channels.
        cost_budget: if given, ``tau`` as a fraction of the unpruned Eq. 9 cost (overrides
            ``prune_ratio``).
        mask_batches: training batches used to learn the masks (parameters frozen during them).
        propagate: ``pruned`` (paper, Eq. 9: masked channels' gradients are not propagated either)
            or ``full`` (exact activation gradients; only weight gradients are sliced).
        objective: ``eq7`` (value of keeping ``c`` filters = ``I_(c)``) or ``eq8_literal``
            (Eq. 8's double sum ``sum_{s<=c} I_(s)``).
        module: attribute of the LightningModule holding the network.
    """

    def __init__(
        self,
        prune_ratio: float = 0.5,
        cost_budget: float | None = None,
        mask_batches: int = 10,
        propagate: Literal["pruned", "full"] = "pruned",
        objective: Literal["eq7", "eq8_literal"] = "eq7",
        module: str = "net",
    ) -> None:
        if not 0.0 <= prune_ratio < 1.0:
            raise ValueError(f"prune_ratio must be in [0, 1), got {prune_ratio}")
        if mask_batches < 1:
            raise ValueError("mask_batches must be >= 1 (masks are learned from gradients)")
        self.prune_ratio, self.cost_budget, self.mask_batches = prune_ratio, cost_budget, mask_batches
        self.propagate, self.objective, self.module = propagate, objective, module
        self.layers: list[nn.Module] = []
        self.all_layers: list[nn.Module] = []
        self.kept: list[int] | None = None
        self.summary: dict[str, Any] = {}
        self._norms: list[np.ndarray] = []
        self._saved: list[tuple[nn.Module, Tensor, Tensor, Tensor | None]] = []

    # -- set-up ---------------------------------------------------------------------------------
    def net(self, pl_module: LightningModule) -> nn.Module:
        return target_network(pl_module, self.module)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        for m in self.net(pl_module).modules():  # float layers get the sliced backward (same Parameters)
            if type(m) is nn.Conv2d:
                GradMaskedConv2d.from_conv(m)
            elif type(m) is nn.Linear:
                GradMaskedLinear.from_linear(m)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        layers = prunable_layers(self.net(pl_module))
        if len(layers) < 2:
            raise ValueError("gradient pruning needs at least two Conv2d/Linear layers (the last is never pruned)")
        self.all_layers = layers
        self.layers = layers[:-1]  # the last layer is never pruned
        self._norms = [np.zeros(_out_channels(m)) for m in self.layers]
        for m in layers:
            m.propagate = self.propagate

    def in_mask_phase(self, trainer: Trainer) -> bool:
        return self.kept is None and trainer.global_step < self.mask_batches

    # -- mask learning (Alg. 1, lines 11-16) --------------------------------------------------------
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        frozen = self.in_mask_phase(trainer)
        for m in self.net(pl_module).modules():
            if isinstance(m, IntegerLayer):
                m.frozen = frozen

    def on_after_backward(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.in_mask_phase(trainer):
            return
        for i, m in enumerate(self.layers):
            g = _weight_grad(m)
            if g is not None:
                self._norms[i] += g.flatten(1).norm(dim=1).double().cpu().numpy()

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer: Any) -> None:
        if self.in_mask_phase(trainer):
            for p in pl_module.parameters():  # parameters frozen while the masks are learned
                p.grad = None
            return
        self._saved = []
        if self.kept is None:
            return
        with torch.no_grad():
            for m in self.layers:
                if isinstance(m, IntegerLayer) or m.grad_keep is None:
                    continue
                mask = torch.ones(_out_channels(m), dtype=torch.bool, device=m.weight.device)
                mask[m.grad_keep] = False
                b = m.bias[mask].clone() if m.bias is not None else None
                self._saved.append((m, mask, m.weight[mask].clone(), b))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        with torch.no_grad():
            for m, mask, w, b in self._saved:  # masked weights stay unchanged (float optimisers)
                m.weight[mask] = w
                if b is not None:
                    m.bias[mask] = b
        self._saved = []
        if self.kept is None and trainer.global_step >= self.mask_batches:
            self.set_masks(self.learn_masks())
            for key, value in self.summary.items():
                if isinstance(value, float):
                    pl_module.log(f"prune/{key}", value, batch_size=1)

    def learn_masks(self) -> list[Tensor]:
        """Solve Eq. 8 from the accumulated importances; returns the kept indices per layer."""
        choices = [channel_choices(_out_channels(m)) for m in self.layers]
        c_in = [_in_channels(m) for m in self.layers]
        values = [importance_values(n, ch, self.objective) for n, ch in zip(self._norms, choices, strict=True)]
        full = [_out_channels(m) for m in self.layers]
        if self.cost_budget is not None:
            budget = self.cost_budget * chain_cost(full, c_in)
        else:
            budget = chain_cost([uniform_kept(c, self.prune_ratio) for c in full], c_in)
        kept, value, cost = solve_masks(values, choices, c_in, budget)
        self.kept = kept
        self.summary = {
            "budget": float(budget),
            "cost": float(cost),
            "cost_fraction": float(cost / chain_cost(full, c_in)),
            "filters_pruned": float(1 - sum(kept) / sum(full)),
            "kept": kept,
        }
        order = [np.argsort(-n, kind="stable") for n in self._norms]
        return [torch.as_tensor(np.sort(o[:c]), dtype=torch.long) for o, c in zip(order, kept, strict=True)]

    def set_masks(self, keep: list[Tensor]) -> None:
        """Install kept-channel indices (and, for ``propagate='pruned'``, the previous layer's
        kept channels as the next conv's ``grad_in_keep``)."""
        for m, k in zip(self.layers, keep, strict=True):
            m.grad_keep = k.to(m.weight.device) if len(k) < _out_channels(m) else None
            m.frozen = False
        if self.propagate != "pruned":
            return
        for prev, cur in zip(self.all_layers[:-1], self.all_layers[1:], strict=True):
            if isinstance(cur, (nn.Conv2d, IntConv2d)) and isinstance(prev, (nn.Conv2d, IntConv2d)):
                if _in_channels(cur) == _out_channels(prev):
                    cur.grad_in_keep = prev.grad_keep

