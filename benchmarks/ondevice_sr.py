"""Paper E end to end at CPU scale: offline meta-learning + masks, online integer adaptation, Tables 1-7.

    python benchmarks/ondevice_sr.py                     # default profile (x4, <= 90 min on 2 cores)
    python benchmarks/ondevice_sr.py --resume            # skip the stages already in the results JSON
    python benchmarks/ondevice_sr.py --profile x2        # the x2 profile
    python benchmarks/ondevice_sr.py --profile smoke     # minutes, checks the plumbing (own file names)
    python benchmarks/ondevice_sr.py --resume --stages pretrain_bic,pretrain_meta   # some stages only
    python benchmarks/ondevice_sr.py --resume --redo online_lr,table1,table6         # run stages again

Stages (each stored in ``benchmarks/results/ondevice_sr[_<profile>].json`` when it finishes, with
the trained weights and masks in ``benchmarks/results/ondevice_sr_weights/``, so ``--resume``
continues on a fresh machine):

1. ``pretrain_bic`` / ``pretrain_meta``: ZSSR-8 (no bias) on ``D_bic`` / ``D_meta`` (Alg. 1 l. 1),
   random 64x64 Urban100 HR patches (the DIV2K stand-in), Adam 1e-4, bf16 autocast.
2. ``maml_so`` / ``maml_fo``: MAML over kernel tasks from Pretrain(D_meta), MZSR's settings (5 tasks,
   8 + 8 patches, 5 inner steps at 1e-2, Adam 1e-4), second vs first order at the SAME wall time.
3. ``masks``: gradient masks (Eq. 7-9) of each theta on ``D_gp = D_meta``, theta frozen.
4. ``online_lr``: the online learning rate of each theta chosen on validation (Set14 with kernels
   drawn from p(k); float arithmetic, 10 updates), never on the test set.
5. ``table1``: Set5, Gaussian kernels (the five isotropic kernels of ``sr/kernels``, every image x
   every kernel = 25 test pairs for Init, 0 % and 85 %, the columns the claims rest on; the 5 pairs
   image i x kernel i for 27/50/67 %, to fit the budget), x4 direct subsampling; Init and after 10
   online updates at prune 0/27/50/67/85 %, float and integer ("+ 8-bit" = 32-bit integer weights, Eq. 14/15); PSNR vs
   iteration (Fig. 5); paired 95 % intervals over the test pairs.
6. ``table6``: layer-wise baseline vs knapsack masks (Table 6), Pretrain(D_bic) theta as in the paper.
7. ``table34``: ZSSR-8 trained on ``D_bic`` x4 in FP / standard 8-bit / 8-bit (ours) arithmetic, dynamic
   and static scales (static: calibrated offline over training batches), Set5 and BSD100 (Table 3/4).
   The paper trains from scratch; at this budget SGD from the default init does not move (the stage
   measures it: ``from_scratch_probe``), so every arm continues from Pretrain(D_bic) for the same steps.
8. ``rounding``: floor (literal Eq. 10) vs round half up, int8/16/32 residual output, and weight-gradient
   rounding nearest / floor / stochastic in integer training (issue 12, section 1).
9. ``table2`` and ``timing``: Eq. 16/17 acceleration (Tables 2, 5, 7) and measured step times.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Trainer, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    REPO,
    RESULTS,
    add_stage_arguments,
    markdown_table,
    mean_ci,
    paired,
    resumable_results,
    selected_stages,
    write_results,
)
from lr_lightning.data import KernelSRDataModule  # noqa: E402
from lr_lightning.data.image_io import default_data_root  # noqa: E402
from lr_lightning.data.kernel_sr import DEFAULT_TEST_KERNELS  # noqa: E402
from lr_lightning.data.sr import load_folder_images  # noqa: E402
from lr_lightning.degrade import upsample  # noqa: E402
from lr_lightning.degrade.kernels import load_kernel  # noqa: E402
from lr_lightning.degrade.zero_shot import (  # noqa: E402
    bicubic_downsample,
    kernel_downsample,
    mod_crop,
    quantize_8bit,
)
from lr_lightning.methods.ondevice_sr import (  # noqa: E402
    GradientMasks,
    ZSSRMetaLearn,
    ZSSRPretrain,
    load_masks,
    zero_shot_adapt,
)
from lr_lightning.methods.optim import OptimSpec  # noqa: E402
from lr_lightning.metrics import psnr_y  # noqa: E402
from lr_lightning.metrics.ssim import ssim_y  # noqa: E402
from lr_lightning.nn import ZSSR8  # noqa: E402

WEIGHTS = RESULTS / "ondevice_sr_weights"
#: every seed the stages use (one training seed per theta: the claims rest on paired test images)
SEEDS = {"training": 0, "task_and_kernel_sampler": 0, "validation_kernels": 104729, "static_calibration_batches": 1}
RUNS = REPO / "benchmarks" / "runs" / "ondevice_sr"

PROFILES: dict[str, dict[str, Any]] = {
    "default": {
        "scale": 4, "patch": 64, "batch": 16, "pretrain_steps": 3000, "maml_minutes": 7.5, "mask_batches": 50,
        "lr_grid": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3], "val_images": 14, "pairing": "all", "online_steps": 10,
        "ratios": [0.27, 0.5, 0.67, 0.85], "full_pair_ratios": [0.0, 0.85], "scratch_steps": 300, "scratch_patch": 48,
        "scratch_lr": 0.1, "bsd_images": 10, "timing_repeats": 7,
    },
    "x2": {
        "scale": 2, "patch": 64, "batch": 16, "pretrain_steps": 3000, "maml_minutes": 10.0, "mask_batches": 50,
        "lr_grid": [0.01, 0.03, 0.1, 0.3], "val_images": 14, "pairing": "all", "online_steps": 10,
        "ratios": [0.27, 0.5, 0.67, 0.85], "full_pair_ratios": [0.0, 0.85], "scratch_steps": 300, "scratch_patch": 48,
        "scratch_lr": 0.1, "bsd_images": 10, "timing_repeats": 7,
    },
    "smoke": {
        "scale": 4, "patch": 32, "batch": 4, "pretrain_steps": 4, "maml_minutes": 0.15, "mask_batches": 2,
        "lr_grid": [0.01, 0.1], "val_images": 2, "pairing": "cycle", "online_steps": 2,
        "ratios": [0.5, 0.85], "full_pair_ratios": [0.0, 0.85], "scratch_steps": 3, "scratch_patch": 32, "scratch_lr": 0.1,
        "bsd_images": 1, "timing_repeats": 2,
    },
}
STAGES = ["pretrain_bic", "pretrain_meta", "maml_so", "maml_fo", "masks", "online_lr", "table1", "table6",
          "table34", "rounding", "table2", "timing"]
#: Table 1 rows: (method name as in the paper, theta, arithmetic)
TABLE1_ROWS = [
    ("Pretrain(D_bic)", "pretrain_bic", "float"),
    ("Pretrain(D_meta)", "pretrain_meta", "float"),
    ("Pretrain(D_meta)+8-bit", "pretrain_meta", "integer"),
    ("Pretrain(D_meta)+MAML", "maml_so", "float"),
    ("Pretrain(D_meta)+MAML+8-bit", "maml_so", "integer"),
    ("Pretrain(D_meta)+FOMAML (extra)", "maml_fo", "float"),
]
PAPER_TABLE1 = {
    "Bicubic": (None, 27.41),
    "Pretrain(D_bic)": (29.26, [29.76, 29.76, 29.74, 29.66, 29.47]),
    "Pretrain(D_meta)": (29.26, [29.76, 29.76, 29.74, 29.67, 29.53]),
    "Pretrain(D_meta)+8-bit": (29.13, [29.64, 29.64, 29.62, 29.56, 29.39]),
    "Pretrain(D_meta)+MAML": (16.25, [30.11, 30.12, 30.11, 30.09, 30.05]),
    "Pretrain(D_meta)+MAML+8-bit": (15.89, [29.89, 29.87, 29.85, 29.84, 29.79]),
}


# -- helpers -----------------------------------------------------------------------------------------
def data_root() -> Path:
    return Path(default_data_root())


def make_net(scale: int) -> ZSSR8:
    return ZSSR8(scale=scale)


def weights_path(profile: str, name: str) -> Path:
    return WEIGHTS / f"{profile}_{name}.pt"


def load_theta(profile: str, name: str, scale: int) -> ZSSR8:
    net = make_net(scale)
    net.load_state_dict(torch.load(weights_path(profile, name), weights_only=True))
    return net.eval()


def save_theta(profile: str, name: str, net: torch.nn.Module) -> None:
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()},
               weights_path(profile, name))


def datamodule(p: dict[str, Any], patches: int, batch: int, patch: int | None = None) -> KernelSRDataModule:
    return KernelSRDataModule(
        train_dirs=["sr/Urban100"], val_dirs=["sr/Set14"], test_dirs=["sr/Set5"], scale=p["scale"],
        patch_size=patch or p["patch"], patches_per_epoch=patches, batch_size=batch, val_kernel_count=2,
    )


def trainer(name: str, *, max_steps: int = -1, max_time: dict | None = None, precision: str = "32-true",
            limit_val: int = 0, max_epochs: int = 1, callbacks: list | None = None) -> Trainer:
    from lightning.pytorch.loggers import CSVLogger

    return Trainer(
        max_steps=max_steps, max_time=max_time, max_epochs=max_epochs, precision=precision, logger=CSVLogger(RUNS, name=name),
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=limit_val, num_sanity_val_steps=0,
        enable_checkpointing=False, log_every_n_steps=10, default_root_dir=RUNS, callbacks=callbacks or [],
    )


def last_logged(tr: Trainer, key: str) -> float | None:
    import csv

    path = Path(tr.logger.log_dir) / "metrics.csv"
    vals = [float(r[key]) for r in csv.DictReader(path.open()) if r.get(key)] if path.is_file() else []
    return vals[-1] if vals else None


def val_pairs(p: dict[str, Any]) -> list[dict[str, Any]]:
    """Validation images (Set14, kernels drawn once from p(k), cycle pairing): model selection only."""
    dm = datamodule(p, 1, 1)
    dm.setup("validate")
    items = [dm.val_set[i] for i in range(min(len(dm.val_set), p["val_images"]))]
    return [{"hr": it["hr"].float()[None] / 255, "lr": it["lr"].float()[None] / 255, "kernel": it["kernel"],
             "name": it["name"]} for it in items]


def test_pairs(p: dict[str, Any], folder: str = "sr/Set5", pairing: str | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
    """Set5 (or another folder) x the stored isotropic Gaussian kernels: LR = blur + direct x s."""
    images, names = load_folder_images(data_root() / folder)
    if limit is not None:
        images, names = images[:limit], names[:limit]
    kernels = [(Path(f).stem, load_kernel(data_root() / f)) for f in DEFAULT_TEST_KERNELS]
    pairing = pairing or p["pairing"]
    combos = ([(i, j) for i in range(len(images)) for j in range(len(kernels))] if pairing == "all"
              else [(i, i % len(kernels)) for i in range(len(images))])
    out = []
    for i, j in combos:
        hr = mod_crop(images[i].float()[None] / 255, p["scale"])
        lr = quantize_8bit(kernel_downsample(hr, kernels[j][1], p["scale"]))
        out.append({"hr": hr, "lr": lr, "kernel": kernels[j][1], "name": f"{names[i]}@{kernels[j][0]}"})
    return out


def bicubic_pairs(p: dict[str, Any], folder: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Bicubic x s test images (Table 4)."""
    images, names = load_folder_images(data_root() / folder)
    if limit is not None:
        images, names = images[:limit], names[:limit]
    out = []
    for im, n in zip(images, names, strict=True):
        hr = mod_crop(im.float()[None] / 255, p["scale"])
        out.append({"hr": hr, "lr": quantize_8bit(bicubic_downsample(hr, p["scale"])), "name": n})
    return out


