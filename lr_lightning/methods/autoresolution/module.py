"""Autoresolution pretext task and the low-resolution classifier it initialises (paper D).

Stage 1, :class:`AutoresolutionPretext` (Sec. 2, 3.2): from unlabelled HR images, the LR image is
the average-pooled HR image (factor ``factor``) and a random ``super_patch`` crop of the HR image
runs through the fully convolutional patch tower, giving a ``G x G`` grid of predictions over
overlapping patches (``G`` follows from the patch tower's receptive field and stride).

* ``objective="classification"``: every cell predicts whether its patch belongs to the LR image.
  Per batch, each image gets its own (aligned) super patch as positive and the super patch of the
  next image in the batch as negative (Sec. 2); softmax cross-entropy over all cells.
* ``objective="regression"``: every cell predicts its patch's centre ``(x, y)`` normalised to
  [-1, 1] (Sec. 2); squared error (the paper names no loss; L2 is the plain choice).

Stage 2, :class:`AutoresolutionClassifier` (Sec. 3.3): the LR image tower + a softmax layer with
50% dropout. With ``pretrained`` (a stage-1 checkpoint; its saved weights are the parameter
average) the first ``head_only_steps`` steps train only the softmax layer, the tower frozen (its
batch-norm statistics too), then everything is fine-tuned. ``pretrained: null`` is the random
initialisation baseline (give it ``head_only_steps: 0`` for the paper's baseline).

Both use the recipe of Sec. 3.1 (:class:`~lr_lightning.methods.autoresolution.recipe.PaperRecipeTask`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import BinaryAccuracy, MulticlassAccuracy
from torchmetrics.regression import MeanAbsoluteError

from lr_lightning.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from lr_lightning.degrade import downsample
from lr_lightning.methods.autoresolution.figures import save_heatmap_figure
from lr_lightning.methods.autoresolution.probe import extract_features, fit_linear_probe
from lr_lightning.methods.autoresolution.recipe import PaperRecipeTask
from lr_lightning.methods.autoresolution.targets import (
    centre_targets,
    crop_batch,
    jitter_patches,
    random_offsets,
    shifted_negatives,
)
from lr_lightning.methods.base import batch_entry
from lr_lightning.methods.optim import (
    AUTORESOLUTION_OPTIM,
    AUTORESOLUTION_TRANSFER_OPTIM,
    OptimSpec,
)
from lr_lightning.nn.autoresolution import HEAD_PRESETS, AutoresolutionHead, Preset
from lr_lightning.nn.weights import load_state_dict_file

Objective = Literal["classification", "regression"]


class AutoresolutionPretext(PaperRecipeTask):
    """Self-supervised LR-image / HR-patch correspondence (paper D Sec. 2, tiled as Sec. 3.2).

    Batches need ``batch["hr"]`` only (labels, if present, are ignored).

    Args:
        image_tower: LR image tower (``lr_lightning.nn.LRImageTower``); has ``embed_dim``.
        patch_tower: HR patch tower (``lr_lightning.nn.PatchTower``); has ``embed_dim``,
            ``receptive_field()`` and ``grid_size()``.
        objective: ``classification`` (does the patch belong?) or ``regression`` (where is it?).
        factor: average-pooling factor HR -> LR.
        super_patch: side of the HR super patch (paper: 127 of 256).
        patch_jitter / patch_grey: per-image brightness, contrast, saturation and channel gains
            in ``[1 - patch_jitter, 1 + patch_jitter]`` and / or greyscale, applied to the super
            patch only (:func:`~lr_lightning.methods.autoresolution.targets.jitter_patches`), so
            that matching colours does not solve the pretext (``0`` / ``False``: the paper's
            plain patches). Check the result with
            :mod:`~lr_lightning.methods.autoresolution.shortcuts`.
        head_preset / head_hidden: widths of the 4 hidden 1x1 conv layers of the 5-layer head.
        optim: Sec. 3.1's recipe at 0.003 (the classification pretext's rate; the regression
            pretext's is 0.01: ``optim: {learning_rate: 0.01}``, as its config sets).
        mean / std: input normalisation of both towers (inputs are in [0, 1]).
        heatmap_every_n_epochs: save the Fig. 2 heat map (classification) every n validation
            epochs as ``<log_dir>/heatmaps/epoch_XXX.png`` (0 disables).
        clip_grad_norm / ema_decay: see :class:`PaperRecipeTask`.
    """

    def __init__(
        self,
        *,
        image_tower: nn.Module,
        patch_tower: nn.Module,
        objective: Objective = "classification",
        factor: int = 4,
        super_patch: int = 20,
        patch_jitter: float = 0.0,
        patch_grey: bool = False,
        head_preset: Preset = "small",
        head_hidden: list[int] | None = None,
        mean: tuple[float, float, float] = CIFAR10_MEAN,
        std: tuple[float, float, float] = CIFAR10_STD,
        heatmap_every_n_epochs: int = 1,
        clip_grad_norm: float | None = 10.0,
        ema_decay: float | None = 0.999,
        optim: OptimSpec = AUTORESOLUTION_OPTIM,
        channels_last: bool = True,
    ) -> None:
        for name, mod, attrs in (("image_tower", image_tower, ("embed_dim",)), ("patch_tower", patch_tower, ("embed_dim", "receptive_field", "grid_size"))):
            missing = [a for a in attrs if not hasattr(mod, a)]
            if missing:
                raise TypeError(f"{name} ({type(mod).__name__}) lacks {missing}; use lr_lightning.nn.LRImageTower / PatchTower")
        r, _ = patch_tower.receptive_field()
        if super_patch < r:
            raise ValueError(f"super_patch {super_patch} is smaller than the patch tower's receptive field {r}")
        self.monitor = "val/pretext_acc" if objective == "classification" else "val/pretext_mae"
        self.mode = "max" if objective == "classification" else "min"
        super().__init__(
            optim=optim, clip_grad_norm=clip_grad_norm, ema_decay=ema_decay, channels_last=channels_last,
            modules={"image_tower": image_tower, "patch_tower": patch_tower},
        )
        self._heatmap_inputs: tuple[Tensor, Tensor, Tensor] | None = None

    image_tower: nn.Module
    patch_tower: nn.Module

    # -- hooks ---------------------------------------------------------------------------------
    def configure_models(self) -> None:
        hp = self.hparams
        hidden = HEAD_PRESETS[hp.head_preset] if hp.head_hidden is None else hp.head_hidden
        self.head = AutoresolutionHead(self.image_tower.embed_dim, self.patch_tower.embed_dim, list(hidden), 2)
        self.register_normalization(hp.mean, hp.std)

    def configure_metrics(self) -> MetricCollection:
        # docs/metrics.md: pretext_* keys, so a pretext score is never read as a classifier's
        if self.hparams.objective == "classification":
            return MetricCollection({"pretext_acc": BinaryAccuracy()})
        # "pretext_mae_centre_predictor": the error of always answering (0, 0), the mean (and
        # median) of the uniformly distributed centre targets: the chance level of the regression.
        return MetricCollection({"pretext_mae": MeanAbsoluteError(), "pretext_mae_centre_predictor": MeanMetric()})

    # -- pieces --------------------------------------------------------------------------------
    @property
    def grid_geometry(self) -> tuple[int, int, int]:
        """``(patch side P, grid stride J, grid side G)`` of the tiled predictions."""
        r, j = self.patch_tower.receptive_field()
        return r, j, self.patch_tower.grid_size(self.hparams.super_patch)

    def embed_image(self, lr: Tensor) -> Tensor:
        return self.image_tower(self.normalize(lr))

    def predict_grid(self, image_embedding: Tensor, super_patch: Tensor) -> Tensor:
        """Head output ``(B, 2, G, G)`` for image embeddings and HR super patches (in [0, 1])."""
        return self.head(image_embedding, self.patch_tower(self.normalize(super_patch))).float()

    def make_inputs(self, hr: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(lr, super_patch, oy, ox)``: LR = average-pooled HR (Fig. 1), super patch = random crop
        (photometrically jittered / grey when ``patch_jitter`` / ``patch_grey`` ask)."""
        b, _, h, w = hr.shape
        s = self.hparams.super_patch
        if s > min(h, w):
            raise ValueError(f"super_patch {s} exceeds the HR image size {h}x{w}")
        lr = downsample(hr, self.hparams.factor, "avg")
        oy, _ = random_offsets(b, h - s, generator)
        _, ox = random_offsets(b, w - s, generator)
        patch = crop_batch(hr, oy, ox, s)
        if self.hparams.patch_jitter > 0 or self.hparams.patch_grey:
            patch = jitter_patches(patch, self.hparams.patch_jitter, self.hparams.patch_grey, generator)
        return lr, patch, oy, ox

    def _step(self, batch: dict[str, Any], stage: str, generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
        hr = batch["hr"]
        lr, sp, oy, ox = self.make_inputs(hr, generator)
        emb = self.embed_image(lr)
        b = hr.shape[0]
        metrics = getattr(self, f"{stage}_metrics")
        if self.hparams.objective == "classification":
            patches = torch.cat([sp, shifted_negatives(sp)])
            logits = self.predict_grid(torch.cat([emb, emb]), patches)  # (2B, 2, G, G)
            g = logits.shape[-1]
            target = torch.cat([torch.ones(b), torch.zeros(b)]).to(hr.device).long()[:, None, None].expand(-1, g, g)
            loss = F.cross_entropy(logits, target)
            metrics["pretext_acc"].update(logits.detach().softmax(1)[:, 1], target)
        else:
            pred = self.predict_grid(emb, sp)
            p, j, g = self.grid_geometry
            target = centre_targets(oy, ox, tuple(hr.shape[-2:]), p, j, g).to(hr.device)
            loss = F.mse_loss(pred, target)
            metrics["pretext_mae"].update(pred.detach().reshape(-1), target.reshape(-1))
            metrics["pretext_mae_centre_predictor"].update(target.abs().mean(), weight=target.numel())
        if stage == "train":  # the objective; evaluation is scored by the pretext metrics only
            self.log("train/loss", loss, batch_size=b, prog_bar=True)
        self.log_dict(metrics, batch_size=b, on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss, lr, sp

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self._step(batch, "train", None)[0]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        # fixed crops per batch index: every validation epoch scores the same pretext problems
        gen = torch.Generator().manual_seed(10_000 + batch_idx)
        _, lr, sp = self._step(batch, "val", gen)
        if batch_idx == 0 and lr.shape[0] >= 2:
            self._heatmap_inputs = (lr[:1].detach(), sp[1:2].detach(), sp[:1].detach())

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test", torch.Generator().manual_seed(20_000 + batch_idx))

    def inference_step(self, batch: dict[str, Any]) -> Tensor:
        """The pretext prediction that ``test/macs_per_image`` counts: both towers and the head
        on the batch's LR image and its aligned super patch (the first test batch's crops)."""
        lr, super_patch, _, _ = self.make_inputs(batch["hr"], torch.Generator().manual_seed(20_000))
        return self.predict_grid(self.embed_image(lr), super_patch)

    # -- Fig. 2 heat map -----------------------------------------------------------------------
    @torch.no_grad()
    def heatmap(self, lr: Tensor, super_patch: Tensor) -> Tensor:
        """``(G, G)`` probabilities that each tiled patch of ``super_patch`` belongs to ``lr``
        (one image each, in [0, 1]); Fig. 2's binary heat map is ``heatmap > 0.5``."""
        if self.hparams.objective != "classification":
            raise RuntimeError("the belongs/does-not-belong heat map needs objective='classification'")
        logits = self.predict_grid(self.embed_image(lr), super_patch)
        return logits.softmax(1)[0, 1]

    def on_validation_epoch_end(self) -> None:
        every = self.hparams.heatmap_every_n_epochs
        if (
            self._heatmap_inputs is None
            or self.hparams.objective != "classification"
            or not every
            or self.trainer.sanity_checking
            or self.current_epoch % every
        ):
            return
        lr, other, own = self._heatmap_inputs
        neg, pos = self.heatmap(lr, other).cpu(), self.heatmap(lr, own).cpu()
        self.log("val/heatmap_neg_belongs", (neg > 0.5).float().mean(), batch_size=1)
        self.log("val/heatmap_pos_belongs", (pos > 0.5).float().mean(), batch_size=1)
        if self.trainer.is_global_zero and self.trainer.log_dir is not None:
            path = Path(self.trainer.log_dir) / "heatmaps" / f"epoch_{self.current_epoch:03d}.png"
            save_heatmap_figure(path, lr=lr[0].cpu(), other=other[0].cpu(), neg=neg, own=own[0].cpu(), pos=pos)
            self.log_image_files("val/heatmap", [path])


class AutoresolutionClassifier(PaperRecipeTask):
    """LR classifier: the autoresolution LR image tower + softmax layer with 50% dropout (Sec. 3.3).

    Args:
        image_tower: the LR image tower (same architecture as in the pretext checkpoint).
        pretrained: a pretext checkpoint (``.ckpt``) or weights file whose ``image_tower.*``
            entries initialise the tower; ``None`` = random initialisation (warned).
        head_only_steps: optimiser steps that train only the softmax layer with the tower frozen
            (paper: 10K); then all parameters are fine-tuned.
        head_init: ``"random"`` (PyTorch's default init of the softmax layer) or ``"probe"``:
            before the first step the softmax layer is set to the linear probe of the frozen tower
            (:func:`~lr_lightning.methods.autoresolution.probe.fit_linear_probe` on the training
            set's LR images, L2 weight from ``probe_weight_decays`` chosen on validation), i.e.
            the head-only phase solved to convergence; its accuracies are in :attr:`head_probe`
            and logged as ``probe/*``. Needs a data module with ``train_set`` / ``val_set``.
            Before the probe the tower's BatchNorm running statistics are recomputed on the
            training set (``recalibrate_bn``), so that the frozen features the head is fitted on are
            the ones fine-tuning (train-mode BatchNorm) starts from: a random tower's initial
            statistics (mean 0, variance 1) give eval-mode features 300x smaller than train-mode
            ones and correlated with them at 0.15 (issue 16 review), and a head fitted on those
            explodes at the first step.
        dropout: dropout before the softmax layer (paper: 50%).
        num_classes: classes of the softmax layer.
        input_key: ``"lr"`` (the data module's ``degradation`` makes it) or ``"hr"``.
        optim: Sec. 3.1's recipe at 0.01 (paper: 0.01 baseline, 0.003 after classification
            pretext, 0.001 after regression pretext). Parameter groups: ``image_tower`` and
            ``head`` (the softmax layer).
        (recipe arguments: see :class:`PaperRecipeTask`)
    """

    monitor = "val/acc"
    mode = "max"

    def __init__(
        self,
        *,
        image_tower: nn.Module,
        pretrained: str | None = None,
        head_only_steps: int = 10_000,
        head_init: Literal["random", "probe"] = "random",
        probe_weight_decays: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0),
        recalibrate_bn: bool = True,
        dropout: float = 0.5,
        num_classes: int = 10,
        input_key: Literal["lr", "hr"] = "lr",
        mean: tuple[float, float, float] = CIFAR10_MEAN,
        std: tuple[float, float, float] = CIFAR10_STD,
        clip_grad_norm: float | None = 10.0,
        ema_decay: float | None = 0.999,
        optim: OptimSpec = AUTORESOLUTION_TRANSFER_OPTIM,
        channels_last: bool = True,
    ) -> None:
        if not hasattr(image_tower, "embed_dim"):
            raise TypeError(f"image_tower ({type(image_tower).__name__}) lacks `embed_dim`; use lr_lightning.nn.LRImageTower")
        super().__init__(
            optim=optim, clip_grad_norm=clip_grad_norm, ema_decay=ema_decay, channels_last=channels_last,
            modules={"image_tower": image_tower},
        )
        self.head_probe: dict[str, float] = {}  # filled by on_train_start with head_init="probe"

    image_tower: nn.Module

    def configure_models(self) -> None:
        hp = self.hparams
        self.classifier = nn.Sequential(nn.Dropout(hp.dropout), nn.Linear(self.image_tower.embed_dim, hp.num_classes))
        self.register_normalization(hp.mean, hp.std)
        if hp.pretrained:
            load_state_dict_file(self.image_tower, hp.pretrained, prefix="image_tower.")
        else:
            msg = "AutoresolutionClassifier: pretrained is null, the image tower starts from random initialisation"
            if hp.head_only_steps > 0:
                msg += f" and stays frozen (random features) for the first {hp.head_only_steps} steps"
            warnings.warn(msg, stacklevel=2)

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"acc": MulticlassAccuracy(self.hparams.num_classes, average="micro")})

    @torch.no_grad()
    def embed(self, x: Tensor) -> Tensor:
        """The tower's embedding of images in [0, 1] (normalised here), without the softmax layer."""
        return self.image_tower(self.normalize(x))

    def _batches(self, dataset: Any, batch_size: int) -> Iterator[dict[str, Tensor]]:
        """``{"hr", "lr", "label"}`` batches of a data module's dataset in order, with the data
        module's degradation making ``lr`` as in training (no augmentation)."""
        degradation = getattr(self.trainer.datamodule, "degradation", None)
        for batch in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False):
            hr = batch["hr"].to(self.device)
            hr = hr.float().div_(255.0) if hr.dtype == torch.uint8 else hr.float()
            out = {"hr": hr, "label": batch["label"]}
            if self.hparams.input_key == "lr":
                out["lr"] = degradation(hr) if degradation is not None else batch_entry(batch, "lr", type(self).__name__)
            yield out

    def features(self, dataset: Any, batch_size: int = 512) -> tuple[Tensor, Tensor]:
        """Frozen-tower embeddings (eval mode) and labels of a data module's dataset."""
        was_training = self.image_tower.training
        self.image_tower.eval()
        try:
            return extract_features(self.embed, self._batches(dataset, batch_size), self.hparams.input_key, self.device)
        finally:
            self.image_tower.train(was_training)

    def recalibrate_batchnorm(self, dataset: Any, batch_size: int = 512) -> None:
        """Recompute the tower's BatchNorm running statistics over ``dataset`` (cumulative average,
        :func:`torch.optim.swa_utils.update_bn`)."""
        key = self.hparams.input_key
        torch.optim.swa_utils.update_bn((self.normalize(b[key]) for b in self._batches(dataset, batch_size)), self.image_tower)

    def on_train_start(self) -> None:
        """``head_init: probe``: fit the softmax layer on the frozen tower before the first step
        (not on a resumed run: its head comes from the checkpoint)."""
        if self.hparams.head_init != "probe" or self.global_step > 0:
            return
        dm = self.trainer.datamodule
        if dm is None or getattr(dm, "train_set", None) is None or getattr(dm, "val_set", None) is None:
            raise RuntimeError("head_init='probe' needs a data module whose train_set and val_set are set up")
        if self.hparams.recalibrate_bn:
            self.recalibrate_batchnorm(dm.train_set)
        linear, info = fit_linear_probe(self.features(dm.train_set), self.features(dm.val_set), self.hparams.num_classes,
                                        tuple(self.hparams.probe_weight_decays))
        self.classifier[1].load_state_dict({k: v.to(self.device) for k, v in linear.state_dict().items()})
        self.head_probe = info
        if self.logger is not None:
            self.logger.log_metrics({f"probe/{k}": v for k, v in info.items()}, step=0)

    def parameter_groups(self) -> dict[str, list[Tensor]]:
        """``image_tower`` and ``head``. All tower parameters are handed to the optimiser: the
        head-only phase freezes them by ``requires_grad`` (no gradient, so no update)."""
        return {"image_tower": list(self.image_tower.parameters()), "head": list(self.classifier.parameters())}

    @property
    def tower_frozen(self) -> bool:
        """True during the head-only phase (Sec. 3.3)."""
        return self.global_step < self.hparams.head_only_steps

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        frozen = self.tower_frozen
        for p in self.image_tower.parameters():
            p.requires_grad_(not frozen)
        # a frozen tower also keeps its batch-norm statistics
        self.image_tower.train(not frozen)

    def forward(self, x: Tensor) -> Tensor:
        x = self.normalize(x)
        return self.classifier(self.image_tower(x))

    def _input(self, batch: dict[str, Any]) -> Tensor:
        return batch_entry(batch, self.hparams.input_key, type(self).__name__)

    def inference_step(self, batch: dict[str, Any]) -> Tensor:
        """The test-time prediction: tower + softmax layer on the input image (logits)."""
        return self(self._input(batch))

    def _step(self, batch: dict[str, Any], stage: str) -> Tensor:
        logits = self(self._input(batch)).float()
        y = batch["label"]
        loss = F.cross_entropy(logits, y)
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(logits.detach(), y)
        # docs/metrics.md: train/loss is the objective, val|test/ce the prediction's cross-entropy
        key = "train/loss" if stage == "train" else f"{stage}/ce"
        self.log(key, loss, batch_size=len(y), prog_bar=stage != "test", sync_dist=stage != "train")
        self.log_dict(metrics, batch_size=len(y), on_step=False, on_epoch=True, prog_bar=stage == "val")
        return loss

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        self.log("train/tower_frozen", float(self.tower_frozen), batch_size=1)
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._step(batch, "test")
