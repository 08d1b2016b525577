"""Degradation value objects and paper A's task space."""

from __future__ import annotations

import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from lr_lightning.degrade import (
    Degradation,
    DegradationSpace,
    blur,
    dorefa_quantize,
    downsample,
    gaussian_kernel,
    upsample,
)


def _rand(
    shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)


def test_default_space_is_paper_a() -> None:
    space = DegradationSpace()
    assert len(space) == 12
    names = [t.name for t in space.tasks]
    assert names == [
        "maxpool2+q2", "maxpool2+q3", "maxpool2+q4", "maxpool2+q8", "maxpool2+q16", "maxpool2",
        "avgpool2+q2", "avgpool2+q3", "avgpool2+q4", "avgpool2+q8", "avgpool2+q16", "avgpool2",
    ]  # fmt: skip
    assert len(set(space.tasks)) == 12


@pytest.mark.parametrize("upsample_flag", [False, True])
def test_name_round_trip_for_default_space(upsample_flag: bool) -> None:
    for task in DegradationSpace(factor=4, upsample=upsample_flag).tasks:
        back = Degradation.from_name(task.name)
        assert back == task and hash(back) == hash(task) and back.name == task.name


def test_name_examples_and_round_trip_of_other_modes(tmp_path: Path) -> None:
    kfile = tmp_path / "k+(odd) name.npy"
    np.save(kfile, gaussian_kernel(5, sigma=1.0).numpy())
    cases = {
        Degradation("max", 2): "maxpool2",
        Degradation("avg", 4, bits=3): "avgpool4+q3",
        Degradation("bicubic", 4): "bicubic4",
        Degradation("nearest", 4): "nearest4",
        Degradation("bicubic_matlab", 3, upsample=True): "bicubic_matlab3+up",
        Degradation(
            "area", 2, bits=8, upsample=True, upsample_mode="nearest"
        ): "area2+q8+up_nearest",
        Degradation(
            "bilinear", 2, upsample=True, upsample_mode="bicubic_matlab"
        ): "bilinear2+up_bicubic_matlab",
        Degradation("blur", 4, kernel_sigma=1.0): "blur4(s1.0)",
        Degradation("blur", 4, bits=4, kernel_sigma=0.7, upsample=True): "blur4(s0.7)+q4+up",
        Degradation("blur", 2, kernel=str(kfile)): f"blur2(k:{kfile})",
    }
    for deg, name in cases.items():
        assert deg.name == name
        assert Degradation.from_name(name) == deg
        assert eval(repr(deg), {"Degradation": Degradation}) == deg  # noqa: S307 - repr round trip


@pytest.mark.parametrize(
    "bad",
    ["", "maxpool", "max2", "avgpool2+q", "avgpool2+q0", "avgpool2+q33", "bicubic4(s1.0)", "blur4", "blur4(x1)",
     "blur4(sabc)", "nearest4+up_area", "lanczos4", "avgpool0", "avgpool2+up+q3"],
)  # fmt: skip
def test_bad_names_raise(bad: str) -> None:
    with pytest.raises(ValueError):
        Degradation.from_name(bad)


def test_bad_name_message_is_helpful() -> None:
    with pytest.raises(ValueError, match="expected <mode><factor>.*maxpool.*e.g."):
        Degradation.from_name("maxpooling2")


def test_constructor_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid choices"):
        Degradation("lanczos")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bits"):
        Degradation("avg", 2, bits=0)
    with pytest.raises(ValueError, match="factor"):
        Degradation("avg", 0)
    with pytest.raises(ValueError, match="exactly one of kernel"):
        Degradation("blur", 4)
    with pytest.raises(ValueError, match="only used with mode='blur'"):
        Degradation("avg", 2, kernel_sigma=1.0)
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        Degradation("blur", 4, kernel=str(tmp_path / "missing.npy"))
    with pytest.raises(ValueError, match="upsample mode"):
        Degradation("avg", 2, upsample=True, upsample_mode="area")  # type: ignore[arg-type]


def test_equality_ignores_upsample_mode_without_upsampling() -> None:
    a = Degradation("avg", 2, upsample=False, upsample_mode="nearest")
    assert a == Degradation("avg", 2) and hash(a) == hash(Degradation("avg", 2))
    assert Degradation("avg", 2, upsample=True) != Degradation(
        "avg", 2, upsample=True, upsample_mode="nearest"
    )
    assert Degradation("avg", 2, bits=3) != Degradation("avg", 2, bits=4)
    assert (
        len({Degradation("max", 2), Degradation.from_name("maxpool2"), Degradation("max", 4)}) == 2
    )


