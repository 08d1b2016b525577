"""MAML inner loop on ``torch.func.functional_call`` (first and second order).

MAML (Finn et al., ICML 2017, ref. [5] of paper A) adapts the meta-parameters ``theta`` to a task
``T_i`` with ``n`` gradient steps on the task's support batch (MAML Eq. 1)::

    theta_i^(0) = theta,   theta_i^(j+1) = theta_i^(j) - alpha * grad L_support(theta_i^(j))

and meta-learns ``theta`` from the query loss after adaptation averaged over ``M`` tasks
(MAML Eq. 2-3; paper A Sec. 3: "from the averaged query loss over M meta-tasks, the base model
is updated")::

    theta <- theta - beta * grad_theta (1/M) sum_i L_query(theta_i^(n))

Second order differentiates through the inner gradients (``create_graph=True``); first order
(FOMAML) treats them as constants, so ``d theta_i^(n) / d theta = I``.

Everything here is model-agnostic: the fast weights are a ``{name: Tensor}`` dict run through
``torch.func.functional_call``; the task loss is a callback ``loss_fn(forward, batch)`` in which
``forward(*inputs)`` is the model with the current fast weights. Paper A's classifier and paper E's
SR network use the same function with different ``loss_fn``.

BatchNorm (``bn``), a documented choice:

* ``"transductive"`` (default, reference MAML): every forward normalises with the statistics of
  the batch it sees (support, query, and at evaluation the test batch); running statistics are
  never read nor written (the inner loop runs on a throwaway copy of the buffers).
* ``"running"``: forwards still normalise with batch statistics but update the running
  statistics in ``buffers`` in place, one momentum update per forward. During meta-training the
  module's own buffers are passed, so every inner step and every query forward updates them:
  exactly what a ``learn2learn`` clone does (it shares the buffers with the original). Evaluation
  then uses the running statistics (``model.eval()``). Adaptation at meta-test time works on a
  copy, so the meta-learned buffers stay untouched.

The meta-gradient is the same in both modes (training-mode BatchNorm uses batch statistics).
Per-step running statistics (MAML++'s "BNRS") are not implemented.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn
from torch.func import functional_call

BNMode = Literal["transductive", "running"]
BN_MODES: tuple[str, ...] = get_args(BNMode)

Forward = Callable[..., Any]
LossFn = Callable[[Forward, Any], Tensor]


def meta_parameters(model: nn.Module) -> dict[str, Tensor]:
    """The meta-learned parameters: ``{name: parameter}`` for every parameter with ``requires_grad``."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _check_bn(bn: str) -> None:
    if bn not in BN_MODES:
        raise ValueError(f"unknown BatchNorm mode {bn!r}; valid choices are: {', '.join(map(repr, BN_MODES))}")


def functional_forward(
    model: nn.Module, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor] | None = None
) -> Forward:
    """``forward(*args, **kwargs)`` running ``model`` with ``params`` (and ``buffers``) substituted.

    Names missing from ``params``/``buffers`` keep the module's own tensors (e.g. frozen layers).
    """

    def forward(*args: Any, **kwargs: Any) -> Any:
        tensors = dict(params) if buffers is None else {**buffers, **params}
        return functional_call(model, tensors, args, kwargs, strict=False)

    return forward


