"""The ZSSR / MZSR 8-layer super-resolution network (paper E, Sec. VI; Shocher et al. 2018).

LR input -> bicubic upsampling by ``scale`` -> 8 conv3x3 layers (3->64, six 64->64, 64->3) with
ReLU between them and no biases -> added to the upsampled input (global residual). With the
default widths the body has ``3*64*9 + 6*64*64*9 + 64*3*9 = 224,640`` weights.
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from lr_lightning.degrade import upsample


class ZSSR8(nn.Module):
    """8-layer residual SR net on the bicubic-upsampled LR image.

    Args:
        scale: SR factor (output = scale x input size).
        channels: image channels.
        width: feature channels of the hidden layers (64 in ZSSR/MZSR).
        depth: number of conv layers (8).
        bias: add biases (the paper's net has none).
        upsample_mode: how the LR input is upsampled before the residual body.
    """

    def __init__(
        self,
        scale: int = 2,
        channels: int = 3,
        width: int = 64,
        depth: int = 8,
        bias: bool = False,
        upsample_mode: Literal["bicubic", "bicubic_matlab", "bilinear", "nearest"] = "bicubic",
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        self.scale = scale
        self.upsample_mode = upsample_mode
        layers: list[nn.Module] = []
        for i in range(depth):
            cin = channels if i == 0 else width
            cout = channels if i == depth - 1 else width
            layers.append(nn.Conv2d(cin, cout, 3, padding=1, bias=bias))
            if i < depth - 1:
                layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)

    def upsample_input(self, lr: Tensor) -> Tensor:
        """The bicubic (or chosen) upsampling the residual is added to."""
        h, w = lr.shape[-2:]
        return upsample(lr, (h * self.scale, w * self.scale), mode=self.upsample_mode)

    def forward(self, lr: Tensor) -> Tensor:
        up = self.upsample_input(lr)
        return up + self.body(up)
