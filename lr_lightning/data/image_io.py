"""Reading image files into tensors: right for every mode PIL opens, or an error naming the file.

:func:`read_image` returns a ``(3, H, W)`` tensor, ``uint8`` (the default; what every data module
ships to the device) or ``float32`` in [0, 1] (``precision="float32"``, which keeps the full
precision of 16-bit and floating-point files). How each mode becomes RGB:

========================  ==========================================================================
mode (PIL)                conversion
========================  ==========================================================================
``1``, ``L``              grey copied into R, G, B (``1`` gives 0 / 255)
``P`` (palette)           palette look-up; with a ``transparency`` entry it is treated as RGBA
``RGB``, ``RGBX``         as stored (``X`` padding dropped)
``CMYK``                  ``R = (255 - C)(255 - K) / 255`` (PIL's conversion; Adobe-inverted JPEGs
                          are un-inverted by PIL when opened)
``YCbCr``                 JPEG / BT.601 full-range matrix (PIL's conversion)
``LA``, ``La``, ``PA``,   colour as above, alpha handled by ``alpha=``: ``"drop"`` (default; the
``RGBA``, ``RGBa``        stored colour, as torchvision's ``ImageReadMode.RGB``), ``"white"`` or
                          ``"black"`` (composited over that background: ``c * a + bg * (1 - a)``)
``I;16``, ``I;16L/B/N``   16-bit: ``v / 65535``; to 8 bits ``round(v / 257)`` (not clipped at 255)
``I`` (32-bit integer)    read as 16-bit when every value is in 0..65535, else an error (no scale is
                          implied by the file)
``F`` (32-bit float)      taken as [0, 1] when every value is in [0, 1], else an error
16-bit colour PNG         decoded at 16 bits per channel (torchvision's PNG decoder; PIL would keep
                          only the high byte), then as ``I;16``
========================  ==========================================================================

EXIF orientation (JPEG, TIFF, WebP) is applied, so the tensor is the image as a viewer shows it.
Other modes (``LAB``, ``HSV``, ...) raise an error naming the file and the mode.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")

DATA_ENV = "LR_LIGHTNING_DATA"

Precision = Literal["uint8", "float32"]
AlphaMode = Literal["drop", "white", "black"]

_ALPHA_MODES = {"LA", "La", "PA", "RGBA", "RGBa"}
_COLOUR_8BIT = {"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)


class UnsupportedImageError(ValueError):
    """The file decodes, but its mode or value range has no defined conversion to RGB."""


class SkippedImagesWarning(UserWarning):
    """Undecodable files were left out of a data set because ``skip_corrupt: true`` was set."""


def default_data_root() -> str:
    """``$LR_LIGHTNING_DATA`` if set, else ``./data``."""
    return os.environ.get(DATA_ENV, "./data")


def resolve_root(root: str | None) -> Path:
    """The data root: ``root`` if given, else :func:`default_data_root`."""
    return Path(root if root is not None else default_data_root()).expanduser()


def missing_root_error(path: Path, what: str, hint: str = "") -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} not found at {str(path)!r}. Set the data root with `--data.init_args.root PATH` "
        f"or the environment variable {DATA_ENV}"
        + (f"; {hint}" if hint else "")
        + "."
    )


def _check_options(precision: str, alpha: str) -> None:
    if precision not in ("uint8", "float32"):
        raise ValueError(f"precision must be 'uint8' or 'float32', got {precision!r}")
    if alpha not in ("drop", "white", "black"):
        raise ValueError(f"alpha must be 'drop', 'white' or 'black', got {alpha!r}")


def _is_16bit_colour_png(img: Image.Image) -> bool:
    """PIL opens 48/64-bit PNGs (and 16-bit grey + alpha) as 8-bit modes, keeping the high byte."""
    if img.format != "PNG" or not img.tile:
        return False
    rawmode = img.tile[0][3] if len(img.tile[0]) > 3 else ""
    rawmode = rawmode[0] if isinstance(rawmode, tuple) else rawmode
    return isinstance(rawmode, str) and rawmode.split(";")[0] in ("RGB", "RGBA", "LA") and ";16" in rawmode


def _unit_from_pil(img: Image.Image, path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Colour (H, W, 3) and alpha (H, W) or None, float64 in [0, 1], for a decoded PIL image."""
    mode = img.mode
    if mode == "P" and ("transparency" in img.info or (img.palette is not None and img.palette.mode == "RGBA")):
        mode = "PA"
        img = img.convert("RGBA")
    if mode in _ALPHA_MODES:
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255.0
        return rgba[..., :3], rgba[..., 3]
    if mode in _COLOUR_8BIT:
        return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0, None
    if mode in _SIXTEEN_BIT:
        grey = np.asarray(img).astype(np.float64) / 65535.0
    elif mode == "I":
        values = np.asarray(img)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi > 65535:
            raise UnsupportedImageError(
                f"image {path!r} is a 32-bit integer image with values {lo}..{hi}, outside the 16-bit "
                f"range 0..65535 that lr-lightning reads such files in; rescale it to 16 bits or 8 bits"
            )
        grey = values.astype(np.float64) / 65535.0
    elif mode == "F":
        values = np.asarray(img, dtype=np.float64)
        lo, hi = float(values.min()), float(values.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise UnsupportedImageError(
                f"image {path!r} is a floating-point image with values {lo:g}..{hi:g}; lr-lightning reads "
                f"such files as [0, 1] intensities: rescale it to [0, 1] (or to 8 / 16-bit integers)"
            )
        grey = values
    else:
        raise UnsupportedImageError(
            f"image {path!r} has PIL mode {mode!r}, which lr-lightning does not convert to RGB; "
            f"convert it to RGB (or L / I;16) first"
        )
    return np.repeat(grey[..., None], 3, axis=-1), None


def _unit_from_16bit_png(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    from torchvision.io import ImageReadMode, decode_image

    data = decode_image(path, mode=ImageReadMode.UNCHANGED, apply_exif_orientation=True)
    arr = data.to(torch.int32).permute(1, 2, 0).numpy().astype(np.float64) / 65535.0
    if arr.shape[-1] in (1, 2):  # grey (+ alpha)
        colour = np.repeat(arr[..., :1], 3, axis=-1)
        return colour, arr[..., 1] if arr.shape[-1] == 2 else None
    return arr[..., :3], arr[..., 3] if arr.shape[-1] == 4 else None


def _decode(path: str, precision: Precision, alpha: AlphaMode) -> Tensor:
    with Image.open(path) as opened:
        if _is_16bit_colour_png(opened):
            colour, a = _unit_from_16bit_png(path)
        else:
            img = ImageOps.exif_transpose(opened)
            if precision == "uint8" and img.mode in ("RGB", "L") and "transparency" not in img.info:
                # the common case, exact and fast: no float round trip
                arr = np.asarray(img.convert("RGB") if img.mode == "L" else img)
                return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
            colour, a = _unit_from_pil(img, path)
    if a is not None and alpha != "drop":
        background = 1.0 if alpha == "white" else 0.0
        colour = colour * a[..., None] + background * (1.0 - a[..., None])
    out = torch.from_numpy(np.ascontiguousarray(colour.transpose(2, 0, 1)))
    if precision == "float32":
        return out.to(torch.float32)
    return out.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def read_image(
    path: str | os.PathLike[str], *, precision: Precision = "uint8", alpha: AlphaMode = "drop"
) -> Tensor:
    """Decode an image file as an RGB tensor of shape (3, H, W); see the module's table.

    Args:
        precision: ``"uint8"`` (0..255) or ``"float32"`` (in [0, 1], full precision of 16-bit and
            float files).
        alpha: what to do with an alpha channel: ``"drop"`` it, or composite over ``"white"`` /
            ``"black"``.

    A file that cannot be decoded raises a ``RuntimeError`` naming it; a mode or value range that
    has no defined conversion raises an :class:`UnsupportedImageError` (a ``ValueError``) naming
    the file.
    """
    _check_options(precision, alpha)
    name = os.fspath(path)
    try:
        return _decode(name, precision, alpha)
    except UnsupportedImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, RuntimeError) as err:
        raise _corrupt_error(name, err) from err


def _corrupt_error(name: str, err: BaseException) -> RuntimeError:
    return RuntimeError(
        f"cannot decode image {name!r} ({err}); the file is corrupt or not an image: replace or "
        f"delete it, or set `skip_corrupt: true` on the data module to leave such files out"
    )


def _try_read(path: Path, precision: Precision, alpha: AlphaMode) -> Tensor | None:
    try:
        return read_image(path, precision=precision, alpha=alpha)
    except RuntimeError:
        return None


def read_images(
    files: Sequence[Path],
    *,
    skip_corrupt: bool = False,
    precision: Precision = "uint8",
    alpha: AlphaMode = "drop",
    threads: int = 8,
    where: str = "",
) -> tuple[list[Tensor], list[int]]:
    """Decode many files in threads (PIL releases the GIL); returns ``(images, kept indices)``.

    With ``skip_corrupt`` an undecodable file is left out and one :class:`SkippedImagesWarning`
    names how many and which; without it the first one raises (see :func:`read_image`). A file
    whose mode or range has no defined conversion always raises.
    """
    _check_options(precision, alpha)
    if not skip_corrupt:
        read = partial(read_image, precision=precision, alpha=alpha)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(read, files, chunksize=256)), list(range(len(files)))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        decoded = list(pool.map(partial(_try_read, precision=precision, alpha=alpha), files, chunksize=256))
    kept = [i for i, img in enumerate(decoded) if img is not None]
    warn_skipped([files[i] for i, img in enumerate(decoded) if img is None], where)
    return [decoded[i] for i in kept], kept  # type: ignore[misc]


