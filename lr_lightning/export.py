"""``lr-lightning export``: the networks a device runs, as ONNX or ``torch.export`` programs,
each checked against PyTorch on fresh inputs before the command reports success.

    lr-lightning export --ckpt_path logs/.../checkpoints/last.ckpt --format onnx
    lr-lightning export --ckpt_path RUN.ckpt --config RUN/config.yaml --format torch_export --network policy

What is exported is each task's :meth:`~lr_lightning.methods.base.BaseTask.export_networks`:
plain ``nn.Module`` wrappers that take images in [0, 1] (normalisation inside), in float32,
NCHW, with a dynamic batch dimension (and dynamic height / width for SR nets when the network
exports that way; otherwise the example's size is fixed and the report says so):

* LR / HR classifiers (baselines, paper A's Conv4, paper C's LR-CNN): ``classifier`` -> logits;
* paper C: ``policy`` (LR image -> keep-probability per patch, Eq. 6) and ``hr_classifier``
  (HR image + actions -> logits of the masked image);
* SR nets of papers B / E and the SR baselines: ``sr`` (LR -> SR image). Paper E's integer
  arithmetic is a training-time engine; its float network is what is exported.

The model is rebuilt from the run's ``config.yaml`` (by default the one beside the checkpoint's
``checkpoints/`` folder, where the CLI saves it) and the checkpoint is loaded with
``weights_only=True``. The example inputs are synthetic images at the data module's HR size
(``--input_size`` to change it), degraded by the data module's degradation; no data is read.

ONNX needs the ``export`` extra (``pip install -e '.[export]'``: onnx, onnxscript, and onnxruntime
for the check); ``torch_export`` (``.pt2``, ``torch.export.save``) needs nothing more. TorchScript
is deprecated in PyTorch and not offered.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import Tensor, nn

Format = Literal["onnx", "torch_export"]
SUFFIX = {"onnx": ".onnx", "torch_export": ".pt2"}


@dataclass
class ExportNet:
    """One exportable network: ``module(*example)`` is what the device computes.

    Attributes:
        module: a plain ``nn.Module`` (eval mode, float32).
        example: example inputs (batch first).
        input_names / output_names: names in the exported graph.
        dynamic_size: also try dynamic height / width (fully convolutional SR nets).
    """

    module: nn.Module
    example: tuple[Tensor, ...]
    input_names: list[str]
    output_names: list[str] = field(default_factory=lambda: ["output"])
    dynamic_size: bool = False


class Normalized(nn.Module):
    """``net((x - mean) / std)`` for images ``x`` in [0, 1]: a classifier as a device runs it."""

    def __init__(self, net: nn.Module, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.detach().clone().float().view(1, -1, 1, 1))
        self.register_buffer("std", std.detach().clone().float().view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


class PolicyProbs(nn.Module):
    """Paper C's policy as a device runs it: LR image in [0, 1] -> ``sigmoid(f_p(x_l))`` per patch
    (Eq. 6, with the optional soft logit bound); keep patch ``p`` when the value is > 0.5."""

    def __init__(self, policy: nn.Module, mean: Tensor, std: Tensor, logit_bound: float | None) -> None:
        super().__init__()
        self.net = Normalized(policy, mean, std)
        self.logit_bound = logit_bound

    def forward(self, lr: Tensor) -> Tensor:
        scores = self.net(lr).float()
        if self.logit_bound is not None:
            scores = self.logit_bound * torch.tanh(scores / self.logit_bound)
        return torch.sigmoid(scores)


class MaskedClassifier(nn.Module):
    """Paper C's HR classifier on the kept patches: HR image in [0, 1] and actions ``(B, P)`` in
    {0, 1} -> logits; dropped patches are set to the fill value (Sec. 3), or a patch-based
    classifier (Sec. 6) gets the image and the actions."""

    def __init__(self, net: nn.Module, mean: Tensor, std: Tensor, fill: Tensor, grid: int) -> None:
        super().__init__()
        self.net = net
        self.grid = grid
        self.patch_based = bool(getattr(net, "patch_based", False))
        self.register_buffer("mean", mean.detach().clone().float().view(1, -1, 1, 1))
        self.register_buffer("std", std.detach().clone().float().view(1, -1, 1, 1))
        self.register_buffer("fill", fill.detach().clone().float())

    def forward(self, hr: Tensor, actions: Tensor) -> Tensor:
        from lr_lightning.methods.patchdrop.grid import apply_mask

        x = (hr - self.mean) / self.std
        if self.patch_based:
            return self.net(x, actions)
        return self.net(apply_mask(x, actions, self.grid, self.fill))


class ExportError(RuntimeError):
    """The network could not be exported, or the exported one disagrees with PyTorch."""


def _fresh_inputs(example: tuple[Tensor, ...], batch: int, seed: int) -> tuple[Tensor, ...]:
    """New inputs of another batch size: images uniform in [0, 1], 0/1 tensors as random 0/1."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in example:
        shape = (batch, *t.shape[1:])
        binary = bool(((t == 0) | (t == 1)).all())
        x = torch.rand(shape, generator=g)
        out.append((x > 0.5).to(t.dtype) if binary else x.to(t.dtype))
    return tuple(out)


