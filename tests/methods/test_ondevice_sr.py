"""Paper E end to end: degradations (Eq. 1), the online stage (Alg. 2), masks (Eq. 7-9), the stages."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from lr_lightning.degrade import gaussian_kernel
from lr_lightning.degrade.zero_shot import (
    KernelDistribution,
    kernel_downsample,
    make_son,
    stack_kernels,
)
from lr_lightning.methods.ondevice_sr import (
    GradientMasks,
    OnlineSpec,
    ZSSRMetaLearn,
    knapsack_masks,
    layerwise_masks,
    load_masks,
    multi_step_weights,
    prepare_network,
    save_masks,
    zero_shot_adapt,
)
from lr_lightning.nn import ZSSR8
from lr_lightning.quant import IntConv2d, integer_layers


def _trained_like_net(scale: int = 2, seed: int = 0) -> ZSSR8:
    """A ZSSR-8 with weights large enough that a few SGD steps change its output measurably."""
    torch.manual_seed(seed)
    net = ZSSR8(scale=scale, width=16, depth=4)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(3.0)
    return net


def _image(seed: int = 0, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, size // 4, size // 4, generator=g)
    return torch.nn.functional.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)


# -- Eq. 1 ---------------------------------------------------------------------------------------------
def test_kernel_downsample_matches_scipy_per_image() -> None:
    g = torch.Generator().manual_seed(3)
    ks = KernelDistribution(sigma_max=2.0, size_max=13).sample(3, g)
    hr = torch.rand(3, 3, 24, 24, dtype=torch.float64)
    lr = kernel_downsample(hr, ks, 2)
    for i, k in enumerate(ks):
        for c in range(3):
            ref = ndimage.correlate(hr[i, c].numpy(), k.double().numpy(), mode="nearest")[::2, ::2]
            np.testing.assert_allclose(lr[i, c].numpy(), ref, atol=1e-10)


def test_kernel_distribution_is_seeded_and_valid() -> None:
    dist = KernelDistribution.for_scale(4)
    a = dist.sample(20, torch.Generator().manual_seed(0))
    b = dist.sample(20, torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    for k in a:
        assert k.shape[0] % 2 == 1 and dist.size_min <= k.shape[0] <= dist.size_max
        assert abs(float(k.sum()) - 1) < 1e-5
    assert len({k.shape[0] for k in a}) > 1  # random size
    padded = stack_kernels(a)
    assert padded.shape[1] == max(k.shape[0] for k in a)


def test_make_son_shapes_and_mod_crop() -> None:
    lr = torch.rand(1, 3, 27, 30)
    son, target = make_son(lr, gaussian_kernel(7, sigma=1.0), 4)
    assert target.shape[-2:] == (24, 28) and son.shape[-2:] == (6, 7)
    with pytest.raises(ValueError, match="divisible"):
        kernel_downsample(torch.rand(1, 3, 10, 10), gaussian_kernel(3, sigma=1.0), 4)


# -- Alg. 2 --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arithmetic", ["float", "integer"])
def test_online_stage_leaves_theta_untouched_and_is_deterministic(arithmetic: str) -> None:
    net = _trained_like_net()
    before = copy.deepcopy(net.state_dict())
    hr = _image(1)
    k = gaussian_kernel(7, sigma=1.2)
    lr = kernel_downsample(hr, k, 2)
    r1 = zero_shot_adapt(net, lr, k, 2, steps=3, learning_rate=0.05, arithmetic=arithmetic, hr=hr, curve=True)
    r2 = zero_shot_adapt(net, lr, k, 2, steps=3, learning_rate=0.05, arithmetic=arithmetic, hr=hr, curve=True)
    for name, v in net.state_dict().items():
        assert torch.equal(v, before[name]), name
    assert torch.equal(r1.sr, r2.sr) and r1.psnr_curve == r2.psnr_curve
    assert len(r1.psnr_curve) == 4 and len(r1.losses) == 3
    assert r1.losses[-1] < r1.losses[0]  # the son-pair loss goes down
    assert not torch.equal(r1.sr, zero_shot_adapt(net, lr, k, 2, steps=0, arithmetic=arithmetic).sr)


def test_float_online_update_is_sgd_on_the_son_pair() -> None:
    """One float update equals theta - gamma * grad of the L1 son loss, computed independently."""
    net = _trained_like_net()
    k = gaussian_kernel(5, sigma=0.8)
    lr = kernel_downsample(_image(2), k, 2)
    gamma = 0.1
    res = zero_shot_adapt(net, lr, k, 2, steps=1, learning_rate=gamma, arithmetic="float")
    ref = copy.deepcopy(net)
    son = kernel_downsample(lr, k, 2)
    loss = (ref(son) - lr).abs().mean()
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    with torch.no_grad():
        for p, g in zip(ref.parameters(), grads, strict=True):
            p.sub_(gamma * g)
        expected = ref(lr).clamp(0, 1)
    torch.testing.assert_close(res.sr, expected, rtol=1e-5, atol=1e-6)


def test_integer_online_update_touches_only_kept_filters() -> None:
    net = _trained_like_net()
    keep = [torch.tensor([0, 2, 5]), torch.arange(16), torch.tensor([1, 3])]
    inet = prepare_network(net, arithmetic="integer", keep=keep)
    layers = integer_layers(inet)
    assert all(isinstance(m, IntConv2d) for m in layers)
    before = [m.weight_v.clone() for m in layers]
    k = gaussian_kernel(5, sigma=1.0)
    lr = kernel_downsample(_image(3), k, 2)
    son = kernel_downsample(lr, k, 2)
    (inet(son) - lr).abs().mean().backward()
    from lr_lightning.quant import eq15_update

    for m in layers:
        if m.wgrad is not None:
            eq15_update(m, 0.05)
    for i, (m, b) in enumerate(zip(layers, before, strict=True)):
        changed = (m.weight_v != b).flatten(1).any(1)
        allowed = torch.zeros(m.out_channels, dtype=torch.bool)
        allowed[keep[i] if i < len(keep) else torch.arange(m.out_channels)] = True
        assert not bool((changed & ~allowed).any()), f"layer {i} changed a masked filter"
        assert bool(changed.any()), f"layer {i} did not update"


def test_layerwise_masks_freeze_front_layers() -> None:
    net = _trained_like_net()
    keep = [torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long), torch.arange(16)]
    for arithmetic in ("float", "integer"):
        adapted = prepare_network(net, arithmetic=arithmetic, keep=keep)
        w0 = [m.weight.detach().clone() for m in adapted.modules() if isinstance(m, (torch.nn.Conv2d, IntConv2d))]
        k = gaussian_kernel(5, sigma=1.0)
        lr = kernel_downsample(_image(4), k, 2)
        res = zero_shot_adapt(net, lr, k, 2, steps=2, learning_rate=0.05, arithmetic=arithmetic, keep=keep)
        assert res.sr.shape == (1, 3, 32, 32) and len(w0) == 4


# -- masks (Eq. 7-9) -----------------------------------------------------------------------------------
def test_knapsack_masks_respect_the_budget_and_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    norms = [rng.random(64) * (i + 1) for i in range(7)]
    c_in = [3] + [64] * 6
    sets = {f"{r:g}": knapsack_masks(norms, c_in, r) for r in (0.27, 0.5, 0.85)}
    fr = [sets[k]["cost_fraction"] for k in ("0.27", "0.5", "0.85")]
    assert fr[0] > fr[1] > fr[2] > 0
    for m in sets.values():
        for ix, c, n in zip(m["indices"], m["kept"], norms, strict=True):
            assert len(ix) == c and c % 8 == 0
            assert set(ix) == set(np.argsort(-n, kind="stable")[:c].tolist())  # the most important filters
    sets["layerwise:0.5"] = layerwise_masks([64] * 7, 3, 0.5)
    path = save_masks(tmp_path / "m.json", norms, c_in, sets)
    got = load_masks(path, 0.5)
    assert [len(g) for g in got] == sets["0.5"]["kept"]
    assert [len(g) for g in load_masks(path, 0.0)] == [64] * 7
    assert [len(g) for g in load_masks(path, 0.5, "layerwise")] == [0, 0, 0, 64, 64, 64, 64]
    with pytest.raises(KeyError, match="0.67"):
        load_masks(path, 0.67)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "x"}))
    with pytest.raises(ValueError, match="not a gradient masks file"):
        load_masks(bad, 0.5)


def test_gradient_masks_stage_keeps_theta_frozen(tmp_path: Path) -> None:
    net = _trained_like_net(scale=2)
    task = GradientMasks(net=net, scale=2, masks_path=str(tmp_path / "m.json"), prune_ratios=[0.5])
    before = copy.deepcopy(net.state_dict())
    hr = torch.rand(2, 3, 16, 16)
    task.manual_backward = lambda loss: loss.backward()  # outside a Trainer
    task.log = lambda *a, **k: None
    task.training_step({"hr": hr}, 0)
    assert all(n.any() for n in task.norms)
    for name, v in net.state_dict().items():
        assert torch.equal(v, before[name])
    task.on_train_end()
    doc = json.loads((tmp_path / "m.json").read_text())
    assert "0.5" in doc["masks"] and "layerwise:0.5" in doc["masks"]
    assert doc["provenance"]["seed"] == 0 and doc["provenance"]["init_weights"] is None


# -- meta-learning -------------------------------------------------------------------------------------
def test_multi_step_weights_anneal_to_the_last_step() -> None:
    w0, w1 = multi_step_weights(5, 0.0), multi_step_weights(5, 1.0)
    assert w0 == pytest.approx([0.2] * 5) and w1 == pytest.approx([0, 0, 0, 0, 1])
    assert sum(multi_step_weights(5, 0.3)) == pytest.approx(1.0)


def test_meta_batch_size_error_names_the_fix() -> None:
    task = ZSSRMetaLearn(net=ZSSR8(scale=2, width=8, depth=3), scale=2, tasks_per_step=2, support_size=2, query_size=2)
    with pytest.raises(ValueError, match="data.batch_size=8"):
        task.training_step({"hr": torch.rand(4, 3, 16, 16)}, 0)


def test_online_spec_checks() -> None:
    with pytest.raises(ValueError, match="masks_path"):
        OnlineSpec(prune_ratio=0.5)
    with pytest.raises(ValueError, match="scales_path"):
        OnlineSpec(scales="static")
    assert OnlineSpec.coerce({"steps": 3}).steps == 3


# -- the chain through the CLI: offline -> masks -> online (test and predict) ------------------------
def test_offline_masks_online_chain_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lr_lightning.cli import main
    from tests.conftest import REPO, write_images

    root = tmp_path / "data"
    for d, n in (("sr/Urban100", 2), ("sr/Set14", 1), ("sr/Set5", 2)):
        write_images(root / d, n, 48, seed=len(d))
    kernel = root / "k.npy"
    np.save(kernel, gaussian_kernel(9, sigma=1.2).numpy())
    lr_dir = tmp_path / "lr_inputs"
    write_images(lr_dir, 2, 12, seed=5)
    monkeypatch.chdir(tmp_path)
    cfg = REPO / "configs" / "ondevice_sr"
    tiny = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            "--trainer.num_sanity_val_steps=0", f"--data.init_args.root={root}", "--data.init_args.patch_size=16",
            f"--data.init_args.test_kernels=[{kernel}]", "--model.init_args.net.init_args.width=8",
            "--model.init_args.online.steps=2"]
    pre = main(["fit", "--config", str(cfg / "pretrain_meta_x4.yaml"), *tiny, "--trainer.max_steps=2",
                "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--data.init_args.batch_size=2"])
    ckpt = Path(pre.trainer.checkpoint_callback.last_model_path)
    masks = tmp_path / "masks.json"
    main(["fit", "--config", str(cfg / "masks_x4.yaml"), *tiny, "--trainer.limit_train_batches=2",
          "--data.init_args.batch_size=2", f"--model.init_args.init_weights={ckpt}", f"--model.init_args.masks_path={masks}"])
    doc = json.loads(masks.read_text())
    assert set(doc["masks"]) >= {"0.27", "0.5", "0.67", "0.85"} and doc["c_out"] == [8] * 7
    online = ["--config", str(cfg / "online_x4.yaml"), *tiny, f"--model.init_args.init_weights={ckpt}",
              f"--model.init_args.online.masks_path={masks}", "--model.init_args.online.prune_ratio=0.5"]
    test = main(["test", *online])
    rec = json.loads((Path(test.trainer.log_dir) / "online_test.json").read_text())
    assert len(rec["images"]) == 2 and len(rec["images"][0]["curve"]) == 3
    assert rec["online"]["prune_ratio"] == 0.5 and rec["online"]["arithmetic"] == "integer"
    out = tmp_path / "sr_out"
    main(["predict", *online, f"--data.init_args.predict_dir={lr_dir}", f"--data.init_args.predict_kernel={kernel}",
          f"--model.init_args.output_dir={out}"])
    from PIL import Image

    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2 and Image.open(pngs[0]).size == (48, 48)
