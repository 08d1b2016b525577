"""CIFAR ResNets (He et al. 2016, Sec. 4.2) as used by PatchDrop (paper C).

Three stages of ``n`` basic blocks with widths 16/32/64 on a 3x3 stem; the shortcut of a block
that changes shape is parameter-free ("option A"): average pooling with the block's stride and
zero-padding of the new channels, as in the PatchDrop reference nets (ResNet32 = [5,5,5] for the
classifiers, ResNet8 = [1,1,1] for the policy network). Depth = 6n + 2.
"""

from __future__ import annotations

import math
from typing import Literal

from torch import Tensor, nn
from torch.nn import functional as F

Norm = Literal["batch", "group", "none"]


def norm_layer(kind: Norm, channels: int) -> nn.Module:
    """``batch``: BatchNorm (the paper's nets); ``group``: GroupNorm with ``gcd(8, channels)`` groups (statistics per
    image, so a batch split over DDP ranks normalises as one batch: DDP-equivalent on CPU, where
    SyncBatchNorm has no kernel); ``none``: identity."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'group' or 'none', got {kind!r}")


class _ShortcutA(nn.Module):
    """Parameter-free shortcut: average-pool by ``stride`` and zero-pad the extra channels."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_ch - in_ch

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = F.avg_pool2d(x, self.stride)
        if self.extra > 0:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra))
        return x


class BasicBlock(nn.Module):
    """Two 3x3 conv-norm layers with an identity (or option-A) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, norm: Norm = "batch") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=norm == "none")
        self.bn1 = norm_layer(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=norm == "none")
        self.bn2 = norm_layer(norm, out_ch)
        self.shortcut: nn.Module = (
            _ShortcutA(in_ch, out_ch, stride) if (stride != 1 or in_ch != out_ch) else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images: widths 16/32/64, ``blocks = [n, n, n]``.

    Args:
        depth: 8, 20, 32, 56, 110 (any ``6n + 2``).
        num_classes: logits of the linear head; ``0`` returns pooled 64-d features.
        in_channels: image channels.
        widths: channels of the three stages.
        norm: ``batch`` (default, the paper's), ``group`` or ``none`` (:func:`norm_layer`);
            the layers keep their names (``bn1`` ...), so ``batch`` and ``group`` share their affine
            keys (``group`` has no running statistics; ``none`` has no norm keys and conv biases).
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        norm: Norm = "batch",
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 20, 32, 56, ...), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=norm == "none"),
            norm_layer(norm, widths[0]),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        in_ch = widths[0]
        for stage, width in enumerate(widths):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                layers.append(BasicBlock(in_ch, width, stride, norm))
                in_ch = width
        self.layers = nn.Sequential(*layers)
        self.feature_dim = in_ch
        self.fc: nn.Module = nn.Linear(in_ch, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        """Pooled features before the linear head, shape (B, 64)."""
        x = self.layers(self.stem(x))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.forward_features(x))


def resnet8(num_classes: int = 10) -> CifarResNet:
    """ResNet8 ([1,1,1]); PatchDrop's policy network backbone."""
    return CifarResNet(8, num_classes)


def resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet20 ([3,3,3])."""
    return CifarResNet(20, num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    """ResNet32 ([5,5,5]); PatchDrop's CIFAR classifier."""
    return CifarResNet(32, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    """ResNet56 ([9,9,9])."""
    return CifarResNet(56, num_classes)
