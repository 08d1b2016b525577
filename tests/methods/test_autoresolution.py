"""Autoresolution networks (paper D): pretext inputs/targets, tiled grid, transfer protocol, recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import WeightAveraging
from timm.optim import RMSpropTF
from torch import nn

from lr_lightning.data import CIFARDataModule
from lr_lightning.data.pretext import PretextFolderDataModule
from lr_lightning.degrade import Degradation
from lr_lightning.methods.autoresolution import (
    AutoresolutionClassifier,
    AutoresolutionPretext,
    tf_ema_avg_fn,
)
from lr_lightning.methods.autoresolution.recipe import EvaluationEMA
from lr_lightning.methods.autoresolution.targets import (
    centre_targets,
    crop_batch,
    shifted_negatives,
)
from lr_lightning.methods.optim import AUTORESOLUTION_TRANSFER_OPTIM
from lr_lightning.nn.autoresolution import LRImageTower, PatchTower, count_convs
from tests.conftest import REPO, run_ddp_fit, write_images

TINY_IMAGE = dict(stem=[8], blocks=[1], widths=[16], reductions=[True], embed_dim=16)
TINY_PATCH = dict(kernels=[3, 3, 1], strides=[1, 1, 1], channels=[8, 8, 8])


def tiny_pretext(objective: str = "classification", **kw) -> AutoresolutionPretext:
    return AutoresolutionPretext(
        image_tower=LRImageTower(**TINY_IMAGE), patch_tower=PatchTower(**TINY_PATCH), objective=objective, factor=4, super_patch=12,
        head_hidden=[8, 8, 8, 8], **kw,
    )


def tiny_classifier(**kw) -> AutoresolutionClassifier:
    return AutoresolutionClassifier(image_tower=LRImageTower(**TINY_IMAGE), **kw)


def trainer(tmp_path: Path, steps: int, **kw) -> Trainer:
    args = dict(max_steps=steps, max_epochs=-1, accelerator="cpu", logger=False, enable_progress_bar=False,
                enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path, limit_val_batches=1)
    args.update(kw)
    return Trainer(**args)


def cifar(root: Path, **kw) -> CIFARDataModule:
    return CIFARDataModule(root=str(root), batch_size=4, degradation=Degradation(mode="avg", factor=4), augment=False, **kw)


# -- architecture --------------------------------------------------------------------------------
def test_paper_preset_depths_and_tiled_grid() -> None:
    """Sec. 2: 40-layer image tower, 17-layer patch tower, 5-layer head; Sec. 3.2: 127 -> 47x47."""
    image, patch = LRImageTower("paper"), PatchTower("paper")
    pre = AutoresolutionPretext(image_tower=image, patch_tower=patch, super_patch=127, head_preset="paper")
    assert (count_convs(image), count_convs(patch), count_convs(pre.head)) == (40, 17, 5)
    assert pre.grid_geometry == (35, 2, 47)


def _brute_force_receptive_fields(tower: PatchTower, size: int, cells: list[tuple[int, int]]) -> tuple[tuple[int, int], dict]:
    """Output grid shape and, per output cell, the bounding box of the input pixels whose gradient
    is non-zero (positive weights, identity batch norm, positive input: no ReLU is ever off)."""
    tower = tower.double().eval()
    with torch.no_grad():
        for m in tower.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
    x = torch.rand(1, 3, size, size, dtype=torch.float64) + 0.5
    x.requires_grad_(True)
    out = tower(x)
    boxes = {}
    for i, j in cells:
        (g,) = torch.autograd.grad(out[0, :, i, j].sum(), x, retain_graph=True)
        rows, cols = g[0].abs().sum(0).nonzero(as_tuple=True)
        boxes[(i, j)] = (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max()))
    return tuple(out.shape[-2:]), boxes


@pytest.mark.parametrize(
    ("tower", "size"),
    [(PatchTower("small"), 20), (PatchTower("paper", channels=[4] * 17), 127), (PatchTower(kernels=[5, 3, 3, 1], strides=[2, 2, 1, 1], channels=[4, 4, 4, 4]), 41)],
    ids=["small", "paper", "strided"],
)
def test_grid_size_matches_brute_force_receptive_field(tower: PatchTower, size: int) -> None:
    r, j = tower.receptive_field()
    g = tower.grid_size(size)
    shape, boxes = _brute_force_receptive_fields(tower, size, [(0, 0), (0, 1), (1, 0), (g - 1, g - 1)])
    # measured receptive field and stride, independent of the recurrence
    r_bf = boxes[(0, 0)][1] - boxes[(0, 0)][0] + 1
    j_bf = boxes[(1, 0)][0] - boxes[(0, 0)][0]
    assert (r_bf, j_bf) == (r, j)
    assert boxes[(0, 1)][2] == j  # columns step by the same stride
    assert shape == (g, g) == ((size - r_bf) // j_bf + 1,) * 2
    # every cell's patch lies inside the super patch, the last one ends at most at its border
    assert boxes[(g - 1, g - 1)] == ((g - 1) * j, (g - 1) * j + r - 1, (g - 1) * j, (g - 1) * j + r - 1)
    assert (g - 1) * j + r <= size < g * j + r


def test_super_patch_smaller_than_patch_is_rejected() -> None:
    with pytest.raises(ValueError, match="receptive field"):
        AutoresolutionPretext(image_tower=LRImageTower(**TINY_IMAGE), patch_tower=PatchTower("small"), super_patch=8)
    with pytest.raises(ValueError, match="one entry per layer"):
        PatchTower(kernels=[3, 3], strides=[1], channels=[4, 4])


# -- pretext inputs and targets ------------------------------------------------------------------
def test_crop_batch_matches_slicing() -> None:
    x = torch.rand(3, 3, 16, 16)
    oy, ox = torch.tensor([0, 5, 8]), torch.tensor([8, 2, 0])
    crops = crop_batch(x, oy, ox, 8)
    for b in range(3):
        torch.testing.assert_close(crops[b], x[b, :, oy[b] : oy[b] + 8, ox[b] : ox[b] + 8])
    with pytest.raises(ValueError, match="leaves"):
        crop_batch(x, torch.tensor([9, 0, 0]), ox, 8)


def test_negatives_are_the_batch_shifted_by_one_never_aligned(tmp_path: Path) -> None:
    b = 5
    patches = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, 4, 4)
    neg = shifted_negatives(patches)
    assert [int(neg[i, 0, 0, 0]) for i in range(b)] == [(i + 1) % b for i in range(b)]
    assert all(int(neg[i, 0, 0, 0]) != i for i in range(b))
    with pytest.raises(ValueError, match="at least 2"):
        shifted_negatives(patches[:1])

    # through the task: what the patch tower sees and the targets it is scored against
    model = tiny_pretext("classification", channels_last=False, ema_decay=None)
    seen = {}
    model.patch_tower.register_forward_hook(lambda m, inp, out: seen.update(patches=inp[0].detach()))
    captured = {}
    orig = torch.nn.functional.cross_entropy

    def spy(logits, target, *a, **k):
        captured["target"] = target
        return orig(logits, target, *a, **k)

    hr = (torch.arange(b, dtype=torch.float32) / 10).view(b, 1, 1, 1).expand(b, 3, 32, 32).contiguous()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("lr_lightning.methods.autoresolution.module.F.cross_entropy", spy)
        model._step({"hr": hr}, "train", torch.Generator().manual_seed(0))
    ids = (seen["patches"][:, 0, 0, 0] * model.std[0, 0, 0, 0] + model.mean[0, 0, 0, 0]) * 10
    assert torch.allclose(ids, torch.tensor([0, 1, 2, 3, 4, 1, 2, 3, 4, 0], dtype=torch.float32), atol=1e-4)
    assert captured["target"][:b].eq(1).all() and captured["target"][b:].eq(0).all()


def test_centre_targets_corners_centre_and_tiles() -> None:
    # one patch (super patch = patch, grid 1x1), 31x31 image, 9x9 patch: span 22
    one = lambda oy, ox: centre_targets(torch.tensor([oy]), torch.tensor([ox]), (31, 31), 9, 1, 1)[0, :, 0, 0].tolist()  # noqa: E731
    assert one(0, 0) == [-1.0, -1.0]
    assert one(22, 22) == [1.0, 1.0]
    assert one(11, 11) == [0.0, 0.0]
    assert one(0, 22) == [1.0, -1.0]  # (x, y): top-right corner
    # tiles of a super patch: cell (i, j) is the patch at (oy + i J, ox + j J)
    oy, ox, p, j, g, h, w = torch.tensor([3]), torch.tensor([5]), 7, 2, 4, 21, 25
    t = centre_targets(oy, ox, (h, w), p, j, g)
    for i in range(g):
        for k in range(g):
            cy, cx = 3 + i * j + (p - 1) / 2, 5 + k * j + (p - 1) / 2
            ey, ex = 2 * (cy - (p - 1) / 2) / (h - p) - 1, 2 * (cx - (p - 1) / 2) / (w - p) - 1
            assert t[0, 0, i, k].item() == pytest.approx(ex) and t[0, 1, i, k].item() == pytest.approx(ey)


def test_regression_step_scores_against_tiled_centres() -> None:
    model = tiny_pretext("regression", channels_last=False, ema_decay=None)
    hr = torch.rand(4, 3, 32, 32)
    loss = model._step({"hr": hr}, "val", torch.Generator().manual_seed(1))[0]
    assert torch.isfinite(loss)
    mae, centre = model.val_metrics["pretext_mae"].compute(), model.val_metrics["pretext_mae_centre_predictor"].compute()
    # uniform offsets: mean |target| of a 32-image, 9-pixel-patch setup is about 0.5 (exactly 0.5 in the limit)
    assert 0.2 < float(centre) < 0.8 and torch.isfinite(mae)


def test_inference_step_counts_towers_and_head_or_tower_and_softmax_layer() -> None:
    """test/params: both towers + head for the pretext (on the LR image and its aligned super
    patch), the tower + softmax layer for the classifier; HR pixel share 0 / 1 by input_key."""
    from lr_lightning.metrics.inference_cost import inference_cost

    size = lambda *ms: sum(p.numel() for m in ms for p in m.parameters())  # noqa: E731
    hr = torch.rand(2, 3, 32, 32)
    pre = tiny_pretext("classification", channels_last=False, ema_decay=None).eval()
    grid = pre.inference_step({"hr": hr})
    assert grid.shape == (2, 2, pre.grid_geometry[2], pre.grid_geometry[2])
    macs, params = inference_cost(pre, lambda: pre.inference_step({"hr": hr}), 2)
    assert params == size(pre.image_tower, pre.patch_tower, pre.head) and macs > 0
    assert pre.hr_pixel_fraction({"hr": hr}) is None
    assert (pre.monitor, tiny_pretext("regression").monitor) == ("val/pretext_acc", "val/pretext_mae")
    for key, frac in (("lr", 0.0), ("hr", 1.0)):
        cls = tiny_classifier(pretrained=None, head_only_steps=0, input_key=key, channels_last=False, ema_decay=None).eval()
        batch = {"hr": hr, "lr": torch.nn.functional.avg_pool2d(hr, 4), "label": torch.zeros(2, dtype=torch.long)}
        assert cls.inference_step(batch).shape == (2, 10)
        assert inference_cost(cls, lambda c=cls, b=batch: c.inference_step(b), 2)[1] == size(cls.image_tower, cls.classifier)
        assert cls.hr_pixel_fraction(batch) == frac


# -- recipe: optimiser, schedule, clipping, EMA --------------------------------------------------
def test_optimizer_schedule_match_section_3_1() -> None:
    model = tiny_classifier(pretrained=None, head_only_steps=0)
    conf = model.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(opt, RMSpropTF)
    group = opt.param_groups[0]
    assert (group["alpha"], group["eps"], group["lr"]) == (0.9, 1.0, 0.01)
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs == pytest.approx([0.01, 0.01, 0.0094, 0.0094, 0.01 * 0.94**2])
    assert any(isinstance(c, WeightAveraging) for c in model.configure_callbacks())


def test_gradients_are_clipped_to_global_norm_10(tiny_cifar: Path, tmp_path: Path) -> None:
    norms = []

    class Probe(AutoresolutionClassifier):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx) * 1e4  # huge gradients

        def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
            before = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.parameters() if p.grad is not None]))
            super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
            after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.parameters() if p.grad is not None]))
            norms.append((float(before), float(after)))

    model = Probe(image_tower=LRImageTower(**TINY_IMAGE), head_only_steps=0, ema_decay=None, channels_last=False)
    trainer(tmp_path, 2, limit_val_batches=0).fit(model, datamodule=cifar(tiny_cifar))
    assert len(norms) == 2
    assert all(b > 10 and a == pytest.approx(10, rel=1e-3) for b, a in norms)


def test_tf_ema_schedule() -> None:
    fn = tf_ema_avg_fn(0.9)
    avg, cur = torch.tensor([0.0]), torch.tensor([1.0])
    assert float(fn(avg, cur, 1)) == pytest.approx(1 - 2 / 11)  # min(0.9, 2/11)
    assert float(fn(avg, cur, 1000)) == pytest.approx(0.1)  # min(0.9, ~1) = 0.9
    with pytest.raises(ValueError):
        tf_ema_avg_fn(1.5)


def test_evaluation_uses_the_ema_weights(tiny_cifar: Path, tmp_path: Path) -> None:
    decay = 0.5

    class Recorder(AutoresolutionClassifier):
        raw: list[torch.Tensor] = []
        seen_in_val: list[torch.Tensor] = []

        def optimizer_step(self, *args, **kwargs):
            super().optimizer_step(*args, **kwargs)
            Recorder.raw.append(self.classifier[1].weight.detach().clone())

        def validation_step(self, batch, batch_idx):
            Recorder.seen_in_val.append(self.classifier[1].weight.detach().clone())
            return super().validation_step(batch, batch_idx)

        def test_step(self, batch, batch_idx):
            if batch_idx == 0:
                Recorder.seen_in_val.append(self.classifier[1].weight.detach().clone())
            return super().test_step(batch, batch_idx)

    model = Recorder(image_tower=LRImageTower(**TINY_IMAGE), head_only_steps=0, ema_decay=decay, channels_last=False, optim=AUTORESOLUTION_TRANSFER_OPTIM.with_learning_rate(0.05))
    t = trainer(tmp_path, 4, limit_train_batches=4, logger=True)
    t.fit(model, datamodule=cifar(tiny_cifar))
    # hand-computed running average: first update copies, then d_n = min(decay, (1 + n) / (10 + n))
    ema = Recorder.raw[0].clone()
    for n, w in enumerate(Recorder.raw[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        ema = d * ema + (1 - d) * w
    assert len(Recorder.raw) == 4 and len(Recorder.seen_in_val) == 1
    assert not torch.allclose(ema, Recorder.raw[-1])  # the test can tell them apart
    torch.testing.assert_close(Recorder.seen_in_val[0], ema)
    # after fit the module holds the average, and the saved checkpoint too (what `test` loads)
    torch.testing.assert_close(model.classifier[1].weight.detach(), ema)
    ckpt = torch.load(t.checkpoint_callback.last_model_path, map_location="cpu", weights_only=False)
    torch.testing.assert_close(ckpt["state_dict"]["classifier.1.weight"], ema)
    # evaluating a checkpoint with the same trainer (as the benchmark does) uses its average too
    with torch.no_grad():
        model.classifier[1].weight.add_(1.0)  # whatever the module holds is replaced by the checkpoint
    t.test(model, datamodule=cifar(tiny_cifar), ckpt_path=t.checkpoint_callback.last_model_path, verbose=False)
    t.validate(model, datamodule=cifar(tiny_cifar), ckpt_path=t.checkpoint_callback.last_model_path, verbose=False)
    assert len(Recorder.seen_in_val) == 3
    torch.testing.assert_close(Recorder.seen_in_val[1], ema)
    torch.testing.assert_close(Recorder.seen_in_val[2], ema)


@pytest.mark.parametrize("callback_cls", [EvaluationEMA, WeightAveraging])
def test_trainer_level_ema_callback_evaluates_checkpoint_average(callback_cls, tiny_cifar: Path, tmp_path: Path) -> None:
    """A callback instance that outlives fit: EvaluationEMA tests the checkpoint's average,
    Lightning's WeightAveraging reloads the raw weights (why EvaluationEMA exists)."""
    seen = []

    class Probe(AutoresolutionClassifier):
        def test_step(self, batch, batch_idx):
            if batch_idx == 0:
                seen.append(self.classifier[1].weight.detach().clone())
            return super().test_step(batch, batch_idx)

    model = Probe(image_tower=LRImageTower(**TINY_IMAGE), head_only_steps=0, ema_decay=None, channels_last=False, optim=AUTORESOLUTION_TRANSFER_OPTIM.with_learning_rate(0.05))
    t = trainer(tmp_path, 4, limit_train_batches=4, callbacks=[callback_cls(avg_fn=tf_ema_avg_fn(0.5))])
    t.fit(model, datamodule=cifar(tiny_cifar))
    ckpt = torch.load(t.checkpoint_callback.last_model_path, map_location="cpu", weights_only=False)
    t.test(model, datamodule=cifar(tiny_cifar), ckpt_path=t.checkpoint_callback.last_model_path, verbose=False)
    average, raw = ckpt["state_dict"]["classifier.1.weight"], ckpt["current_model_state"]["classifier.1.weight"]
    assert not torch.allclose(average, raw)
    torch.testing.assert_close(seen[0], average if callback_cls is EvaluationEMA else raw)


