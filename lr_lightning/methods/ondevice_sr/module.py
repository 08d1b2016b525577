"""The stages of paper E as LightningModules (Alg. 1 offline, Alg. 2 online), chained by files.

=====================  ==========================================================  ====================
stage                  what it trains                                              writes
=====================  ==========================================================  ====================
:class:`ZSSRPretrain`  theta on ``D_bic`` or ``D_meta`` (L1, Eq. 2; Alg. 1 l. 1)   a checkpoint
:class:`ZSSRMetaLearn` theta by MAML over kernel tasks (Eq. 3-5; Alg. 1 l. 2-10)    a checkpoint
:class:`GradientMasks` the gradient masks, theta frozen (Eq. 7-9; Alg. 1 l. 11-16)  a masks JSON file
:class:`OnlineZSSR`    nothing offline: ``test`` / ``predict`` run Alg. 2            PNGs (predict)
=====================  ==========================================================  ====================

Every stage starts from ``init_weights`` (a task checkpoint or a plain state dict of the net,
``weights_only=True``) and every stage's ``test`` is the online stage: per test image, Alg. 2
with the settings in ``online`` (:class:`OnlineSpec`), so any checkpoint can be evaluated the way
the paper evaluates (Table 1: "Init" = ``test/psnr_y_init``, after ``n`` updates = ``test/psnr_y``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from lr_lightning.degrade.zero_shot import KernelDistribution, bicubic_downsample, kernel_downsample
from lr_lightning.meta import functional_forward, inner_loop, meta_parameters
from lr_lightning.methods.base import BaseTask, batch_entry
from lr_lightning.methods.ondevice_sr.masks import (
    knapsack_masks,
    layerwise_masks,
    load_masks,
    ratio_key,
    save_masks,
)
from lr_lightning.methods.ondevice_sr.online import conv_layers, zero_shot_adapt
from lr_lightning.methods.optim import OptimSpec
from lr_lightning.metrics import psnr_y
from lr_lightning.metrics.ssim import ssim_y
from lr_lightning.nn.weights import load_module_weights

#: Alg. 1 outer loop: Adam 1e-4 (MZSR's META_LR; paper E: "ADAM optimizer to meta-train")
META_OPTIM = OptimSpec(name="adam", learning_rate=1e-4, betas=(0.9, 0.999))
#: pre-training: Adam 1e-4 (MZSR's large-scale training; see docs/ondevice_sr.md for the SGD note)
PRETRAIN_OPTIM = OptimSpec(name="adam", learning_rate=1e-4, betas=(0.9, 0.999))


@dataclass(frozen=True)
class OnlineSpec:
    """Settings of the online stage (Alg. 2) used by ``test`` / ``predict`` of every stage.

    Args:
        steps: gradient updates ``n`` per image (10 in the paper's tables).
        learning_rate: ``gamma`` of Eq. 6 / Eq. 15 (plain SGD).
        arithmetic: ``integer`` (32-bit integer weights, int8 activations/gradients, Eq. 10-15) or
            ``float`` (the FP rows).
        weight_bits: 32 ("8-bit (Ours)", Eq. 14/15) or 8 ("standard 8-bit", Eq. 12/13).
        scales: ``dynamic`` (Eq. 11 per tensor) or ``static`` (from ``scales_path``).
        scales_path: JSON of static scales calibrated offline (``lr_lightning.quant``).
        masks_path: the masks file of :class:`GradientMasks`; ``None`` = no pruning.
        prune_ratio: which mask set of the file (0 = every filter).
        mask_kind: ``knapsack`` (Eq. 8) or ``layerwise`` (Table 6 baseline).
        log_curve: log the PSNR-Y after every update (``test/psnr_y_step/<k>``, Fig. 5).
    """

    steps: int = 10
    learning_rate: float = 0.01
    arithmetic: Literal["float", "integer"] = "integer"
    weight_bits: Literal[8, 32] = 32
    scales: Literal["dynamic", "static"] = "dynamic"
    scales_path: str | None = None
    masks_path: str | None = None
    prune_ratio: float = 0.0
    mask_kind: Literal["knapsack", "layerwise"] = "knapsack"
    log_curve: bool = True

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"online.steps must be >= 0, got {self.steps}")
        if not self.learning_rate > 0:
            raise ValueError(f"online.learning_rate must be > 0, got {self.learning_rate}")
        if self.prune_ratio and self.masks_path is None:
            raise ValueError("online.prune_ratio > 0 needs online.masks_path (the file of the GradientMasks stage)")
        if self.scales == "static" and (self.scales_path is None or self.arithmetic != "integer"):
            raise ValueError("online.scales='static' needs integer arithmetic and online.scales_path")

    @classmethod
    def coerce(cls, value: OnlineSpec | dict[str, Any] | None) -> OnlineSpec:
        if value is None:
            return cls()
        return value if isinstance(value, cls) else cls(**value)


class ZeroShotSRTask(BaseTask):
    """Shared part of paper E's stages: the ZSSR-8 network theta, its degradations, and the
    online stage (Alg. 2) as ``test`` / ``predict``.

    Args:
        net: the SR network, ``lr_lightning.nn.ZSSR8`` (8 conv3x3, no bias, global residual).
        scale: SR factor.
        init_weights: start theta from this file (previous stage's checkpoint or a state dict).
        kernels: the kernel distribution ``p(k)`` of ``D_meta`` (default: MZSR-like for ``scale``).
        online: the online-stage settings (:class:`OnlineSpec`).
        val_online_steps: float SGD updates on the son pair before scoring a validation image
            (0: theta as it is; the meta-learning stage selects on the adapted PSNR).
        output_dir: where ``predict`` writes the SR PNGs (default: ``<log dir>/predictions``).
        seed: seed of the task's kernel / task sampling generator.
        optim / channels_last: see :class:`BaseTask`.
    """

    monitor = "val/psnr_y"
    mode = "max"

    def __init__(
        self,
        *,
        net: nn.Module,
        scale: int = 4,
        init_weights: str | None = None,
        kernels: KernelDistribution | None = None,
        online: OnlineSpec | None = None,
        val_online_steps: int = 0,
        output_dir: str | None = None,
        seed: int = 0,
        optim: OptimSpec | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__(optim=optim, channels_last=channels_last, modules={"net": net})
        if isinstance(kernels, dict):  # from a checkpoint's hyper-parameters
            kernels = KernelDistribution(**kernels)
        self.kernel_dist = kernels if kernels is not None else KernelDistribution.for_scale(scale)
        self.online = OnlineSpec.coerce(online)
        self.hparams["kernels"] = asdict(self.kernel_dist)
        self.hparams["online"] = asdict(self.online)
        if getattr(net, "scale", scale) != scale:
            raise ValueError(f"net.scale {net.scale} differs from the task's scale {scale}")
        if init_weights is not None:
            load_module_weights(self.net, init_weights, "net.")
        self.generator = torch.Generator().manual_seed(seed)
        self._masks: list[Tensor] | None = None
        self._scale_state: dict[str, int] | None = None

    net: nn.Module

    # -- data -----------------------------------------------------------------------------------
    def forward(self, lr: Tensor) -> Tensor:
        return self.net(self.to_input(lr))

    def meta_lr(self, hr: Tensor) -> Tensor:
        """``D_meta``: each HR image degraded by its own kernel from ``p(k)`` (Eq. 1)."""
        return kernel_downsample(hr, self.kernel_dist.sample(hr.shape[0], self.generator), self.hparams.scale)

    # -- online stage (Alg. 2) ---------------------------------------------------------------------
    def online_masks(self) -> list[Tensor] | None:
        spec = self.online
        if spec.masks_path is None or spec.prune_ratio == 0:
            return None
        if self._masks is None:
            self._masks = load_masks(spec.masks_path, spec.prune_ratio, spec.mask_kind)
        return self._masks

    def online_scales(self) -> dict[str, int] | None:
        if self.online.scales_path is None:
            return None
        if self._scale_state is None:
            self._scale_state = {k: int(v) for k, v in json.loads(Path(self.online.scales_path).read_text()).items()}
        return self._scale_state

    def adapt(self, lr: Tensor, kernel: Tensor, hr: Tensor | None, spec: OnlineSpec, curve: bool):  # noqa: ANN201
        """Alg. 2 on one image with ``spec``; theta (``self.net``) is left untouched."""
        return zero_shot_adapt(
            self.net, lr, kernel, self.hparams.scale, steps=spec.steps, learning_rate=spec.learning_rate,
            arithmetic=spec.arithmetic, keep=self.online_masks(), weight_bits=spec.weight_bits, scales=spec.scales,
            scale_state=self.online_scales(), hr=hr, curve=curve,
        )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        lr, hr, k = batch["lr"], batch["hr"], batch["kernel"][0]
        steps = self.hparams.get("val_online_steps", 0)  # GradientMasks / OnlineZSSR: theta as it is
        if steps:
            spec = OnlineSpec(steps=steps, learning_rate=self.online.learning_rate, arithmetic="float", log_curve=False)
            sr = self.adapt(lr, k, None, spec, False).sr
        else:
            with torch.no_grad():
                sr = self(lr).float().clamp(0, 1)
        self.log("val/psnr_y", psnr_y(sr, hr, shave=self.hparams.scale).mean(), batch_size=1, prog_bar=True)

    def on_test_epoch_start(self) -> None:
        names = getattr(self.trainer.datamodule, "test_names", None)
        loaders = self.trainer.test_dataloaders
        n = len(loaders) if isinstance(loaders, list) else 1
        self._test_names = names or [str(i) for i in range(n)]
        self._records: list[dict[str, Any]] = []

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        lr, hr, k = batch["lr"], batch["hr"], batch["kernel"][0]
        spec = self.online
        res = self.adapt(lr, k, hr, spec, True)
        s = self.hparams.scale
        curve = res.psnr_curve
        rec = {
            "name": batch["name"][0], "set": self._test_names[dataloader_idx], "psnr_y_init": curve[0],
            "psnr_y": float(psnr_y(res.sr, hr, shave=s)[0]), "ssim_y": float(ssim_y(res.sr, hr, shave=s)[0]),
            "seconds": res.seconds, "curve": curve, "losses": res.losses,
        }
        self._records.append(rec)

    def on_test_epoch_end(self) -> None:
        recs = self._records
        if not recs:
            return
        self.log("test/psnr_y", float(np.mean([r["psnr_y"] for r in recs])), batch_size=1)
        self.log("test/ssim_y", float(np.mean([r["ssim_y"] for r in recs])), batch_size=1)
        self.log("test/psnr_y_init", float(np.mean([r["psnr_y_init"] for r in recs])), batch_size=1)
        self.log("test/online_seconds_per_image", float(np.mean([r["seconds"] for r in recs])), batch_size=1)
        for name in dict.fromkeys(r["set"] for r in recs):
            vals = [r["psnr_y"] for r in recs if r["set"] == name]
            self.log(f"test/psnr_y/{name}", float(np.mean(vals)), batch_size=1)
        if self.online.log_curve:
            for j in range(len(recs[0]["curve"])):
                self.log(f"test/psnr_y_step/{j}", float(np.mean([r["curve"][j] for r in recs])), batch_size=1)
        if self.trainer.log_dir is not None:  # every image's numbers, for tables and plots
            out = Path(self.trainer.log_dir) / "online_test.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"online": asdict(self.online), "images": recs}, indent=1))

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        """Alg. 2 on an LR image with its kernel; writes ``<output_dir>/<name>.png``."""
        from PIL import Image

        res = self.adapt(batch["lr"], batch["kernel"][0], None, self.online, False)
        out_dir = Path(self.hparams.output_dir or Path(self.trainer.log_dir or ".") / "predictions")
        out_dir.mkdir(parents=True, exist_ok=True)
        img = (res.sr[0].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        Image.fromarray(img).save(out_dir / f"{batch['name'][0]}.png")
        return res.sr

    def export_networks(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``sr``: the SR network (float), LR image in [0, 1] -> SR image."""
        from lr_lightning.export import ExportNet

        # the example only fixes shapes (the net is fully convolutional): an LR image the size of
        # the HR one divided by the scale when the batch has no LR entry (kernel data sets do)
        lr = batch["lr"] if "lr" in batch else torch.nn.functional.avg_pool2d(batch["hr"], self.hparams.scale)
        return {"sr": ExportNet(self.net, (lr.float(),), ["lr_image"], ["sr_image"], dynamic_size=True)}

    def inference_step(self, batch: dict[str, Any]) -> Tensor:
        """The final ``F(I_LR)`` of Alg. 2 (the adaptation updates are not counted; their cost is
        Eq. 17, ``test/online_seconds_per_image`` measures them)."""
        return self(batch_entry(batch, "lr", type(self).__name__))

    def hr_pixel_fraction(self, batch: dict[str, Any]) -> float:
        return 0.0


class ZSSRPretrain(ZeroShotSRTask):
    """Alg. 1 line 1: supervised L1 pre-training (Eq. 2) on ``D_bic`` or ``D_meta``.

    Args:
        train_degradation: ``bicubic`` (``D_bic``) or ``kernels`` (``D_meta``, Eq. 1).
        (others: :class:`ZeroShotSRTask`)
    """

    def __init__(
        self,
        *,
        net: nn.Module,
        scale: int = 4,
        train_degradation: Literal["bicubic", "kernels"] = "bicubic",
        init_weights: str | None = None,
        kernels: KernelDistribution | None = None,
        online: OnlineSpec | None = None,
        val_online_steps: int = 0,
        output_dir: str | None = None,
        seed: int = 0,
        optim: OptimSpec = PRETRAIN_OPTIM,
        channels_last: bool = False,
    ) -> None:
        super().__init__(net=net, scale=scale, init_weights=init_weights, kernels=kernels, online=online,
                         val_online_steps=val_online_steps, output_dir=output_dir, seed=seed, optim=optim,
                         channels_last=channels_last)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        hr = batch["hr"]
        if self.hparams.train_degradation == "bicubic":
            lr = bicubic_downsample(hr, self.hparams.scale)
        else:
            lr = self.meta_lr(hr)
        loss = (self(lr).float() - hr).abs().mean()
        self.log("train/loss", loss, batch_size=hr.shape[0], prog_bar=True)
        return loss


def multi_step_weights(steps: int, progress: float) -> list[float]:
    """MZSR's multi-step query loss (MAML++): uniform ``1/n`` weights at the start, annealed
    linearly to all weight on the last step as ``progress`` goes 0 -> 1."""
    if steps <= 1:
        return [1.0] * steps
    last = 1 / steps + (1 - 1 / steps) * min(max(progress, 0.0), 1.0)
    return [(1 - last) / (steps - 1)] * (steps - 1) + [last]


class ZSSRMetaLearn(ZeroShotSRTask):
    """Alg. 1 lines 2-10: MAML over kernel tasks (Eq. 3-5), MZSR's settings as defaults.

    A training batch holds ``tasks_per_step x (support_size + query_size)`` HR patches; task
    ``i`` draws one kernel ``k_i ~ p(k)``, degrades its patches with it (Eq. 1), adapts theta with
    ``inner_steps`` SGD steps on the support pairs ``(I_LR^k, I_HR)`` (Eq. 3) and scores the
    adapted weights on the query pairs; the outer step (Adam) minimises the mean query loss
    (Eq. 4-5). As in MZSR the task-level pairs are (LR, HR): the meta-objective is restoring
    the kernel's degradation after a few steps; online, those steps use the son pair.

    Args:
        tasks_per_step / support_size / query_size: MZSR 5 / 8 / 8.
        inner_steps / inner_learning_rate: 5 / 1e-2 (alpha of Eq. 3).
        first_order: FOMAML (no second derivatives).
        step_weights: ``last`` (Eq. 4: query loss of the final weights) or ``multi_step``
            (MZSR's per-step query losses, :func:`multi_step_weights`).
        anneal_steps: outer steps over which ``multi_step`` anneals to the last step.
        (others: :class:`ZeroShotSRTask`)
    """

    def __init__(
        self,
        *,
        net: nn.Module,
        scale: int = 4,
        tasks_per_step: int = 5,
        support_size: int = 8,
        query_size: int = 8,
        inner_steps: int = 5,
        inner_learning_rate: float = 1e-2,
        first_order: bool = False,
        step_weights: Literal["last", "multi_step"] = "last",
        anneal_steps: int = 1000,
        init_weights: str | None = None,
        kernels: KernelDistribution | None = None,
        online: OnlineSpec | None = None,
        val_online_steps: int = 5,
        output_dir: str | None = None,
        seed: int = 0,
        optim: OptimSpec = META_OPTIM,
        channels_last: bool = False,
    ) -> None:
        super().__init__(net=net, scale=scale, init_weights=init_weights, kernels=kernels, online=online,
                         val_online_steps=val_online_steps, output_dir=output_dir, seed=seed, optim=optim,
                         channels_last=channels_last)
        if min(tasks_per_step, support_size, query_size, inner_steps) < 1:
            raise ValueError("tasks_per_step, support_size, query_size and inner_steps must be >= 1")
        self.automatic_optimization = False

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        hp = self.hparams
        hr = batch["hr"]
        per_task = hp.support_size + hp.query_size
        need = hp.tasks_per_step * per_task
        if hr.shape[0] < need:
            raise ValueError(
                f"a meta-batch needs tasks_per_step x (support_size + query_size) = {need} HR patches, got "
                f"{hr.shape[0]}; set data.batch_size={need}"
            )
        opt = self.optimizers()
        opt.zero_grad()
        params = meta_parameters(self.net)
        weights = (
            multi_step_weights(hp.inner_steps, self.global_step / max(1, hp.anneal_steps))
            if hp.step_weights == "multi_step" else [0.0] * (hp.inner_steps - 1) + [1.0]
        )
        kernels = self.kernel_dist.sample(hp.tasks_per_step, self.generator)

        def l1(forward: Any, pair: tuple[Tensor, Tensor]) -> Tensor:
            return (forward(pair[0]) - pair[1]).abs().mean()

        total, support_loss = 0.0, 0.0
        for t, k in enumerate(kernels):
            hr_t = hr[t * per_task:(t + 1) * per_task]
            lr_t = kernel_downsample(hr_t, k, hp.scale)
            support = (lr_t[: hp.support_size], hr_t[: hp.support_size])
            query = (lr_t[hp.support_size:], hr_t[hp.support_size:])
            fast = params
            task_loss = 0.0
            for j, w in enumerate(weights):
                res = inner_loop(self.net, fast, l1, support, 1, hp.inner_learning_rate, first_order=hp.first_order)
                fast = res.params
                if j == 0:
                    support_loss += float(res.losses[0])
                if w > 0:
                    task_loss = task_loss + w * l1(functional_forward(self.net, fast), query)
            loss_t = task_loss / hp.tasks_per_step
            self.manual_backward(loss_t)  # per task: the graph of one task at a time in memory
            total += float(loss_t.detach())
        opt.step()
        self.log("train/loss", total, batch_size=need, prog_bar=True)
        self.log("train/support_loss_before", support_loss / hp.tasks_per_step, batch_size=need)
        return torch.tensor(total)


class GradientMasks(ZeroShotSRTask):
    """Alg. 1 lines 11-16: learn the gradient masks with theta frozen (Eq. 7-9).

    Each training batch of ``D_gp = D_meta`` (HR patches degraded by kernels from ``p(k)``) is
    back-propagated through the L1 loss; the per-filter L2 norms of the weight gradients of the
    first ``L - 1`` convs are summed. At the end of fit, Eq. 8 is solved for every ratio in
    ``prune_ratios`` and the layer-wise baseline is added; all go to ``masks_path``.

    Args:
        masks_path: the JSON file written (see :mod:`lr_lightning.methods.ondevice_sr.masks`).
        prune_ratios: the paper's 27/50/67/85 %.
        layerwise_frozen: front layers frozen by the layer-wise baseline of Table 6/7
            (``{ratio: layers}``); default 1/3/4/5 of the 6 middle layers = 17/50/66/83 %.
        objective: ``eq7`` or ``eq8_literal`` (see :func:`lr_lightning.callbacks.cost.importance_values`).
        (others: :class:`ZeroShotSRTask`)
    """

    monitor = "train/loss"
    mode = "min"

    def __init__(
        self,
        *,
        net: nn.Module,
        scale: int = 4,
        masks_path: str = "masks.json",
        prune_ratios: list[float] | None = None,
        layerwise_frozen: dict[str, int] | None = None,
        objective: Literal["eq7", "eq8_literal"] = "eq7",
        init_weights: str | None = None,
        kernels: KernelDistribution | None = None,
        online: OnlineSpec | None = None,
        output_dir: str | None = None,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        super().__init__(net=net, scale=scale, init_weights=init_weights, kernels=kernels, online=online,
                         val_online_steps=0, output_dir=output_dir, seed=seed, optim=None,
                         channels_last=channels_last)
        self.automatic_optimization = False
        self.prune_ratios = list(prune_ratios) if prune_ratios is not None else [0.27, 0.5, 0.67, 0.85]
        self.layerwise_frozen = layerwise_frozen if layerwise_frozen is not None else {
            "0.17": 1, "0.5": 3, "0.66": 4, "0.83": 5}
        layers = conv_layers(self.net)[:-1]
        self.norms = [np.zeros(m.out_channels) for m in layers]
        self.c_in = [m.in_channels for m in layers]
        for p in self.net.parameters():
            p.requires_grad_(True)  # gradients are needed, but no optimiser ever steps

    def configure_optimizers(self) -> None:
        return None  # theta is frozen: only the masks are learned

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        hr = batch["hr"]
        lr = self.meta_lr(hr)
        loss = (self(lr).float() - hr).abs().mean()
        self.net.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        for i, m in enumerate(conv_layers(self.net)[:-1]):
            self.norms[i] += m.weight.grad.detach().flatten(1).norm(dim=1).double().cpu().numpy()
        self.net.zero_grad(set_to_none=True)
        self.log("train/loss", loss, batch_size=hr.shape[0])
        return loss.detach()

    def mask_sets(self) -> dict[str, dict[str, Any]]:
        """Eq. 8 per ratio, plus the layer-wise baseline."""
        out = {ratio_key(r): knapsack_masks(self.norms, self.c_in, r, self.hparams.objective) for r in self.prune_ratios}
        c_out = [len(n) for n in self.norms]
        for r, frozen in self.layerwise_frozen.items():
            out[ratio_key(float(r), "layerwise")] = layerwise_masks(c_out, int(frozen), float(r))
        return out

    def on_train_end(self) -> None:
        if not any(n.any() for n in self.norms):
            raise RuntimeError("no gradient was accumulated; run at least one training batch")
        provenance = {"seed": self.hparams.seed, "init_weights": self.hparams.init_weights,
                      "batches": int(self.trainer.num_training_batches) if self._trainer is not None else None}
        save_masks(self.hparams.masks_path, self.norms, self.c_in, self.mask_sets(), provenance)


class OnlineZSSR(ZeroShotSRTask):
    """Alg. 2 alone: ``lr-lightning test`` (Set5 with kernels, PSNR-Y/SSIM-Y, the curve) or
    ``lr-lightning predict`` (a folder of LR images with a kernel file -> SR PNGs) from
    ``init_weights``. There is nothing to train offline (``fit`` is an error)."""

    test_only = True

    def __init__(
        self,
        *,
        net: nn.Module,
        scale: int = 4,
        init_weights: str | None = None,
        online: OnlineSpec | None = None,
        output_dir: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(net=net, scale=scale, init_weights=init_weights, online=online, output_dir=output_dir,
                         seed=seed, optim=None)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        raise RuntimeError("OnlineZSSR has no offline training: run `lr-lightning test` or `lr-lightning predict`")

    def configure_optimizers(self) -> None:
        return None

