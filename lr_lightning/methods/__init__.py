"""Methods: one sub-package per method, each a :class:`~lr_lightning.methods.base.BaseTask`."""

from lr_lightning.methods.base import BaseTask
from lr_lightning.methods.classification import ImageClassifier

__all__ = ["BaseTask", "ImageClassifier"]