def online_eval(theta: torch.nn.Module, pairs: list[dict[str, Any]], p: dict[str, Any], *, learning_rate: float,
                arithmetic: str, keep: list[torch.Tensor] | None = None, curve: bool = False,
                steps: int | None = None) -> dict[str, Any]:
    """Alg. 2 on every pair: per-pair PSNR-Y / SSIM-Y after the updates, the curve, seconds."""
    s = p["scale"]
    psnr, ssim, secs, curves = [], [], [], []
    for pr in pairs:
        res = zero_shot_adapt(theta, pr["lr"], pr["kernel"], s, steps=p["online_steps"] if steps is None else steps,
                              learning_rate=learning_rate, arithmetic=arithmetic, keep=keep, hr=pr["hr"], curve=curve)
        psnr.append(float(psnr_y(res.sr, pr["hr"], shave=s)[0]))
        ssim.append(float(ssim_y(res.sr, pr["hr"], shave=s)[0]))
        secs.append(res.seconds)
        if curve:
            curves.append(res.psnr_curve)
    out = {"psnr": psnr, "ssim": ssim, "seconds": secs, "psnr_mean": float(np.mean(psnr)),
           "ssim_mean": float(np.mean(ssim)), "seconds_mean": float(np.mean(secs))}
    if curve:
        out["curve_mean"] = np.mean(np.asarray(curves), axis=0).tolist()
        out["init"] = [c[0] for c in curves]
    return out