# -- transfer protocol ---------------------------------------------------------------------------
def _tower_state(model: AutoresolutionClassifier) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.image_tower.state_dict().items()}


def test_pretrained_tower_is_loaded_and_head_only_phase_freezes_it(tiny_cifar: Path, tmp_path: Path) -> None:
    pre = tiny_pretext("classification", ema_decay=None)
    tp = trainer(tmp_path / "pre", 2, logger=True, limit_train_batches=2)
    tp.fit(pre, datamodule=CIFARDataModule(root=str(tiny_cifar), batch_size=4, augment=False))
    assert (Path(tp.log_dir) / "heatmaps" / "epoch_000.png").is_file()  # Fig. 2 heat map
    ckpt = tp.checkpoint_callback.last_model_path

    model = tiny_classifier(pretrained=ckpt, head_only_steps=3, ema_decay=None, optim=AUTORESOLUTION_TRANSFER_OPTIM.with_learning_rate(0.05))
    for k, v in model.image_tower.state_dict().items():
        torch.testing.assert_close(v, pre.image_tower.state_dict()[k])  # the pretext's tower
    before = _tower_state(model)
    head_before = model.classifier[1].weight.detach().clone()
    trainer(tmp_path / "a", 3, limit_val_batches=0).fit(model, datamodule=cifar(tiny_cifar))
    after = _tower_state(model)
    for k in before:  # parameters and batch-norm statistics
        torch.testing.assert_close(after[k], before[k], msg=f"{k} changed in the head-only phase")
    assert not torch.allclose(model.classifier[1].weight, head_before)
    # after the head-only phase, fine-tuning moves the tower
    trainer(tmp_path / "b", 5, limit_val_batches=0).fit(model, datamodule=cifar(tiny_cifar))
    assert any(not torch.equal(_tower_state(model)[k], before[k]) for k in before if k.endswith("weight"))


