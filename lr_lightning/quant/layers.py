"""Integer-arithmetic layers of paper E (Sec. V.B): int8 x int8 -> int32, forward and backward.

Between layers activations and activation gradients travel as float32 tensors that are exactly
``DQ(v, s)`` of int8 values ``v`` with a power-of-two scale (see :mod:`lr_lightning.quant.core`), so
ReLU, max-pooling, flatten and the gradient of a sum act on them exactly as on the integers.
Each integer layer:

* forward: ``v_x = Q(x, s_x)`` (Eq. 10/11), ``v_w`` = 8-bit copy of the 32-bit stored weight
  (Eq. 14), ``acc = conv(v_x, v_w)`` (exact int32), optional int32 bias, then ``(v_y, s_y)`` =
  requantization of ``acc`` to int8 (round half up by default, saturate);
* backward: ``v_g = Q(g, s_g)``; activation gradient ``conv^T(v_g, v_w)`` (int32) requantized to
  int8; weight gradient ``conv_w(v_x, v_g)`` kept as a saturated **32-bit** accumulator
  (:attr:`IntegerLayer.wgrad`) for the Eq. 15 update done by
  :class:`~lr_lightning.callbacks.IntegerTrainingCallback` (autograd receives no float weight
  gradient, so a float optimiser never touches these weights).

Arithmetic: int8 x int8 sums over ``K <= 1024`` terms stay below 2^24 and are computed with
float32 convolutions (exact: every partial sum is an integer below 2^24). The weight gradient
sums over batch x pixels; :func:`conv2d_weight_exact` computes it exactly in float32 by chunking
the images (or rows) so that every partial sum stays below 2^24, unsplit where a data-dependent
bound allows and otherwise splitting the int8 gradient ``g = 16 g_h + g_l``, then accumulates the
chunks in float64 and saturates to int32 (the ``float64`` method, one float64 convolution, is the
reference it is tested against bit for bit).
Gradient pruning (Eq. 6) is built in: ``grad_keep`` (kept output channels) slices the
weight-gradient computation; with ``propagate="pruned"`` the activation gradient is also computed
from the kept channels only, restricted to ``grad_in_keep`` (the kept channels of the previous
layer), which is the cost model of Eq. 9.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lr_lightning.quant.core import (
    ACT_ROUNDINGS,
    FP32_EXACT_TERMS,
    ROUNDINGS,
    ZERO_SCALE,
    ActRounding,
    Rounding,
    abs_max,
    ceil_log2,
    check_rounding,
    dequantize,
    dynamic_scale,
    grid_exponent,
    mark_grid,
    quantize,
    requantize,
    saturate,
    shift_floor,
    shift_round,
)

ScaleMode = Literal["dynamic", "static"]
WgradMethod = Literal["auto", "split", "float64"]


class ScaleBook:
    """Where each quantization point gets its scale, and how it rounds.

    Args:
        mode: ``dynamic`` (Eq. 11 per tensor) or ``static`` (a fixed scale per quantization point
            = the maximum of Eq. 11 over a calibration set, recorded while ``calibrating=True``;
            see :func:`lr_lightning.quant.calibrate_static_scales`).
        rounding: rounding of activations and activation gradients (and of the 8-bit weight copy):
            ``nearest`` (default, ``floor(x + 1/2)``) or ``floor`` (Eq. 10 literally, the ablation).
        weight_grad_rounding: rounding where weight gradients meet the weights (Eq. 12, 13, 15):
            ``nearest`` (default), ``floor`` or ``stochastic`` (``floor(x + u)``, ``u ~ U[0,1)``).
        generator: random source of stochastic rounding (``None``: the global torch RNG).
    """

    def __init__(
        self, mode: ScaleMode = "dynamic", rounding: ActRounding = "nearest", *,
        weight_grad_rounding: Rounding = "nearest", generator: torch.Generator | None = None,
    ) -> None:
        self.mode = mode
        self.rounding: ActRounding = check_rounding(rounding, ACT_ROUNDINGS, "rounding")  # type: ignore[assignment]
        self.weight_grad_rounding: Rounding = check_rounding(weight_grad_rounding, ROUNDINGS, "weight_grad_rounding")  # type: ignore[assignment]
        self.generator = generator
        self.calibrating = False
        self.scales: dict[str, int] = {}

    def pick(self, key: str, dynamic: int) -> int:
        if self.calibrating or self.mode == "dynamic":
            if self.calibrating:
                self.scales[key] = max(self.scales.get(key, dynamic), dynamic)
            return dynamic
        # a point not calibrated (e.g. the input gradient of a first layer, never computed) stays dynamic
        return self.scales.get(key, dynamic)


def _acc_scale(acc: Tensor, exp: int, book: ScaleBook, key: str) -> tuple[int, float]:
    """Scale for requantizing ``acc * 2^exp``: dynamic (Eq. 11 on the real values) or static; and ``max|acc|``."""
    m = abs_max(acc)
    dyn = ceil_log2(m) + exp if m > 0 else ZERO_SCALE
    return book.pick(key, dyn), m


def fp32_convolutions_are_ieee() -> bool:
    """Whether float32 convolutions run in IEEE float32 (not reduced to TF32/bf16 by
    ``torch.backends.mkldnn.conv.fp32_precision`` or the float32 matmul precision); the exact
    float32 paths need it and fall back to float64 otherwise."""
    conv = getattr(getattr(torch.backends, "mkldnn", None), "conv", None)
    prec = getattr(conv, "fp32_precision", "none")
    return prec in ("none", "ieee") and torch.get_float32_matmul_precision() == "highest"


def _exact_dtype(terms: int) -> torch.dtype:
    return torch.float32 if terms <= FP32_EXACT_TERMS and fp32_convolutions_are_ieee() else torch.float64


# -- exact weight gradient --------------------------------------------------------------------
#: float32 holds every integer of magnitude <= 2^24 exactly
FP32_EXACT_INT = 2**24
#: the int8 gradient is split as g = SPLIT_BASE * g_h + g_l, g_h = floor(g / 16), g_l in [0, 16)
SPLIT_BASE = 16
#: bound on one product of the split: |x| <= 128 times max(|g_h| <= 8, |g_l| <= 15)
SPLIT_TERM_BOUND = 128 * 15
#: the most products one float32 weight-gradient sum may have (2^24 / 1920 = 8738)
SPLIT_MAX_TERMS = FP32_EXACT_INT // SPLIT_TERM_BOUND


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def split_plan(n: int, h_out: int, w_out: int, max_terms: int = SPLIT_MAX_TERMS) -> tuple[int, int] | None:
    """``(images per chunk, output rows per band)`` such that one weight-gradient sum has at most
    ``max_terms`` products (``images * rows * w_out``); whole images when one fits, else bands of
    rows of one image; ``None`` if a single output row already exceeds the bound."""
    per_image = h_out * w_out
    if per_image <= max_terms:
        return max(1, min(n, max_terms // per_image)), h_out
    if w_out <= max_terms:
        return 1, max_terms // w_out
    return None


def plain_chunks(
    vx: Tensor, vg: Tensor, limit: int = FP32_EXACT_INT, *, x_bound: float | None = 128.0
) -> tuple[list[tuple[int, int]], list[int]]:
    """Data-dependent chunking of the images for an unsplit float32 weight gradient.

    Every partial sum of a weight-gradient entry over the images ``a..b-1`` is bounded by
    ``max|x| * max_o sum_{n in a..b-1, p} |g_{n,o,p}|`` (each product ``|x g|`` is at most
    ``max|x| |g|``). Consecutive images are grouped greedily while that bound stays ``<= limit``
    (with a relative margin of 2^-10 for the float32 rounding of the ``|g|`` sums). ``max|x|`` is
    ``x_bound`` (128, the int8 bound, by default: no pass over ``x``) or, with ``x_bound=None``,
    measured per image. Returns the ``(start, stop)`` chunks and the images whose bound exceeds
    the limit on their own (these go through the split path)."""
    n = vx.shape[0]
    if x_bound is None:
        lo, hi = torch.aminmax(vx.reshape(n, -1).float(), dim=1)
        x_max = torch.maximum(-lo, hi).double().tolist()
    else:
        x_max = [float(x_bound)] * n
    g_sum = torch.linalg.vector_norm(vg.float(), 1, dim=(2, 3)).double().cpu().numpy()  # (n, c_out) sums of |g|
    lim = limit * (1 - 2.0**-10)
    chunks: list[tuple[int, int]] = []
    alone: list[int] = []
    start, col, xm = 0, None, 0.0
    for i in range(n):
        if x_max[i] * float(g_sum[i].max()) > lim:
            if col is not None:
                chunks.append((start, i))
            alone.append(i)
            start, col, xm = i + 1, None, 0.0
            continue
        new_col = g_sum[i].copy() if col is None else col + g_sum[i]
        new_xm = max(xm, x_max[i])
        if new_xm * float(new_col.max()) <= lim:
            col, xm = new_col, new_xm
        else:
            chunks.append((start, i))
            start, col, xm = i, g_sum[i].copy(), x_max[i]
    if col is not None:
        chunks.append((start, n))
    return chunks, alone


def _split_accumulate(
    x: Tensor, g: Tensor, wshape: tuple[int, ...], kw: dict, plan: tuple[int, int]
) -> Tensor:
    """The split path on images ``x``/``g`` (float32 int8 values) with ``split_plan`` ``plan``:
    float64 ``16 acc_h + acc_l``."""
    n, cout, h_out, w_out = g.shape
    imgs, rows = plan
    gg = torch.empty((n, 2 * cout, h_out, w_out), dtype=torch.float32, device=g.device)
    gh, gl = gg[:, :cout], gg[:, cout:]
    torch.mul(g, 1.0 / SPLIT_BASE, out=gh).floor_()  # exact: division by a power of two, then floor
    torch.add(g, gh, alpha=-SPLIT_BASE, out=gl)  # g - 16 g_h in [0, 15], exact small integers
    shape2 = (2 * cout, *wshape[1:])
    acc = torch.zeros(shape2, dtype=torch.float64, device=g.device)
    if rows >= h_out:
        for i in range(0, n, imgs):
            acc += torch.nn.grad.conv2d_weight(x[i:i + imgs], shape2, gg[i:i + imgs], **kw).double()
    else:
        (sh, _), (ph, pw), (dh, _) = _pair(kw["stride"]), _pair(kw["padding"]), _pair(kw["dilation"])
        kh = wshape[2]
        xp = F.pad(x, (0, 0, ph, ph))  # zero rows: the band slices below then need no row padding
        band_kw = {"stride": kw["stride"], "padding": (0, pw), "dilation": kw["dilation"], "groups": 1}
        for i in range(n):
            for r0 in range(0, h_out, rows):
                r1 = min(h_out, r0 + rows)
                x_band = xp[i:i + 1, :, r0 * sh:(r1 - 1) * sh + dh * (kh - 1) + 1]
                acc += torch.nn.grad.conv2d_weight(x_band, shape2, gg[i:i + 1, :, r0:r1], **band_kw).double()
    return acc[:cout].mul_(SPLIT_BASE).add_(acc[cout:])


def conv2d_weight_exact(
    vx: Tensor, wshape: tuple[int, ...], vg: Tensor, *, stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | str = 0, dilation: int | tuple[int, int] = 1, groups: int = 1,
    method: WgradMethod = "auto", max_terms: int = SPLIT_MAX_TERMS,
) -> Tensor:
    """Exact integer weight gradient ``sum_{n,p} x[n, c, p + offset] g[n, o, p]`` of a conv with
    int8 inputs ``vx`` and int8 output gradients ``vg`` (values in float or int8 tensors); returns
    the exact sums in a float64 tensor (not saturated; the caller saturates to int32). float32
    holds every integer up to 2^24 exactly, so a float32 convolution is exact, in any summation
    order, when every partial sum is an integer of magnitude <= 2^24.

    * ``method="float64"``: one float64 ``conv2d_weight`` (exact below 2^53; PyTorch's slow im2col
      path on CPU), the reference.
    * ``"split"``: the gradient is split ``g = 16 g_h + g_l``, ``g_h = floor(g / 16)`` in
      ``[-8, 7]``, ``g_l`` in ``[0, 15]``; one float32 ``conv2d_weight`` with ``2 c~_out`` outputs
      (``g_h`` and ``g_l`` stacked along channels) runs per chunk of images, the chunk chosen by
      :func:`split_plan` so that every partial sum of ``x g_h`` or ``x g_l`` is below
      ``128 * 15 * terms <= 2^24`` whatever the data; the chunks are accumulated in float64
      (exact) and combined as ``16 acc_h + acc_l``. When one image exceeds the bound it is split
      into bands of output rows (with the zero-padded input rows each band needs, exact).
    * ``"auto"`` (default): first a data-dependent bound (:func:`plain_chunks`: ``128 max_o sum|g|``
      per chunk of images): chunks within 2^24 run one *unsplit* float32 ``conv2d_weight`` each
      (half the work of the split); images above it on their own take the split path. If that
      needs more convolution calls than the split path alone, the split path is used.

    Falls back to float64 when even one output row exceeds the split bound, for ``groups != 1``,
    string padding that would need bands, or non-IEEE float32 convolutions.
    """
    if method not in ("auto", "split", "float64"):
        raise ValueError(f"method must be 'auto', 'split' or 'float64', got {method!r}")
    kw = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    n, _, h_out, w_out = vg.shape
    plan = split_plan(n, h_out, w_out, max_terms)
    needs_bands = plan is not None and plan[1] < h_out
    fallback = plan is None or groups != 1 or (needs_bands and isinstance(padding, str)) or not fp32_convolutions_are_ieee()
    if method == "float64" or fallback:
        return torch.nn.grad.conv2d_weight(vx.double(), wshape, vg.double(), **kw)
    assert plan is not None
    x, g = vx.float(), vg.float()
    if method == "split":
        return _split_accumulate(x, g, wshape, kw, plan)
    chunks, alone = plain_chunks(x, g, FP32_EXACT_INT)
    split_calls = -(-n // plan[0]) * -(-h_out // plan[1])
    alone_calls = len(alone) * -(-h_out // plan[1]) if plan[1] < h_out else -(-len(alone) // plan[0])
    if not chunks or len(chunks) + alone_calls > split_calls:
        return _split_accumulate(x, g, wshape, kw, plan)
    acc = torch.zeros(wshape, dtype=torch.float64, device=g.device)
    for a, b in chunks:
        acc += torch.nn.grad.conv2d_weight(x[a:b], wshape, g[a:b], **kw).double()
    if alone:
        idx = torch.tensor(alone, device=g.device)
        acc += _split_accumulate(x.index_select(0, idx), g.index_select(0, idx), wshape, kw, plan)
    return acc


class IntegerLayer(nn.Module):
    """Shared state of :class:`IntConv2d` / :class:`IntLinear`: 32- or 8-bit weight storage
    (Eq. 14) with its scale, optional 32-bit bias, the scale book, the pruning masks and the last
    32-bit weight gradient."""

    weight_v: Tensor
    bias_v: Tensor | None

    def _init_storage(
        self, weight: nn.Parameter, bias: nn.Parameter | None, weight_bits: int, headroom: int,
        rounding: ActRounding = "nearest", weight_grad_rounding: Rounding = "nearest",
    ) -> None:
        if weight_bits not in (8, 32):
            raise ValueError(f"weight_bits must be 8 or 32, got {weight_bits}")
        self.weight_bits = weight_bits
        self.headroom = headroom
        self.weight = weight  # the same Parameter object (optimisers and checkpoints keep working)
        self.bias = bias
        self.book = ScaleBook(rounding=rounding, weight_grad_rounding=weight_grad_rounding)
        store = torch.int32 if weight_bits == 32 else torch.int8
        s_w = dynamic_scale(weight.data) + headroom
        # scales are buffers too, so a checkpoint restores values and scales together
        self.register_buffer("weight_s", torch.tensor(s_w, dtype=torch.int64))
        self.register_buffer("weight_v", quantize(weight.data.double(), s_w, weight_bits, rounding).to(store))
        if bias is not None:
            s_b = dynamic_scale(bias.data) + headroom
            self.register_buffer("bias_s", torch.tensor(s_b, dtype=torch.int64))
            self.register_buffer("bias_v", quantize(bias.data.double(), s_b, weight_bits, rounding).to(store))
        else:
            self.bias_v = None
        self.name = type(self).__name__
        self.grad_keep: Tensor | None = None  # kept output channels (Eq. 6 mask as indices)
        self.grad_in_keep: Tensor | None = None  # kept channels of the previous layer ("pruned")
        self.propagate: Literal["pruned", "full"] = "pruned"
        self.frozen = False
        self.wgrad: Tensor | None = None  # int32 values (float64), rows = grad_keep
        self.wgrad_exp = 0  # real gradient = wgrad * 2^wgrad_exp
        self.bgrad: Tensor | None = None
        self.bgrad_exp = 0
        self.wgrad_keep: Tensor | None = None
        self._w8: tuple[Tensor, int, str] | None = None
        self.sync_float_weight()

    # -- weights ------------------------------------------------------------------------------
    @property
    def weight_scale(self) -> int:
        """``s_θ`` of the stored weight (Eq. 14)."""
        return int(self.weight_s)

    @weight_scale.setter
    def weight_scale(self, s: int) -> None:
        self.weight_s.fill_(s)
        self._w8 = None

    @property
    def bias_scale(self) -> int:
        return int(self.bias_s)

    @bias_scale.setter
    def bias_scale(self, s: int) -> None:
        self.bias_s.fill_(s)

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(*args, **kwargs)
        self._w8 = None  # new stored weights: rebuild the 8-bit copy

    def weight_int8(self) -> tuple[Tensor, int]:
        """The 8-bit copy of the stored weight used by forward/backward (Eq. 14 -> Eq. 10 with the
        weight's own dynamic scale, rounded with ``book.rounding``); float32 tensor of int8 values
        and its scale."""
        rnd = self.book.rounding
        if self._w8 is None or self._w8[2] != rnd:
            if self.weight_bits == 8:
                self._w8 = (self.weight_v.float(), self.weight_scale, rnd)
            else:
                v8, s8 = requantize(self.weight_v.long(), self.weight_scale - 31, None, 8, rnd)
                self._w8 = (v8.float(), s8, rnd)
        return self._w8[0], self._w8[1]

    def bias_acc(self, exp: int) -> Tensor | None:
        """The stored bias in accumulator units ``2^exp`` (int32, ``book.rounding``, saturated), float64."""
        if self.bias_v is None:
            return None
        b = shift_round(self.bias_v.long(), self.bias_scale - (self.weight_bits - 1) - exp, self.book.rounding)
        return saturate(b, 32).double()

    def sync_float_weight(self) -> None:
        """Copy ``DQ(weight_v)`` into the float Parameter (for inspection/checkpoints only)."""
        self._w8 = None
        with torch.no_grad():
            self.weight.copy_(dequantize(self.weight_v, self.weight_scale, self.weight_bits, torch.float64))
            if self.bias is not None and self.bias_v is not None:
                self.bias.copy_(dequantize(self.bias_v, self.bias_scale, self.weight_bits, torch.float64))

    def weight_grad_float(self) -> Tensor | None:
        """The last weight gradient as a full-size float tensor (zeros on pruned filters)."""
        if self.wgrad is None:
            return None
        g = self.wgrad * 2.0**self.wgrad_exp
        if self.wgrad_keep is None:
            return g.float()
        full = g.new_zeros(self.weight.shape)
        full[self.wgrad_keep] = g
        return full.float()

    # -- integer ops (overridden) -------------------------------------------------------------
    def _fwd(self, vx: Tensor, vw: Tensor) -> Tensor:
        raise NotImplementedError

    def _bwd_input(self, shape: tuple[int, ...], vw: Tensor, vg: Tensor) -> Tensor:
        raise NotImplementedError

    def _bwd_weight(self, vx: Tensor, wshape: tuple[int, ...], vg: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return _IntLayerFn.apply(x, self.weight, self)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, weight_bits={self.weight_bits}, scales={self.book.mode}"


class _IntLayerFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, mod: IntegerLayer) -> Tensor:  # noqa: ARG004
        with torch.autocast(x.device.type, enabled=False):
            x = x.float()
            rnd = mod.book.rounding
            sx = mod.book.pick(f"{mod.name}.x", dynamic_scale(x))
            vx = quantize(x, sx, 8, rnd)
            vw, sw = mod.weight_int8()
            exp = sx + sw - 14
            acc = mod._fwd(vx, vw)
            b = mod.bias_acc(exp)
            if b is not None:
                shape = [1, -1] + [1] * (acc.ndim - 2)
                acc = saturate(acc.double() + b.view(shape), 32)
            elif acc.dtype != torch.float32:
                acc = saturate(acc, 32)
            # (float32 path: |acc| <= K 2^14 <= 2^24 < 2^31, the int32 clamp would be a no-op)
            sy, m = _acc_scale(acc, exp, mod.book, f"{mod.name}.y")
            vy, sy = requantize(acc, exp, sy, 8, rnd, acc_abs_max=m)
            out = mark_grid(vy.mul_(2.0 ** (sy - 7)), sy - 7) if vy.dtype == torch.float32 else dequantize(vy, sy)
        # the int8 values are saved in their float32 carrier: converting to int8 and back would cost
        # two passes per layer (the int8 storage the paper's memory model counts is 1/4 of this)
        ctx.save_for_backward(vx)
        ctx.mod, ctx.sx, ctx.w8 = mod, sx, (vw, sw)
        return out

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor | None, None, None]:
        (vx8,) = ctx.saved_tensors  # int8 values (float32 carrier)
        mod: IntegerLayer = ctx.mod
        vw, sw = ctx.w8
        with torch.autocast(g.device.type, enabled=False):
            g = g.float()
            rnd = mod.book.rounding
            sg = mod.book.pick(f"{mod.name}.g", dynamic_scale(g))
            vg = quantize(g, sg, 8, rnd)
            keep = mod.grad_keep
            vg_k = vg if keep is None else vg.index_select(1, keep)
            vw_k = vw if keep is None else vw.index_select(0, keep)
            gx = None
            if ctx.needs_input_grad[0]:
                shape = tuple(vx8.shape)
                keep_in = mod.grad_in_keep if mod.propagate == "pruned" else None
                if mod.propagate == "full" or keep is None:
                    vg_in, vw_in = vg, vw
                else:
                    vg_in, vw_in = vg_k, vw_k
                if keep_in is not None:
                    vw_in = vw_in.index_select(1, keep_in)
                    shape = (shape[0], len(keep_in), *shape[2:])
                acc = mod._bwd_input(shape, vw_in, vg_in)
                if acc.dtype != torch.float32:  # float32 path: |acc| <= 2^24, clamp is a no-op
                    acc = saturate(acc, 32)
                exp = sg + sw - 14
                s, m = _acc_scale(acc, exp, mod.book, f"{mod.name}.gx")
                v, s = requantize(acc, exp, s, 8, rnd, acc_abs_max=m)
                gx = v.mul_(2.0 ** (s - 7)) if v.dtype == torch.float32 else dequantize(v, s)  # DQ (in place)
                if keep_in is not None:
                    full = gx.new_zeros(vx8.shape)
                    full.index_copy_(1, keep_in, gx)
                    gx = full
                mark_grid(gx, s - 7)
            if keep is None or len(keep) > 0:
                cout = vw.shape[0] if keep is None else len(keep)
                acc_w = mod._bwd_weight(vx8, (cout, *vw.shape[1:]), vg_k)
                mod.wgrad = saturate(acc_w, 32)
                mod.wgrad_exp = ctx.sx + sg - 14
                mod.wgrad_keep = keep
                if mod.bias_v is not None:
                    dims = [0, *range(2, vg_k.ndim)]
                    mod.bgrad = saturate(vg_k.double().sum(dims), 32)
                    mod.bgrad_exp = sg - 7
        return gx, None, None


class IntConv2d(IntegerLayer):
    """Integer-arithmetic ``Conv2d`` (any stride / padding / dilation / groups, optional bias).

    Args:
        conv: the float layer (its Parameters are kept; values are converted by Eq. 14).
        weight_bits: 32 (Eq. 14/15, "8-bit (Ours)") or 8 (the "standard 8-bit" net, Eq. 12/13).
        headroom: extra bits of the stored weight scale.
        rounding: activation / activation-gradient rounding (``nearest`` or ``floor``).
        weight_grad_rounding: rounding of the weight-gradient scaling (``nearest``, ``floor``,
            ``stochastic``), see :func:`eq15_update`.
        wgrad_method: how :func:`conv2d_weight_exact` computes the exact weight gradient:
            ``auto`` (float32, unsplit where a data-dependent bound allows, else split),
            ``split`` (float32 split ``g = 16 g_h + g_l``) or ``float64`` (the reference).
    """

    def __init__(
        self, conv: nn.Conv2d, weight_bits: int = 32, headroom: int = 1, *,
        rounding: ActRounding = "nearest", weight_grad_rounding: Rounding = "nearest",
        wgrad_method: WgradMethod = "auto",
    ) -> None:
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError(f"IntConv2d supports zero padding only, got padding_mode={conv.padding_mode!r}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.dilation, self.groups = conv.kernel_size, conv.stride, conv.dilation, conv.groups
        self.padding = conv.padding
        self.wgrad_method: WgradMethod = wgrad_method
        self._init_storage(conv.weight, conv.bias, weight_bits, headroom, rounding, weight_grad_rounding)

    def _kw(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation, "groups": self.groups}

    def _fwd(self, vx: Tensor, vw: Tensor) -> Tensor:
        terms = vw.shape[1] * vw.shape[2] * vw.shape[3]
        dt = _exact_dtype(terms)
        return F.conv2d(vx.to(dt), vw.to(dt), None, **self._kw())

    def _bwd_input(self, shape: tuple[int, ...], vw: Tensor, vg: Tensor) -> Tensor:
        terms = vw.shape[0] // max(1, self.groups) * vw.shape[2] * vw.shape[3]
        dt = _exact_dtype(terms)
        return torch.nn.grad.conv2d_input(shape, vw.to(dt), vg.to(dt), **self._kw())

    def _bwd_weight(self, vx: Tensor, wshape: tuple[int, ...], vg: Tensor) -> Tensor:
        return conv2d_weight_exact(vx, wshape, vg, method=self.wgrad_method, **self._kw())

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, bias={self.bias is not None}, weight_bits={self.weight_bits}, "
            f"scales={self.book.mode}"
        )


class IntLinear(IntegerLayer):
    """Integer-arithmetic ``Linear`` (optional bias); arguments as :class:`IntConv2d`."""

    def __init__(
        self, linear: nn.Linear, weight_bits: int = 32, headroom: int = 1, *,
        rounding: ActRounding = "nearest", weight_grad_rounding: Rounding = "nearest",
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._init_storage(linear.weight, linear.bias, weight_bits, headroom, rounding, weight_grad_rounding)

    def _fwd(self, vx: Tensor, vw: Tensor) -> Tensor:
        dt = _exact_dtype(vw.shape[1])
        return F.linear(vx.to(dt), vw.to(dt))

    def _bwd_input(self, shape: tuple[int, ...], vw: Tensor, vg: Tensor) -> Tensor:
        dt = _exact_dtype(vw.shape[0])
        return (vg.to(dt) @ vw.to(dt)).reshape(shape)

    def _bwd_weight(self, vx: Tensor, wshape: tuple[int, ...], vg: Tensor) -> Tensor:
        # float64 GEMM (exact below 2^53): the reduction is over batch rows only, cheap for Linear
        vx, vg = vx.double(), vg.double()
        return vg.reshape(-1, vg.shape[-1]).T @ vx.reshape(-1, vx.shape[-1])

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"weight_bits={self.weight_bits}, scales={self.book.mode}"
        )


class IntReLU(nn.ReLU):
    """``nn.ReLU`` that keeps the :func:`~lr_lightning.quant.core.mark_grid` record of its input
    (ReLU maps integers times ``2^e`` to integers times ``2^e``) on its output and, in backward, on
    the gradient. The values are exactly those of ``nn.ReLU``; the record lets the next integer
    layer skip a rounding that is a no-op (two to four passes over the tensor fewer).
    ``convert_to_integer`` puts it in place of every ``nn.ReLU``."""

    def forward(self, x: Tensor) -> Tensor:
        e = grid_exponent(x)
        if e is None:
            return super().forward(x)
        # marked after apply: autograd bumps the version of a dirty (in-place) output
        return mark_grid(_GridReLUFn.apply(x, self.inplace), e)


class _GridReLUFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, inplace: bool) -> Tensor:  # type: ignore[override]
        if inplace:
            y = x.relu_()
            ctx.mark_dirty(x)
        else:
            y = torch.relu(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:
        (y,) = ctx.saved_tensors
        e = grid_exponent(g)
        gx = torch.ops.aten.threshold_backward(g, y, 0)  # nn.ReLU's own backward
        if e is not None:
            mark_grid(gx, e)
        return gx, None


AddBits = Literal[8, 16, 32]


class IntAdd(nn.Module):
    """Integer residual add ``a + b``: both operands as int8 (Eq. 10/11), aligned to the finer scale
    in a wide accumulator (exact), then requantized to ``output_bits``. The gradient of a sum is
    passed unchanged to both operands (their consumers quantize it).

    Args:
        output_bits: precision of the sum: ``8`` (default; the paper's all-int8 reading: every
            tensor between operations is int8), ``16`` (requantized to int16, Eq. 10 with
            ``b = 16``) or ``32`` (the exact int32 accumulator, no requantisation; carried in a
            float32 tensor, exact while the operands' scales differ by at most 16 bits, i.e.
            ``|acc| < 2^24``). For ZSSR8 this is the network output (bicubic input + residual),
            where int8 costs PSNR (``docs/integer_training.md``).
        rounding: ``nearest`` (default) or ``floor`` (Eq. 10).
    """

    def __init__(self, output_bits: AddBits = 8, rounding: ActRounding = "nearest") -> None:
        super().__init__()
        if output_bits not in (8, 16, 32):
            raise ValueError(f"output_bits must be 8, 16 or 32, got {output_bits}")
        self.output_bits = output_bits
        self.book = ScaleBook(rounding=rounding)
        self.name = "IntAdd"

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return _IntAddFn.apply(a, b, self)

    def extra_repr(self) -> str:
        return f"output_bits={self.output_bits}"


class _IntAddFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, mod: IntAdd) -> Tensor:  # noqa: ARG004
        with torch.autocast(a.device.type, enabled=False):
            a, b = a.float(), b.float()
            sa = mod.book.pick(f"{mod.name}.a", dynamic_scale(a))
            sb = mod.book.pick(f"{mod.name}.b", dynamic_scale(b))
            rnd = mod.book.rounding
            va, vb = quantize(a, sa, 8, rnd).double(), quantize(b, sb, 8, rnd).double()
            lo = min(sa, sb)
            acc = saturate(shift_floor(va, sa - lo) + shift_floor(vb, sb - lo), 32)  # left shifts: exact
            exp = lo - 7
            if mod.output_bits == 32:
                return (acc * 2.0**exp).float()
            s, m = _acc_scale(acc, exp, mod.book, f"{mod.name}.y")
            v, s = requantize(acc, exp, s, mod.output_bits, rnd, acc_abs_max=m)
            return dequantize(v, s, mod.output_bits)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, Tensor, None]:
        return g, g, None


def eq15_update(
    layer: IntegerLayer, lr: float, frac_bits: int = 24, *, rounding: Rounding | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """Integer SGD step on ``layer``'s stored weights from its last 32-bit weight gradient.

    32-bit storage (Eq. 15): ``v^_scaled = Q32(DQ32(v^_g, s_g), s_θ)``;
    ``v^_θ <- Q32(v^_θ - γ m v^_scaled, s_θ)``. 8-bit storage (Eq. 12/13, the "standard 8-bit"
    network): the gradient is first requantized to int8 with its dynamic scale, then scaled to
    ``s_θ`` (Eq. 12) and applied to the int8 weights (Eq. 13). ``m`` is the gradient mask: only the
    kept rows (``wgrad_keep``) are touched. The learning rate is a fixed-point integer
    ``round(γ 2^frac_bits)`` so the whole update is integer arithmetic (int64):
    ``R((v 2^f - γ_q v_scaled) / 2^f)``.

    Every rounding here (the scaling ``v^_scaled`` of Eq. 15 / 12, the int8 requantisation of the
    gradient in the 8-bit path, and the ``Q`` of the update itself) uses ``rounding``, by default
    the layer's ``book.weight_grad_rounding`` (``nearest``; ``floor`` = Eq. 10 literally;
    ``stochastic`` = ``floor(x + u)`` with ``u`` from ``generator``, else ``book.generator``, else
    the global torch RNG, so a fixed seed gives a reproducible update).
    """
    gamma_q = round(lr * 2**frac_bits)
    if gamma_q <= 0:
        raise ValueError(f"learning rate {lr} is zero in {frac_bits}-bit fixed point; raise lr or frac_bits")

    rnd: Rounding = check_rounding(rounding if rounding is not None else layer.book.weight_grad_rounding)  # type: ignore[assignment]
    gen = generator if generator is not None else layer.book.generator

    def apply(v_store: Tensor, s_theta: int, acc: Tensor, exp: int, keep: Tensor | None) -> None:
        bits = layer.weight_bits
        acc = acc.round().long()  # exact: acc holds integers below 2^31
        if bits == 32:
            v_scaled = saturate(shift_round(acc, exp + 31 - s_theta, rnd, gen), 32)
        else:
            v_g, s_g = requantize(acc, exp, None, 8, rnd, gen)
            v_scaled = saturate(shift_round(v_g, s_g - s_theta, rnd, gen), 8)
        rows = v_store.long() if keep is None else v_store.long().index_select(0, keep)
        new = saturate(shift_round((rows << frac_bits) - gamma_q * v_scaled, -frac_bits, rnd, gen), bits)
        new = new.to(v_store.dtype)
        if keep is None:
            v_store.copy_(new)
        else:
            v_store.index_copy_(0, keep, new)

    if layer.wgrad is not None:
        apply(layer.weight_v, layer.weight_scale, layer.wgrad, layer.wgrad_exp, layer.wgrad_keep)
    if layer.bias_v is not None and layer.bgrad is not None:
        apply(layer.bias_v, layer.bias_scale, layer.bgrad, layer.bgrad_exp, layer.wgrad_keep)
    layer.wgrad = layer.bgrad = None
    layer.sync_float_weight()