def bicubic_psnr(pairs: list[dict[str, Any]], scale: int) -> list[float]:
    vals = []
    for pr in pairs:
        up = upsample(pr["lr"], tuple(pr["hr"].shape[-2:]), mode="bicubic").clamp(0, 1)
        vals.append(float(psnr_y(up, pr["hr"], shave=scale)[0]))
    return vals


# -- stages ------------------------------------------------------------------------------------------
def stage_pretrain(p: dict[str, Any], profile: str, name: str) -> dict[str, Any]:
    degradation = "bicubic" if name == "pretrain_bic" else "kernels"
    seed_everything(0)
    task = ZSSRPretrain(net=make_net(p["scale"]), scale=p["scale"], train_degradation=degradation,
                        optim=OptimSpec(name="adam", learning_rate=1e-4, betas=(0.9, 0.999)), channels_last=True)
    steps = p["pretrain_steps"]
    dm = datamodule(p, steps * p["batch"], p["batch"])
    tr = trainer(f"{profile}_{name}", max_steps=steps, precision="bf16-mixed", limit_val=p["val_images"])
    t0 = time.perf_counter()
    tr.fit(task, datamodule=dm)
    fit_s = time.perf_counter() - t0
    save_theta(profile, name, task.net)
    return {"steps": steps, "batch": p["batch"], "patch": p["patch"], "train_degradation": degradation,
            "fit_seconds": round(fit_s, 1), "val_psnr_y_no_adaptation": last_logged(tr, "val/psnr_y"),
            "train_loss_last": last_logged(tr, "train/loss")}


