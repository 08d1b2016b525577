"""PSNR-Y against hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from lr_lightning.metrics import PSNRY, psnr_y, rgb_to_y


def test_rgb_to_y_reference_values() -> None:
    # MATLAB rgb2ycbcr: black -> 16, white -> 235, pure red -> 16 + 65.481
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 3)
    y = rgb_to_y(x).flatten().tolist()
    assert y == pytest.approx([16.0, 235.0, 81.481], abs=1e-9)


def test_psnr_y_hand_case() -> None:
    hr = torch.zeros(1, 3, 6, 6)
    sr = hr.clone()
    sr[:, :, 2:4, 2:4] = 1.0  # inner 2x2 white: Y error 219 on 4 of the 16 pixels left after shave=1
    mse = 4 * 219.0**2 / 16
    expected = 10 * math.log10(255**2 / mse)
    assert float(psnr_y(sr, hr, shave=1)[0]) == pytest.approx(expected, abs=1e-9)
    # the shave removes the border: an error only on the border is invisible
    sr2 = hr.clone()
    sr2[:, :, 0, :] = 1.0
    sr2[:, :, 1:, :] += 1.0 / 255  # one grey level everywhere else
    y_err = sum((65.481, 128.553, 24.966)) / 255
    assert float(psnr_y(sr2, hr, shave=1)[0]) == pytest.approx(10 * math.log10(255**2 / y_err**2), abs=1e-6)


def test_psnr_metric_averages_per_image() -> None:
    hr = torch.rand(3, 3, 8, 8)
    sr = (hr + 0.02 * torch.randn_like(hr)).clamp(0, 1)
    m = PSNRY(shave=2)
    m.update(sr[:2], hr[:2])
    m.update(sr[2:], hr[2:])
    assert float(m.compute()) == pytest.approx(float(psnr_y(sr, hr, 2).mean()), rel=1e-6)


def test_inference_cost_counts_macs_and_used_parameters() -> None:
    from torch import nn

    from lr_lightning.metrics.inference_cost import inference_cost

    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.fc = nn.Linear(8, 5)
            self.unused = nn.Linear(100, 100)  # e.g. a training-only network

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).mean((2, 3)))

    m = Two()
    macs, params = inference_cost(m, lambda: m(torch.rand(4, 3, 8, 8)), 4)
    assert macs == 8 * 3 * 9 * 64 + 8 * 5  # conv: c_out c_in k^2 H W; linear: in x out (per image)
    assert params == 8 * 3 * 9 + 8 * 5 + 5  # the unused layer does not count
