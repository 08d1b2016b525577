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

__all__ = ["PRESETS", "Degradation", "DegradationSpace", "duplicate_tasks", "jpeg_roundtrip"]

_PREFIX = {"max": "maxpool", "avg": "avgpool"}
_MODE_OF_PREFIX = {_PREFIX.get(m, m): m for m in DOWNSAMPLE_MODES}
_DEFAULT_UPSAMPLE_MODE = "bicubic"

_NAME_RE = re.compile(
    r"^(?P<prefix>maxpool|avgpool|area|nearest|bilinear|bicubic_matlab|bicubic|blur)"
    r"(?P<factor>[0-9]+)"
    r"(?:\((?P<arg>.*)\))?"
    r"(?:\+q(?P<bits>[0-9]+))?"
    r"(?:\+g(?P<gamma>[0-9]*\.?[0-9]+))?"
    r"(?:\+n(?P<noise>[0-9]*\.?[0-9]+))?"
    r"(?:\+jpeg(?P<jpeg>[0-9]+))?"
    r"(?P<up>\+up(?P<upsize>[0-9]+)?(?:_(?P<upmode>nearest|bilinear|bicubic_matlab|bicubic))?)?$",
    re.DOTALL,
)
_NAME_HELP = (
    "expected <mode><factor>[(<kernel>)][+q<bits>][+g<gamma>][+n<noise sigma, 8-bit levels>][+jpeg<quality>]"
    "[+up[<size>][_<upsample mode>]] with mode in "
    f"{', '.join(sorted(_MODE_OF_PREFIX))}, kernel 's<sigma>' or 'k:<path.npy>' (blur only), "
    "e.g. 'maxpool2', 'avgpool4+q3', 'bicubic4+up', 'blur4(s1.0)', 'blur4(k:kernels/k.npy)+up_nearest', "
    "'bicubic3+n10+jpeg40+up16'"
)


