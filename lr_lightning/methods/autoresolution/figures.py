"""Paper D's figure: Fig. 2, the binary "belongs" heat map of the classification pretext, written by
:meth:`AutoresolutionPretext.on_validation_epoch_end
<lr_lightning.methods.autoresolution.AutoresolutionPretext.on_validation_epoch_end>` from
:meth:`AutoresolutionPretext.heatmap <lr_lightning.methods.autoresolution.AutoresolutionPretext.heatmap>`.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from lr_lightning.plotting import pyplot, save_figure


def save_heatmap_figure(path: Path, *, lr: Tensor, other: Tensor, neg: Tensor, own: Tensor, pos: Tensor) -> Path:
    """Fig. 2 of paper D: the LR image, a super patch of another image with its binary heat map,
    and (for reference) the image's own super patch with its heat map."""
    plt = pyplot()
    fig, ax = plt.subplots(1, 5, figsize=(12.5, 2.8))
    show = [(lr, "LR image"), (other, "super patch (other image)"), ((neg > 0.5).float(), "belongs? (other)"),
            (own, "super patch (own image)"), ((pos > 0.5).float(), "belongs? (own)")]
    for a, (img, title) in zip(ax, show, strict=True):
        if img.ndim == 3:
            a.imshow(img.float().clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
        else:
            a.imshow(img.numpy(), cmap="RdYlGn", vmin=0, vmax=1, interpolation="nearest")
        a.set_title(title, fontsize=9)
        a.axis("off")
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)