def stage_maml(p: dict[str, Any], profile: str, name: str) -> dict[str, Any]:
    first_order = name == "maml_fo"
    seed_everything(0)
    task = ZSSRMetaLearn(net=load_theta(profile, "pretrain_meta", p["scale"]).train(), scale=p["scale"],
                         first_order=first_order, val_online_steps=5)
    per_step = 5 * 16
    minutes = p["maml_minutes"]
    dm = datamodule(p, max(10, int(minutes * 60)) * per_step, per_step)  # more patches than can be used
    # validation = the online_lr stage (adapted PSNR on Set14 for every learning rate), not here
    tr = trainer(f"{profile}_{name}", max_time={"seconds": max(1, int(minutes * 60))}, limit_val=0)
    t0 = time.perf_counter()
    tr.fit(task, datamodule=dm)
    fit_s = time.perf_counter() - t0
    save_theta(profile, name, task.net)
    return {"first_order": first_order, "meta_steps": int(tr.global_step), "wall_minutes": minutes,
            "fit_seconds": round(fit_s, 1), "seconds_per_meta_step": round(fit_s / max(1, tr.global_step), 2),
            "paper_meta_steps": 100_000, "budget_fraction_of_mzsr": tr.global_step / 100_000,
            "train_loss_last": last_logged(tr, "train/loss")}


