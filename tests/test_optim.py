"""OptimSpec: the optimiser / schedule it builds, named parameter groups, config overrides that
keep a method's paper defaults, and checkpoints that store it as plain data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from timm.optim import RMSpropTF
from torch import nn

from lr_lightning.cli import main
from lr_lightning.methods import ImageClassifier
from lr_lightning.methods.optim import (
    AUTORESOLUTION_OPTIM,
    CLASSIFIER_OPTIM,
    OptimSpec,
    build_optimizer,
    build_scheduler,
)
from lr_lightning.nn import CifarResNet
from tests.conftest import REPO


def _groups() -> dict[str, list[nn.Parameter]]:
    return {"a": list(nn.Linear(2, 2).parameters()), "b": list(nn.Linear(2, 1).parameters())}


def test_optimizers_and_their_settings() -> None:
    sgd = build_optimizer(CLASSIFIER_OPTIM, _groups())
    assert isinstance(sgd, torch.optim.SGD)
    g = sgd.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"], g["nesterov"]) == (0.1, 0.9, 5e-4, True)
    assert not build_optimizer(OptimSpec(name="sgd", momentum=0.0), _groups()).param_groups[0]["nesterov"]
    adam = build_optimizer(OptimSpec(name="adam", learning_rate=2e-4, betas=[0.9, 0.99]), _groups())
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["betas"] == (0.9, 0.99)
    assert isinstance(build_optimizer(OptimSpec(name="adamw"), _groups()), torch.optim.AdamW)
    tf = build_optimizer(AUTORESOLUTION_OPTIM, _groups())
    assert isinstance(tf, RMSpropTF) and tf.param_groups[0]["eps"] == 1.0 and tf.param_groups[0]["alpha"] == 0.9
    assert isinstance(build_optimizer(OptimSpec(name="rmsprop"), _groups()), torch.optim.RMSprop)


def test_named_groups_and_their_learning_rates() -> None:
    opt = build_optimizer(OptimSpec(learning_rate=1e-3, group_learning_rates={"b": 5e-2}), _groups())
    assert [(g["name"], g["lr"]) for g in opt.param_groups] == [("a", 1e-3), ("b", 5e-2)]
    with pytest.raises(ValueError, match=r"names \['c'\].*\['a', 'b'\]"):
        build_optimizer(OptimSpec(group_learning_rates={"c": 1.0}), _groups())
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer(OptimSpec(), {"a": []})


def test_schedules_follow_the_spec() -> None:
    opt = build_optimizer(AUTORESOLUTION_OPTIM, _groups())
    sched, interval = build_scheduler(AUTORESOLUTION_OPTIM, opt, 100)
    assert interval == "epoch"
    rates = []
    for _ in range(5):
        rates.append(opt.param_groups[0]["lr"])
        sched.step()
    assert rates == pytest.approx([0.003, 0.003, 0.003 * 0.94, 0.003 * 0.94, 0.003 * 0.94**2])  # x0.94 every 2 epochs
    opt = build_optimizer(CLASSIFIER_OPTIM, _groups())
    sched, interval = build_scheduler(CLASSIFIER_OPTIM, opt, 10)
    assert interval == "step"
    for _ in range(5):
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)  # half-way down the cosine
    assert build_scheduler(OptimSpec(), opt, 10) is None
    opt = build_optimizer(OptimSpec(scheduler="multistep", milestones=[1], gamma=0.5), _groups())
    sched, _ = build_scheduler(OptimSpec(scheduler="multistep", milestones=[1], gamma=0.5), opt, 10)
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)


def test_spec_validation_and_plain_data_round_trip() -> None:
    with pytest.raises(ValueError, match="learning_rate"):
        OptimSpec(learning_rate=-1.0)
    with pytest.raises(ValueError, match="unknown OptimSpec fields"):
        OptimSpec.coerce({"lr": 0.1})
    spec = OptimSpec.coerce(CLASSIFIER_OPTIM.to_dict())
    assert spec == CLASSIFIER_OPTIM and OptimSpec.coerce(None, CLASSIFIER_OPTIM) is CLASSIFIER_OPTIM


def test_partial_config_override_keeps_the_methods_defaults(tmp_path: Path) -> None:
    cli = main(["--config", str(REPO / "configs" / "quickstart.yaml"), "--model.init_args.optim.learning_rate=0.05",
                f"--trainer.default_root_dir={tmp_path}"], run=False)
    spec = cli.model.optim_spec
    assert (spec.name, spec.learning_rate, spec.weight_decay, spec.scheduler) == ("sgd", 0.05, 5e-4, "cosine")


def test_checkpoint_stores_the_spec_as_plain_data(tmp_path: Path) -> None:
    task = ImageClassifier(net=CifarResNet(8), optim=OptimSpec(name="adam", learning_rate=3e-4), channels_last=False)
    assert task.hparams["optim"]["learning_rate"] == 3e-4 and isinstance(task.hparams["optim"], dict)
    path = tmp_path / "t.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    loaded = torch.load(path, weights_only=True)  # no custom class in the checkpoint
    again = ImageClassifier(net=CifarResNet(8), **{k: v for k, v in loaded["hyper_parameters"].items()})
    assert again.optim_spec == task.optim_spec
