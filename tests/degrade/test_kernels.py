"""Gaussian / stored blur kernels checked through their measured moments."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lr_lightning.degrade import (
    gaussian_kernel,
    gaussian_kernel_size,
    load_kernel,
    random_gaussian_kernel,
)


def _kernel_dir() -> Path:
    env = os.environ.get("LR_LIGHTNING_DATA")
    if not env:
        pytest.skip("LR_LIGHTNING_DATA is not set (data root holding sr/kernels/*.npy)")
    path = Path(env) / "sr" / "kernels"
    if not path.is_dir() or not any(path.glob("*.npy")):
        pytest.skip(f"no .npy kernels in {path}")
    return path


def _moments(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the pixel offsets (x = column, y = row) weighted by the kernel."""
    k = k.double() / k.double().sum()
    h, w = k.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    mx, my = (k * xs).sum(), (k * ys).sum()
    dx, dy = xs - mx, ys - my
    cov = torch.stack(
        [
            torch.stack([(k * dx * dx).sum(), (k * dx * dy).sum()]),
            torch.stack([(k * dx * dy).sum(), (k * dy * dy).sum()]),
        ]
    )
    return torch.stack([mx, my]), cov


@pytest.mark.parametrize("sigma", [0.8, 1.0, 2.0, 3.5])
def test_isotropic_kernel_sums_to_one_is_centred_and_has_variance_sigma2(sigma: float) -> None:
    size = 2 * math.ceil(5 * sigma) + 1
    k = gaussian_kernel(size, sigma=sigma)
    assert k.shape == (size, size) and k.dtype == torch.float32
    assert abs(float(k.double().sum()) - 1.0) < 1e-6
    mean, cov = _moments(k)
    torch.testing.assert_close(
        mean, torch.tensor([size // 2, size // 2], dtype=torch.float64), rtol=0, atol=1e-5
    )
    assert (
        abs(float(cov[0, 0]) / sigma**2 - 1) < 0.02 and abs(float(cov[1, 1]) / sigma**2 - 1) < 0.02
    )
    assert abs(float(cov[0, 1])) < 1e-6 * sigma**2
    assert int(k.argmax()) == (size * size) // 2  # peak on the middle pixel
    torch.testing.assert_close(k, k.T)


@pytest.mark.parametrize(
    ("sx", "sy", "theta"),
    [(2.0, 1.0, 0.0), (3.0, 1.2, 0.5), (1.5, 2.5, -1.1), (2.5, 1.0, math.pi / 2)],
)
def test_anisotropic_covariance_is_r_diag_rt(sx: float, sy: float, theta: float) -> None:
    size = 2 * math.ceil(5 * max(sx, sy)) + 1
    k = gaussian_kernel(size, sigma_x=sx, sigma_y=sy, theta=theta, dtype=torch.float64)
    assert abs(float(k.sum()) - 1.0) < 1e-12
    _, cov = _moments(k)
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    expected = rot @ torch.diag(torch.tensor([sx**2, sy**2], dtype=torch.float64)) @ rot.T
    assert float((cov - expected).abs().max()) < 0.03 * max(sx, sy) ** 2
    # the same kernel from its covariance matrix
    torch.testing.assert_close(
        gaussian_kernel(size, cov=expected, dtype=torch.float64), k, rtol=0, atol=1e-12
    )


def test_theta_zero_axes_and_3_sigma_truncation() -> None:
    k = gaussian_kernel(31, sigma_x=3.0, sigma_y=1.0)
    _, cov = _moments(k)
    assert float(cov[0, 0]) > 8 * float(cov[1, 1])  # sigma_x is along columns (x)
    # the default size rule 2*ceil(3 sigma)+1 keeps the variance within ~3%
    for sigma in (1.0, 1.6, 2.5):
        _, cov = _moments(gaussian_kernel(gaussian_kernel_size(sigma), sigma=sigma))
        assert 0.9 < float(cov[0, 0]) / sigma**2 <= 1.0


def test_gaussian_kernel_errors() -> None:
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel(4, sigma=1.0)
    with pytest.raises(ValueError, match="exactly one"):
        gaussian_kernel(5)
    with pytest.raises(ValueError, match="exactly one"):
        gaussian_kernel(5, sigma=1.0, sigma_x=1.0, sigma_y=2.0)
    with pytest.raises(ValueError, match="both"):
        gaussian_kernel(5, sigma_x=1.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_kernel(5, sigma=0.0)
    with pytest.raises(ValueError, match="positive definite"):
        gaussian_kernel(5, cov=torch.tensor([[1.0, 2.0], [2.0, 1.0]]))


def test_random_kernel_is_reproducible_and_in_range() -> None:
    def draw(seed: int, n: int = 20, prob: float = 0.5) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return [random_gaussian_kernel(25, (0.8, 2.5), g, isotropic_prob=prob) for _ in range(n)]

    a, b, c = draw(1), draw(1), draw(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    n_iso = 0
    for k in a:
        assert k.shape == (25, 25) and abs(float(k.double().sum()) - 1) < 1e-6
        eig = torch.linalg.eigvalsh(_moments(k)[1])
        assert 0.8**2 * 0.97 <= float(eig[0]) and float(eig[1]) <= 2.5**2 * 1.0001
        n_iso += bool(abs(float(eig[1] - eig[0])) < 1e-6)
    assert 0 < n_iso < 20
    for k in draw(3, prob=1.0):  # paper E: isotropic only
        cov = _moments(k)[1]
        assert abs(float(cov[0, 0] - cov[1, 1])) < 1e-6 and abs(float(cov[0, 1])) < 1e-6
    with pytest.raises(ValueError, match="sigma_range"):
        random_gaussian_kernel(5, (2.0, 1.0), torch.Generator())


def test_load_kernel_errors_and_normalisation(tmp_path: Path) -> None:
    missing = tmp_path / "nope.npy"
    with pytest.raises(FileNotFoundError, match="nope.npy"):
        load_kernel(missing)
    bad = tmp_path / "cube.npy"
    np.save(bad, np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match=r"cube\.npy.*\(3, 3, 3\)"):
        load_kernel(bad)
    neg = tmp_path / "neg.npy"
    np.save(neg, -np.ones((3, 3)))
    with pytest.raises(ValueError, match="neg.npy"):
        load_kernel(neg)
    unnorm = tmp_path / "box.npy"
    np.save(unnorm, np.full((3, 5), 2.0))
    k = load_kernel(str(unnorm))
    assert k.dtype == torch.float32 and k.shape == (3, 5)
    torch.testing.assert_close(k, torch.full((3, 5), 1 / 15))


def test_load_stored_kernels() -> None:
    kdir = _kernel_dir()
    files = sorted(kdir.glob("*.npy"))
    for f in files:
        k = load_kernel(f)
        assert k.dim() == 2 and abs(float(k.double().sum()) - 1) < 1e-6, f.name
        torch.testing.assert_close(k, torch.from_numpy(np.load(f)).float(), rtol=0, atol=1e-6)
        _, cov = _moments(k)
        # names carry the Gaussian parameters: iso_sigma<s>, aniso_var<a>x<b>, iso_var<v>
        if m := re.search(r"iso_sigma([0-9.]+)_", f.name):
            sigma = float(m[1])
            assert (
                abs(float(cov[0, 0]) / sigma**2 - 1) < 0.02
                and abs(float(cov[1, 1]) / sigma**2 - 1) < 0.02
            )
            torch.testing.assert_close(
                k, gaussian_kernel(k.shape[0], sigma=sigma), rtol=0, atol=1e-5
            )
        elif m := re.search(r"iso_var([0-9.]+)_", f.name):
            var = float(m[1])
            assert abs(float(cov[0, 0]) / var - 1) < 0.02
            torch.testing.assert_close(
                k, gaussian_kernel(k.shape[0], sigma=math.sqrt(var)), rtol=0, atol=1e-5
            )
        elif m := re.search(r"aniso_var([0-9.]+)x([0-9.]+)_", f.name):
            eig = torch.linalg.eigvalsh(cov)
            expected = sorted([float(m[1]), float(m[2])])
            torch.testing.assert_close(
                eig, torch.tensor(expected, dtype=torch.float64), rtol=0.02, atol=0
            )
            torch.testing.assert_close(k, gaussian_kernel(k.shape[0], cov=cov), rtol=0, atol=1e-4)