def stage_masks(p: dict[str, Any], profile: str) -> dict[str, Any]:
    out = {}
    for name in ("pretrain_bic", "pretrain_meta", "maml_so"):
        path = WEIGHTS / f"{profile}_masks_{name}.json"
        seed_everything(0)
        task = GradientMasks(net=load_theta(profile, name, p["scale"]), scale=p["scale"], masks_path=str(path),
                             prune_ratios=p["ratios"])
        dm = datamodule(p, p["mask_batches"] * p["batch"], p["batch"])
        tr = trainer(f"{profile}_masks_{name}", max_epochs=1)
        tr.fit(task, datamodule=dm)
        doc = json.loads(path.read_text())
        out[name] = {k: {"kept": v["kept"], "cost_fraction": v.get("cost_fraction")} for k, v in doc["masks"].items()}
    return out


def stage_online_lr(p: dict[str, Any], profile: str) -> dict[str, Any]:
    pairs = val_pairs(p)
    out = {}
    for name in ("pretrain_bic", "pretrain_meta", "maml_so", "maml_fo"):
        theta = load_theta(profile, name, p["scale"])
        scores = {str(g): online_eval(theta, pairs, p, learning_rate=g, arithmetic="float")["psnr_mean"] for g in p["lr_grid"]}
        best = max(scores, key=lambda g: scores[g])
        out[name] = {"val_psnr_y": scores, "chosen": float(best)}
    return out


