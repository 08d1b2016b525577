"""timm pass-through for large backbones (ResNet-50, EfficientNet, ViT, ...)."""

from __future__ import annotations

import timm
from torch import Tensor, nn

from lr_lightning.nn.weights import load_state_dict_file


class TimmClassifier(nn.Module):
    """A ``timm.create_model`` network; weights come from a local file, never a download.

    Args:
        model_name: any timm architecture name, e.g. ``"resnet50"``.
        num_classes: classifier outputs (the head is re-created by timm).
        in_channels: image channels.
        weights_path: optional local weights file (timm/torchvision state dict or a Lightning
            checkpoint), loaded with ``weights_only=True``; ``strict=False`` lets a different
            head size through, and the missing keys are reported.
        weights_prefix: prefix to strip from the file's keys (e.g. ``"net."``).
    """

    def __init__(
        self,
        model_name: str = "resnet18",
        num_classes: int = 10,
        in_channels: int = 3,
        weights_path: str | None = None,
        weights_prefix: str | None = None,
    ) -> None:
        super().__init__()
        self.model = timm.create_model(
            model_name, pretrained=False, num_classes=num_classes, in_chans=in_channels
        )
        if weights_path is not None:
            load_state_dict_file(self.model, weights_path, prefix=weights_prefix, strict=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)
