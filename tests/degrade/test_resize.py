"""Resizing / blurring operators checked against independent computations."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from lr_lightning.degrade import (
    DOWNSAMPLE_MODES,
    blur,
    downsample,
    gaussian_kernel,
    imresize_matlab,
    upsample,
)


def _data_root() -> Path | None:
    env = os.environ.get("LR_LIGHTNING_DATA")
    return Path(env) if env else None


def _rand(
    shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)


def _smooth_uint8_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth-ish random RGB uint8 image (band-limited noise plus a sharp bar).

    Values stay within ~[0.1, 0.9] so that no resampler overshoot gets clipped: PIL clips and
    rounds between its two separable passes, which adds up to ~2 levels of difference at
    saturated edges and would hide real discrepancies.
    """
    rng = np.random.default_rng(seed)
    coarse = rng.random((h // 8 + 2, w // 8 + 2, 3))
    img = ndimage.zoom(coarse, (h / coarse.shape[0], w / coarse.shape[1], 1), order=3)[:h, :w]
    img = 0.2 + 0.6 * np.clip(img, 0, 1)
    img[h // 3 : h // 2, :, 0] = 0.75  # a sharp bar
    return np.round(img * 255).astype(np.uint8)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return (
        torch.from_numpy(np.ascontiguousarray(img).copy()).permute(2, 0, 1)[None].to(torch.float64)
        / 255.0
    )


def _to_uint8_scale(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).double().numpy() * 255.0


# ----------------------------------------------------------------------------- pooling


@pytest.mark.parametrize("factor", [2, 3, 6])
def test_avg_and_max_pool_equal_block_reductions(factor: int) -> None:
    x = _rand((2, 3, 12, 18), seed=factor)
    b, c, h, w = x.shape
    blocks = x.reshape(b, c, h // factor, factor, w // factor, factor)
    torch.testing.assert_close(
        downsample(x, factor, "avg"), blocks.mean(dim=(3, 5)), rtol=0, atol=1e-6
    )
    assert torch.equal(downsample(x, factor, "max"), blocks.amax(dim=(3, 5)))


def test_area_equals_avg_and_nearest_is_top_left_subsampling() -> None:
    x = _rand((2, 3, 16, 24), seed=1)
    for f in (2, 4, 8):
        torch.testing.assert_close(
            downsample(x, f, "area"), downsample(x, f, "avg"), rtol=0, atol=1e-6
        )
        # torch's nearest picks source index floor(i * f): the top-left pixel of each block
        assert torch.equal(downsample(x, f, "nearest"), x[..., ::f, ::f])


@pytest.mark.parametrize("mode", ["max", "avg", "blur"])
def test_non_divisible_sizes_raise_helpful_error(mode: str) -> None:
    x = torch.rand(1, 3, 30, 32)
    kernel = gaussian_kernel(5, sigma=1.0) if mode == "blur" else None
    with pytest.raises(ValueError) as info:
        downsample(x, 4, mode, kernel)  # type: ignore[arg-type]
    msg = str(info.value)
    assert "30 x 32" in msg and "factor 4" in msg and "crop" in msg and "28 x 32" in msg


def test_unknown_mode_and_bad_arguments() -> None:
    x = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="valid choices are: 'max', 'avg'.*'blur'"):
        downsample(x, 2, "lanczos")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="upsample mode"):
        upsample(x, (16, 16), "area")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="factor"):
        downsample(x, 0, "avg")
    with pytest.raises(ValueError, match="needs a 2-D blur kernel"):
        downsample(x, 2, "blur")
    with pytest.raises(ValueError, match="only used by mode='blur'"):
        downsample(x, 2, "avg", gaussian_kernel(3, sigma=1.0))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        downsample(torch.rand(8, 8), 2, "avg")
    with pytest.raises(TypeError, match="floating-point"):
        downsample(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), 2, "avg")
    with pytest.raises(ValueError, match="exactly one"):
        imresize_matlab(x)