def find_corrupt(files: Sequence[Path], threads: int = 8) -> list[int]:
    """Indices of the files that do not decode (each file is decoded once, in threads)."""

    def bad(path: Path) -> bool:
        try:
            with Image.open(path) as img:
                img.load()
            return False
        except _DECODE_ERRORS:
            return True

    with ThreadPoolExecutor(max_workers=threads) as pool:
        flags = list(pool.map(bad, files, chunksize=256))
    return [i for i, flag in enumerate(flags) if flag]


def warn_skipped(skipped: Sequence[Path], where: str = "") -> None:
    """The one warning line for files left out by ``skip_corrupt`` (nothing when there are none)."""
    if skipped:
        names = ", ".join(str(p) for p in skipped)
        warnings.warn(
            f"skip_corrupt: left out {len(skipped)} undecodable image file(s){' under ' + where if where else ''}: {names}",
            SkippedImagesWarning,
            stacklevel=3,
        )


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())


def scan_class_folders(root: Path, allow_empty: bool = False) -> tuple[list[Path], list[int], list[str]]:
    """ImageFolder layout ``root/<class>/<image>``: files, labels and the sorted class names.

    A class folder with no image file is an error naming it (as torchvision's ``ImageFolder``);
    with ``allow_empty`` it stays a class (its label exists, no image has it) and a warning names it.
    """
    if not root.is_dir():
        raise missing_root_error(root, "image folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise FileNotFoundError(
            f"{str(root)!r} has no class sub-folders; expected the ImageFolder layout "
            f"root/<class>/<image>.png"
        )
    files: list[Path] = []
    labels: list[int] = []
    empty: list[str] = []
    for idx, name in enumerate(classes):
        found = list_images(root / name)
        if not found:
            empty.append(name)
        files.extend(found)
        labels.extend([idx] * len(found))
    if empty and not allow_empty:
        raise FileNotFoundError(
            f"class folder(s) {', '.join(repr(str(root / e)) for e in empty)} hold no image file "
            f"({', '.join(IMG_EXTENSIONS)}); add images, remove the folder, or set "
            f"`allow_empty_classes: true` to keep it as a class without images"
        )
    if empty:
        warnings.warn(
            f"allow_empty_classes: {len(empty)} class folder(s) under {str(root)!r} hold no image: "
            f"{', '.join(empty)} (kept as classes)",
            UserWarning,
            stacklevel=2,
        )
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMG_EXTENSIONS)}) under {str(root)!r}")
    return files, labels, classes


