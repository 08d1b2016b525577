"""Finding the network a model-changing callback acts on."""

from __future__ import annotations

from lightning.pytorch import LightningModule
from torch import nn


def target_network(pl_module: LightningModule, attribute: str) -> nn.Module:
    """``pl_module.<attribute>`` (e.g. ``net``), or a clear error if it is not an ``nn.Module``."""
    net = getattr(pl_module, attribute, None)
    if not isinstance(net, nn.Module):
        raise AttributeError(f"{type(pl_module).__name__} has no network attribute {attribute!r}")
    return net
