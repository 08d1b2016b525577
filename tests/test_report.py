"""``lr-lightning report``: a table and plots from the CSV logs and configs of finished runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from lr_lightning.cli import console_main, main
from lr_lightning.report import BEST_VAL_KEYS, MISSING, TEST_KEYS, format_value
from tests.conftest import REPO
from tests.test_configs import TINY_TRAINER_ARGS


def tiny_args(data_root: Path, logs: Path) -> list[str]:
    """Seconds-long runs that validate once per epoch, logging every step, under ``logs``."""
    return [
        f"--data.init_args.root={data_root}",
        "--data.init_args.batch_size=8",
        "--data.init_args.val_fraction=0.25",
        "--trainer.max_epochs=2",
        *TINY_TRAINER_ARGS,
        f"--trainer.logger.init_args.save_dir={logs}",
        f"--trainer.default_root_dir={logs.parent}",
    ]


def csv_column(path: Path, key: str) -> list[float]:
    """Every logged value of ``key`` in a ``metrics.csv``."""
    return [float(r[key]) for r in csv.DictReader(path.open()) if r.get(key)]


def table_rows(md: str) -> dict[str, dict[str, str]]:
    """The report's Markdown table as ``{run: {column: cell}}``."""
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]]
    return {r["run"]: r for r in rows}


