"""Supervised super-resolution (pixel loss): the SR pre-training task other methods build on."""

from lr_lightning.methods.sr.module import SuperResolutionTask

__all__ = ["SuperResolutionTask"]
