"""Paper A's MAML degradation classifier: task sampling, no test leakage, the adaptation protocol,
the CLI test stage and a 2-process DDP step."""

from __future__ import annotations

import copy
from collections import Counter
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import TensorDataset

from lr_lightning.cli import main
from lr_lightning.data import CIFARDataModule
from lr_lightning.data.base import DictTensorDataset
from lr_lightning.degrade import Degradation
from lr_lightning.methods.maml_degradation import (
    MAMLDegradationClassifier,
    adapt_and_evaluate,
    adapt_classifier,
    evaluate_classifier,
    sample_support,
    split_tasks,
)
from lr_lightning.methods.optim import OptimSpec
from lr_lightning.nn import Conv4
from tests.conftest import REPO, ddp_fit_rank_dumps, write_image_folder

CONFIG = REPO / "configs" / "maml_degradation" / "cifar10_maml_conv4_x2.yaml"


def _module(**kw) -> MAMLDegradationClassifier:
    torch.manual_seed(0)
    args = dict(inner_steps=2, test_targets=["bilinear2", "avgpool2+q5"], adapt_k=8, adapt_steps=2)
    args.update(kw)
    return MAMLDegradationClassifier(net=Conv4(num_classes=10, in_size=16), **args)


def test_task_sampling_uniform_and_reproducible() -> None:
    a, b, c = _module(task_seed=7), _module(task_seed=7), _module(task_seed=8)
    seq_a = [d.name for d in a.space.sample(6000, a.task_generator)]
    assert seq_a == [d.name for d in b.space.sample(6000, b.task_generator)]
    assert seq_a != [d.name for d in c.space.sample(6000, c.task_generator)]
    counts = Counter(seq_a)
    expected = {f"{p}2" + (f"+q{q}" if q < 32 else "") for p in ("maxpool", "avgpool") for q in (2, 3, 4, 8, 16, 32)}
    assert set(counts) == expected  # all 12 (mode, bits) tasks
    chi2 = sum((n - 500) ** 2 / 500 for n in counts.values())
    assert chi2 < 31.3  # chi-square, 11 dof, p = 0.001


def test_meta_loss_draws_its_tasks_from_the_seeded_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    m = _module(task_seed=3)
    seen: list[str] = []
    orig = m.space.sample
    monkeypatch.setattr(m.space, "sample", lambda n, g: [seen.append(d.name) or d for d in orig(n, g)])
    hr, y = torch.rand(16, 3, 32, 32), torch.randint(0, 10, (16,))
    for _ in range(3):
        m.meta_loss(hr, y)
    fresh = _module(task_seed=3)
    assert seen == [d.name for d in fresh.space.sample(12, fresh.task_generator)]


def test_split_tasks_disjoint_support_and_query() -> None:
    hr = torch.arange(32.0).view(32, 1, 1, 1).expand(32, 3, 2, 2)
    y = torch.arange(32)
    groups = split_tasks(hr, y, 4)
    ids = [int(t) for s, sy, q, qy in groups for t in torch.cat([sy, qy])]
    assert sorted(ids) == list(range(32))  # 4 tasks x (4 support + 4 query), no overlap
    assert all(len(sy) == len(qy) == 4 for _, sy, _, qy in groups)
    with pytest.warns(UserWarning, match="share"):
        assert len(split_tasks(hr[:4], y[:4], 4)) == 4


def test_maml_step_changes_weights_and_joint_has_no_inner_loop() -> None:
    m = _module()
    hr, y = torch.rand(16, 3, 32, 32), torch.randint(0, 10, (16,))
    loss, logs = m.meta_loss(hr, y)
    assert {"acc", "support_loss_first", "support_loss_last"} <= set(logs)
    assert logs["support_loss_last"] < logs["support_loss_first"]  # the inner loop adapts
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.net.parameters())
    j = _module(algorithm="joint")
    _, jlogs = j.meta_loss(hr, y)
    assert set(jlogs) == {"acc"}


@pytest.mark.parametrize("bn", ["transductive", "running"])
def test_adaptation_leaves_meta_weights_untouched(bn: str) -> None:
    m = _module(bn=bn)
    m.train()
    state = copy.deepcopy(m.state_dict())
    g = torch.Generator().manual_seed(0)
    train = DictTensorDataset(torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(40) % 10)
    test = [(torch.rand(20, 3, 32, 32, generator=g), torch.arange(20) % 10)]
    res = adapt_and_evaluate(m, train, test, Degradation("bilinear", 2), k=16, steps=3, lr=0.1, bn=bn)
    for k, v in m.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert m.training  # mode restored
    assert res.acc_before != res.acc_after or res.loss_before != res.loss_after
    # n = 0 steps: "after" is exactly "before"
    res0 = adapt_and_evaluate(m, train, test, Degradation("bilinear", 2), k=16, steps=0, lr=0.1, bn=bn)
    assert (res0.acc_after, res0.loss_after) == (res0.acc_before, res0.loss_before)