@pytest.mark.parametrize("mode", DOWNSAMPLE_MODES)
def test_output_shape_range_dtype_and_device(mode: str) -> None:
    kernel = gaussian_kernel(7, sigma=1.2) if mode == "blur" else None
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
            x = _rand((2, 3, 16, 24), seed=3, dtype=dtype).to(device)
            y = downsample(x, 4, mode, kernel)  # type: ignore[arg-type]
            assert y.shape == (2, 3, 4, 6) and y.dtype == dtype and y.device == x.device
            assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
            up = upsample(y, (16, 24), "bicubic_matlab" if mode == "bicubic_matlab" else "bicubic")
            assert up.shape == x.shape and up.dtype == dtype and up.device == x.device


# ----------------------------------------------------------------------------- torch bicubic vs PIL

# Measured (float64 torch output * 255 vs PIL's uint8 output; synthetic 96x120 image and the
# top-left 240x240 crop of Set5 baby), in 8-bit levels:
#   downscale x2, x3, x4: mean |diff| 0.26-0.28, max 0.82-0.99; torch output rounded to uint8
#                         is within 1 level of PIL everywhere.
#   upscale   x2, x3, x4: mean |diff| 0.12-0.32, max 0.98-1.06.
# The residual is PIL's 8-bit fixed-point arithmetic and its rounding between the horizontal
# and vertical passes.  (On saturated content PIL also clips between passes: up to ~2.6 levels.)
_DOWN_MEAN, _DOWN_MAX = 0.35 / 255, 1.25 / 255
_UP_MEAN, _UP_MAX = 0.4 / 255, 1.25 / 255


