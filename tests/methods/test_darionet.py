"""DarioNet (paper B): frozen teacher, distillation loss, validation loss, LR recipe, SSIM-Y."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from lr_lightning.degrade import ResizeDegradation, gaussian_kernel
from lr_lightning.methods.darionet import DarioNetTask, cross_entropy_gap, logit_distillation_loss
from lr_lightning.metrics import ssim_y
from lr_lightning.nn import CifarResNet, RRDBNet


def _batches(n: int, size: int = 32, scale: int = 4, seed: int = 0) -> list[dict[str, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        hr = torch.rand(4, 3, size, size, generator=g)
        out.append({"hr": hr, "lr": F.avg_pool2d(hr, scale), "label": torch.randint(0, 10, (4,), generator=g)})
    return out


def _loader(batches: list[dict[str, Tensor]]) -> DataLoader:
    return DataLoader(batches, batch_size=None)


def _trainer(tmp_path: Path, steps: int) -> Trainer:
    return Trainer(max_steps=steps, limit_val_batches=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                   accelerator="cpu", default_root_dir=tmp_path)


def _task(tmp_path: Path, **kw: object) -> tuple[DarioNetTask, dict[str, Tensor]]:
    torch.manual_seed(0)
    teacher = CifarResNet(8, num_classes=10)
    # give BatchNorm non-trivial running statistics, then save as the HR-CNN task would ("net.")
    teacher.train()
    with torch.no_grad():
        teacher(torch.randn(16, 3, 32, 32))
    ckpt = tmp_path / "hr_cnn.ckpt"
    torch.save({"state_dict": {f"net.{k}": v for k, v in teacher.state_dict().items()}}, ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = DarioNetTask(net=RRDBNet(4, nf=8, nb=1, gc=4), teacher=CifarResNet(8, num_classes=10), teacher_ckpt=str(ckpt), **kw)
    return task, {k: v.clone() for k, v in teacher.state_dict().items()}


def test_teacher_frozen_and_unchanged_after_training(tmp_path: Path) -> None:
    task, before = _task(tmp_path, feature_weight=0.5, feature_layers=["layers.1"], pixel_weight=0.1)
    # the checkpoint (with the "net." prefix) was loaded into the teacher
    for k, v in task.teacher.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    net_before = [p.detach().clone() for p in task.net.parameters()]
    task.train()
    assert not task.teacher.training and task.net.training
    trainer = _trainer(tmp_path, 3)
    trainer.fit(task, _loader(_batches(3)), _loader(_batches(1, seed=1)))
    assert trainer.global_step == 3
    assert not task.teacher.training
    assert all(not p.requires_grad and p.grad is None for p in task.teacher.parameters())
    for k, v in task.teacher.state_dict().items():  # weights and BatchNorm statistics
        torch.testing.assert_close(v, before[k], rtol=0, atol=0, msg=f"teacher {k} changed")
    assert any(not torch.equal(a, b) for a, b in zip(net_before, task.net.parameters(), strict=True))
    # the optimiser holds the SR net's parameters only
    opt_params = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in task.net.parameters()}


class _NearestSR(nn.Module):
    """Nearest x4 upsampling and an identity 1x1 conv (trainable): SR(LR) == nearest(LR) exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=4, mode="nearest"))


def test_distillation_loss_zero_when_sr_equals_hr(tmp_path: Path) -> None:
    task, _ = _task(tmp_path, pixel_weight=1.0, feature_weight=1.0, feature_layers=["layers.0", "layers.2"])
    task.net = _NearestSR()
    lr = torch.rand(4, 3, 8, 8)
    batch = {"lr": lr, "hr": F.interpolate(lr, scale_factor=4, mode="nearest"), "label": torch.arange(4)}
    task.train()
    loss = task.training_step(batch, 0)
    assert loss.item() == 0.0
    loss.backward()
    assert all(float(p.grad.abs().max()) == 0.0 for p in task.net.parameters())
    # and it is positive as soon as SR differs from HR
    batch["hr"] = batch["hr"].flip(-1)
    assert task.training_step(batch, 0).item() > 0


def test_logit_loss_is_mse() -> None:
    a, b = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[0.0, 2.0], [0.0, 3.0]])
    assert logit_distillation_loss(a, b).item() == pytest.approx((1 + 0 + 0 + 9) / 4)


