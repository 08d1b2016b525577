"""Trivial solutions of the patch-classification pretext (paper D Sec. 2), the bar a pretext must
clear before its features can be credited to learning correspondences.

Each tiled cell of the super patch is an HR patch of side ``P`` (the patch tower's receptive
field); with the LR image average-pooled by ``factor`` it spans about ``P / factor`` LR pixels, so
the LR windows it is compared with have side ``k = max(1, round(P / factor))``.

* :func:`colour_match_distance`: the squared distance between the cell's mean colour and the
  closest mean colour of a ``k x k`` LR window (Doersch et al.'s "chromatic" shortcut in its plainest
  form).
* :func:`template_match_distance`: the cell average-pooled to ``k x k`` against every ``k x k`` LR
  window, squared L2 (``normalise=False``) or one minus the normalised cross-correlation
  (``normalise=True``: each channel's mean removed and each channel scaled to unit norm, so
  invariant to per-channel gain and offset, i.e. to most of
  :func:`~lr_lightning.methods.autoresolution.targets.jitter_patches`).
* :func:`aligned_block_distance`: the same comparison at the LR grid's own phase. An LR pixel is
  the mean of an aligned ``factor x factor`` HR block, so for every phase ``(a, b)`` in
  ``[0, factor)^2`` the whole blocks inside the cell are averaged and compared with every LR window
  of that shape (mean squared error, or ``1 - NCC``); the best phase and window win. On plain
  patches the right phase reproduces LR pixels exactly (distance 0): the "exact template matching
  of average-pooled blocks" of issue 16.

``luminance=True`` compares ITU-R 601 luminance of both sides (for greyscale super patches, whose
colour no longer says anything).

A cell is called "belongs" when its distance is below a threshold; :func:`best_threshold` fits it
on one set of pretext problems (the training images) and :func:`threshold_accuracy` scores another
(validation), with positives and negatives built as the pretext builds them. Written by hand (a few
tensor ops); no library ships these baselines.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from lr_lightning.methods.autoresolution.targets import luminance


def window_side(patch: int, factor: int) -> int:
    """Side ``k`` of the LR window an HR patch of side ``patch`` covers."""
    return max(1, round(patch / factor))


def _unfold_cells(super_patch: Tensor, patch: int, stride: int) -> tuple[Tensor, int]:
    """Every tiled cell of the super patch as an image: ``(B*G*G, C, P, P)`` and ``G``."""
    b, c, s, _ = super_patch.shape
    g = (s - patch) // stride + 1
    cols = F.unfold(super_patch.float(), patch, stride=stride)  # (B, C*P*P, G*G)
    return cols.transpose(1, 2).reshape(b * g * g, c, patch, patch), g


def _cells(super_patch: Tensor, patch: int, stride: int, k: int) -> tuple[Tensor, int]:
    """Every cell average-pooled to ``k x k``: ``(B, G*G, C*k*k)`` and ``G``."""
    b, c = super_patch.shape[:2]
    cells, g = _unfold_cells(super_patch, patch, stride)
    return F.adaptive_avg_pool2d(cells, k).reshape(b, g * g, c * k * k), g


def _windows(lr: Tensor, k: int) -> Tensor:
    """Every ``k x k`` window of the LR image: ``(B, Nw, C*k*k)``."""
    return F.unfold(lr.float(), k, stride=1).transpose(1, 2)


def _ncc_normalise(v: Tensor, channels: int) -> Tensor:
    """Per channel: mean removed, unit norm (a constant channel becomes zero)."""
    shape = v.shape
    v = v.reshape(*shape[:-1], channels, -1)
    v = v - v.mean(-1, keepdim=True)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    return v.reshape(shape) / channels**0.5


def _maybe_luma(lr: Tensor, super_patch: Tensor, use: bool) -> tuple[Tensor, Tensor]:
    return (luminance(lr), luminance(super_patch)) if use else (lr.float(), super_patch.float())


def colour_match_distance(
    lr: Tensor, super_patch: Tensor, patch: int, stride: int, factor: int, luminance: bool = False
) -> Tensor:
    """``(B, G, G)``: squared distance of each cell's mean colour to the closest mean colour of a
    ``k x k`` window of image ``b``'s LR image (``lr[b]`` pairs with ``super_patch[b]``)."""
    lr, super_patch = _maybe_luma(lr, super_patch, luminance)
    k = window_side(patch, factor)
    b, c = super_patch.shape[:2]
    g = (super_patch.shape[-1] - patch) // stride + 1
    cell = F.avg_pool2d(super_patch.float(), patch, stride).reshape(b, c, g * g).transpose(1, 2)  # (B, G*G, C)
    win = F.avg_pool2d(lr.float(), k, 1).reshape(b, c, -1).transpose(1, 2)  # (B, Nw, C)
    return torch.cdist(cell, win).square().amin(-1).reshape(b, g, g)


