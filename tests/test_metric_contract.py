"""The metric contract (docs/metrics.md): every config in configs/ runs 2 training steps, one
validation and one test batch through the CLI, and every key it logs must be a documented key
that means the same quantity in every method.

Checked per run: no undocumented key; the shared keys of the method's kind (accuracy for
classification methods, PSNR-Y for SR methods, the three cost keys for every method) are there
with sane values; the checkpoint monitor is a logged key. This also is the "every config runs"
test (it replaces a fit-only run of each config).
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest
import yaml

from lr_lightning.cli import main
from lr_lightning.methods import ImageClassifier
from lr_lightning.methods.autoresolution import AutoresolutionClassifier, AutoresolutionPretext
from lr_lightning.methods.darionet import DarioNetTask
from lr_lightning.methods.maml_degradation import MAMLDegradationClassifier
from lr_lightning.methods.ondevice_sr import GradientMasks, OnlineZSSR, ZeroShotSRTask
from lr_lightning.methods.patchdrop import PatchDrop
from lr_lightning.methods.sr import SuperResolutionTask
from tests.conftest import REPO
from tests.test_configs import CONFIGS, TINY_MODEL_ARGS, _data_args, _fast_args

DOC = REPO / "docs" / "metrics.md"
NOT_METRICS = re.compile(r"^(epoch|step|lr-.*)$")
CLASSIFICATION = (ImageClassifier, PatchDrop, MAMLDegradationClassifier, AutoresolutionClassifier, DarioNetTask)
SUPER_RESOLUTION = (SuperResolutionTask, DarioNetTask, ZeroShotSRTask)


def documented_keys() -> list[re.Pattern[str]]:
    """The keys of the tables in docs/metrics.md (first column), ``<name>`` as a wildcard."""
    pats = []
    for line in DOC.read_text().splitlines():
        m = re.match(r"^\|\s*`([a-z_]+/[^`]+)`\s*\|", line)
        if m:
            pats.append(re.compile("^" + re.escape(m.group(1)).replace(re.escape("<name>"), r"[^/]+") + "$"))
    return pats


def test_doc_parses_and_names_the_shared_keys() -> None:
    pats = documented_keys()
    assert len(pats) > 40
    for key in ("val/acc", "test/acc", "test/psnr_y", "test/macs_per_image", "test/params", "test/hr_pixel_fraction",
                "test/acc/bicubic2", "test/psnr_y/Set5"):
        assert any(p.match(key) for p in pats), key
    assert not any(p.match("val/loss") for p in pats)  # no ambiguous loss key


def _logged(metrics_csv: Path) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for row in csv.DictReader(metrics_csv.open()):
        for k, v in row.items():
            if v not in ("", None):
                out.setdefault(k, []).append(float(v))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=[str(c.relative_to(REPO / "configs")) for c in CONFIGS])
def test_config_runs_and_keeps_the_metric_contract(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = yaml.safe_load(config.read_text())
    data_args = _data_args(cfg, tmp_path)  # before chdir: LR_LIGHTNING_DATA may be a relative path
    monkeypatch.chdir(tmp_path)  # loggers write relative to the working directory
    model_args = TINY_MODEL_ARGS.get(cfg["model"]["class_path"].rsplit(".", 1)[-1], [])
    if cfg["model"]["class_path"].endswith("GradientMasks"):
        model_args = [*model_args, f"--model.init_args.masks_path={tmp_path / 'masks.json'}"]
    if cfg["model"]["class_path"].endswith("OnlineZSSR"):  # test-only: Alg. 2 has no offline training
        cli = main(["test", "--config", str(config), *_fast_args(tmp_path), *data_args, *model_args])
        trainer, model = cli.trainer, cli.model
    else:
        cli = main(["fit", "--config", str(config), *_fast_args(tmp_path), *data_args, *model_args])
        trainer, model = cli.trainer, cli.model
        if isinstance(model, GradientMasks):  # no optimiser step: theta is frozen, the masks file is the output
            assert (tmp_path / "masks.json").is_file()
        else:
            assert trainer.global_step == 2
        assert trainer.checkpoint_callback is not None and Path(trainer.checkpoint_callback.last_model_path).is_file()
        trainer.test(model, datamodule=cli.datamodule, ckpt_path="last", verbose=False)
    metrics_csv = Path(trainer.log_dir) / "metrics.csv"
    assert metrics_csv.is_file(), f"no CSV log at {metrics_csv}"
    logged = _logged(metrics_csv)

    pats = documented_keys()
    undocumented = sorted(k for k in logged if not NOT_METRICS.match(k) and not any(p.match(k) for p in pats))
    assert not undocumented, f"keys not in docs/metrics.md: {undocumented}"
    if not isinstance(model, OnlineZSSR):
        assert "train/loss" in logged
        assert model.monitor in logged, f"checkpoint monitor {model.monitor!r} is not logged ({sorted(logged)})"

    if isinstance(model, CLASSIFICATION):
        for key in ("val/acc", "test/acc", "val/ce", "test/ce"):
            assert key in logged, key
            if key.endswith("acc"):
                assert all(0.0 <= v <= 1.0 for v in logged[key]), (key, logged[key])
    if isinstance(model, SUPER_RESOLUTION):
        if not isinstance(model, (GradientMasks, OnlineZSSR)):  # these two do not validate
            assert "val/psnr_y" in logged
        assert "test/psnr_y" in logged
        assert all(0 < v < 100 for v in logged["test/psnr_y"])
    macs, params = logged.get("test/macs_per_image"), logged.get("test/params")
    assert macs and params, "no inference cost logged (does the task implement inference_step?)"
    assert macs[-1] > 0 and math.isfinite(macs[-1])
    assert 0 < params[-1] <= sum(p.numel() for p in model.parameters()) * (1 + 1e-6)  # logged as float32
    if not isinstance(model, AutoresolutionPretext):
        frac = logged.get("test/hr_pixel_fraction")
        assert frac and 0.0 <= frac[-1] <= 1.0
        if model.hparams.get("input_key") in ("hr", "lr"):  # HR-CNN 1, LR-CNN 0
            assert frac[-1] == float(model.hparams.input_key == "hr")
