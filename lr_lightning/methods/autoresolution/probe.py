"""Linear probe of a frozen image tower: the standard check of a self-supervised representation,
and the head-only phase of paper D Sec. 3.3 solved to convergence.

The paper trains only the softmax layer for 10K steps before fine-tuning, "to prevent its random
initialization from destroying the learned initialization". With the Sec. 3.1 recipe (RMSprop,
epsilon 1.0 inside the root) a step is about ``lr * g``, so 150 steps at 0.003 left the head near
random (20.9 % validation accuracy, issue 16). The softmax layer on frozen features is a convex
problem: :func:`fit_linear_probe` solves it with full-batch L-BFGS (``torch.optim.LBFGS``) on
standardised features, the L2 weight chosen on validation, and folds the standardisation back
into a plain ``nn.Linear`` on the raw embedding. The multinomial logistic regression itself is
written here in a few lines (torch has no ready one; scikit-learn's would be an extra dependency
for the same optimum).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F


@torch.no_grad()
def extract_features(
    embed: Callable[[Tensor], Tensor], batches: Iterable[dict[str, Any]], key: str, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """``(features (N, D) float32 on CPU, labels (N,))`` of ``embed(batch[key])`` over ``batches``."""
    feats, labels = [], []
    for batch in batches:
        feats.append(embed(batch[key].to(device)).float().cpu())
        labels.append(batch["label"].cpu())
    if not feats:
        raise ValueError("extract_features got no batches")
    return torch.cat(feats), torch.cat(labels)


def _fit(x: Tensor, y: Tensor, num_classes: int, weight_decay: float, max_iter: int) -> tuple[nn.Linear, float]:
    lin = nn.Linear(x.shape[1], num_classes).double()
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(lin(x), y) + 0.5 * weight_decay * lin.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    closure()  # gradient at the solution (convergence check)
    grad = max(float(p.grad.abs().max()) for p in lin.parameters())
    return lin, grad


def fit_linear_probe(
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    num_classes: int,
    weight_decays: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0),
    max_iter: int = 200,
) -> tuple[nn.Linear, dict[str, float]]:
    """Multinomial logistic regression on frozen features (float64, L-BFGS), one fit per L2
    weight, the one with the best validation accuracy kept.

    Returns ``(linear, info)``: ``linear`` maps the *raw* features (standardisation folded in:
    ``W' = W / s``, ``b' = b - W' m``), float32; ``info`` has ``weight_decay``, ``train_acc`` and
    ``val_acc`` (percent) of the chosen fit, ``val_acc_<wd>`` of every fit, and ``grad_max_abs``,
    the largest gradient entry of the chosen fit's objective at its solution (about 0: converged).
    """
    (xtr, ytr), (xva, yva) = train, val
    if xtr.shape[0] == 0 or xva.shape[0] == 0:
        raise ValueError("the linear probe needs training and validation features")
    mean = xtr.double().mean(0)
    std = xtr.double().std(0).clamp_min(1e-6)
    ztr, zva = (xtr.double() - mean) / std, (xva.double() - mean) / std
    best: tuple[float, float, nn.Linear, float] | None = None
    info: dict[str, float] = {}
    for wd in weight_decays:
        lin, grad = _fit(ztr, ytr, num_classes, wd, max_iter)
        with torch.no_grad():
            acc = 100 * float((lin(zva).argmax(1) == yva).double().mean())
        info[f"val_acc_{wd:g}"] = acc
        if best is None or acc > best[0]:
            best = (acc, wd, lin, grad)
    assert best is not None
    acc, wd, lin, grad = best
    out = nn.Linear(xtr.shape[1], num_classes)
    with torch.no_grad():
        w = lin.weight / std
        out.weight.copy_(w.float())
        out.bias.copy_((lin.bias - w @ mean).float())
        info["train_acc"] = 100 * float((out(xtr.float()).argmax(1) == ytr).double().mean())
    info.update(weight_decay=wd, val_acc=acc, grad_max_abs=grad)
    return out, info


@torch.no_grad()
def probe_accuracy(linear: nn.Linear, features: Tensor, labels: Tensor) -> float:
    """Accuracy (%) of ``linear`` on raw ``features``."""
    return 100 * float((linear(features).argmax(1) == labels).double().mean())
