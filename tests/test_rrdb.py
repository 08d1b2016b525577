"""RRDBNet (ESRGAN generator): shapes, parameter count, and loading both checkpoint layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lr_lightning.nn import RRDBNet, load_state_dict_file


def _count(nf: int, nb: int, gc: int, cin: int = 3, cout: int = 3, stages: int = 2) -> int:
    """Parameters of the ESRGAN generator from its layer list (weights + biases, 3x3 convs)."""
    conv = lambda i, o: i * o * 9 + o  # noqa: E731
    rdb = sum(conv(nf + k * gc, gc) for k in range(4)) + conv(nf + 4 * gc, nf)
    return conv(cin, nf) + nb * 3 * rdb + conv(nf, nf) * (1 + stages + 1) + conv(nf, cout)


def test_esrgan_default_parameter_count() -> None:
    net = RRDBNet()  # x4, nf 64, nb 23, gc 32
    n = sum(p.numel() for p in net.parameters())
    assert n == _count(64, 23, 32) == 16_697_987
    assert sum(p.numel() for p in RRDBNet(preset="esrgan").parameters()) == n


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shapes(scale: int) -> None:
    net = RRDBNet(scale=scale, nf=8, nb=1, gc=4)
    out = net(torch.rand(2, 3, 7, 5))
    assert out.shape == (2, 3, 7 * scale, 5 * scale)
    stages = 2 if scale == 4 else 1
    assert sum(p.numel() for p in net.parameters()) == _count(8, 1, 4, stages=stages)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="scale 2, 3 or 4"):
        RRDBNet(scale=8)
    with pytest.raises(ValueError, match="preset"):
        RRDBNet(preset="huge")  # type: ignore[arg-type]


def _to_old_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BasicSR names -> the original ESRGAN repository's names (written out independently)."""
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if parts[0] == "body":
            k = f"RRDB_trunk.{parts[1]}.RDB{parts[2][-1]}.{'.'.join(parts[3:])}"
        else:
            k = {"conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2", "conv_hr": "HRconv"}.get(
                parts[0], parts[0]) + "." + ".".join(parts[1:])
        out[k] = v
    return out


def test_loads_old_esrgan_layout(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = RRDBNet(nf=8, nb=2, gc=4)
    old = _to_old_layout(src.state_dict())
    assert "RRDB_trunk.1.RDB3.conv5.weight" in old and "HRconv.bias" in old and "trunk_conv.weight" in old
    torch.save(old, tmp_path / "RRDB_ESRGAN_x4.pth")
    dst = load_state_dict_file(RRDBNet(nf=8, nb=2, gc=4), tmp_path / "RRDB_ESRGAN_x4.pth")
    x = torch.rand(1, 3, 6, 6)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    # and through the constructor argument
    dst2 = RRDBNet(nf=8, nb=2, gc=4, weights_path=str(tmp_path / "RRDB_ESRGAN_x4.pth"))
    torch.testing.assert_close(dst2(x), src(x), rtol=0, atol=0)


def test_loads_basicsr_layout_prefers_params_ema(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ema, raw = RRDBNet(nf=8, nb=1, gc=4), RRDBNet(nf=8, nb=1, gc=4)
    assert "body.0.rdb1.conv1.weight" in ema.state_dict() and "conv_hr.weight" in ema.state_dict()
    torch.save({"params": raw.state_dict(), "params_ema": ema.state_dict()}, tmp_path / "both.pth")
    torch.save({"params": raw.state_dict()}, tmp_path / "params.pth")
    x = torch.rand(1, 3, 5, 5)
    got = load_state_dict_file(RRDBNet(nf=8, nb=1, gc=4), tmp_path / "both.pth")
    torch.testing.assert_close(got(x), ema(x), rtol=0, atol=0)
    got = load_state_dict_file(RRDBNet(nf=8, nb=1, gc=4), tmp_path / "params.pth")
    torch.testing.assert_close(got(x), raw(x), rtol=0, atol=0)


def test_loads_task_checkpoint_with_prefix_and_rejects_mismatch(tmp_path: Path) -> None:
    src = RRDBNet(nf=8, nb=1, gc=4)
    state = {f"net.{k}": v for k, v in _to_old_layout(src.state_dict()).items()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "task.ckpt")
    got = RRDBNet(nf=8, nb=1, gc=4, weights_path=str(tmp_path / "task.ckpt"), weights_prefix="net.")
    x = torch.rand(1, 3, 4, 4)
    torch.testing.assert_close(got(x), src(x), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="size mismatch"):
        RRDBNet(nf=16, nb=1, gc=4, weights_path=str(tmp_path / "task.ckpt"), weights_prefix="net.")
