"""``lr-lightning report RUN_DIRS... [--out DIR]``: compare finished runs without W&B.

Reads each run's CSV log (``metrics.csv``, one row per logging call, empty cells for keys not
logged in that row) and the ``config.yaml`` LightningCLI saved next to it, and writes to
``--out`` (default ``report/``):

* ``report.md``: one Markdown table row per run (method, stage, data, degradation, final
  ``test/*`` metrics, best ``val/acc`` / ``val/psnr_y``, training steps); keys a run did not log
  are shown as ``—``;
* ``acc_vs_hr_pixel_fraction.png`` and ``acc_vs_macs.png``: ``test/acc`` against the share of
  high-resolution pixels used and against inference MACs per image, one marker per run;
* ``val_curves.png`` (``val/acc`` / ``val/psnr_y`` of all runs over training steps) and
  ``curves/<run>.png`` (every ``val/*`` key of one run);
* ``report.json``: the table's values unformatted.

A ``test`` run made with ``--ckpt_path`` (its ``config.yaml`` records the checkpoint file) is
joined with the run that wrote that checkpoint: the row shows the training run's curves, steps
and best validation values with the test run's test metrics, and the training run gets no row
of its own. A run directory may also be a parent folder (e.g. ``logs/``): every ``metrics.csv``
below it is a run.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lr_lightning.logging_wandb import degradation_name
from lr_lightning.plotting import pyplot, save_figure

#: The final test metrics of the table (the metric contract's keys, docs/metrics.md).
TEST_KEYS: tuple[str, ...] = (
    "test/acc",
    "test/psnr_y",
    "test/hr_pixel_fraction",
    "test/macs_per_image",
    "test/params",
)
#: Validation metrics whose best (maximum) value over training is reported.
BEST_VAL_KEYS: tuple[str, ...] = ("val/acc", "val/psnr_y")
MISSING = "—"


# -- reading one run ------------------------------------------------------------------------------
def read_metrics_csv(path: Path) -> list[dict[str, float]]:
    """The rows of a Lightning ``metrics.csv`` as ``{key: value}`` with the empty cells left out
    (``epoch`` and ``step`` included as numbers)."""
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if k and v not in (None, "")} for row in csv.DictReader(f)]


def find_config(run_dir: Path) -> Path | None:
    """The ``config.yaml`` LightningCLI saved in the run folder (with W&B as the first logger,
    the CLI writes a copy beside the CSV log), or ``None``."""
    path = run_dir / "config.yaml"
    return path if path.is_file() else None


def class_name(class_path: Any) -> str | None:
    """``"lr_lightning.methods.ImageClassifier"`` -> ``"ImageClassifier"``."""
    return class_path.rsplit(".", 1)[-1] if isinstance(class_path, str) and class_path else None


def degradation_label(spec: Any) -> str | None:
    """The name of a degradation given in a config: a name string as is, a
    ``{class_path, init_args}`` mapping by building the object and taking its ``.name``
    (e.g. ``bicubic4+up``), falling back to ``<mode><factor>``; ``None`` if there is none."""
    if isinstance(spec, dict) and isinstance(spec.get("class_path"), str):
        init = spec.get("init_args") or {}
        try:
            module, _, name = spec["class_path"].rpartition(".")
            label = degradation_name(getattr(importlib.import_module(module), name)(**init))
            if label:
                return label
        except Exception:  # a kernel file that is not here, an unknown class: describe it plainly
            pass
        if "mode" in init:
            return f"{init['mode']}{init.get('factor', '')}"
        return class_name(spec["class_path"])
    return degradation_name(spec)  # a name string as is; None for null


@dataclass
class RunLog:
    """One run folder: its CSV rows and saved config.

    Attributes:
        run_dir: the folder holding ``metrics.csv``.
        rows: the CSV rows (see :func:`read_metrics_csv`).
        config: the saved LightningCLI config (empty if none was found).
    """

    run_dir: Path
    rows: list[dict[str, float]]
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, run_dir: Path) -> RunLog:
        """Read ``run_dir/metrics.csv`` and the run's ``config.yaml``."""
        config_path = find_config(run_dir)
        config = yaml.safe_load(config_path.read_text()) if config_path else None
        return cls(run_dir, read_metrics_csv(run_dir / "metrics.csv"), config if isinstance(config, dict) else {})

    def _section(self, key: str) -> dict[str, Any]:
        value = self.config.get(key)
        return value if isinstance(value, dict) else {}

    @property
    def method(self) -> str | None:
        """The model's class name."""
        return class_name(self._section("model").get("class_path"))

    @property
    def stage(self) -> str | None:
        """The model's ``stage`` argument (PatchDrop's ``pt`` / ``ft1`` / ``ft2``), if any."""
        stage = (self._section("model").get("init_args") or {}).get("stage")
        return str(stage) if stage is not None else None

    @property
    def data(self) -> str | None:
        """The data module's class name with the data set (``variant``, else the root folder's
        name) in parentheses, e.g. ``CIFARDataModule (cifar10)``."""
        data = self._section("data")
        name = class_name(data.get("class_path"))
        init = data.get("init_args") or {}
        dataset = init.get("variant") or (Path(str(init["root"])).name if init.get("root") else None)
        if name and dataset:
            return f"{name} ({dataset})"
        return name or dataset

    @property
    def degradation(self) -> str | None:
        """The degradation's name: the data module's ``degradation`` (``none`` if it is null),
        else the model's own ``lr_degradation`` / ``degradation``."""
        data_init = self._section("data").get("init_args") or {}
        label = degradation_label(data_init.get("degradation"))
        if label:
            return label
        model_init = self._section("model").get("init_args") or {}
        for key in ("lr_degradation", "degradation"):
            label = degradation_label(model_init.get(key))
            if label:
                return label
        return "none" if "degradation" in data_init else None

    @property
    def checkpoint_run(self) -> Path | None:
        """The run folder whose ``checkpoints/`` held this run's ``ckpt_path``, if it exists."""
        ckpt = self.config.get("ckpt_path")
        if not isinstance(ckpt, str) or not ckpt:
            return None
        path = Path(ckpt)
        if path.parent.name == "checkpoints" and (path.parent.parent / "metrics.csv").is_file():
            return path.parent.parent.resolve()
        return None

    @property
    def trained(self) -> bool:
        """Whether the run logged training or validation (a ``fit``)."""
        return any(k.startswith(("train/", "val/")) for row in self.rows for k in row)

    def final(self, key: str) -> float | None:
        """The last logged value of ``key``."""
        values = [row[key] for row in self.rows if key in row]
        return values[-1] if values else None

    def best(self, key: str) -> float | None:
        """The largest logged value of ``key`` (NaN ignored)."""
        values = [row[key] for row in self.rows if key in row and not math.isnan(row[key])]
        return max(values) if values else None

    @property
    def steps(self) -> int | None:
        """Training steps: 1 + the last step index with a ``train/`` or ``val/`` value."""
        steps = [row["step"] for row in self.rows if "step" in row and any(k.startswith(("train/", "val/")) for k in row)]
        return int(max(steps)) + 1 if steps else None

    def curve(self, key: str) -> tuple[list[float], list[float]]:
        """``(steps, values)`` of ``key`` over the run."""
        points = [(row.get("step", i), row[key]) for i, row in enumerate(self.rows) if key in row]
        return [p[0] for p in points], [p[1] for p in points]

    @property
    def val_keys(self) -> list[str]:
        """Every ``val/*`` key the run logged, in first-seen order."""
        keys: dict[str, None] = {}
        for row in self.rows:
            keys.update({k: None for k in row if k.startswith("val/")})
        return list(keys)


