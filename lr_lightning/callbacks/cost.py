"""Cost and memory models of paper E and the exact solver of its mask problem (Eq. 8, 9, 16, 17).

Layers are described by :class:`LayerShape` ``(c_in, c_out, h, w)`` (``h, w`` = output feature
size). ``kept`` lists the remaining output channels per layer (``c~_out``); ``c~_in`` of a layer is
the ``c~_out`` of the layer before (``c_in`` for the first layer). A layer with ``kept = 0`` has
no weight gradient at all (a frozen layer of the layer-wise baseline, Table 6/7).

Which accounting the knapsack (Eq. 9, :func:`chain_cost`), the cost tables (Eq. 17,
:func:`eq17_cost` readings) and the real backward use is written down in one place: the section
"Cost accounting" of ``docs/integer_training.md``.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Eq17Reading = Literal["unpruned_activation", "pruned_activation", "full_propagation"]
EQ17_READINGS: tuple[str, ...] = ("unpruned_activation", "pruned_activation", "full_propagation")
#: paper E, Table 2 (cost / memory acceleration vs the FP net, ZSSR-8 at 32x32)
PAPER_TABLE2 = {0.27: (5.14, 4.43), 0.5: (6.20, 5.25), 0.67: (7.14, 6.08), 0.85: (7.81, 7.12)}
#: paper E, Table 7, layer-wise row: prune ratio -> (cost, memory) vs the unpruned integer net
PAPER_TABLE7_LAYERWISE = {0.17: (1.20, 1.17), 0.5: (1.49, 1.42), 0.66: (1.71, 1.58), 0.83: (1.99, 1.79)}
#: paper E, Table 7, proposed (knapsack) row
PAPER_TABLE7_PROPOSED = {0.27: (1.26, 1.16), 0.5: (1.52, 1.37), 0.67: (1.79, 1.56), 0.85: (1.95, 1.79)}
#: paper E, Table 5: gradient memory (KB) at 32x32
PAPER_TABLE5_KB = {"Original": 19371.0, "8-bit": 4840.0, "8-bit(Ours)": 5517.0}


@dataclass(frozen=True)
class LayerShape:
    """One conv/linear layer: input and output channels and the output feature size ``h x w``."""

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


def eq16_memory_bytes(
    layers: Sequence[LayerShape], kept: Sequence[int], bit_f: int, bit_w: int, *, kernel_area: int = 1
) -> float:
    """Eq. 16: ``sum_l (h w c~_out bit_F + c~_out c~_in k bit_θ + h w c_in k bit_F) / 8`` bytes.

    ``kernel_area`` ``k`` = 1 is Eq. 16 as printed (it reproduces Table 2's memory row within
    about 4 %); ``k = k_h k_w = 9`` counts the 3x3 weights and the unfolded (im2col) input of the
    weight-gradient product, which reproduces Table 5's KB numbers (:func:`table5_memory_kb`).
    """
    total = 0.0
    for i, (ly, c) in enumerate(zip(layers, kept, strict=True)):
        c_in_kept = ly.c_in if i == 0 else kept[i - 1]
        hw = ly.h * ly.w
        total += (hw * c * bit_f + c * c_in_kept * kernel_area * bit_w + hw * ly.c_in * kernel_area * bit_f) / 8
    return total


def _ops(outputs: int, terms: int) -> int:
    """Multiplies + adds of ``outputs`` sums of ``terms`` products: ``outputs (2 terms - 1)`` (0 if empty)."""
    return outputs * (2 * terms - 1) if terms > 0 else 0


def eq17_cost(
    layers: Sequence[LayerShape], kept: Sequence[int], bit_f: int, *, reading: Eq17Reading = "unpruned_activation"
) -> float:
    """Eq. 17: ``sum_l bit_F {h w c_in (2 c_out' - 1) + c_in' c~_out (2 h w - 1)}``, the activation-
    gradient term (``h w c_in`` sums over the output channels) plus the weight-gradient term
    (``c_in' c~_out`` sums over the pixels), in one of three readings:

    * ``"unpruned_activation"`` (default): ``c_out' = c_out`` (unpruned), ``c_in' = c~_in``. With
      ``bit_F = 8`` vs the 32-bit FP net (the bit factor 32/8 = 4) it gives x5.12 / x6.40 / x7.01
      / x7.90 for uniform masks at 27/50/67/85 % on ZSSR-8 at 32x32 (paper Table 2: 5.14 / 6.20 /
      7.14 / 7.81), and, vs the unpruned integer net with the first 2/4/5/6 layers frozen
      (``kept = 0``), x1.20 / 1.50 / 1.71 / 1.99 (Table 7, layer-wise: 1.20 / 1.49 / 1.71 / 1.99);
    * ``"pruned_activation"``: ``c_out' = c~_out``, ``c_in' = c~_in`` (Eq. 17 with every ``c``
      pruned; ``2 h w`` x Eq. 9 per layer, the real ``propagate="pruned"`` backward);
    * ``"full_propagation"``: ``c_out' = c_out``, ``c_in' = c_in`` (the real ``propagate="full"``
      backward: exact activation gradients, weight gradients of the kept filters only).

    ``c~_in`` is the previous layer's ``kept`` (``c_in`` for the first layer). Eq. 17 sums over all
    layers, including the first layer's activation gradient, which no real backward computes.
    """
    if reading not in EQ17_READINGS:
        raise ValueError(f"reading must be one of {list(EQ17_READINGS)}, got {reading!r}")
    total = 0.0
    for i, (ly, c) in enumerate(zip(layers, kept, strict=True)):
        c_in_kept = ly.c_in if i == 0 else kept[i - 1]
        hw = ly.h * ly.w
        act_terms = c if reading == "pruned_activation" else ly.c_out
        w_in = ly.c_in if reading == "full_propagation" else c_in_kept
        total += bit_f * (_ops(hw * ly.c_in, act_terms) + _ops(w_in * c, hw))
    return total


def channel_choices(c_out: int) -> list[int]:
    """``C^(l) = {8, 16, ..., 8 floor(c_out / 8)}`` (``[c_out]`` if ``c_out < 8``: not prunable)."""
    return list(range(8, 8 * (c_out // 8) + 1, 8)) or [c_out]


def uniform_kept(c_out: int, prune_ratio: float) -> int:
    """The choice in ``C^(l)`` nearest to ``(1 - prune_ratio) c_out``."""
    choices = channel_choices(c_out)
    return min(choices, key=lambda c: (abs(c - (1 - prune_ratio) * c_out), -c))


def layerwise_frozen(prunable: int, ratio: float) -> int:
    """Front layers frozen by the layer-wise baseline (Table 6/7) at ``ratio``:
    ``ceil(ratio * prunable)``. For ZSSR-8 (7 prunable layers) the paper's 17/50/66/83 % give
    2/4/5/6 layers; this equals ``1 + round(ratio * 6)``, i.e. the ratios are ``k/6`` of the six
    64->64 layers with the 3->64 first layer always frozen, so both readings agree."""
    return min(prunable, math.ceil(ratio * prunable - 1e-9))


def layerwise_kept(layers: Sequence[LayerShape], prunable: int, ratio: float) -> list[int]:
    """``kept`` of the layer-wise baseline: the first :func:`layerwise_frozen` layers have no weight
    gradient (``kept = 0``), every other layer keeps all its filters."""
    n = layerwise_frozen(prunable, ratio)
    return [0 if i < n else ly.c_out for i, ly in enumerate(layers)]


def acceleration_table(
    layers: Sequence[LayerShape], prunable: int, ratios: Sequence[float] = (0.27, 0.5, 0.67, 0.85),
    bit_f: int = 8, bit_w: int = 32, kept_override: dict[float, list[int]] | None = None, *,
    reading: Eq17Reading = "unpruned_activation", baseline: Literal["fp32", "integer"] = "fp32",
    scheme: Literal["uniform", "layerwise"] = "uniform", memory_kernel_area: int = 1,
) -> list[dict[str, float]]:
    """Cost (Eq. 17, :func:`eq17_cost` in ``reading``) and memory (Eq. 16) acceleration (Table 2 / 7).

    ``baseline="fp32"`` (Table 2): ratios vs the unpruned 32-bit float net, so they include the
    bit factor 32/``bit_f``; ``"integer"`` (Table 7): vs the unpruned net at ``bit_f`` / ``bit_w``.
    ``scheme="uniform"``: the first ``prunable`` layers keep :func:`uniform_kept` filters at each
    ratio; ``"layerwise"``: the first :func:`layerwise_frozen` layers are frozen (no weight
    gradient), the rest unpruned (the paper's layer-wise baseline). ``kept_override[ratio]``
    replaces the kept channels of the first layers (e.g. knapsack masks). A 0 % row is included.
    """
    full = [ly.c_out for ly in layers]
    base_f, base_w = (32, 32) if baseline == "fp32" else (bit_f, bit_w)
    base_cost = eq17_cost(layers, full, base_f, reading=reading)
    base_mem = eq16_memory_bytes(layers, full, base_f, base_w, kernel_area=memory_kernel_area)
    rows = []
    for r in (0.0, *ratios):
        if kept_override and r in kept_override:
            kept = list(kept_override[r]) + full[len(kept_override[r]):]
        elif scheme == "layerwise":
            kept = layerwise_kept(layers, prunable, r)
        else:
            kept = [uniform_kept(ly.c_out, r) if i < prunable else ly.c_out for i, ly in enumerate(layers)]
        pruned = sum(full[:prunable]) - sum(kept[:prunable])
        rows.append({
            "prune_ratio": r,
            "filters_pruned": pruned / max(1, sum(full[:prunable])),
            "cost_x": base_cost / eq17_cost(layers, kept, bit_f, reading=reading),
            "memory_x": base_mem / eq16_memory_bytes(layers, kept, bit_f, bit_w, kernel_area=memory_kernel_area),
            "kept": kept,
        })
    return rows


def zssr8_shapes(h: int = 32, w: int = 32, width: int = 64, depth: int = 8, channels: int = 3) -> list[LayerShape]:
    """ZSSR-8's layers at feature size ``h x w`` (3->64, 6x 64->64, 64->3): the cost tables' net."""
    return [
        LayerShape(channels if i == 0 else width, channels if i == depth - 1 else width, h, w) for i in range(depth)
    ]


def table5_memory_kb(layers: Sequence[LayerShape], kernel_area: int = 9) -> dict[str, float]:
    """Gradient memory of Table 5 in KB (1000 bytes), unpruned: ``Original`` (all 32-bit),
    ``8-bit`` (all 8-bit) and ``8-bit(Ours)`` (8-bit features, 32-bit weight term, Eq. 14).

    With ``kernel_area = 9`` (3x3 weights and the im2col input of the weight gradient counted,
    :func:`eq16_memory_bytes`) ZSSR-8 at 32x32 gives 19,371.5 / 4,842.9 / 5,516.8 KB (x4.00 /
    x3.51), the paper's 19,371 / 4,840 / 5,517 KB (x4.00 / x3.51); with ``kernel_area = 1`` (Eq. 16
    as printed) 3,794.4 / 948.6 / 1,023.5 KB, x3.71 for ours. Only one weight-sized term is 32-bit:
    32-bit weights *and* 32-bit weight gradients would give 6,190.7 KB (x3.13).
    """
    full = [ly.c_out for ly in layers]
    return {
        "Original": eq16_memory_bytes(layers, full, 32, 32, kernel_area=kernel_area) / 1000,
        "8-bit": eq16_memory_bytes(layers, full, 8, 8, kernel_area=kernel_area) / 1000,
        "8-bit(Ours)": eq16_memory_bytes(layers, full, 8, 32, kernel_area=kernel_area) / 1000,
    }


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
