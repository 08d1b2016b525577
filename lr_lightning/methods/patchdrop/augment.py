"""Conditional hard-positive sampling (paper C, Sec. 7, Table 4), the CutOut baseline and
random patch dropping.

A classifier is trained on HR images from which the ``M ~ U[min_masked, max_masked]`` patches
the trained PatchDrop policy (Ft-1) finds *most* informative are removed: hard positives
conditioned on the image. CutOut (DeVries & Taylor 2017) removes one random square instead.
``random_patches`` removes ``M ~ U[min_masked, max_masked]`` grid patches chosen uniformly at
random (not in the paper; issue #13's "HR classifier trained with random patch dropping"), so the
masked images a PatchDrop policy or a fixed mask produces are in the HR classifier's training
distribution before any policy exists.
Removed pixels take the dataset mean colour (zero after normalisation), as PatchDrop's masks do.
Testing uses the original images.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lr_lightning.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from lr_lightning.methods.base import batch_entry
from lr_lightning.methods.classification import ImageClassifier
from lr_lightning.methods.optim import CLASSIFIER_OPTIM, OptimSpec
from lr_lightning.methods.patchdrop import grid as G
from lr_lightning.nn.weights import load_module_weights

AugmentKind = Literal["none", "cutout", "hard_positive", "random_patches"]


def cutout_mask(batch: int, height: int, width: int, size: int, generator: torch.Generator | None = None, device: torch.device | None = None) -> Tensor:
    """CutOut keep-mask ``(B, 1, H, W)``: one ``size x size`` square per image removed, centre
    uniform over the image (the square may be clipped by the border, as in DeVries & Taylor)."""
    cy = torch.randint(0, height, (batch, 1, 1), generator=generator, device=device)
    cx = torch.randint(0, width, (batch, 1, 1), generator=generator, device=device)
    yy = torch.arange(height, device=device).view(1, -1, 1)
    xx = torch.arange(width, device=device).view(1, 1, -1)
    half = size // 2
    inside = ((yy >= cy - half) & (yy < cy - half + size)) & ((xx >= cx - half) & (xx < cx - half + size))
    return (~inside).unsqueeze(1).float()


def hard_positive_actions(probs: Tensor, num_masked: Tensor) -> Tensor:
    """Keep-actions ``(B, P)`` dropping each row's ``num_masked`` most probable patches (Sec. 7)."""
    return 1.0 - G.top_k_actions(probs, num_masked)


def random_patch_actions(batch: int, num_patches: int, num_masked: Tensor, generator: torch.Generator | None = None,
                         device: torch.device | None = None) -> Tensor:
    """Keep-actions ``(B, P)`` dropping ``num_masked[b]`` patches of row ``b``, a uniformly random
    subset (the ranks of i.i.d. uniform scores)."""
    scores = torch.rand(batch, num_patches, generator=generator, device=device)
    return 1.0 - G.top_k_actions(scores, num_masked)


