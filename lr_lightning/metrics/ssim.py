"""SSIM on the luma (Y) channel with a border shave, the SR convention (BasicSR
``calculate_ssim(..., test_y_channel=True, crop_border=scale)``).

The SSIM itself is torchmetrics' ``structural_similarity_index_measure`` (Gaussian window 11,
sigma 1.5, K1 0.01, K2 0.03) on Y in [16, 235] (:func:`~lr_lightning.metrics.rgb_to_y`, BT.601
studio swing as MATLAB) with ``data_range = 255``, per image, averaged over images. Images are
quantised to 8 bits first, as :func:`~lr_lightning.metrics.psnr_y` does.
"""

from __future__ import annotations

from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from lr_lightning.metrics.sr import PerImageMeanY, rgb_to_y


def ssim_y(sr: Tensor, hr: Tensor, shave: int = 0, quantize: bool = True) -> Tensor:
    """Per-image SSIM on Y (after removing ``shave`` border pixels), shape (B,)."""
    if sr.shape != hr.shape:
        raise ValueError(f"sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ in shape")
    if quantize:
        sr = (sr.float().clamp(0, 1) * 255).round() / 255
        hr = (hr.float().clamp(0, 1) * 255).round() / 255
    ys, yh = rgb_to_y(sr), rgb_to_y(hr)
    if shave > 0:
        ys = ys[..., shave:-shave, shave:-shave]
        yh = yh[..., shave:-shave, shave:-shave]
    if min(ys.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after the shave, got {tuple(ys.shape[-2:])}")
    return structural_similarity_index_measure(ys, yh, data_range=255.0, reduction="none")


class SSIMY(PerImageMeanY):
    """Mean over images of :func:`ssim_y`."""

    score = staticmethod(ssim_y)
