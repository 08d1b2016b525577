"""PatchDrop (paper C): learning when and where to acquire HR patches from the LR image."""

from lr_lightning.methods.patchdrop.augment import (
    AugmentedClassifier,
    cutout_mask,
    hard_positive_actions,
    random_patch_actions,
)
from lr_lightning.methods.patchdrop.model import PatchDropModel, policy_statistics
from lr_lightning.methods.patchdrop.module import PatchDrop

__all__ = ["AugmentedClassifier", "PatchDrop", "PatchDropModel", "cutout_mask", "hard_positive_actions", "policy_statistics", "random_patch_actions"]