# -- one table row per run -------------------------------------------------------------------------
@dataclass
class ReportRow:
    """One row of the report: a training run and the run whose test metrics it shows.

    Attributes:
        train: the run with the curves, steps and best validation values (``None`` when only
            a test run was given and the checkpoint's run folder is not there).
        test: the run whose final ``test/*`` values are shown (``None`` if never tested; the
            training run itself when it logged test metrics in the same CSV).
    """

    train: RunLog | None
    test: RunLog | None

    @property
    def main(self) -> RunLog:
        """The run that describes the row (training run first)."""
        run = self.train or self.test
        assert run is not None
        return run

    @property
    def label(self) -> str:
        """The run folder as given (relative to the working directory when below it)."""
        return display_path(self.main.run_dir)

    @property
    def tested(self) -> str:
        """How the test metrics were obtained: ``<test run> (<checkpoint>)``, ``in run`` or ``—``."""
        if self.test is None:
            return MISSING
        if self.test is self.train:
            return "in run"
        ckpt = self.test.config.get("ckpt_path")
        name = f" ({Path(ckpt).name})" if isinstance(ckpt, str) and ckpt else ""
        return f"{display_path(self.test.run_dir)}{name}"

    def describe(self, attr: str) -> str | None:
        """A config-derived field (method, stage, data, degradation) of the training run, else of
        the test run."""
        for run in (self.train, self.test):
            value = getattr(run, attr) if run is not None else None
            if value:
                return value
        return None

    def values(self) -> dict[str, Any]:
        """The row's unformatted values (what ``report.json`` holds)."""
        out: dict[str, Any] = {
            "run": self.label,
            "method": self.describe("method"),
            "stage": self.describe("stage"),
            "data": self.describe("data"),
            "degradation": self.describe("degradation"),
        }
        for key in TEST_KEYS:
            out[key] = self.test.final(key) if self.test is not None else None
        for key in BEST_VAL_KEYS:
            out[f"best {key}"] = self.train.best(key) if self.train is not None else None
        out["steps"] = self.train.steps if self.train is not None else None
        out["tested"] = self.tested
        return out


