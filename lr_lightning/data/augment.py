"""Batched, vectorised augmentations that run on the batch's device."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def random_crop_flip(
    x: Tensor, padding: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> Tensor:
    """CIFAR augmentation on a whole batch: zero-pad by ``padding``, random crop back, random
    horizontal flip (He et al. 2016). One gather, no per-sample Python loop."""
    b, _, h, w = x.shape
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        dev = x.device
        oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device="cpu").to(dev)
        ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device="cpu").to(dev)
        rows = (oy[:, None] + torch.arange(h, device=dev)[None, :])  # (B, H)
        cols = (ox[:, None] + torch.arange(w, device=dev)[None, :])  # (B, W)
        bidx = torch.arange(b, device=dev)[:, None, None]
        # (B, H, W, C) after advanced indexing on dims 0, 2, 3
        out = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]
        x = out.permute(0, 3, 1, 2)
    if flip:
        mask = torch.rand(b, generator=generator, device="cpu").to(x.device) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x.contiguous()
