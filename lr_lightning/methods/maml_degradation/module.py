"""Paper A: MAML where a task is a way of degrading the image (downsampling x quantisation).

Meta-training (paper A Sec. 3, Fig. 1, Sec. 4.2): every step draws ``M`` tasks uniformly from a
:class:`~lr_lightning.degrade.DegradationSpace` ({max, avg} pooling x DoReFa {2, 3, 4, 8, 16, 32}
bits by default) with an explicit ``torch.Generator``; each task gets a labelled support and query
mini-batch from the training split, both degraded by that task. The base CNN (Conv4, Table 1
right) is adapted with ``inner_steps`` SGD steps at ``inner_learning_rate`` on the support batch (MAML
Eq. 1), the query loss after adaptation is averaged over the ``M`` tasks and one Adam step is
taken on it (MAML Eq. 3; Adam 1e-4 in Sec. 4.5). ``algorithm="joint"`` is the ablation without
meta-learning: the same degraded task batches, one ordinary minibatch step on all of them.

Validation (Sec. 4.5: bicubic input, batch 16): each batch is split in two halves, the model is
adapted on the first (support) and the accuracy / cross-entropy on the second (query) are logged
before (``val/acc_before``, ``val/ce_before``) and after (``val/acc``, ``val/ce``) adaptation.

Test = the meta-test protocol (:mod:`.adaptation`) for ``val_degradation`` and each of
``test_targets``: ``adapt_k`` training images, ``adapt_steps`` SGD steps at
``adapt_learning_rate``, accuracy on the whole test set before / after adaptation
(``test/acc_before``, ``test/acc`` for ``val_degradation``; ``test/acc_before/<target>``,
``test/acc/<target>`` per target). Keys as in docs/metrics.md.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lr_lightning.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from lr_lightning.degrade import Degradation, DegradationSpace, DownsampleMode
from lr_lightning.meta import (
    BNMode,
    batch_norm_uses_batch_stats,
    functional_forward,
    inner_loop,
    meta_parameters,
)
from lr_lightning.methods.base import BaseTask
from lr_lightning.methods.maml_degradation.adaptation import adapt_classifier, sample_support
from lr_lightning.methods.optim import MAML_OPTIM, OptimSpec


def split_tasks(
    hr: Tensor, y: Tensor, tasks: int, mode: Literal["shared", "disjoint"] = "disjoint"
) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Split one data batch into ``tasks`` (support_hr, support_y, query_hr, query_y) tuples.

    ``"shared"``: the first half of the batch is every task's support, the second half every
    task's query (each task degrades them its own way); a batch of 64 gives paper A's 32 + 32
    (its Fig. 4 counts 1184 meta-steps per Food-101 epoch = 75,750 / 64 images).
    ``"disjoint"``: a batch of ``B = tasks * (s + q)`` images gives every task its own
    ``B / (2 tasks)`` support and query images. Batches too small for that (fewer than
    ``2 * tasks`` images) fall back to ``"shared"`` with a warning.
    """
    b = hr.shape[0]
    if b < 2:
        raise ValueError(f"a meta-batch needs at least 2 images (support + query), got {b}")
    if mode == "shared":
        h = b // 2
        return [(hr[:h], y[:h], hr[h : 2 * h], y[h : 2 * h])] * tasks
    if b < 2 * tasks:
        warnings.warn(
            f"batch of {b} images < 2 x {tasks} tasks: all tasks share the same support/query images; "
            f"use batch_size = tasks_per_step * (support + query)",
            stacklevel=2,
        )
        h = b // 2
        return [(hr[:h], y[:h], hr[h : 2 * h], y[h : 2 * h])] * tasks
    per = b // tasks
    half = per // 2
    out = []
    for t in range(tasks):
        s = slice(t * per, t * per + half)
        q = slice(t * per + half, t * per + 2 * half)
        out.append((hr[s], y[s], hr[q], y[q]))
    return out