@pytest.mark.slow
def test_report_of_two_methods(tiny_cifar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    logs = tmp_path / "logs"
    quick = str(REPO / "configs" / "quickstart.yaml")
    sr = str(REPO / "configs" / "darionet" / "sr_l1_cifar10_x4.yaml")
    # method 1: fit, then `test --ckpt_path best` as its own run (joined with the fit in the report)
    fit_cls = main(["fit", "--config", quick, *tiny_args(tiny_cifar, logs)])
    cls_steps = fit_cls.trainer.global_step
    test_cls = main(["test", "--config", quick, *tiny_args(tiny_cifar, logs), "--ckpt_path=best"])
    cls_dir, cls_test_dir = Path(fit_cls.trainer.log_dir), Path(test_cls.trainer.log_dir)
    # method 2: SR, fit and test in one process (test metrics in the same CSV)
    fit_sr = main(["fit", "--config", sr, *tiny_args(tiny_cifar, logs)])
    fit_sr.trainer.test(fit_sr.model, datamodule=fit_sr.datamodule, ckpt_path="best")
    sr_dir, sr_steps = Path(fit_sr.trainer.log_dir), fit_sr.trainer.global_step

    out = tmp_path / "report"
    rel = lambda p: str(p.relative_to(tmp_path))  # noqa: E731
    assert console_main(["report", rel(cls_dir), rel(cls_test_dir), rel(sr_dir), "--out", str(out)]) == 0
    rows = table_rows((out / "report.md").read_text())
    assert list(rows) == [rel(cls_dir), rel(sr_dir)]  # the test run is joined with its fit run
    cls, srow = rows[rel(cls_dir)], rows[rel(sr_dir)]

    assert (cls["method"], cls["stage"], cls["data"], cls["degradation"]) == (
        "ImageClassifier", MISSING, "CIFARDataModule (cifar10)", "bicubic4+up")
    assert (srow["method"], srow["data"], srow["degradation"]) == (
        "SuperResolutionTask", "CIFARDataModule (cifar10)", "bicubic4")
    best_ckpt = Path(test_cls.config["test"]["ckpt_path"]).name
    assert cls["tested"] == f"{rel(cls_test_dir)} ({best_ckpt})" and srow["tested"] == "in run"
    assert (cls["steps"], srow["steps"]) == (str(cls_steps), str(sr_steps)) == ("4", "4")

    # every value against the CSV it came from: test metrics from the test run, best val from the fit
    expected_rows = []
    for row, test_csv, fit_csv in ((cls, cls_test_dir, cls_dir), (srow, sr_dir, sr_dir)):
        expected: dict[str, float | None] = {}
        for key in TEST_KEYS:
            values = csv_column(test_csv / "metrics.csv", key)
            expected[key] = values[-1] if values else None
        for key in BEST_VAL_KEYS:
            values = csv_column(fit_csv / "metrics.csv", key)
            expected[f"best {key}"] = max(values) if values else None
        for key, value in expected.items():
            assert row[key] == format_value(key, value), (row["run"], key)
        expected_rows.append(expected)
    assert expected_rows[0]["test/acc"] is not None and expected_rows[0]["best val/acc"] is not None
    assert expected_rows[1]["best val/psnr_y"] is not None and expected_rows[1]["test/acc"] is None
    assert cls["test/psnr_y"] == MISSING and srow["best val/acc"] == MISSING  # missing keys: '—'
    saved = json.loads((out / "report.json").read_text())
    for got, expected in zip(saved, expected_rows, strict=True):
        assert {k: got[k] for k in expected} == pytest.approx(expected)

    # plots: real images; the trade-off plots say when no run has the key yet
    md = (out / "report.md").read_text()
    for name in ("acc_vs_hr_pixel_fraction.png", "acc_vs_macs.png", "val_curves.png"):
        with Image.open(out / name) as img:
            assert img.width > 300 and img.height > 200
    curves = sorted((out / "curves").glob("*.png"))
    assert len(curves) == 2 and f"]({curves[0].relative_to(out)})" in md
    has_fraction = expected_rows[0]["test/hr_pixel_fraction"] is not None
    assert ("no run logged both `test/acc` and `test/hr_pixel_fraction`" in md) != has_fraction


def _write_run(run_dir: Path, header: list[str], rows: list[list[object]], config: str | None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    if config is not None:
        (run_dir / "config.yaml").write_text(config)
    return run_dir


PATCHDROP_CONFIG = """
model:
  class_path: lr_lightning.methods.patchdrop.PatchDropTask
  init_args: {stage: ft1}
data:
  class_path: lr_lightning.data.CIFARDataModule
  init_args: {variant: cifar10, degradation: null}
ckpt_path: null
"""


def test_report_joins_test_runs_and_finds_runs_below_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    fit = _write_run(tmp_path / "logs" / "pd" / "version_0", ["epoch", "step", "train/loss", "val/acc"],
                     [[0, 9, 1.5, ""], [0, 9, "", 0.5], [1, 19, "", 0.75], [2, 29, "", 0.625]], PATCHDROP_CONFIG)
    ckpt = fit / "checkpoints" / "best-1-20.ckpt"
    test_config = PATCHDROP_CONFIG.replace("ckpt_path: null", f"ckpt_path: {ckpt}")
    _write_run(tmp_path / "logs" / "pd" / "version_1",
               ["epoch", "step", "test/acc", "test/hr_pixel_fraction", "test/macs_per_image", "test/params"],
               [[0, 0, 0.6875, 0.375, 12_345_678, 464_154]], test_config)
    _write_run(tmp_path / "logs" / "noconfig" / "version_0", ["epoch", "step", "val/acc"], [[0, 4, 0.25]], None)
    assert console_main(["report", "logs", "--out", "out"]) == 0
    rows = table_rows((tmp_path / "out" / "report.md").read_text())
    assert list(rows) == ["logs/noconfig/version_0", "logs/pd/version_0"]
    pd = rows["logs/pd/version_0"]
    assert (pd["method"], pd["stage"], pd["data"], pd["degradation"]) == ("PatchDropTask", "ft1", "CIFARDataModule (cifar10)", "none")
    assert (pd["test/acc"], pd["test/hr_pixel_fraction"], pd["test/macs_per_image"], pd["test/params"]) == (
        "0.6875", "0.3750", "12.35M", "464.2K")
    assert (pd["best val/acc"], pd["steps"], pd["tested"]) == ("0.7500", "30", "logs/pd/version_1 (best-1-20.ckpt)")
    bare = rows["logs/noconfig/version_0"]
    assert bare["method"] == bare["data"] == bare["test/acc"] == MISSING and bare["best val/acc"] == "0.2500"
    md = (tmp_path / "out" / "report.md").read_text()
    assert "no run logged both" not in md.split("## Accuracy vs MACs")[0]  # the PatchDrop run is plotted


def test_report_without_runs_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        console_main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "not a run folder (no metrics.csv)" in capsys.readouterr().err
