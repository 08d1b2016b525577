"""Composable degradations (gamma, noise, JPEG, fixed-size upsampling) and task spaces vs
independent computations (numpy / PIL) and the duplicates of paper A's 12-task space."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from lr_lightning.degrade import (
    PRESETS,
    Degradation,
    DegradationSpace,
    downsample,
    duplicate_tasks,
    upsample,
)


def _images(n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    """8-bit images (smooth + texture, like photographs), as floats in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(n, 3, size // 4, size // 4, generator=g), size=size, mode="bilinear")
    x = (0.7 * base + 0.3 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)
    return (x * 255).round() / 255


@pytest.mark.parametrize("name", [
    "bicubic3+n10+jpeg40+up16", "blur4(s1.2)+g1.5+n2.5+jpeg40+up16_bilinear", "avgpool2+q5+g0.8",
    "bicubic2+up16", "bicubic4+up", "bicubic2+jpeg90", "maxpool2+q4+up_nearest",
])
def test_names_round_trip_and_pickle(name: str) -> None:
    d = Degradation.from_name(name)
    assert d.name == name and Degradation.from_name(d.name) == d and hash(d) == hash(Degradation.from_name(name))
    assert pickle.loads(pickle.dumps(d)) == d


@pytest.mark.parametrize("bad", ["bicubic2+jpeg0", "bicubic2+jpeg101", "bicubic2+g0", "bicubic2+n-1", "bicubic2+jpeg40+n5"])
def test_bad_names_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        Degradation.from_name(bad)
    with pytest.raises(ValueError, match="needs upsample=True"):
        Degradation("bicubic", 2, upsample_size=16)


def test_gamma_and_fixed_size_upsampling_against_direct_computation() -> None:
    x = _images()
    y = Degradation.from_name("bicubic4+g2.2+up16")(x)
    ref = upsample(downsample(x, 4, "bicubic").clamp_min(0).pow(2.2), (16, 16), "bicubic")
    torch.testing.assert_close(y, ref)
    # native size: x2 of a 32 x 32 image already is 16 x 16, so '+up16' changes nothing
    torch.testing.assert_close(Degradation.from_name("bicubic2+up16")(x), Degradation.from_name("bicubic2")(x))
    assert Degradation.from_name("bicubic3+up16").output_size((32, 32)) == (16, 16)


def test_noise_level_and_reproducibility() -> None:
    x = torch.full((4, 3, 64, 64), 0.5)
    d = Degradation.from_name("avgpool2+n10")
    a, b = d(x, torch.Generator().manual_seed(3)), d(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, d(x, torch.Generator().manual_seed(4)))
    assert float((a - 0.5).std() * 255) == pytest.approx(10.0, rel=0.05)
    assert float((a - 0.5).mean() * 255) == pytest.approx(0.0, abs=0.3)
    assert d.is_random and not Degradation.from_name("avgpool2").is_random


def test_jpeg_matches_pil_and_gets_worse_with_lower_quality() -> None:
    x = _images(4, 32)
    for q in (90, 40, 10):
        ours = Degradation.from_name(f"avgpool2+jpeg{q}")(x)
        lr = Degradation.from_name("avgpool2")(x)
        for i in range(len(x)):  # independent: PIL (libjpeg, 4:2:0 as torchvision's default)
            u8 = (lr[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(u8).save(buf, format="JPEG", quality=q, subsampling=2)
            pil = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float64)
            diff = np.abs(ours[i].permute(1, 2, 0).numpy() * 255 - pil)
            assert diff.mean() < 1.0, (q, diff.mean())
    errs = [float((Degradation.from_name(f"avgpool2+jpeg{q}")(x) - Degradation.from_name("avgpool2")(x)).abs().mean())
            for q in (95, 50, 10)]
    assert errs[0] < errs[1] < errs[2]
    assert torch.equal(ours * 255, (ours * 255).round())  # 8-bit output


def test_paper_space_duplicates_are_exactly_q8_q16_q32() -> None:
    full = DegradationSpace.preset("paper_full")
    assert len(full) == 12 and full.names == list(DegradationSpace().names)  # the default is paper A's 12
    pairs = {(a, b) for a, b, _ in duplicate_tasks(full.tasks, _images(16))}
    expected = {
        (f"{m}2+q8", f"{m}2+q16") for m in ("maxpool", "avgpool")
    } | {(f"{m}2+q8", f"{m}2") for m in ("maxpool", "avgpool")} | {(f"{m}2+q16", f"{m}2") for m in ("maxpool", "avgpool")}
    assert pairs == expected
    paper = DegradationSpace.preset("paper")
    assert len(paper) == 8 and not duplicate_tasks(paper.tasks, _images(16))


def test_rich_space_one_input_size_no_duplicates_and_mismatch_error() -> None:
    rich = DegradationSpace.preset("rich")
    assert len(rich) == len(PRESETS["rich"]) == 20
    x = _images(4)
    assert {tuple(t(x, torch.Generator().manual_seed(0)).shape) for t in rich} == {(4, 3, 16, 16)}
    assert not duplicate_tasks(rich.tasks, x)
    with pytest.raises(ValueError, match="one input size"):
        DegradationSpace(tasks=["bicubic2", "bicubic4"])
    with pytest.raises(ValueError, match="duplicates"):
        DegradationSpace(tasks=["bicubic2", "bicubic2"])
    # different names, same operation (x2 is native at 16): not equal, but found by measurement
    assert [(a, b) for a, b, _ in duplicate_tasks(DegradationSpace(tasks=["bicubic2", "bicubic2+up16"]).tasks, x)] == [
        ("bicubic2", "bicubic2+up16")
    ]
    with pytest.raises(ValueError, match="unknown task-space preset"):
        DegradationSpace.preset("nope")
