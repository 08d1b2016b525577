"""Reading image files into uint8 tensors with errors that name the file and the fix."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")

DATA_ENV = "LR_LIGHTNING_DATA"


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


def read_image(path: str | os.PathLike[str]) -> Tensor:
    """Decode an image file as a uint8 RGB tensor of shape (3, H, W).

    Grayscale, palette and RGBA files are converted to RGB. A file that cannot be decoded raises
    a ``RuntimeError`` naming it.
    """
    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise RuntimeError(
            f"cannot decode image {os.fspath(path)!r} ({err}); the file is corrupt or not an "
            f"image: replace or delete it"
        ) from err
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())


def scan_class_folders(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """ImageFolder layout ``root/<class>/<image>``: files, labels and the sorted class names."""
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
    for idx, name in enumerate(classes):
        found = list_images(root / name)
        files.extend(found)
        labels.extend([idx] * len(found))
    if not files:
        raise FileNotFoundError(f"no image files ({', '.join(IMG_EXTENSIONS)}) under {str(root)!r}")
    return files, labels, classes


_CACHE: dict[tuple[str, tuple[int, int] | None], tuple[Tensor, Tensor, list[str]]] = {}


def load_class_folders_in_memory(
    root: Path, size: tuple[int, int] | None = None, threads: int = 8
) -> tuple[Tensor, Tensor, list[str]]:
    """Decode a whole small-image ImageFolder (e.g. CIFAR as PNGs) into one uint8 tensor.

    Returns ``(images[N,3,H,W] uint8, labels[N] int64, classes)``. Every image must have the
    same size (``size`` if given, else the first image's); a different one raises an error naming
    the file. Decoding runs in threads (PIL releases the GIL). Results are memoised per process,
    so repeated runs (tests, several configs) decode once.
    """
    key = (str(root.resolve()), size)
    if key in _CACHE:
        return _CACHE[key]
    files, labels, classes = scan_class_folders(root)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        images = list(pool.map(read_image, files, chunksize=256))
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
