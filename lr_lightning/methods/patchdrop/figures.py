"""PatchDrop's test figures (paper C): Fig. 7 (accuracy vs S, sampling frequency per patch) and
Fig. 4/6 (the LR inputs and the HR patches the policy acquires). Written by
:meth:`PatchDrop.on_test_epoch_end <lr_lightning.methods.patchdrop.PatchDrop.on_test_epoch_end>`
from :func:`~lr_lightning.methods.patchdrop.model.policy_statistics`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lr_lightning.methods.patchdrop import grid as G
from lr_lightning.plotting import pyplot, save_figure


def save_statistics_figure(path: Path, *, stats: dict[str, Any], grid: int) -> Path:
    """Fig. 7: accuracy vs S (with the S histogram) and the sampling frequency of each patch id."""
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    hist = stats["S_histogram"]
    acc = [a if a is not None else float("nan") for a in stats["acc_vs_S"]]
    xs = list(range(len(hist)))
    ax[0].bar(xs, [h / max(1, sum(hist)) * 100 for h in hist], color="0.8", label="images (%)")
    ax[0].plot(xs, acc, "o-", color="C0", label="accuracy (%)")
    ax[0].set_xlabel("S (sampled HR patches)")
    ax[0].set_ylim(0, 100)
    ax[0].legend(fontsize=8)
    ax[0].set_title("accuracy vs S", fontsize=10)
    freq = torch.tensor(stats["patch_frequency"]).view(grid, grid)
    im = ax[1].imshow(freq.numpy(), vmin=0, vmax=1, cmap="viridis")
    for p in range(grid * grid):
        ax[1].text(p % grid, p // grid, f"{p}\n{freq.view(-1)[p]:.2f}", ha="center", va="center", fontsize=7, color="w")
    ax[1].set_title("sampling frequency per patch id", fontsize=10)
    ax[1].axis("off")
    fig.colorbar(im, ax=ax[1])
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def save_policy_figure(path: Path, *, hr: Tensor, lr: Tensor, actions: Tensor, grid: int) -> Path:
    """Fig. 4/6: LR inputs (top) and the HR patches the policy samples (bottom, dropped = dark)."""
    plt = pyplot()
    n = hr.shape[0]
    fig, ax = plt.subplots(2, n, figsize=(1.2 * n, 2.7), squeeze=False)
    m = G.patch_mask(actions.float(), hr.shape[-2], hr.shape[-1], grid)
    shown = hr.clamp(0, 1) * (0.15 + 0.85 * m)
    for i in range(n):
        ax[0, i].imshow(lr[i].clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
        ax[1, i].imshow(shown[i].permute(1, 2, 0).numpy(), interpolation="nearest")
        ax[1, i].set_title(f"S={int(actions[i].sum())}", fontsize=7)
        ax[0, i].axis("off")
        ax[1, i].axis("off")
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)
