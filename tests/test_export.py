"""``lr-lightning export``: every network a device runs (LR classifiers of A / C, the PatchDrop
policy and HR classifier, SR nets of B / E) exports to ONNX and torch.export, and the exported
graphs compute what PyTorch computes (onnxruntime / torch.export.load, fresh inputs, other batch
sizes and, for SR nets, another image size)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lr_lightning.cli import console_main, main
from lr_lightning.export import ExportError, example_batch, export_task
from tests.conftest import REPO

ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install -e '.[export]'")

CASES = [  # config, networks expected, formats
    ("quickstart.yaml", {"classifier"}, ("onnx", "torch_export")),
    ("maml_degradation/cifar10_maml_conv4_x2.yaml", {"classifier"}, ("onnx", "torch_export")),
    ("patchdrop/cifar10_ft2.yaml", {"policy", "hr_classifier"}, ("onnx", "torch_export")),
    ("darionet/darionet_cifar10_x4.yaml", {"sr"}, ("onnx",)),
    ("ondevice_sr/online_x4.yaml", {"sr"}, ("onnx", "torch_export")),
]


def _build(config: str):  # noqa: ANN202
    cfg = yaml.safe_load((REPO / "configs" / config).read_text())
    keep = {k: v for k, v in cfg.items() if k in ("seed_everything", "model", "data")}
    keep["trainer"] = {"logger": False}
    return main(keep, run=False)


@pytest.mark.parametrize(("config", "networks", "formats"), CASES, ids=[c[0].split("/")[0] for c in CASES])
def test_exported_networks_match_pytorch(config: str, networks: set[str], formats: tuple[str, ...], tmp_path: Path) -> None:
    cli = _build(config)
    batch = example_batch(cli.datamodule)
    for fmt in formats:
        reports = export_task(cli.model, batch, tmp_path / fmt, fmt)  # type: ignore[arg-type]
        assert {r["network"] for r in reports} == networks
        for r in reports:
            assert Path(r["path"]).is_file() and r["checks"]
            assert all(c["within_tolerance"] for c in r["checks"])
            assert {c["input_shapes"][0][0] for c in r["checks"]} >= {1, 3}  # dynamic batch, checked
            if r["network"] == "sr":
                assert r["dynamic_size"], r["note"]  # fully convolutional SR nets take any size
    # an independent check of one ONNX file, outside the export code: onnxruntime on a new input
    name = sorted(networks)[-1]
    net = cli.model.export_networks(batch)[name]
    session = ort.InferenceSession(str(tmp_path / "onnx" / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(123)
    inputs = [torch.rand((5, *t.shape[1:]), generator=g) for t in net.example]
    if name == "hr_classifier":
        inputs[1] = (inputs[1] > 0.5).float()
    with torch.no_grad():
        ref = net.module(*inputs).numpy()
    got = session.run(None, {n: t.numpy() for n, t in zip(net.input_names, inputs, strict=True)})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)


def test_export_command_exports_the_trained_weights(tiny_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    quick = str(REPO / "configs" / "quickstart.yaml")
    cli = main(["fit", "--config", quick, f"--data.init_args.root={tiny_cifar}", "--data.init_args.batch_size=8",
                "--data.init_args.val_fraction=0.25", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
                "--trainer.num_sanity_val_steps=0"])
    last = Path(cli.trainer.checkpoint_callback.last_model_path)
    assert console_main(["export", "--ckpt_path", str(last), "--format", "onnx", "--out_dir", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "export_report.json").read_text())
    assert [r["network"] for r in report] == ["classifier"]
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    lr = cli.datamodule.degradation(x)
    cli.model.eval()
    with torch.no_grad():
        ref = cli.model(lr).float().numpy()  # the trained model, not a new initialisation
    session = ort.InferenceSession(str(tmp_path / "out" / "classifier.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"image": lr.numpy()})[0], ref, atol=1e-4, rtol=1e-3)


def test_export_errors_name_the_fix(tmp_path: Path) -> None:
    cli = _build("quickstart.yaml")
    with pytest.raises(ExportError, match=r"no network \['policy'\].*exports \['classifier'\]"):
        export_task(cli.model, example_batch(cli.datamodule), tmp_path, "onnx", ["policy"])
    lone = tmp_path / "a" / "b" / "x.ckpt"
    lone.parent.mkdir(parents=True)
    torch.save({"state_dict": {}}, lone)
    with pytest.raises(FileNotFoundError, match="no config.yaml beside.*--config"):
        console_main(["export", "--ckpt_path", str(lone)])
    assert console_main(["export", "--ckpt_path", str(tmp_path / "missing.ckpt")]) == 2