def template_match_distance(
    lr: Tensor, super_patch: Tensor, patch: int, stride: int, factor: int, normalise: bool = False, luminance: bool = False
) -> Tensor:
    """``(B, G, G)``: distance of each cell, pooled to ``k x k``, to the closest ``k x k`` window of
    its LR image (squared L2, or ``1 - NCC`` with ``normalise``)."""
    lr, super_patch = _maybe_luma(lr, super_patch, luminance)
    k = window_side(patch, factor)
    c = super_patch.shape[1]
    cells, g = _cells(super_patch, patch, stride, k)
    win = _windows(lr, k)
    if normalise:
        cells, win = _ncc_normalise(cells, c), _ncc_normalise(win, c)
        d = 1 - torch.einsum("bgd,bwd->bgw", cells, win)
    else:
        d = torch.cdist(cells, win).square()
    return d.amin(-1).reshape(lr.shape[0], g, g)


def aligned_block_distance(
    lr: Tensor, super_patch: Tensor, patch: int, stride: int, factor: int, normalise: bool = False, luminance: bool = False
) -> Tensor:
    """``(B, G, G)``: for every phase ``(a, b)`` in ``[0, factor)^2``, the cell's whole
    ``factor x factor`` blocks from ``(a, b)`` on are averaged (``ny x nx`` values per channel) and
    compared with every ``ny x nx`` window of the LR image, mean squared error per value, or
    ``1 - NCC`` (``normalise``, only phases with at least 2 x 2 blocks); the minimum over phases and
    windows. Zero for a cell of an unmodified HR image whose blocks are LR pixels."""
    lr, super_patch = _maybe_luma(lr, super_patch, luminance)
    b, c = super_patch.shape[:2]
    cells, g = _unfold_cells(super_patch, patch, stride)
    best = torch.full((b, g * g), float("inf"))
    for a in range(factor):
        ny = (patch - a) // factor
        for bb in range(factor):
            nx = (patch - bb) // factor
            if ny < 1 or nx < 1 or (normalise and min(ny, nx) < 2):  # NCC of 1-2 values is +-1: no evidence
                continue
            blocks = F.avg_pool2d(cells[:, :, a:a + ny * factor, bb:bb + nx * factor], factor).reshape(b, g * g, -1)
            win = F.unfold(lr, (ny, nx), stride=1).transpose(1, 2)  # (B, Nw, C*ny*nx)
            if normalise:
                d = 1 - torch.einsum("bgd,bwd->bgw", _ncc_normalise(blocks, c), _ncc_normalise(win, c))
            else:
                d = torch.cdist(blocks, win).square() / blocks.shape[-1]
            best = torch.minimum(best, d.amin(-1))
    return best.reshape(b, g, g)


def best_threshold(pos: Tensor, neg: Tensor) -> float:
    """The distance threshold with the highest accuracy for ``pos`` (should be below) and ``neg``
    (should be above) cells, weighting both classes equally."""
    p, n = pos.flatten().double(), neg.flatten().double()
    cand = torch.cat([p, n]).unique()
    if cand.numel() > 4096:
        cand = torch.quantile(cand, torch.linspace(0, 1, 4096, dtype=torch.float64))
    p_sorted, n_sorted = p.sort().values, n.sort().values
    tpr = torch.searchsorted(p_sorted, cand, right=True).double() / p.numel()  # pos <= t
    tnr = 1 - torch.searchsorted(n_sorted, cand, right=True).double() / n.numel()  # neg > t
    return float(cand[((tpr + tnr) / 2).argmax()])


def threshold_accuracy(pos: Tensor, neg: Tensor, threshold: float) -> float:
    """Balanced cell accuracy (%) of "belongs iff distance <= threshold"."""
    return float(50 * ((pos <= threshold).double().mean() + (neg > threshold).double().mean()))
