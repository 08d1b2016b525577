"""Deep autoresolution networks (Pereyra & Szegedy, paper D): the two siamese towers and the head.

* :class:`LRImageTower` embeds the low-resolution image (paper Sec. 2: 40 convolutional layers,
  mostly inception blocks). It ends in global average pooling, so the same tower later becomes
  the low-resolution classifier's backbone (Sec. 3.3).
* :class:`PatchTower` embeds a high-resolution patch (Sec. 2: 17 convolutional layers, mostly
  plain convolutions). All its convolutions are *valid* (no padding), so it is fully
  convolutional in the strict sense: unrolled over a larger "super patch" it gives one embedding
  per patch of a regular grid of overlapping patches (the tiled predictions of Sec. 3.2). The
  patch size is the tower's receptive field and the grid step its total stride; both are computed
  from the layer list (:meth:`PatchTower.receptive_field`, :meth:`PatchTower.grid_size`), never
  hard-coded. With the ``paper`` preset a 127x127 super patch gives the paper's 47x47 grid.
* :class:`AutoresolutionHead` concatenates the image embedding (broadcast over the grid) with
  every patch embedding and applies 5 convolutional layers (Sec. 2). They are 1x1 convolutions so
  that each grid cell is an independent prediction about its own patch: softmax over
  {not belongs, belongs} for patch classification, the patch centre (x, y) in [-1, 1] for patch
  regression (no activation).

Presets: ``paper`` (depths of Sec. 2: 40 / 17 / 5 conv layers; widths are not given in the
paper and are Inception-like choices) and ``small`` (CPU-sized). Every width and depth can be
overridden; ``None`` takes the preset's value.

No Lightning here (plain ``nn.Module``).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Preset = Literal["paper", "small"]

# ---- presets -------------------------------------------------------------------------------------
# LR tower: 3x3 stem convs, then per stage `blocks` inception blocks of width `widths` and an
# optional stride-2 reduction block, then a 1x1 embedding conv.
#   paper: 3 + (2*7) + 4 + (2*7) + 4 + 1 = 40 conv layers.
#   small: 2 + (2*7) + 4 + (1*7) + 1     = 28 conv layers.
IMAGE_PRESETS: dict[str, dict] = {
    "paper": {"stem": [32, 32, 64], "blocks": [2, 2], "widths": [256, 512], "reductions": [True, True], "embed_dim": 1024},
    "small": {"stem": [32, 48], "blocks": [2, 1], "widths": [64, 128], "reductions": [True, False], "embed_dim": 128},
}
# Patch tower: valid convolutions (kernel, stride, channels) + a 1x1 embedding conv.
#   paper: 3x3/2, then 8 x (3x3, 1x1) (the last 1x1 gives the embedding): 17 conv layers,
#   receptive field 35, stride 2, so a 127x127 super patch gives the paper's 47x47 grid (Sec. 3.2).
PATCH_PRESETS: dict[str, dict] = {
    "paper": {
        "kernels": [3] + [3, 1] * 8,
        "strides": [2] + [1, 1] * 8,
        "channels": [64] + [64, 64, 96, 96, 128, 128, 128, 128, 192, 192, 192, 192, 256, 256, 256, 256],
    },
    "small": {"kernels": [3, 3, 3, 3, 1], "strides": [1, 1, 1, 1, 1], "channels": [32, 32, 64, 64, 64]},
}
# Head: 5 conv layers (Sec. 2): 4 hidden 1x1 conv-BN-ReLU + the output 1x1 conv.
HEAD_PRESETS: dict[str, list[int]] = {"paper": [512, 512, 256, 256], "small": [128, 128, 64, 64]}


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Sequential:
    """Convolution (no bias) + batch norm + ReLU, the unit of both towers."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def count_convs(module: nn.Module) -> int:
    """Number of ``nn.Conv2d`` layers (the paper's layer count)."""
    return sum(isinstance(m, nn.Conv2d) for m in module.modules())


