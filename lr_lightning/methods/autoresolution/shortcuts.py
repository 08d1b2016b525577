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
  (``normalise=True``: per-channel mean removed and unit norm, so invariant to per-channel gain and
  offset, i.e. to most of :func:`~lr_lightning.methods.autoresolution.targets.jitter_patches`).

A cell is called "belongs" when its distance is below a threshold; :func:`best_threshold` fits it
on one set of pretext problems (the training images) and :func:`threshold_accuracy` scores another
(validation), with positives and negatives built as the pretext builds them. Written by hand (a few
tensor ops); no library ships these baselines.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def window_side(patch: int, factor: int) -> int:
    """Side ``k`` of the LR window an HR patch of side ``patch`` covers."""
    return max(1, round(patch / factor))


def _cells(super_patch: Tensor, patch: int, stride: int, k: int) -> tuple[Tensor, int]:
    """Every cell average-pooled to ``k x k``: ``(B, G*G, C*k*k)`` and ``G``."""
    b, c, s, _ = super_patch.shape
    g = (s - patch) // stride + 1
    cols = F.unfold(super_patch.float(), patch, stride=stride)  # (B, C*P*P, G*G)
    cells = cols.transpose(1, 2).reshape(b * g * g, c, patch, patch)
    pooled = F.adaptive_avg_pool2d(cells, k).reshape(b, g * g, c * k * k)
    return pooled, g


def _windows(lr: Tensor, k: int) -> Tensor:
    """Every ``k x k`` window of the LR image: ``(B, Nw, C*k*k)``."""
    return F.unfold(lr.float(), k, stride=1).transpose(1, 2)


def _ncc_normalise(v: Tensor, channels: int) -> Tensor:
    shape = v.shape
    v = v.reshape(*shape[:-1], channels, -1)
    v = v - v.mean(-1, keepdim=True)
    v = v.reshape(shape)
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-6)


def colour_match_distance(lr: Tensor, super_patch: Tensor, patch: int, stride: int, factor: int) -> Tensor:
    """``(B, G, G)``: squared distance of each cell's mean colour to the closest mean colour of a
    ``k x k`` window of image ``b``'s LR image (``lr[b]`` pairs with ``super_patch[b]``)."""
    k = window_side(patch, factor)
    b, c = super_patch.shape[:2]
    g = (super_patch.shape[-1] - patch) // stride + 1
    cell = F.avg_pool2d(super_patch.float(), patch, stride).reshape(b, c, g * g).transpose(1, 2)  # (B, G*G, C)
    win = F.avg_pool2d(lr.float(), k, 1).reshape(b, c, -1).transpose(1, 2)  # (B, Nw, C)
    return torch.cdist(cell, win).square().amin(-1).reshape(b, g, g)


def template_match_distance(
    lr: Tensor, super_patch: Tensor, patch: int, stride: int, factor: int, normalise: bool = False
) -> Tensor:
    """``(B, G, G)``: distance of each cell, pooled to ``k x k``, to the closest ``k x k`` window of
    its LR image (squared L2, or ``1 - NCC`` with ``normalise``)."""
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