def test_validation_loss_hand_case() -> None:
    # CE([0, 0], 0) = ln 2; CE([ln 3, 0], 0) = -ln(3/4); gap = ln 2 - ln(4/3) = ln 1.5
    sr = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    hr = torch.tensor([[math.log(3.0), 0.0], [0.0, math.log(3.0)]])
    y = torch.tensor([0, 1])
    assert cross_entropy_gap(sr, hr, y).item() == pytest.approx(math.log(1.5), abs=1e-6)
    assert cross_entropy_gap(hr, hr, y).item() == 0.0


class _MeanTeacher(nn.Module):
    """Logits = a fixed linear map of the per-channel image means (computable by hand)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 4.0]]))
            self.fc.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.mean((2, 3)))


def test_task_validation_loss_equals_ce_gap(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = DarioNetTask(net=_NearestSR(), teacher=_MeanTeacher(), num_classes=2, teacher_mean=(0.0, 0.0, 0.0),
                            teacher_std=(1.0, 1.0, 1.0))
    g = torch.Generator().manual_seed(3)
    hr = torch.rand(6, 3, 32, 32, generator=g)
    lr = F.avg_pool2d(hr, 4)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    res = _trainer(tmp_path, 1).validate(task, _loader([{"hr": hr, "lr": lr, "label": y}]), verbose=False)[0]
    w = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 4.0]])
    sr = F.interpolate(lr, scale_factor=4, mode="nearest")
    logits_sr, logits_hr = sr.mean((2, 3)) @ w.T, hr.mean((2, 3)) @ w.T
    expected = F.cross_entropy(logits_sr, y) - F.cross_entropy(logits_hr, y)
    assert res["val/ce_gap"] == pytest.approx(float(expected), abs=1e-5)
    assert res["val/cross_loss"] == pytest.approx(float(((logits_sr - logits_hr) ** 2).mean()), abs=1e-5)
    assert res["val/acc_hr"] == pytest.approx(float((logits_hr.argmax(1) == y).float().mean()))


def test_validation_without_labels_uses_teacher_hr_prediction(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        task = DarioNetTask(net=_NearestSR(), teacher=_MeanTeacher(), num_classes=2, teacher_mean=(0.0, 0.0, 0.0),
                            teacher_std=(1.0, 1.0, 1.0))
    hr = torch.rand(4, 3, 32, 32)
    res = _trainer(tmp_path, 1).validate(task, _loader([{"hr": hr, "lr": F.avg_pool2d(hr, 4)}]), verbose=False)[0]
    assert res["val/acc_hr"] == 1.0


def test_paper_lr_recipe_and_resize_back(tmp_path: Path) -> None:
    import torchvision.transforms.v2.functional as TF

    x = torch.rand(2, 3, 32, 32)
    deg = ResizeDegradation(0.32, blur_size=3, blur_sigma=0.2)
    lr = deg(x)
    assert lr.shape == (2, 3, 10, 10)
    # independent: torchvision's Gaussian blur (reflect padding) + antialiased bicubic resize
    ref = TF.gaussian_blur(x, [3, 3], [0.2, 0.2])
    ref = F.interpolate(ref, size=(10, 10), mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    torch.testing.assert_close(lr, ref, rtol=0, atol=1e-5)
    assert torch.allclose(gaussian_kernel(3, sigma=0.2).sum(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="scale"):
        ResizeDegradation(1.5)
    with pytest.raises(ValueError, match="odd"):
        ResizeDegradation(0.5, blur_size=2)
    task, _ = _task(tmp_path, lr_degradation=deg)
    batch = {"hr": x, "label": torch.tensor([1, 2])}
    sr = task.super_resolve(task.lr_input(batch), (32, 32))  # 10 -> 40 -> resized to 32
    assert sr.shape == (2, 3, 32, 32)
    assert task.net(task.lr_input(batch)).shape == (2, 3, 40, 40)
    assert "lr_degradation" not in task.hparams  # checkpoints stay weights_only-loadable


def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="feature_layers"):
        _task(tmp_path, feature_weight=1.0)
    with pytest.raises(AttributeError, match="nolayer"):
        _task(tmp_path, feature_weight=1.0, feature_layers=["nolayer"])
    task, _ = _task(tmp_path)
    with pytest.raises(KeyError, match="lr_degradation"):
        task.lr_input({"hr": torch.rand(1, 3, 32, 32)})
    with pytest.raises(FileNotFoundError):
        DarioNetTask(net=RRDBNet(4, nf=8, nb=1, gc=4), teacher=CifarResNet(8), net_ckpt=str(tmp_path / "missing.ckpt"))


def test_ssim_y_hand_case() -> None:
    # constant grey images: SSIM reduces to the luminance term (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)
    a, b = torch.full((1, 3, 24, 24), 0.5), torch.full((1, 3, 24, 24), 0.6)
    ya, yb = 16 + 0.5 * 219.0, 16 + 0.6 * 219.0
    c1 = (0.01 * 255) ** 2
    expected = (2 * ya * yb + c1) / (ya**2 + yb**2 + c1)
    assert float(ssim_y(a, b, quantize=False)[0]) == pytest.approx(expected, rel=1e-4)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(ssim_y(x, x, shave=4), torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="11x11"):
        ssim_y(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), shave=4)


def test_test_run_writes_figures(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    task, _ = _task(tmp_path)
    trainer = Trainer(logger=CSVLogger(tmp_path), enable_progress_bar=False, enable_model_summary=False,
                      accelerator="cpu", default_root_dir=tmp_path)
    res = trainer.test(task, _loader(_batches(2)), verbose=False)[0]
    assert {"test/ce_gap", "test/acc", "test/acc_hr", "test/psnr_y", "test/ssim_y", "test/cross_loss"} <= set(res)
    figs = Path(trainer.log_dir) / "figures"
    assert (figs / "per_class_acc.png").stat().st_size > 0 and (figs / "grid.png").stat().st_size > 0


def test_train_clamp_modes() -> None:
    """``clamp_unit``: the forward values are ``clamp(0, 1)`` for ``hard`` and
    ``straight_through``; the gradient is the identity for ``straight_through`` and zero outside
    [0, 1] for ``hard``; ``off`` is the identity."""
    from lr_lightning.methods.darionet.module import clamp_unit

    x = torch.tensor([-0.5, 0.2, 0.7, 1.3], requires_grad=True)
    for how, grad in (("straight_through", [1.0, 1.0, 1.0, 1.0]), ("hard", [0.0, 1.0, 1.0, 0.0]), ("off", [1.0, 1.0, 1.0, 1.0])):
        x.grad = None
        y = clamp_unit(x, how)
        expected = x.detach() if how == "off" else x.detach().clamp(0, 1)
        torch.testing.assert_close(y.detach(), expected, rtol=0, atol=0)
        y.sum().backward()
        torch.testing.assert_close(x.grad, torch.tensor(grad), rtol=0, atol=0)


def test_teacher_sees_clamped_sr_in_training(tmp_path: Path) -> None:
    """With the default ``train_clamp`` the teacher's training input (SR) lies in [0, 1] even
    when the SR net outputs values outside; ``off`` passes them through; ``train/out_of_range``
    logs the share outside."""
    seen: list[tuple[float, float]] = []
    for how in ("straight_through", "off"):
        task, _ = _task(tmp_path, train_clamp=how)
        with torch.no_grad():  # push the output out of range: a large bias on the last conv
            last = [m for m in task.net.modules() if isinstance(m, nn.Conv2d)][-1]
            last.bias.fill_(3.0)
        task.configure_models()
        inputs: list[Tensor] = []
        hook = task.teacher.register_forward_pre_hook(lambda _m, a, store=inputs: store.append(a[0].detach()))
        logged: dict[str, Tensor] = {}
        task.log = lambda k, v, store=logged, **_: store.__setitem__(k, v)  # type: ignore[method-assign]
        task.training_step(_batches(1)[0], 0)
        hook.remove()
        # inputs[0] = HR (no grad pass), inputs[1] = SR; undo the teacher normalisation
        sr_in = inputs[1] * task.std + task.mean
        seen.append((float(sr_in.min()), float(sr_in.max())))
        assert float(logged["train/out_of_range"]) > 0.5
    assert seen[0][0] >= -1e-5 and seen[0][1] <= 1 + 1e-5, seen
    assert seen[1][1] > 1.5, seen
