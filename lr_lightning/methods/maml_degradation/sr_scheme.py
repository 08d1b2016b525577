"""Paper A's comparison scheme (Sec. 4.1, Table 1 left): frozen SR network, then a CNN at HR size.

``SRThenCNN(sr, cnn)`` maps an LR image in [0, 1] to logits: ``cnn(normalize(clamp(sr(lr))))``.
The SR network is loaded from a checkpoint of :class:`~lr_lightning.methods.sr.SuperResolutionTask`
(or a plain state dict) and frozen (``requires_grad=False``, kept in eval mode), so training the
pipeline with :class:`~lr_lightning.methods.ImageClassifier` (``mean: [0,0,0]``, ``std: [1,1,1]``:
normalisation happens here, after the SR) only updates the CNN, as in the paper (EDSR pretrained
on DIV2K, then frozen). Plain ``nn.Module``: no Lightning.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from lr_lightning.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from lr_lightning.nn import load_state_dict_file


class SRThenCNN(nn.Module):
    """Frozen SR net followed by an HR classifier.

    Args:
        sr: the SR network (e.g. ``lr_lightning.nn.ZSSR8``), ``lr -> hr``.
        cnn: the classifier at HR size (e.g. ``Conv4(in_size=32)``).
        sr_checkpoint: SR weights (Lightning checkpoint of ``SuperResolutionTask``, keys
            ``net.*``, or a plain state dict); ``None`` keeps the random init (with a warning),
            which is only useful for smoke tests.
        mean / std: normalisation of the SR output before the CNN.
    """

    def __init__(
        self,
        sr: nn.Module,
        cnn: nn.Module,
        sr_checkpoint: str | None = None,
        mean: tuple[float, float, float] = CIFAR10_MEAN,
        std: tuple[float, float, float] = CIFAR10_STD,
    ) -> None:
        super().__init__()
        self.sr = sr
        self.cnn = cnn
        if sr_checkpoint is None:
            warnings.warn("SRThenCNN: sr_checkpoint is null, the SR network keeps its random init", stacklevel=2)
        else:
            load_state_dict_file(self.sr, sr_checkpoint, prefix="net." if str(sr_checkpoint).endswith(".ckpt") else None)
        self.sr.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> SRThenCNN:
        super().train(mode)
        self.sr.eval()  # frozen
        return self

    def super_resolve(self, lr: Tensor) -> Tensor:
        with torch.no_grad():
            return self.sr(lr).clamp(0, 1)

    def forward(self, lr: Tensor) -> Tensor:
        hr = self.super_resolve(lr)
        return self.cnn((hr - self.mean.to(hr.dtype)) / self.std.to(hr.dtype))
