"""Pretext inputs and targets of paper D (Sec. 2 and 3.2), as pure batched tensor functions.

* :func:`crop_batch` takes one ``S x S`` crop per image at per-image offsets (the "super patch").
* :func:`shifted_negatives` pairs image ``i`` with the patch of image ``(i + 1) mod B``: the
  paper's negatives ("we incremented the patch's index within the batch by one").
* :func:`centre_targets` gives, for every cell of the tiled grid, the centre of that cell's
  patch in the HR image, normalised to [-1, 1] (Sec. 2: "the center coordinates of a patch
  normalized to +-1"): ``u = 2 (c - (P - 1) / 2) / (H - P) - 1`` with ``c`` the centre pixel
  coordinate and ``P`` the patch side, so the top-left corner crop gives ``(-1, -1)``, the
  bottom-right one ``(1, 1)`` and a centred crop ``(0, 0)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def random_offsets(batch: int, high: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Uniform top-left offsets ``(oy, ox)`` in ``[0, high]`` (CPU int64, length ``batch``)."""
    oy = torch.randint(0, high + 1, (batch,), generator=generator)
    ox = torch.randint(0, high + 1, (batch,), generator=generator)
    return oy, ox


def crop_batch(x: Tensor, oy: Tensor, ox: Tensor, size: int) -> Tensor:
    """``x[b, :, oy[b]:oy[b]+size, ox[b]:ox[b]+size]`` for every ``b``, in one gather."""
    b, _, h, w = x.shape
    if int(oy.max()) + size > h or int(ox.max()) + size > w or int(oy.min()) < 0 or int(ox.min()) < 0:
        raise ValueError(f"a {size}x{size} crop at the given offsets leaves the {h}x{w} image")
    dev = x.device
    ar = torch.arange(size, device=dev)
    rows = oy.to(dev)[:, None] + ar[None, :]
    cols = ox.to(dev)[:, None] + ar[None, :]
    bidx = torch.arange(b, device=dev)[:, None, None]
    out = x.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # (B, S, S, C)
    return out.permute(0, 3, 1, 2).contiguous()


def shifted_negatives(patches: Tensor) -> Tensor:
    """Negatives of Sec. 2: row ``i`` gets the patch of image ``(i + 1) mod B``, so it is never
    the aligned patch (needs ``B >= 2``)."""
    if patches.shape[0] < 2:
        raise ValueError("patch classification needs a batch of at least 2 images (negatives come from the next image)")
    return patches.roll(-1, dims=0)


def centre_targets(
    oy: Tensor, ox: Tensor, image_size: tuple[int, int], patch: int, stride: int, grid: int
) -> Tensor:
    """``(B, 2, grid, grid)`` normalised centres ``(x, y)`` of the tiled patches.

    Cell ``(i, j)`` of a super patch whose top-left corner is ``(oy, ox)`` covers the HR patch
    with top-left ``(oy + i * stride, ox + j * stride)`` and side ``patch`` (the patch tower's
    receptive field); its centre is normalised by the range of possible centres (module docs).
    """
    h, w = image_size
    if patch > min(h, w):
        raise ValueError(f"patch side {patch} exceeds the image size {h}x{w}")
    steps = torch.arange(grid, dtype=torch.float32) * stride + (patch - 1) / 2  # (G,)
    cy = oy.float()[:, None] + steps[None, :]  # (B, G) centre rows
    cx = ox.float()[:, None] + steps[None, :]

    def norm(c: Tensor, n: int) -> Tensor:
        span = n - patch
        if span == 0:
            return torch.zeros_like(c)
        return 2 * (c - (patch - 1) / 2) / span - 1

    ty = norm(cy, h)[:, :, None].expand(-1, grid, grid)  # rows vary along dim 2 (i)
    tx = norm(cx, w)[:, None, :].expand(-1, grid, grid)  # cols vary along dim 3 (j)
    return torch.stack([tx, ty], 1)


#: ITU-R 601 luma weights (the greyscale of :func:`jitter_patches` and of the shortcut baselines)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luminance(x: Tensor) -> Tensor:
    """``(B, 1, H, W)`` ITU-R 601 luminance (float32) of RGB images ``(B, 3, H, W)`` in [0, 1]."""
    return (x.float() * x.new_tensor(LUMA_WEIGHTS, dtype=torch.float32).view(1, 3, 1, 1)).sum(1, keepdim=True)


def jitter_patches(
    patches: Tensor, strength: float, grey: bool = False, generator: torch.Generator | None = None
) -> Tensor:
    """Per-image photometric change of the HR super patches (in [0, 1]) that the LR image does not
    get, so that matching colours is no longer a solution of the pretext (issue: the 9x9 patch's
    mean colour matched to the nearest 2x2 LR window solves 86 % of the cells).

    Each image draws, uniformly in ``[1 - strength, 1 + strength]``, a brightness factor, a
    contrast factor (about its own mean grey level), a saturation factor (about its grey image)
    and one gain per channel; ``grey`` then replaces the patch by its luminance (ITU-R 601
    weights) on all three channels. ``strength = 0`` with ``grey = False`` returns the input.
    """
    if strength < 0 or strength >= 1:
        raise ValueError(f"jitter strength must be in [0, 1), got {strength}")
    x = patches.float()
    b = x.shape[0]
    luma = luminance
    if strength > 0:
        u = torch.rand(b, 6, generator=generator).to(x.device) * 2 * strength + 1 - strength
        bright, contrast, sat = (u[:, i].view(b, 1, 1, 1) for i in range(3))
        gains = u[:, 3:6].view(b, 3, 1, 1)
        x = x * bright
        m = luma(x).mean((2, 3), keepdim=True)
        x = (x - m) * contrast + m
        g = luma(x)
        x = (x - g) * sat + g
        x = (x * gains).clamp(0, 1)
    if grey:
        x = luma(x).expand(-1, 3, -1, -1).contiguous()
    return x.to(patches.dtype)