def display_path(path: Path) -> str:
    """``path`` relative to the working directory if it is below it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def find_run_dirs(paths: Sequence[Path]) -> list[Path]:
    """Every folder with a ``metrics.csv``: each path itself, or the folders below it."""
    found: list[Path] = []
    for path in paths:
        if (path / "metrics.csv").is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(p.parent for p in path.rglob("metrics.csv"))
        else:
            raise FileNotFoundError(f"{path}: not a run folder (no metrics.csv) and not a folder of runs")
    if not found:
        raise FileNotFoundError(f"no metrics.csv in or below {', '.join(map(str, paths))}")
    unique: dict[Path, Path] = {}
    for p in found:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def build_rows(runs: Sequence[RunLog]) -> list[ReportRow]:
    """Pair each test-only run with the run its checkpoint came from (loaded from disk when it
    was not given); training runs that such a pair covers get no row of their own."""
    by_dir = {run.run_dir.resolve(): run for run in runs}
    rows: list[ReportRow] = []
    covered: set[Path] = set()
    for run in runs:
        if run.trained:
            tested = any(k.startswith("test/") for row in run.rows for k in row)
            rows.append(ReportRow(train=run, test=run if tested else None))
            continue
        source = run.checkpoint_run
        train = None
        if source is not None:
            train = by_dir.get(source) or RunLog.load(source)
            covered.add(source)
        rows.append(ReportRow(train=train, test=run))
    return [r for r in rows if not (r.test is None and r.train is not None and r.train.run_dir.resolve() in covered)]


# -- formatting -------------------------------------------------------------------------------------
def format_count(value: float) -> str:
    """``40_550_000`` -> ``40.55M`` (K / M / G, 4 significant digits)."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= limit:
            return f"{value / limit:.4g}{suffix}"
    return f"{value:.4g}"


def format_value(key: str, value: Any) -> str:
    """A table cell: ``—`` when missing; accuracies / fractions with 4 decimals, PSNR with 2,
    MACs and parameter counts with K / M / G; steps as integers."""
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value.replace("|", "\\|")
    if key.endswith(("macs_per_image", "params")):
        return format_count(float(value))
    if key.endswith("psnr_y"):
        return f"{value:.2f}"
    if key == "steps":
        return str(int(value))
    return f"{value:.4f}"


COLUMNS: tuple[str, ...] = (
    "run", "method", "stage", "data", "degradation", *TEST_KEYS,
    *(f"best {k}" for k in BEST_VAL_KEYS), "steps", "tested",
)


def markdown_table(rows: Sequence[ReportRow]) -> str:
    """The runs as one Markdown table (numbers right-aligned)."""
    numeric = {*TEST_KEYS, *(f"best {k}" for k in BEST_VAL_KEYS), "steps"}
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---:" if c in numeric else "---" for c in COLUMNS) + " |",
    ]
    for row in rows:
        values = row.values()
        lines.append("| " + " | ".join(format_value(c, values[c]) for c in COLUMNS) + " |")
    return "\n".join(lines)


# -- plots ------------------------------------------------------------------------------------------
def _short(row: ReportRow) -> str:
    """The last two parts of the run folder, e.g. ``quickstart/version_0``."""
    return "/".join(Path(row.label).parts[-2:])


def _point_label(row: ReportRow) -> str:
    method = row.describe("method") or MISSING
    stage = row.describe("stage")
    return f"{method} ({stage})" if stage else method