class MAMLDegradationClassifier(BaseTask):
    """MAML over degradation tasks (paper A) or its joint-training ablation.

    Args:
        net: the base classifier on LR images (``lr_lightning.nn.Conv4`` with ``in_size`` = LR
            size); normalised inputs, logits out.
        num_classes: number of classes.
        algorithm: ``maml`` (meta-learning) or ``joint`` (same tasks, ordinary training).
        modes / bits / factor: the task space (:class:`DegradationSpace`, paper A Sec. 4.2).
        tasks: explicit task names instead (e.g. ``bicubic3+up16``, ``blur2(s1.2)+n4+jpeg70``).
        space_preset: a named task space instead (``paper``: paper A's 12 tasks with the
            duplicates collapsed, 8 tasks; ``paper_full``: all 12; ``rich``: scales x2-x4, blur,
            noise, JPEG, gamma; see :data:`lr_lightning.degrade.PRESETS`).
        input_size: HR image size; every task, ``val_degradation`` and test target must give the
            network one input size from it.
        tasks_per_step: ``M`` meta-tasks per step (4 in the paper).
        task_batches: ``shared`` (all tasks degrade the same support/query images, the paper's
            count of 64 images per meta-step) or ``disjoint`` (own images per task), see
            :func:`split_tasks`.
        inner_steps: SGD steps on the support batch (5 in the paper).
        inner_learning_rate: inner SGD rate (0.01 in the paper).
        first_order: FOMAML instead of second-order MAML.
        inner_params: what the inner loop adapts: ``all`` (MAML), ``head`` (ANIL: the last linear
            layer) or ``bn`` (the BatchNorm affine parameters only).
        learn_inner_lr: Meta-SGD / MAML++ per-layer, per-step inner rates (initialised at
            ``inner_learning_rate``, meta-learned by the outer optimiser); the meta-test protocol of
            :meth:`adaptation_rates` then uses them.
        bn: BatchNorm handling in the inner loop and at evaluation (see :mod:`lr_lightning.meta`):
            ``transductive`` (batch statistics, reference MAML) or ``running``.
        task_seed: seed of the task sampler (offset by the DDP rank).
        val_degradation: degradation of the validation input (paper: bicubic).
        test_targets: unseen degradations of the meta-test protocol (names, e.g. ``bilinear2``).
        adapt_k / adapt_steps / adapt_learning_rate / adapt_seed: the protocol's k, n, rate and support seed.
        mean / std: input normalisation.
        optim: the outer (meta) optimiser over the base network (Adam 1e-4 in paper A, Sec. 4.5).
    """

    monitor = "val/acc"
    mode = "max"
    automatic_optimization = False

    def __init__(
        self,
        *,
        net: nn.Module,
        num_classes: int = 10,
        algorithm: Literal["maml", "joint"] = "maml",
        modes: list[DownsampleMode] | None = None,
        bits: list[int] | None = None,
        factor: int = 2,
        tasks: list[str] | None = None,
        space_preset: str | None = None,
        input_size: int = 32,
        tasks_per_step: int = 4,
        task_batches: Literal["shared", "disjoint"] = "shared",
        inner_steps: int = 5,
        inner_learning_rate: float = 0.01,
        first_order: bool = False,
        inner_params: Literal["all", "head", "bn"] = "all",
        learn_inner_lr: bool = False,
        bn: BNMode = "transductive",
        task_seed: int = 0,
        val_degradation: str = "bicubic2",
        test_targets: list[str] | None = None,
        adapt_k: int = 32,
        adapt_steps: int = 5,
        adapt_learning_rate: float = 0.01,
        adapt_seed: int = 0,
        mean: tuple[float, float, float] = CIFAR10_MEAN,
        std: tuple[float, float, float] = CIFAR10_STD,
        optim: OptimSpec = MAML_OPTIM,
        channels_last: bool = False,
    ) -> None:
        if tasks_per_step < 1:
            raise ValueError(f"tasks_per_step must be >= 1, got {tasks_per_step}")
        if tasks is not None and space_preset is not None:
            raise ValueError("give tasks or space_preset, not both")
        if tasks is not None:
            self.space = DegradationSpace(tasks=tasks, input_size=input_size)
        elif space_preset is not None:
            self.space = DegradationSpace.preset(space_preset, input_size=input_size)
        else:
            self.space = DegradationSpace(modes or ("max", "avg"), bits or (2, 3, 4, 8, 16, 32), factor)
        self.val_deg = Degradation.from_name(val_degradation)
        self.targets = [Degradation.from_name(t) for t in (test_targets or [])]
        size = self.space[0].output_size((input_size, input_size))
        for d in [self.val_deg, *self.targets]:
            if d.output_size((input_size, input_size)) != size:
                raise ValueError(
                    f"degradation {d.name!r} gives {d.output_size((input_size, input_size))} inputs from "
                    f"{input_size}x{input_size} images, the task space gives {size}"
                )
        super().__init__(optim=optim, channels_last=channels_last, modules={"net": net})
        self.task_generator = torch.Generator().manual_seed(task_seed)
        self.inner_lrs = nn.ParameterDict(
            {
                n.replace(".", "__"): nn.Parameter(torch.full((inner_steps,), float(inner_learning_rate)))
                for n in self.adapted_names()
            }
            if learn_inner_lr
            else {}
        )

    net: nn.Module

    def adapted_names(self, prefix: str = "") -> list[str]:
        """Names (``prefix`` + name in ``net``) of the parameters the inner loop adapts."""
        which = self.hparams.inner_params
        if which == "all":
            names = [n for n, p in self.net.named_parameters() if p.requires_grad]
        elif which == "head":
            linears = [(n, m) for n, m in self.net.named_modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise ValueError("inner_params='head' needs a network with an nn.Linear head")
            mod_name, head = linears[-1]
            names = [f"{mod_name}.{n}" for n, _ in head.named_parameters()]
        elif which == "bn":
            names = [
                f"{mn}.{n}" for mn, m in self.net.named_modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) for n, _ in m.named_parameters(recurse=False)
            ]
            if not names:
                raise ValueError("inner_params='bn' needs a network with affine BatchNorm layers")
        else:
            raise ValueError(f"unknown inner_params {which!r}; valid choices are: 'all', 'head', 'bn'")
        return [prefix + n for n in names]

    def adaptation_rates(self, prefix: str = "", default: float | None = None) -> float | dict[str, Tensor]:
        """The inner rates: the learned per-step ones (``learn_inner_lr``, detached, keyed by
        ``prefix`` + parameter name) or the scalar ``default`` (``inner_learning_rate`` if None)."""
        if not self.hparams.learn_inner_lr:
            return float(self.hparams.inner_learning_rate if default is None else default)
        return {prefix + n: v.detach() for n, v in self._learnt_rates().items()}

    def _learnt_rates(self) -> dict[str, Tensor]:
        """``inner_lrs`` keyed by parameter name (``ParameterDict`` keys cannot hold dots)."""
        return {k.replace("__", "."): v for k, v in self.inner_lrs.items()}

    def configure_models(self) -> None:
        self.register_normalization(self.hparams.mean, self.hparams.std)

    def configure_metrics(self) -> MetricCollection:
        n = self.hparams.num_classes
        self.target_metrics = nn.ModuleDict(
            {
                f"{when}_{i}": MulticlassAccuracy(n, average="micro")
                for i in range(len(self.targets))
                for when in ("before", "after")
            }
        )
        self.test_acc_before = MulticlassAccuracy(n, average="micro")
        return MetricCollection({"acc": MulticlassAccuracy(n, average="micro")})

    # -- model ---------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """Logits for LR images in [0, 1] with the current (meta-learned) weights."""
        return self.net(self.normalize(x))

    def _loss_fn(self, forward: Any, batch: tuple[Tensor, Tensor]) -> Tensor:
        return F.cross_entropy(forward(self.normalize(batch[0])), batch[1])

    # -- meta-training -------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # Different tasks on every DDP rank (the data differ too); reproducible from task_seed.
        if self.global_rank:
            self.task_generator.manual_seed(self.hparams.task_seed + 1000003 * self.global_rank)

    def meta_loss(self, hr: Tensor, y: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Mean query loss after adaptation over ``tasks_per_step`` sampled tasks (MAML Eq. 3),
        or the joint-training loss; plus the terms to log."""
        hp = self.hparams
        tasks = self.space.sample(hp.tasks_per_step, self.task_generator)
        groups = split_tasks(hr, y, hp.tasks_per_step, hp.task_batches)
        if hp.algorithm == "joint":
            gen = self.task_generator
            x = torch.cat([deg(torch.cat([s, q]), gen) for deg, (s, _, q, _) in zip(tasks, groups, strict=True)])
            t = torch.cat([torch.cat([sy, qy]) for (_, sy, _, qy) in groups])
            logits = self(x)
            loss = F.cross_entropy(logits, t)
            return loss, {"acc": (logits.argmax(-1) == t).float().mean()}
        params = meta_parameters(self.net)
        buffers = dict(self.net.named_buffers())
        rates = self._learnt_rates() if hp.learn_inner_lr else hp.inner_learning_rate
        adapt = None if hp.inner_params == "all" else set(self.adapted_names())
        gen = self.task_generator
        query_losses, support_first, support_last, accs = [], [], [], []
        for deg, (s, sy, q, qy) in zip(tasks, groups, strict=True):
            res = inner_loop(
                self.net, params, self._loss_fn, (deg(s, gen), sy), hp.inner_steps, rates,
                first_order=hp.first_order, buffers=buffers, bn=hp.bn, adapt=adapt,
            )
            logits = functional_forward(self.net, res.params, res.buffers)(self.normalize(deg(q, gen)))
            query_losses.append(F.cross_entropy(logits, qy))
            accs.append((logits.argmax(-1) == qy).float().mean())
            if res.losses:
                support_first.append(res.losses[0])
                support_last.append(res.losses[-1])
        loss = torch.stack(query_losses).mean()
        logs = {"acc": torch.stack(accs).mean()}
        if support_first:
            logs["support_loss_first"] = torch.stack(support_first).mean()
            logs["support_loss_last"] = torch.stack(support_last).mean()
        return loss, logs

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        opt = self.optimizers()
        opt.zero_grad()
        loss, logs = self.meta_loss(batch["hr"], batch["label"])
        bs = batch["hr"].shape[0]
        # the same keys for MAML and joint training (docs/metrics.md): train/loss is the objective
        # (mean query loss after adaptation, or the joint batch loss), train/acc its accuracy;
        # logged before the backward so a non-finite loss is reported with its terms
        self.log("train/loss", loss.detach(), batch_size=bs, prog_bar=True)
        for k, v in logs.items():
            self.log(f"train/{k}", v.detach(), batch_size=bs)
        self.manual_backward(loss)  # under DDP the meta-gradients are averaged across ranks
        opt.step()
        return loss.detach()

    # -- validation: adapt on half the batch, query the other half -------------------------------
    def _check_mixed(self, y: Tensor, stage: str) -> None:
        """Warn once when an evaluation batch holds a single class (class-ordered loader): then
        transductive BatchNorm and the support/query split of validation are meaningless."""
        if y.shape[0] >= 8 and int(y.unique().numel()) == 1 and not getattr(self, f"_warned_{stage}", False):
            setattr(self, f"_warned_{stage}", True)
            warnings.warn(
                f"a {stage} batch holds a single class (class-ordered {stage} set?): support/query adaptation "
                f"and transductive BatchNorm need class-mixed batches, so these {stage} numbers are meaningless; "
                f"shuffle the {stage} set once with a fixed seed",
                stacklevel=2,
            )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        hr, y = batch["hr"], batch["label"]
        self._check_mixed(y, "validation")
        with torch.inference_mode(False), torch.enable_grad():
            hr, y = hr.clone(), y.clone()  # usable by autograd even under inference mode
            h = max(1, hr.shape[0] // 2)
            s, sy, q, qy = hr[:h], y[:h], hr[h:], y[h:]
            if q.shape[0] == 0:
                q, qy = s, sy
            xs, xq = self.val_deg(s), self.val_deg(q)
            res = adapt_classifier(
                self, xs, sy, self.hparams.inner_steps, self.adaptation_rates("net."), self.hparams.bn,
                adapt=self.adapted_names("net."),
            )
            with torch.no_grad(), batch_norm_uses_batch_stats(self, enabled=self.hparams.bn == "transductive"):
                before = self._forward_with(None, None, xq)
                after = self._forward_with(res.params, res.buffers, xq)
        bs = qy.shape[0]
        self.log("val/ce_before", F.cross_entropy(before, qy), batch_size=bs, sync_dist=True)
        self.log("val/acc_before", (before.argmax(-1) == qy).float().mean(), batch_size=bs, sync_dist=True)
        self.log("val/ce", F.cross_entropy(after, qy), batch_size=bs, prog_bar=True, sync_dist=True)
        self.val_metrics.update(after, qy)
        self.log_dict(self.val_metrics, batch_size=bs, prog_bar=True, on_step=False, on_epoch=True)

    def _forward_with(self, params: dict[str, Tensor] | None, buffers: dict[str, Tensor] | None, x: Tensor) -> Tensor:
        """Forward with ``params`` on a copy of the buffers (never touches the module's own)."""
        bufs = {n: b.clone() for n, b in (buffers or dict(self.named_buffers())).items()}
        return functional_forward(self, params or {}, bufs)(x)

    # -- test: the meta-test protocol per unseen target ------------------------------------------
    def on_test_epoch_start(self) -> None:
        """Adapt once per degradation (``val_degradation`` first, then every test target) on
        ``adapt_k`` training images: the meta-test protocol of :mod:`.adaptation`."""
        dm = self.trainer.datamodule
        if getattr(dm, "train_set", None) is None:
            dm.setup("fit")  # the support examples come from the training split only
        hp = self.hparams
        with torch.inference_mode(False), torch.enable_grad():
            hr, y = sample_support(dm.train_set, hp.adapt_k, torch.Generator().manual_seed(hp.adapt_seed))
            hr, y = hr.to(self.device), y.to(self.device)
            self._adapted = [
                adapt_classifier(
                    self, deg(hr, torch.Generator().manual_seed(hp.adapt_seed)), y, hp.adapt_steps,
                    self.adaptation_rates("net.", hp.adapt_learning_rate), hp.bn, adapt=self.adapted_names("net."),
                )
                for deg in (self.val_deg, *self.targets)
            ]

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        """``test/acc`` (``test/ce``): the final prediction on ``val_degradation`` inputs after
        adaptation; ``test/acc/<target>`` the same per unseen target; ``*_before`` unadapted."""
        hr, y = batch["hr"], batch["label"]
        bs = y.shape[0]
        eval_bn = self.hparams.bn == "transductive"
        if eval_bn:
            self._check_mixed(y, "test")
        with batch_norm_uses_batch_stats(self, enabled=eval_bn):
            res = self._adapted[0]
            x = self.val_deg(hr)
            logits = self._forward_with(res.params, res.buffers, x)
            self.test_metrics.update(logits, y)
            self.log_dict(self.test_metrics, batch_size=bs, on_step=False, on_epoch=True)
            self.log("test/ce", F.cross_entropy(logits, y), batch_size=bs, sync_dist=True)
            self.test_acc_before.update(self._forward_with(None, None, x), y)
            self.log("test/acc_before", self.test_acc_before, batch_size=bs, on_step=False, on_epoch=True)
            for i, (deg, res) in enumerate(zip(self.targets, self._adapted[1:], strict=True)):
                x = deg(hr)
                for when, params, bufs in (("before", None, None), ("after", res.params, res.buffers)):
                    metric = self.target_metrics[f"{when}_{i}"]
                    metric.update(self._forward_with(params, bufs, x), y)
                    key = f"test/acc/{deg.name}" if when == "after" else f"test/acc_before/{deg.name}"
                    self.log(key, metric, batch_size=bs, on_step=False, on_epoch=True)

    def export_networks(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``classifier``: the meta-learned LR classifier (before any adaptation), LR image in
        [0, 1] -> logits."""
        from lr_lightning.export import ExportNet, Normalized

        lr = self.val_deg(batch["hr"]).float()
        return {"classifier": ExportNet(Normalized(self.net, self.mean, self.std), (lr,), ["image"], ["logits"])}

    def inference_step(self, batch: dict[str, Any]) -> Tensor:
        """Test-time prediction: the base network on the degraded input (the adaptation steps
        before it are not counted)."""
        return self(self.val_deg(batch["hr"]))

    def hr_pixel_fraction(self, batch: dict[str, Any]) -> float:
        """The classifier sees only the degraded LR image."""
        return 0.0

    # -- checkpointing of the task sampler -------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["task_generator_state"] = self.task_generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "task_generator_state" in checkpoint:
            self.task_generator.set_state(checkpoint["task_generator_state"])
