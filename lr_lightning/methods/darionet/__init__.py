"""DarioNet (paper B): SR fine-tuned by a frozen classifier's logits; the SR-L1 pre-training stage
is :class:`lr_lightning.methods.sr.SuperResolutionTask`."""

from lr_lightning.methods.darionet.loss import (
    cross_entropy_gap,
    feature_distillation_loss,
    logit_distillation_loss,
)
from lr_lightning.methods.darionet.module import DarioNetTask, load_weights

__all__ = [
    "DarioNetTask",
    "cross_entropy_gap",
    "feature_distillation_loss",
    "load_weights",
    "logit_distillation_loss",
]
