"""Paper B's figures: per-class accuracy differences to the HR teacher (Fig. 3, 5) and an image
grid HR / LR / upscaled / SR / DarioNet (Figs. 6-7). matplotlib is imported lazily (Agg)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

from lr_lightning.plotting import pyplot, save_figure


def save_per_class_figure(path: Path, classes: Sequence[str], acc: dict[str, Sequence[float]],
                          reference: str = "HR", title: str = "") -> Path:
    """Bars of ``acc[m][c] - acc[reference][c]`` (accuracy points) per class for every other
    method ``m``; with more than 30 classes, a histogram of the differences instead (Fig. 3)."""
    plt = pyplot()
    others = [m for m in acc if m != reference]
    diffs = {m: [a - b for a, b in zip(acc[m], acc[reference], strict=True)] for m in others}
    fig, ax = plt.subplots(figsize=(9, 4))
    if len(classes) <= 30:
        width = 0.8 / max(1, len(others))
        for k, m in enumerate(others):
            xs = [i + (k - (len(others) - 1) / 2) * width for i in range(len(classes))]
            ax.bar(xs, diffs[m], width=width, label=f"{m} - {reference}")
        ax.set_xticks(range(len(classes)), list(classes), rotation=30)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_ylabel("accuracy difference (points)")
    else:
        for m in others:
            ax.hist(diffs[m], bins=40, alpha=0.6, label=f"{m} - {reference}")
        ax.set_xlabel("per-class accuracy difference (points)")
        ax.set_ylabel("classes")
    ax.set_title(title or f"Per-class accuracy vs {reference}")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)


def save_image_grid(path: Path, images: dict[str, Tensor]) -> Path:
    """One row per image, one column per entry of ``images`` (``(N, 3, H, W)`` in [0, 1], any
    sizes; shown without interpolation)."""
    plt = pyplot()
    names = list(images)
    n = images[names[0]].shape[0]
    fig, axes = plt.subplots(n, len(names), figsize=(1.6 * len(names), 1.6 * n), squeeze=False)
    for r in range(n):
        for c, name in enumerate(names):
            ax = axes[r, c]
            ax.imshow(images[name][r].detach().float().cpu().permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
