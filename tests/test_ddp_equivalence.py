"""DDP equivalence, not just identical ranks: 2 CPU processes with batch B each end with the
parameters of one process with batch 2B, after a few steps (fp32; the ranks agree exactly, the
single process within float32 reduction-order noise). Covered here: paper E's SR network (the SR
task on Urban100 patches), DarioNet (paper B: SR net distilled from a frozen teacher, whose
weights and BatchNorm buffers must stay the file's on every rank) and PatchDrop's REINFORCE step
(paper C, Ft-1: policy and HR classifier, sampled and greedy masks, advantages; GroupNorm nets and
``sample_seed`` so both runs draw the same actions). Networks with BatchNorm in training mode are
not equivalent on CPU: each rank normalises its own B images and PyTorch's SyncBatchNorm needs
GPUs (docs/foundation.md). MAML's test is in tests/methods/test_maml_degradation.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lr_lightning.cli import main
from lr_lightning.nn import CifarResNet
from tests.conftest import REPO, ddp_fit_rank_dumps

COMMON = ["--trainer.max_steps=3", "--trainer.precision=32-true", "--model.init_args.optim.name=sgd",
          "--model.init_args.optim.learning_rate=0.01", "--trainer.num_sanity_val_steps=0",
          "--trainer.limit_val_batches=1", "--model.init_args.channels_last=false"]


def _compare(start: dict, r0: dict, r1: dict, ref: dict[str, torch.Tensor], prefix: str) -> None:
    moved = 0
    for k, v in ref.items():
        torch.testing.assert_close(r0["state"][k], r1["state"][k], rtol=0, atol=0, msg=k)  # ranks agree exactly
        # = one process of batch 2B: the difference is float32 noise, small against the training update
        err = (r0["state"][k] - v).abs().max().item()
        update = (v - start["state"][k]).abs().max().item() if v.is_floating_point() else 0.0
        assert err <= 1e-7 + 1e-3 * update, f"{k}: max difference {err:.3g}, update {update:.3g}"
        moved += int(k.startswith(prefix) and not torch.equal(start["state"][k], v))
    assert moved >= 3  # trained weights are compared, not the initialisation


def _single(config: Path, args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, torch.Tensor]:
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", "--config", str(config), *args, "--trainer.enable_progress_bar=false", "--trainer.devices=1"])
    return cli.model.state_dict()


@pytest.mark.slow
def test_sr_net_two_processes_equal_one(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = REPO / "configs" / "sr" / "urban100_zssr8_x2.yaml"
    args = [*COMMON, "--data.init_args.patch_size=32", f"--data.init_args.root={data_root}"]
    (tmp_path / "ddp").mkdir()
    start, r0, r1 = ddp_fit_rank_dumps(config, data_root, tmp_path / "ddp", [*args, "--data.init_args.batch_size=4"])
    ref = _single(config, [*args, "--data.init_args.batch_size=8"], tmp_path, monkeypatch)
    _compare(start, r0, r1, ref, "net.")


@pytest.mark.slow
def test_darionet_two_processes_equal_one(tiny_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    teacher = CifarResNet(20, num_classes=10)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    config = REPO / "configs" / "darionet" / "darionet_cifar10_x4.yaml"
    args = [*COMMON, f"--data.init_args.root={tiny_cifar}", "--data.init_args.augment=false",
            "--model.init_args.net.init_args.nf=8", "--model.init_args.net.init_args.nb=1",
            "--model.init_args.net.init_args.gc=4", f"--model.init_args.teacher_ckpt={tmp_path / 'teacher.pt'}"]
    (tmp_path / "ddp").mkdir()
    start, r0, r1 = ddp_fit_rank_dumps(config, tiny_cifar, tmp_path / "ddp", [*args, "--data.init_args.batch_size=4"])
    ref = _single(config, [*args, "--data.init_args.batch_size=8"], tmp_path, monkeypatch)
    _compare(start, r0, r1, ref, "net.")
    for k, v in teacher.state_dict().items():  # the frozen teacher, buffers included, on both ranks
        for rank in (r0, r1):
            torch.testing.assert_close(rank["state"][f"teacher.{k}"], v, rtol=0, atol=0, msg=k)


@pytest.mark.slow
def test_patchdrop_reinforce_two_processes_equal_one(tiny_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ft-1: REINFORCE policy loss with the self-critical advantage plus the HR classifier's
    cross-entropy, both networks trained. With ``sample_seed`` the ranks draw the global batch's
    actions (rank r: rows r, r + 2, ...), and GroupNorm keeps every image's features independent
    of the batch, so 2 x batch 4 = 1 x batch 8."""
    config = REPO / "configs" / "patchdrop" / "cifar10_ft1.yaml"
    args = [*COMMON, f"--data.init_args.root={tiny_cifar}", "--data.init_args.augment=false",
            "--model.init_args.optim.group_learning_rates={hr_classifier: 0.01}", "--model.init_args.sample_seed=3",
            "--model.init_args.hr_classifier.init_args.depth=8", "--model.init_args.hr_classifier.init_args.norm=group",
            "--model.init_args.policy.init_args.norm=group", "--model.init_args.sigma=0.5"]
    (tmp_path / "ddp").mkdir()
    start, r0, r1 = ddp_fit_rank_dumps(config, tiny_cifar, tmp_path / "ddp", [*args, "--data.init_args.batch_size=4"])
    ref = _single(config, [*args, "--data.init_args.batch_size=8"], tmp_path, monkeypatch)
    _compare(start, r0, r1, ref, "model.policy.")
    moved = [k for k in ref if k.startswith("model.hr_classifier.") and not torch.equal(start["state"][k], ref[k])]
    assert len(moved) >= 3  # the classifier trained too
    assert int(ref["model.policy_updates"]) == 3 == int(r0["state"]["model.policy_updates"])
