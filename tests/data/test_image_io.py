"""Image decoding for every PIL mode, against pixels computed independently with numpy; corrupt
files skipped on request; empty class folders refused."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lr_lightning.data import (
    CIFARDataModule,
    ImageFolderDataModule,
    SkippedImagesWarning,
    SRDataModule,
    UnsupportedImageError,
    read_image,
)
from tests.conftest import write_image_folder, write_images

RNG = np.random.default_rng(0)


def _chw(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def _u8(x: np.ndarray) -> torch.Tensor:
    """[0, 1] float HxWx3 -> the uint8 CHW tensor read_image should give (round half to even)."""
    return _chw(np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8))


def _png16(path: Path, values: np.ndarray) -> None:
    """A 16-bit-per-channel PNG written by hand (zlib + struct), independent of PIL and torchvision."""
    h, w, c = values.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_8bit_rgb_and_grey_are_exact(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    assert torch.equal(read_image(tmp_path / "rgb.png"), _chw(rgb))
    grey = RNG.integers(0, 256, (5, 7), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "l.png")
    assert torch.equal(read_image(tmp_path / "l.png"), _chw(np.stack([grey] * 3, -1)))
    f = read_image(tmp_path / "l.png", precision="float32")
    assert f.dtype == torch.float32 and torch.allclose(f[0], torch.from_numpy(grey / 255.0).float())


def test_bilevel(tmp_path: Path) -> None:
    bits = RNG.integers(0, 2, (6, 9)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    assert Image.open(tmp_path / "b.png").mode == "1"
    assert torch.equal(read_image(tmp_path / "b.png"), _chw(np.stack([bits * np.uint8(255)] * 3, -1)))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grey_is_scaled_not_clipped(tmp_path: Path, suffix: str) -> None:
    values = RNG.integers(0, 65536, (8, 8), dtype=np.uint16)
    values[0, 0], values[0, 1] = 0, 65535
    Image.fromarray(values).save(tmp_path / f"g{suffix}")
    assert Image.open(tmp_path / f"g{suffix}").mode.startswith("I;16")
    expect = values.astype(np.float64) / 65535.0
    assert torch.equal(read_image(tmp_path / f"g{suffix}"), _u8(np.stack([expect] * 3, -1)))
    full = read_image(tmp_path / f"g{suffix}", precision="float32")
    assert torch.allclose(full[1], torch.from_numpy(expect).float(), atol=1e-7)


def test_mid_grey_16bit_is_mid_grey(tmp_path: Path) -> None:
    """The bug report: a 16-bit image of mean 33269 read as almost white (mean 254)."""
    values = np.full((16, 16), 33269, dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "mid.png")
    assert read_image(tmp_path / "mid.png").float().mean().item() == pytest.approx(33269 / 257, abs=0.5)


def test_16bit_big_endian_tiff(tmp_path: Path) -> None:
    values = (np.arange(16, dtype=np.uint16) * 4000).reshape(4, 4)
    Image.frombytes("I;16B", (4, 4), values.astype(">u2").tobytes()).save(tmp_path / "be.tif")
    out = read_image(tmp_path / "be.tif", precision="float32")
    assert torch.allclose(out[2], torch.from_numpy(values / 65535.0).float())


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16bit_png_of_every_colour_type(tmp_path: Path, channels: int) -> None:
    values = RNG.integers(0, 65536, (6, 5, channels), dtype=np.uint16)
    _png16(tmp_path / "c.png", values)
    unit = values.astype(np.float64) / 65535.0
    colour = np.repeat(unit[..., :1], 3, -1) if channels <= 2 else unit[..., :3]
    alpha = unit[..., -1:] if channels in (2, 4) else None
    full = read_image(tmp_path / "c.png", precision="float32")
    assert torch.allclose(full, _chw(colour).float(), atol=1e-7)  # PIL alone keeps the high byte
    assert torch.equal(read_image(tmp_path / "c.png"), _u8(colour))
    if alpha is not None:
        over_white = colour * alpha + (1.0 - alpha)
        assert torch.equal(read_image(tmp_path / "c.png", alpha="white"), _u8(over_white))


def test_32bit_integer_and_float_images(tmp_path: Path) -> None:
    ints = RNG.integers(0, 65536, (4, 6)).astype(np.int32)
    Image.fromarray(ints).save(tmp_path / "i.tif")
    assert Image.open(tmp_path / "i.tif").mode == "I"
    assert torch.equal(read_image(tmp_path / "i.tif"), _u8(np.stack([ints / 65535.0] * 3, -1)))
    Image.fromarray(ints * 2 - 70000).save(tmp_path / "neg.tif")
    with pytest.raises(UnsupportedImageError, match="neg.tif.*outside the 16-bit range"):
        read_image(tmp_path / "neg.tif")
    floats = RNG.random((4, 6)).astype(np.float32)
    Image.fromarray(floats).save(tmp_path / "f.tif")
    assert Image.open(tmp_path / "f.tif").mode == "F"
    assert torch.allclose(read_image(tmp_path / "f.tif", precision="float32")[0], torch.from_numpy(floats))
    assert torch.equal(read_image(tmp_path / "f.tif"), _u8(np.stack([floats.astype(np.float64)] * 3, -1)))
    Image.fromarray(floats * 300).save(tmp_path / "hdr.tif")
    with pytest.raises(UnsupportedImageError, match=r"hdr.tif.*rescale it to \[0, 1\]"):
        read_image(tmp_path / "hdr.tif")


@pytest.mark.parametrize("alpha", ["drop", "white", "black"])
def test_alpha_is_dropped_or_composited(tmp_path: Path, alpha: str) -> None:
    rgba = RNG.integers(0, 256, (5, 5, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    la = RNG.integers(0, 256, (5, 5, 2), dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    for name, colour, a in (
        ("rgba.png", rgba[..., :3] / 255.0, rgba[..., 3:] / 255.0),
        ("la.png", np.repeat(la[..., :1], 3, -1) / 255.0, la[..., 1:] / 255.0),
    ):
        bg = {"drop": None, "white": 1.0, "black": 0.0}[alpha]
        expect = colour if bg is None else colour * a + bg * (1.0 - a)
        assert torch.equal(read_image(tmp_path / name, alpha=alpha), _u8(expect)), name  # type: ignore[arg-type]


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], dtype=np.uint8)
    index = RNG.integers(0, 4, (6, 6)).astype(np.uint8)
    img = Image.fromarray(index, "P")
    img.putpalette(palette.ravel().tolist())
    img.save(tmp_path / "p.png")
    assert torch.equal(read_image(tmp_path / "p.png"), _chw(palette[index]))
    img.save(tmp_path / "pt.png", transparency=3)  # index 3 fully transparent
    over_black = palette[index] * (index != 3)[..., None]
    assert torch.equal(read_image(tmp_path / "pt.png", alpha="black"), _chw(over_black.astype(np.uint8)))
    assert torch.equal(read_image(tmp_path / "pt.png"), _chw(palette[index]))


def test_cmyk_and_ycbcr(tmp_path: Path) -> None:
    cmyk = RNG.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    Image.fromarray(cmyk, "CMYK").save(tmp_path / "c.tif")
    c, k = cmyk[..., :3].astype(np.float64), cmyk[..., 3:].astype(np.float64)
    expect = (255.0 - c) * (255.0 - k) / 255.0
    got = read_image(tmp_path / "c.tif").numpy().transpose(1, 2, 0).astype(np.float64)
    assert np.abs(got - expect).max() <= 1.0
    ycc = RNG.integers(40, 216, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(ycc, "YCbCr").save(tmp_path / "y.tif")
    y, cb, cr = (ycc[..., i].astype(np.float64) for i in range(3))
    bt601 = np.stack([y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128), y + 1.772 * (cb - 128)], -1)
    got = read_image(tmp_path / "y.tif").numpy().transpose(1, 2, 0).astype(np.float64)
    assert np.abs(got - np.clip(bt601, 0, 255)).max() <= 1.0


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    arr = np.zeros((16, 32, 3), dtype=np.uint8)
    arr[:, :8] = 255  # a white band on the left of a landscape image
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(arr).save(tmp_path / "o.jpg", exif=exif, quality=95)
    stored = np.asarray(Image.open(tmp_path / "o.jpg"))
    out = read_image(tmp_path / "o.jpg")
    assert out.shape == (3, 32, 16)  # displayed as portrait
    assert torch.equal(out, _chw(np.rot90(stored, k=-1)))  # the band is now on top
    assert out[:, :8].float().mean() > 200 and out[:, -8:].float().mean() < 50


def test_unknown_mode_and_bad_options(tmp_path: Path) -> None:
    Image.new("LAB", (4, 4)).save(tmp_path / "lab.tif")
    with pytest.raises(UnsupportedImageError, match="lab.tif.*'LAB'"):
        read_image(tmp_path / "lab.tif")
    with pytest.raises(ValueError, match="precision"):
        read_image(tmp_path / "lab.tif", precision="uint16")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha"):
        read_image(tmp_path / "lab.tif", alpha="grey")  # type: ignore[arg-type]


def test_truncated_file_is_named(tmp_path: Path) -> None:
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeError, match="t.png.*skip_corrupt"):
        read_image(tmp_path / "t.png")


def test_skip_corrupt_in_every_file_data_module(tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "folder" / "train", classes=2, per_class=4, size=36)
    (folder / "class1" / "0001.png").write_bytes(b"not a png")
    (folder / "class0" / "0003.png").write_bytes(b"")
    lazy = ImageFolderDataModule(root=str(tmp_path / "folder"), hr_size=32, test_dir=None, val_fraction=0.0)
    lazy.setup("fit")  # default: files are decoded when read, and a bad one stops the run, named
    with pytest.raises(RuntimeError, match="class0/0003.png"):
        [lazy.train_set[i] for i in range(len(lazy.train_set))]
    dm = ImageFolderDataModule(root=str(tmp_path / "folder"), hr_size=32, test_dir=None, val_fraction=0.0, skip_corrupt=True)
    with pytest.warns(SkippedImagesWarning, match=r"left out 2 undecodable.*class0/0003.png.*class1/0001.png") as rec:
        dm.setup("fit")
    assert len([w for w in rec if w.category is SkippedImagesWarning]) == 1  # one line
    assert len(dm.train_set) == 6 and sorted(dm.train_set.labels) == [0, 0, 0, 1, 1, 1]
    assert all(dm.train_set[i]["hr"].shape == (3, 32, 32) for i in range(6))

    cifar = tmp_path / "cifar"
    write_image_folder(cifar / "cifar10" / "train", classes=10, per_class=3, size=32)
    (cifar / "cifar10" / "train" / "class5" / "0000.png").write_bytes(b"broken")
    cdm = CIFARDataModule(root=str(cifar), val_fraction=0.0, skip_corrupt=True)
    with pytest.warns(SkippedImagesWarning, match="left out 1 .*class5/0000.png"):
        cdm.setup("fit")
    assert len(cdm.train_set) == 29

    sr = write_images(tmp_path / "sr" / "Set", n=3, size=24)
    (sr / "img_001.png").write_bytes(b"")
    sdm = SRDataModule(root=str(tmp_path / "sr"), train_dirs=["Set"], val_dirs=["Set"], test_dirs=["Set"],
                       scale=2, patch_size=8, skip_corrupt=True)
    with pytest.warns(SkippedImagesWarning, match="img_001.png"):
        sdm.setup("test")
    assert [s.names for s in sdm.test_sets] == [["img_000", "img_002"]]


def test_empty_class_folder_is_named_or_kept_on_request(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", classes=2, per_class=2, size=32)
    (tmp_path / "train" / "class9_empty").mkdir()
    with pytest.raises(FileNotFoundError, match="class9_empty.*allow_empty_classes"):
        ImageFolderDataModule(root=str(tmp_path), hr_size=32, test_dir=None).setup("fit")
    dm = ImageFolderDataModule(root=str(tmp_path), hr_size=32, test_dir=None, allow_empty_classes=True)
    with pytest.warns(UserWarning, match="class9_empty"):
        dm.setup("fit")
    assert dm.num_classes == 3


def test_float32_folder_keeps_16bit_precision_to_the_device(tmp_path: Path) -> None:
    values = RNG.integers(0, 65536, (2, 32, 32), dtype=np.uint16)
    for c in range(2):
        (tmp_path / "train" / f"c{c}").mkdir(parents=True)
        Image.fromarray(values[c]).save(tmp_path / "train" / f"c{c}" / "x.png")
    dm = ImageFolderDataModule(root=str(tmp_path), hr_size=32, resize_size=32, test_dir=None, val_fraction=0.5,
                               precision="float32", batch_size=1)
    dm.setup("fit")
    batch = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    label = int(batch["label"][0])
    assert batch["hr"].dtype == torch.float32
    assert torch.allclose(batch["hr"][0, 0], torch.from_numpy(values[label] / 65535.0).float(), atol=1e-6)