_CACHE: dict[tuple[str, tuple[int, int] | None, bool], tuple[Tensor, Tensor, list[str]]] = {}


def load_class_folders_in_memory(
    root: Path, size: tuple[int, int] | None = None, threads: int = 8, skip_corrupt: bool = False
) -> tuple[Tensor, Tensor, list[str]]:
    """Decode a whole small-image ImageFolder (e.g. CIFAR as PNGs) into one uint8 tensor.

    Returns ``(images[N,3,H,W] uint8, labels[N] int64, classes)``. Every image must have the
    same size (``size`` if given, else the first image's); a different one raises an error naming
    the file. Decoding runs in threads (PIL releases the GIL); ``skip_corrupt`` leaves undecodable
    files out with one warning. Results are memoised per process, so repeated runs (tests,
    several configs) decode once.
    """
    key = (str(root.resolve()), size, skip_corrupt)
    if key in _CACHE:
        return _CACHE[key]
    files, labels, classes = scan_class_folders(root)
    images, kept = read_images(files, skip_corrupt=skip_corrupt, threads=threads, where=str(root))
    files = [files[i] for i in kept]
    labels = [labels[i] for i in kept]
    expected = size if size is not None else tuple(images[0].shape[-2:])
    for path, img in zip(files, images, strict=True):
        if tuple(img.shape[-2:]) != tuple(expected):
            raise ValueError(
                f"image {str(path)!r} is {img.shape[-1]}x{img.shape[-2]} (WxH) but the data set "
                f"expects {expected[1]}x{expected[0]}; resize or remove it"
            )
    result = (torch.stack(images), torch.tensor(labels, dtype=torch.long), classes)
    _CACHE[key] = result
    return result
