"""The reinforcement-learning pieces of PatchDrop (paper C, Sec. 4.2 and 5.1).

* Eq. 5: ``pi(a | x_l) = prod_p s_p^{a_p} (1 - s_p)^{1 - a_p}`` (independent Bernoullis);
* Eq. 11: exploration bound ``s_p <- alpha s_p + (1 - alpha)(1 - s_p)``;
* reward (Sec. 5.1): ``R = 1 - (|a|_1 / P)^2`` if the prediction is correct, else ``-sigma``;
* Eq. 10: self-critical advantage ``A = R(a, a_2) - R(a_hat, a_hat_2)`` with the greedy action
  ``a_hat_p = [s_p > 0.5]``;
* Eq. 9: the policy loss ``-A sum_p log(s_p a_p + (1 - s_p)(1 - a_p))`` (averaged over the batch);
* Eq. 7: fusion of the HR and LR streams.

Pure tensor functions, so they are tested against hand-computed values.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

FusionMode = Literal["paper", "logit_sum"]


def bound_probs(probs: Tensor, alpha: float) -> Tensor:
    """Eq. 11: ``alpha s + (1 - alpha)(1 - s)``; keeps every probability in ``[1 - alpha, alpha]``.
    ``alpha`` must be in [0.5, 1]: below 0.5 the bound would invert the policy (sample against
    its own greedy action)."""
    if not 0.5 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0.5, 1] (Eq. 11; below 0.5 the bound inverts the policy), got {alpha}")
    return alpha * probs + (1.0 - alpha) * (1.0 - probs)


def linear_alpha(progress: float, start: float = 0.7, end: float = 0.95) -> float:
    """Exploration parameter scheduled linearly from ``start`` to ``end`` over training (Sec. 5.1;
    ``progress`` in [0, 1], clipped)."""
    t = min(max(progress, 0.0), 1.0)
    return start + (end - start) * t


def soft_bound(scores: Tensor, bound: float | None) -> Tensor:
    """Smooth logit clipping ``bound * tanh(scores / bound)`` (not in the paper; an option against
    saturation): the policy's probabilities stay in ``[sigmoid(-bound), sigmoid(bound)]``, so
    Eq. 9's gradient with respect to the bounded logit, which scales with ``s (1 - s)``, keeps
    at least ``sigmoid(b) (1 - sigmoid(b))``. Unlike a hard clamp (zero gradient past the bound,
    a logit stuck there for good) the raw logit keeps a gradient ``sech^2(z / b)``; it decays
    once ``|z|`` is several bounds large, so this slows saturation rather than forbidding it (the
    entropy bonus is the restoring force). ``None`` returns the scores unchanged."""
    if bound is None:
        return scores
    if bound <= 0:
        raise ValueError(f"the logit bound must be positive, got {bound}")
    return bound * torch.tanh(scores / bound)


def greedy_actions(probs: Tensor) -> Tensor:
    """The self-critical baseline action: ``a_hat_p = 1`` iff ``s_p > 0.5`` (Sec. 4.2)."""
    return (probs > 0.5).to(probs.dtype)


def reward(actions: Tensor, correct: Tensor, sigma: float) -> Tensor:
    """Sec. 5.1: ``1 - (|a|_1 / P)^2`` for a correct prediction, ``-sigma`` otherwise; shape ``(B,)``."""
    p = actions.shape[1]
    used = actions.float().sum(dim=1) / p
    return torch.where(correct, 1.0 - used**2, torch.full_like(used, -float(sigma)))


def log_prob(probs: Tensor, actions: Tensor, eps: float = 1e-8) -> Tensor:
    """Eq. 5 in log space: ``sum_p log(s_p a_p + (1 - s_p)(1 - a_p))``; shape ``(B,)``."""
    probs = probs.float()
    actions = actions.float()
    return torch.log(probs * actions + (1 - probs) * (1 - actions) + eps).sum(dim=1)


def policy_loss(probs: Tensor, actions: Tensor, advantage: Tensor) -> Tensor:
    """Eq. 9 as a loss to minimise: ``-mean_b(A_b * log pi(a_b))``, the advantage held constant."""
    return -(advantage.detach() * log_prob(probs, actions)).mean()


def bernoulli_entropy(probs: Tensor, eps: float = 1e-8) -> Tensor:
    """Mean per-patch entropy (nats) of the policy's Bernoullis, a logging diagnostic."""
    p = probs.float().clamp(eps, 1 - eps)
    return -(p * p.log() + (1 - p) * (1 - p).log()).mean()


def fuse(hr_logits: Tensor, lr_logits: Tensor, num_kept: Tensor, num_patches: int, mode: FusionMode = "paper") -> Tensor:
    """Eq. 7: log of ``(S/P) softmax(hr) + (1 - S/P) softmax(lr)`` per sample.

    Returns log-probabilities (so ``nll_loss`` is the cross-entropy of the fused prediction).
    ``mode="logit_sum"`` is the reference code's alternative, ``log_softmax(hr + lr)``.
    """
    if mode == "logit_sum":
        return F.log_softmax(hr_logits.float() + lr_logits.float(), dim=-1)
    w = (num_kept.float() / num_patches).view(-1, 1)
    p = w * F.softmax(hr_logits.float(), -1) + (1 - w) * F.softmax(lr_logits.float(), -1)
    return torch.log(p.clamp_min(1e-12))
