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


def read_state_dict(path: str | os.PathLike[str], nested_keys: tuple[str, ...] = NESTED_KEYS) -> Mapping[str, Tensor]:
    """The state dict in a ``.pt``/``.pth``/``.ckpt`` file, read without executing code
    (``weights_only=True``): a plain state dict, a Lightning checkpoint (``state_dict``), a BasicSR
    file (``params_ema`` preferred over ``params``) or a ``{"model": ...}`` wrapper."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path!r}; pass the path of a .pt/.pth/.ckpt file")
    return _unwrap(torch.load(path, map_location="cpu", weights_only=True), nested_keys)


def _load(model: nn.Module, state: Mapping[str, Tensor], prefix: str | None, strict: bool, source: str) -> nn.Module:
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f"no key of {source!r} starts with prefix {prefix!r}")
    result = model.load_state_dict(state, strict=strict)
    if result.missing_keys or result.unexpected_keys:
        warnings.warn(
            f"{source}: missing keys {result.missing_keys[:8]}, unexpected keys "
            f"{result.unexpected_keys[:8]} (loaded with strict=False)",
            stacklevel=3,
        )
    return model


def load_state_dict_file(
    model: nn.Module,
    path: str | os.PathLike[str],
    prefix: str | None = None,
    nested_keys: tuple[str, ...] = NESTED_KEYS,
    strict: bool = True,
) -> nn.Module:
    """Load weights into ``model`` from a file read by :func:`read_state_dict`. ``prefix`` (e.g.
    ``"net."`` for a checkpoint written by an lr-lightning task) is stripped, and keys without
    it are dropped."""
    return _load(model, read_state_dict(path, nested_keys), prefix, strict, os.fspath(path))


def load_module_weights(
    model: nn.Module, path: str | os.PathLike[str], prefix: str | tuple[str, ...] = "net."
) -> nn.Module:
    """Load ``model`` from a task checkpoint whose keys carry ``prefix`` (e.g. ``"net."`` for
    the network of an lr-lightning task, ``"model.policy."`` for PatchDrop's policy; with
    several prefixes the first one the file has is used) or, when no key has one, from a plain /
    BasicSR state dict of the module itself. The file is read once, ``weights_only=True``."""
    state = read_state_dict(path)
    prefixes = (prefix,) if isinstance(prefix, str) else prefix
    found = next((p for p in prefixes if any(str(k).startswith(p) for k in state)), None)
    return _load(model, state, found, True, os.fspath(path))
