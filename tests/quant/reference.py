"""Independent pure-integer references (numpy int64, Python ints) for the integer layers."""

from __future__ import annotations

import numpy as np


def ceil_log2_int(m: int) -> int:
    """ceil(log2(m)) for a positive Python integer, by bit length."""
    assert m > 0
    return (m - 1).bit_length()


def shift(v: np.ndarray, k: int) -> np.ndarray:
    """floor(v * 2^k) on int64."""
    v = np.asarray(v, dtype=np.int64)
    return v << k if k >= 0 else v >> (-k)


def requant(acc: np.ndarray, exp: int, bits: int = 8, rounding: str = "floor") -> tuple[np.ndarray, int]:
    """Integer accumulator (real value acc * 2^exp) -> dynamic-scale b-bit integers (floor or
    round-half-up, saturate)."""
    m = int(np.abs(acc).max())
    s = ceil_log2_int(m) + exp if m > 0 else 0
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    k = exp + bits - 1 - s
    acc = np.asarray(acc, dtype=np.int64)
    if rounding == "nearest" and k < 0:
        acc = acc + (1 << (-k - 1))
    return np.clip(shift(acc, k), lo, hi), s


def sat32(v: np.ndarray) -> np.ndarray:
    return np.clip(v, -(2**31), 2**31 - 1)


def _pad(x: np.ndarray, p: tuple[int, int]) -> np.ndarray:
    return np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))


def conv2d(x: np.ndarray, w: np.ndarray, stride: tuple[int, int], pad: tuple[int, int], dil: tuple[int, int]) -> np.ndarray:
    """out[n,o,y,x] = sum_{c,i,j} xpad[n,c,y*s+i*d,x*s+j*d] w[o,c,i,j] in int64 (groups = 1)."""
    x, w = x.astype(np.int64), w.astype(np.int64)
    xp = _pad(x, pad)
    n, _, hp, wp = xp.shape
    o, _, kh, kw = w.shape
    ho = (hp - dil[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (wp - dil[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, o, ho, wo), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dil[0]: i * dil[0] + stride[0] * (ho - 1) + 1: stride[0],
                       j * dil[1]: j * dil[1] + stride[1] * (wo - 1) + 1: stride[1]]
            out += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return out


def conv2d_input_grad(g: np.ndarray, w: np.ndarray, xshape: tuple[int, ...], stride, pad, dil) -> np.ndarray:
    g, w = g.astype(np.int64), w.astype(np.int64)
    n, c, h, wd = xshape
    gx = np.zeros((n, c, h + 2 * pad[0], wd + 2 * pad[1]), dtype=np.int64)
    _, _, ho, wo = g.shape
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            contrib = np.einsum("nohw,oc->nchw", g, w[:, :, i, j])
            gx[:, :, i * dil[0]: i * dil[0] + stride[0] * (ho - 1) + 1: stride[0],
               j * dil[1]: j * dil[1] + stride[1] * (wo - 1) + 1: stride[1]] += contrib
    return gx[:, :, pad[0]: pad[0] + h, pad[1]: pad[1] + wd]


def conv2d_weight_grad(x: np.ndarray, g: np.ndarray, kshape: tuple[int, int], stride, pad, dil) -> np.ndarray:
    x, g = x.astype(np.int64), g.astype(np.int64)
    xp = _pad(x, pad)
    _, _, ho, wo = g.shape
    kh, kw = kshape
    gw = np.zeros((g.shape[1], x.shape[1], kh, kw), dtype=np.int64)
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i * dil[0]: i * dil[0] + stride[0] * (ho - 1) + 1: stride[0],
                       j * dil[1]: j * dil[1] + stride[1] * (wo - 1) + 1: stride[1]]
            gw[:, :, i, j] = np.einsum("nchw,nohw->oc", patch, g)
    return gw
