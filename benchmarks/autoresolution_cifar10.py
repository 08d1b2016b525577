"""Autoresolution networks (paper D) on CIFAR-10: pretext quality and transfer to LR classification.

    python benchmarks/autoresolution_cifar10.py                  # small profile, <= 25 min on 2 cores
    python benchmarks/autoresolution_cifar10.py --profile paper  # paper sizes (GPU; not run here)
    python benchmarks/autoresolution_cifar10.py --pretext-steps 20 --transfer-steps 20 \\
        --low-label-steps 20 --head-only-steps 5 --val-every 10          # smoke run

Stages (every model is trained through the project's configs with the CLI's ``main``):

1. Pretext, patch classification and patch regression (``configs/autoresolution/pretext_*``).
   ``small``: the CIFAR-10 *train* split (seeded 90% of the 20k offline images) as unlabelled
   32x32 HR images, LR = average pool x4 (8x8), 20x20 super patch -> 12x12 grid of 9x9 patches;
   scored on the held-out 10% of train (fixed crops). ``paper``: 256x256 crops of the SR
   photographs (BSD100 + Urban100; validation Set14), LR = average pool x8 (32x32), 127x127
   super patch -> 47x47 grid, 40/17/5-layer towers/head. Chance levels: 50% for classification
   (one positive, one negative per image); for regression the MAE of always answering the
   centre (0, 0), the mean of the uniformly drawn targets.
2. Transfer (``configs/autoresolution/transfer_cifar10.yaml``): the LR tower + softmax (50%
   dropout) on CIFAR-10 LR images (``small``: average pool x4, 8x8; ``paper``: the 32x32 images),
   from random initialisation, from the regression and from the classification pretext, with all
   labels of the train split and with 10% of them. Pretrained models first train only the softmax
   layer (``--head-only-steps``), then everything; every run has the same number of steps.
   Learning rates as the paper (0.01 random, 0.001 after regression, 0.003 after classification).
   Selection on the validation split (10% of train), one test on the CIFAR-10 test split.

No stage sees a test image before the final test. Writes
``benchmarks/results/autoresolution_cifar10.{json,md,png}`` (PNG: validation error curves, Fig. 3).
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

from benchmarks.common import REPO, RESULTS, markdown_table, write_results  # noqa: E402
from lr_lightning.cli import main  # noqa: E402
from lr_lightning.data import CIFARDataModule  # noqa: E402
from lr_lightning.plotting import pyplot  # noqa: E402

CFG = REPO / "configs" / "autoresolution"
PAPER_LR = {"random": 0.01, "regression": 0.001, "classification": 0.003}  # Sec. 3.1


def cache_cifar_loading() -> None:
    """Decode the CIFAR PNGs once per process instead of once per run (benchmark-only patch)."""
    original = CIFARDataModule.load_split
    cache: dict[tuple[str, str, str], Any] = {}

    def load_split(self: CIFARDataModule, split: str) -> Any:
        key = (str(self.root), self.variant, split)
        if key not in cache:
            cache[key] = original(self, split)
        return cache[key]

    CIFARDataModule.load_split = load_split  # type: ignore[method-assign]


def common_args(args: argparse.Namespace, name: str, max_steps: int) -> list[str]:
    return [
        f"--trainer.max_steps={max_steps}",
        "--trainer.max_epochs=-1",
        f"--trainer.val_check_interval={args.val_every}",
        "--trainer.check_val_every_n_epoch=null",
        "--trainer.num_sanity_val_steps=0",
        "--trainer.log_every_n_steps=10",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={args.out}",
        f"--trainer.logger.init_args.name={name}",
        f"--trainer.default_root_dir={args.out}",
    ]


def profile_args(args: argparse.Namespace, stage: str) -> list[str]:
    if args.profile == "small":
        return []
    tower = ["--model.init_args.image_tower.init_args.preset=paper"]
    if stage == "pretext":
        return [*tower, "--model.init_args.patch_tower.init_args.preset=paper", "--model.init_args.head_preset=paper",
                "--model.init_args.factor=8", "--model.init_args.super_patch=127", "--model.init_args.ema_decay=0.9999",
                "--data.init_args.crop_size=256", "--data.init_args.hr_size=256"]
    return [*tower, "--model.init_args.input_key=hr", "--data.init_args.degradation=null"]


def read_curve(log_dir: str, key: str) -> list[tuple[int, float]]:
    rows = list(csv.DictReader(open(Path(log_dir) / "metrics.csv")))
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


def pretext(args: argparse.Namespace, objective: str) -> dict[str, Any]:
    short = {"classification": "cls", "regression": "reg"}[objective]
    name = f"pretext_{short}"
    config = CFG / (f"pretext_{short}_cifar10.yaml" if args.profile == "small" else "pretext_cls_sr_folders.yaml")
    extra = [f"--model.init_args.objective={objective}", f"--model.init_args.optim.learning_rate={PAPER_LR[objective] if objective == 'classification' else 0.01}",
             f"--data.init_args.eval_batch_size={args.eval_batch}" if args.profile == "small" else "--data.init_args.val_crops=500",
             f"--trainer.limit_val_batches={args.pretext_val_batches}", *profile_args(args, "pretext")]
    t0 = time.perf_counter()
    cli = main(["fit", "--config", str(config), *common_args(args, name, args.pretext_steps), *extra])
    fit_s = time.perf_counter() - t0
    trainer = cli.trainer
    best = trainer.checkpoint_callback.best_model_path
    res = trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False)[0]
    out: dict[str, Any] = {"objective": objective, "steps": args.pretext_steps, "train_s": round(fit_s, 1), "checkpoint": best,
                           "log_dir": os.path.relpath(trainer.log_dir, REPO)}
    p, j, g = cli.model.grid_geometry
    out.update({"patch": p, "grid_stride": j, "grid": g, "predictions_per_image": g * g})
    if objective == "classification":
        out["val_acc"] = round(100 * float(res["val/pretext_acc"]), 2)
        out["curve"] = read_curve(trainer.log_dir, "val/pretext_acc")
        print(f"[{name}] val patch-classification acc {out['val_acc']:.2f} % (chance 50), {fit_s:.0f} s", flush=True)
    else:
        out["val_mae"] = round(float(res["val/pretext_mae"]), 4)
        out["val_mae_centre_predictor"] = round(float(res["val/pretext_mae_centre_predictor"]), 4)
        out["curve"] = read_curve(trainer.log_dir, "val/pretext_mae")
        print(f"[{name}] val centre MAE {out['val_mae']:.4f} (centre predictor {out['val_mae_centre_predictor']:.4f}), {fit_s:.0f} s", flush=True)
    return out


def transfer(args: argparse.Namespace, init: str, labels: float, ckpt: str | None, lr: float | None = None) -> dict[str, Any]:
    steps = args.transfer_steps if labels == 1.0 else args.low_label_steps
    lr = PAPER_LR[init] if lr is None else lr
    name = f"transfer_{init}_{int(labels * 100)}pct" + ("" if lr == PAPER_LR[init] else f"_lr{lr:g}")
    extra = [
        f"--model.init_args.pretrained={ckpt}" if ckpt else "--model.init_args.pretrained=null",
        f"--model.init_args.head_only_steps={args.head_only_steps if ckpt else 0}",
        f"--model.init_args.optim.learning_rate={lr}",
        f"--data.init_args.eval_batch_size={args.eval_batch}",
        *profile_args(args, "transfer"),
    ]
    if labels < 1.0:
        dm = CIFARDataModule()
        n_train = len(dm.load_split("train")[1]) - int(round(len(dm.load_split("train")[1]) * dm.val_fraction))
        extra.append(f"--data.init_args.train_subset={int(round(labels * n_train))}")
    t0 = time.perf_counter()
    cli = main(["fit", "--config", str(CFG / "transfer_cifar10.yaml"), *common_args(args, name, steps), *extra])
    fit_s = time.perf_counter() - t0
    trainer = cli.trainer
    res = trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=trainer.checkpoint_callback.best_model_path, verbose=False)[0]
    err = round(100 * (1 - float(res["test/acc"])), 2)
    curve = [(s, round(100 * (1 - a), 2)) for s, a in read_curve(trainer.log_dir, "val/acc")]
    best_val_err = min(e for _, e in curve)
    print(f"[{name}] test error {err:.2f} % (best val error {best_val_err:.2f} %), {fit_s:.0f} s", flush=True)
    return {"init": init, "labels": labels, "test_error": err, "best_val_error": best_val_err, "lr": str(lr),
            "steps": steps, "head_only_steps": args.head_only_steps if ckpt else 0, "train_s": round(fit_s, 1),
            "val_error_curve": curve, "log_dir": os.path.relpath(trainer.log_dir, REPO)}


def plot_curves(rows: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()

    fracs = sorted({r["labels"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(fracs), figsize=(5.5 * len(fracs), 4), squeeze=False)
    colours = {"random": "tab:gray", "regression": "tab:blue", "classification": "tab:red"}
    for ax, frac in zip(axes[0], fracs, strict=True):
        for r in rows:
            if r["labels"] == frac:
                s, e = zip(*r["val_error_curve"], strict=True)
                control = r["lr"] != str(PAPER_LR[r["init"]])
                label = f"{r['init']}{' lr ' + r['lr'] if control else ''} (test {r['test_error']:.1f}%)"
                ax.plot(s, e, label=label, color=colours[r["init"]], ls="--" if control else "-")
                if r["head_only_steps"]:
                    ax.axvline(r["head_only_steps"], color="k", ls=":", lw=0.8)
        ax.set_title(f"CIFAR-10 LR validation error, {int(frac * 100)}% labels")
        ax.set_xlabel("step (dotted: end of head-only phase; dashed: lr of the baseline)")
        ax.set_ylabel("validation error (%)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["small", "paper"], default="small")
    parser.add_argument("--pretext-steps", type=int, default=None, help="steps per pretext objective")
    parser.add_argument("--pretext-val-batches", type=int, default=None)
    parser.add_argument("--transfer-steps", type=int, default=None, help="steps per transfer run, all labels")
    parser.add_argument("--low-label-steps", type=int, default=None, help="steps per transfer run, 10%% labels")
    parser.add_argument("--head-only-steps", type=int, default=None, help="softmax-only steps before fine-tuning")
    parser.add_argument("--val-every", type=int, default=None, help="validate every n steps")
    parser.add_argument("--eval-batch", type=int, default=256)
    parser.add_argument("--no-controls", action="store_true",
                        help="skip the control rows (pretrained inits fine-tuned with the baseline's lr 0.01)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "runs" / "autoresolution_cifar10"))
    args = parser.parse_args()
    # small: budgets for <= 25 min on 2 shared CPU cores; paper: Sec. 3.3's 10K head-only steps
    defaults = {"small": dict(pretext_steps=600, pretext_val_batches=2, transfer_steps=1500, low_label_steps=800, head_only_steps=200, val_every=100),
                "paper": dict(pretext_steps=100_000, pretext_val_batches=16, transfer_steps=60_000, low_label_steps=20_000, head_only_steps=10_000, val_every=1000)}
    for k, v in defaults[args.profile].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if not os.environ.get("LR_LIGHTNING_DATA"):
        shared = REPO.parent / "shared" / "data"
        if shared.is_dir():
            os.environ["LR_LIGHTNING_DATA"] = str(shared)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cache_cifar_loading()
    t0 = time.perf_counter()
    cls = pretext(args, "classification")
    reg = pretext(args, "regression")
    rows = []
    for labels in (1.0, 0.1):
        for init, ckpt in (("random", None), ("regression", reg["checkpoint"]), ("classification", cls["checkpoint"])):
            rows.append(transfer(args, init, labels, ckpt))
    controls = []
    if not args.no_controls:  # separates the effect of the initialisation from that of the paper's lower lr
        for labels in (1.0, 0.1):
            for init, ckpt in (("regression", reg["checkpoint"]), ("classification", cls["checkpoint"])):
                controls.append(transfer(args, init, labels, ckpt, lr=PAPER_LR["random"]))
    wall = time.perf_counter() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    png = RESULTS / "autoresolution_cifar10.png"
    plot_curves(rows + controls, png)
    pre = {"cls_acc": cls["val_acc"], "cls_chance": 50.0, "reg_mae": reg["val_mae"], "reg_mae_mean_predictor": reg["val_mae_centre_predictor"],
           "split": "validation split of the pretext data (small: held-out 10% of CIFAR-10 train, fixed crops)",
           "classification": {k: v for k, v in cls.items() if k != "checkpoint"},
           "regression": {k: v for k, v in reg.items() if k != "checkpoint"}}
    keys = ("init", "labels", "test_error", "best_val_error", "lr", "steps", "head_only_steps", "train_s")
    table_rows = [{k: r[k] for k in keys} for r in rows]
    control_rows = [{k: r[k] for k in keys} for r in controls]
    for r in table_rows + control_rows:
        base = next(b for b in table_rows if b["labels"] == r["labels"] and b["init"] == "random")
        r["delta_vs_random"] = round(r["test_error"] - base["test_error"], 2)
    md = f"Profile `{args.profile}`.\n\n## Pretext (validation split)\n\n"
    md += markdown_table([
        {"objective": "classification", "metric": "cell accuracy (%)", "value": cls["val_acc"], "chance": 50.0, "grid": f"{cls['grid']}x{cls['grid']}", "steps": cls["steps"], "train_s": cls["train_s"]},
        {"objective": "regression", "metric": "centre MAE ([-1,1] units)", "value": reg["val_mae"], "chance": reg["val_mae_centre_predictor"], "grid": f"{reg['grid']}x{reg['grid']}", "steps": reg["steps"], "train_s": reg["train_s"]},
    ], ["objective", "metric", "value", "chance", "grid", "steps", "train_s"])
    md += "\n## Transfer: CIFAR-10 LR test error (%), best validation checkpoint (EMA weights)\n\n"
    md += markdown_table(table_rows, ["init", "labels", "test_error", "delta_vs_random", "best_val_error", "lr", "steps", "head_only_steps", "train_s"])
    if control_rows:
        md += "\n### Control: pretrained inits fine-tuned with the baseline's lr (0.01)\n\n"
        md += markdown_table(control_rows, ["init", "labels", "test_error", "delta_vs_random", "best_val_error", "lr", "steps", "head_only_steps", "train_s"])
    md += "\nPaper Table 1 (full labels, 40-layer tower, 100M-image pretext, 32x32 CIFAR): random 9.09, regression 6.94, classification 6.60.\n"
    md += f"\n![validation error curves]({png.name})\n"
    payload = {"profile": args.profile, "pretext": pre, "rows": table_rows, "controls_same_lr": control_rows,
               "curves": {f"{r['init']}_{r['labels']}_lr{r['lr']}": r["val_error_curve"] for r in rows + controls},
               "settings": {**{k: getattr(args, k) for k in defaults[args.profile]}, "batch_size": 32,
                            "data": "CIFAR-10 offline copy (JPEG-decoded PNGs): 18k train / 2k val (seeded split of 20k train) / 10k test",
                            "splits": "pretext: train split without labels (val split for scoring); transfer: train (or 10% of it) / val for selection / test once"},
               "log_dirs": {f"{r['init']}_{r['labels']}_lr{r['lr']}": r["log_dir"] for r in rows + controls}}
    json_path, md_path = write_results("autoresolution_cifar10", payload, md, wall)
    print(md)
    print(f"wrote {json_path}, {md_path} and {png}")


if __name__ == "__main__":
    main_bench()
