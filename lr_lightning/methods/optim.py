"""Optimisation as data: one typed spec for the optimiser and its schedule.

Every task takes ``optim: OptimSpec`` (keyword-only) instead of a row of loose arguments, and
each method declares its paper's defaults once, as a module-level constant used as the
default of that argument (e.g. :data:`CLASSIFIER_OPTIM`). A config overrides only the fields it
names; the rest keep the method's defaults, because LightningCLI (jsonargparse) fills a
dataclass argument from its default instance::

    model:
      class_path: lr_lightning.methods.ImageClassifier
      init_args:
        optim: {learning_rate: 0.05}          # still SGD + cosine, weight decay 5e-4

Multi-network methods name their parameter groups with :meth:`BaseTask.parameter_groups`
(e.g. PatchDrop's ``policy`` and ``hr_classifier``); ``group_learning_rates`` gives a group its
own rate, the other groups use ``learning_rate``.

Naming rule of the project: ``lr`` (alone or as a prefix, ``lr_classifier``, ``batch["lr"]``)
always means *low resolution*; a learning rate is always spelled ``learning_rate``.

Pure functions of the spec (no Lightning): :func:`build_optimizer`, :func:`build_scheduler`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

import torch
from torch import nn

OptimizerName = Literal["adam", "adamw", "sgd", "rmsprop", "rmsprop_tf"]
SchedulerName = Literal["none", "cosine", "multistep", "step"]
SchedulerInterval = Literal["step", "epoch"]


@dataclass(frozen=True)
class OptimSpec:
    """Optimiser + learning-rate schedule of one task.

    Args:
        name: ``adam``, ``adamw``, ``sgd``, ``rmsprop`` (torch's: epsilon outside the root) or
            ``rmsprop_tf`` (TensorFlow's RMSprop, epsilon inside the root: ``timm.optim.RMSpropTF``,
            paper D Sec. 3.1).
        learning_rate: base rate of every parameter group not in ``group_learning_rates``.
        weight_decay: L2 penalty (decoupled for ``adamw``).
        momentum: SGD / RMSprop momentum.
        nesterov: Nesterov momentum for SGD (used only when ``momentum > 0``).
        betas: Adam / AdamW betas.
        eps: Adam / RMSprop epsilon (paper D's RMSprop uses 1.0).
        rmsprop_decay: RMSprop's squared-gradient decay (torch's ``alpha``).
        scheduler: ``none``; ``cosine`` (per step, to zero over the whole run); ``multistep``
            (multiply by ``gamma`` at the epochs in ``milestones``); ``step`` (multiply by ``gamma``
            every ``step_size`` epochs, staircase: paper D's 0.94 every 2 epochs).
        milestones: epochs (or steps, see ``schedule_unit``) of ``multistep``.
        gamma: factor of ``multistep`` / ``step``.
        step_size: epochs (or steps) between two ``step`` decays.
        schedule_unit: what ``step_size`` / ``milestones`` count: ``epoch`` (the papers' wording) or
            optimiser ``step``. Use ``step`` when runs over datasets of different sizes must share
            one schedule (e.g. transfer at 1 % of the labels: 2 epochs of 180 images at batch 32 are 10 steps).
        group_learning_rates: ``{group name: rate}`` for the groups named by the task's
            :meth:`~lr_lightning.methods.base.BaseTask.parameter_groups`; an unknown name is an error.
    """

    name: OptimizerName = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = True
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    rmsprop_decay: float = 0.9
    scheduler: SchedulerName = "none"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    step_size: int = 1
    schedule_unit: SchedulerInterval = "epoch"
    group_learning_rates: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if self.learning_rate < 0 or self.weight_decay < 0:
            raise ValueError(f"learning_rate and weight_decay must be >= 0, got {self.learning_rate}, {self.weight_decay}")
        if self.schedule_unit not in ("epoch", "step"):
            raise ValueError(f"schedule_unit must be 'epoch' or 'step', got {self.schedule_unit!r}")
        if self.step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {self.step_size}")
        # normalise containers that arrive as lists from YAML (the dataclass is frozen)
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "milestones", tuple(self.milestones or ()))

    @classmethod
    def coerce(cls, spec: OptimSpec | Mapping[str, Any] | None, default: OptimSpec | None = None) -> OptimSpec:
        """An :class:`OptimSpec` from a spec, a plain dict (as saved in a checkpoint's
        hyper-parameters) or ``None`` (``default``, else the dataclass defaults)."""
        if spec is None:
            return default or cls()
        if isinstance(spec, cls):
            return spec
        if isinstance(spec, Mapping):
            known = {f.name for f in fields(cls)}
            unknown = sorted(set(spec) - known)
            if unknown:
                raise ValueError(f"unknown OptimSpec fields {unknown}; valid: {sorted(known)}")
            return cls(**dict(spec))
        raise TypeError(f"optim must be an OptimSpec or a dict, got {type(spec).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (tuples, floats, dicts): what the checkpoint's hyper-parameters store,
        so checkpoints load with ``torch.load(weights_only=True)``."""
        return asdict(self)

    def with_learning_rate(self, learning_rate: float) -> OptimSpec:
        """A copy with another base rate (benchmarks' learning-rate sweeps)."""
        return replace(self, learning_rate=learning_rate)


def param_group_list(spec: OptimSpec, groups: Mapping[str, Iterable[nn.Parameter]]) -> list[dict[str, Any]]:
    """``torch.optim`` parameter groups ``[{"name", "params", "lr"}]`` for named groups.

    The groups are taken as given (the task decides which parameters train: a phase that
    freezes a network by ``requires_grad`` still hands its parameters to the optimiser, which
    skips parameters without a gradient); empty groups are dropped. ``group_learning_rates``
    may only name groups the task defines."""
    wanted = dict(spec.group_learning_rates or {})
    unknown = sorted(set(wanted) - set(groups))
    if unknown:
        raise ValueError(f"optim.group_learning_rates names {unknown}, but this task's parameter groups are {sorted(groups)}")
    out = []
    for name, params in groups.items():
        params = list(params)
        if params:
            out.append({"name": name, "params": params, "lr": float(wanted.get(name, spec.learning_rate))})
    if not out:
        raise ValueError("no trainable parameters in any parameter group")
    return out


def build_optimizer(spec: OptimSpec, groups: Mapping[str, Iterable[nn.Parameter]]) -> torch.optim.Optimizer:
    """The optimiser named by ``spec`` over the task's named parameter groups."""
    params = param_group_list(spec, groups)
    lr = spec.learning_rate
    if spec.name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
            nesterov=spec.nesterov and spec.momentum > 0,
        )
    if spec.name in ("adam", "adamw"):
        cls = torch.optim.AdamW if spec.name == "adamw" else torch.optim.Adam
        return cls(params, lr=lr, betas=spec.betas, eps=spec.eps, weight_decay=spec.weight_decay)
    if spec.name == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=lr, alpha=spec.rmsprop_decay, eps=spec.eps, momentum=spec.momentum, weight_decay=spec.weight_decay
        )
    from timm.optim import RMSpropTF

    return RMSpropTF(params, lr=lr, alpha=spec.rmsprop_decay, eps=spec.eps, momentum=spec.momentum, weight_decay=spec.weight_decay)


def build_scheduler(
    spec: OptimSpec, optimizer: torch.optim.Optimizer, total_steps: int
) -> tuple[torch.optim.lr_scheduler.LRScheduler, SchedulerInterval] | None:
    """The schedule of ``spec`` and whether it steps per optimiser step or per epoch (``None``
    for ``scheduler="none"``). ``total_steps`` is the length of a cosine schedule."""
    if spec.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, int(total_steps))), "step"
    if spec.scheduler == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(spec.milestones), gamma=spec.gamma), spec.schedule_unit
    if spec.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=spec.step_size, gamma=spec.gamma), spec.schedule_unit
    return None


