"""Architectures: shapes, parameter counts against hand computations, weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lr_lightning.nn import CifarResNet, Conv4, TimmClassifier, load_state_dict_file


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_conv4_matches_paper_table1_shapes() -> None:
    net = Conv4(num_classes=101, in_size=32)
    x = torch.randn(2, 3, 32, 32)
    feats = net.features(x)
    assert feats.shape == (2, 32, 2, 2)  # Table 1 right column: Bx32x2x2 after max pooling 4
    assert net(x).shape == (2, 101)
    # 4 x (conv3x3 + bias + BN affine) + linear, counted by hand
    convs = (3 * 32 * 9 + 32) + 3 * (32 * 32 * 9 + 32)
    bns = 4 * 2 * 32
    linear = 128 * 101 + 101
    assert _count(net) == convs + bns + linear


def test_conv4_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="multiple of 16"):
        Conv4(in_size=8)
    with pytest.raises(ValueError, match="in_size"):
        Conv4(in_size=32)(torch.randn(1, 3, 16, 16))


@pytest.mark.parametrize(("depth", "params"), [(20, 269_722), (32, 464_154), (56, 853_018)])
def test_cifar_resnet_parameter_counts(depth: int, params: int) -> None:
    # He et al. 2016 Table 6 lists 0.27M / 0.46M / 0.85M for option-A ResNet20/32/56; exact
    # counts: stem 3*16*9 + 2*16, blocks 2 convs + 2 BNs each, linear 64*10+10.
    net = CifarResNet(depth, num_classes=10)
    n = (depth - 2) // 6
    expected = 3 * 16 * 9 + 32
    for cin, cout in ((16, 16), (16, 32), (32, 64)):
        expected += (cin * cout * 9 + cout * cout * 9 + 4 * cout) + (n - 1) * (2 * cout * cout * 9 + 4 * cout)
    expected += 64 * 10 + 10
    assert _count(net) == expected == params
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert net(torch.randn(2, 3, 8, 8)).shape == (2, 10)  # works on LR inputs too


def test_option_a_shortcut_is_avgpool_plus_zero_pad() -> None:
    net = CifarResNet(8)
    block = net.layers[1]  # 16 -> 32, stride 2
    x = torch.randn(1, 16, 8, 8)
    sc = block.shortcut(x)
    ref = torch.nn.functional.avg_pool2d(x, 2)
    assert torch.equal(sc[:, :16], ref) and torch.equal(sc[:, 16:], torch.zeros_like(sc[:, 16:]))
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(10)


def test_load_state_dict_file_formats(tmp_path) -> None:
    src = CifarResNet(8)
    dst = CifarResNet(8)
    sd = src.state_dict()
    # a Lightning checkpoint written by a task ("net." prefix) and a BasicSR-style nested file
    torch.save({"state_dict": {f"net.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "a.ckpt")
    torch.save({"params": {k: v * 0 for k, v in sd.items()}, "params_ema": sd}, tmp_path / "b.pth")
    load_state_dict_file(dst, tmp_path / "a.ckpt", prefix="net.")
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in sd.items())
    dst2 = load_state_dict_file(CifarResNet(8), tmp_path / "b.pth")  # params_ema preferred
    assert all(torch.equal(dst2.state_dict()[k], v) for k, v in sd.items())
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_state_dict_file(dst, tmp_path / "missing.pt")


def test_timm_classifier_offline_with_local_weights(tmp_path) -> None:
    net = TimmClassifier("resnet10t", num_classes=7)
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    torch.save(net.model.state_dict(), tmp_path / "w.pth")
    net2 = TimmClassifier("resnet10t", num_classes=7, weights_path=str(tmp_path / "w.pth"))
    for k, v in net.model.state_dict().items():
        assert torch.equal(net2.model.state_dict()[k], v)


def test_zssr8_weight_count_and_residual() -> None:
    from lr_lightning.nn import ZSSR8

    net = ZSSR8(scale=2)
    assert _count(net) == 3 * 64 * 9 + 6 * 64 * 64 * 9 + 64 * 3 * 9 == 224_640
    lr = torch.rand(1, 3, 10, 12)
    assert net(lr).shape == (1, 3, 20, 24)
    # with a zero body the output is exactly the upsampled input (global residual)
    for m in net.body:
        if isinstance(m, nn.Conv2d):
            nn.init.zeros_(m.weight)
    assert torch.equal(net(lr), net.upsample_input(lr))


def test_load_module_weights_prefixed_or_plain(tmp_path: Path) -> None:
    """A task checkpoint (``net.*`` under ``state_dict``) and a plain state dict load the same."""
    from lr_lightning.nn import load_module_weights

    src = CifarResNet(8)
    torch.save({"state_dict": {f"net.{k}": v for k, v in src.state_dict().items()} | {"other.x": torch.zeros(1)}}, tmp_path / "task.ckpt")
    torch.save(src.state_dict(), tmp_path / "plain.pt")
    for name in ("task.ckpt", "plain.pt"):
        dst = load_module_weights(CifarResNet(8), tmp_path / name, "net.")
        for k, v in src.state_dict().items():
            assert torch.equal(v, dst.state_dict()[k]), (name, k)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_module_weights(CifarResNet(8), tmp_path / "missing.pt")


def test_cifar_resnet_group_norm_is_batch_independent_and_keeps_the_keys() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16)
    batch, group, plain = CifarResNet(8, norm="batch"), CifarResNet(8, norm="group"), CifarResNet(8, norm="none")
    assert "stem.1.running_mean" in batch.state_dict() and "stem.1.weight" in group.state_dict()
    assert not any("running" in k for k in group.state_dict()) and set(group.state_dict()) < set(batch.state_dict())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in [*group.modules(), *plain.modules()])
    for net in (group, plain):  # train mode: an image's output does not depend on the rest of the batch
        net.train()
        torch.testing.assert_close(net(x)[:1], net(x[:1]), atol=1e-5, rtol=1e-5)
    batch.train()
    assert not torch.allclose(batch(x)[:1], batch(x[:2])[:1], atol=1e-3)
    with pytest.raises(ValueError, match="norm"):
        CifarResNet(8, norm="layer")
