"""PSNR on the luma (Y) channel with a border shave: the convention SR papers report.

Y follows ITU-R BT.601 as MATLAB's ``rgb2ycbcr`` (studio swing, 16-235 for inputs in [0, 1]):
``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` with R, G, B in [0, 1]. PSNR is computed per image on
Y in [0, 255] after removing ``shave`` pixels (usually the scale) from every border, then averaged
over images (BasicSR ``calculate_psnr(..., test_y_channel=True, crop_border=scale)``, MZSR).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchmetrics import Metric

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def rgb_to_y(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) Y in [16, 235] (float64 for exactness)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"rgb_to_y expects (B, 3, H, W), got {tuple(x.shape)}")
    w = torch.tensor(_Y_WEIGHTS, dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    return 16.0 + (x.to(torch.float64) * w).sum(1, keepdim=True)


def psnr_y(sr: Tensor, hr: Tensor, shave: int = 0, quantize: bool = True) -> Tensor:
    """Per-image PSNR (dB) on Y, shape (B,). ``quantize`` rounds both to 8-bit RGB first, as
    saving the output image would."""
    if sr.shape != hr.shape:
        raise ValueError(f"sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ in shape")
    if quantize:
        sr = (sr.clamp(0, 1) * 255).round() / 255
        hr = (hr.clamp(0, 1) * 255).round() / 255
    ys, yh = rgb_to_y(sr), rgb_to_y(hr)
    if shave > 0:
        ys = ys[..., shave:-shave, shave:-shave]
        yh = yh[..., shave:-shave, shave:-shave]
    mse = (ys - yh).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(255.0**2 / mse)


class PerImageMeanY(Metric):
    """Mean over images of a per-image Y-channel score ``score(sr, hr, shave, quantize) -> (B,)``;
    subclasses set :attr:`score`."""

    higher_is_better = True
    full_state_update = False
    score: Callable[[Tensor, Tensor, int, bool], Tensor]

    def __init__(self, shave: int = 0, quantize: bool = True) -> None:
        super().__init__()
        self.shave = shave
        self.quantize = quantize
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, sr: Tensor, hr: Tensor) -> None:
        values = type(self).score(sr, hr, self.shave, self.quantize)
        self.total += values.double().sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count).float()


class PSNRY(PerImageMeanY):
    """Mean over images of :func:`psnr_y` (dB)."""

    score = staticmethod(psnr_y)