def plot_tradeoff(rows: Sequence[ReportRow], x_key: str, path: Path, log_x: bool = False) -> tuple[Path, int]:
    """Scatter ``test/acc`` against ``x_key``, one marker per run (one colour per method);
    returns the file and the number of runs plotted (a note replaces the points when 0)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    points = [(r, r.values()) for r in rows]
    points = [(r, v[x_key], v["test/acc"]) for r, v in points if v[x_key] is not None and v["test/acc"] is not None]
    methods = sorted({_point_label(r) for r, _, _ in points})
    markers = "osD^v<>pPX*h"
    for i, method in enumerate(methods):
        mine = [(x, y) for r, x, y in points if _point_label(r) == method]
        ax.scatter([p[0] for p in mine], [p[1] for p in mine], marker=markers[i % len(markers)], s=60, label=method)
    for r, x, y in points:
        ax.annotate(_short(r), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if log_x and points and all(x > 0 for _, x, _ in points):
        ax.set_xscale("log")
    if not points:
        ax.text(0.5, 0.5, f"no run logged both test/acc and {x_key}", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.set_xlabel(x_key)
    ax.set_ylabel("test/acc")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path), len(points)


def plot_val_overlay(rows: Sequence[ReportRow], path: Path) -> Path:
    """``val/acc`` and ``val/psnr_y`` of every training run over steps (one panel per key)."""
    plt = pyplot()
    keys = [k for k in BEST_VAL_KEYS if any(r.train and r.train.curve(k)[0] for r in rows)] or ["val/acc"]
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4.5), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for row in rows:
            if row.train is None:
                continue
            steps, values = row.train.curve(key)
            if steps:
                ax.plot(steps, values, marker=".", label=f"{_point_label(row)}: {_short(row)}")
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, f"no run logged {key}", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_run_curves(run: RunLog, title: str, path: Path) -> Path:
    """Every ``val/*`` key of one run over steps, one panel per key."""
    plt = pyplot()
    keys = run.val_keys or ["val/acc"]
    cols = min(3, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.5 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        steps, values = run.curve(key)
        if steps:
            ax.plot(steps, values, marker=".")
        else:
            ax.text(0.5, 0.5, f"no {key}", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "run"


# -- the report -------------------------------------------------------------------------------------
def write_report(run_paths: Sequence[Path], out: Path) -> Path:
    """Write ``report.md``, ``report.json`` and the plots for the runs in or below
    ``run_paths`` into ``out``; returns the Markdown file."""
    runs = [RunLog.load(d) for d in find_run_dirs(run_paths)]
    rows = build_rows(runs)
    out.mkdir(parents=True, exist_ok=True)
    hr_png, n_hr = plot_tradeoff(rows, "test/hr_pixel_fraction", out / "acc_vs_hr_pixel_fraction.png")
    macs_png, n_macs = plot_tradeoff(rows, "test/macs_per_image", out / "acc_vs_macs.png", log_x=True)
    overlay_png = plot_val_overlay(rows, out / "val_curves.png")
    curve_pngs = []
    for i, row in enumerate(rows):
        if row.train is not None:
            png = plot_run_curves(row.train, f"{_point_label(row)}: {row.label}", out / "curves" / f"{i:02d}_{slug(row.label)}.png")
            curve_pngs.append((row.label, png))

    def note(n: int, key: str) -> str:
        return "" if n else f" (no run logged both `test/acc` and `{key}`)"

    lines = [
        "# lr-lightning report",
        "",
        f"{len(rows)} run(s). Test metrics are the last value logged; `best val/*` is the maximum "
        "over training; `steps` counts training steps; `tested` names the test run (and checkpoint) "
        f"the test metrics come from. {MISSING} = not logged by that run.",
        "",
        markdown_table(rows),
        "",
        f"## Accuracy vs HR pixel fraction{note(n_hr, 'test/hr_pixel_fraction')}",
        "",
        f"![test/acc vs test/hr_pixel_fraction]({hr_png.name})",
        "",
        f"## Accuracy vs MACs per image{note(n_macs, 'test/macs_per_image')}",
        "",
        f"![test/acc vs test/macs_per_image]({macs_png.name})",
        "",
        "## Validation curves",
        "",
        f"![validation curves of all runs]({overlay_png.name})",
        "",
        *(f"* [{label}]({png.relative_to(out)})" for label, png in curve_pngs),
        "",
    ]
    md = out / "report.md"
    md.write_text("\n".join(lines))
    (out / "report.json").write_text(json.dumps([r.values() for r in rows], indent=2))
    return md


def main(argv: Sequence[str] | None = None) -> int:
    """``lr-lightning report RUN_DIRS... [--out DIR]``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="lr-lightning report",
        description="Compare finished runs: one Markdown table (final test metrics, best validation "
        "values, steps) plus accuracy-vs-HR-pixels / accuracy-vs-MACs and validation-curve plots, "
        "from each run's metrics.csv and config.yaml.",
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run folders (with metrics.csv) or folders of runs, e.g. logs/")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder (default: report)")
    args = parser.parse_args(argv)
    try:
        md = write_report(args.run_dirs, args.out)
    except FileNotFoundError as err:
        parser.error(str(err))
    print(md.read_text().split("\n## ")[0])
    print(f"report: {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