def _check_positive(name: str, value: object) -> float | None:
    """``None`` or a positive finite float."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _num(v: float) -> str:
    """``2.0 -> "2"``, ``1.25 -> "1.25"``: the shortest name that parses back to ``v``."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def jpeg_roundtrip(x: Tensor, quality: int) -> Tensor:
    """JPEG-compress ``(B, C, H, W)`` images in ``[0, 1]`` at ``quality`` and decode them.

    Pixels are rounded to 8 bits, the batch goes through ``torchvision.io.encode_jpeg`` /
    ``decode_jpeg`` (libjpeg, CPU, lists of images in one call; about 40 us per 16 x 16 RGB image
    on this project's 2-core reference machine), and the result returns with the input's dtype
    and device. Gray (C = 1) and RGB (C = 3) only. Not differentiable (a data degradation).
    """
    from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

    if x.shape[1] not in (1, 3):
        raise ValueError(f"JPEG needs 1 or 3 channels, got {x.shape[1]}")
    u8 = (x.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu()
    mode = ImageReadMode.RGB if x.shape[1] == 3 else ImageReadMode.GRAY
    dec = decode_jpeg(encode_jpeg(list(u8), quality=quality), mode=mode)
    return torch.stack(dec).to(device=x.device, dtype=x.dtype).div_(255.0)


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
    """A named HR -> LR degradation: downsample (+ blur), quantise, gamma, noise, JPEG, upsample.

    ``Degradation(mode, factor, bits, ...)`` applied to ``(B, C, H, W)`` images in
    ``[0, 1]`` computes, in this order (each step only when configured)

    1. ``downsample(x, factor, mode, kernel)`` (see
       :func:`~lr_lightning.degrade.downsample`; ``"max"``/``"avg"`` are
       paper A's pooling methods, ``"blur"`` is paper E Eq. 1 / MZSR, the
       classical ``(x * k) downarrow_s``);
    2. ``dorefa_quantize(y, bits)`` if ``bits < 32`` (paper A, DoReFa);
    3. ``y ** gamma`` (a display / sensor tone-curve shift);
    4. ``y + N(0, (noise / 255)^2)`` clamped to ``[0, 1]`` (sensor noise; ``noise`` in 8-bit
       levels), drawn from the ``generator`` passed to the call (else the global RNG);
    5. JPEG at ``jpeg`` quality (rounded to 8 bits, encoded and decoded with torchvision's
       libjpeg bindings on the CPU, in one batched call; the result returns to the input's
       device) - the classical ``(x * k) downarrow_s + n`` then JPEG pipeline of blind SR;
    6. ``upsample(y, size, upsample_mode)`` if ``upsample`` is true, to the input's ``(H, W)``
       or to ``upsample_size x upsample_size`` (then degradations of different factors share one
       input size; a result already of that size is left as it is: the native-size option).

    The output is ``(B, C, H/f, W/f)`` (or the upsampled size) with the input's dtype and device.

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
        upsample_size: square size to upsample to (``None``: the input's size).
        gamma: exponent of the tone curve ``y ** gamma`` (``None``: none).
        noise: standard deviation of additive Gaussian noise in 8-bit levels (``None``: none).
        jpeg: JPEG quality ``1..100`` (``None``: no compression).

    Names (``.name``, parsed back by :meth:`from_name`): ``maxpool<f>``,
    ``avgpool<f>``, ``area<f>``, ``nearest<f>``, ``bilinear<f>``,
    ``bicubic<f>``, ``bicubic_matlab<f>``, ``blur<f>(s<sigma>)`` or
    ``blur<f>(k:<path>)``; then ``+q<bits>`` when ``bits < 32``; then
    ``+g<gamma>``, ``+n<noise>``, ``+jpeg<quality>``; then ``+up`` (bicubic),
    ``+up<size>`` and/or ``+up_<upsample_mode>`` when upsampling, e.g.
    ``blur3(s1.2)+n10+jpeg40+up16``.

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
        "_upsample_size",
        "_gamma",
        "_noise",
        "_jpeg",
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
        upsample_size: int | None = None,
        gamma: float | None = None,
        noise: float | None = None,
        jpeg: int | None = None,
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
        if upsample_size is not None and not upsample:
            raise ValueError(f"upsample_size={upsample_size!r} needs upsample=True")
        self._upsample_size = None if upsample_size is None else _check_int("upsample_size", upsample_size, 1)
        self._gamma = _check_positive("gamma", gamma)
        self._noise = _check_positive("noise", noise)
        self._jpeg = None if jpeg is None else _check_int("jpeg", jpeg, 1, 100)
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
    def upsample_size(self) -> int | None:
        return self._upsample_size

    @property
    def gamma(self) -> float | None:
        return self._gamma

    @property
    def noise(self) -> float | None:
        return self._noise

    @property
    def jpeg(self) -> int | None:
        return self._jpeg

    @property
    def is_random(self) -> bool:
        """Whether two calls on the same image can differ (sensor noise)."""
        return self._noise is not None

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """``(H, W)`` of the result for ``(H, W)`` inputs: the downsampling of a blank image and
        the upsampling target (quantisation, gamma, noise and JPEG keep the size, so they are not
        run: no random draw, no encoding)."""
        if self._upsample:
            return size if self._upsample_size is None else (self._upsample_size, self._upsample_size)
        y = downsample(torch.zeros(1, 1, *size), self._factor, self._mode, self._kernel_tensor)  # type: ignore[arg-type]
        return (int(y.shape[-2]), int(y.shape[-1]))

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
        if self._gamma is not None:
            parts.append(f"+g{_num(self._gamma)}")
        if self._noise is not None:
            parts.append(f"+n{_num(self._noise)}")
        if self._jpeg is not None:
            parts.append(f"+jpeg{self._jpeg}")
        if self._upsample:
            parts.append("+up" + (str(self._upsample_size) if self._upsample_size is not None else ""))
            if self._upsample_mode != _DEFAULT_UPSAMPLE_MODE:
                parts.append(f"_{self._upsample_mode}")
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
        kwargs["upsample_size"] = int(m["upsize"]) if m["upsize"] else None
        kwargs["gamma"] = float(m["gamma"]) if m["gamma"] else None
        kwargs["noise"] = float(m["noise"]) if m["noise"] else None
        kwargs["jpeg"] = int(m["jpeg"]) if m["jpeg"] else None
        return cls(mode, factor, bits, upsample=upsample, upsample_mode=upsample_mode, **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ apply
    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Degrade ``(B, C, H, W)`` images in ``[0, 1]``; keeps dtype and device.

        ``generator`` draws the sensor noise (on its own device; default: the global RNG), so a
        noisy degradation is reproducible from the generator's state.
        """
        _check_image(x)
        y = downsample(x, self._factor, self._mode, self._kernel_tensor)  # type: ignore[arg-type]
        if self._bits < 32:
            y = dorefa_quantize(y, self._bits)
        if self._gamma is not None:
            y = y.clamp_min(0.0).pow(self._gamma)
        if self._noise is not None:
            dev = generator.device if generator is not None else y.device
            n = torch.randn(y.shape, generator=generator, device=dev, dtype=torch.float32).to(y.device, y.dtype)
            y = (y + n * (self._noise / 255.0)).clamp(0.0, 1.0)
        if self._jpeg is not None:
            y = jpeg_roundtrip(y, self._jpeg)
        if self._upsample:
            size = (x.shape[-2], x.shape[-1]) if self._upsample_size is None else (self._upsample_size,) * 2
            if tuple(y.shape[-2:]) != size:
                y = _upsample(y, size, self._upsample_mode)  # type: ignore[arg-type]
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
            self._upsample_size,
            self._gamma,
            self._noise,
            self._jpeg,
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
        for field in ("upsample_size", "gamma", "noise", "jpeg"):
            value = getattr(self, f"_{field}")
            if value is not None:
                args.append(f"{field}={value!r}")
        return f"Degradation({', '.join(args)})"

    def __getstate__(self) -> dict[str, Any]:
        return {s: getattr(self, s) for s in self.__slots__}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for k in ("_upsample_size", "_gamma", "_noise", "_jpeg"):  # pickles from before these fields
            object.__setattr__(self, k, None)
        for k, v in state.items():
            object.__setattr__(self, k, v)


# Task spaces by name. ``paper_full`` is paper A's 12 (mode, bits) pairs as written; ``paper``
# collapses the duplicates measured on 8-bit images (tests/degrade/test_space.py): DoReFa at 8
# and 16 bits leaves an 8-bit image's max-pooled pixels unchanged and moves average-pooled ones by
# at most half an 8-bit level (RMSE 0.31 levels at 8 bits, 0.001 at 16), so q8 = q16 = q32 up to
# rounding and the 12 tasks are 8 distinct ones. Collapsing changes the task mix: in the paper
# the (near-)unquantised task is 1/2 of the draws (3 of 6 bit widths), in ``paper`` 1/4; use
# ``paper_full`` for the paper's sampling distribution. ``rich`` is the space of issue 14: three scales
# brought to one 16 x 16 input size (x2 is native), Gaussian blur over a sigma range, sensor noise
# up to 8 levels, JPEG at quality 50-90 and gamma 0.8-1.25, plus the paper's pooling x DoReFa set.
PRESETS: dict[str, tuple[str, ...]] = {
    "paper_full": tuple(f"{m}2{'' if b == 32 else f'+q{b}'}" for m in ("maxpool", "avgpool") for b in (2, 3, 4, 8, 16, 32)),
    "paper": tuple(f"{m}2{'' if b == 32 else f'+q{b}'}" for m in ("maxpool", "avgpool") for b in (2, 3, 4, 32)),
    "rich": (
        "bicubic2", "bicubic3+up16", "bicubic4+up16", "avgpool2", "maxpool2+q4", "avgpool2+q3",
        "blur2(s0.8)", "blur2(s1.2)", "blur4(s1.6)+up16", "bilinear3+up16",
        "bicubic2+n4", "bicubic2+n8", "bicubic3+n4+up16", "bicubic2+jpeg90", "bicubic2+jpeg70",
        "bicubic2+jpeg50", "bicubic4+jpeg70+up16", "bicubic2+g0.8", "bicubic2+g1.25", "blur2(s1.2)+n4+jpeg70",
    ),
}


class DegradationSpace:
    """A meta-learning task space: a finite list of :class:`Degradation` tasks, sampled uniformly.

    The default is paper A, Sec. 4.2: downsampling in ``{max, avg}`` pooling
    and DoReFa quantisation to ``{2, 3, 4, 8, 16, 32}`` bits, i.e. 12 (mode, bits) pairs;
    paper A draws one uniformly for each of its M = 4 meta-tasks per step. Any other list of
    named degradations (``tasks=[...]``, or a :data:`PRESETS` name with :meth:`preset`) works the
    same, as long as all tasks produce the same output size (checked on ``input_size`` images).

    Args:
        modes: downsampling modes (no duplicates).  ``"blur"`` is not
            allowed here since the space has no kernel argument.
        bits: bit widths in ``1..32`` (no duplicates; 32 = unquantised).
        factor: downsampling factor shared by all tasks.
        upsample: whether every task upsamples back to the input size.
        upsample_mode: resampler used when ``upsample`` is true.
        tasks: explicit task names or :class:`Degradation` objects (replaces ``modes`` x ``bits``).
        input_size: HR image size the output-size check runs on.
    """

    def __init__(
        self,
        modes: Sequence[DownsampleMode] = ("max", "avg"),
        bits: Sequence[int] = (2, 3, 4, 8, 16, 32),
        factor: int = 2,
        upsample: bool = False,
        upsample_mode: UpsampleMode = "bicubic",
        tasks: Sequence[str | Degradation] | None = None,
        input_size: int = 32,
    ) -> None:
        if tasks is not None:
            built = tuple(t if isinstance(t, Degradation) else Degradation.from_name(t) for t in tasks)
            if not built:
                raise ValueError("tasks must be non-empty")
            dups = sorted({t.name for t in built if built.count(t) > 1})
            if dups:
                raise ValueError(f"tasks must not contain duplicates, got {dups} more than once")
            sizes = {t.name: t.output_size((input_size, input_size)) for t in built}
            if len(set(sizes.values())) > 1:
                raise ValueError(
                    f"all tasks must give one input size for the network on {input_size}x{input_size} images, "
                    f"got {sizes}; add '+up<size>' to bring them to one size"
                )
            self._tasks = built
            self._desc = f"tasks={[t.name for t in built]!r}"
            return
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
        self._tasks = tuple(
            Degradation(m, factor, b, upsample=upsample, upsample_mode=upsample_mode)
            for m in modes_t
            for b in bits_t
        )
        self._desc = (
            f"modes={list(modes_t)!r}, bits={list(bits_t)!r}, factor={factor}, "
            f"upsample={upsample}, upsample_mode={upsample_mode!r}"
        )

    @classmethod
    def preset(cls, name: str, input_size: int = 32) -> DegradationSpace:
        """The task space :data:`PRESETS` names ``name`` (``paper``, ``paper_full``, ``rich``)."""
        if name not in PRESETS:
            raise ValueError(f"unknown task-space preset {name!r}; valid choices are: {', '.join(map(repr, PRESETS))}")
        return cls(tasks=PRESETS[name], input_size=input_size)

    @property
    def tasks(self) -> list[Degradation]:
        """All tasks in a deterministic order (``modes`` major and ``bits`` minor by default)."""
        return list(self._tasks)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self._tasks]

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[Degradation]:
        return iter(self._tasks)

    def __getitem__(self, index: int) -> Degradation:
        return self._tasks[index]

    def __contains__(self, task: object) -> bool:
        return task in self._tasks

    def sample(self, n: int, generator: torch.Generator) -> list[Degradation]:
        """Draw ``n`` tasks uniformly with replacement; reproducible from ``generator``'s state."""
        n = _check_int("n", n, 0)
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        idx = torch.randint(len(self._tasks), (n,), generator=generator, device=generator.device)
        return [self._tasks[i] for i in idx.tolist()]

    def __repr__(self) -> str:
        return f"DegradationSpace({self._desc})"


def duplicate_tasks(
    tasks: Sequence[Degradation], images: Tensor, tolerance: float = 0.5
) -> list[tuple[str, str, float]]:
    """Pairs of tasks whose outputs on ``images`` differ by an RMSE below ``tolerance`` 8-bit
    levels: ``(name_a, name_b, rmse in levels)``. Used to collapse duplicated tasks of a space
    (paper A's q8 / q16 / q32). Noise is drawn from one fixed generator for every task."""
    outs = [t(images, torch.Generator().manual_seed(0)) for t in tasks]
    pairs = []
    for i in range(len(tasks)):
        for j in range(i + 1, len(tasks)):
            if outs[i].shape != outs[j].shape:
                continue
            rmse = float((outs[i] - outs[j]).double().pow(2).mean().sqrt() * 255.0)
            if rmse < tolerance:
                pairs.append((tasks[i].name, tasks[j].name, rmse))
    return pairs
