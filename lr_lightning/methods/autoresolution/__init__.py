"""Deep autoresolution networks (paper D): self-supervised LR-image / HR-patch pretext and transfer."""

from lr_lightning.methods.autoresolution.module import (
    AutoresolutionClassifier,
    AutoresolutionPretext,
)
from lr_lightning.methods.autoresolution.recipe import PaperRecipeTask, tf_ema_avg_fn

__all__ = ["AutoresolutionClassifier", "AutoresolutionPretext", "PaperRecipeTask", "tf_ema_avg_fn"]
