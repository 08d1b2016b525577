"""Conv4: the four-block CNN of paper A (Table 1, right column).

Paper A (``A_maml_degradation_classifier.md``, Table 1 and Sec. 4) uses the few-shot-learning
Conv4 backbone: four blocks of ``Conv3x3(32) - BatchNorm - ReLU - MaxPool2``, then flatten and a
linear classifier. With a 32x32 input the features are ``32 x 2 x 2 = 128`` wide.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """Four ``conv3x3-BN-ReLU-maxpool2`` blocks and a linear head (paper A, Table 1).

    Args:
        num_classes: number of output logits.
        in_size: spatial size of the (square) input; must be a multiple of 16 because each of the
            four blocks halves it (16 -> 1x1, 32 -> 2x2, 128 -> 8x8 features).
        in_channels: image channels.
        width: filters per convolution (32 in the paper).
    """

    def __init__(
        self, num_classes: int = 10, in_size: int = 32, in_channels: int = 3, width: int = 32
    ) -> None:
        super().__init__()
        if in_size < 16 or in_size % 16 != 0:
            raise ValueError(
                f"Conv4 halves its input four times, so in_size must be a multiple of 16 "
                f"(got {in_size}); use a smaller downsampling factor or upsample the LR input."
            )
        self.in_size = in_size
        self.features = nn.Sequential(
            _block(in_channels, width), _block(width, width), _block(width, width), _block(width, width)
        )
        self.feature_dim = width * (in_size // 16) ** 2
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_size or x.shape[-2] != self.in_size:
            raise ValueError(
                f"Conv4 was built for {self.in_size}x{self.in_size} inputs, got "
                f"{tuple(x.shape[-2:])}; set in_size to the LR size."
            )
        return self.classifier(torch.flatten(self.features(x), 1))
