"""HR-CNN vs LR-CNN on CIFAR-10 (ResNet20): x2 and x4 with nearest / bicubic / average pooling.

    python benchmarks/baselines_cifar10.py            # full profile (~50 min on 2 idle cores)
    python benchmarks/baselines_cifar10.py --resume   # reuse runs finished earlier under --out
    python benchmarks/baselines_cifar10.py --epochs 1 --train-subset 2000   # smoke run

Every model is trained with the project's own configs through the CLI's ``main`` and tested on
the best validation checkpoint. LR-CNN inputs are degraded by the factor and upsampled back to
32x32 (bicubic), so all rows share one network. The HR-CNN is also evaluated under every
degradation (no retraining), and a paired short run (same seed and epochs) in fp32 NCHW vs the
default bf16-mixed + channels_last checks that the fast setting keeps accuracy (their speed:
benchmarks/precision_resnet.py). Writes benchmarks/results/baselines_cifar10.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, cli_run_args, markdown_table, write_results  # noqa: E402
from lr_lightning.cli import main  # noqa: E402

HR_CFG = str(REPO / "configs" / "baselines" / "cifar10_hr_cnn.yaml")
LR_CFG = str(REPO / "configs" / "baselines" / "cifar10_lr_cnn.yaml")
MODES = {"nearest": "nearest", "bicubic": "bicubic", "avg": "avgpool"}


def _finished_run(out: str, name: str, epochs: int) -> tuple[Path, Path] | None:
    """(log_dir, best checkpoint) of a completed earlier run of ``name`` with ``epochs``, if any
    (completed = its metrics.csv reached the last epoch's validation)."""
    for log_dir in sorted(Path(out, name).glob("version_*"), reverse=True):
        ckpts = sorted((log_dir / "checkpoints").glob("best-*.ckpt"))
        metrics = log_dir / "metrics.csv"
        if not ckpts or not metrics.is_file():
            continue
        with metrics.open() as f:
            rows = list(csv.DictReader(f))
        if any(r.get("val/acc") and r.get("epoch") == str(epochs - 1) for r in rows):
            return log_dir, ckpts[-1]
    return None


def train_and_test(config: str, name: str, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    """Train ``config`` (or reuse a finished run of the same name and epochs) and test its best
    validation checkpoint."""
    common = cli_run_args(args.out, name, args.epochs)
    if args.train_subset:
        common.append(f"--data.init_args.train_subset={args.train_subset}")
    done = _finished_run(args.out, name, args.epochs) if args.resume else None
    t0 = time.perf_counter()
    if done is None:
        cli = main(["fit", "--config", config, *common, *extra])
        fit_s: float | None = time.perf_counter() - t0
        best, log_dir = cli.trainer.checkpoint_callback.best_model_path, cli.trainer.log_dir
    else:
        log_dir, best = done
        cli = main(["--config", config, *common, *extra], run=False)
        fit_s = None
        print(f"[{name}] reusing the finished run in {log_dir}", flush=True)
    res = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=str(best), verbose=False)[0]
    out = {
        "acc": round(100 * float(res["test/acc"]), 2),
        "train_s": round(fit_s, 1) if fit_s is not None else None,
        "epochs": args.epochs,
        "s_per_epoch": round(fit_s / args.epochs, 1) if fit_s is not None else None,
        "log_dir": os.path.relpath(log_dir, REPO),
    }
    out["under"] = {k.removeprefix("test/acc/"): round(100 * float(v), 2) for k, v in res.items() if k.startswith("test/acc/")}
    print(f"[{name}] test acc {out['acc']:.2f} %, train {out['train_s']} s", flush=True)
    return out


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--train-subset", type=int, default=None)
    parser.add_argument("--factors", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "runs" / "baselines_cifar10"))
    parser.add_argument("--skip-fp32", action="store_true", help="skip the fp32 vs bf16 accuracy check")
    parser.add_argument("--check-epochs", type=int, default=5, help="epochs of the paired fp32 / bf16 HR-CNN runs")
    parser.add_argument("--resume", action="store_true", help="reuse finished runs found under --out (tested again)")
    args = parser.parse_args()
    if not os.environ.get("LR_LIGHTNING_DATA"):
        shared = REPO.parent / "shared" / "data"
        if shared.is_dir():
            os.environ["LR_LIGHTNING_DATA"] = str(shared)
    t0 = time.perf_counter()

    rows: list[dict[str, Any]] = []
    hr = train_and_test(HR_CFG, "hr_cnn", args, [])
    rows.append({"method": "HR-CNN", "degradation": "none", **{k: v for k, v in hr.items() if k != "under"}})
    for factor in args.factors:
        for mode, prefix in MODES.items():
            deg = f"{prefix}{factor}+up"
            res = train_and_test(LR_CFG, f"lr_cnn_{deg}", args, [
                f"--data.init_args.degradation.init_args.mode={mode}",
                f"--data.init_args.degradation.init_args.factor={factor}",
            ])
            res.pop("under")
            rows.append({"method": "LR-CNN", "degradation": deg, "hr_cnn_acc_on_it": hr["under"].get(deg), **res})
    precision_check = None
    if not args.skip_fp32:
        check = argparse.Namespace(**{**vars(args), "epochs": args.check_epochs})
        bf16 = train_and_test(HR_CFG, f"hr_cnn_bf16_cl_{args.check_epochs}ep", check, [])
        fp32 = train_and_test(HR_CFG, f"hr_cnn_fp32_{args.check_epochs}ep", check, ["--trainer.precision=32-true", "--model.init_args.channels_last=false"])
        precision_check = {
            "epochs": args.check_epochs,
            "bf16_channels_last": {"acc": bf16["acc"], "train_s": bf16["train_s"]},
            "fp32_nchw": {"acc": fp32["acc"], "train_s": fp32["train_s"]},
            "train_time_ratio_fp32_over_bf16": round(fp32["train_s"] / bf16["train_s"], 2) if fp32["train_s"] and bf16["train_s"] else None,
        }
    wall = time.perf_counter() - t0
    md = "## Test accuracy (ResNet20, best-val checkpoint)\n\n"
    md += markdown_table(rows, ["method", "degradation", "acc", "hr_cnn_acc_on_it", "epochs", "train_s", "s_per_epoch"])
    md += "\n`hr_cnn_acc_on_it`: the HR-CNN (trained on 32x32) tested on that degradation, no retraining.\n"
    if precision_check:
        md += f"\n## Precision check (HR-CNN, same seed, {args.check_epochs} epochs each)\n\n"
        md += markdown_table(
            [{"setting": k, **v} for k, v in precision_check.items() if isinstance(v, dict)], ["setting", "acc", "train_s"]
        )
        md += f"\nfp32 / bf16 training time: {precision_check['train_time_ratio_fp32_over_bf16']}x\n"
    md += "\nStep-time speed of the precision / memory-format settings: benchmarks/results/precision_resnet.md.\n"
    payload = {
        "rows": rows,
        "hr_cnn_under_degradation": hr["under"],
        "precision_check": precision_check,
        "settings": {"epochs": args.epochs, "train_subset": args.train_subset, "net": "CifarResNet(20)", "data": "CIFAR-10 ImageFolder (JPEG-decoded PNGs), 18k train / 2k val / 10k test"},
    }
    json_path, md_path = write_results("baselines_cifar10", payload, md, wall)
    print(md)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main_bench()