class AugmentedClassifier(ImageClassifier):
    """An :class:`ImageClassifier` trained with hard positives from a PatchDrop policy, CutOut, or
    random patch dropping.

    Args:
        augment: ``hard_positive`` (Sec. 7), ``cutout`` or ``none`` (the Table 4 rows), or
            ``random_patches`` (``M ~ U[min_masked, max_masked]`` random grid patches removed).
        policy: the PatchDrop policy network (same architecture as in the checkpoint); needed by
            ``hard_positive``. It reads ``batch["lr"]`` (give the data module the degradation the
            policy was trained with).
        policy_checkpoint: a PatchDrop checkpoint (its ``model.policy.*`` weights, or
            ``policy.*`` in checkpoints from before ``PatchDropModel``) or the policy's own
            state dict; ``None`` = random policy weights (warned; only for smoke tests).
        grid: the policy's patch grid.
        min_masked / max_masked: bounds of ``M ~ U[min, max]`` (paper: 1 and 4), for
            ``hard_positive`` and ``random_patches``.
        augment_prob: share of training images that are augmented (each image independently);
            the others are left whole.
        cutout_size: side of the CutOut square (DeVries & Taylor use 16 on CIFAR).
        (classifier arguments: see :class:`ImageClassifier`; ``input_key`` is ``hr``)
    """

    network_args = ("policy",)

    def __init__(
        self,
        *,
        net: nn.Module,
        augment: AugmentKind = "hard_positive",
        policy: nn.Module | None = None,
        policy_checkpoint: str | None = None,
        grid: int = 4,
        min_masked: int = 1,
        max_masked: int = 4,
        mean: tuple[float, float, float] = CIFAR10_MEAN,
        std: tuple[float, float, float] = CIFAR10_STD,
        cutout_size: int = 16,
        augment_prob: float = 1.0,
        num_classes: int = 10,
        label_smoothing: float = 0.0,
        init_checkpoint: str | None = None,
        optim: OptimSpec = CLASSIFIER_OPTIM,
        channels_last: bool = True,
    ) -> None:
        if augment == "hard_positive" and policy is None:
            raise ValueError("augment='hard_positive' needs the PatchDrop `policy` network")
        if not 0 <= min_masked <= max_masked <= grid * grid:
            raise ValueError(f"need 0 <= min_masked <= max_masked <= {grid * grid}, got {min_masked}, {max_masked}")
        if not 0.0 <= augment_prob <= 1.0:
            raise ValueError(f"augment_prob must be in [0, 1], got {augment_prob}")
        self._pending_policy = [policy] if augment == "hard_positive" else []  # a list: no Module before __init__
        super().__init__(
            net=net, num_classes=num_classes, input_key="hr", mean=mean, std=std, label_smoothing=label_smoothing,
            init_checkpoint=init_checkpoint, optim=optim, channels_last=channels_last,
        )

    def configure_models(self) -> None:
        super().configure_models()
        hp = self.hparams
        if self._pending_policy:
            self.policy = self._pending_policy.pop()
            if hp.policy_checkpoint:
                # a PatchDrop checkpoint (``model.policy.*``; ``policy.*`` before PatchDropModel) or
                # the policy's own state dict
                load_module_weights(self.policy, hp.policy_checkpoint, ("model.policy.", "policy."))
            else:
                warnings.warn("AugmentedClassifier: policy_checkpoint is null, hard positives come from a random policy", stacklevel=2)
            self.policy.requires_grad_(False)
            self.policy.eval()

    def train(self, mode: bool = True) -> AugmentedClassifier:
        super().train(mode)
        if hasattr(self, "policy"):
            self.policy.eval()
        return self

    def keep_mask(self, batch: dict[str, Any]) -> Tensor:
        """The training keep-mask ``(B, 1, H, W)`` of the chosen augmentation."""
        hp = self.hparams
        hr = batch["hr"]
        b, _, h, w = hr.shape
        if hp.augment == "cutout":
            keep = cutout_mask(b, h, w, hp.cutout_size, device=hr.device)
        else:
            m = torch.randint(hp.min_masked, hp.max_masked + 1, (b,), device=hr.device)
            if hp.augment == "random_patches":
                actions = random_patch_actions(b, hp.grid * hp.grid, m, device=hr.device)
            else:
                lr = batch_entry(batch, "lr", "hard-positive sampling (the policy reads the LR image)")
                with torch.no_grad():
                    probs = torch.sigmoid(self.policy(self.normalize(lr)).float())
                actions = hard_positive_actions(probs, m)
            keep = G.patch_mask(actions, h, w, hp.grid)
        if hp.augment_prob < 1.0:
            whole = torch.rand(b, 1, 1, 1, device=hr.device) >= hp.augment_prob
            keep = torch.where(whole, torch.ones_like(keep), keep)
        return keep

    def hr_pixel_fraction(self, batch: dict[str, Any]) -> float:
        """1: at test time a plain HR classifier on the original images (its hyper-parameters
        have no ``input_key``, the input is always ``hr``). The policy is not part of the
        test-time prediction, so ``test/params`` does not count it."""
        return 1.0

    def _input(self, batch: dict[str, Any]) -> Tensor:
        x = batch["hr"]
        if not self.training or self.hparams.augment == "none":
            return x
        keep = self.keep_mask(batch).to(x.dtype)
        return x * keep + self.mean.to(x.dtype) * (1 - keep)