@contextmanager
def batch_norm_uses_batch_stats(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Temporarily put every BatchNorm layer of ``model`` in training mode (batch statistics).

    Used for transductive evaluation (``bn="transductive"``): the rest of the model keeps its mode
    (dropout stays off in eval). Running statistics are still updated by such forwards, so pass a
    throwaway copy of the buffers (as :func:`inner_loop` does).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    modes = [m.training for m in norms]
    try:
        if enabled:
            for m in norms:
                m.training = True
        yield
    finally:
        for m, mode in zip(norms, modes, strict=True):
            m.training = mode


@dataclass
class InnerLoopResult:
    """Adapted fast weights ``theta_i^(n)``, the buffers used, and the support loss of every step."""

    params: dict[str, Tensor]
    buffers: dict[str, Tensor]
    losses: list[Tensor] = field(default_factory=list)


def inner_loop(
    model: nn.Module,
    params: Mapping[str, Tensor],
    loss_fn: LossFn,
    batch: Any,
    steps: int,
    lr: float | Mapping[str, Tensor],
    *,
    first_order: bool = False,
    buffers: Mapping[str, Tensor] | None = None,
    bn: BNMode = "transductive",
    adapt: Collection[str] | None = None,
) -> InnerLoopResult:
    """Adapt ``params`` with ``steps`` plain SGD steps on ``loss_fn(forward, batch)`` (MAML Eq. 1).

    Args:
        model: any ``nn.Module``; only used through ``functional_call`` (its own tensors untouched,
            except the running statistics in ``buffers`` when ``bn="running"``).
        params: the starting fast weights, usually :func:`meta_parameters` (leaf tensors that
            receive the meta-gradient); tensors without ``requires_grad`` are kept fixed.
        loss_fn: ``loss_fn(forward, batch) -> scalar``; ``forward(*inputs)`` runs the model with the
            current fast weights.
        batch: the task's support batch, passed through to ``loss_fn``.
        steps: number of inner SGD steps ``n`` (0 returns ``params`` unchanged).
        lr: inner learning rate ``alpha``; or, Meta-SGD / MAML++ style, a ``{name: rates}`` dict
            of 1-D tensors (one learnable rate per parameter tensor and step: step ``j`` uses
            ``rates[min(j, len(rates) - 1)]``), which receive the meta-gradient too.
        first_order: FOMAML: do not differentiate through the inner gradients.
        buffers: buffers for ``functional_call``; default: the model's own. With
            ``bn="transductive"`` a copy is used; with ``bn="running"`` these tensors are updated
            in place by every training-mode forward.
        bn: BatchNorm handling, see the module docstring.
        adapt: names of the parameters the inner loop updates (ANIL: the head only; BN-only:
            the BatchNorm affine parameters); the others stay at their meta-learned value
            inside the loop (they still receive the outer gradient). Default: all trainable.

    Returns:
        :class:`InnerLoopResult` with the adapted weights (differentiable w.r.t. ``params`` when
        grad mode is on), the buffers to use with them, and the detached support losses.
    """
    _check_bn(bn)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    rates = lr if isinstance(lr, Mapping) else None
    if rates is None and not lr > 0:
        raise ValueError(f"inner learning rate must be > 0, got {lr!r}")
    if buffers is None:
        buffers = dict(model.named_buffers())
    if bn == "transductive":
        buffers = {n: b.clone() for n, b in buffers.items()}
    buffers = dict(buffers)
    fast = dict(params)
    trainable = [n for n, p in fast.items() if p.requires_grad and (adapt is None or n in adapt)]
    if adapt is not None and (unknown := sorted(set(adapt) - set(fast))):
        raise ValueError(f"adapt names parameters that are not in params: {unknown}")
    if steps and not trainable:
        raise ValueError("no parameter requires grad: nothing to adapt")
    if rates is not None and (missing := [n for n in trainable if n not in rates]):
        raise ValueError(f"per-parameter learning rates missing for {missing}")
    losses: list[Tensor] = []
    with torch.enable_grad():
        for step in range(steps):
            loss = loss_fn(functional_forward(model, fast, buffers), batch)
            if loss.ndim != 0:
                raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}")
            grads = torch.autograd.grad(
                loss,
                [fast[n] for n in trainable],
                create_graph=not first_order,
                allow_unused=True,
            )
            for n, g in zip(trainable, grads, strict=True):
                if g is not None:
                    alpha = lr if rates is None else rates[n][min(step, rates[n].numel() - 1)]
                    fast[n] = fast[n] - alpha * (g.detach() if first_order else g)
            losses.append(loss.detach())
    return InnerLoopResult(fast, buffers, losses)