class InceptionBlock(nn.Module):
    """Inception block (Szegedy et al. 2014/2015, 'Inception-A'-like): 1x1 | 1x1-3x3 |
    1x1-3x3-3x3 | avgpool-1x1 branches concatenated; 7 conv layers, size-preserving."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        q = cout // 4
        widths = [cout - 3 * q, q, q, q]
        r = max(q // 2, 8)
        self.b1 = conv_bn_relu(cin, widths[0], 1)
        self.b3 = nn.Sequential(conv_bn_relu(cin, r, 1), conv_bn_relu(r, widths[1], 3, padding=1))
        self.b5 = nn.Sequential(
            conv_bn_relu(cin, r, 1), conv_bn_relu(r, widths[2], 3, padding=1), conv_bn_relu(widths[2], widths[2], 3, padding=1)
        )
        self.bp = nn.Sequential(nn.AvgPool2d(3, 1, 1, count_include_pad=False), conv_bn_relu(cin, widths[3], 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)


class ReductionBlock(nn.Module):
    """Grid reduction (Szegedy et al. 2015, Fig. 10): 3x3/2 conv | 1x1-3x3-3x3/2 | maxpool/2;
    4 conv layers, halves the spatial size, outputs ``cin + 2 * branch`` channels."""

    def __init__(self, cin: int, branch: int) -> None:
        super().__init__()
        self.a = conv_bn_relu(cin, branch, 3, 2, 1)
        self.b = nn.Sequential(
            conv_bn_relu(cin, branch // 2, 1), conv_bn_relu(branch // 2, branch, 3, padding=1), conv_bn_relu(branch, branch, 3, 2, 1)
        )
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.out_channels = cin + 2 * branch

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.a(x), self.b(x), self.pool(x)], 1)


def _pick(value: list | int | None, preset: dict, key: str) -> list | int:
    return preset[key] if value is None else value


class LRImageTower(nn.Module):
    """Low-resolution image embedding tower (paper D Sec. 2), mostly inception blocks.

    ``forward`` returns a ``(B, embed_dim)`` embedding (global average pool of the last map), so
    the tower is both the pretext image branch and the backbone of the LR classifier (Sec. 3.3).

    Args:
        preset: ``"paper"`` (40 conv layers) or ``"small"`` (28 conv layers, CPU-sized).
        stem: channels of the 3x3 (padding 1) stem convolutions.
        blocks: inception blocks per stage.
        widths: output channels of the inception blocks of each stage.
        reductions: whether a stride-2 reduction block follows each stage.
        embed_dim: channels of the final 1x1 embedding convolution.
        in_channels: image channels.
    """

    def __init__(
        self,
        preset: Preset = "small",
        stem: list[int] | None = None,
        blocks: list[int] | None = None,
        widths: list[int] | None = None,
        reductions: list[bool] | None = None,
        embed_dim: int | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        p = IMAGE_PRESETS[preset]
        stem, blocks, widths = _pick(stem, p, "stem"), _pick(blocks, p, "blocks"), _pick(widths, p, "widths")
        reductions, embed_dim = _pick(reductions, p, "reductions"), _pick(embed_dim, p, "embed_dim")
        if not (len(blocks) == len(widths) == len(reductions)):
            raise ValueError(
                f"blocks ({len(blocks)}), widths ({len(widths)}) and reductions ({len(reductions)}) need one entry per stage"
            )
        layers: list[nn.Module] = []
        c = in_channels
        for w in stem:
            layers.append(conv_bn_relu(c, w, 3, padding=1))
            c = w
        for n, w, red in zip(blocks, widths, reductions, strict=True):
            for _ in range(n):
                layers.append(InceptionBlock(c, w))
                c = w
            if red:
                rb = ReductionBlock(c, w // 2)
                layers.append(rb)
                c = rb.out_channels
        layers.append(conv_bn_relu(c, embed_dim, 1))
        self.features = nn.Sequential(*layers)
        self.embed_dim = embed_dim
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.features(x)).flatten(1)


class PatchTower(nn.Module):
    """High-resolution patch embedding tower (paper D Sec. 2), plain *valid* convolutions.

    On a ``P x P`` patch, with ``P`` the receptive field, it outputs one embedding; on an
    ``S x S`` super patch it outputs a ``G x G`` grid (Sec. 3.2), cell ``(i, j)`` embedding the
    patch whose top-left corner is ``(i * stride, j * stride)``.

    Args:
        preset: ``"paper"`` (17 conv layers, receptive field 35, stride 2) or ``"small"``
            (5 layers, receptive field 9, stride 1).
        kernels / strides / channels: one entry per conv layer (conv-BN-ReLU, no padding); the
            last layer's channels are the embedding size.
        in_channels: image channels.
    """

    def __init__(
        self,
        preset: Preset = "small",
        kernels: list[int] | None = None,
        strides: list[int] | None = None,
        channels: list[int] | None = None,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        p = PATCH_PRESETS[preset]
        kernels, strides, channels = _pick(kernels, p, "kernels"), _pick(strides, p, "strides"), _pick(channels, p, "channels")
        if not (len(kernels) == len(strides) == len(channels)) or not kernels:
            raise ValueError(
                f"kernels ({len(kernels)}), strides ({len(strides)}) and channels ({len(channels)}) need one entry per layer"
            )
        layers = []
        c = in_channels
        for k, s, w in zip(kernels, strides, channels, strict=True):
            layers.append(conv_bn_relu(c, w, k, s, 0))
            c = w
        self.layers = nn.Sequential(*layers)
        self.kernels, self.strides = list(kernels), list(strides)
        self.embed_dim = c

    def receptive_field(self) -> tuple[int, int]:
        """``(R, J)``: receptive field side and total stride (jump) of one output cell, from the
        recurrences ``R_l = R_{l-1} + (k_l - 1) J_{l-1}``, ``J_l = J_{l-1} s_l`` (valid convs, so the
        receptive field of cell ``i`` starts at input pixel ``i * J``)."""
        r, j = 1, 1
        for k, s in zip(self.kernels, self.strides, strict=True):
            r += (k - 1) * j
            j *= s
        return r, j

    def grid_size(self, size: int) -> int:
        """Output side for an input side ``size``: ``floor((n - k) / s) + 1`` layer by layer."""
        n = size
        for k, s in zip(self.kernels, self.strides, strict=True):
            n = (n - k) // s + 1
            if n < 1:
                r, _ = self.receptive_field()
                raise ValueError(f"input side {size} is smaller than the patch tower's receptive field {r}")
        return n

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class AutoresolutionHead(nn.Module):
    """Classifier / regressor on the concatenated embeddings (paper D Sec. 2): 5 conv layers,
    1x1 so each grid cell predicts for its own patch. Output channels: 2 logits
    (classification) or 2 coordinates (regression, no activation)."""

    def __init__(self, image_dim: int, patch_dim: int, hidden: list[int], out_channels: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = image_dim + patch_dim
        for w in hidden:
            layers.append(conv_bn_relu(c, w, 1))
            c = w
        layers.append(nn.Conv2d(c, out_channels, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, image_embedding: Tensor, patch_map: Tensor) -> Tensor:
        b, _, h, w = patch_map.shape
        img = image_embedding[:, :, None, None].expand(b, -1, h, w).to(patch_map.dtype)
        return self.layers(torch.cat([img, patch_map], 1))
