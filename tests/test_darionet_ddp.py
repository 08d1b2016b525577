"""DarioNet stage 2 under DDP on 2 CPU processes (CLI subprocess with a timeout)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lr_lightning.nn import CifarResNet
from tests.conftest import REPO


@pytest.mark.slow
def test_darionet_ddp_two_cpu_processes(tiny_cifar: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = CifarResNet(20, num_classes=10)
    teacher_ckpt = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), teacher_ckpt)  # a plain state dict (no prefix)
    env = {**os.environ, "LR_LIGHTNING_DATA": str(tiny_cifar), "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable, "-m", "lr_lightning", "fit",
        "--config", str(REPO / "configs" / "darionet" / "darionet_cifar10_x4.yaml"),
        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
        "--trainer.max_steps=2", "--trainer.limit_val_batches=1", f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false", "--data.init_args.batch_size=4",
        "--model.init_args.net.init_args.nf=8", "--model.init_args.net.init_args.nb=1",
        "--model.init_args.net.init_args.gc=4", f"--model.init_args.teacher_ckpt={teacher_ckpt}",
    ]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpts = list(tmp_path.rglob("last.ckpt"))
    assert ckpts, out.stderr[-2000:]
    state = torch.load(ckpts[0], map_location="cpu", weights_only=True)["state_dict"]
    # the teacher in the checkpoint is still the file's teacher after 2 DDP steps
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(state[f"teacher.{k}"], v, rtol=0, atol=0)
    assert any(k.startswith("net.") for k in state)