def test_call_composes_the_primitives() -> None:
    x = _rand((3, 3, 32, 32), seed=1)
    torch.testing.assert_close(
        Degradation("avg", 2, bits=3)(x), dorefa_quantize(downsample(x, 2, "avg"), 3)
    )
    y = Degradation("max", 4, bits=2, upsample=True, upsample_mode="nearest")(x)
    torch.testing.assert_close(
        y, upsample(dorefa_quantize(downsample(x, 4, "max"), 2), (32, 32), "nearest")
    )
    k = gaussian_kernel(7, sigma=1.0)  # size 2*ceil(3*1.0)+1
    torch.testing.assert_close(
        Degradation("blur", 4, kernel_sigma=1.0)(x), blur(x, k)[..., ::4, ::4]
    )
    assert Degradation("blur", 4, kernel_sigma=1.0).kernel_tensor.shape == (7, 7)


@pytest.mark.parametrize("name", ["maxpool4+q3", "avgpool4", "area4+q8", "nearest4", "bilinear4", "bicubic4+q4",
                                  "bicubic_matlab4", "blur4(s1.2)+q3"])  # fmt: skip
def test_shapes_dtype_and_device(name: str) -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            x = _rand((2, 3, 32, 48), seed=2, dtype=dtype).to(device)
            for up in (False, True):
                deg = Degradation.from_name(name + ("+up" if up else ""))
                y = deg(x)
                assert y.shape == ((2, 3, 32, 48) if up else (2, 3, 8, 12)), (name, up)
                assert y.dtype == dtype and y.device == x.device
                assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_quantised_output_has_the_levels() -> None:
    y = Degradation("avg", 2, bits=3)(_rand((4, 3, 32, 32), seed=3))
    assert set(torch.unique(y).tolist()) <= {j / 7 for j in range(8)} | {
        float(torch.tensor(j / 7)) for j in range(8)
    }


def test_pickle_round_trip() -> None:
    deg = Degradation("blur", 2, bits=4, kernel_sigma=1.5)
    back = pickle.loads(pickle.dumps(deg))
    assert back == deg and torch.equal(back.kernel_tensor, deg.kernel_tensor)


def test_space_sampling_is_reproducible() -> None:
    space = DegradationSpace()
    a = space.sample(50, torch.Generator().manual_seed(123))
    b = space.sample(50, torch.Generator().manual_seed(123))
    c = space.sample(50, torch.Generator().manual_seed(124))
    assert a == b and a != c
    assert space.sample(0, torch.Generator()) == []
    with pytest.raises(ValueError):
        space.sample(-1, torch.Generator())


def test_space_sampling_is_uniform() -> None:
    space = DegradationSpace()
    n = 12000
    counts = Counter(space.sample(n, torch.Generator().manual_seed(0)))
    assert set(counts) == set(space.tasks)
    expected = n / len(space)
    chi2 = sum((counts[t] - expected) ** 2 / expected for t in space.tasks)
    # chi-square with 11 degrees of freedom: P(chi2 > 31.26) = 0.001
    assert chi2 < 31.26, chi2
    assert all(abs(counts[t] - expected) < 0.15 * expected for t in space.tasks)


def test_space_options_and_validation() -> None:
    space = DegradationSpace(modes=["avg", "bicubic"], bits=[4, 32], factor=4, upsample=True)
    assert [t.name for t in space] == [
        "avgpool4+q4+up",
        "avgpool4+up",
        "bicubic4+q4+up",
        "bicubic4+up",
    ]
    assert space[0] == Degradation("avg", 4, bits=4, upsample=True)
    with pytest.raises(ValueError, match="duplicates"):
        DegradationSpace(modes=["max", "max"])
    with pytest.raises(ValueError, match="non-empty"):
        DegradationSpace(bits=[])
    with pytest.raises(ValueError, match="blur"):
        DegradationSpace(modes=["blur"])
    with pytest.raises(ValueError, match="bits"):
        DegradationSpace(bits=[2, 64])


def test_stored_kernel_file_degradation() -> None:
    env = os.environ.get("LR_LIGHTNING_DATA")
    if not env:
        pytest.skip("LR_LIGHTNING_DATA is not set (data root holding sr/kernels/*.npy)")
    path = Path(env) / "sr" / "kernels" / "mzsr_g20_iso_var2.0_21x21.npy"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    deg = Degradation("blur", 4, kernel=str(path))
    assert Degradation.from_name(deg.name) == deg
    x = _rand((2, 3, 32, 32), seed=4)
    torch.testing.assert_close(
        deg(x), blur(x, torch.from_numpy(np.load(path)))[..., ::4, ::4], rtol=0, atol=1e-6
    )
