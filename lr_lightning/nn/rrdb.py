"""RRDBNet: the ESRGAN generator (Wang et al. 2018, Sec. 3.1, Fig. 4) used by DarioNet (paper B).

Structure (names follow BasicSR's ``basicsr/archs/rrdbnet_arch.py``)::

    conv_first (in -> nf)
    body = nb x RRDB, each RRDB = 3 residual dense blocks (RDB) and a residual
           ``x + 0.2 * RDB3(RDB2(RDB1(x)))``; each RDB has 5 convs with dense connections
           (growth ``gc``) and returns ``x + 0.2 * conv5(...)`` (residual scaling beta = 0.2)
    conv_body (nf -> nf), added to the conv_first features (long skip)
    upsampling: x2 -> one stage, x3 -> one stage, x4 -> two x2 stages; a stage is
           nearest-neighbour interpolation by its factor then a 3x3 conv and LeakyReLU(0.2)
    conv_hr (nf -> nf) + LeakyReLU(0.2), conv_last (nf -> out)

ESRGAN only defines x4 (two x2 stages). For x2 this class uses one x2 stage and for x3 one x3
stage (nearest x3 then conv), which keeps the nearest+conv design; BasicSR's x2/x1 models
instead pixel-unshuffle the input and keep two x2 stages, so *BasicSR x2 checkpoint files do
not load into the x2 model here* (different ``conv_first`` input width and an extra stage). x4
files of both layouts load.

Both weight-name layouts load through ``load_state_dict`` (and therefore through
:func:`~lr_lightning.nn.load_state_dict_file`, ``weights_only=True``, which also unwraps BasicSR's
``params_ema`` / ``params``): the old ESRGAN repository layout (``RRDB_trunk.N.RDB1.conv1``,
``trunk_conv``, ``upconv1``, ``upconv2``, ``HRconv``) is renamed to the BasicSR layout
(``body.N.rdb1.conv1``, ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``) by a
load-state-dict pre-hook.

With the ESRGAN defaults (x4, nf=64, nb=23, gc=32) the network has 16,697,987 parameters.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lr_lightning.nn.weights import load_state_dict_file

# old ESRGAN name (regex on the key without the module prefix) -> BasicSR name
_OLD_TO_NEW: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^RRDB_trunk\.(\d+)\.RDB(\d)\."), r"body.\1.rdb\2."),
    (re.compile(r"^trunk_conv\."), "conv_body."),
    (re.compile(r"^upconv(\d)\."), r"conv_up\1."),
    (re.compile(r"^HRconv\."), "conv_hr."),
)

# (nf, nb, gc) presets: the ESRGAN paper's network and a small one that trains on 2 CPU cores.
PRESETS: dict[str, tuple[int, int, int]] = {"esrgan": (64, 23, 32), "cpu_small": (32, 3, 16)}


def remap_esrgan_keys(state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Rename old-ESRGAN keys (under ``prefix``) to the BasicSR names; other keys are kept."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        new = key
        if key.startswith(prefix):
            rest = key[len(prefix):]
            for pattern, repl in _OLD_TO_NEW:
                rest, n = pattern.subn(repl, rest)
                if n:
                    break
            new = prefix + rest
        out[new] = value
    return out


class ResidualDenseBlock(nn.Module):
    """Five 3x3 convs with dense connections and LeakyReLU(0.2); ``x + beta * conv5(...)``."""

    def __init__(self, nf: int = 64, gc: int = 32, beta: float = 0.2) -> None:
        super().__init__()
        self.beta = beta
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x + self.beta * x5


class RRDB(nn.Module):
    """Residual-in-residual dense block: three RDBs and a ``beta``-scaled residual."""

    def __init__(self, nf: int = 64, gc: int = 32, beta: float = 0.2) -> None:
        super().__init__()
        self.beta = beta
        self.rdb1 = ResidualDenseBlock(nf, gc, beta)
        self.rdb2 = ResidualDenseBlock(nf, gc, beta)
        self.rdb3 = ResidualDenseBlock(nf, gc, beta)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.beta * self.rdb3(self.rdb2(self.rdb1(x)))


class RRDBNet(nn.Module):
    """The ESRGAN generator ``lr -> sr`` (output ``scale`` times the input size).

    Args:
        scale: 2, 3 or 4 (see the module docstring for the upsampling stages).
        in_channels / out_channels: image channels.
        nf: feature channels (64 in ESRGAN).
        nb: number of RRDB blocks (23 in ESRGAN).
        gc: growth channels of the dense blocks (32 in ESRGAN).
        beta: residual scaling of the RDBs and RRDBs (0.2 in ESRGAN).
        preset: ``"esrgan"`` (64, 23, 32) or ``"cpu_small"`` (32, 3, 16) overrides nf/nb/gc;
            ``None`` uses the explicit values.
        weights_path: optional ESRGAN/BasicSR weights file (either layout, ``params_ema`` /
            ``params`` / Lightning ``state_dict`` unwrapped), loaded with ``weights_only=True``.
        weights_prefix: prefix to strip from the file's keys (``"net."`` for a checkpoint of
            an lr-lightning SR task).
    """

    def __init__(
        self,
        scale: int = 4,
        in_channels: int = 3,
        out_channels: int = 3,
        nf: int = 64,
        nb: int = 23,
        gc: int = 32,
        beta: float = 0.2,
        preset: Literal["esrgan", "cpu_small"] | None = None,
        weights_path: str | None = None,
        weights_prefix: str | None = None,
    ) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"RRDBNet supports scale 2, 3 or 4, got {scale}")
        if preset is not None:
            if preset not in PRESETS:
                raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
            nf, nb, gc = PRESETS[preset]
        if min(nf, nb, gc) < 1:
            raise ValueError(f"nf, nb and gc must be positive, got {nf}, {nb}, {gc}")
        self.scale = scale
        self.stages = [2, 2] if scale == 4 else [scale]
        self.conv_first = nn.Conv2d(in_channels, nf, 3, 1, 1)
        self.body = nn.Sequential(*[RRDB(nf, gc, beta) for _ in range(nb)])
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
        if len(self.stages) == 2:
            self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, out_channels, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)
        self.register_load_state_dict_pre_hook(self._remap_old_layout)
        if weights_path is not None:
            load_state_dict_file(self, weights_path, prefix=weights_prefix)

    @staticmethod
    def _remap_old_layout(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        if not any(k.startswith(prefix) and ("RRDB_trunk." in k or "trunk_conv." in k or "HRconv." in k or
                                             "upconv" in k) for k in state_dict):
            return
        remapped = remap_esrgan_keys(dict(state_dict), prefix)
        state_dict.clear()
        state_dict.update(remapped)

    def forward(self, x: Tensor) -> Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        convs = [self.conv_up1, self.conv_up2] if len(self.stages) == 2 else [self.conv_up1]
        for factor, conv in zip(self.stages, convs, strict=True):
            feat = self.lrelu(conv(F.interpolate(feat, scale_factor=factor, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))
