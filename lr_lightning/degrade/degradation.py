"""Named, composable degradations and the task space of paper A.

A :class:`Degradation` is a value object describing how an HR image becomes
an LR one: downsample by ``factor`` (optionally with a blur kernel, paper E
Eq. 1), then optionally quantise pixels with DoReFa (paper A), then
optionally upsample back to the HR size.  It has a short canonical name
(``"avgpool2+q3"``, ``"blur4(s1.0)+up"``) that :meth:`Degradation.from_name`
parses back, so degradations can be given on a command line, logged, and used
as dictionary keys.

:class:`DegradationSpace` is paper A's meta-learning task space: a task is a
(downsampling method, bit width) pair, ``{max, avg} x {2, 3, 4, 8, 16, 32}``
bits by default, sampled uniformly for every meta-task (Sec. 4.2).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from .kernels import gaussian_kernel, gaussian_kernel_size, load_kernel
from .quantize import dorefa_quantize
from .resize import (
    DOWNSAMPLE_MODES,
    UPSAMPLE_MODES,
    DownsampleMode,
    UpsampleMode,
    _check_image,
    downsample,
)
from .resize import upsample as _upsample

__all__ = ["Degradation", "DegradationSpace"]

_PREFIX = {"max": "maxpool", "avg": "avgpool"}
_MODE_OF_PREFIX = {_PREFIX.get(m, m): m for m in DOWNSAMPLE_MODES}
_DEFAULT_UPSAMPLE_MODE = "bicubic"

_NAME_RE = re.compile(
    r"^(?P<prefix>maxpool|avgpool|area|nearest|bilinear|bicubic_matlab|bicubic|blur)"
    r"(?P<factor>[0-9]+)"
    r"(?:\((?P<arg>.*)\))?"
    r"(?:\+q(?P<bits>[0-9]+))?"
    r"(?P<up>\+up(?:_(?P<upmode>nearest|bilinear|bicubic_matlab|bicubic))?)?$",
    re.DOTALL,
)
_NAME_HELP = (
    "expected <mode><factor>[(<kernel>)][+q<bits>][+up[_<upsample mode>]] with mode in "
    f"{', '.join(sorted(_MODE_OF_PREFIX))}, kernel 's<sigma>' or 'k:<path.npy>' (blur only), "
    "e.g. 'maxpool2', 'avgpool4+q3', 'bicubic4+up', 'blur4(s1.0)', 'blur4(k:kernels/k.npy)+up_nearest'"
)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < low
        or (high is not None and value > high)
    ):
        bound = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be an integer {bound}, got {value!r}")
    return int(value)


class Degradation:
    """A named HR -> LR degradation: downsample (+ blur), then quantise, then optionally upsample.

    ``Degradation(mode, factor, bits)`` applied to ``(B, C, H, W)`` images in
    ``[0, 1]`` computes

    1. ``downsample(x, factor, mode, kernel)`` (see
       :func:`~lr_lightning.degrade.downsample`; ``"max"``/``"avg"`` are
       paper A's pooling methods, ``"blur"`` is paper E Eq. 1 / MZSR);
    2. ``dorefa_quantize(y, bits)`` if ``bits < 32`` (paper A, DoReFa);
    3. ``upsample(y, (H, W), upsample_mode)`` if ``upsample`` is true.

    The output is ``(B, C, H/f, W/f)`` (or ``(B, C, H, W)`` with
    ``upsample=True``) with the input's dtype and device.

    Args:
        mode: downsampling mode (:data:`~lr_lightning.degrade.DownsampleMode`).
        factor: integer downsampling factor.
        bits: DoReFa bit width, ``1..32``; 32 means no quantisation.
        kernel: path of a ``.npy`` blur kernel (``mode="blur"`` only); loaded
            (and checked) when the degradation is constructed.
        kernel_sigma: isotropic Gaussian sigma for ``mode="blur"`` when no
            kernel file is given; the kernel size is ``2 * ceil(3 sigma) + 1``.
        upsample: resize the result back to the input size.
        upsample_mode: resampler for the upsampling step.

    Names (``.name``, parsed back by :meth:`from_name`): ``maxpool<f>``,
    ``avgpool<f>``, ``area<f>``, ``nearest<f>``, ``bilinear<f>``,
    ``bicubic<f>``, ``bicubic_matlab<f>``, ``blur<f>(s<sigma>)`` or
    ``blur<f>(k:<path>)``; then ``+q<bits>`` when ``bits < 32``; then ``+up``
    (bicubic) or ``+up_<upsample_mode>`` when upsampling.

    Equality and hashing use the defining fields (``upsample_mode`` only
    counts when ``upsample`` is true), so equal degradations have equal names.
    """

    __slots__ = (
        "_mode",
        "_factor",
        "_bits",
        "_kernel",
        "_kernel_sigma",
        "_upsample",
        "_upsample_mode",
        "_kernel_tensor",
    )

    def __init__(
        self,
        mode: DownsampleMode = "bicubic",
        factor: int = 4,
        bits: int = 32,
        kernel: str | None = None,
        kernel_sigma: float | None = None,
        upsample: bool = False,
        upsample_mode: UpsampleMode = "bicubic",
    ) -> None:
        if mode not in DOWNSAMPLE_MODES:
            raise ValueError(
                f"unknown downsample mode {mode!r}; valid choices are: {', '.join(map(repr, DOWNSAMPLE_MODES))}"
            )
        if upsample_mode not in UPSAMPLE_MODES:
            raise ValueError(
                f"unknown upsample mode {upsample_mode!r}; valid choices are: {', '.join(map(repr, UPSAMPLE_MODES))}"
            )
        if not isinstance(upsample, bool):
            raise ValueError(f"upsample must be a bool, got {upsample!r}")
        self._mode: str = mode
        self._factor = _check_int("factor", factor, 1)
        self._bits = _check_int("bits", bits, 1, 32)
        self._upsample = upsample
        self._upsample_mode: str = upsample_mode
        self._kernel: str | None = None
        self._kernel_sigma: float | None = None
        self._kernel_tensor: Tensor | None = None
        if mode == "blur":
            if (kernel is None) == (kernel_sigma is None):
                raise ValueError(
                    "mode='blur' needs exactly one of kernel= (path of a .npy kernel file) or "
                    f"kernel_sigma= (isotropic Gaussian sigma); got kernel={kernel!r}, kernel_sigma={kernel_sigma!r}"
                )
            if kernel is not None:
                self._kernel = os.fspath(kernel)
                self._kernel_tensor = load_kernel(self._kernel)
            else:
                if isinstance(kernel_sigma, bool) or not isinstance(kernel_sigma, (int, float)):
                    raise ValueError(
                        f"kernel_sigma must be a positive number, got {kernel_sigma!r}"
                    )
                sigma = float(kernel_sigma)
                if not (math.isfinite(sigma) and sigma > 0):
                    raise ValueError(
                        f"kernel_sigma must be a positive finite number, got {kernel_sigma!r}"
                    )
                self._kernel_sigma = sigma
                self._kernel_tensor = gaussian_kernel(gaussian_kernel_size(sigma), sigma=sigma)
        elif kernel is not None or kernel_sigma is not None:
            raise ValueError(
                f"kernel= and kernel_sigma= are only used with mode='blur', not mode={mode!r}"
            )

    # ------------------------------------------------------------------ fields
    @property
    def mode(self) -> str:
        return self._mode

    @property
    def factor(self) -> int:
        return self._factor

    @property
    def bits(self) -> int:
        return self._bits

    @property
    def kernel(self) -> str | None:
        return self._kernel

    @property
    def kernel_sigma(self) -> float | None:
        return self._kernel_sigma

    @property
    def upsample(self) -> bool:
        return self._upsample

    @property
    def upsample_mode(self) -> str:
        return self._upsample_mode

    @property
    def kernel_tensor(self) -> Tensor | None:
        """The blur kernel (float32, CPU) for ``mode="blur"``, else ``None``."""
        return self._kernel_tensor

    # ------------------------------------------------------------------ naming
    @property
    def name(self) -> str:
        """Canonical short name, e.g. ``"maxpool2"``, ``"avgpool4+q3"``, ``"blur4(s1.0)+up"``."""
        parts = [f"{_PREFIX.get(self._mode, self._mode)}{self._factor}"]
        if self._kernel_sigma is not None:
            parts.append(f"(s{self._kernel_sigma!r})")
        elif self._kernel is not None:
            parts.append(f"(k:{self._kernel})")
        if self._bits < 32:
            parts.append(f"+q{self._bits}")
        if self._upsample:
            parts.append(
                "+up"
                if self._upsample_mode == _DEFAULT_UPSAMPLE_MODE
                else f"+up_{self._upsample_mode}"
            )
        return "".join(parts)

    @classmethod
    def from_name(cls, name: str) -> Degradation:
        """Parse a name produced by :attr:`name` (round trip: ``from_name(d.name) == d``)."""
        if not isinstance(name, str):
            raise ValueError(f"degradation name must be a string, got {type(name).__name__}")
        m = _NAME_RE.match(name.strip())
        if m is None:
            raise ValueError(f"bad degradation name {name!r}: {_NAME_HELP}")
        mode = _MODE_OF_PREFIX[m["prefix"]]
        factor = int(m["factor"])
        bits = int(m["bits"]) if m["bits"] is not None else 32
        kwargs: dict[str, Any] = {}
        arg = m["arg"]
        if mode == "blur":
            if arg is None:
                raise ValueError(
                    f"bad degradation name {name!r}: blur needs a kernel, '(s<sigma>)' or '(k:<path>)'"
                )
            if arg.startswith("k:") and len(arg) > 2:
                kwargs["kernel"] = arg[2:]
            elif arg.startswith("s"):
                try:
                    kwargs["kernel_sigma"] = float(arg[1:])
                except ValueError:
                    raise ValueError(
                        f"bad degradation name {name!r}: cannot read sigma from {arg!r}"
                    ) from None
            else:
                raise ValueError(
                    f"bad degradation name {name!r}: blur kernel must be '(s<sigma>)' or '(k:<path>)', got {arg!r}"
                )
        elif arg is not None:
            raise ValueError(
                f"bad degradation name {name!r}: only blur takes a '(...)' kernel argument"
            )
        upsample = m["up"] is not None
        upsample_mode = m["upmode"] or _DEFAULT_UPSAMPLE_MODE
        return cls(mode, factor, bits, upsample=upsample, upsample_mode=upsample_mode, **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ apply
    def __call__(self, x: Tensor) -> Tensor:
        """Degrade ``(B, C, H, W)`` images in ``[0, 1]``; keeps dtype and device."""
        _check_image(x)
        y = downsample(x, self._factor, self._mode, self._kernel_tensor)  # type: ignore[arg-type]
        if self._bits < 32:
            y = dorefa_quantize(y, self._bits)
        if self._upsample:
            y = _upsample(y, (x.shape[-2], x.shape[-1]), self._upsample_mode)  # type: ignore[arg-type]
        return y

    # ------------------------------------------------------------------ value semantics
    def _key(self) -> tuple[Any, ...]:
        return (
            self._mode,
            self._factor,
            self._bits,
            self._kernel,
            self._kernel_sigma,
            self._upsample,
            self._upsample_mode if self._upsample else None,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Degradation):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        args = [f"mode={self._mode!r}", f"factor={self._factor}", f"bits={self._bits}"]
        if self._kernel is not None:
            args.append(f"kernel={self._kernel!r}")
        if self._kernel_sigma is not None:
            args.append(f"kernel_sigma={self._kernel_sigma!r}")
        args.append(f"upsample={self._upsample}")
        if self._upsample:
            args.append(f"upsample_mode={self._upsample_mode!r}")
        return f"Degradation({', '.join(args)})"

    def __getstate__(self) -> dict[str, Any]:
        return {s: getattr(self, s) for s in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k, v in state.items():
            object.__setattr__(self, k, v)


class DegradationSpace:
    """Paper A's task space: every (downsampling mode, bit width) pair is one meta-task.

    The default is paper A, Sec. 4.2: downsampling in ``{max, avg}`` pooling
    and DoReFa quantisation to ``{2, 3, 4, 8, 16, 32}`` bits, i.e. 12 tasks;
    paper A draws one uniformly for each of its M = 4 meta-tasks per step.

    Args:
        modes: downsampling modes (no duplicates).  ``"blur"`` is not
            allowed here since the space has no kernel argument.
        bits: bit widths in ``1..32`` (no duplicates; 32 = unquantised).
        factor: downsampling factor shared by all tasks.
        upsample: whether every task upsamples back to the input size.
        upsample_mode: resampler used when ``upsample`` is true.
    """

    def __init__(
        self,
        modes: Sequence[DownsampleMode] = ("max", "avg"),
        bits: Sequence[int] = (2, 3, 4, 8, 16, 32),
        factor: int = 2,
        upsample: bool = False,
        upsample_mode: UpsampleMode = "bicubic",
    ) -> None:
        modes_t = tuple(modes)
        bits_t = tuple(bits)
        if not modes_t or not bits_t:
            raise ValueError(
                f"modes and bits must be non-empty, got modes={modes_t!r}, bits={bits_t!r}"
            )
        if len(set(modes_t)) != len(modes_t) or len(set(bits_t)) != len(bits_t):
            raise ValueError(
                f"modes and bits must not contain duplicates, got modes={modes_t!r}, bits={bits_t!r}"
            )
        if "blur" in modes_t:
            raise ValueError(
                "DegradationSpace does not support mode 'blur' (it has no kernel); build Degradation objects directly"
            )
        self._modes = modes_t
        self._bits = bits_t
        self._factor = factor
        self._upsample = upsample
        self._upsample_mode = upsample_mode
        self._tasks = tuple(
            Degradation(m, factor, b, upsample=upsample, upsample_mode=upsample_mode)
            for m in modes_t
            for b in bits_t
        )

    @property
    def tasks(self) -> list[Degradation]:
        """All tasks, ``modes`` major and ``bits`` minor (deterministic order)."""
        return list(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Degradation]:
        return iter(self._tasks)

    def __getitem__(self, index: int) -> Degradation:
        return self._tasks[index]

    def sample(self, n: int, generator: torch.Generator) -> list[Degradation]:
        """Draw ``n`` tasks uniformly with replacement; reproducible from ``generator``'s state."""
        n = _check_int("n", n, 0)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        idx = torch.randint(len(self._tasks), (n,), generator=generator, device=generator.device)
        return [self._tasks[i] for i in idx.tolist()]

    def __repr__(self) -> str:
        return (
            f"DegradationSpace(modes={list(self._modes)!r}, bits={list(self._bits)!r}, factor={self._factor}, "
            f"upsample={self._upsample}, upsample_mode={self._upsample_mode!r})"
        )
