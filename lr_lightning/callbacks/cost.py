"""Cost and memory models of paper E and the exact solver of its mask problem (Eq. 8, 9, 16, 17).

Layers are described by :class:`LayerShape` ``(c_in, c_out, h, w)`` (``h, w`` = output feature
size). ``kept`` lists the remaining output channels per layer (``c~_out``); ``c~_in`` of a layer is
the ``c~_out`` of the layer before (``c_in`` for the first layer).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LayerShape:
    c_in: int
    c_out: int
    h: int
    w: int


def eq9_cost(c_prev_kept: int, c_kept: int, c_out_prev: int) -> int:
    """Eq. 9: ``R(c̄^(l-1), c^(l)) = c^(l) c̄^(l-1) + c^(l) c_out^(l-1)`` (activation + weight gradient)."""
    return c_kept * c_prev_kept + c_kept * c_out_prev


def chain_cost(kept: Sequence[int], c_in: Sequence[int]) -> int:
    """Sum of Eq. 9 over the prunable layers ``1..L-1`` with ``c̄^(0) = c̄^(1)`` (as in the paper);
    ``c_in[l]`` is ``c_out^(l-1)`` (the unpruned input channels of layer ``l``)."""
    total = 0
    for i, c in enumerate(kept):
        prev = kept[0] if i == 0 else kept[i - 1]
        total += eq9_cost(prev, c, c_in[i])
    return total


def eq16_memory_bytes(layers: Sequence[LayerShape], kept: Sequence[int], bit_f: int, bit_w: int) -> float:
    """Eq. 16: ``sum_l (h w c~_out bit_F + c~_out c~_in bit_θ + h w c_in bit_F) / 8`` bytes."""
    total = 0.0
    for i, (ly, c) in enumerate(zip(layers, kept, strict=True)):
        c_in_kept = ly.c_in if i == 0 else kept[i - 1]
        total += (ly.h * ly.w * c * bit_f + c * c_in_kept * bit_w + ly.h * ly.w * ly.c_in * bit_f) / 8
    return total


def eq17_cost(layers: Sequence[LayerShape], kept: Sequence[int], bit_f: int) -> float:
    """Eq. 17: ``sum_l bit_F {h w c_in (2 c~_out - 1) + c~_in c~_out (2 h w - 1)}``."""
    total = 0.0
    for i, (ly, c) in enumerate(zip(layers, kept, strict=True)):
        c_in_kept = ly.c_in if i == 0 else kept[i - 1]
        hw = ly.h * ly.w
        total += bit_f * (hw * ly.c_in * (2 * c - 1) + c_in_kept * c * (2 * hw - 1))
    return total


def channel_choices(c_out: int) -> list[int]:
    """``C^(l) = {8, 16, ..., 8 floor(c_out / 8)}`` (``[c_out]`` if ``c_out < 8``: not prunable)."""
    return list(range(8, 8 * (c_out // 8) + 1, 8)) or [c_out]


def uniform_kept(c_out: int, prune_ratio: float) -> int:
    """The choice in ``C^(l)`` nearest to ``(1 - prune_ratio) c_out``."""
    choices = channel_choices(c_out)
    return min(choices, key=lambda c: (abs(c - (1 - prune_ratio) * c_out), -c))


def acceleration_table(
    layers: Sequence[LayerShape], prunable: int, ratios: Sequence[float] = (0.27, 0.5, 0.67, 0.85),
    bit_f: int = 8, bit_w: int = 32, kept_override: dict[float, list[int]] | None = None,
) -> list[dict[str, float]]:
    """Cost (Eq. 17) and memory (Eq. 16) acceleration vs the unpruned 32-bit float net (Table 2).

    The first ``prunable`` layers are pruned uniformly to each ratio (or to ``kept_override[ratio]``);
    the others keep all channels. A 0% row for the integer net without pruning is included.
    """
    full = [ly.c_out for ly in layers]
    fp_cost, fp_mem = eq17_cost(layers, full, 32), eq16_memory_bytes(layers, full, 32, 32)
    rows = []
    for r in (0.0, *ratios):
        if kept_override and r in kept_override:
            kept = list(kept_override[r]) + full[len(kept_override[r]):]
        else:
            kept = [uniform_kept(ly.c_out, r) if i < prunable else ly.c_out for i, ly in enumerate(layers)]
        pruned = sum(full[:prunable]) - sum(kept[:prunable])
        rows.append({
            "prune_ratio": r,
            "filters_pruned": pruned / max(1, sum(full[:prunable])),
            "cost_x": fp_cost / eq17_cost(layers, kept, bit_f),
            "memory_x": fp_mem / eq16_memory_bytes(layers, kept, bit_f, bit_w),
            "kept": kept,
        })
    return rows


def solve_masks(
    values: Sequence[Sequence[float]], choices: Sequence[Sequence[int]], c_in: Sequence[int], budget: float
) -> tuple[list[int], float, float]:
    """Exact solution of Eq. 8 by meet in the middle.

    ``values[l][j]`` is the importance of keeping ``choices[l][j]`` filters in layer ``l``; the cost
    is :func:`chain_cost`. Because Eq. 9 couples neighbouring layers, the layers are split in two
    halves and the second half is enumerated once per choice of the boundary layer; each half's
    list is sorted by cost with a running maximum of value, and every first-half item is paired
    with the best affordable second-half item by binary search. Returns ``(kept, value, cost)``.
    Raises ``ValueError`` if even the smallest masks exceed the budget.
    """
    n = len(choices)
    if n == 0:
        return [], 0.0, 0.0
    m = max(1, n // 2)

    def enumerate_half(lo: int, hi: int, prev_fixed: int | None) -> list[tuple[float, float, tuple[int, ...]]]:
        out = []
        for idx in itertools.product(*[range(len(choices[layer])) for layer in range(lo, hi)]):
            kept = [choices[lo + k][j] for k, j in enumerate(idx)]
            cost, val = 0.0, 0.0
            for k, c in enumerate(kept):
                layer = lo + k
                if k == 0:
                    prev = kept[0] if prev_fixed is None else prev_fixed
                else:
                    prev = kept[k - 1]
                cost += eq9_cost(prev, c, c_in[layer])
                val += values[layer][idx[k]]
            out.append((cost, val, tuple(kept)))
        return out

    first = enumerate_half(0, m, None)
    best: tuple[float, float, tuple[int, ...]] | None = None
    for boundary in sorted({f[2][-1] for f in first}):
        group = [f for f in first if f[2][-1] == boundary]
        if m == n:
            second = [(0.0, 0.0, ())]
        else:
            second = enumerate_half(m, n, boundary)
        second.sort(key=lambda t: t[0])
        costs = [s[0] for s in second]
        run_best, run_idx = [], []
        for i, s in enumerate(second):
            if not run_best or s[1] > run_best[-1]:
                run_best.append(s[1])
                run_idx.append(i)
            else:
                run_best.append(run_best[-1])
                run_idx.append(run_idx[-1])
        for cost1, val1, kept1 in group:
            j = bisect.bisect_right(costs, budget - cost1) - 1
            if j < 0:
                continue
            s = second[run_idx[j]]
            total = val1 + s[1]
            if best is None or total > best[1] + 1e-12:
                best = (cost1 + s[0], total, kept1 + s[2])
    if best is None:
        raise ValueError(f"cost budget {budget} is below the cheapest masks; raise the budget")
    return list(best[2]), float(best[1]), float(best[0])


def importance_values(filter_norms: np.ndarray, choices: Sequence[int], objective: str = "eq7") -> list[float]:
    """Eq. 7: L2-normalised per-filter gradient norms sorted descending and accumulated; the value
    of keeping ``c`` filters is ``I_(c)`` (``eq7``) or, reading Eq. 8's inner sum literally,
    ``sum_{s<=c} I_(s)`` (``eq8_literal``)."""
    norms = np.asarray(filter_norms, dtype=np.float64)
    denom = np.linalg.norm(norms)
    hat = np.sort(norms / denom if denom > 0 else norms)[::-1]
    cum = np.cumsum(hat)
    if objective == "eq8_literal":
        cum = np.cumsum(cum)
    return [float(cum[c - 1]) for c in choices]
