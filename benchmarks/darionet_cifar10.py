"""DarioNet (paper B) on CIFAR-10 x4 (32 -> 8): the Table-1 replica, per-class figure, image grid,
and Set5/Set14 PSNR of the CIFAR-trained SR nets.

    python benchmarks/darionet_cifar10.py                     # small CPU profile (<= 35 min, 2 cores)
    python benchmarks/darionet_cifar10.py --teacher-ckpt T.ckpt   # reuse an HR-CNN checkpoint
    python benchmarks/darionet_cifar10.py --profile paper     # ESRGAN-size RRDB, longer (GPU)
    python benchmarks/darionet_cifar10.py --profile smoke     # seconds; checks the pipeline only

Stages, each through the project's configs and CLI (``lr_lightning.cli.main``):

1. teacher: CIFAR ResNet20 HR-CNN (configs/baselines/cifar10_hr_cnn.yaml, bf16 + channels_last),
   or ``--teacher-ckpt``;
2. SR-L1: RRDBNet x4 with L1 + EMA (configs/darionet/sr_l1_cifar10_x4.yaml, fp32), best val PSNR;
3. DarioNet: the SR-L1 net fine-tuned with the teacher's logit MSE
   (configs/darionet/darionet_cifar10_x4.yaml, fp32), best val CE(SR) - CE(HR).

Evaluation on the CIFAR-10 test set (10k images, or ``--eval-subset``), teacher fixed, rows HR /
bicubic / bilinear / SR-L1 / DarioNet: mean CE, cross loss (MSE of logits vs the HR logits),
PSNR-Y and SSIM-Y (shave 4), accuracy, evaluation time; per-class accuracy differences vs HR (PNG)
and an image grid HR / LR / bicubic / SR-L1 / DarioNet (PNG). Also a bf16 check of SR PSNR
(bf16-autocast inference of the SR-L1 net vs fp32) a paired short fp32 / bf16-mixed SR-L1 training; and Set5/Set14 PSNR-Y (x4, LR = the same
antialiased bicubic as in training). Writes benchmarks/results/darionet_cifar10.{json,md,*.png}.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, RESULTS, cli_run_args, markdown_table, write_results  # noqa: E402
from lr_lightning.cli import main  # noqa: E402
from lr_lightning.data import CIFAR10_MEAN, CIFAR10_STD, CIFARDataModule  # noqa: E402
from lr_lightning.data.sr import load_folder_images  # noqa: E402
from lr_lightning.degrade import Degradation, upsample  # noqa: E402
from lr_lightning.methods.darionet import load_weights  # noqa: E402
from lr_lightning.methods.darionet.figures import save_image_grid, save_per_class_figure  # noqa: E402
from lr_lightning.metrics import psnr_y, ssim_y  # noqa: E402
from lr_lightning.nn import CifarResNet, RRDBNet  # noqa: E402

NAME = "darionet_cifar10"
HR_CFG = str(REPO / "configs" / "baselines" / "cifar10_hr_cnn.yaml")
SR_CFG = str(REPO / "configs" / "darionet" / "sr_l1_cifar10_x4.yaml")
DN_CFG = str(REPO / "configs" / "darionet" / "darionet_cifar10_x4.yaml")
SCALE = 4

PROFILES: dict[str, dict[str, Any]] = {
    # 2 CPU cores, <= 35 min in total (calibrated: SR-L1 ~0.09 s/step, DarioNet ~0.15 s/step fp32)
    "small": {"teacher_epochs": 15, "sr_epochs": 10, "dn_epochs": 6, "nf": 32, "nb": 4, "gc": 16,
              "batch_size": 32, "train_subset": None, "eval_subset": None, "bf16_check": True},
    # the paper's generator size (ESRGAN 64/23/32), longer schedules: for a GPU
    "paper": {"teacher_epochs": 30, "sr_epochs": 100, "dn_epochs": 10, "nf": 64, "nb": 23, "gc": 32,
              "batch_size": 16, "train_subset": None, "eval_subset": None, "bf16_check": True},
    # pipeline check only (numbers are meaningless)
    "smoke": {"teacher_epochs": 1, "sr_epochs": 1, "dn_epochs": 1, "nf": 8, "nb": 1, "gc": 4,
              "batch_size": 32, "train_subset": 256, "eval_subset": 256, "bf16_check": True},
}


def _common(args: argparse.Namespace, name: str, epochs: int) -> list[str]:
    out = cli_run_args(args.out, name, epochs)
    if args.train_subset:
        out.append(f"--data.init_args.train_subset={args.train_subset}")
    return out


def _fit(config: str, name: str, args: argparse.Namespace, epochs: int, extra: list[str]) -> tuple[str, float, str]:
    t0 = time.perf_counter()
    cli = main(["fit", "--config", config, *_common(args, name, epochs), *extra])
    seconds = time.perf_counter() - t0
    best = cli.trainer.checkpoint_callback.best_model_path
    print(f"[{name}] {epochs} epochs in {seconds:.0f} s, best checkpoint {best}", flush=True)
    return best, seconds, str(cli.trainer.log_dir)


def _net_args(args: argparse.Namespace) -> list[str]:
    return [
        f"--model.init_args.net.init_args.nf={args.nf}",
        f"--model.init_args.net.init_args.nb={args.nb}",
        f"--model.init_args.net.init_args.gc={args.gc}",
        f"--data.init_args.batch_size={args.batch_size}",
    ]


# -- evaluation ----------------------------------------------------------------------------------
class Teacher:
    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net.eval()
        self.mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).float()


def evaluate(methods: dict[str, Any], teacher: Teacher, hr_all: torch.Tensor, labels: torch.Tensor,
             batch: int = 500) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """Table-1 columns for every method (a callable ``lr -> image at HR size``, or None = HR)."""
    deg = Degradation("bicubic", SCALE)
    n = len(hr_all)
    hr_logits = torch.cat([teacher(hr_all[i:i + batch]) for i in range(0, n, batch)])
    rows, preds = [], {}
    for name, fn in methods.items():
        ce = cross = 0.0
        correct = 0
        psnrs, ssims, pred = [], [], []
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(0, n, batch):
                hr, y = hr_all[i:i + batch], labels[i:i + batch]
                img = hr if fn is None else fn(deg(hr)).float().clamp(0, 1)
                logits = teacher(img)
                ce += float(F.cross_entropy(logits, y, reduction="sum"))
                cross += float(F.mse_loss(logits, hr_logits[i:i + batch], reduction="sum")) / logits.shape[1]
                p = logits.argmax(-1)
                correct += int((p == y).sum())
                pred.append(p)
                if fn is not None:
                    psnrs.append(psnr_y(img, hr, shave=SCALE))
                    ssims.append(ssim_y(img, hr, shave=SCALE))
        seconds = time.perf_counter() - t0
        preds[name] = torch.cat(pred)
        row = {"method": name, "acc": round(100 * correct / n, 2), "ce": round(ce / n, 4),
               "cross_loss": round(cross / n, 4),
               "psnr_y": round(float(torch.cat(psnrs).mean()), 3) if psnrs else None,
               "ssim_y": round(float(torch.cat(ssims).mean()), 4) if ssims else None,
               "eval_s": round(seconds, 1), "n_images": n}
        rows.append(row)
        print(f"[eval] {row}", flush=True)
    return rows, preds


def per_class(preds: dict[str, torch.Tensor], labels: torch.Tensor, classes: list[str]) -> dict[str, list[float]]:
    out = {}
    for name, p in preds.items():
        out[name] = [round(100 * float((p[labels == c] == c).float().mean()), 2) for c in range(len(classes))]
    return out


def sr_sets_psnr(fns: dict[str, Any], root: Path, sets: list[str]) -> dict[str, dict[str, float]]:
    """Mean PSNR-Y (shave 4) of each method on whole SR test images (mod-cropped to 4)."""
    deg = Degradation("bicubic", SCALE)
    out: dict[str, dict[str, float]] = {}
    for s in sets:
        images, _ = load_folder_images(root / "sr" / s)
        vals: dict[str, list[float]] = {k: [] for k in fns}
        for img in images:
            h, w = img.shape[-2:]
            hr = img[:, : h - h % SCALE, : w - w % SCALE].float().div(255).unsqueeze(0)
            lr = deg(hr)
            with torch.no_grad():
                for k, fn in fns.items():
                    vals[k].append(float(psnr_y(fn(lr).float().clamp(0, 1), hr, shave=SCALE)[0]))
        out[s] = {k: round(sum(v) / len(v), 3) for k, v in vals.items()}
        print(f"[{s}] {out[s]}", flush=True)
    return out


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), default="small")
    parser.add_argument("--teacher-ckpt", default=None, help="reuse an HR-CNN checkpoint (skips stage 1)")
    parser.add_argument("--sr-ckpt", default=None, help="reuse an SR-L1 checkpoint (skips stage 2)")
    parser.add_argument("--darionet-ckpt", default=None, help="reuse a DarioNet checkpoint (skips stage 3)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "runs" / NAME))
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/results (calibration)")
    parser.add_argument("--name", default=NAME, help="results file name (benchmarks/results/<name>.json)")
    parser.add_argument("--no-bf16-check", action="store_true", help="skip the bf16 SR check")
    parser.add_argument("--extra-pixel-weight", type=float, default=None,
                        help="also train a DarioNet variant with this L1 pixel-loss weight (extra row 'DarioNet+L1')")
    for key in ("teacher_epochs", "sr_epochs", "dn_epochs", "nf", "nb", "gc", "batch_size", "train_subset", "eval_subset"):
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None)
    args = parser.parse_args()
    for key, value in PROFILES[args.profile].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if not os.environ.get("LR_LIGHTNING_DATA"):
        shared = REPO.parent / "shared" / "data"
        if shared.is_dir():
            os.environ["LR_LIGHTNING_DATA"] = str(shared)
    data_root = Path(os.environ.get("LR_LIGHTNING_DATA", "data"))
    t_start = time.perf_counter()
    timings: dict[str, float | None] = {}

    # 1. teacher
    teacher_ckpt = args.teacher_ckpt
    if teacher_ckpt is None:
        teacher_ckpt, timings["teacher_train_s"], _ = _fit(HR_CFG, "teacher_hr_cnn", args, args.teacher_epochs, [])
    # 2. SR-L1
    sr_ckpt = args.sr_ckpt
    if sr_ckpt is None:
        sr_ckpt, timings["sr_l1_train_s"], _ = _fit(SR_CFG, "sr_l1", args, args.sr_epochs, _net_args(args))
    # 3. DarioNet
    dn_ckpt = args.darionet_ckpt
    if dn_ckpt is None:
        dn_ckpt, timings["darionet_train_s"], _ = _fit(DN_CFG, "darionet", args, args.dn_epochs, [
            *_net_args(args), f"--model.init_args.net_ckpt={sr_ckpt}", f"--model.init_args.teacher_ckpt={teacher_ckpt}",
        ])

    extra_ckpt = None
    if args.extra_pixel_weight is not None:
        extra_ckpt, timings["darionet_l1_train_s"], _ = _fit(DN_CFG, "darionet_l1", args, args.dn_epochs, [
            *_net_args(args), f"--model.init_args.net_ckpt={sr_ckpt}", f"--model.init_args.teacher_ckpt={teacher_ckpt}",
            f"--model.init_args.pixel_weight={args.extra_pixel_weight}",
        ])

    # -- evaluation ------------------------------------------------------------------------------
    torch.manual_seed(0)
    teacher = Teacher(load_weights(CifarResNet(20, num_classes=10), teacher_ckpt))
    sr_l1 = load_weights(RRDBNet(SCALE, nf=args.nf, nb=args.nb, gc=args.gc), sr_ckpt).eval()
    dario = load_weights(RRDBNet(SCALE, nf=args.nf, nb=args.nb, gc=args.gc), dn_ckpt).eval()
    dm = CIFARDataModule(root=str(data_root), variant="cifar10")
    dm.setup("test")
    test = dm.test_set
    idx = test.indices if args.eval_subset is None else test.indices[: args.eval_subset]
    hr_all = test.images[idx].float().div(255)
    labels = test.labels[idx]
    classes = sorted(p.name for p in (dm.folder_root / "test").iterdir() if p.is_dir())

    def up(mode: str) -> Any:
        return lambda lr: upsample(lr, (lr.shape[-2] * SCALE, lr.shape[-1] * SCALE), mode=mode)

    methods = {"HR": None, "bicubic": up("bicubic"), "bilinear": up("bilinear"), "SR-L1": sr_l1, "DarioNet": dario}
    sr_methods = {"bicubic": up("bicubic"), "SR-L1": sr_l1, "DarioNet": dario}
    if extra_ckpt is not None:
        extra = load_weights(RRDBNet(SCALE, nf=args.nf, nb=args.nb, gc=args.gc), extra_ckpt).eval()
        methods["DarioNet+L1"] = sr_methods["DarioNet+L1"] = extra
    rows, preds = evaluate(methods, teacher, hr_all, labels)
    class_acc = per_class(preds, labels, classes)

    bf16_check = None
    if PROFILES[args.profile]["bf16_check"] and not args.no_bf16_check:
        deg = Degradation("bicubic", SCALE)
        sub = hr_all[:2000]
        with torch.no_grad():
            fp32 = torch.cat([psnr_y(sr_l1(deg(sub[i:i + 500])).clamp(0, 1), sub[i:i + 500], SCALE) for i in range(0, len(sub), 500)])
            with torch.autocast("cpu", torch.bfloat16):
                bf = torch.cat([psnr_y(sr_l1(deg(sub[i:i + 500])).float().clamp(0, 1), sub[i:i + 500], SCALE) for i in range(0, len(sub), 500)])
        bf16_check = {"images": len(sub), "psnr_y_fp32": round(float(fp32.mean()), 3), "psnr_y_bf16_autocast": round(float(bf.mean()), 3),
                      "loss_db": round(float(fp32.mean() - bf.mean()), 3)}
        # paired short SR-L1 trainings (no EMA, 4000 training images) in fp32 and bf16-mixed
        check_epochs = 1 if args.profile == "smoke" else 2
        for prec in ("32-true", "bf16-mixed"):
            ckpt, secs, _ = _fit(SR_CFG, f"sr_check_{prec}", args, check_epochs, [
                *_net_args(args), f"--trainer.precision={prec}", "--trainer.callbacks=[]",
                "--data.init_args.train_subset=4000"])
            net = load_weights(RRDBNet(SCALE, nf=args.nf, nb=args.nb, gc=args.gc), ckpt).eval()
            with torch.no_grad():
                val = torch.cat([psnr_y(net(deg(sub[i:i + 500])).clamp(0, 1), sub[i:i + 500], SCALE) for i in range(0, len(sub), 500)])
            bf16_check[f"train_{prec}_psnr_y"] = round(float(val.mean()), 3)
            bf16_check[f"train_{prec}_s"] = round(secs, 1)
        bf16_check["train_check"] = f"{check_epochs} epochs on 4000 training images each, no EMA, fp32 inference"
        bf16_check["train_loss_db"] = round(bf16_check["train_32-true_psnr_y"] - bf16_check["train_bf16-mixed_psnr_y"], 3)
        print(f"[bf16 check] {bf16_check}", flush=True)

    sets = sr_sets_psnr(sr_methods, data_root, ["Set5", "Set14"])

    RESULTS.mkdir(parents=True, exist_ok=True)
    prefix = f"{args.name}_{args.profile}" if args.no_write else args.name
    out_dir = Path(args.out) if args.no_write else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    fig_class = out_dir / f"{prefix}_per_class.png"
    fig_grid = out_dir / f"{prefix}_grid.png"
    save_per_class_figure(fig_class, classes, {k: class_acc[k] for k in ("HR", *methods) if k in ("HR", "SR-L1", "DarioNet", "DarioNet+L1")},
                          title="Per-class accuracy vs the teacher on HR images (CIFAR-10 x4; paper B Fig. 3/5)")
    deg = Degradation("bicubic", SCALE)
    # two images of each of 4 classes (the first ones in the test order)
    pick = torch.cat([torch.nonzero(labels == c)[:2, 0] for c in (0, 3, 5, 8)])
    hr_pick = hr_all[pick]
    lr_pick = deg(hr_pick)
    with torch.no_grad():
        grid = {"HR": hr_pick, "LR (8x8)": F.interpolate(lr_pick, scale_factor=SCALE, mode="nearest"),
                "bicubic": methods["bicubic"](lr_pick), "SR-L1": sr_l1(lr_pick), "DarioNet": dario(lr_pick)}
        if extra_ckpt is not None:
            grid["DarioNet+L1"] = methods["DarioNet+L1"](lr_pick)
    save_image_grid(fig_grid, grid)

    wall = time.perf_counter() - t_start
    by = {r["method"]: r for r in rows}
    ordering = {
        "darionet_acc_gt_sr_l1_acc": by["DarioNet"]["acc"] > by["SR-L1"]["acc"],
        "sr_l1_acc_gt_bicubic_acc": by["SR-L1"]["acc"] > by["bicubic"]["acc"],
        "darionet_psnr_within_1db_of_sr_l1": abs(by["DarioNet"]["psnr_y"] - by["SR-L1"]["psnr_y"]) <= 1.0,
    }
    payload = {
        "rows": rows,
        "per_class_acc": {"classes": classes, **class_acc},
        "sr_sets_psnr_y_x4": sets,
        "paper_ordering": ordering,
        "bf16_sr_check": bf16_check,
        "timings_s": {k: (round(v, 1) if v is not None else None) for k, v in timings.items()},
        "checkpoints": {"teacher": os.path.relpath(teacher_ckpt, REPO), "sr_l1": os.path.relpath(sr_ckpt, REPO),
                        "darionet": os.path.relpath(dn_ckpt, REPO),
                        "darionet_l1": os.path.relpath(extra_ckpt, REPO) if extra_ckpt else None},
        "figures": {"per_class": os.path.relpath(fig_class, REPO), "grid": os.path.relpath(fig_grid, REPO)},
        "settings": {
            "profile": args.profile, "teacher": "CifarResNet(20), configs/baselines/cifar10_hr_cnn.yaml (bf16-mixed, channels_last)",
            "teacher_epochs": None if args.teacher_ckpt else args.teacher_epochs,
            "sr_net": f"RRDBNet(x4, nf={args.nf}, nb={args.nb}, gc={args.gc})", "sr_epochs": args.sr_epochs,
            "darionet_epochs": args.dn_epochs, "darionet_l1_pixel_weight": args.extra_pixel_weight, "batch_size": args.batch_size, "train_subset": args.train_subset,
            "sr_precision": "32-true", "lr": "bicubic x4 (antialiased, PIL-like), 32 -> 8",
            "eval": f"CIFAR-10 test set, {len(labels)} images; PSNR-Y / SSIM-Y shave 4 (SSIM: torchmetrics on Y, data range 255)",
            "cross_loss": "mean over images and logits of (teacher(x) - teacher(HR))^2",
        },
    }
    md = "## Table 1 replica (CIFAR-10 x4, teacher ResNet20 fixed)\n\n"
    md += markdown_table(rows, ["method", "acc", "ce", "cross_loss", "psnr_y", "ssim_y", "eval_s"])
    md += f"\nPaper ordering: {ordering}\n"
    md += "\n## Set5 / Set14 PSNR-Y (x4, CIFAR-trained nets)\n\n"
    md += markdown_table([{"set": s, **v} for s, v in sets.items()], ["set", *sr_methods])
    md += "\n## Per-class accuracy (%)\n\n"
    md += markdown_table([{"class": c, **{k: v[i] for k, v in class_acc.items()}} for i, c in enumerate(classes)],
                         ["class", *class_acc])
    if bf16_check:
        md += f"\n## bf16 check (SR-L1: bf16-autocast inference vs fp32; paired short fp32 / bf16-mixed trainings)\n\n{bf16_check}\n"
    md += f"\nTimings (s): {payload['timings_s']}\n\nFigures: {payload['figures']['per_class']}, {payload['figures']['grid']}\n"
    if args.no_write:
        print(md)
        print(f"(--no-write) wall {wall:.0f} s")
        return
    json_path, md_path = write_results(args.name, payload, md, wall)
    print(md)
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main_bench()