def test_random_init_warns() -> None:
    with pytest.warns(UserWarning, match="random initialisation"):
        tiny_classifier(pretrained=None, head_only_steps=0)


# -- data ----------------------------------------------------------------------------------------
def test_pretext_folder_data(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 3, 64)
    write_images(tmp_path / "b", 2, 40, seed=1)
    write_images(tmp_path / "b_small", 1, 20, seed=2)
    kw = dict(root=str(tmp_path), train_dirs=["a"], val_dirs=["b", "b_small"], crop_size=32, hr_size=16, val_crops=6, patches_per_epoch=5)
    dm = PretextFolderDataModule(**kw)
    with pytest.warns(UserWarning, match="skipped"):
        dm.setup("fit")
    item = dm.train_set[0]["hr"]
    assert item.shape == (3, 16, 16) and 0 <= float(item.min()) and float(item.max()) <= 1
    dm2 = PretextFolderDataModule(**kw)
    with pytest.warns(UserWarning):
        dm2.setup("fit")
    torch.testing.assert_close(dm.val_set.images, dm2.val_set.images)  # fixed validation crops
    with pytest.raises(ValueError, match="multiple"):
        PretextFolderDataModule(root=str(tmp_path), crop_size=30, hr_size=16)


# -- DDP -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_pretext_ddp_two_cpu_processes(tiny_cifar: Path, tmp_path: Path) -> None:
    run_ddp_fit(REPO / "configs" / "autoresolution" / "pretext_cls_cifar10.yaml", tiny_cifar, tmp_path,
                ["--trainer.max_steps=2", f"--trainer.logger.init_args.save_dir={tmp_path}", "--data.init_args.batch_size=4"])
    ckpts = list(tmp_path.rglob("last.ckpt"))
    state = torch.load(ckpts[0], map_location="cpu", weights_only=False)
    assert "current_model_state" in state  # the EMA callback ran under DDP and saved the average
