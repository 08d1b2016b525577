"""Non-integer downscaling (paper B, DarioNet): Gaussian blur, then resize by a real factor.

Paper B makes its LR ImageNet inputs by "a linear reduction of more than 3x (scale factor of
0.32)" of the 256 x 256 crops, after a light Gaussian blur (kernel 3, sigma 0.2, as in the
public code); the SR net then upsamples x4 and the result is resized back to the HR size
before classification (Fig. 1). :class:`ResizeDegradation` is the first half of that pipeline
(HR -> LR); the "resize back" step lives in the DarioNet task. The output size is
``round(scale * H) x round(scale * W)`` (32 -> 10 on CIFAR, 256 -> 82 on ImageNet crops).
"""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor

from .kernels import gaussian_kernel
from .resize import _check_image, blur, upsample

__all__ = ["ResizeDegradation"]


class ResizeDegradation:
    """HR -> LR by an optional Gaussian blur and a resize to ``scale`` times the size.

    Args:
        scale: output / input size ratio, in (0, 1] (0.32 in paper B).
        blur_size: odd Gaussian kernel size (3 in paper B); ``0`` disables the blur.
        blur_sigma: Gaussian sigma (0.2 in paper B).
        mode: resampler (``F.interpolate`` with antialiasing, PIL-compatible) for the resize;
            ``bicubic`` output is clamped to [0, 1].
        padding_mode: blur boundary (``reflect`` as torchvision's ``GaussianBlur``).
    """

    def __init__(
        self,
        scale: float = 0.32,
        blur_size: int = 3,
        blur_sigma: float = 0.2,
        mode: Literal["bicubic", "bilinear", "area", "nearest"] = "bicubic",
        padding_mode: Literal["reflect", "replicate"] = "reflect",
    ) -> None:
        if not (isinstance(scale, (int, float)) and 0.0 < scale <= 1.0 and math.isfinite(scale)):
            raise ValueError(f"scale must be in (0, 1], got {scale!r}")
        if blur_size < 0 or (blur_size > 0 and blur_size % 2 == 0):
            raise ValueError(f"blur_size must be 0 (no blur) or an odd positive integer, got {blur_size}")
        self.scale = float(scale)
        self.blur_size = blur_size
        self.blur_sigma = blur_sigma
        self.mode = mode
        self.padding_mode = padding_mode
        self.kernel = gaussian_kernel(blur_size, sigma=blur_sigma) if blur_size > 0 else None

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        h, w = size
        return max(1, round(self.scale * h)), max(1, round(self.scale * w))

    def __call__(self, x: Tensor) -> Tensor:
        _check_image(x)
        if self.kernel is not None:
            x = blur(x, self.kernel, padding_mode=self.padding_mode)
        return upsample(x, self.output_size(tuple(x.shape[-2:])), mode=self.mode)

    @property
    def name(self) -> str:
        blur_part = f"gauss{self.blur_size}(s{self.blur_sigma:g})+" if self.kernel is not None else ""
        return f"{blur_part}{self.mode}x{self.scale:g}"

    def __repr__(self) -> str:
        return f"ResizeDegradation({self.name})"
