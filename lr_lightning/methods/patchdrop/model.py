"""PatchDrop's agent and classifier as a plain ``nn.Module`` (paper C, Sec. 4; no Lightning).

:class:`PatchDropModel` owns the networks (policy ``f_p``, HR stream ``f_cl^h``, LR stream
``f_cl^l``), the normalisation and fill buffers and the rule that chooses the patches, and
exposes the maths of one step as typed methods: the policy (Eq. 5-6), the masked HR image
(Sec. 3), the fused prediction (Eq. 7), the test-time actions, and the training objectives
(REINFORCE with the self-critical baseline, Eq. 8-11; the saliency baseline's soft mask; the
baselines' cross-entropy). The Lightning task (:class:`~lr_lightning.methods.patchdrop.PatchDrop`)
only wires it: stages, freezing, checkpoints, optimiser groups, logging and figures.

The training steps return ``(loss, diagnostics)``; the diagnostics are detached scalars named
as in ``docs/metrics.md`` without the stage prefix (``loss_ce``, ``reward``, ``hr_patches``, ...).

State-dict keys of the networks are ``policy.*``, ``hr_classifier.*``, ``lr_classifier.*``
(``model.`` in front of them in a task checkpoint; :func:`canonical_state` maps the keys of
checkpoints written before the model existed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lr_lightning.degrade import upsample
from lr_lightning.degrade.resize import UpsampleMode
from lr_lightning.methods.patchdrop import grid as G
from lr_lightning.methods.patchdrop import rl
from lr_lightning.nn.weights import read_state_dict

PolicyKind = Literal["learned", "fixed_h", "fixed_v", "stochastic", "saliency", "full", "none"]
ClassifierMasks = Literal["sampled", "greedy", "both"]

#: attribute names of the networks (also their state-dict prefixes inside the model)
NETWORKS: tuple[str, ...] = ("policy", "hr_classifier", "lr_classifier")
#: the model's attribute name in the task, i.e. the prefix of its keys in a task checkpoint
MODEL_PREFIX = "model."


@contextlib.contextmanager
def frozen_bn_statistics(module: nn.Module) -> Iterator[None]:
    """Inside the block, batch-norm layers of ``module`` in train mode still normalise with the
    batch's statistics but do not update their running statistics (momentum 0)."""
    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(layers, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


def canonical_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A PatchDrop task state dict with every network key under ``model.``: keys of checkpoints
    written before :class:`PatchDropModel` (``policy.*``, ``hr_classifier.*``,
    ``lr_classifier.*`` at the top level) are moved under it; other keys are kept as they are."""
    legacy = tuple(f"{name}." for name in NETWORKS)
    return {(MODEL_PREFIX + k if k.startswith(legacy) else k): v for k, v in state.items()}


def read_checkpoint_state(path: str) -> dict[str, Tensor]:
    """The state dict of a PatchDrop checkpoint (:func:`~lr_lightning.nn.weights.read_state_dict`:
    a Lightning ``.ckpt`` or a plain state dict, ``weights_only=True``) with
    :func:`canonical_state` keys."""
    return canonical_state(read_state_dict(path))


class PatchDropModel(nn.Module):
    """PatchDrop's policy and two-stream classifier over a ``grid x grid`` patch grid (Sec. 4.1).

    Args (keyword-only):
        grid: patches per side, ``P = grid^2``.
        policy_kind: who picks the patches at test time (see :meth:`test_actions`).
        mean / std: per-channel input normalisation of all networks (images in [0, 1]).
        hr_classifier: HR stream ``f_cl^h``; sees the masked, normalised HR image, or (a network
            with ``patch_based = True``, e.g. ``PatchBagNet``, Sec. 6) the image and the actions.
        policy: ``f_p`` on the normalised LR image, ``P`` outputs (Eq. 6); the saliency net of
            ``policy_kind="saliency"``; ``None`` for the fixed / stochastic / full / none rules.
        lr_classifier: LR stream ``f_cl^l`` (Ft-2); when given, predictions are fused by Eq. 7.
        num_kept: S of the fixed and saliency rules, expected S of the stochastic rule.
        fusion: Eq. 7 (``paper``) or the reference code's ``logit_sum``.
        fill: pixel value in [0, 1] of dropped patches; ``None`` = zero after normalisation.
        lr_upsample: how the LR stream brings the LR image to the HR size.
        saliency_temperature: softmax temperature of the saliency baseline's soft mask.
        logit_bound: smooth clipping of the policy's logits, ``b tanh(z / b)`` (:func:`rl.soft_bound`;
            not in the paper, against saturation); ``None`` = plain logits.
        channels_last: give the networks NHWC inputs.

    The buffer ``policy_updates`` counts the REINFORCE updates over all chained stages (it is
    saved in checkpoints and loaded with the previous stage), so an exploration schedule can
    continue across Pt -> Ft-1 -> Ft-2 instead of restarting.
    """

    policy: nn.Module | None
    lr_classifier: nn.Module | None

    def __init__(
        self,
        *,
        grid: int,
        policy_kind: PolicyKind,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        hr_classifier: nn.Module,
        policy: nn.Module | None = None,
        lr_classifier: nn.Module | None = None,
        num_kept: float | None = None,
        fusion: rl.FusionMode = "paper",
        fill: float | None = None,
        lr_upsample: UpsampleMode = "bilinear",
        saliency_temperature: float = 1.0,
        logit_bound: float | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if logit_bound is not None and logit_bound <= 0:
            raise ValueError(f"logit_bound must be positive (or null), got {logit_bound}")
        if policy_kind in ("learned", "saliency") and policy is None:
            raise ValueError(f"policy_kind={policy_kind!r} needs a `policy` network (e.g. lr_lightning.nn.CifarResNet depth 8)")
        if policy_kind in ("fixed_h", "fixed_v", "stochastic", "saliency") and num_kept is None:
            raise ValueError(f"policy_kind={policy_kind!r} needs `num_kept` (the number S of HR patches to sample)")
        self.hr_classifier = hr_classifier
        self.policy = policy
        self.lr_classifier = lr_classifier
        self.policy_kind: PolicyKind = policy_kind
        self.grid = grid
        self.num_kept = num_kept
        self.fusion: rl.FusionMode = fusion
        self.lr_upsample: UpsampleMode = lr_upsample
        self.saliency_temperature = saliency_temperature
        self.logit_bound = logit_bound
        self.channels_last = channels_last
        self.register_buffer("policy_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        fill_value = torch.zeros(1, len(mean), 1, 1) if fill is None else (fill - self.mean) / self.std
        self.register_buffer("fill_value", fill_value, persistent=False)
        if policy_kind in ("fixed_h", "fixed_v"):
            priority = G.fixed_priority(policy_kind[-1], grid)
            self.register_buffer("fixed", G.fixed_actions(priority, int(num_kept), 1), persistent=False)
        if policy_kind == "stochastic":
            self.register_buffer("survival", G.stochastic_survival(grid, float(num_kept)).view(1, -1), persistent=False)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # state dicts written before the policy_updates counter existed load with 0 updates
        state_dict.setdefault(prefix + "policy_updates", torch.zeros((), dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, *args)

    @property
    def num_patches(self) -> int:
        """``P``, the number of patches."""
        return self.grid**2

    # -- inputs --------------------------------------------------------------------------------
    def to_input(self, x: Tensor) -> Tensor:
        """A network input in the model's memory format."""
        if self.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def normalize(self, x: Tensor) -> Tensor:
        """Images in [0, 1] -> ``(x - mean) / std`` (the networks' input space)."""
        return self.to_input((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))

    def masked(self, x_norm: Tensor, actions: Tensor) -> Tensor:
        """``x_h^m`` (Sec. 3): the normalised HR image with dropped patches set to the fill value."""
        return self.to_input(G.apply_mask(x_norm, actions, self.grid, self.fill_value))

    # -- the policy (Eq. 5-6) ------------------------------------------------------------------
    def _policy(self) -> nn.Module:
        if self.policy is None:
            raise RuntimeError(f"policy_kind={self.policy_kind!r} has no policy network")
        return self.policy

    def policy_scores(self, lr: Tensor) -> Tensor:
        """``f_p(x_l)``: one score (logit) per patch, float32, shape ``(B, P)``, softly bounded
        by ``logit_bound`` when set."""
        scores = self._policy()(self.normalize(lr)).float()
        if scores.shape[-1] != self.num_patches:
            raise ValueError(f"the policy outputs {scores.shape[-1]} values but the {self.grid}x{self.grid} grid has {self.num_patches} patches")
        return rl.soft_bound(scores, self.logit_bound)

    def policy_probs(self, lr: Tensor) -> Tensor:
        """Eq. 6: ``s = sigmoid(f_p(x_l))``, in float32, shape ``(B, P)``."""
        return torch.sigmoid(self.policy_scores(lr))

    def test_actions(self, lr: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The test-time action ``(B, P)`` in {0, 1} of ``policy_kind``: the greedy action
        ``s > 0.5`` of the learned policy (Sec. 4.2), the top-S patches of the saliency net, the
        fixed priority lists (Sec. 5.2), a draw of the stochastic rule (from ``generator``, so an
        evaluation can be reproduced), all patches (``full``) or none."""
        batch, p, kind = lr.shape[0], self.num_patches, self.policy_kind
        if kind == "learned":
            return rl.greedy_actions(self.policy_probs(lr))
        if kind == "saliency":
            return G.top_k_actions(self.policy_scores(lr), int(self.num_kept))
        if kind in ("fixed_h", "fixed_v"):
            return self.fixed.expand(batch, p).to(lr.device)
        if kind == "stochastic":
            u = torch.rand(batch, p, generator=generator, device=self.survival.device)
            return (u < self.survival).float()
        if kind == "full":
            return lr.new_ones(batch, p, dtype=torch.float32)
        return lr.new_zeros(batch, p, dtype=torch.float32)

    # -- the classifier (Eq. 7) ----------------------------------------------------------------
    def hr_logits(self, x_norm: Tensor, actions: Tensor) -> Tensor:
        """``f_cl^h`` on the kept patches: the masked image, or image + actions for a patch-based
        classifier (which computes only the kept patches, Sec. 6)."""
        if getattr(self.hr_classifier, "patch_based", False):
            return self.hr_classifier(x_norm, actions)
        return self.hr_classifier(self.masked(x_norm, actions))

    def lr_logits(self, lr: Tensor, size: tuple[int, int]) -> Tensor | None:
        """``f_cl^l`` (frozen, no gradient) on the LR image upsampled to the HR ``size``;
        ``None`` without an LR stream (Pt / Ft-1)."""
        if self.lr_classifier is None:
            return None
        with torch.no_grad():
            return self.lr_classifier(self.normalize(upsample(lr, size, self.lr_upsample)))

    def log_probs(self, hr_logits: Tensor, actions: Tensor, lr_logits: Tensor | None) -> Tensor:
        """Class log-probabilities of ``f_cl``: the HR stream alone, or Eq. 7's fusion with the
        LR stream weighted by ``S / P``."""
        if lr_logits is None:
            return F.log_softmax(hr_logits.float(), -1)
        return rl.fuse(hr_logits, lr_logits, actions.sum(1), self.num_patches, self.fusion)

    def predict(self, hr: Tensor, lr: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The test-time prediction (Fig. 3): ``(actions (B, P), class log-probabilities (B, N))``
        from the test-time actions, the masked HR image and, at Ft-2, the LR stream (Eq. 7)."""
        actions = self.test_actions(lr, generator=generator)
        logp = self.log_probs(self.hr_logits(self.normalize(hr), actions), actions, self.lr_logits(lr, tuple(hr.shape[-2:])))
        return actions, logp

    # -- training objectives -------------------------------------------------------------------
    def reinforce_step(
        self, x: Tensor, lr: Tensor, y: Tensor, *, lr_logits: Tensor | None, alpha: float, sigma: float, train_classifier: bool,
        entropy_weight: float = 0.0, uniform: Tensor | None = None, classifier_masks: ClassifierMasks = "sampled",
        samples: int = 1,
    ) -> tuple[Tensor, dict[str, Tensor | float]]:
        """One REINFORCE step of the learned policy (Eq. 8-11) on normalised HR images ``x``.

        Actions are sampled from the policy bounded by Eq. 11 (``alpha``); the greedy action
        ``s > 0.5`` gives the self-critical baseline reward (Eq. 10); the loss is Eq. 9's policy
        loss with the advantage ``R(a) - R(a_hat)`` (reward ``1 - (S/P)^2`` if right, else
        ``-sigma``), plus the cross-entropy of the sampled-mask prediction when
        ``train_classifier`` (Ft-1 / Ft-2; at Pt the classifier pass has no gradient), minus
        ``entropy_weight`` times the mean Bernoulli entropy of ``s`` (an exploration bonus, not
        in the paper; 0 = the paper's loss).

        ``classifier_masks`` (Ft only): which masks the classifier's cross-entropy is computed on.
        ``sampled`` (the paper, Alg. 1: the exploratory masks of the policy gradient), ``greedy``
        (the test-time masks ``s > 0.5``, so the classifier learns the input distribution it is
        tested on, as a fixed-mask baseline does: its weights get the greedy masks' gradient and
        its batch-norm running statistics only the greedy batches, the sampled pass leaving them
        untouched; the greedy pass is computed anyway for the baseline reward, so this costs
        nothing) or ``both`` (the mean of the two losses). Not in the paper; the reward of both
        passes is unchanged.

        ``samples`` (K): actions sampled per image, each scored against the image's one greedy
        baseline; Eq. 9's loss is the mean over the ``K B`` samples (an unbiased estimate of the
        same gradient with K times less sampling variance; the paper uses K = 1). The sampled
        classifier pass then runs on ``K B`` rows, the greedy one on ``B``.

        ``uniform`` (``(K B, P)`` in [0, 1), row ``k B + b`` = sample k of image b): the draws of the Bernoulli sample, ``a = u < s'``
        (``None``: ``torch.bernoulli`` from the global RNG); see ``PatchDrop(sample_seed=...)``.

        ``lr_logits`` are the LR stream's logits of this batch (Ft-2), computed once by the
        caller and shared by both passes (they do not depend on the actions). Rows whose sampled
        action equals the greedy one have advantage 0 by definition; when the HR classifier is
        in eval mode (Pt: frozen, its logits do not depend on the other rows) the baseline pass
        runs on the differing rows only. In train mode (Ft) batch-norm couples the rows through
        the batch statistics, so the baseline pass keeps the whole batch; like the sampled pass it
        then also updates the batch-norm running statistics (as the reference code's train-mode
        baseline forward does).
        """
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        b = y.shape[0]
        probs = self.policy_probs(lr)
        bounded = rl.bound_probs(probs, alpha)
        bounded_k = bounded.repeat(samples, 1) if samples > 1 else bounded  # row k B + b: sample k of image b
        if uniform is None:
            actions = torch.bernoulli(bounded_k.detach())
        else:
            if uniform.shape != bounded_k.shape:
                raise ValueError(f"uniform draws of shape {tuple(uniform.shape)} for {samples} sample(s) of probabilities "
                                 f"of shape {tuple(bounded.shape)}")
            actions = (uniform.to(bounded.device) < bounded_k.detach()).to(bounded.dtype)
        greedy = rl.greedy_actions(probs.detach())
        ce_sampled = train_classifier and classifier_masks in ("sampled", "both")
        ce_greedy = train_classifier and classifier_masks in ("greedy", "both")
        x_k, y_k, lr_logits_k = x, y, lr_logits
        if samples > 1:
            x_k, y_k = x.repeat(samples, 1, 1, 1), y.repeat(samples)
            lr_logits_k = None if lr_logits is None else lr_logits.repeat(samples, 1)
        # with the cross-entropy on the greedy masks only, the sampled pass must not move the
        # batch-norm running statistics either: the test-time statistics then come from greedy masks
        keep_stats = frozen_bn_statistics(self.hr_classifier) if ce_greedy and not ce_sampled else contextlib.nullcontext()
        with torch.set_grad_enabled(ce_sampled), keep_stats:
            logp = self.log_probs(self.hr_logits(x_k, actions), actions, lr_logits_k)
        correct = logp.detach().argmax(-1) == y_k
        same = (actions == greedy.repeat(samples, 1)).all(dim=1)
        logp_greedy = None
        with torch.set_grad_enabled(ce_greedy):
            if self.hr_classifier.training:
                logp_greedy = self.log_probs(self.hr_logits(x, greedy), greedy, lr_logits)
                correct_greedy = logp_greedy.detach().argmax(-1) == y
            else:
                # an image whose every sample equals its greedy action has advantage 0 and needs no baseline pass
                correct_greedy = correct[:b].clone()
                rows = (~same).view(samples, b).any(0).nonzero().flatten()
                if rows.numel():
                    sub = self.log_probs(self.hr_logits(x[rows], greedy[rows]), greedy[rows], None if lr_logits is None else lr_logits[rows])
                    correct_greedy[rows] = sub.argmax(-1) == y[rows]
        reward = rl.reward(actions, correct, sigma)
        baseline = rl.reward(greedy, correct_greedy, sigma).repeat(samples)
        advantage = torch.where(same, torch.zeros_like(reward), reward - baseline)
        loss_policy = rl.policy_loss(bounded_k, actions, advantage)
        entropy = rl.bernoulli_entropy(probs)
        loss = loss_policy - entropy_weight * entropy if entropy_weight else loss_policy
        logs: dict[str, Tensor | float] = {}
        if train_classifier:
            if ce_greedy and logp_greedy is None:
                raise ValueError("classifier_masks='greedy' / 'both' needs the HR classifier in train mode (Ft-1 / Ft-2)")
            terms = ([F.nll_loss(logp, y_k)] if ce_sampled else []) + ([F.nll_loss(logp_greedy, y)] if ce_greedy else [])
            loss_ce = sum(terms) / len(terms)
            loss = loss + loss_ce
            logs["loss_ce"] = loss_ce.detach()
        if self.training:
            self.policy_updates += 1
        undecided = ((probs > 0.2) & (probs < 0.8)).float().mean()
        logs.update({
            "loss_policy": loss_policy.detach(),
            "reward": reward.mean(),
            "reward_greedy": baseline.mean(),
            "advantage": advantage.mean(),
            "advantage_nonzero": (advantage != 0).float().mean(),
            "hr_patches": actions.sum(1).mean(),
            "hr_patches_greedy": greedy.sum(1).mean(),
            "policy_entropy": entropy.detach(),
            "policy_undecided": undecided.detach(),
            "alpha": alpha,
            "acc": correct.float().mean(),
        })
        return loss, logs

    def saliency_step(self, x: Tensor, lr: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor | float]]:
        """STN-style saliency baseline (Sec. 5.2, after Recasens et al. 2018), trained at Pt.

        The saliency net scores the patches from the LR image; the HR image is weighted by the
        soft mask ``min(1, S softmax(scores / T))`` (differentiable, so the frozen HR
        classifier's cross-entropy trains the saliency net, as an STN's sampler is trained end
        to end by the task loss); at test time the top-S patches are kept (:meth:`test_actions`).
        """
        scores = self.policy_scores(lr)
        soft = torch.clamp(float(self.num_kept) * torch.softmax(scores / self.saliency_temperature, -1), max=1.0)
        m = G.patch_mask(soft, x.shape[-2], x.shape[-1], self.grid)
        logits = self.hr_classifier(self.to_input(x * m + self.fill_value.to(x.dtype) * (1 - m)))
        loss = F.cross_entropy(logits.float(), y)
        return loss, {"loss_ce": loss.detach(), "hr_patches": soft.sum(1).mean().detach(), "acc": (logits.argmax(-1) == y).float().mean()}

    def classifier_step(self, x: Tensor, lr: Tensor, y: Tensor, *, lr_logits: Tensor | None) -> tuple[Tensor, dict[str, Tensor | float]]:
        """The baselines' Ft-1 / Ft-2 step (Tables 1-2): cross-entropy of the classifier (Eq. 7 at
        Ft-2) on the rule's own test-time masks, which fine-tunes the HR classifier."""
        actions = self.test_actions(lr)
        logp = self.log_probs(self.hr_logits(x, actions), actions, lr_logits)
        loss = F.nll_loss(logp, y)
        return loss, {"loss_ce": loss.detach(), "hr_patches": actions.sum(1).mean(), "acc": (logp.argmax(-1) == y).float().mean()}


def policy_statistics(actions: Tensor, correct: Tensor) -> dict[str, Any]:
    """Test statistics of a policy: accuracy, mean S, HR-pixel fraction, per-patch sampling
    frequency (Fig. 7 right) and accuracy as a function of S (Fig. 7 left)."""
    p = actions.shape[1]
    s = actions.sum(1).long()
    count = torch.bincount(s, minlength=p + 1)
    hits = torch.bincount(s, weights=correct.double(), minlength=p + 1)
    n = max(1, actions.shape[0])
    return {
        "num_images": int(actions.shape[0]),
        "acc": float(correct.double().mean() * 100) if actions.shape[0] else float("nan"),
        "mean_S": float(s.double().mean()) if actions.shape[0] else float("nan"),
        "hr_pixel_fraction": float(s.double().mean() / p) if actions.shape[0] else float("nan"),
        "patch_frequency": [float(v) for v in actions.double().sum(0) / n],
        "S_histogram": [int(c) for c in count],
        "acc_vs_S": [float(h / c * 100) if c else None for h, c in zip(hits, count, strict=True)],
    }