def _dynamic_shapes(net: ExportNet, with_size: bool) -> tuple[dict[int, Any], ...]:
    batch = torch.export.Dim("batch", min=1, max=4096)
    shapes: list[dict[int, Any]] = []
    for t in net.example:
        spec: dict[int, Any] = {0: batch}
        if with_size and t.ndim == 4:
            spec[2] = torch.export.Dim.DYNAMIC
            spec[3] = torch.export.Dim.DYNAMIC
        shapes.append(spec)
    return tuple(shapes)


def _export_program(net: ExportNet, with_size: bool) -> torch.export.ExportedProgram:
    return torch.export.export(net.module, net.example, dynamic_shapes=_dynamic_shapes(net, with_size), strict=False)


@torch.no_grad()
def _run_exported(path: Path, fmt: Format, net: ExportNet, inputs: tuple[Tensor, ...]) -> list[Tensor]:
    if fmt == "torch_export":
        out = torch.export.load(str(path)).module()(*inputs)
    else:
        try:
            import onnxruntime as ort
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ExportError("checking an ONNX export needs onnxruntime: pip install -e '.[export]'") from err
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {name: t.numpy() for name, t in zip(net.input_names, inputs, strict=True)}
        out = [torch.from_numpy(a) for a in session.run(None, feeds)]
    return list(out) if isinstance(out, (list, tuple)) else [out]


def export_network(
    name: str, net: ExportNet, out_dir: Path, fmt: Format, *, atol: float = 1e-4, rtol: float = 1e-3
) -> dict[str, Any]:
    """Export ``net`` to ``out_dir/<name>.onnx|.pt2`` and compare it with PyTorch on fresh inputs
    at two batch sizes (and at another image size when the export has dynamic height / width).
    Returns the report; raises :class:`ExportError` if an output differs by more than
    ``atol + rtol * |reference|``."""
    # a copy in float32 / NCHW / eval mode: the task's own networks are left as they are
    net = ExportNet(copy.deepcopy(net.module).eval().float().to(memory_format=torch.contiguous_format),
                    net.example, net.input_names, net.output_names, net.dynamic_size)
    path = out_dir / f"{name}{SUFFIX[fmt]}"
    out_dir.mkdir(parents=True, exist_ok=True)
    dynamic_size, note = False, ""
    program = None
    if net.dynamic_size:
        try:
            program = _export_program(net, True)
            dynamic_size = True
        except Exception as err:  # noqa: BLE001 - any export failure falls back to a fixed size
            note = f"dynamic height/width did not export ({type(err).__name__}); size fixed at the example's"
    if program is None:
        program = _export_program(net, False)
    if fmt == "torch_export":
        torch.export.save(program, str(path))
    else:
        try:
            onnx_program = torch.onnx.export(program, (), dynamo=True, input_names=net.input_names,
                                             output_names=net.output_names, verbose=False)
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ExportError("ONNX export needs onnx and onnxscript: pip install -e '.[export]'") from err
        onnx_program.save(str(path))
    checks = []
    cases: list[tuple[int, int | None]] = [(1, None), (3, None)]
    if dynamic_size:
        cases.append((2, 8))  # 8 more pixels per side
    for k, (batch, grow) in enumerate(cases):
        inputs = _fresh_inputs(net.example, batch, seed=k)
        if grow:
            inputs = tuple(torch.nn.functional.pad(t, (0, grow, 0, grow), mode="replicate") if t.ndim == 4 else t for t in inputs)
        with torch.no_grad():
            ref = net.module(*inputs)
        refs = list(ref) if isinstance(ref, (list, tuple)) else [ref]
        got = _run_exported(path, fmt, net, inputs)
        for r, g in zip(refs, got, strict=True):
            r, g = r.float(), g.float()
            if r.shape != g.shape:
                raise ExportError(f"{name}: exported output shape {tuple(g.shape)} != PyTorch {tuple(r.shape)}")
            err = (r - g).abs()
            bound = atol + rtol * r.abs()
            checks.append({"input_shapes": [list(t.shape) for t in inputs], "max_abs_diff": float(err.max()),
                           "within_tolerance": bool((err <= bound).all())})
            if not checks[-1]["within_tolerance"]:
                raise ExportError(f"{name}: exported {fmt} differs from PyTorch by {float(err.max()):.3g} "
                                  f"(tolerance {atol} + {rtol} * |output|) on inputs {checks[-1]['input_shapes']}")
    return {"network": name, "format": fmt, "path": str(path), "dynamic_batch": True,
            "dynamic_size": dynamic_size, "note": note, "atol": atol, "rtol": rtol, "checks": checks}


