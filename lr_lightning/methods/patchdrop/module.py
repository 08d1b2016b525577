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
:meth:`PatchDrop._saliency_loss`), ``full`` (S = P, the HR-CNN) and ``none`` (S = 0).
Baselines at Ft-1/Ft-2 fine-tune the HR classifier on their own masks, as in Tables 1-2.

Stages are separate configs chained by checkpoints: ``hr_checkpoint`` / ``lr_checkpoint`` are
the classifier pre-training outputs (an :class:`~lr_lightning.methods.ImageClassifier`
checkpoint, prefix ``net.``, or a plain state dict) and ``init_checkpoint`` is the checkpoint of
the previous PatchDrop stage (its ``policy.*`` and ``hr_classifier.*`` weights).
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
from lr_lightning.degrade import upsample
from lr_lightning.degrade.resize import UpsampleMode
from lr_lightning.methods.base import BaseTask, batch_entry
from lr_lightning.methods.optim import PATCHDROP_OPTIM, OptimSpec
from lr_lightning.methods.patchdrop import grid as G
from lr_lightning.methods.patchdrop import rl
from lr_lightning.nn.weights import load_module_weights
from lr_lightning.plotting import pyplot, save_figure

Stage = Literal["pt", "ft1", "ft2"]
PolicyKind = Literal["learned", "fixed_h", "fixed_v", "stochastic", "saliency", "full", "none"]


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
        alpha_start / alpha_end: Eq. 11 exploration bound, linear from start to end over the run
            (paper: 0.7 -> 0.95; equal values = constant, e.g. 0.8 as in the CIFAR runs).
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
        alpha_start: float = 0.7,
        alpha_end: float = 0.95,
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
        needs_policy = policy_kind in ("learned", "saliency")
        if needs_policy and policy is None:
            raise ValueError(f"policy_kind={policy_kind!r} needs a `policy` network (e.g. lr_lightning.nn.CifarResNet depth 8)")
        if stage == "ft2" and lr_classifier is None:
            raise ValueError("stage='ft2' fuses the LR stream (Eq. 7): give `lr_classifier`")
        if policy_kind in ("fixed_h", "fixed_v", "stochastic", "saliency") and num_kept is None:
            raise ValueError(f"policy_kind={policy_kind!r} needs `num_kept` (the number S of HR patches to sample)")
        if policy_kind in ("fixed_h", "fixed_v", "saliency") and num_kept is not None and num_kept != int(num_kept):
            raise ValueError(f"policy_kind={policy_kind!r} takes an integer num_kept, got {num_kept}")
        if stage == "pt" and policy_kind not in ("learned", "saliency"):
            raise ValueError(
                f"policy_kind={policy_kind!r} has nothing to train at stage 'pt' (the classifier is frozen); "
                f"evaluate it with the `test` subcommand, or use stage 'ft1' / 'ft2'"
            )
        modules: dict[str, nn.Module] = {"hr_classifier": hr_classifier}
        if needs_policy and policy is not None:
            modules["policy"] = policy
        if stage == "ft2" and lr_classifier is not None:
            modules["lr_classifier"] = lr_classifier
        super().__init__(optim=optim, channels_last=channels_last, modules=modules)
        self.automatic_optimization = False

    hr_classifier: nn.Module
    policy: nn.Module
    lr_classifier: nn.Module

    # -- construction -------------------------------------------------------------------------
    @property
    def num_patches(self) -> int:
        return self.hparams.grid**2

    def configure_models(self) -> None:
        hp = self.hparams
        self.register_normalization(hp.mean, hp.std)
        fill = torch.zeros(1, len(hp.mean), 1, 1) if hp.fill is None else (hp.fill - self.mean) / self.std
        self.register_buffer("fill_value", fill, persistent=False)
        if hp.policy_kind in ("fixed_h", "fixed_v"):
            priority = G.fixed_priority(hp.policy_kind[-1], hp.grid)
            self.register_buffer("fixed", G.fixed_actions(priority, int(hp.num_kept), 1), persistent=False)
        if hp.policy_kind == "stochastic":
            self.register_buffer("survival", G.stochastic_survival(hp.grid, float(hp.num_kept)).view(1, -1), persistent=False)

        if hp.hr_checkpoint:
            load_module_weights(self.hr_classifier, hp.hr_checkpoint, "net.")
        elif not hp.init_checkpoint:
            warnings.warn("PatchDrop: hr_checkpoint is null, the HR classifier starts from random weights", stacklevel=2)
        if hp.init_checkpoint:
            state = torch.load(hp.init_checkpoint, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
            wanted = ("policy.", "hr_classifier.")
            own = {k: v for k, v in state.items() if k.startswith(wanted) and (hasattr(self, "policy") or not k.startswith("policy."))}
            if not own:
                raise ValueError(f"{hp.init_checkpoint!r} holds no policy.* / hr_classifier.* weights of a PatchDrop stage")
            missing = self.load_state_dict(own, strict=False).missing_keys
            missing = [k for k in missing if k.startswith(wanted)]
            if missing:
                raise ValueError(f"{hp.init_checkpoint!r} lacks {missing[:5]} (different networks than this config?)")
        elif hp.policy_kind == "learned" and hp.stage != "pt":
            warnings.warn(f"PatchDrop: init_checkpoint is null at stage {hp.stage!r}; the policy starts from random weights", stacklevel=2)
        if hp.stage == "ft2":  # after the HR classifier got its final initial weights
            if hp.lr_checkpoint:
                load_module_weights(self.lr_classifier, hp.lr_checkpoint, "net.")
            else:
                warnings.warn("PatchDrop: lr_checkpoint is null, the LR classifier is initialised from the HR classifier", stacklevel=2)
                self.lr_classifier.load_state_dict(self.hr_classifier.state_dict())

        for module in self.frozen_modules():
            module.requires_grad_(False)
            module.eval()

    def frozen_modules(self) -> list[nn.Module]:
        """Networks that keep their weights and batch-norm statistics in this stage."""
        hp = self.hparams
        frozen: list[nn.Module] = []
        if hp.stage == "pt":
            frozen.append(self.hr_classifier)
        if hp.stage == "ft2":
            frozen.append(self.lr_classifier)
        if hp.policy_kind == "saliency" and hp.stage != "pt":
            frozen.append(self.policy)
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
        hp = self.hparams
        groups: dict[str, list[Tensor]] = {}
        if hp.policy_kind in ("learned", "saliency") and not any(m is self.policy for m in self.frozen_modules()):
            groups["policy"] = list(self.policy.parameters())
        if hp.stage != "pt":
            groups["hr_classifier"] = list(self.hr_classifier.parameters())
        return groups

    # -- building blocks ----------------------------------------------------------------------
    def policy_probs(self, lr: Tensor) -> Tensor:
        """Eq. 6: ``s = sigmoid(f_p(x_l))``, in float32, shape ``(B, P)``."""
        logits = self.policy(self.normalize(lr)).float()
        if logits.shape[-1] != self.num_patches:
            raise ValueError(f"the policy outputs {logits.shape[-1]} values but the {self.hparams.grid}x{self.hparams.grid} grid has {self.num_patches} patches")
        return torch.sigmoid(logits)

    def masked(self, x_norm: Tensor, actions: Tensor) -> Tensor:
        """``x_h^m``: the normalised HR image with dropped patches set to the fill value."""
        return self.to_input(G.apply_mask(x_norm, actions, self.hparams.grid, self.fill_value))

    def hr_logits(self, x_norm: Tensor, actions: Tensor) -> Tensor:
        if getattr(self.hr_classifier, "patch_based", False):
            return self.hr_classifier(x_norm, actions)
        return self.hr_classifier(self.masked(x_norm, actions))

    def lr_logits(self, lr: Tensor, size: tuple[int, int]) -> Tensor:
        with torch.no_grad():
            return self.lr_classifier(self.normalize(upsample(lr, size, self.hparams.lr_upsample)))

    def log_probs(self, hr_logits: Tensor, actions: Tensor, lr_logits: Tensor | None) -> Tensor:
        """Class log-probabilities of the classifier ``f_cl``: HR stream only, or Eq. 7 at Ft-2."""
        if lr_logits is None:
            return F.log_softmax(hr_logits.float(), -1)
        return rl.fuse(hr_logits, lr_logits, actions.sum(1), self.num_patches, self.hparams.fusion)

    def deterministic_actions(self, lr: Tensor, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """The test-time action of every policy kind, ``(B, P)`` in {0, 1}."""
        hp = self.hparams
        p = self.num_patches
        kind = hp.policy_kind
        if kind == "learned":
            return rl.greedy_actions(self.policy_probs(lr))
        if kind == "saliency":
            return G.top_k_actions(self.policy(self.normalize(lr)).float(), int(hp.num_kept))
        if kind in ("fixed_h", "fixed_v"):
            return self.fixed.expand(batch, p).to(lr.device)
        if kind == "stochastic":
            u = torch.rand(batch, p, generator=generator, device=self.survival.device)
            return (u < self.survival).float()
        if kind == "full":
            return lr.new_ones(batch, p, dtype=torch.float32)
        return lr.new_zeros(batch, p, dtype=torch.float32)

    def alpha(self) -> float:
        """Eq. 11's alpha at the current step (linear schedule over the run)."""
        hp = self.hparams
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
        return rl.linear_alpha(self.global_step / total, hp.alpha_start, hp.alpha_end)

    # -- training -----------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        hp = self.hparams
        hr, lr, y = batch["hr"], _lr(batch), batch["label"]
        bs = y.shape[0]
        x = self.normalize(hr)
        lr_logits = self.lr_logits(lr, hr.shape[-2:]) if hp.stage == "ft2" else None
        logs: dict[str, Tensor | float] = {}
        if hp.policy_kind == "learned":
            loss = self._reinforce_loss(x, lr, y, lr_logits, logs)
        elif hp.policy_kind == "saliency" and hp.stage == "pt":
            loss = self._saliency_loss(x, lr, y, logs)
        else:
            # baselines at Ft-1 / Ft-2: the HR classifier is fine-tuned on the baseline's masks
            actions = self.deterministic_actions(lr, bs)
            logp = self.log_probs(self.hr_logits(x, actions), actions, lr_logits)
            loss = F.nll_loss(logp, y)
            logs["train/loss_cls"] = loss.detach()
            logs["train/S"] = actions.sum(1).mean()
            logs["train/acc_sampled"] = (logp.argmax(-1) == y).float().mean()

        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt.step()
        logs["train/loss"] = loss.detach()
        self.log_dict(logs, batch_size=bs, prog_bar=False)
        return loss.detach()

    def _reinforce_loss(self, x: Tensor, lr: Tensor, y: Tensor, lr_logits: Tensor | None, logs: dict[str, Any]) -> Tensor:
        """Eq. 8-11: sample from the bounded policy, self-critical advantage, policy (+ CE) loss."""
        hp = self.hparams
        probs = self.policy_probs(lr)
        alpha = self.alpha()
        bounded = rl.bound_probs(probs, alpha)
        actions = torch.bernoulli(bounded.detach())
        greedy = rl.greedy_actions(probs.detach())
        train_cls = hp.stage != "pt"
        with torch.no_grad():
            logp_greedy = self.log_probs(self.hr_logits(x, greedy), greedy, lr_logits)
        with torch.set_grad_enabled(train_cls):
            logp = self.log_probs(self.hr_logits(x, actions), actions, lr_logits)
        correct = logp.detach().argmax(-1) == y
        reward = rl.reward(actions, correct, hp.sigma)
        baseline = rl.reward(greedy, logp_greedy.argmax(-1) == y, hp.sigma)
        advantage = reward - baseline
        loss_policy = rl.policy_loss(bounded, actions, advantage)
        loss = loss_policy
        if train_cls:
            loss_cls = F.nll_loss(logp, y)
            loss = loss + loss_cls
            logs["train/loss_cls"] = loss_cls.detach()
        logs.update({
            "train/loss_policy": loss_policy.detach(),
            "train/reward": reward.mean(),
            "train/reward_greedy": baseline.mean(),
            "train/advantage": advantage.mean(),
            "train/S": actions.sum(1).mean(),
            "train/S_greedy": greedy.sum(1).mean(),
            "train/entropy": rl.bernoulli_entropy(probs.detach()),
            "train/alpha": alpha,
            "train/acc_sampled": correct.float().mean(),
        })
        return loss

    def _saliency_loss(self, x: Tensor, lr: Tensor, y: Tensor, logs: dict[str, Any]) -> Tensor:
        """STN-style saliency baseline (Sec. 5.2, after Recasens et al. 2018), trained at Pt.

        The saliency net scores the patches from the LR image; during training the HR image is
        weighted by the soft mask ``min(1, S softmax(scores / T))`` (differentiable, so the frozen
        HR classifier's cross-entropy trains the saliency net, as the STN's sampler is trained
        end-to-end by the task loss); at test time the top-S patches are kept.
        """
        hp = self.hparams
        scores = self.policy(self.normalize(lr)).float()
        soft = torch.clamp(float(hp.num_kept) * torch.softmax(scores / hp.saliency_temperature, -1), max=1.0)
        m = G.patch_mask(soft, x.shape[-2], x.shape[-1], hp.grid)
        xm = self.to_input(x * m + self.fill_value.to(x.dtype) * (1 - m))
        logits = self.hr_classifier(xm)
        loss = F.cross_entropy(logits.float(), y)
        logs["train/loss_cls"] = loss.detach()
        logs["train/S"] = soft.sum(1).mean().detach()
        logs["train/acc_sampled"] = (logits.argmax(-1) == y).float().mean()
        return loss

    # -- evaluation ---------------------------------------------------------------------------
    def _evaluate(self, batch: dict[str, Any], batch_idx: int, stage: str) -> tuple[Tensor, Tensor, Tensor]:
        hp = self.hparams
        hr, lr, y = batch["hr"], _lr(batch), batch["label"]
        bs = y.shape[0]
        x = self.normalize(hr)
        gen = None
        if hp.policy_kind == "stochastic":  # reproducible evaluation of the random baseline
            gen = torch.Generator(device=self.survival.device).manual_seed(10_000 * (stage == "test") + batch_idx)
        actions = self.deterministic_actions(lr, bs, gen)
        lr_logits = self.lr_logits(lr, hr.shape[-2:]) if hp.stage == "ft2" else None
        logp = self.log_probs(self.hr_logits(x, actions), actions, lr_logits)
        correct = logp.argmax(-1) == y
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(logp, y)
        s = actions.sum(1)
        self.log_dict(metrics, batch_size=bs, prog_bar=stage == "val", on_step=False, on_epoch=True)
        self.log(f"{stage}/loss", F.nll_loss(logp, y), batch_size=bs, sync_dist=True)
        self.log(f"{stage}/S", s.mean(), batch_size=bs, sync_dist=True, prog_bar=stage == "val")
        self.log(f"{stage}/hr_pixel_fraction", s.mean() / self.num_patches, batch_size=bs, sync_dist=True)
        self.log(f"{stage}/reward", rl.reward(actions, correct, hp.sigma).mean(), batch_size=bs, sync_dist=True)
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
            paths = [save_statistics_figure(out / "patchdrop_statistics.png", stats, self.hparams.grid)]
            if self._figure is not None:
                paths.append(save_policy_figure(out / "patchdrop_policies.png", *self._figure, self.hparams.grid))
            self.log_image_files("test/patchdrop", paths)


def _lr(batch: dict[str, Any]) -> Tensor:
    return batch_entry(batch, "lr", "PatchDrop")


def policy_statistics(actions: Tensor, correct: Tensor) -> dict[str, Any]:
    """Test statistics of a policy: accuracy, mean S, HR-pixel fraction, per-patch sampling
    frequency (Fig. 7 right) and accuracy as a function of S (Fig. 7 left)."""
    p = actions.shape[1]
    s = actions.sum(1).long()
    count = torch.bincount(s, minlength=p + 1)
    hits = torch.bincount(s, weights=correct.double(), minlength=p + 1)
    n = max(1, actions.shape[0])
    return {
        "num_images": int(actions.shape[0]),
        "acc": float(correct.double().mean() * 100) if actions.shape[0] else float("nan"),
        "mean_S": float(s.double().mean()) if actions.shape[0] else float("nan"),
        "hr_pixel_fraction": float(s.double().mean() / p) if actions.shape[0] else float("nan"),
        "patch_frequency": [float(v) for v in actions.double().sum(0) / n],
        "S_histogram": [int(c) for c in count],
        "acc_vs_S": [float(h / c * 100) if c else None for h, c in zip(hits, count, strict=True)],
    }


def save_statistics_figure(path: Path, stats: dict[str, Any], grid: int) -> Path:
    """Fig. 7: accuracy vs S (with the S histogram) and the sampling frequency of each patch id."""
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    hist = stats["S_histogram"]
    acc = [a if a is not None else float("nan") for a in stats["acc_vs_S"]]
    xs = list(range(len(hist)))
    ax[0].bar(xs, [h / max(1, sum(hist)) * 100 for h in hist], color="0.8", label="images (%)")
    ax[0].plot(xs, acc, "o-", color="C0", label="accuracy (%)")
    ax[0].set_xlabel("S (sampled HR patches)")
    ax[0].set_ylim(0, 100)
    ax[0].legend(fontsize=8)
    ax[0].set_title("accuracy vs S", fontsize=10)
    freq = torch.tensor(stats["patch_frequency"]).view(grid, grid)
    im = ax[1].imshow(freq.numpy(), vmin=0, vmax=1, cmap="viridis")
    for p in range(grid * grid):
        ax[1].text(p % grid, p // grid, f"{p}\n{freq.view(-1)[p]:.2f}", ha="center", va="center", fontsize=7, color="w")
    ax[1].set_title("sampling frequency per patch id", fontsize=10)
    ax[1].axis("off")
    fig.colorbar(im, ax=ax[1])
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def save_policy_figure(path: Path, hr: Tensor, lr: Tensor, actions: Tensor, grid: int) -> Path:
    """Fig. 4/6: LR inputs (top) and the HR patches the policy samples (bottom, dropped = dark)."""
    plt = pyplot()
    n = hr.shape[0]
    fig, ax = plt.subplots(2, n, figsize=(1.2 * n, 2.7), squeeze=False)
    m = G.patch_mask(actions.float(), hr.shape[-2], hr.shape[-1], grid)
    shown = hr.clamp(0, 1) * (0.15 + 0.85 * m)
    for i in range(n):
        ax[0, i].imshow(lr[i].clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
        ax[1, i].imshow(shown[i].permute(1, 2, 0).numpy(), interpolation="nearest")
        ax[1, i].set_title(f"S={int(actions[i].sum())}", fontsize=7)
        ax[0, i].axis("off")
        ax[1, i].axis("off")
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)
