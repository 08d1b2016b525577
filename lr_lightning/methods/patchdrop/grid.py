"""The patch grid of PatchDrop (paper C, Sec. 4.1, Fig. 3) and the fixed / stochastic dropping rules.

An image of ``H x W`` pixels is cut into ``G x G`` non-overlapping patches, ``P = G^2``, with
row-major patch ids (id ``p`` is row ``p // G``, column ``p % G``), as in the paper's Fig. 3. An
action ``a in {0,1}^P`` keeps patch ``p`` when ``a_p = 1``; the masked image is
``x_h^m = x_h (.) a`` (Sec. 3) with the dropped pixels set to a fill value.

Everything here is vectorised over the batch (no Python loop per sample) and device-agnostic.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Fixed-H / Fixed-V priority lists of the paper (Sec. 5.2) for the 4x4 grid. The printed
#: Fixed-H list has 15 ids (12 is missing); the missing id 12 is appended last so the list is a
#: permutation of all 16 patches.
PAPER_FIXED_H: tuple[int, ...] = (5, 6, 9, 10, 13, 14, 1, 2, 0, 3, 4, 7, 8, 11, 15, 12)
PAPER_FIXED_V: tuple[int, ...] = (4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3)


def check_grid(height: int, width: int, grid: int) -> tuple[int, int]:
    """Patch height and width; a clear error when ``grid`` does not divide the image size."""
    if grid < 1:
        raise ValueError(f"the patch grid must be >= 1 per side, got {grid}")
    if height % grid or width % grid:
        raise ValueError(
            f"an image of {height}x{width} pixels cannot be cut into a {grid}x{grid} patch grid "
            f"(both sides must be divisible by {grid}); resize or crop the images, or change `grid`"
        )
    return height // grid, width // grid


def patch_mask(actions: Tensor, height: int, width: int, grid: int) -> Tensor:
    """Pixel mask ``(B, 1, H, W)`` of the kept patches for actions ``(B, P)`` (1 = keep)."""
    ph, pw = check_grid(height, width, grid)
    if actions.ndim != 2 or actions.shape[1] != grid * grid:
        raise ValueError(f"actions must have shape (B, {grid * grid}) for a {grid}x{grid} grid, got {tuple(actions.shape)}")
    m = actions.view(-1, 1, grid, 1, grid, 1).expand(-1, 1, grid, ph, grid, pw)
    return m.reshape(-1, 1, height, width)


def apply_mask(x: Tensor, actions: Tensor, grid: int, fill: Tensor | float = 0.0) -> Tensor:
    """``x (.) a`` with dropped pixels set to ``fill`` (a scalar or a per-channel ``(1, C, 1, 1)``)."""
    m = patch_mask(actions.to(x.dtype), x.shape[-2], x.shape[-1], grid)
    if isinstance(fill, Tensor):
        return x * m + fill.to(x.dtype) * (1 - m)
    if fill == 0.0:
        return x * m
    return x * m + fill * (1 - m)


def patch_centres(grid: int) -> Tensor:
    """Centres ``(P, 2)`` (row, col) of the patches in units of one patch, image centre at 0."""
    idx = torch.arange(grid, dtype=torch.float64) + 0.5 - grid / 2
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)


def fixed_priority(kind: str, grid: int) -> tuple[int, ...]:
    """Patch ids in the order a fixed policy takes them (Sec. 5.2).

    ``"h"`` / ``"v"`` on the 4x4 grid are the paper's lists. On other grids (not in the paper) the
    same idea is generalised: Fixed-H takes the central columns first (by column distance to the
    centre, then row distance), Fixed-V the central rows first (row distance, then column
    distance); ties keep row-major order.
    """
    if kind not in ("h", "v"):
        raise ValueError(f"fixed priority kind must be 'h' or 'v', got {kind!r}")
    if grid == 4:
        return PAPER_FIXED_H if kind == "h" else PAPER_FIXED_V
    c = patch_centres(grid).abs()
    keys = [(float(c[p, 1]), float(c[p, 0]), p) if kind == "h" else (float(c[p, 0]), float(c[p, 1]), p) for p in range(grid * grid)]
    return tuple(p for *_, p in sorted(keys))


def fixed_actions(priority: tuple[int, ...] | list[int], num_kept: int, batch: int, device: torch.device | None = None) -> Tensor:
    """Actions ``(B, P)`` keeping the first ``num_kept`` patches of a priority list."""
    p = len(priority)
    if not 0 <= num_kept <= p:
        raise ValueError(f"num_kept must be in [0, {p}], got {num_kept}")
    a = torch.zeros(p, device=device)
    a[torch.tensor(list(priority[:num_kept]), dtype=torch.long, device=device)] = 1.0
    return a.expand(batch, p).clone()


def stochastic_survival(grid: int, expected_kept: float) -> Tensor:
    """Per-patch keep probabilities decaying linearly with the distance to the image centre.

    The stochastic baseline of Sec. 5.2 (after stochastic depth, Huang et al. 2016): patch ``p``
    survives with ``min(1, beta * w_p)``, ``w_p = 1 - d_p / (d_max + 1)`` (``d_p`` = distance of its
    centre to the image centre in patch units, so the corner patches keep a non-zero chance), and
    ``beta`` is found by bisection so that the expected number of kept patches is
    ``expected_kept``.
    """
    p = grid * grid
    if not 0.0 <= expected_kept <= p:
        raise ValueError(f"expected_kept must be in [0, {p}], got {expected_kept}")
    d = patch_centres(grid).norm(dim=1)
    w = 1.0 - d / (d.max() + 1.0)
    lo, hi = 0.0, 1.0 / float(w.min())
    for _ in range(200):
        mid = (lo + hi) / 2
        if float(torch.clamp(mid * w, max=1.0).sum()) < expected_kept:
            lo = mid
        else:
            hi = mid
    return torch.clamp(hi * w, max=1.0).float()


def top_k_actions(scores: Tensor, k: int | Tensor) -> Tensor:
    """Actions keeping the ``k`` highest-scoring patches of each row (``k`` scalar or per row)."""
    b, p = scores.shape
    order = scores.argsort(dim=1, descending=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(p, device=scores.device).expand(b, p))
    k = torch.as_tensor(k, device=scores.device).reshape(-1, 1) if isinstance(k, Tensor) else k
    return (ranks < k).to(scores.dtype)
