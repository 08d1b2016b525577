"""The extension tutorial is executable: docs/adding_a_method.md shows the example files as they
are, and the example method trains, fuses correctly and names its parameter groups."""

from __future__ import annotations

import re

import torch

from lr_lightning.examples.two_resolution import TwoResolutionClassifier
from lr_lightning.nn import CifarResNet
from tests.conftest import REPO


def test_the_tutorial_shows_the_example_files_verbatim() -> None:
    doc = (REPO / "docs" / "adding_a_method.md").read_text()
    blocks = re.findall(r"<!-- example: (\S+) -->\n```\w+\n(.*?)```", doc, re.S)
    assert {p for p, _ in blocks} == {"lr_lightning/examples/two_resolution.py", "configs/examples/two_resolution_cifar10.yaml"}
    for path, code in blocks:
        assert code == (REPO / path).read_text(), f"docs/adding_a_method.md is out of date with {path}"


def test_example_fuses_probabilities_and_names_its_groups() -> None:
    torch.manual_seed(0)
    m = TwoResolutionClassifier(hr_net=CifarResNet(8), lr_net=CifarResNet(8), fusion="mean")
    m.eval()
    hr, lr = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 8, 8)
    with torch.no_grad():
        p = m(hr, lr).exp()
        p_hr = m.hr_net(m.normalize(hr)).softmax(-1)
        p_lr = m.lr_net(m.normalize(lr)).softmax(-1)
    torch.testing.assert_close(p, (p_hr + p_lr) / 2)  # the mean of the two softmax outputs
    from lr_lightning.methods.optim import OptimSpec

    m2 = TwoResolutionClassifier(hr_net=CifarResNet(8), lr_net=CifarResNet(8),
                                 optim=OptimSpec(learning_rate=1e-3, group_learning_rates={"lr_net": 2e-3}))
    opt = m2.build_optimizer()
    assert [(g["name"], g["lr"]) for g in opt.param_groups] == [("hr_net", 1e-3), ("lr_net", 2e-3)]
