"""Degradation layer of ``lr_lightning``: pure, batched tensor functions that turn
high-resolution images into low-resolution ones.

All functions take ``(B, C, H, W)`` float tensors in ``[0, 1]``, keep the
input's device and dtype, and are deterministic (randomness only through an
explicit ``torch.Generator``).  Nothing here depends on Lightning.

* :func:`downsample` / :func:`upsample` / :func:`imresize_matlab` / :func:`blur`
  - resizing and blurring (pooling of paper A, blur + direct subsampling of
  paper E Eq. 1 / MZSR, PIL- and MATLAB-compatible bicubic);
* :func:`dorefa_quantize` - DoReFa pixel quantisation with a straight-through
  gradient (paper A);
* :func:`gaussian_kernel` / :func:`random_gaussian_kernel` / :func:`load_kernel`
  - blur kernels (paper E / MZSR kernel distribution);
* :class:`Degradation` / :class:`DegradationSpace` - named, composable
  degradations (downsampling, DoReFa, gamma, noise, JPEG, upsampling) and
  meta-learning task spaces (paper A's {max, avg} x {2, 3, 4, 8, 16, 32} bits, presets).
"""

from .degradation import PRESETS, Degradation, DegradationSpace, duplicate_tasks, jpeg_roundtrip
from .fractional import ResizeDegradation
from .kernels import gaussian_kernel, gaussian_kernel_size, load_kernel, random_gaussian_kernel
from .quantize import dorefa_quantize
from .resize import (
    DOWNSAMPLE_MODES,
    PADDING_MODES,
    UPSAMPLE_MODES,
    DownsampleMode,
    PaddingMode,
    UpsampleMode,
    blur,
    downsample,
    imresize_matlab,
    upsample,
)

__all__ = [
    "DOWNSAMPLE_MODES",
    "PRESETS",
    "PADDING_MODES",
    "UPSAMPLE_MODES",
    "Degradation",
    "DegradationSpace",
    "DownsampleMode",
    "PaddingMode",
    "ResizeDegradation",
    "UpsampleMode",
    "blur",
    "dorefa_quantize",
    "downsample",
    "duplicate_tasks",
    "gaussian_kernel",
    "gaussian_kernel_size",
    "imresize_matlab",
    "jpeg_roundtrip",
    "load_kernel",
    "random_gaussian_kernel",
    "upsample",
]
