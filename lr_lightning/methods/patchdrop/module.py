"""PatchDrop (paper C): a policy on the LR image decides which HR patches to acquire.

One task covers the three training stages of Alg. 1 and every patch-dropping baseline, so they
all share the masking, the classifiers, the metrics and the figures:

* ``stage="pt"``: policy pre-training with the HR classifier frozen; the reward uses the HR
  stream only (Sec. 4.2, "Pre-training the Policy Network").
* ``stage="ft1"``: the policy and the HR classifier are fine-tuned jointly (HR stream only).
* ``stage="ft2"``: as Ft-1 with the frozen LR classifier added through Eq. 7.

``policy_kind`` selects who chooses the patches: ``learned`` (REINFORCE, Eq. 5-11), the fixed
priority lists ``fixed_h`` / ``fixed_v``, ``stochastic`` (centre-distance survival),
``saliency`` (STN-style saliency net, top-S patches; trained at Pt through a soft mask, see
:meth:`PatchDropModel.saliency_step`), ``full`` (S = P, the HR-CNN) and ``none`` (S = 0).
Baselines at Ft-1/Ft-2 fine-tune the HR classifier on their own masks, as in Tables 1-2.

The maths (policy, masks, fusion, the REINFORCE and saliency objectives) is the plain
``nn.Module`` :class:`~lr_lightning.methods.patchdrop.model.PatchDropModel` in ``self.model``;
this task wires it: stages, freezing, checkpoints, optimiser groups, logging and figures.

Stages are separate configs chained by checkpoints: ``hr_checkpoint`` / ``lr_checkpoint`` are
the classifier pre-training outputs (an :class:`~lr_lightning.methods.ImageClassifier`
checkpoint, prefix ``net.``, or a plain state dict) and ``init_checkpoint`` is the checkpoint of
the previous PatchDrop stage (its ``model.policy.*`` and ``model.hr_classifier.*`` weights;
checkpoints written before the model existed, with ``policy.*`` / ``hr_classifier.*`` keys,
load too).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import MetricCollection
from torchmetrics.aggregation import CatMetric
from torchmetrics.classification import MulticlassAccuracy

from lr_lightning.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from lr_lightning.degrade.resize import UpsampleMode
from lr_lightning.methods.base import BaseTask, batch_entry
from lr_lightning.methods.optim import PATCHDROP_OPTIM, OptimSpec
from lr_lightning.methods.patchdrop import rl
from lr_lightning.methods.patchdrop.figures import save_policy_figure, save_statistics_figure
from lr_lightning.methods.patchdrop.model import (
    MODEL_PREFIX,
    ClassifierMasks,
    PatchDropModel,
    PolicyKind,
    canonical_state,
    policy_statistics,
    read_checkpoint_state,
)
from lr_lightning.nn.weights import load_module_weights

Stage = Literal["pt", "ft1", "ft2"]


class PatchDrop(BaseTask):
    """PatchDrop and its baselines over a ``grid x grid`` patch grid (default 4 x 4, P = 16).

    Args:
        hr_classifier: HR stream ``f_cl^h`` (paper: ResNet32), sees the masked HR image. A
            network with ``patch_based = True`` (``lr_lightning.nn.PatchBagNet``) is given the
            image and the actions instead and only computes the kept patches (Sec. 6).
        policy: policy network ``f_p`` on the LR image with ``P`` outputs (paper: ResNet8); a
            sigmoid turns them into ``s_p`` (Eq. 6). Also the saliency net of ``saliency``.
            Not needed by the fixed / stochastic / full / none baselines.
        lr_classifier: LR stream ``f_cl^l`` (Ft-2 only), frozen; sees the LR image upsampled to
            the HR size with ``lr_upsample``. Initialised from ``lr_checkpoint`` (or, if that is
            null, from the HR classifier's weights, as the paper initialises it).
        stage: ``pt``, ``ft1`` or ``ft2`` (Alg. 1).
        policy_kind: who picks the patches (see the module docstring).
        grid: patches per side.
        num_kept: S for the fixed / saliency baselines (an integer) and the expected S of the
            stochastic baseline; ignored by ``learned``, ``full`` and ``none``.
        sigma: penalty of a wrong prediction, ``R = -sigma`` (Sec. 5.1; the paper's CIFAR runs
            use a wrong-answer reward of -0.5 at Pt and -5 at Ft, i.e. ``sigma`` 0.5 and 5).
        alpha_start / alpha_end: Eq. 11 exploration bound. Default constant 0.8 (the paper's CIFAR
            text: "alpha is tuned to 0.8"; the reference code keeps it fixed). A schedule (paper
            Sec. 5.1: 0.7 -> 0.95) runs linearly over ``alpha_steps`` policy updates counted
            across the chained stages (``model.policy_updates`` travels in the checkpoints), so it
            continues from Pt into Ft-1 / Ft-2; ``alpha_restart: true`` instead runs it over this
            stage's own steps (restarting at each stage).
        alpha_steps: length of the alpha schedule in policy updates over all stages.
        alpha_restart: schedule over this stage only (see above).
        entropy_weight: exploration bonus ``- w * H`` added to the policy loss, ``H`` the Bernoulli
            entropy of ``s`` averaged over images and patches (so relative to Eq. 9, which sums
            over the P patches, the weight acts as ``w / P`` per patch); not in the paper; 0 = off.
        sample_seed: ``None`` (default): the policy's Bernoulli actions are drawn from torch's global
            RNG (restored on resume by the project's RNG-state callback). An integer: the ``t``-th
            policy update (counted over chained stages) draws its uniforms from a generator
            seeded with ``(sample_seed, t)`` for the *global*
            batch (``world_size x B`` rows) and rank ``r`` of ``W`` takes rows ``r, r + W, ...``:
            the rows the project's distributed sampler gives it. Then ``W`` DDP processes of batch
            ``B`` draw exactly the actions of one process of batch ``W B`` (DDP equivalence of the
            REINFORCE step, with networks that do not normalise over the batch: ``norm: group``)
            and a resumed run repeats them without any RNG state.
        logit_bound: smooth clipping ``b tanh(z / b)`` of the policy's logits (not in the paper;
            keeps ``s`` in ``[sigmoid(-b), sigmoid(b)]``; the raw logit's gradient decays only
            once it is several bounds large, see :func:`rl.soft_bound`); null = off.
        classifier_masks: the masks the HR classifier's cross-entropy uses at Ft-1 / Ft-2:
            ``sampled`` (the paper: the policy's exploratory samples), ``greedy`` (the test-time
            masks, as a fixed-mask baseline is fine-tuned on its own test masks) or ``both``
            (mean of the two); not in the paper, see :meth:`PatchDropModel.reinforce_step`.
        policy_samples: actions sampled per image at each REINFORCE step (K), each against the
            image's greedy baseline; the policy loss is their mean (K times less sampling
            variance of Eq. 9's gradient for K sampled classifier passes). 1 = the paper.
        fusion: Eq. 7 (``paper``) or the reference code's ``logit_sum``.
        fill: pixel value in [0, 1] of dropped patches; ``None`` = zero in normalised space
            (the reference behaviour, i.e. the dataset mean colour).
        lr_upsample: how the LR stream brings the LR image to the HR size.
        hr_checkpoint / lr_checkpoint: pre-trained classifier weights (prefix ``net.`` is used
            when present, so an ImageClassifier checkpoint works as is).
        init_checkpoint: a previous PatchDrop stage's checkpoint (policy and HR classifier).
        optim: optimiser over the parameter groups ``policy`` and ``hr_classifier`` (Ft-1 /
            Ft-2); paper: Adam 1e-4 for both. Give the classifier its own rate with
            ``group_learning_rates: {hr_classifier: ...}``.
        figure_images: test images drawn in the policy figure (Fig. 4/6); 0 disables it.
        saliency_temperature: softmax temperature of the soft mask used to train ``saliency``.
    """

    monitor = "val/reward"
    mode = "max"
    network_args = ("hr_classifier", "policy", "lr_classifier")

    model: PatchDropModel

    def __init__(
        self,
        *,
        hr_classifier: nn.Module,
        policy: nn.Module | None = None,
        lr_classifier: nn.Module | None = None,
        stage: Stage = "pt",
        policy_kind: PolicyKind = "learned",
        grid: int = 4,
        num_kept: float | None = None,
        sigma: float = 0.5,
        alpha_start: float = 0.8,
        alpha_end: float = 0.8,
        alpha_steps: int | None = None,
        alpha_restart: bool = False,
        entropy_weight: float = 0.0,
        sample_seed: int | None = None,
        logit_bound: float | None = None,
        classifier_masks: ClassifierMasks = "sampled",
        policy_samples: int = 1,
        fusion: rl.FusionMode = "paper",
        fill: float | None = None,
        lr_upsample: UpsampleMode = "bilinear",
        num_classes: int = 10,
        mean: tuple[float, float, float] = CIFAR10_MEAN,
        std: tuple[float, float, float] = CIFAR10_STD,
        hr_checkpoint: str | None = None,
        lr_checkpoint: str | None = None,
        init_checkpoint: str | None = None,
        figure_images: int = 16,
        saliency_temperature: float = 1.0,
        optim: OptimSpec = PATCHDROP_OPTIM,
        channels_last: bool = True,
    ) -> None:
        # PatchDropModel checks that the policy kind has its policy network and num_kept
        needs_policy = policy_kind in ("learned", "saliency")
        if stage == "ft2" and lr_classifier is None:
            raise ValueError("stage='ft2' fuses the LR stream (Eq. 7): give `lr_classifier`")
        if policy_kind in ("fixed_h", "fixed_v", "saliency") and num_kept is not None and num_kept != int(num_kept):
            raise ValueError(f"policy_kind={policy_kind!r} takes an integer num_kept, got {num_kept}")
        if alpha_start != alpha_end and not alpha_restart and not alpha_steps:
            raise ValueError(
                f"alpha_start={alpha_start} != alpha_end={alpha_end}: give `alpha_steps` (the schedule's length in policy "
                f"updates over all chained stages) or `alpha_restart: true` (a schedule over this stage only)"
            )
        if not 0.5 <= min(alpha_start, alpha_end) <= max(alpha_start, alpha_end) <= 1.0:
            raise ValueError(f"alpha_start / alpha_end must be in [0.5, 1] (Eq. 11), got {alpha_start}, {alpha_end}")
        if entropy_weight < 0:
            raise ValueError(f"entropy_weight must be >= 0, got {entropy_weight}")
        if policy_samples < 1:
            raise ValueError(f"policy_samples must be >= 1, got {policy_samples}")
        if classifier_masks not in ("sampled", "greedy", "both"):
            raise ValueError(f"classifier_masks must be 'sampled', 'greedy' or 'both', got {classifier_masks!r}")
        if stage == "pt" and policy_kind not in ("learned", "saliency"):
            raise ValueError(
                f"policy_kind={policy_kind!r} has nothing to train at stage 'pt' (the classifier is frozen); "
                f"evaluate it with the `test` subcommand, or use stage 'ft1' / 'ft2'"
            )
        model = PatchDropModel(
            hr_classifier=hr_classifier, policy=policy if needs_policy else None,
            lr_classifier=lr_classifier if stage == "ft2" else None, policy_kind=policy_kind, grid=grid,
            num_kept=num_kept, fusion=fusion, fill=fill, lr_upsample=lr_upsample, mean=mean, std=std,
            saliency_temperature=saliency_temperature, logit_bound=logit_bound, channels_last=channels_last,
        )
        super().__init__(optim=optim, channels_last=channels_last, modules={"model": model})
        self.automatic_optimization = False
        # checkpoints written before PatchDropModel (top-level policy.* / hr_classifier.* keys)
        self.register_load_state_dict_pre_hook(_upgrade_legacy_keys)

    # -- construction -------------------------------------------------------------------------
    @property
    def num_patches(self) -> int:
        return self.model.num_patches

    def configure_models(self) -> None:
        hp = self.hparams
        model = self.model
        if hp.hr_checkpoint:
            load_module_weights(model.hr_classifier, hp.hr_checkpoint, "net.")
        elif not hp.init_checkpoint:
            warnings.warn("PatchDrop: hr_checkpoint is null, the HR classifier starts from random weights", stacklevel=2)
        if hp.init_checkpoint:
            self._load_previous_stage(hp.init_checkpoint)
        elif hp.policy_kind == "learned" and hp.stage != "pt":
            warnings.warn(f"PatchDrop: init_checkpoint is null at stage {hp.stage!r}; the policy starts from random weights", stacklevel=2)
        if model.lr_classifier is not None:  # after the HR classifier got its final initial weights
            if hp.lr_checkpoint:
                load_module_weights(model.lr_classifier, hp.lr_checkpoint, "net.")
            else:
                warnings.warn("PatchDrop: lr_checkpoint is null, the LR classifier is initialised from the HR classifier", stacklevel=2)
                model.lr_classifier.load_state_dict(model.hr_classifier.state_dict())

        for module in self.frozen_modules():
            module.requires_grad_(False)
            module.eval()

    def _load_previous_stage(self, path: str) -> None:
        """Policy (when this stage has one) and HR classifier from a previous stage's checkpoint."""
        wanted = tuple(f"{MODEL_PREFIX}{name}." for name in ("policy", "hr_classifier") if getattr(self.model, name) is not None)
        counter = f"{MODEL_PREFIX}policy_updates"  # the alpha schedule continues across stages
        own = {k: v for k, v in read_checkpoint_state(path).items() if k.startswith(wanted) or k == counter}
        if not own:
            raise ValueError(f"{path!r} holds no policy.* / hr_classifier.* weights of a PatchDrop stage")
        result = self.load_state_dict(own, strict=False)
        missing = [k for k in result.missing_keys if k.startswith(wanted)]
        unexpected = [k for k in result.unexpected_keys if k.startswith(wanted)]
        if missing or unexpected:
            raise ValueError(f"{path!r} lacks {missing[:5]} / has extra {unexpected[:5]} (different networks than this config, "
                             f"e.g. another depth or norm?)")

    def frozen_modules(self) -> list[nn.Module]:
        """Networks that keep their weights and batch-norm statistics in this stage."""
        hp = self.hparams
        frozen: list[nn.Module] = []
        if hp.stage == "pt":
            frozen.append(self.model.hr_classifier)
        if self.model.lr_classifier is not None:
            frozen.append(self.model.lr_classifier)
        if hp.policy_kind == "saliency" and hp.stage != "pt":
            frozen.append(self.model.policy)
        return frozen

    def train(self, mode: bool = True) -> PatchDrop:
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def configure_metrics(self) -> MetricCollection:
        return MetricCollection({"acc": MulticlassAccuracy(self.hparams.num_classes, average="micro")})

    def parameter_groups(self) -> dict[str, list[Tensor]]:
        """``policy`` (learned / saliency policies, when not frozen) and ``hr_classifier``
        (Ft-1 / Ft-2)."""
        groups: dict[str, list[Tensor]] = {}
        policy = self.model.policy
        if policy is not None and not any(m is policy for m in self.frozen_modules()):
            groups["policy"] = list(policy.parameters())
        if self.hparams.stage != "pt":
            groups["hr_classifier"] = list(self.model.hr_classifier.parameters())
        return groups

    def alpha(self) -> float:
        """Eq. 11's alpha now: constant, or linear over ``alpha_steps`` policy updates of the
        whole chain of stages, or (``alpha_restart``) over this stage's steps."""
        hp = self.hparams
        if hp.alpha_start == hp.alpha_end:
            return float(hp.alpha_start)
        if hp.alpha_restart:
            total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
            return rl.linear_alpha(self.global_step / total, hp.alpha_start, hp.alpha_end)
        return rl.linear_alpha(int(self.model.policy_updates) / hp.alpha_steps, hp.alpha_start, hp.alpha_end)

    # -- training -----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        hp = self.hparams
        model = self.model
        hr, lr, y = batch["hr"], _lr(batch), batch["label"]
        x = model.normalize(hr)
        lr_logits = model.lr_logits(lr, hr.shape[-2:])
        if hp.policy_kind == "learned":
            loss, logs = model.reinforce_step(x, lr, y, lr_logits=lr_logits, alpha=self.alpha(), sigma=hp.sigma,
                                              train_classifier=hp.stage != "pt", entropy_weight=hp.entropy_weight,
                                              uniform=self.action_uniforms(y.shape[0], hp.policy_samples),
                                              classifier_masks=hp.classifier_masks, samples=hp.policy_samples)
        elif hp.policy_kind == "saliency" and hp.stage == "pt":
            loss, logs = model.saliency_step(x, lr, y)
        else:  # baselines at Ft-1 / Ft-2: the HR classifier is fine-tuned on the baseline's masks
            loss, logs = model.classifier_step(x, lr, y, lr_logits=lr_logits)

        logs["loss"] = loss.detach()  # logged before the backward: a non-finite loss is reported with its terms
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=y.shape[0], prog_bar=False)
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        return loss.detach()

    def action_uniforms(self, rows: int, samples: int = 1) -> Tensor | None:
        """This rank's ``(samples * rows, P)`` uniforms of the current step with ``sample_seed``
        (else ``None``): for each of the ``samples`` draws, rows ``r, r + W, ...`` of the global
        batch's draw (see ``sample_seed``); row ``k rows + b`` is sample k of image b."""
        seed = self.hparams.sample_seed
        if seed is None:
            return None
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self._trainer is not None else (1, 0)
        # keyed by the policy updates over all chained stages (not the stage's own step): Pt, Ft-1
        # and Ft-2 draw different actions; restored with the checkpoint, equal on every rank
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(self.model.policy_updates))
        u = torch.rand(samples, rows * world, self.model.num_patches, generator=g)
        return u[:, rank::world].reshape(samples * rows, -1).to(self.device)

    # -- evaluation ---------------------------------------------------------------------------
    def _generator(self, stage: str, batch_idx: int) -> torch.Generator | None:
        """The stochastic baseline's draws in evaluation: seeded per stage and batch (reproducible)."""
        if self.hparams.policy_kind != "stochastic":
            return None
        return torch.Generator(device=self.model.survival.device).manual_seed(10_000 * (stage == "test") + batch_idx)

    def export_networks(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``policy`` (LR image -> keep-probability per patch; learned policies) and
        ``hr_classifier`` (HR image + actions -> logits of the kept patches)."""
        from lr_lightning.export import ExportNet, MaskedClassifier, PolicyProbs

        m = self.model
        hr, lr = batch["hr"].float(), _lr(batch).float()
        actions = (torch.arange(m.num_patches) % 2).float().expand(hr.shape[0], -1).contiguous()
        nets = {"hr_classifier": ExportNet(MaskedClassifier(m.hr_classifier, m.mean, m.std, m.fill_value, m.grid),
                                           (hr, actions), ["image", "actions"], ["logits"])}
        if m.policy is not None and m.policy_kind == "learned":
            nets["policy"] = ExportNet(PolicyProbs(m.policy, m.mean, m.std, m.logit_bound), (lr,), ["lr_image"], ["keep_probability"])
        return nets

    def inference_step(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The test-time prediction (policy, masked HR classifier, + LR stream at Ft-2):
        ``(actions, class log-probabilities)``; what ``test/macs_per_image`` counts."""
        return self.model.predict(batch["hr"], _lr(batch), generator=self._generator("test", 0))

    def _evaluate(self, batch: dict[str, Any], batch_idx: int, stage: str) -> tuple[Tensor, Tensor, Tensor]:
        hr, lr, y = batch["hr"], _lr(batch), batch["label"]
        bs = y.shape[0]
        actions, logp = self.model.predict(hr, lr, generator=self._generator(stage, batch_idx))
        correct = logp.argmax(-1) == y
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(logp, y)
        s = actions.sum(1)
        self.log_dict(metrics, batch_size=bs, prog_bar=stage == "val", on_step=False, on_epoch=True)
        self.log(f"{stage}/ce", F.nll_loss(logp, y), batch_size=bs, sync_dist=True)
        self.log(f"{stage}/hr_patches", s.mean(), batch_size=bs, sync_dist=True, prog_bar=stage == "val")
        self.log(f"{stage}/hr_pixel_fraction", s.mean() / self.num_patches, batch_size=bs, sync_dist=True)
        self.log(f"{stage}/reward", rl.reward(actions, correct, self.hparams.sigma).mean(), batch_size=bs, sync_dist=True)
        return actions, correct, y

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def on_test_epoch_start(self) -> None:
        self.test_actions = CatMetric().to(self.device)
        self.test_correct = CatMetric().to(self.device)
        self._figure: tuple[Tensor, Tensor, Tensor] | None = None

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        actions, correct, _ = self._evaluate(batch, batch_idx, "test")
        self.test_actions.update(actions)
        self.test_correct.update(correct.float())
        if batch_idx == 0 and self.hparams.figure_images:
            n = self.hparams.figure_images
            self._figure = (batch["hr"][:n].float().cpu(), _lr(batch)[:n].float().cpu(), actions[:n].cpu())

    def on_test_epoch_end(self) -> None:
        actions = self.test_actions.compute().view(-1, self.num_patches).cpu()
        correct = self.test_correct.compute().view(-1).cpu()
        stats = policy_statistics(actions, correct)
        for p, f in enumerate(stats["patch_frequency"]):
            self.log(f"test/patch_freq/{p}", f, batch_size=1, sync_dist=False)
        if self.trainer.is_global_zero and self.trainer.log_dir is not None and not self.trainer.sanity_checking:
            out = Path(self.trainer.log_dir)
            out.mkdir(parents=True, exist_ok=True)
            stats.update(stage=self.hparams.stage, policy_kind=self.hparams.policy_kind, grid=self.hparams.grid)
            (out / "patchdrop_test.json").write_text(json.dumps(stats, indent=2))
            grid = self.hparams.grid
            paths = [save_statistics_figure(out / "patchdrop_statistics.png", stats=stats, grid=grid)]
            if self._figure is not None:
                hr, lr, actions = self._figure
                paths.append(save_policy_figure(out / "patchdrop_policies.png", hr=hr, lr=lr, actions=actions, grid=grid))
            self.log_image_files("test/patchdrop", paths)


def _lr(batch: dict[str, Any]) -> Tensor:
    return batch_entry(batch, "lr", "PatchDrop")


def _upgrade_legacy_keys(module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook: top-level ``policy.*`` / ``hr_classifier.*`` /
    ``lr_classifier.*`` keys (checkpoints from before :class:`PatchDropModel`) -> ``model.*``
    (a state dict without the ``policy_updates`` counter: see ``PatchDropModel._load_from_state_dict``)."""
    ours = {k: state_dict.pop(k) for k in [k for k in state_dict if k.startswith(prefix)]}
    state_dict.update({prefix + k: v for k, v in canonical_state({k[len(prefix):]: v for k, v in ours.items()}).items()})
