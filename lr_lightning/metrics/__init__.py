"""Metrics shared by methods (fixed names so runs compare side by side)."""

from lr_lightning.metrics.sr import PSNRY, psnr_y, rgb_to_y

__all__ = ["PSNRY", "psnr_y", "rgb_to_y"]
