"""SuperResolutionTask: per-folder test PSNR equals an independent computation."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

from lr_lightning.data import SRDataModule
from lr_lightning.degrade import Degradation, upsample
from lr_lightning.methods.sr import SuperResolutionTask
from lr_lightning.metrics import psnr_y
from lr_lightning.nn import ZSSR8
from tests.conftest import write_images


def test_test_psnr_per_folder_matches_direct_computation(tmp_path: Path) -> None:
    write_images(tmp_path / "a", 2, 40, seed=1)
    write_images(tmp_path / "b", 3, 36, seed=2)
    dm = SRDataModule(root=str(tmp_path), train_dirs=["a"], val_dirs=["a"], test_dirs=["a", "b"], scale=2, patch_size=16)
    net = ZSSR8(scale=2)
    for m in net.body:  # zero body: SR = bicubic upsampling, so PSNR is computable by hand
        if isinstance(m, nn.Conv2d):
            nn.init.zeros_(m.weight)
    task = SuperResolutionTask(net=net, scale=2)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)
    res = trainer.test(task, datamodule=dm, verbose=False)
    merged = {k: v for r in res for k, v in r.items()}
    deg = Degradation(mode="bicubic_matlab", factor=2)
    every: list[float] = []
    for name in ("a", "b"):
        values = []
        for item in dm.test_sets[0 if name == "a" else 1]:
            hr = item["hr"][None].float() / 255
            sr = upsample(deg(hr), hr.shape[-2:], mode="bicubic").clamp(0, 1)
            values.append(float(psnr_y(sr, hr, shave=2)[0]))
        assert abs(merged[f"test/psnr_y/{name}"] - sum(values) / len(values)) < 1e-3
        every += values
    assert abs(merged["test/psnr_y"] - sum(every) / len(every)) < 1e-3  # mean over all 5 images, not of the 2 sets
    assert torch.isfinite(torch.tensor(list(merged.values()))).all()


def test_lr_degradation_and_resize_back() -> None:
    """Paper B's recipe: LR made from HR by blur + 0.32x in the task, x4 SR (10 -> 40) resized
    back to the HR size (32) before the loss; the L1 equals an independent computation. Without
    ``resize_mode`` the size mismatch is an error naming the fix."""
    from lr_lightning.degrade import ResizeDegradation
    from lr_lightning.nn import RRDBNet

    torch.manual_seed(0)
    deg = ResizeDegradation(0.32, blur_size=3, blur_sigma=0.2)
    task = SuperResolutionTask(net=RRDBNet(4, nf=8, nb=1, gc=4), scale=4, lr_degradation=deg, resize_mode="bicubic")
    task.configure_losses()
    hr = torch.rand(2, 3, 32, 32)
    sr = task.super_resolve({"hr": hr})
    assert sr.shape == hr.shape
    expected = upsample(task.net(deg(hr)), (32, 32), mode="bicubic")
    torch.testing.assert_close(sr, expected)
    logged: dict[str, torch.Tensor] = {}
    task.log = lambda k, v, **_: logged.__setitem__(k, v)  # type: ignore[method-assign]
    loss = task.training_step({"hr": hr}, 0)
    torch.testing.assert_close(loss, (expected - hr).abs().mean())
    assert "lr_degradation" not in task.hparams  # checkpoints stay weights_only-loadable
    plain = SuperResolutionTask(net=RRDBNet(4, nf=8, nb=1, gc=4), scale=4, lr_degradation=deg)
    plain.configure_losses()
    import pytest

    with pytest.raises(ValueError, match="resize_mode"):
        plain.training_step({"hr": hr}, 0)
