"""Meta-test protocol of paper A: adapt to an unseen degradation from k labelled LR examples.

For a target degradation (one not in the meta-training task space, e.g. bicubic, the input of
paper A's validation, Sec. 4.5), take ``k`` labelled images from the *training* split, degrade
them, fine-tune ``n`` plain SGD steps at ``lr`` on all ``k`` at once (the inner loop of
:mod:`lr_lightning.meta`, MAML Eq. 1, without meta-gradient), then measure the accuracy on the
whole test set under the same degradation, before and after.

The functions work for any classifier ``model(x) -> logits`` taking LR images in [0, 1] (the
MAML module, :class:`~lr_lightning.methods.ImageClassifier`, an SR + HR-CNN pipeline...): the
parameters with ``requires_grad`` are fine-tuned (frozen parts, like a frozen SR net, stay fixed)
on copies, so the model's own weights and buffers are never modified.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from lr_lightning.degrade import Degradation
from lr_lightning.meta import (
    BNMode,
    InnerLoopResult,
    batch_norm_uses_batch_stats,
    functional_forward,
    inner_loop,
)


def _to_float(hr: Tensor) -> Tensor:
    return hr.float().div(255.0) if hr.dtype == torch.uint8 else hr


def sample_support(dataset: Dataset, k: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``k`` distinct labelled HR images (float in [0, 1], labels) drawn uniformly from ``dataset``.

    ``dataset`` yields ``{"hr": uint8 or float [3, H, W], "label": int}`` (the data modules'
    ``train_set``); pass the training split, never the test split.
    """
    n = len(dataset)  # type: ignore[arg-type]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in 1..{n} (size of the support pool), got {k!r}")
    idx = torch.randperm(n, generator=generator)[:k].tolist()
    items = [dataset[i] for i in idx]
    hr = torch.stack([_to_float(torch.as_tensor(it["hr"])) for it in items])
    y = torch.stack([torch.as_tensor(it["label"]) for it in items]).long()
    return hr, y


def adapt_classifier(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    steps: int,
    lr: float | Mapping[str, Tensor],
    bn: BNMode = "transductive",
    adapt: Collection[str] | None = None,
) -> InnerLoopResult:
    """Fine-tune copies of ``model``'s trainable parameters for ``steps`` SGD steps on ``(x, y)``.

    ``adapt`` restricts the update to some parameter names (ANIL: the head; BN-only), ``lr`` may
    be per-parameter per-step rates (Meta-SGD / MAML++, see :func:`~lr_lightning.meta.inner_loop`).

    Runs in training mode (batch statistics; with ``bn="running"`` the copied running statistics
    are updated as ordinary fine-tuning would), restores the model's mode, returns the adapted
    parameters and buffers.
    """
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    was_training = model.training
    model.train()
    try:
        return inner_loop(
            model, params, lambda fwd, b: F.cross_entropy(fwd(b[0]), b[1]), (x, y), steps, lr,
            first_order=True, buffers=buffers, bn=bn, adapt=adapt,
        )
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    degradation: Degradation | None,
    params: dict[str, Tensor] | None = None,
    buffers: dict[str, Tensor] | None = None,
    bn: BNMode = "transductive",
) -> tuple[float, float]:
    """(accuracy %, mean cross-entropy) of ``model`` (with ``params``/``buffers`` if given) over
    ``(hr, label)`` batches, each degraded by ``degradation``.

    ``bn="transductive"`` normalises each test batch with its own statistics (reference MAML), so
    the batches must be class-mixed (shuffle a class-ordered test set first) and large enough;
    ``"running"`` uses the running statistics (ordinary eval mode).
    """
    was_training = model.training
    model.eval()
    buffers = {n: b.clone() for n, b in (buffers or dict(model.named_buffers())).items()}
    fwd = functional_forward(model, params or {}, buffers)
    correct, total, loss_sum = 0, 0, 0.0
    try:
        with batch_norm_uses_batch_stats(model, enabled=bn == "transductive"):
            for hr, y in batches:
                hr = _to_float(hr)
                x = degradation(hr) if degradation is not None else hr
                logits = fwd(x).float()
                loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(-1) == y).sum())
                total += y.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("no evaluation batches")
    return 100.0 * correct / total, loss_sum / total


@dataclass
class AdaptationResult:
    """One row of the meta-test table."""

    target: str
    k: int
    n: int
    acc_before: float
    acc_after: float
    loss_before: float
    loss_after: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def adapt_and_evaluate(
    model: nn.Module,
    train_set: Dataset,
    test_batches: Iterable[tuple[Tensor, Tensor]],
    target: Degradation,
    k: int = 32,
    steps: int = 5,
    lr: float = 0.01,
    bn: BNMode = "transductive",
    seed: int = 0,
    device: torch.device | str | None = None,
) -> AdaptationResult:
    """The whole protocol for one target: sample ``k`` from ``train_set``, adapt ``steps`` SGD
    steps at ``lr``, evaluate on ``test_batches`` (re-iterated twice: pass a list or a loader)
    before and after. ``model``'s weights are not modified."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    hr, y = sample_support(train_set, k, torch.Generator().manual_seed(seed))
    hr, y = hr.to(device), y.to(device)
    batches = [(h.to(device), t.to(device)) for h, t in test_batches] if not isinstance(test_batches, list) else test_batches
    acc0, loss0 = evaluate_classifier(model, batches, target, bn=bn)
    res = adapt_classifier(model, target(hr), y, steps, lr, bn=bn)
    acc1, loss1 = evaluate_classifier(model, batches, target, res.params, res.buffers, bn=bn)
    return AdaptationResult(target.name, k, steps, acc0, acc1, loss0, loss1)