# -- the methods' paper defaults, declared once ------------------------------------------------
#: Supervised CIFAR classifiers (HR-CNN / LR-CNN): SGD 0.1, Nesterov 0.9, wd 5e-4, cosine.
CLASSIFIER_OPTIM = OptimSpec(name="sgd", learning_rate=0.1, weight_decay=5e-4, scheduler="cosine")
#: PSNR-oriented SR pre-training (BasicSR / ESRGAN): Adam 2e-4, betas (0.9, 0.99).
SR_OPTIM = OptimSpec(name="adam", learning_rate=2e-4, betas=(0.9, 0.99), gamma=0.5)
#: DarioNet fine-tuning (paper B): Adam 1e-4, betas (0.9, 0.99).
DARIONET_OPTIM = OptimSpec(name="adam", learning_rate=1e-4, betas=(0.9, 0.99), gamma=0.5)
#: PatchDrop (paper C Sec. 5.1): Adam 1e-4 for the policy and the HR classifier.
PATCHDROP_OPTIM = OptimSpec(name="adam", learning_rate=1e-4)
#: MAML outer optimiser (paper A Sec. 4.5): Adam 1e-4.
MAML_OPTIM = OptimSpec(name="adam", learning_rate=1e-4)
#: Paper D Sec. 3.1: TF RMSprop (decay 0.9, eps 1.0, momentum 0.9), wd 4e-5, x0.94 every 2 epochs;
#: 0.003 for the classification pretext and for fine-tuning after it.
AUTORESOLUTION_OPTIM = OptimSpec(
    name="rmsprop_tf", learning_rate=0.003, weight_decay=4e-5, momentum=0.9, eps=1.0, rmsprop_decay=0.9,
    scheduler="step", step_size=2, gamma=0.94,
)
#: Paper D Sec. 3.3: the same recipe at 0.01 for the transfer classifier (random-init baseline).
AUTORESOLUTION_TRANSFER_OPTIM = AUTORESOLUTION_OPTIM.with_learning_rate(0.01)
