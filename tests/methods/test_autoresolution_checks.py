"""Autoresolution (paper D, issue 16): the pretext's trivial-solution baselines, the patch jitter that
removes the colour shortcut, and the linear probe / ``head_init="probe"`` of the transfer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from torch.nn import functional as F

from lr_lightning.data import CIFARDataModule
from lr_lightning.degrade import Degradation
from lr_lightning.methods.autoresolution import AutoresolutionClassifier, AutoresolutionPretext
from lr_lightning.methods.autoresolution import shortcuts as sc
from lr_lightning.methods.autoresolution.probe import fit_linear_probe, probe_accuracy
from lr_lightning.methods.autoresolution.targets import jitter_patches, shifted_negatives
from lr_lightning.methods.optim import AUTORESOLUTION_TRANSFER_OPTIM
from lr_lightning.nn.autoresolution import LRImageTower, PatchTower

TINY_IMAGE = dict(stem=[8], blocks=[1], widths=[16], reductions=[True], embed_dim=16)


# -- trivial-solution baselines -------------------------------------------------------------------
def _loop_distances(lr, sp, patch, stride, factor, kind):
    """Independent double loop over cells and LR windows."""
    k = sc.window_side(patch, factor)
    b, c, s, _ = sp.shape
    g = (s - patch) // stride + 1
    h, w = lr.shape[-2:]
    out = torch.empty(b, g, g, dtype=torch.float64)
    for n in range(b):
        wins = [lr[n, :, y:y + k, x:x + k].double() for y in range(h - k + 1) for x in range(w - k + 1)]
        for i in range(g):
            for j in range(g):
                cell = sp[n, :, i * stride:i * stride + patch, j * stride:j * stride + patch].double()
                if kind == "colour":
                    d = [((cell.mean((1, 2)) - win.mean((1, 2))) ** 2).sum() for win in wins]
                else:
                    pooled = F.adaptive_avg_pool2d(cell[None], k)[0]
                    if kind == "l2":
                        d = [((pooled - win) ** 2).sum() for win in wins]
                    else:  # 1 - the channels' mean NCC
                        def z(t):
                            t = (t - t.mean((1, 2), keepdim=True)).flatten(1)
                            return t / t.norm(dim=1, keepdim=True).clamp_min(1e-6)

                        d = [1 - (z(pooled) * z(win)).sum(1).mean() for win in wins]
                out[n, i, j] = min(float(v) for v in d)
    return out


@pytest.mark.parametrize("kind", ["colour", "l2", "ncc"])
def test_shortcut_distances_match_a_loop(kind: str) -> None:
    g = torch.Generator().manual_seed(0)
    lr, sp = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 20, 20, generator=g)
    if kind == "colour":
        got = sc.colour_match_distance(lr, sp, 9, 1, 4)
    else:
        got = sc.template_match_distance(lr, sp, 9, 1, 4, normalise=kind == "ncc")
    assert got.shape == (2, 12, 12)
    torch.testing.assert_close(got.double(), _loop_distances(lr, sp, 9, 1, 4, kind), atol=2e-5, rtol=1e-4)


def test_aligned_cells_have_zero_distance_and_plain_patches_are_solved_by_colour() -> None:
    """A cell that is exactly the HR block of a k x k LR window matches it at distance 0; on plain
    patches of real-like images colour matching alone separates positives from shifted negatives."""
    g = torch.Generator().manual_seed(1)
    # smooth images (random low-frequency fields), so neighbouring images differ in colour
    hr = F.interpolate(torch.rand(16, 3, 4, 4, generator=g), size=32, mode="bilinear", align_corners=False)
    lr = F.avg_pool2d(hr, 4)
    sp = hr[:, :, 4:24, 4:24]  # offset a multiple of the factor: cells at stride 4 are LR-aligned
    assert float(sc.colour_match_distance(lr, sp, 8, 4, 4).abs().max()) < 1e-5
    assert float(sc.template_match_distance(lr, sp, 8, 4, 4).abs().max()) < 1e-5
    pos, neg = sc.colour_match_distance(lr, sp, 8, 4, 4), sc.colour_match_distance(lr, shifted_negatives(sp), 8, 4, 4)
    assert sc.threshold_accuracy(pos, neg, sc.best_threshold(pos, neg)) > 90


def test_aligned_block_distance_matches_a_loop_and_finds_every_cells_phase() -> None:
    g = torch.Generator().manual_seed(5)
    hr = torch.rand(3, 3, 32, 32, generator=g)
    lr = F.avg_pool2d(hr, 4)
    sp = hr[:, :, 5:25, 7:27]  # odd offsets: every phase occurs among the stride-1 cells
    d = sc.aligned_block_distance(lr, sp, 9, 1, 4)
    assert d.shape == (3, 12, 12) and float(d.max()) < 1e-5  # the right phase reproduces LR pixels
    assert float(sc.template_match_distance(lr, sp, 9, 1, 4).min()) > 1e-4  # fixed pooling bins do not
    # loop reference on random patches, both distances, with and without luminance
    lr, sp = torch.rand(2, 3, 8, 8, generator=g), torch.rand(2, 3, 12, 12, generator=g)
    for normalise in (False, True):
        for luma in (False, True):
            lq, p = (sc.luminance(lr), sc.luminance(sp)) if luma else (lr, sp)
            ref = torch.full((2, 4, 4), float("inf"), dtype=torch.float64)
            for n in range(2):
                for i in range(4):
                    for j in range(4):
                        cell = p[n, :, i:i + 9, j:j + 9].double()
                        for a in range(4):
                            for bb in range(4):
                                ny, nx = (9 - a) // 4, (9 - bb) // 4
                                if normalise and min(ny, nx) < 2:
                                    continue
                                blk = F.avg_pool2d(cell[None, :, a:a + 4 * ny, bb:bb + 4 * nx], 4)[0]
                                for y in range(8 - ny + 1):
                                    for x in range(8 - nx + 1):
                                        win = lq[n, :, y:y + ny, x:x + nx].double()
                                        if normalise:
                                            zb = (blk - blk.mean((1, 2), keepdim=True)).flatten(1)
                                            zw = (win - win.mean((1, 2), keepdim=True)).flatten(1)
                                            ncc = (zb * zw).sum(1) / (zb.norm(dim=1).clamp_min(1e-6) * zw.norm(dim=1).clamp_min(1e-6))
                                            v = 1 - ncc.mean()
                                        else:
                                            v = ((blk - win) ** 2).mean()
                                        ref[n, i, j] = min(ref[n, i, j], float(v))
            got = sc.aligned_block_distance(lr, sp, 9, 1, 4, normalise=normalise, luminance=luma)
            torch.testing.assert_close(got.double(), ref, atol=2e-5, rtol=1e-4)


def test_ncc_is_invariant_to_per_channel_gain_and_offset_but_l2_is_not() -> None:
    g = torch.Generator().manual_seed(2)
    lr, sp = torch.rand(3, 3, 8, 8, generator=g), torch.rand(3, 3, 20, 20, generator=g)
    gain, offset = torch.tensor([0.5, 1.3, 0.8]).view(1, 3, 1, 1), torch.tensor([0.1, -0.2, 0.05]).view(1, 3, 1, 1)
    changed = sp * gain + offset
    torch.testing.assert_close(sc.template_match_distance(lr, changed, 9, 1, 4, normalise=True),
                               sc.template_match_distance(lr, sp, 9, 1, 4, normalise=True), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(sc.template_match_distance(lr, changed, 9, 1, 4), sc.template_match_distance(lr, sp, 9, 1, 4))


def test_best_threshold_is_the_balanced_optimum_over_every_candidate() -> None:
    g = torch.Generator().manual_seed(3)
    pos, neg = torch.randn(300, generator=g).abs(), torch.randn(100, generator=g).abs() + 0.8  # unbalanced classes
    t = sc.best_threshold(pos, neg)
    brute = max(sc.threshold_accuracy(pos, neg, float(c)) for c in torch.cat([pos, neg]))
    assert sc.threshold_accuracy(pos, neg, t) == pytest.approx(brute)
    assert sc.threshold_accuracy(torch.zeros(10), torch.ones(10), sc.best_threshold(torch.zeros(10), torch.ones(10))) == 100.0
    same = torch.rand(5000, generator=g)
    assert sc.threshold_accuracy(same[:2500], same[2500:], 0.5) == pytest.approx(50, abs=3)  # identical laws: chance


# -- jitter ---------------------------------------------------------------------------------------
def test_jitter_patches() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.rand(6, 3, 10, 10, generator=g)
    assert torch.equal(jitter_patches(x, 0.0), x)
    a = jitter_patches(x, 0.4, generator=torch.Generator().manual_seed(5))
    b = jitter_patches(x, 0.4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and not torch.allclose(a, x)
    # one draw per image: a constant image stays constant (brightness / contrast / gain are global)
    flat = torch.full((2, 3, 5, 5), 0.5)
    out = jitter_patches(flat, 0.4, generator=g)
    assert torch.allclose(out, out[:, :, :1, :1].expand_as(out))
    grey = jitter_patches(x, 0.0, grey=True)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        torch.testing.assert_close(grey[:, c], luma)
    with pytest.raises(ValueError, match="strength"):
        jitter_patches(x, 1.0)


def test_pretext_jitters_the_super_patch_only() -> None:
    kw = dict(image_tower=LRImageTower(**TINY_IMAGE), patch_tower=PatchTower(kernels=[3, 3, 1], strides=[1, 1, 1], channels=[8, 8, 8]),
              factor=4, super_patch=12, head_hidden=[8, 8, 8, 8])
    plain, jittered = AutoresolutionPretext(**kw), AutoresolutionPretext(**kw, patch_jitter=0.4, patch_grey=True)
    hr = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    lr0, sp0, oy0, ox0 = plain.make_inputs(hr, torch.Generator().manual_seed(7))
    lr1, sp1, oy1, ox1 = jittered.make_inputs(hr, torch.Generator().manual_seed(7))
    assert torch.equal(lr0, lr1) and torch.equal(oy0, oy1) and torch.equal(ox0, ox1)  # same LR image and crop
    assert torch.equal(sp1[:, 0], sp1[:, 1]) and not torch.allclose(sp0, sp1)


# -- linear probe ---------------------------------------------------------------------------------
def _blobs(n: int, seed: int, d: int = 12, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=torch.Generator().manual_seed(99)) * 3
    y = torch.randint(0, k, (n,), generator=g)
    scale = torch.linspace(0.1, 20, d)  # badly scaled features: the standardisation matters
    return (centres[y] + torch.randn(n, d, generator=g)) * scale + 5, y


def test_linear_probe_solves_a_separable_problem_and_is_the_regularised_optimum() -> None:
    train, val, test = _blobs(400, 0), _blobs(200, 1), _blobs(200, 2)
    linear, info = fit_linear_probe(train, val, 4, weight_decays=(1e-3, 1e-1))
    assert probe_accuracy(linear, *test) > 95 and info["val_acc"] > 95
    assert info["val_acc"] == max(info["val_acc_0.001"], info["val_acc_0.1"])
    assert info["weight_decay"] in (1e-3, 1e-1) and info["grad_max_abs"] < 1e-4
    # first-order optimality of the regularised objective in the standardised space, computed
    # independently: unfold the folded layer (W = W' s, b = b' + W' m) and differentiate
    x, y = train[0].double(), train[1]
    m, s = x.mean(0), x.std(0)
    w = (linear.weight.double() * s).requires_grad_(True)
    b = (linear.bias.double() + linear.weight.double() @ m).requires_grad_(True)
    z = (x - m) / s
    torch.testing.assert_close(z @ w.T + b, x @ linear.weight.double().T + linear.bias.double(), atol=1e-3, rtol=1e-4)
    loss = F.cross_entropy(z @ w.T + b, y) + 0.5 * info["weight_decay"] * w.square().sum()
    gw, gb = torch.autograd.grad(loss, (w, b))
    assert float(gw.abs().max()) < 1e-3 and float(gb.abs().max()) < 1e-3


def test_linear_probe_rejects_empty_inputs() -> None:
    with pytest.raises(ValueError, match="training and validation"):
        fit_linear_probe(_blobs(10, 0), (torch.empty(0, 12), torch.empty(0, dtype=torch.long)), 4)


def test_head_init_probe_sets_the_softmax_layer_to_the_frozen_towers_probe(tiny_cifar: Path, tmp_path: Path) -> None:
    class Capture(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 0:
                pl_module.eval()
                dm = trainer.datamodule
                self.expected = fit_linear_probe(pl_module.features(dm.train_set), pl_module.features(dm.val_set), 10, (1e-2, 1e-1))
                self.head = {k: v.clone() for k, v in pl_module.classifier[1].state_dict().items()}
                pl_module.train()

    torch.manual_seed(0)
    model = AutoresolutionClassifier(image_tower=LRImageTower(**TINY_IMAGE), head_only_steps=0, head_init="probe",
                                     probe_weight_decays=(1e-2, 1e-1), ema_decay=None,
                                     optim=AUTORESOLUTION_TRANSFER_OPTIM.with_learning_rate(0.01))
    dm = CIFARDataModule(root=str(tiny_cifar), batch_size=4, degradation=Degradation(mode="avg", factor=4), augment=False, val_fraction=0.5)
    cap = Capture()
    Trainer(max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
            num_sanity_val_steps=0, default_root_dir=tmp_path, limit_val_batches=0, callbacks=[cap]).fit(model, datamodule=dm)
    linear, info = cap.expected
    torch.testing.assert_close(cap.head["weight"], linear.weight)
    torch.testing.assert_close(cap.head["bias"], linear.bias)
    assert model.head_probe["val_acc"] == pytest.approx(info["val_acc"])
    assert set(model.head_probe) >= {"val_acc", "train_acc", "weight_decay", "val_acc_0.01", "val_acc_0.1"}


def test_batchnorm_recalibration_makes_eval_features_the_train_mode_ones(tiny_cifar: Path, tmp_path: Path) -> None:
    """A random tower's initial BatchNorm statistics make eval-mode features unlike the train-mode
    ones fine-tuning sees; after recalibration over the training set (one batch here) the two agree."""
    torch.manual_seed(1)
    model = AutoresolutionClassifier(image_tower=LRImageTower(**TINY_IMAGE), head_only_steps=0, ema_decay=None)
    dm = CIFARDataModule(root=str(tiny_cifar), batch_size=4, degradation=Degradation(mode="avg", factor=4), augment=False, val_fraction=0.5)
    dm.setup("fit")
    Trainer(max_steps=0, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
            default_root_dir=tmp_path, limit_val_batches=0).fit(model, datamodule=dm)  # attaches the trainer
    x = next(iter(model._batches(dm.train_set, 1000)))["lr"]
    tower = model.image_tower
    with torch.no_grad():
        train_mode = tower.train()(model.normalize(x))
        before = tower.eval()(model.normalize(x))
        model.recalibrate_batchnorm(dm.train_set, batch_size=1000)
        after = tower.eval()(model.normalize(x))
    assert not torch.allclose(before, train_mode, rtol=0.1, atol=1e-3)
    torch.testing.assert_close(after, train_mode, rtol=0.05, atol=0.02 * float(train_mode.abs().max()))


def test_step_unit_schedule_decays_per_optimiser_step_in_a_fit(tiny_cifar: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    optim = replace(AUTORESOLUTION_TRANSFER_OPTIM, schedule_unit="step", step_size=2)
    model = AutoresolutionClassifier(image_tower=LRImageTower(**TINY_IMAGE), head_only_steps=0, ema_decay=None, optim=optim)
    dm = CIFARDataModule(root=str(tiny_cifar), batch_size=4, degradation=Degradation(mode="avg", factor=4), augment=False)
    t = Trainer(max_steps=5, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                num_sanity_val_steps=0, default_root_dir=tmp_path, limit_val_batches=0)
    t.fit(model, datamodule=dm)
    assert t.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01 * 0.94**2)  # decays after steps 2 and 4
    with pytest.raises(ValueError, match="schedule_unit"):
        replace(optim, schedule_unit="batch")
