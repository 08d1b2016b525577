"""DarioNet losses (paper B, "Proposed method explained" and "Experimental results").

* training loss: ``MSE(t(SR(LR)), t(HR))`` between the frozen teacher's logits (scores before
  the softmax) on the reconstructed and on the original image, optionally plus
  ``pixel_weight * L1(SR, HR)`` and ``feature_weight * mean_l MSE(f_l(SR), f_l(HR))`` over chosen
  teacher layers (options; the paper uses the logit term only);
* validation loss: ``CE(t(SR), y) - CE(t(HR), y)``, the gap between the cross-entropies of the
  two prediction vectors with the labels, minimised to select the checkpoint.
"""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional as F


def logit_distillation_loss(logits_sr: Tensor, logits_hr: Tensor) -> Tensor:
    """Paper B's "cross loss": mean squared error between the teacher's logits on SR and HR
    (the HR logits are the target, no gradient flows into them)."""
    if logits_sr.shape != logits_hr.shape:
        raise ValueError(f"logit shapes differ: {tuple(logits_sr.shape)} vs {tuple(logits_hr.shape)}")
    return F.mse_loss(logits_sr.float(), logits_hr.detach().float())


def feature_distillation_loss(feats_sr: list[Tensor], feats_hr: list[Tensor]) -> Tensor:
    """Mean over layers of the MSE between teacher activations on SR and on HR (option)."""
    if len(feats_sr) != len(feats_hr) or not feats_sr:
        raise ValueError(f"need the same, non-zero number of feature maps, got {len(feats_sr)} and {len(feats_hr)}")
    terms = [F.mse_loss(a.float(), b.detach().float()) for a, b in zip(feats_sr, feats_hr, strict=True)]
    return sum(terms[1:], terms[0]) / len(terms)


def cross_entropy_gap(logits_sr: Tensor, logits_hr: Tensor, target: Tensor) -> Tensor:
    """Paper B's validation loss ``CE(t(SR), y) - CE(t(HR), y)`` (batch means)."""
    return F.cross_entropy(logits_sr.float(), target) - F.cross_entropy(logits_hr.float(), target)
