"""Blur kernels for the blur-then-subsample degradation.

Paper E (on-device meta-learned integer SR) Eq. 1 models an LR image as
``I_LR = (I_HR * k) downarrow_s``; following MZSR it meta-trains over a
distribution ``p(k)`` of Gaussian kernels with random covariance and
evaluates on Set5 degraded with Gaussian kernels and direct x4 subsampling.
This module builds such kernels (:func:`gaussian_kernel`), samples them
reproducibly (:func:`random_gaussian_kernel`) and loads stored ones
(:func:`load_kernel`, e.g. the ``sr/kernels/*.npy`` files of the shared data
root).  Apply them with :func:`lr_lightning.degrade.blur` or
``downsample(x, f, "blur", kernel)``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["gaussian_kernel", "random_gaussian_kernel", "load_kernel", "gaussian_kernel_size"]


def gaussian_kernel_size(sigma: float) -> int:
    """Odd kernel size ``2 * ceil(3 * sigma) + 1`` covering +-3 sigma."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}")
    return 2 * math.ceil(3.0 * sigma) + 1


def _positive(name: str, value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def gaussian_kernel(
    size: int,
    sigma: float | None = None,
    sigma_x: float | None = None,
    sigma_y: float | None = None,
    theta: float = 0.0,
    cov: Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """A ``(size, size)`` Gaussian blur kernel that sums to 1, centred on the middle pixel.

    The kernel is the Gaussian density sampled at integer pixel offsets
    ``d = (dx, dy)`` from the centre, ``dx`` along columns (x, to the right)
    and ``dy`` along rows (y, downwards, image convention), then normalised:
    ``k[i, j] ∝ exp(-d^T Σ^{-1} d / 2)`` with ``d = (j - c, i - c)``,
    ``c = size // 2``.  Give exactly one of

    * ``sigma``: isotropic, ``Σ = sigma^2 I``;
    * ``sigma_x`` and ``sigma_y`` (and optionally ``theta``, radians):
      anisotropic, ``Σ = R diag(sigma_x^2, sigma_y^2) R^T`` with
      ``R = [[cos θ, -sin θ], [sin θ, cos θ]]`` (rotation from the x axis
      towards the y axis, which is clockwise on screen as y points down);
    * ``cov``: a 2x2 symmetric positive-definite ``Σ`` in ``(x, y)`` order.

    For sizes of at least ``2 * ceil(3 * sigma_max) + 1`` the weights'
    covariance over pixel offsets equals ``Σ`` to within truncation error
    (~1% at 3 sigma, ~1e-5 at 5 sigma).  This is the isotropic/anisotropic
    Gaussian family of MZSR / paper E's kernel distribution ``p(k)``.

    Args:
        size: odd kernel size (even sizes have no middle pixel and raise).
        dtype: floating dtype of the result (computed in float64).
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ValueError(
            f"size must be an odd positive integer so the kernel has a centre pixel, got {size!r}"
        )
    given = [sigma is not None, sigma_x is not None or sigma_y is not None, cov is not None]
    if sum(given) != 1:
        raise ValueError("give exactly one of sigma=, (sigma_x=, sigma_y=) or cov=")
    if sigma is not None:
        s = _positive("sigma", sigma)
        sigma_mat = torch.tensor([[s * s, 0.0], [0.0, s * s]], dtype=torch.float64)
    elif cov is not None:
        sigma_mat = torch.as_tensor(cov, dtype=torch.float64).detach().cpu()
        if sigma_mat.shape != (2, 2):
            raise ValueError(f"cov must be a 2x2 matrix, got shape {tuple(sigma_mat.shape)}")
        if not torch.allclose(sigma_mat, sigma_mat.T, rtol=1e-6, atol=1e-12):
            raise ValueError(f"cov must be symmetric, got {sigma_mat.tolist()}")
        if not bool(torch.all(torch.linalg.eigvalsh(sigma_mat) > 0)):
            raise ValueError(f"cov must be positive definite, got {sigma_mat.tolist()}")
    else:
        if sigma_x is None or sigma_y is None:
            raise ValueError("anisotropic kernels need both sigma_x= and sigma_y=")
        sx, sy = _positive("sigma_x", sigma_x), _positive("sigma_y", sigma_y)
        if not math.isfinite(theta):
            raise ValueError(f"theta must be finite, got {theta!r}")
        cos, sin = math.cos(theta), math.sin(theta)
        rot = torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float64)
        sigma_mat = rot @ torch.diag(torch.tensor([sx * sx, sy * sy], dtype=torch.float64)) @ rot.T
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    prec = torch.linalg.inv(sigma_mat)
    offsets = torch.arange(size, dtype=torch.float64) - size // 2
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    quad = prec[0, 0] * dx * dx + 2.0 * prec[0, 1] * dx * dy + prec[1, 1] * dy * dy
    k = torch.exp(-0.5 * quad)
    return (k / k.sum()).to(dtype)


def random_gaussian_kernel(
    size: int,
    sigma_range: tuple[float, float],
    generator: torch.Generator,
    isotropic_prob: float = 0.5,
) -> Tensor:
    """Sample a random Gaussian blur kernel, reproducibly from ``generator``.

    For MZSR-style meta-training over kernels (paper E's kernel distribution
    ``p(k)``): with probability ``isotropic_prob`` an isotropic kernel with
    ``sigma ~ U(sigma_range)``; otherwise an anisotropic one with independent
    ``sigma_x, sigma_y ~ U(sigma_range)`` and ``theta ~ U(0, pi)``.  Paper E
    itself uses isotropic kernels only (``isotropic_prob=1``); MZSR also
    uses anisotropic ones.  Every call consumes exactly four uniforms from
    ``generator`` (whatever the branch), so a seeded generator gives the same
    kernel sequence.

    Returns:
        ``(size, size)`` float32 kernel summing to 1 (on CPU).
    """
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    try:
        lo, hi = (float(v) for v in sigma_range)
    except (TypeError, ValueError):
        raise ValueError(f"sigma_range must be a pair (low, high), got {sigma_range!r}") from None
    if not 0 < lo <= hi or not math.isfinite(hi):
        raise ValueError(f"sigma_range must satisfy 0 < low <= high < inf, got {sigma_range!r}")
    if not 0.0 <= isotropic_prob <= 1.0:
        raise ValueError(f"isotropic_prob must be in [0, 1], got {isotropic_prob!r}")
    u = (
        torch.rand(4, generator=generator, dtype=torch.float64, device=generator.device)
        .cpu()
        .tolist()
    )
    if u[0] < isotropic_prob:
        return gaussian_kernel(size, sigma=lo + (hi - lo) * u[1])
    return gaussian_kernel(
        size, sigma_x=lo + (hi - lo) * u[1], sigma_y=lo + (hi - lo) * u[2], theta=math.pi * u[3]
    )


def load_kernel(path: str | os.PathLike) -> Tensor:
    """Load a 2-D blur kernel from a ``.npy`` file as a float32 tensor summing to 1.

    Meant for stored benchmark kernels such as the Gaussian / motion kernels
    in ``<data root>/sr/kernels/*.npy`` (MZSR / paper E evaluation kernels).
    The kernel is always renormalised to sum exactly 1 (stored float32
    kernels are typically off by ~1e-7, and a blur must preserve the mean
    intensity), so an unnormalised but otherwise valid kernel is accepted.

    Raises:
        FileNotFoundError: the file does not exist (message names it).
        ValueError: the file cannot be read as a numeric ``.npy`` array, is
            not 2-D, is empty, has non-finite values or a non-positive sum
            (messages name the file).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"blur kernel file not found: {str(p)!r}")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"cannot read blur kernel file {str(p)!r} as a .npy array: {exc}") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise ValueError(f"blur kernel file {str(p)!r} does not hold a numeric array")
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(
            f"blur kernel file {str(p)!r} holds an array of shape {arr.shape}; expected a 2-D (kh, kw) kernel"
        )
    k = torch.from_numpy(arr.astype(np.float64))
    if not bool(torch.isfinite(k).all()):
        raise ValueError(f"blur kernel file {str(p)!r} contains non-finite values")
    total = float(k.sum())
    if not total > 0:
        raise ValueError(
            f"blur kernel file {str(p)!r} has a non-positive sum ({total}); cannot normalise it"
        )
    return (k / total).to(torch.float32)