def _check_against_pil(img: np.ndarray) -> None:
    h, w = img.shape[:2]
    x = _to_tensor(img)
    for f in (2, 3, 4):
        hh, ww = h // f, w // f
        ours = _to_uint8_scale(downsample(x[..., : hh * f, : ww * f], f, "bicubic"))
        ref = np.asarray(
            Image.fromarray(img[: hh * f, : ww * f]).resize((ww, hh), Image.BICUBIC),
            dtype=np.float64,
        )
        err = np.abs(ours - ref) / 255
        assert err.mean() < _DOWN_MEAN and err.max() < _DOWN_MAX, (
            f,
            err.mean() * 255,
            err.max() * 255,
        )
        assert np.abs(np.round(ours) - ref).max() <= 1.0
    small = img[: h // 4, : w // 4]
    xs = _to_tensor(small)
    for f in (2, 3, 4):
        size = (small.shape[0] * f, small.shape[1] * f)
        ours = _to_uint8_scale(upsample(xs, size, "bicubic"))
        ref = np.asarray(Image.fromarray(small).resize(size[::-1], Image.BICUBIC), dtype=np.float64)
        err = np.abs(ours - ref) / 255
        assert err.mean() < _UP_MEAN and err.max() < _UP_MAX, (f, err.mean() * 255, err.max() * 255)


def test_bicubic_matches_pil_on_synthetic_image() -> None:
    _check_against_pil(_smooth_uint8_image(96, 120, seed=5))


def test_bicubic_matches_pil_on_set5_baby() -> None:
    root = _data_root()
    if root is None:
        pytest.skip("LR_LIGHTNING_DATA is not set (data root holding sr/Set5/baby.png)")
    path = root / "sr" / "Set5" / "baby.png"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    img = np.asarray(Image.open(path).convert("RGB"))[:240, :240]
    _check_against_pil(img)


# ----------------------------------------------------------------------------- MATLAB imresize


def _ref_cubic(t: float) -> float:
    a = abs(t)
    if a <= 1:
        return 1.5 * a**3 - 2.5 * a**2 + 1
    if a <= 2:
        return -0.5 * a**3 + 2.5 * a**2 - 4 * a + 2
    return 0.0


def _ref_axis(o: int, n: int, s: float) -> dict[int, float]:
    """MATLAB imresize contributions of input pixels to output pixel o (0-based), written as a plain loop."""
    u = (o + 1) / s + 0.5 * (1 - 1 / s)  # 1-based input coordinate
    if s < 1:
        width = 4 / s

        def h(t: float) -> float:
            return s * _ref_cubic(s * t)
    else:
        width = 4.0
        h = _ref_cubic
    first = math.floor(u - width / 2)
    taps = [(j, h(u - j)) for j in range(first, first + math.ceil(width) + 2)]
    total = sum(wt for _, wt in taps)
    out: dict[int, float] = {}
    for j, wt in taps:
        k = j - 1
        while not 0 <= k < n:  # symmetric padding: ... b a | a b c ... c | c b ...
            k = -k - 1 if k < 0 else 2 * n - 1 - k
        out[k] = out.get(k, 0.0) + wt / total
    return out


def _ref_imresize(img: np.ndarray, out_h: int, out_w: int, sh: float, sw: float) -> np.ndarray:
    res = np.zeros((out_h, out_w))
    for r in range(out_h):
        wr = _ref_axis(r, img.shape[0], sh)
        for c in range(out_w):
            wc = _ref_axis(c, img.shape[1], sw)
            res[r, c] = sum(wi * wj * img[i, j] for i, wi in wr.items() for j, wj in wc.items())
    return res


@pytest.mark.parametrize("scale", [0.5, 1 / 3, 0.25, 0.7, 2.0, 3.0, 1.5])
def test_imresize_matlab_matches_reference_loop(scale: float) -> None:
    img = np.random.default_rng(7).random((12, 12))
    x = torch.from_numpy(img)[None, None]
    ours = imresize_matlab(x, scale=scale)[0, 0].numpy()
    out = math.ceil(12 * scale - 1e-9)
    assert ours.shape == (out, out)
    np.testing.assert_allclose(ours, _ref_imresize(img, out, out, scale, scale), rtol=0, atol=1e-12)


def test_imresize_matlab_size_argument_non_square() -> None:
    img = np.random.default_rng(8).random((12, 10))
    x = torch.from_numpy(img)[None, None]
    ours = imresize_matlab(x, size=(5, 23))[0, 0].numpy()
    np.testing.assert_allclose(ours, _ref_imresize(img, 5, 23, 5 / 12, 23 / 10), rtol=0, atol=1e-12)


def test_imresize_matlab_properties() -> None:
    x = _rand((2, 3, 20, 16), seed=9, dtype=torch.float64)
    assert torch.allclose(
        imresize_matlab(x, scale=1.0), x, rtol=0, atol=1e-15
    )  # x1 is the identity
    const = torch.full((1, 2, 17, 13), 0.37, dtype=torch.float64)
    for s in (0.25, 0.5, 1 / 3, 2.0, 3.5):
        torch.testing.assert_close(
            imresize_matlab(const, scale=s), torch.full_like(imresize_matlab(const, scale=s), 0.37)
        )
    # a linear ramp is reproduced exactly away from the border, sampled at MATLAB's
    # output positions u = (i + 0.5) / s - 0.5 (0-based): cubic a=-0.5 reproduces linear functions
    ramp = torch.arange(40, dtype=torch.float64).repeat(40, 1)[None, None]
    for s in (0.25, 0.5, 2.0):
        y = imresize_matlab(ramp, scale=s)[0, 0]
        u = (torch.arange(y.shape[1], dtype=torch.float64) + 0.5) / s - 0.5
        m = 3 if s < 1 else math.ceil(3 * s)  # output pixels whose taps all lie inside the image
        torch.testing.assert_close(
            y[m:-m, m:-m], u[m:-m].expand(y.shape[0] - 2 * m, -1), rtol=0, atol=1e-9
        )
    # interior pixels agree with torch's antialiased (PIL-style, a=-0.5) bicubic: same kernel, same grid,
    # only the border handling differs (MATLAB mirrors, PIL renormalises truncated weights)
    x = _rand((1, 3, 48, 48), seed=10, dtype=torch.float64)
    for f in (2, 3, 4):
        ref = F.interpolate(
            x, size=(48 // f, 48 // f), mode="bicubic", antialias=True, align_corners=False
        )
        torch.testing.assert_close(
            imresize_matlab(x, scale=1 / f)[..., 2:-2, 2:-2],
            ref[..., 2:-2, 2:-2],
            rtol=0,
            atol=1e-12,
        )


def test_bicubic_matlab_modes_and_float32_precision() -> None:
    x = _rand((2, 3, 24, 24), seed=11, dtype=torch.float64)
    y = downsample(x, 4, "bicubic_matlab")
    torch.testing.assert_close(y, imresize_matlab(x, scale=0.25).clamp(0, 1))
    y32 = downsample(x.float(), 4, "bicubic_matlab")
    assert (y32.double() - y).abs().max() < 1e-6
    up = upsample(y, (24, 24), "bicubic_matlab")
    torch.testing.assert_close(up, imresize_matlab(y, size=(24, 24)).clamp(0, 1))


# ----------------------------------------------------------------------------- blur


_SCIPY_MODE = {"replicate": "nearest", "reflect": "mirror", "circular": "wrap", "zeros": "constant"}


@pytest.mark.parametrize("padding_mode", list(_SCIPY_MODE))
@pytest.mark.parametrize("kshape", [(5, 5), (4, 6), (7, 3)])
def test_blur_matches_scipy_correlate(padding_mode: str, kshape: tuple[int, int]) -> None:
    x = _rand((2, 3, 16, 20), seed=12)
    kernel = _rand(kshape, seed=13)
    kernel = kernel / kernel.sum()
    ours = blur(x, kernel, padding_mode=padding_mode)  # type: ignore[arg-type]
    ref = np.stack(
        [
            np.stack(
                [
                    ndimage.correlate(
                        x[b, c].double().numpy(),
                        kernel.double().numpy(),
                        mode=_SCIPY_MODE[padding_mode],
                    )
                    for c in range(3)
                ]
            )
            for b in range(2)
        ]
    )
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_blur_downsample_matches_scipy_then_subsample(factor: int) -> None:
    x = _rand((2, 3, 24, 36), seed=factor)
    kernel = gaussian_kernel(9, sigma_x=1.5, sigma_y=0.8, theta=0.4)
    ours = downsample(x, factor, "blur", kernel)
    for b in range(2):
        for c in range(3):
            ref = ndimage.correlate(
                x[b, c].double().numpy(), kernel.double().numpy(), mode="nearest"
            )[::factor, ::factor]
            np.testing.assert_allclose(ours[b, c].numpy(), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours, blur(x, kernel)[..., ::factor, ::factor], rtol=0, atol=1e-6)


def test_blur_errors() -> None:
    x = torch.rand(1, 1, 6, 6)
    with pytest.raises(ValueError, match="2-D"):
        blur(x, torch.ones(1, 3, 3))
    with pytest.raises(ValueError, match="reflect"):
        blur(x, torch.ones(15, 15) / 225, padding_mode="reflect")
    with pytest.raises(ValueError, match="valid choices"):
        blur(x, torch.ones(3, 3) / 9, padding_mode="symmetric")  # type: ignore[arg-type]


def test_upsample_nearest_is_pixel_replication() -> None:
    x = _rand((2, 3, 5, 7), seed=14)
    y = upsample(x, (15, 21), "nearest")
    assert torch.equal(y, x.repeat_interleave(3, dim=-2).repeat_interleave(3, dim=-1))


def test_ops_are_differentiable() -> None:
    x = _rand((1, 2, 8, 8), seed=15, dtype=torch.float64).requires_grad_(True)
    for mode in ("avg", "bilinear", "bicubic_matlab"):
        x.grad = None
        downsample(x, 2, mode).sum().backward()  # type: ignore[arg-type]
        assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("mode", DOWNSAMPLE_MODES)
def test_autocast_and_channels_last_do_not_change_results(mode: str) -> None:
    kernel = gaussian_kernel(5, sigma=1.0) if mode == "blur" else None
    x = _rand((2, 3, 16, 16), seed=16)
    ref = downsample(x, 4, mode, kernel)  # type: ignore[arg-type]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = downsample(x, 4, mode, kernel)  # type: ignore[arg-type]
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-6)
    y_cl = downsample(x.contiguous(memory_format=torch.channels_last), 4, mode, kernel)  # type: ignore[arg-type]
    torch.testing.assert_close(y_cl, ref, rtol=0, atol=1e-6)
