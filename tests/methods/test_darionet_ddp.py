"""DarioNet stage 2 under DDP on 2 CPU processes (CLI subprocess with a timeout)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lr_lightning.nn import CifarResNet
from tests.conftest import REPO, ddp_fit_rank_dumps


@pytest.mark.slow
def test_darionet_ddp_two_cpu_processes(tiny_cifar: Path, tmp_path: Path) -> None:
    """Both ranks end with the same SR weights, changed by training; the frozen teacher is the
    file's teacher on both ranks."""
    torch.manual_seed(0)
    teacher = CifarResNet(20, num_classes=10)
    teacher_ckpt = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), teacher_ckpt)  # a plain state dict (no prefix)
    start, r0, r1 = ddp_fit_rank_dumps(
        REPO / "configs" / "darionet" / "darionet_cifar10_x4.yaml", tiny_cifar, tmp_path,
        ["--trainer.max_steps=2", "--data.init_args.batch_size=4", "--model.init_args.net.init_args.nf=8",
         "--model.init_args.net.init_args.nb=1", "--model.init_args.net.init_args.gc=4",
         f"--model.init_args.teacher_ckpt={teacher_ckpt}"],
    )
    net_keys = [k for k in r0["state"] if k.startswith("net.")]
    assert net_keys
    for k in net_keys:
        torch.testing.assert_close(r0["state"][k], r1["state"][k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(start["state"][k], r0["state"][k]) for k in net_keys)
    for rank in (r0, r1):
        for k, v in teacher.state_dict().items():
            torch.testing.assert_close(rank["state"][f"teacher.{k}"], v, rtol=0, atol=0, msg=k)
