"""Loading a user's weights file safely (``torch.load(..., weights_only=True)``)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn


def _unwrap(obj: object, keys: tuple[str, ...]) -> Mapping[str, Tensor]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    for key in keys:
        if key in obj and isinstance(obj[key], Mapping):
            return obj[key]
    return obj  # type: ignore[return-value]


NESTED_KEYS: tuple[str, ...] = ("state_dict", "params_ema", "params", "model")


def load_state_dict_file(
    model: nn.Module,
    path: str | os.PathLike[str],
    prefix: str | None = None,
    nested_keys: tuple[str, ...] = NESTED_KEYS,
    strict: bool = True,
) -> nn.Module:
    """Load weights into ``model`` from a ``.pt``/``.pth``/``.ckpt`` file without executing code.

    Accepts a plain state dict, a Lightning checkpoint (``state_dict``), BasicSR files
    (``params_ema`` preferred over ``params``) and ``{"model": ...}`` wrappers. ``prefix`` (e.g.
    ``"net."`` for a checkpoint written by an lr-lightning task) is stripped, and keys without
    it are dropped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path!r}; pass the path of a .pt/.pth/.ckpt file")
    state = _unwrap(torch.load(path, map_location="cpu", weights_only=True), nested_keys)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f"no key of {path!r} starts with prefix {prefix!r}")
    result = model.load_state_dict(state, strict=strict)
    if result.missing_keys or result.unexpected_keys:
        warnings.warn(
            f"{path}: missing keys {result.missing_keys[:8]}, unexpected keys "
            f"{result.unexpected_keys[:8]} (loaded with strict=False)",
            stacklevel=2,
        )
    return model


def load_module_weights(model: nn.Module, path: str | os.PathLike[str], prefix: str = "net.") -> nn.Module:
    """Load ``model`` from a task checkpoint whose keys carry ``prefix`` (e.g. ``"net."`` for
    the network of an lr-lightning task, ``"policy."`` for PatchDrop's policy) or, when no key
    has it, from a plain / BasicSR state dict of the module itself. Always ``weights_only=True``."""
    if not os.path.isfile(os.fspath(path)):
        raise FileNotFoundError(f"weights file not found: {os.fspath(path)!r}; pass the path of a .pt/.pth/.ckpt file")
    state = _unwrap(torch.load(os.fspath(path), map_location="cpu", weights_only=True), NESTED_KEYS)
    has_prefix = any(str(k).startswith(prefix) for k in state)
    return load_state_dict_file(model, path, prefix=prefix if has_prefix else None)