def stage_table1(p: dict[str, Any], profile: str, results: dict[str, Any]) -> dict[str, Any]:
    pairs = test_pairs(p)
    n_k = len(DEFAULT_TEST_KERNELS)
    # image i with kernel i mod K: the "cycle" subset of the all-pairs list (i major, kernel minor)
    diagonal = [i for i in range(len(pairs)) if p["pairing"] != "all" or (i // n_k) % n_k == i % n_k]
    lrs = results["stages"]["online_lr"]
    bic = bicubic_psnr(pairs, p["scale"])
    rows: list[dict[str, Any]] = [{"method": "Bicubic", "init": None, "after": {}, "bicubic": mean_ci(bic), "per_pair": bic}]
    per_pair: dict[str, dict[str, list[float]]] = {}
    for method, theta_name, arith in TABLE1_ROWS:
        theta = load_theta(profile, theta_name, p["scale"])
        gamma = lrs[theta_name]["chosen"]
        masks_file = WEIGHTS / f"{profile}_masks_{theta_name}.json"
        row: dict[str, Any] = {"method": method, "theta": theta_name, "arithmetic": arith, "online_learning_rate": gamma,
                               "after": {}, "after_ci95": {}, "ssim": {}, "seconds": {}}
        per_pair[method] = {}
        for ratio in [0.0, *p["ratios"]]:
            if theta_name == "maml_fo" and ratio not in (0.0,):
                continue  # the extra FOMAML row: unpruned only
            keep = None if ratio == 0 else load_masks(masks_file, ratio)
            use = pairs if ratio in p["full_pair_ratios"] else [pairs[i] for i in diagonal]
            ev = online_eval(theta, use, p, learning_rate=gamma, arithmetic=arith, keep=keep)
            row.setdefault("pairs", {})[str(round(ratio * 100))] = len(use)
            key = str(round(ratio * 100))
            row["after"][key] = ev["psnr_mean"]
            row["after_ci95"][key] = mean_ci(ev["psnr"])["ci95"]
            row["ssim"][key] = ev["ssim_mean"]
            row["seconds"][key] = ev["seconds_mean"]
            per_pair[method][key] = ev["psnr"]
            if ratio == 0:  # Init on every pair (theta, no update); the Fig. 5 curve on the diagonal pairs
                init = online_eval(theta, pairs, p, learning_rate=gamma, arithmetic=arith, steps=0)["psnr"]
                row["init"] = float(np.mean(init))
                row["init_ci95"] = mean_ci(init)["ci95"]
                per_pair[method]["init"] = init
                cur = online_eval(theta, [pairs[i] for i in diagonal], p, learning_rate=gamma, arithmetic=arith, curve=True)
                row["curve"] = cur["curve_mean"]
                row["curve_pairs"] = len(diagonal)
        rows.append(row)
        print(f"table1 {method}: init {row['init']:.2f} after {row['after']}", flush=True)
    pp = per_pair
    tests = {
        "MAML - Pretrain(D_meta), float, 0%": paired(pp["Pretrain(D_meta)+MAML"]["0"], pp["Pretrain(D_meta)"]["0"]),
        "MAML+8-bit - Pretrain(D_meta)+8-bit, 0%": paired(pp["Pretrain(D_meta)+MAML+8-bit"]["0"], pp["Pretrain(D_meta)+8-bit"]["0"]),
        "Pretrain(D_meta) - Bicubic": paired(pp["Pretrain(D_meta)"]["0"], bic),
        "Pretrain(D_meta) - Pretrain(D_bic), 0%": paired(pp["Pretrain(D_meta)"]["0"], pp["Pretrain(D_bic)"]["0"]),
        "MAML+8-bit - MAML (float), 0%": paired(pp["Pretrain(D_meta)+MAML+8-bit"]["0"], pp["Pretrain(D_meta)+MAML"]["0"]),
        "Pretrain(D_meta)+8-bit - float, 0%": paired(pp["Pretrain(D_meta)+8-bit"]["0"], pp["Pretrain(D_meta)"]["0"]),
        "MAML+8-bit: 85% - 0%": paired(pp["Pretrain(D_meta)+MAML+8-bit"]["85"], pp["Pretrain(D_meta)+MAML+8-bit"]["0"]),
        "MAML: after - init (adaptation gain), float": paired(pp["Pretrain(D_meta)+MAML"]["0"], pp["Pretrain(D_meta)+MAML"]["init"]),
        "Pretrain(D_meta): after - init, float": paired(pp["Pretrain(D_meta)"]["0"], pp["Pretrain(D_meta)"]["init"]),
        "FOMAML - MAML (second order), 0%, matched wall time": paired(pp["Pretrain(D_meta)+FOMAML (extra)"]["0"], pp["Pretrain(D_meta)+MAML"]["0"]),
    }
    online_s = float(np.mean([r["seconds"]["0"] for r in rows[1:] if r.get("arithmetic") == "integer"]))
    return {"scale": p["scale"], "test_pairs": [pr["name"] for pr in pairs], "rows": rows, "paired_tests": tests,
            "per_pair": per_pair, "online_seconds_per_image_integer": online_s}


def stage_table6(p: dict[str, Any], profile: str, results: dict[str, Any]) -> dict[str, Any]:
    pairs = test_pairs(p)
    n_k = len(DEFAULT_TEST_KERNELS)
    pairs = [pr for i, pr in enumerate(pairs) if p["pairing"] != "all" or (i // n_k) % n_k == i % n_k]  # as Table 1's 50 %
    theta = load_theta(profile, "pretrain_bic", p["scale"])
    gamma = results["stages"]["online_lr"]["pretrain_bic"]["chosen"]
    masks_file = WEIGHTS / f"{profile}_masks_pretrain_bic.json"
    doc = json.loads(masks_file.read_text())
    rows = []
    t1 = {r["method"]: r for r in results["stages"]["table1"]["rows"]}["Pretrain(D_bic)"]
    for key, v in doc["masks"].items():
        if not key.startswith("layerwise:"):
            continue
        ev = online_eval(theta, pairs, p, learning_rate=gamma, arithmetic="float", keep=load_masks(masks_file, key))
        rows.append({"method": "Layer-wise", "prune": float(key.split(":")[1]), "kept": v["kept"],
                     "psnr": ev["psnr_mean"], "ci95": mean_ci(ev["psnr"])["ci95"], "per_pair": ev["psnr"]})
    for key, val in t1["after"].items():
        rows.append({"method": "Proposed (knapsack)", "prune": int(key) / 100, "psnr": val, "ci95": t1["after_ci95"][key]})
    proposed = results["stages"]["table1"]["per_pair"]["Pretrain(D_bic)"]
    lw50 = next(r for r in rows if r["method"] == "Layer-wise" and abs(r["prune"] - 0.5) < 1e-9)
    tests = {"Proposed 50% - Layer-wise 50%": paired(proposed["50"], lw50["per_pair"])} if "50" in proposed else {}
    return {"theta": "pretrain_bic", "online_learning_rate": gamma, "pairs": [pr["name"] for pr in pairs],
            "rows": rows, "paired_tests": tests}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="default")
    add_stage_arguments(ap, STAGES)
    args = ap.parse_args()
    torch.set_num_threads(2)
    p = PROFILES[args.profile]
    name = "ondevice_sr" if args.profile == "default" else f"ondevice_sr_{args.profile}"
    path = RESULTS / f"{name}.json"
    results: dict[str, Any] = {"profile": args.profile, "settings": p, "seeds": SEEDS, "stages": {}, "stage_wall_s": {}}
    results = resumable_results(path, results, resume=args.resume, redo=args.redo)
    try:
        wanted = selected_stages(args.stages, STAGES)
    except ValueError as err:
        ap.error(str(err))
    for stage in STAGES:
        if stage not in wanted or stage in results["stages"]:
            continue
        print(f"== {stage}", flush=True)
        t0 = time.perf_counter()
        if stage in ("pretrain_bic", "pretrain_meta"):
            out = stage_pretrain(p, args.profile, stage)
        elif stage in ("maml_so", "maml_fo"):
            out = stage_maml(p, args.profile, stage)
        elif stage == "masks":
            out = stage_masks(p, args.profile)
        elif stage == "online_lr":
            out = stage_online_lr(p, args.profile)
        elif stage == "table1":
            out = stage_table1(p, args.profile, results)
        elif stage == "table6":
            out = stage_table6(p, args.profile, results)
        else:
            from benchmarks import ondevice_sr_engine as engine  # the integer-engine tables

            out = getattr(engine, f"stage_{stage}")(p, args.profile, results)
        results["stages"][stage] = out
        results["stage_wall_s"][stage] = round(time.perf_counter() - t0, 1)
        write(name, results)
        print(f"   {stage} done in {results['stage_wall_s'][stage]:.0f} s", flush=True)


# -- output ------------------------------------------------------------------------------------------
def top_level(results: dict[str, Any]) -> dict[str, Any]:
    """The JSON fields the issue names, from the stages run so far."""
    st = results["stages"]
    out: dict[str, Any] = {}
    if "table1" in st:
        t1 = st["table1"]
        out["table1"] = {"scale": t1["scale"], "rows": [
            {"method": r["method"], "init": r.get("init"), "after": r["after"] if r["method"] != "Bicubic"
             else {k: r["bicubic"]["mean"] for k in ("0", "27", "50", "67", "85")}} for r in t1["rows"]]}
        out["online_seconds_per_image"] = t1["online_seconds_per_image_integer"]
    if "table2" in st:
        out["table2"] = {"cost": st["table2"]["cost"], "memory": st["table2"]["memory"]}
    if "timing" in st:
        out["step_time_ratio_int_vs_float"] = st["timing"]["step_time_ratio_int_vs_float"]
        out["backward_speedup_50pct"] = st["timing"]["backward_speedup_50pct"]
    return out


def write(name: str, results: dict[str, Any]) -> None:
    payload = {**top_level(results), **results}
    wall = float(sum(results["stage_wall_s"].values()))
    write_results(name, payload, markdown(results), wall)
    if "table1" in results["stages"]:
        figure(name, results)


def fmt(v: Any, ci: Any = None) -> str:
    if v is None:
        return ""
    if ci is None or (isinstance(ci, float) and math.isnan(ci)):
        return f"{v:.2f}"
    return f"{v:.2f} ± {ci:.2f}"


def markdown(results: dict[str, Any]) -> str:
    st = results["stages"]
    lines = [f"Profile `{results['profile']}`: {results['settings']}\n",
             "Stage wall seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in results["stage_wall_s"].items()) + "\n"]
    for key in ("pretrain_bic", "pretrain_meta", "maml_so", "maml_fo"):
        if key in st:
            lines.append(f"- `{key}`: {st[key]}")
    lines.append("")
    if "online_lr" in st:
        lines.append("## Online learning rate, chosen on validation (Set14, kernels from p(k), float, 10 updates)\n")
        rows = [{"theta": k, **{f"γ={g}": v for g, v in d["val_psnr_y"].items()}, "chosen": f"{d['chosen']:g}"} for k, d in st["online_lr"].items()]
        lines.append(markdown_table(rows, list(rows[0])))
    if "table1" in st:
        t1 = st["table1"]
        lines.append(f"## Table 1: Set5, Gaussian kernels, x{t1['scale']} direct subsampling, {len(t1['test_pairs'])} "
                     "test pairs; PSNR-Y (dB) mean ± 95 % CI; paper in brackets\n")
        cols = ["method", "init", "0%", "27%", "50%", "67%", "85%"]
        rows = []
        for r in t1["rows"]:
            paper = PAPER_TABLE1.get(r["method"])
            if r["method"] == "Bicubic":
                rows.append({"method": "Bicubic", "0%": fmt(r["bicubic"]["mean"], r["bicubic"]["ci95"]) + f" [{paper[1]}]"})
                continue
            row = {"method": r["method"], "init": fmt(r.get("init"), r.get("init_ci95")) + (f" [{paper[0]}]" if paper else "")}
            for j, k in enumerate(("0", "27", "50", "67", "85")):
                if k in r["after"]:
                    row[f"{k}%"] = fmt(r["after"][k], r["after_ci95"][k]) + (f" [{paper[1][j]}]" if paper else "")
            rows.append(row)
        lines.append(markdown_table(rows, cols))
        lines.append("Paired differences over the same test pairs (dB, mean ± 95 % CI, t-test p, pairs where the first is higher):\n")
        trows = [{"comparison": k, "diff": fmt(v["mean"], v["ci95"]), "p": f"{v['p']:.2g}", "wins": v["wins"]} for k, v in t1["paired_tests"].items()]
        lines.append(markdown_table(trows, ["comparison", "diff", "p", "wins"]))
        secs = [{"method": r["method"], **{f"{k}%": r["seconds"][k] for k in r["seconds"]}} for r in t1["rows"][1:]]
        lines.append("Online wall seconds per image (10 updates + final inference):\n")
        lines.append(markdown_table(secs, ["method", "0%", "27%", "50%", "67%", "85%"]))
    if "table6" in st:
        lines.append("## Table 6: layer-wise vs knapsack masks (theta = Pretrain(D_bic), float, after 10 updates)\n")
        rows = [{"method": r["method"], "prune": f"{r['prune']:.2f}", "psnr": fmt(r["psnr"], r["ci95"]), "kept": r.get("kept", "")} for r in st["table6"]["rows"]]
        lines.append(markdown_table(rows, ["method", "prune", "psnr", "kept"]))
    for key in ("table34", "rounding", "table2", "timing"):
        if key in st and "markdown" in st[key]:
            lines.append(st[key]["markdown"])
    return "\n".join(lines) + "\n"


def figure(name: str, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t1 = results["stages"]["table1"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in t1["rows"]:
        if "curve" in r:
            ax.plot(range(len(r["curve"])), r["curve"], marker="o", ms=3, label=r["method"])
    bic = t1["rows"][0]["bicubic"]["mean"]
    ax.axhline(bic, color="grey", ls="--", label="Bicubic")
    ax.set_xlabel("online iteration (Alg. 2)")
    ax.set_ylabel("PSNR-Y (dB), Set5")
    ax.set_title(f"Paper E Fig. 5 shape: PSNR vs online iteration (x{t1['scale']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}_curve.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
