"""Resizing operators used to synthesise low-resolution (LR) images.

Every function here is a pure tensor function on batched ``(B, C, H, W)``
floating-point images with values in ``[0, 1]``.  Outputs stay on the input's
device and keep its dtype; the batch is always processed in one vectorised
call (no per-sample Python loops).  An ambient autocast (e.g. Lightning's
``bf16-mixed``) is switched off inside the matrix products and convolutions,
so a float32 batch is degraded in float32 whatever the training precision.

Where the operators come from:

* ``"max"`` / ``"avg"`` pooling with ``kernel = stride = factor`` are the two
  downsampling methods of the meta-learning task space in paper A ("Towards
  end-to-end low-resolution image classification without super-resolution
  network by meta-learning on downsampling and quantization", Sec. 3 and
  Sec. 4.2).
* ``"blur"`` is the classical SR degradation of paper E (on-device
  meta-learned integer SR), Eq. 1, ``I_LR = (I_HR * k) downarrow_s``, which
  it takes from MZSR: filter with a blur kernel ``k`` and subsample directly.
* ``"bicubic_matlab"`` reproduces MATLAB's ``imresize`` (bicubic, a = -0.5,
  antialiased when shrinking), the "bicubic" degradation that SR benchmarks
  and MZSR/paper E's bicubic pre-training data are defined with.
* ``"bicubic"`` / ``"bilinear"`` / ``"area"`` / ``"nearest"`` are the usual
  PyTorch resamplers (``bicubic`` with ``antialias=True`` matches PIL's
  ``Image.BICUBIC``; paper A validates on bicubic-degraded 32x32 inputs).
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DownsampleMode",
    "UpsampleMode",
    "PaddingMode",
    "DOWNSAMPLE_MODES",
    "UPSAMPLE_MODES",
    "PADDING_MODES",
    "downsample",
    "upsample",
    "imresize_matlab",
    "blur",
]

DownsampleMode = Literal[
    "max", "avg", "area", "nearest", "bilinear", "bicubic", "bicubic_matlab", "blur"
]
UpsampleMode = Literal["nearest", "bilinear", "bicubic", "bicubic_matlab"]
PaddingMode = Literal["reflect", "replicate", "circular", "zeros"]

DOWNSAMPLE_MODES: tuple[str, ...] = get_args(DownsampleMode)
UPSAMPLE_MODES: tuple[str, ...] = get_args(UpsampleMode)
PADDING_MODES: tuple[str, ...] = get_args(PaddingMode)

# Modes whose output grid is an exact block grid of the input: they need H and
# W to be multiples of the factor.
_BLOCK_MODES = ("max", "avg", "blur")
_REDUCED_PRECISION = (torch.float16, torch.bfloat16)


def _no_autocast(x: Tensor) -> contextlib.AbstractContextManager[object]:
    """Disable an ambient autocast (e.g. Lightning ``bf16-mixed``) for the exact linear ops here."""
    if torch.amp.is_autocast_available(x.device.type):
        return torch.autocast(device_type=x.device.type, enabled=False)
    return contextlib.nullcontext()


def _check_image(x: Tensor, what: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"{what} must be a batched image tensor of shape (B, C, H, W), got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{what} must be a floating-point tensor with values in [0, 1], got dtype {x.dtype}"
        )


def _check_factor(factor: int) -> None:
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")


def _check_divisible(x: Tensor, factor: int, mode: str) -> None:
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(
            f"downsample mode {mode!r} needs the image size to be divisible by the factor, but "
            f"H x W = {h} x {w} is not divisible by factor {factor}; crop the image first "
            f"(mod-crop to {h - h % factor} x {w - w % factor}, e.g. x[..., :{h - h % factor}, :{w - w % factor}])"
        )


def _unknown(kind: str, value: object, valid: tuple[str, ...]) -> ValueError:
    return ValueError(
        f"unknown {kind} {value!r}; valid choices are: {', '.join(repr(v) for v in valid)}"
    )


def _interpolate(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """``F.interpolate`` with antialiasing for (bi)linear/cubic, preserving dtype.

    PyTorch's antialiased kernels are not implemented for float16/bfloat16 on
    CPU, so reduced-precision inputs are resampled in float32 and cast back.
    """
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    work = x.float() if x.dtype in _REDUCED_PRECISION else x
    y = F.interpolate(work, size=size, mode=mode, align_corners=False, antialias=True)
    if mode == "bicubic":
        y = y.clamp(0.0, 1.0)
    return y.to(x.dtype)


def downsample(
    x: Tensor, factor: int, mode: DownsampleMode = "bicubic", kernel: Tensor | None = None
) -> Tensor:
    """Downsample a batch of images by an integer ``factor``.

    Args:
        x: ``(B, C, H, W)`` float images in ``[0, 1]``.
        factor: integer scale factor ``f >= 1``.
        mode: one of

            * ``"max"`` / ``"avg"``: ``F.max_pool2d`` / ``F.avg_pool2d`` with
              ``kernel_size = stride = f`` (paper A's two downsampling
              methods).  Needs ``H``, ``W`` divisible by ``f``.
            * ``"area"``: ``F.interpolate(mode="area")`` (adaptive average
              pooling; equals ``"avg"`` for divisible sizes).
            * ``"nearest"``: ``F.interpolate(mode="nearest")``.  PyTorch's
              nearest picks source index ``floor(i * f)``, i.e. the *top-left*
              pixel of every ``f x f`` block, so for divisible sizes the result
              is exactly ``x[..., ::f, ::f]`` (plain direct subsampling), not
              the block centre (``"nearest-exact"`` would pick
              ``floor((i + 0.5) * f)``).  Paper C (PatchDrop) does not state
              which resampler produced its LR images (Fig. 5 only gives the
              ratio "ds"); this mode is the no-filtering option.
            * ``"bilinear"`` / ``"bicubic"``: ``F.interpolate`` with
              ``antialias=True, align_corners=False`` (PIL-compatible, cubic
              coefficient a = -0.5); the bicubic output is clamped to
              ``[0, 1]``.
            * ``"bicubic_matlab"``: MATLAB ``imresize(x, 1/f)`` (see
              :func:`imresize_matlab`), clamped to ``[0, 1]``.
            * ``"blur"``: paper E Eq. 1 / MZSR: correlate every channel with
              the 2-D ``kernel`` (replicate boundary = ``scipy.ndimage``
              ``mode="nearest"``, see :func:`blur`) and subsample directly,
              ``y = blur(x, kernel)[..., ::f, ::f]``; the sampling grid starts
              at pixel ``(0, 0)``.  Needs ``H``, ``W`` divisible by ``f``.
              Computed as one strided convolution, so only the kept pixels are
              filtered.
        kernel: the 2-D blur kernel, required for (and only used by)
            ``mode="blur"``.

    Returns:
        ``(B, C, H // f, W // f)`` for all modes except ``"bicubic_matlab"``,
        which follows MATLAB and returns ``ceil(H / f) x ceil(W / f)``; the two
        agree whenever ``H`` and ``W`` are multiples of ``f`` (mod-crop the HR
        image first, as SR pipelines do).  For the interpolation modes on
        non-divisible sizes the whole input is mapped onto the output grid
        (``F.interpolate(size=...)`` semantics).

    Raises:
        ValueError: unknown mode, bad factor, ``H``/``W`` not divisible by
            ``f`` for ``"max"``/``"avg"``/``"blur"``, missing kernel for
            ``"blur"``.
    """
    _check_image(x)
    _check_factor(factor)
    if mode not in DOWNSAMPLE_MODES:
        raise _unknown("downsample mode", mode, DOWNSAMPLE_MODES)
    if kernel is not None and mode != "blur":
        raise ValueError(
            f"a blur kernel was given but mode is {mode!r}; kernels are only used by mode='blur'"
        )
    if mode in _BLOCK_MODES:
        _check_divisible(x, factor, mode)
    if mode == "max":
        return F.max_pool2d(x, kernel_size=factor, stride=factor)
    if mode == "avg":
        return F.avg_pool2d(x, kernel_size=factor, stride=factor)
    if mode == "blur":
        if kernel is None:
            raise ValueError(
                "mode='blur' needs a 2-D blur kernel (e.g. gaussian_kernel(...) or load_kernel(path))"
            )
        return blur(x, kernel, padding_mode="replicate", stride=factor)
    if mode == "bicubic_matlab":
        return imresize_matlab(x, scale=1.0 / factor).clamp(0.0, 1.0)
    h, w = x.shape[-2:]
    if h < factor or w < factor:
        raise ValueError(
            f"image of size {h} x {w} is smaller than the downsampling factor {factor}"
        )
    return _interpolate(x, (h // factor, w // factor), mode)


def upsample(x: Tensor, size: tuple[int, int], mode: UpsampleMode = "bicubic") -> Tensor:
    """Resize a batch of (LR) images to ``size = (H, W)``, e.g. back to the HR size.

    Used to feed an LR image to a network that expects the HR input size
    (the "pre-upsampling" setting; bicubic upsampling is also the usual
    baseline SR method in paper E's tables).

    Args:
        x: ``(B, C, h, w)`` float images in ``[0, 1]``.
        size: target ``(H, W)``.
        mode: ``"nearest"`` (``F.interpolate`` nearest: pixel replication for
            integer factors), ``"bilinear"`` / ``"bicubic"`` (``F.interpolate``
            with ``align_corners=False, antialias=True``, i.e. PIL-compatible,
            a = -0.5, the same kernel as :func:`downsample`'s ``"bicubic"``),
            or ``"bicubic_matlab"`` (:func:`imresize_matlab`).  Bicubic outputs
            are clamped to ``[0, 1]``.

    Returns:
        ``(B, C, H, W)`` tensor with the input's dtype and device.
    """
    _check_image(x)
    if mode not in UPSAMPLE_MODES:
        raise _unknown("upsample mode", mode, UPSAMPLE_MODES)
    size = _check_size(size)
    if mode == "bicubic_matlab":
        return imresize_matlab(x, size=size).clamp(0.0, 1.0)
    return _interpolate(x, size, mode)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = size
    except (TypeError, ValueError):
        raise ValueError(f"size must be a pair (H, W) of positive integers, got {size!r}") from None
    for s in (h, w):
        if isinstance(s, torch.SymInt):  # a symbolic size while exporting with dynamic H / W
            continue
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"size must be a pair (H, W) of positive integers, got {size!r}")
    return (h if isinstance(h, torch.SymInt) else int(h)), (w if isinstance(w, torch.SymInt) else int(w))


# --------------------------------------------------------------------------- MATLAB imresize


def _matlab_cubic(t: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    a = t.abs()
    a2 = a * a
    a3 = a2 * a
    inner = 1.5 * a3 - 2.5 * a2 + 1.0
    outer = -0.5 * a3 + 2.5 * a2 - 4.0 * a + 2.0
    return torch.where(a <= 1.0, inner, torch.where(a <= 2.0, outer, torch.zeros_like(a)))


@functools.lru_cache(maxsize=128)
def _matlab_weights_cpu(in_len: int, out_len: int, scale: float) -> Tensor:
    """Dense ``(out_len, in_len)`` float64 MATLAB ``imresize`` bicubic weight matrix.

    Mirrors MATLAB's ``contributions``: output pixel ``i`` (1-based) samples
    input coordinate ``u = i / scale + 0.5 * (1 - 1 / scale)``; when shrinking
    (``scale < 1``) the kernel is stretched to ``scale * cubic(scale * t)``
    with width ``4 / scale`` (antialiasing); each row is normalised to sum 1;
    out-of-range taps are folded back with symmetric (half-sample) mirroring,
    MATLAB's ``[1:in, in:-1:1]`` index wrap.
    """
    antialias = scale < 1.0
    width = 4.0 / scale if antialias else 4.0
    i = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = i / scale + 0.5 * (1.0 - 1.0 / scale)
    left = torch.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # 1-based input indices
    dist = u[:, None] - idx
    w = scale * _matlab_cubic(scale * dist) if antialias else _matlab_cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)
    mirror = torch.cat([torch.arange(in_len), torch.arange(in_len - 1, -1, -1)])
    src = mirror[torch.remainder(idx.long() - 1, 2 * in_len)]
    mat = torch.zeros(out_len, in_len, dtype=torch.float64)
    mat.scatter_add_(1, src, w)
    return mat


@functools.lru_cache(maxsize=128)
def _matlab_weights(
    in_len: int, out_len: int, scale: float, dtype: torch.dtype, device: torch.device
) -> Tensor:
    return _matlab_weights_cpu(in_len, out_len, scale).to(device=device, dtype=dtype)


def imresize_matlab(
    x: Tensor, scale: float | None = None, size: tuple[int, int] | None = None
) -> Tensor:
    """MATLAB-compatible bicubic ``imresize`` for batched float images (up- and downscaling).

    Reproduces ``imresize(img, scale)`` / ``imresize(img, [H W])`` with the
    default ``'bicubic'`` method and ``'Antialiasing', true`` on double
    images: cubic kernel a = -0.5, kernel stretched by ``1/scale`` when
    shrinking, symmetric boundary mirroring, rows of weights normalised to 1.
    This is the degradation used to build the standard SR benchmarks and the
    bicubic pre-training pairs of MZSR / paper E.  It is computed exactly as
    two separable matrix products ``W_h @ x @ W_w^T`` with cached ``(out, in)``
    weight matrices, so it is fast and differentiable.

    Exactly one of ``scale`` and ``size`` must be given.  With ``scale`` the
    output is ``ceil(scale * H) x ceil(scale * W)`` (as MATLAB; a 1e-9 slack
    absorbs float round-off such as ``0.1 * 30 = 3.0000000000000004``) and
    the kernel uses ``scale`` itself; with ``size = (H', W')`` the per-axis
    scales are ``H'/H`` and ``W'/W``.

    Unlike :func:`downsample` / :func:`upsample`, the result is *not* clamped
    (MATLAB on double inputs does not clamp either; bicubic overshoot can
    leave ``[0, 1]`` slightly).  float16/bfloat16 inputs are computed in
    float32 and cast back; float32 inputs use float32 matrices (max error vs
    float64 ~1e-7); float64 inputs are exact to double precision.
    """
    _check_image(x)
    if (scale is None) == (size is None):
        raise ValueError("imresize_matlab needs exactly one of scale= or size=")
    in_h, in_w = x.shape[-2:]
    if scale is not None:
        if (
            isinstance(scale, bool)
            or not isinstance(scale, (int, float))
            or not math.isfinite(scale)
            or scale <= 0
        ):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        scale_h = scale_w = float(scale)
        out_h = max(1, math.ceil(in_h * scale_h - 1e-9))
        out_w = max(1, math.ceil(in_w * scale_w - 1e-9))
    else:
        out_h, out_w = _check_size(size)  # type: ignore[arg-type]
        scale_h, scale_w = out_h / in_h, out_w / in_w
    work_dtype = torch.float32 if x.dtype in _REDUCED_PRECISION else x.dtype
    w_h = _matlab_weights(in_h, out_h, scale_h, work_dtype, x.device)
    w_w = _matlab_weights(in_w, out_w, scale_w, work_dtype, x.device)
    with _no_autocast(x):
        y = torch.matmul(torch.matmul(w_h, x.to(work_dtype)), w_w.transpose(0, 1))
    return y.to(x.dtype)


# --------------------------------------------------------------------------- blur

_TORCH_PAD = {
    "reflect": "reflect",
    "replicate": "replicate",
    "circular": "circular",
    "zeros": "constant",
}


def blur(
    x: Tensor, kernel: Tensor, padding_mode: PaddingMode = "replicate", stride: int = 1
) -> Tensor:
    """Correlate every channel of ``x`` with the same 2-D ``kernel`` ("same" output size).

    This is the ``I_HR * k`` part of the blur-then-subsample degradation of
    paper E, Eq. 1 (from MZSR).  It is a *correlation* (``F.conv2d``
    semantics), like ``scipy.ndimage.correlate``; for the symmetric Gaussian
    kernels used there it equals a convolution, and for an asymmetric kernel
    ``k`` pass ``k.flip(-2, -1)`` to convolve.

    The kernel's anchor is pixel ``(kh // 2, kw // 2)`` (the centre for odd
    sizes; for even sizes the lower-right of the four central pixels), which
    is ``scipy.ndimage``'s default ``origin=0``.  Boundary handling, with the
    equivalent ``scipy.ndimage`` mode:

    ====================  ==========================  ====================
    ``padding_mode``      extension                   scipy ``mode``
    ====================  ==========================  ====================
    ``"replicate"``       ``a a a | a b c d``         ``"nearest"``
    ``"reflect"``         ``d c b | a b c d``         ``"mirror"``
    ``"circular"``        ``b c d | a b c d``         ``"wrap"``
    ``"zeros"``           ``0 0 0 | a b c d``         ``"constant"`` (0)
    ====================  ==========================  ====================

    (``scipy``'s own ``"reflect"`` is the half-sample ``c b a | a b c d``,
    which torch does not offer; use ``"replicate"``/``"nearest"`` to compare.)

    Args:
        x: ``(B, C, H, W)`` float images.
        kernel: 2-D ``(kh, kw)`` float kernel, cast to ``x``'s dtype/device.
            Not normalised here; no clamping is applied (the result stays in
            ``[0, 1]`` for non-negative kernels summing to 1).
        padding_mode: boundary extension, see the table.
        stride: keep every ``stride``-th output pixel starting at ``(0, 0)``
            (``blur(x, k, stride=f) == blur(x, k)[..., ::f, ::f]``), computed
            without filtering the discarded pixels.

    Returns:
        ``(B, C, ceil(H / stride), ceil(W / stride))`` tensor.
    """
    _check_image(x)
    if not isinstance(kernel, Tensor) or kernel.dim() != 2 or kernel.numel() == 0:
        shape = tuple(kernel.shape) if isinstance(kernel, Tensor) else type(kernel).__name__
        raise ValueError(f"kernel must be a non-empty 2-D tensor (kh, kw), got {shape}")
    if padding_mode not in _TORCH_PAD:
        raise _unknown("padding_mode", padding_mode, PADDING_MODES)
    _check_factor(stride)
    b, c, h, w = x.shape
    kh, kw = kernel.shape
    top, left = kh // 2, kw // 2
    bottom, right = kh - 1 - top, kw - 1 - left
    if padding_mode == "reflect" and (max(top, bottom) >= h or max(left, right) >= w):
        raise ValueError(
            f"padding_mode='reflect' needs the kernel half-size ({top}, {left}) to be smaller than the "
            f"image size {h} x {w}; use padding_mode='replicate' or a smaller kernel"
        )
    # One single-channel convolution over the (B*C) images is faster on CPU
    # than a depthwise (groups=C) convolution and gives the same result.
    flat = x.reshape(b * c, 1, h, w)
    if padding_mode == "zeros":
        padded = F.pad(flat, (left, right, top, bottom), mode="constant", value=0.0)
    else:
        padded = F.pad(flat, (left, right, top, bottom), mode=_TORCH_PAD[padding_mode])
    weight = kernel.to(device=x.device, dtype=x.dtype).reshape(1, 1, kh, kw)
    with _no_autocast(x):
        out = F.conv2d(padded, weight, stride=stride)
    return out.reshape(b, c, out.shape[-2], out.shape[-1])
