"""Metrics shared by methods (fixed names so runs compare side by side)."""

from lr_lightning.metrics.sr import PSNRY, psnr_y, rgb_to_y
from lr_lightning.metrics.ssim import SSIMY, ssim_y

__all__ = ["PSNRY", "SSIMY", "psnr_y", "rgb_to_y", "ssim_y"]
