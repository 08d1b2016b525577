"""Static scales of paper E (Sec. V.B), calibrated offline over a data set, saved and loaded.

"Static quantization fixes the scale s for each tensor in advance. The scales are measured by
feeding the training dataset into the network in the offline stage and fixed in the online stage.
In detail, each scale for a given sample is measured by Eq. (11), and the final scale is the
maximum scale over the dataset."

:func:`calibrate_static_scales` does exactly that: it runs the integer network over a calibration
set with every :class:`~lr_lightning.quant.ScaleBook` in ``calibrating`` mode (dynamic scales,
Eq. 11, per tensor, while the maximum per quantization point is recorded), forward only or, given
a loss, forward and backward (so the gradient points ``g`` / ``gx`` are calibrated too), and then
fixes the books to ``static``. :func:`scale_state` / :func:`load_scale_state` (and the JSON
helpers) move the fixed scales to another run, which then uses scales from the calibration set
instead of its own first batches.

Quantization points and their keys (``<name>`` is the layer's qualified name from
:func:`~lr_lightning.quant.convert_to_integer`): integer Conv2d/Linear ``<name>.x`` (input),
``<name>.y`` (output), ``<name>.g`` (output gradient), ``<name>.gx`` (input gradient); integer
add ``<name>.a``, ``<name>.b`` (operands), ``<name>.y`` (sum). A point without a static scale (e.g.
``gx`` of a first layer, whose input gradient is never computed) stays dynamic.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lr_lightning.quant.layers import IntAdd, IntegerLayer, ScaleBook

LAYER_POINTS = ("x", "y", "g", "gx")
ADD_POINTS = ("a", "b", "y")


def quantization_points(net: nn.Module) -> dict[str, ScaleBook]:
    """Every quantization point key of ``net`` -> the book that owns it (raises ``ValueError`` if
    two modules share a name, which would make their scales indistinguishable)."""
    points: dict[str, ScaleBook] = {}
    for m in net.modules():
        if isinstance(m, IntegerLayer):
            names = LAYER_POINTS
        elif isinstance(m, IntAdd):
            names = ADD_POINTS
        else:
            continue
        for p in names:
            key = f"{m.name}.{p}"
            if key in points and points[key] is not m.book:
                raise ValueError(f"two integer modules are both named {m.name!r}: their scales would collide")
            points[key] = m.book
    return points


def scale_state(net: nn.Module) -> dict[str, int]:
    """The recorded (static) scales of every quantization point of ``net``, ``{key: s}``."""
    state: dict[str, int] = {}
    for key, book in quantization_points(net).items():
        if key in book.scales:
            state[key] = int(book.scales[key])
    return dict(sorted(state.items()))


def load_scale_state(net: nn.Module, state: Mapping[str, int] | str | Path, *, strict: bool = True) -> dict[str, int]:
    """Install fixed scales (a :func:`scale_state` dict or the path of a JSON file written by
    :func:`save_scale_state`) and switch every book of ``net`` to ``static``.

    Each book's previous scales are replaced. ``strict``: a key that names no quantization point
    of ``net`` raises ``KeyError`` (a scales file of another network). Returns the installed state.
    """
    if isinstance(state, (str, Path)):
        state = read_scale_file(state)
    points = quantization_points(net)
    unknown = sorted(set(state) - set(points))
    if strict and unknown:
        raise KeyError(f"scale state has keys that are no quantization point of this network: {unknown[:5]}"
                       + (" ..." if len(unknown) > 5 else ""))
    books = {id(b): b for b in points.values()}
    for book in books.values():
        book.scales = {}
        book.mode = "static"
        book.calibrating = False
    for key, s in state.items():
        if key in points:
            points[key].scales[key] = int(s)
    return scale_state(net)


def save_scale_state(net: nn.Module, path: str | Path, provenance: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Write :func:`scale_state` of ``net`` to a JSON file ``{"scales": {key: s}}``; returns it.
    ``provenance`` (e.g. the calibration seed, batches, source weights, commit) is stored beside
    the scales and ignored when reading."""
    state = scale_state(net)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {"format": "lr_lightning.quant.scales/1", "scales": state}
    if provenance:
        payload["provenance"] = dict(provenance)
    Path(path).write_text(json.dumps(payload, indent=1) + "\n")
    return state


def read_scale_file(path: str | Path) -> dict[str, int]:
    """Read a scales JSON file (``{"scales": {...}}`` or a plain ``{key: s}`` mapping)."""
    data = json.loads(Path(path).read_text())
    scales = data["scales"] if isinstance(data, dict) and "scales" in data else data
    return {str(k): int(v) for k, v in scales.items()}


def _split_batch(batch: Any, input_key: str) -> tuple[Tensor, tuple[Any, ...]]:
    if isinstance(batch, Tensor):
        return batch, ()
    if isinstance(batch, Mapping):
        return batch[input_key], (batch,)
    if isinstance(batch, (tuple, list)):
        return batch[0], tuple(batch[1:])
    raise TypeError(f"a calibration batch must be a Tensor, a tuple/list or a dict, got {type(batch).__name__}")


def calibrate_static_scales(
    net: nn.Module,
    batches: Iterable[Any],
    loss_fn: Callable[..., Tensor] | None = None,
    *,
    input_key: str = "lr",
    reset: bool = True,
) -> dict[str, int]:
    """Calibrate static scales offline: the maximum of Eq. 11 per quantization point over ``batches``.

    Args:
        net: a network converted by :func:`~lr_lightning.quant.convert_to_integer`.
        batches: the calibration set; each batch is the network input (Tensor), a tuple/list
            ``(input, *rest)`` or a dict with the input under ``input_key``.
        loss_fn: if given, ``loss_fn(output, *rest)`` (dict batches: ``loss_fn(output, batch)``) is
            back-propagated so the gradient points are calibrated too; the weights are not
            updated (the integer weight gradients are discarded and float ``.grad`` restored).
            Without it only the forward points (``x``, ``y``, ``a``, ``b``) are calibrated.
        input_key: the input's key in dict batches.
        reset: forget previously recorded scales first (else the maximum also covers them).

    Afterwards every book is ``static`` with the recorded scales; returns :func:`scale_state`.
    """
    points = quantization_points(net)
    books = list({id(b): b for b in points.values()}.values())
    if not books:
        raise ValueError("calibrate_static_scales needs a network with integer layers (convert_to_integer first)")
    params = list(net.parameters())
    saved_grads = [p.grad for p in params]
    needs_input_grad = loss_fn is not None and not any(p.requires_grad for p in params)
    for book in books:
        if reset:
            book.scales = {}
        book.calibrating = True
    try:
        for batch in batches:
            inp, rest = _split_batch(batch, input_key)
            if loss_fn is None:
                with torch.no_grad():
                    net(inp)
                continue
            if needs_input_grad:
                inp = inp.detach().requires_grad_(True)
            loss = loss_fn(net(inp), *rest)
            loss.backward()
            for layer in (m for m in net.modules() if isinstance(m, IntegerLayer)):
                layer.wgrad = layer.bgrad = None
    finally:
        for book in books:
            book.calibrating = False
            book.mode = "static"
        for p, g in zip(params, saved_grads, strict=True):
            p.grad = g
    return scale_state(net)
