"""Patch-based ("bag of local features") classifier for the conditional BagNet of paper C, Sec. 6.

BagNets (Brendel & Bethge 2019) classify every local patch independently and average the
class evidence over patches. Here the image is cut into a ``G x G`` grid of non-overlapping
patches (the PatchDrop grid), a small CIFAR ResNet classifies each patch, and the image logits
are the mean of the patch logits over the *kept* patches. Dropped patches are never computed:
``forward(x, actions)`` gathers only the kept patches into one batch, which is where the
run-time saving of Table 3 comes from.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lr_lightning.nn.resnet_cifar import CifarResNet


class PatchBagNet(nn.Module):
    """Local classifier over a patch grid; logits averaged over the kept patches.

    Args:
        num_classes: classes.
        grid: patches per side (P = grid^2); the image size must be divisible by it.
        depth: depth of the per-patch CIFAR ResNet (6n+2).
        in_channels: image channels.
    """

    #: tells PatchDrop to pass (image, actions) instead of a masked image
    patch_based = True

    def __init__(self, num_classes: int = 10, grid: int = 4, depth: int = 8, in_channels: int = 3) -> None:
        super().__init__()
        self.grid = grid
        self.num_classes = num_classes
        self.patch_net = CifarResNet(depth, num_classes, in_channels)

    def patches(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, P, C, H/G, W/G)`` in row-major patch order."""
        b, c, h, w = x.shape
        g = self.grid
        if h % g or w % g:
            raise ValueError(f"a {h}x{w} image cannot be cut into a {g}x{g} patch grid; sizes must be divisible by {g}")
        ph, pw = h // g, w // g
        return x.reshape(b, c, g, ph, g, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c, ph, pw)

    def forward(self, x: Tensor, actions: Tensor | None = None) -> Tensor:
        """Image logits ``(B, K)``; with ``actions`` ``(B, P)`` only kept patches are classified.

        A row with no kept patch gets all-zero logits (a uniform prediction).
        """
        p = self.patches(x)
        b, n = p.shape[:2]
        if actions is None:
            logits = self.patch_net(p.flatten(0, 1).contiguous(memory_format=torch.channels_last)).view(b, n, -1)
            return logits.mean(1)
        keep = actions.bool()
        selected = p[keep]
        out = p.new_zeros(b, n, self.num_classes)
        if selected.shape[0] > 0:
            sel_logits = self.patch_net(selected.contiguous(memory_format=torch.channels_last))
            out = out.to(sel_logits.dtype)
            out[keep] = sel_logits
        count = keep.sum(1, keepdim=True).clamp_min(1).to(out.dtype)
        return out.sum(1) / count

