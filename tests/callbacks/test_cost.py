"""Eq. 9 / 16 / 17 against hand computations for a 2-layer net; Eq. 8 solver vs brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lr_lightning.callbacks.cost import (
    LayerShape,
    acceleration_table,
    chain_cost,
    channel_choices,
    eq9_cost,
    eq16_memory_bytes,
    eq17_cost,
    importance_values,
    solve_masks,
)

# a 2-layer net: conv 3 -> 16 and conv 16 -> 8 on 4x4 feature maps
NET = [LayerShape(3, 16, 4, 4), LayerShape(16, 8, 4, 4)]


def test_eq9_hand() -> None:
    assert eq9_cost(16, 8, 16) == 8 * 16 + 8 * 16
    # layer 1 uses c̄^(0) = c̄^(1): R = 8*8 + 8*3; layer 2 with c^(1) = 8, c^(2) = 8: 8*8 + 8*16
    assert chain_cost([8, 8], [3, 16]) == (64 + 24) + (64 + 128)


def test_eq16_hand() -> None:
    # unpruned, 32 bits: layer 1: (16*16*32 + 16*3*32 + 16*3*32)/8 = 1024 + 192 + 192
    # layer 2: (16*8*32 + 8*16*32 + 16*16*32)/8 = 512 + 512 + 1024
    assert eq16_memory_bytes(NET, [16, 8], 32, 32) == 1408 + 2048
    # int8 features, 32-bit weights, layer 1 pruned to 8: (16*8*8 + 8*3*32 + 16*3*8)/8 = 128+96+48;
    # layer 2 (c~_in = 8): (16*8*8 + 8*8*32 + 16*16*8)/8 = 128 + 256 + 256
    assert eq16_memory_bytes(NET, [8, 8], 8, 32) == 272 + 640


def test_eq17_hand() -> None:
    # bit_F {hw c_in (2 c~_out - 1) + c~_in c~_out (2 hw - 1)}, hw = 16
    l1 = 16 * 3 * (2 * 8 - 1) + 3 * 8 * (2 * 16 - 1)
    l2 = 16 * 16 * (2 * 8 - 1) + 8 * 8 * (2 * 16 - 1)
    assert eq17_cost(NET, [8, 8], 8) == 8 * (l1 + l2)


def test_acceleration_table_zero_row_is_bits_only() -> None:
    rows = acceleration_table(NET, prunable=1, ratios=(0.5,))
    assert rows[0]["cost_x"] == pytest.approx(4.0)  # 32-bit -> 8-bit features, no pruning
    assert rows[1]["kept"] == [8, 8] and rows[1]["cost_x"] > rows[0]["cost_x"]


def test_channel_choices() -> None:
    assert channel_choices(64) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert channel_choices(20) == [8, 16]
    assert channel_choices(3) == [3]


def test_importance_values_eq7() -> None:
    vals = importance_values(np.array([3.0, 4.0, 0.0]), [1, 2, 3])
    assert vals == pytest.approx([0.8, 1.4, 1.4])  # normalised [0.6, 0.8, 0], sorted, accumulated
    assert importance_values(np.array([3.0, 4.0, 0.0]), [1, 2], "eq8_literal") == pytest.approx([0.8, 2.2])


def _brute(values, choices, c_in, budget):
    best = None
    for combo in itertools.product(*[range(len(c)) for c in choices]):
        kept = [choices[i][j] for i, j in enumerate(combo)]
        cost = chain_cost(kept, c_in)
        if cost <= budget:
            val = sum(values[i][j] for i, j in enumerate(combo))
            if best is None or val > best:
                best = val
    return best


@pytest.mark.parametrize("seed", range(25))
def test_meet_in_the_middle_is_optimal(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 6))
    c_out = [int(rng.choice([8, 16, 24, 32, 40])) for _ in range(n)]
    choices = [channel_choices(c) for c in c_out]
    c_in = [int(rng.integers(1, 8))] + c_out[:-1]
    values = [importance_values(rng.random(c) ** 3, ch) for c, ch in zip(c_out, choices, strict=True)]
    lo = chain_cost([ch[0] for ch in choices], c_in)
    hi = chain_cost([ch[-1] for ch in choices], c_in)
    budget = float(rng.uniform(lo, hi))
    kept, value, cost = solve_masks(values, choices, c_in, budget)
    assert cost <= budget and chain_cost(kept, c_in) == cost
    assert value == pytest.approx(_brute(values, choices, c_in, budget))


def test_infeasible_budget_raises() -> None:
    with pytest.raises(ValueError, match="budget"):
        solve_masks([[1.0, 2.0]], [[8, 16]], [3], budget=1.0)