def test_adapted_weights_equal_plain_sgd_finetuning() -> None:
    m = _module(bn="running")
    x, y = torch.rand(12, 3, 16, 16), torch.randint(0, 10, (12,))
    res = adapt_classifier(m, x, y, steps=3, lr=0.05, bn="running")
    ref = copy.deepcopy(m).train()
    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ref(x), y).backward()
        opt.step()
    for n, p in ref.named_parameters():
        torch.testing.assert_close(res.params[n], p)
    acc_ours, _ = evaluate_classifier(m, [(x, y)], None, res.params, res.buffers, bn="running")
    ref.eval()
    acc_ref = 100.0 * float((ref(x).argmax(-1) == y).float().mean())
    assert acc_ours == pytest.approx(acc_ref)


def test_sample_support_validates_k() -> None:
    ds = TensorDataset(torch.zeros(3))
    with pytest.raises(ValueError, match="k must be"):
        sample_support(ds, 4, torch.Generator())


def _marked_cifar(root: Path) -> Path:
    """Tiny CIFAR whose test images are all pure white (255) and train images never are."""
    write_image_folder(root / "cifar10" / "train", 10, 6, 32)
    from PIL import Image

    for c in range(10):
        d = root / "cifar10" / "test" / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for j in range(2):
            Image.new("RGB", (32, 32), (255, 255, 255)).save(d / f"{j}.png")
    return root


class _Recorder(MAMLDegradationClassifier):
    """Records every HR image the meta-training and the protocol's support see."""

    seen: list[torch.Tensor] = []

    def meta_loss(self, hr, y):  # noqa: ANN001, ANN201
        self.seen.append(hr.detach().clone())
        return super().meta_loss(hr, y)


def test_support_and_query_never_see_test_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _marked_cifar(tmp_path / "data")
    import lr_lightning.methods.maml_degradation.module as mod

    supports: list[torch.Tensor] = []
    orig = mod.sample_support
    monkeypatch.setattr(mod, "sample_support", lambda ds, k, g: supports.append(orig(ds, k, g)[0]) or orig(ds, k, g))
    torch.manual_seed(0)
    model = _Recorder(net=Conv4(10, 16), inner_steps=1, tasks_per_step=2, test_targets=["bilinear2"], adapt_k=8)
    dm = CIFARDataModule(root=str(root), batch_size=8, eval_batch_size=4, augment=False, val_fraction=0.2)
    trainer = Trainer(max_steps=3, limit_val_batches=1, enable_progress_bar=False, logger=False,
                      enable_checkpointing=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(model, dm)
    out = trainer.test(model, dm)
    assert len(_Recorder.seen) == 3 and supports
    for hr in [*_Recorder.seen, *supports]:
        white = (hr.flatten(1) == 1.0).all(1)
        assert not white.any(), "a test image reached the meta-training / support batches"
    assert "test/acc/bilinear2" in out[0] and "test/acc_before/bilinear2" in out[0]
    assert out[0]["test/acc"] >= 0


def test_cli_test_stage_runs_the_protocol(tiny_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    common = ["--config", str(CONFIG), "--data.init_args.root", str(tiny_cifar), "--data.init_args.batch_size=16",
              "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
              "--model.init_args.adapt_k=8", "--model.init_args.inner_steps=1"]
    cli = main(["fit", *common, "--trainer.max_steps=1", "--trainer.limit_val_batches=1"])
    ckpt = cli.trainer.checkpoint_callback.last_model_path
    cli = main(["test", *common, "--ckpt_path", ckpt])
    metrics = cli.trainer.callback_metrics
    for target in ("bicubic2", "bilinear2", "nearest2", "area2", "blur2(s1.0)", "avgpool2+q5", "maxpool2+q6"):
        assert f"test/acc_before/{target}" in metrics and f"test/acc/{target}" in metrics


def test_bad_target_factor_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"'bilinear4' gives \(8, 8\) inputs .* the task space gives \(16, 16\)"):
        _module(test_targets=["bilinear4"])
    _module(test_targets=["bilinear4+up16", "bicubic3+n10+up16"])  # brought to the space's size: accepted


def test_ddp_two_processes_identical_weights(tiny_cifar: Path, tmp_path: Path) -> None:
    """A 2-process DDP meta-step (CLI subprocess): both ranks end with the same weights."""
    start, r0, r1 = ddp_fit_rank_dumps(
        CONFIG, tiny_cifar, tmp_path,
        ["--trainer.max_steps=2", "--data.init_args.batch_size=16", "--model.init_args.inner_steps=2", "--model.init_args.optim.learning_rate=0.01"],
    )
    assert not torch.equal(r0["tasks"], r1["tasks"])  # the ranks sampled different tasks
    for k, v in r0["state"].items():
        torch.testing.assert_close(v, r1["state"][k], rtol=0, atol=0, msg=k)
    assert not torch.equal(start["state"]["net.classifier.weight"], r0["state"]["net.classifier.weight"])  # 2 steps were taken
    # the ranks saw different data and tasks, so identical weights mean averaged meta-gradients


def test_warns_on_single_class_evaluation_batches() -> None:
    m = _module()
    with pytest.warns(UserWarning, match="single class"):
        m._check_mixed(torch.full((16,), 3), "test")
    import warnings as w

    with w.catch_warnings():
        w.simplefilter("error")
        m._check_mixed(torch.full((16,), 3), "test")  # only once per stage
        m._check_mixed(torch.arange(16) % 10, "validation")  # class-mixed: silent


def test_variants_adapt_what_they_name_and_learnt_rates_get_the_meta_gradient() -> None:
    """ANIL adapts the head, BN-only the BatchNorm affine parameters, Meta-SGD meta-learns one
    rate per parameter tensor and step; all on the rich task space at one 16 x 16 input size."""
    hr, y = torch.rand(16, 3, 32, 32), torch.randint(0, 10, (16,))
    anil = _module(inner_params="head", space_preset="rich", test_targets=["bicubic8+up16"])
    assert anil.adapted_names() == ["classifier.weight", "classifier.bias"]
    loss, _ = anil.meta_loss(hr, y)
    loss.backward()  # the body gets the outer gradient although the inner loop leaves it fixed
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in anil.net.parameters())
    bn = _module(inner_params="bn")
    names = bn.adapted_names()
    assert names and all(isinstance(bn.net.get_submodule(n.rsplit(".", 1)[0]), torch.nn.BatchNorm2d) for n in names)
    msgd = _module(learn_inner_lr=True, tasks=["bicubic2", "bicubic3+n8+up16", "blur2(s1.2)+jpeg50"])
    assert set(msgd.inner_lrs) == {n.replace(".", "__") for n in msgd.adapted_names()}
    assert all(v.shape == (2,) and torch.all(v == 0.01) for v in msgd.inner_lrs.values())
    loss, _ = msgd.meta_loss(hr, y)
    loss.backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in msgd.inner_lrs.values())
    rates = msgd.adaptation_rates("net.")
    assert isinstance(rates, dict) and set(rates) == set(msgd.adapted_names("net.")) and not rates["net.classifier.bias"].requires_grad
    assert _module().adaptation_rates("net.", 0.03) == 0.03
    with pytest.raises(ValueError, match="tasks or space_preset"):
        _module(tasks=["bicubic2"], space_preset="rich")


