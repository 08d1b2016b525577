"""Gradient masks of paper E (Sec. IV.B, Eq. 7-9), learned offline and stored in a file.

The importance of a filter is the L2 norm of its weight gradient, accumulated over the
``D_gp`` batches with theta frozen; per layer the norms are L2-normalised and sorted (Eq. 7).
For each pruning ratio the number of kept filters per layer is the solution of the knapsack
Eq. 8 under the Eq. 9 budget (:func:`lr_lightning.callbacks.cost.solve_masks`, exact meet in the
middle); the kept filters are the most important ones. The last layer is never pruned.

File format (JSON, ``save_masks`` / ``load_masks``)::

    {"format": "lr-lightning-gradient-masks/1", "c_in": [...], "c_out": [...],
     "importance": [[...], ...],                      # accumulated filter norms per layer
     "masks": {"0.5": {"kept": [32, ...], "indices": [[...], ...], "cost_fraction": 0.49,
                       "filters_pruned": 0.5, "kind": "knapsack"}, ...}}

A layer-wise baseline (Table 6/7: the front layers get no gradient at all) is stored the same
way with ``kind: "layerwise"`` under the key ``"layerwise:<ratio>"``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lr_lightning.callbacks.cost import (
    chain_cost,
    channel_choices,
    importance_values,
    solve_masks,
    uniform_kept,
)

FORMAT = "lr-lightning-gradient-masks/1"


def ratio_key(ratio: float, kind: str = "knapsack") -> str:
    """The key of a mask set in the file: ``"0.5"`` or ``"layerwise:0.5"``."""
    key = f"{round(float(ratio), 4):g}"
    return key if kind == "knapsack" else f"{kind}:{key}"


def knapsack_masks(
    norms: Sequence[np.ndarray], c_in: Sequence[int], ratio: float, objective: str = "eq7"
) -> dict[str, Any]:
    """Eq. 7-9 for one ratio: the budget is the Eq. 9 cost of pruning ``ratio`` of the filters of
    every prunable layer uniformly; the knapsack redistributes the kept channels."""
    c_out = [len(n) for n in norms]
    choices = [channel_choices(c) for c in c_out]
    values = [importance_values(n, ch, objective) for n, ch in zip(norms, choices, strict=True)]
    budget = chain_cost([uniform_kept(c, ratio) for c in c_out], c_in)
    kept, _value, cost = solve_masks(values, choices, c_in, budget)
    order = [np.argsort(-np.asarray(n), kind="stable") for n in norms]
    indices = [sorted(int(i) for i in o[:c]) for o, c in zip(order, kept, strict=True)]
    return {
        "kind": "knapsack", "ratio": float(ratio), "kept": kept, "indices": indices,
        "cost_fraction": float(cost / chain_cost(c_out, c_in)),
        "filters_pruned": float(1 - sum(kept) / sum(c_out)),
    }


def layerwise_masks(c_out: Sequence[int], frozen_layers: int, ratio: float) -> dict[str, Any]:
    """Table 6/7 baseline: the first ``frozen_layers`` prunable layers get no gradient (empty
    masks), the others keep every filter, "so that it performs similarly to fine-tuning"."""
    kept = [0 if i < frozen_layers else c for i, c in enumerate(c_out)]
    return {
        "kind": "layerwise", "ratio": float(ratio), "kept": kept,
        "indices": [list(range(c)) for c in kept],
        "filters_pruned": float(1 - sum(kept) / sum(c_out)),
    }


def save_masks(path: str | os.PathLike[str], norms: Sequence[np.ndarray], c_in: Sequence[int],
               masks: dict[str, dict[str, Any]], provenance: dict[str, Any] | None = None) -> Path:
    """Write the masks file (see the module docstring); ``provenance`` (seed, source weights,
    batches) is stored under ``"provenance"``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": FORMAT, "c_in": [int(c) for c in c_in], "c_out": [len(n) for n in norms],
        "importance": [np.asarray(n, dtype=float).tolist() for n in norms], "masks": masks,
        "provenance": provenance or {},
    }
    p.write_text(json.dumps(doc, indent=1))
    return p


def load_masks(path: str | os.PathLike[str], ratio: float | str, kind: str = "knapsack") -> list[Tensor]:
    """Kept-channel indices per prunable layer for ``ratio`` (0 gives no masks: every filter)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"gradient masks file not found: {str(p)!r} (make it with the mask-learning stage)")
    doc = json.loads(p.read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{str(p)!r} is not a gradient masks file (format {doc.get('format')!r}, expected {FORMAT!r})")
    key = ratio if isinstance(ratio, str) else ratio_key(ratio, kind)
    if isinstance(ratio, (int, float)) and ratio == 0:
        return [torch.arange(c) for c in doc["c_out"]]
    if key not in doc["masks"]:
        raise KeyError(f"no masks for {key!r} in {str(p)!r}; it has {sorted(doc['masks'])}")
    return [torch.tensor(ix, dtype=torch.long) for ix in doc["masks"][key]["indices"]]