def example_batch(datamodule: Any, input_size: int | None = None, batch: int = 2) -> dict[str, Tensor]:
    """A synthetic batch as the task sees it: HR images uniform in [0, 1] at the data module's HR
    size (``hr_size`` / ``patch_size`` / 32 for CIFAR), plus ``lr`` from its degradation."""
    size = input_size or getattr(datamodule, "hr_size", None) or getattr(datamodule, "patch_size", None) or 32
    hr = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = {"hr": hr, "label": torch.zeros(batch, dtype=torch.long)}
    if getattr(datamodule, "degradation", None) is not None:
        out["lr"] = datamodule.degradation(hr)
    return out


def _find_config(ckpt: Path) -> Path:
    for folder in (ckpt.parent.parent, ckpt.parent):
        if (folder / "config.yaml").is_file():
            return folder / "config.yaml"
    raise FileNotFoundError(
        f"no config.yaml beside {str(ckpt)!r} (looked in {str(ckpt.parent.parent)!r} and {str(ckpt.parent)!r}, "
        "where `lr-lightning fit` saves it); pass the run's config with --config"
    )


def load_task(ckpt_path: Path, config: Path | None) -> tuple[Any, Any]:
    """Rebuild ``(model, datamodule)`` from a run's config and load the checkpoint's weights."""
    from lr_lightning.cli import main

    cfg_path = config or _find_config(ckpt_path)
    cfg = yaml.safe_load(cfg_path.read_text())
    keep = {k: v for k, v in cfg.items() if k in ("seed_everything", "model", "data")}
    keep["trainer"] = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False}
    argv, sys.argv = sys.argv, sys.argv[:1]  # the export command's own arguments are not the CLI's
    try:
        cli = main(keep, run=False)
    finally:
        sys.argv = argv
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    cli.model.load_state_dict(state["state_dict"])
    return cli.model, cli.datamodule


def export_task(
    model: Any, batch: dict[str, Tensor], out_dir: Path, fmt: Format, networks: list[str] | None = None,
    atol: float = 1e-4, rtol: float = 1e-3,
) -> list[dict[str, Any]]:
    """Export (and check) the task's networks; ``networks`` picks some by name."""
    model.eval()
    available = model.export_networks(batch)
    if not available:
        raise ExportError(f"{type(model).__name__} defines no network to export (export_networks is empty)")
    chosen = networks or list(available)
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise ExportError(f"{type(model).__name__} has no network {unknown}; it exports {sorted(available)}")
    return [export_network(n, available[n], out_dir, fmt, atol=atol, rtol=rtol) for n in chosen]


def main(argv: list[str] | None = None) -> int:
    """The ``lr-lightning export`` command; prints and writes ``export_report.json``."""
    p = argparse.ArgumentParser(prog="lr-lightning export", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt_path", required=True, type=Path, help="checkpoint (.ckpt) of a fit")
    p.add_argument("--config", type=Path, default=None, help="the run's config.yaml (default: beside the checkpoint)")
    p.add_argument("--format", choices=["onnx", "torch_export"], default="onnx")
    p.add_argument("--network", action="append", default=None, help="export only this network (repeatable)")
    p.add_argument("--out_dir", type=Path, default=None, help="default: <run>/export")
    p.add_argument("--input_size", type=int, default=None, help="HR side of the example input")
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--rtol", type=float, default=1e-3)
    args = p.parse_args(argv)
    if not args.ckpt_path.is_file():
        print(f"lr-lightning export: error: no checkpoint at {str(args.ckpt_path)!r}", file=sys.stderr)
        return 2
    model, dm = load_task(args.ckpt_path, args.config)
    out_dir = args.out_dir or args.ckpt_path.resolve().parent.parent / "export"
    try:
        reports = export_task(model, example_batch(dm, args.input_size), out_dir, args.format, args.network,
                              atol=args.atol, rtol=args.rtol)
    except ExportError as err:
        print(f"lr-lightning export: error: {err}", file=sys.stderr)
        return 1
    (out_dir / "export_report.json").write_text(json.dumps(reports, indent=2) + "\n")
    for r in reports:
        worst = max(c["max_abs_diff"] for c in r["checks"])
        print(f"{r['network']}: {r['path']} (max |exported - PyTorch| {worst:.2e} over {len(r['checks'])} checks"
              f"{', dynamic H/W' if r['dynamic_size'] else ''}{'; ' + r['note'] if r['note'] else ''})")
    return 0
