"""Image classification on HR or degraded input: the HR-CNN and LR-CNN baselines."""

from lr_lightning.methods.classification.module import ImageClassifier

__all__ = ["ImageClassifier"]
