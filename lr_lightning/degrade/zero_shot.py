"""The degradations of paper E (Eq. 1): ``I_LR^k = (I_HR * k) downarrow_s``, made on the batch.

* ``D_bic``: MATLAB-compatible bicubic downsampling by ``s`` (the SR benchmark convention, the
  "bicubic" pre-training data of Alg. 1 line 1).
* ``D_meta``: every image blurred by its own isotropic Gaussian kernel of random size and sigma
  (:class:`KernelDistribution`, the task distribution ``p(k)`` of Sec. IV.A), then directly
  subsampled (every ``s``-th pixel starting at (0, 0), as MZSR's "direct" models).
* the son ``I_son`` of the online stage (Alg. 2 line 2): ``I_LR`` degraded again by the same
  kernel and scale.

Pure tensor functions; the kernels are sampled from an explicit ``torch.Generator`` so a seeded
run draws the same tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lr_lightning.degrade import downsample
from lr_lightning.degrade.kernels import gaussian_kernel


@dataclass(frozen=True)
class KernelDistribution:
    """``p(k)`` of paper E: isotropic Gaussian kernels with random size and covariance.

    ``sigma ~ U(sigma_min, sigma_max)``; the size is an odd number drawn uniformly from
    ``[max(size_min, 2 ceil(2 sigma) + 1), size_max]`` (at least +-2 sigma is covered, so "random
    size" never truncates a kernel to a box). MZSR (the recipe paper E follows) draws Gaussian
    kernels with eigenvalues up to ``2.5 s`` (variance); :meth:`for_scale` uses
    ``sigma_max = sqrt(2.5 s)`` (2.24 px at x2, 3.16 px at x4).
    """

    sigma_min: float = 0.2
    sigma_max: float = 2.24
    size_min: int = 7
    size_max: int = 21

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min <= self.sigma_max:
            raise ValueError(f"need 0 < sigma_min <= sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.size_min < 1 or self.size_max < self.size_min or self.size_max % 2 == 0:
            raise ValueError(f"need 1 <= size_min <= size_max with size_max odd, got {self.size_min}, {self.size_max}")

    @classmethod
    def for_scale(cls, scale: int) -> KernelDistribution:
        """The MZSR-like range for SR factor ``scale``."""
        sigma_max = math.sqrt(2.5 * scale)
        size_max = max(21, 2 * math.ceil(3 * sigma_max) + 1)
        return cls(sigma_max=round(sigma_max, 2), size_max=size_max | 1)

    def sample(self, n: int, generator: torch.Generator) -> list[Tensor]:
        """``n`` kernels (float32, each summing to 1); two uniforms per kernel from ``generator``."""
        out = []
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64).tolist()
        for u_sigma, u_size in u:
            sigma = self.sigma_min + (self.sigma_max - self.sigma_min) * u_sigma
            lo = max(self.size_min, 2 * math.ceil(2 * sigma) + 1)
            lo = min(lo + (lo % 2 == 0), self.size_max)
            sizes = list(range(lo, self.size_max + 1, 2))
            size = sizes[min(int(u_size * len(sizes)), len(sizes) - 1)]
            out.append(gaussian_kernel(size, sigma=sigma))
        return out


def stack_kernels(kernels: list[Tensor] | Tensor) -> Tensor:
    """A list of odd-sized 2-D kernels -> one ``(B, K, K)`` tensor, each zero-padded around its
    centre to the largest size (the anchor pixel stays the centre, so the blur is unchanged)."""
    if isinstance(kernels, Tensor):
        if kernels.dim() == 2:
            return kernels.unsqueeze(0)
        if kernels.dim() != 3:
            raise ValueError(f"kernels must be (K, K) or (B, K, K), got {tuple(kernels.shape)}")
        return kernels
    size = max(max(k.shape) for k in kernels)
    out = []
    for k in kernels:
        if k.dim() != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
            raise ValueError(f"kernels must be 2-D with odd sizes, got {tuple(k.shape)}")
        ph, pw = (size - k.shape[0]) // 2, (size - k.shape[1]) // 2
        out.append(F.pad(k, (pw, pw, ph, ph)))
    return torch.stack(out)


def kernel_downsample(hr: Tensor, kernels: list[Tensor] | Tensor, scale: int) -> Tensor:
    """Eq. 1 per image: ``hr[i]`` correlated with ``kernels[i]`` (replicate border, the
    ``blur`` convention of :mod:`lr_lightning.degrade`) and subsampled directly by ``scale``.

    One grouped, strided convolution over the batch (only the kept pixels are filtered); a single
    kernel is shared by the whole batch. ``H`` and ``W`` must be divisible by ``scale``.
    """
    if hr.dim() != 4:
        raise ValueError(f"hr must be (B, C, H, W), got {tuple(hr.shape)}")
    b, c, h, w = hr.shape
    if h % scale or w % scale:
        raise ValueError(f"image size {h}x{w} is not divisible by scale {scale}; mod-crop it first")
    k = stack_kernels(kernels).to(device=hr.device, dtype=hr.dtype)
    if k.shape[0] == 1 and b > 1:
        k = k.expand(b, -1, -1)
    if k.shape[0] != b:
        raise ValueError(f"{k.shape[0]} kernels for a batch of {b} images")
    size_h, size_w = k.shape[-2:]
    ph, pw = size_h // 2, size_w // 2
    x = F.pad(hr.reshape(1, b * c, h, w), (pw, pw, ph, ph), mode="replicate")
    weight = k.repeat_interleave(c, dim=0).unsqueeze(1)  # (B*C, 1, K, K)
    with torch.autocast(hr.device.type, enabled=False):
        y = F.conv2d(x, weight, stride=scale, groups=b * c)
    return y.reshape(b, c, h // scale, w // scale)


def bicubic_downsample(hr: Tensor, scale: int) -> Tensor:
    """``D_bic``: MATLAB ``imresize(hr, 1/scale)`` (clamped to [0, 1])."""
    return downsample(hr, scale, "bicubic_matlab")


def mod_crop(x: Tensor, scale: int) -> Tensor:
    """Crop the bottom/right so ``H`` and ``W`` are multiples of ``scale``."""
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]


def make_son(lr: Tensor, kernel: Tensor, scale: int) -> tuple[Tensor, Tensor]:
    """Alg. 2 line 2: ``(I_son, target)`` with ``I_son = (I_LR * k) downarrow_s`` of the mod-cropped
    ``I_LR`` (the target of the online L1 loss, Alg. 2 line 5)."""
    target = mod_crop(lr, scale)
    if min(target.shape[-2:]) < scale:
        raise ValueError(f"LR image {tuple(lr.shape[-2:])} is too small to make a son at scale {scale}")
    return kernel_downsample(target, kernel, scale), target


def quantize_8bit(x: Tensor) -> Tensor:
    """Round to the 8-bit grid (an LR image is stored as an 8-bit file)."""
    return (x.clamp(0, 1) * 255).round() / 255