class _TwoRanksInOne(MAMLDegradationClassifier):
    """One process doing what 2 DDP ranks do: rank r's images are positions r, r + 2, ... of the
    batch (the ResumableSampler's sharding) and its tasks come from its own generator (task_seed +
    1000003 r); DDP averages the ranks' meta-gradients, i.e. differentiates the mean of their
    meta-losses."""

    def on_fit_start(self) -> None:
        self.rank_generators = [torch.Generator().manual_seed(self.hparams.task_seed + 1000003 * r) for r in (0, 1)]

    def meta_loss(self, hr, y):
        losses = []
        for r, gen in enumerate(self.rank_generators):
            self.task_generator = gen
            losses.append(super().meta_loss(hr[r::2], y[r::2])[0])
        return torch.stack(losses).mean(), {}


@pytest.mark.slow
def test_ddp_meta_gradient_equals_one_process_of_both_ranks(tiny_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DDP equivalence (issue 17): 2 processes with batch B end with the weights of one process
    with batch 2B that meta-learns on both ranks' tasks and images (second order, SGD, 3 steps; not
    Adam: the conv biases before BatchNorm have a zero gradient up to rounding, which Adam's
    normalisation would turn into full-size steps of random sign)."""
    args = ["--trainer.max_steps=3", "--data.init_args.batch_size=8", "--data.init_args.augment=false",
            "--model.init_args.inner_steps=2", "--model.init_args.optim.name=sgd",
            "--model.init_args.optim.learning_rate=0.05", "--trainer.num_sanity_val_steps=0"]
    (tmp_path / "ddp").mkdir()
    start, r0, r1 = ddp_fit_rank_dumps(CONFIG, tiny_cifar, tmp_path / "ddp", args)
    monkeypatch.setenv("LR_LIGHTNING_DATA", str(tiny_cifar))
    m = _TwoRanksInOne(net=Conv4(num_classes=10, in_size=16), inner_steps=2, tasks_per_step=4, task_batches="shared",
                       test_targets=[], optim=OptimSpec(name="sgd", learning_rate=0.05))
    m.load_state_dict(start["state"])
    dm = CIFARDataModule(batch_size=16, eval_batch_size=16, augment=False, seed=0)
    Trainer(max_steps=3, accelerator="cpu", devices=1, precision="32-true", logger=False, default_root_dir=tmp_path,
            limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False).fit(m, dm)
    assert [g.get_state().tolist() for g in m.rank_generators] == [r0["tasks"].tolist(), r1["tasks"].tolist()]
    moved = 0
    for k, v in m.state_dict().items():
        torch.testing.assert_close(r0["state"][k], r1["state"][k], rtol=0, atol=0, msg=k)
        err = (r0["state"][k] - v).abs().max().item()
        update = (v - start["state"][k]).abs().max().item() if v.is_floating_point() else 0.0
        assert err <= 1e-7 + 1e-3 * update, f"{k}: max difference {err:.3g}, update {update:.3g}"
        moved += int(k.startswith("net.") and not torch.equal(start["state"][k], v))
    assert moved >= 8
