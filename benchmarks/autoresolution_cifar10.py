"""Autoresolution networks (paper D) on CIFAR-10: shortcut-checked pretexts, external unlabelled data,
linear probes and a fair, learning-rate-tuned transfer at 100 / 10 / 1 % labels.

    python benchmarks/autoresolution_cifar10.py --resume          # small profile, ~85 min on 2 cores
    python benchmarks/autoresolution_cifar10.py --smoke           # a few steps of everything (test)

Stages (every model trains through the project's configs with the CLI's ``main``):

1. **Pretexts** (32x32 HR, LR = average pool x4 = 8x8, 20x20 super patch, 12x12 grid of 9x9 cells):
   ``cifar_cls_rgb`` the paper's plain patch classification on the CIFAR-10 train split (its
   labels unused); ``sr_cls_jg`` / ``sr_reg_jg`` patch classification / regression on 128x128 crops
   of the SR photographs (BSD100 + Urban100, validation Set14) pooled to 32x32, i.e. *external*
   unlabelled data as in the paper, with per-image colour jitter (0.4) and greyscale super patches
   so that colour matching does not solve them. Each pretext is scored on its validation crops
   next to the trivial solutions of :mod:`lr_lightning.methods.autoresolution.shortcuts` (colour
   matching, template matching, normalised template matching, each also at the LR grid's own phase;
   luminance for grey patches), thresholds fitted on training crops.
2. **Linear probes** of every frozen LR tower (and of a random one) on CIFAR-10 LR images, at each
   label fraction, L2 weight chosen on validation, scored once on test.
3. **Transfer** (``configs/autoresolution/transfer_cifar10.yaml``): random init vs the pretext with
   the best validation probe (10 % labels), each with the head set to its linear probe before the
   first step (the head-only phase solved, after recomputing the tower's BatchNorm statistics on the
   training split; its validation accuracy is recorded), then the same
   number of fine-tuning steps for every init, learning rate chosen per (init, labels) on
   validation from the paper's grid [0.01, 0.003, 0.001, 0.0003], x0.94 every 1125 steps (Sec. 3.1's
   "2 epochs" of the full split, the same schedule at every label fraction); at 1 % labels 3 seeds at the
   chosen rate, each seed with its own label subset and validation split (the same for both inits:
   paired), the 95 % CI of the paired difference, McNemar on the same test images (seed 0); then
   an independent replication at 1 % labels with 7 fresh seeds at the chosen rates, analysed on
   its own (not pooled into the primary test) and pooled.

No stage sees a test image before its final test; selection is on the validation split (10 % of
train). Resumable: every finished run is written to ``benchmarks/results/autoresolution_cifar10.json``
(pretext towers as float16 in ``benchmarks/results/autoresolution_weights/``), and ``--resume``
skips them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, RESULTS, environment, markdown_table, mcnemar, mean_ci, paired  # noqa: E402
from lr_lightning.cli import main  # noqa: E402
from lr_lightning.data import CIFARDataModule  # noqa: E402
from lr_lightning.degrade import downsample  # noqa: E402
from lr_lightning.methods.autoresolution import AutoresolutionPretext  # noqa: E402
from lr_lightning.methods.autoresolution import shortcuts as sc  # noqa: E402
from lr_lightning.methods.autoresolution.probe import fit_linear_probe, probe_accuracy  # noqa: E402
from lr_lightning.methods.autoresolution.targets import shifted_negatives  # noqa: E402
from lr_lightning.nn.autoresolution import LRImageTower  # noqa: E402
from lr_lightning.plotting import pyplot  # noqa: E402

NAME = "autoresolution_cifar10"
CFG = REPO / "configs" / "autoresolution"
WEIGHTS = RESULTS / "autoresolution_weights"
LR_GRID = (0.01, 0.003, 0.001, 0.0003)  # paper Sec. 3.1's fine-tuning grid
LABELS = (0.01, 0.1, 1.0)
#: Sec. 3.1's x0.94 "every 2 epochs" as optimiser steps of the full training split (2 x 18000 / 32),
#: the same schedule at every label fraction (per epoch, 2000 steps at 1 % labels would be 333 decays)
DECAY_EVERY = 1125
PRETEXTS: dict[str, dict[str, Any]] = {
    "cifar_cls_rgb": {"config": "pretext_cls_cifar10.yaml", "objective": "classification", "jitter": 0.0, "grey": False, "lr": 0.003},
    "sr_cls_jg": {"config": "pretext_cls_sr_folders.yaml", "objective": "classification", "jitter": 0.4, "grey": True, "lr": 0.003},
    "sr_reg_jg": {"config": "pretext_cls_sr_folders.yaml", "objective": "regression", "jitter": 0.4, "grey": True, "lr": 0.01},
}
PROFILES = {
    "small": {"pretext_steps": {"cifar_cls_rgb": 600, "sr_cls_jg": 6000, "sr_reg_jg": 4000},
              "steps": {0.01: 2000, 0.1: 4000, 1.0: 4000}, "val_every": 250, "seeds": 3, "replication_seeds": 7,
              "shortcut_images": 1000, "lr_grid": LR_GRID},
    "smoke": {"pretext_steps": {"cifar_cls_rgb": 4, "sr_cls_jg": 4, "sr_reg_jg": 4},
              "steps": {0.01: 4, 0.1: 4, 1.0: 4}, "val_every": 2, "seeds": 2, "replication_seeds": 2,
              "shortcut_images": 64, "lr_grid": (0.01, 0.001)},
}


def common_args(out: Path, name: str, max_steps: int, val_every: int, seed: int) -> list[str]:
    return [
        f"--seed_everything={seed}", f"--trainer.max_steps={max_steps}", "--trainer.max_epochs=-1",
        f"--trainer.val_check_interval={val_every}", "--trainer.check_val_every_n_epoch=null",
        "--trainer.num_sanity_val_steps=0", "--trainer.log_every_n_steps=50", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", f"--trainer.logger.init_args.save_dir={out}",
        f"--trainer.logger.init_args.name={name}", f"--trainer.default_root_dir={out}",
    ]


def read_curve(log_dir: str, key: str) -> list[tuple[int, float]]:
    rows = list(csv.DictReader(open(Path(log_dir) / "metrics.csv")))
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


class State:
    """The results JSON, rewritten after every finished unit (``--resume`` keeps its units)."""

    def __init__(self, path: Path, profile: str, resume: bool) -> None:
        self.path = path
        self.data: dict[str, Any] = {"profile": profile, "pretexts": {}, "probes": {}, "runs": {}, "invocations": 0, "wall_time_s": 0.0}
        if resume and path.is_file():
            old = json.loads(path.read_text())
            if old.get("profile") == profile and "runs" in old:
                self.data.update({k: old[k] for k in ("pretexts", "probes", "runs", "invocations", "wall_time_s") if k in old})

    def save(self, extra: dict[str, Any] | None = None) -> None:
        payload = {**self.data, **(extra or {}), "environment": environment()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(payload, indent=1) + "\n")


# -- stage 1: pretexts -----------------------------------------------------------------------------
SHORTCUTS = ("colour_match", "template_match", "template_ncc", "aligned_match", "aligned_ncc")


@torch.no_grad()
def shortcut_scores(model: AutoresolutionPretext, fit_hr: torch.Tensor, val_hr: torch.Tensor, grey: bool) -> dict[str, float]:
    """Cell accuracies (%) of the trivial solutions on the pretext's problems (its crops, jitter and
    shifted negatives; the same distribution as the network's validation, other draws), thresholds
    fitted on training crops; luminance on both sides when the super patches are grey."""
    p, j, _ = model.grid_geometry
    f = model.hparams.factor
    fns = {
        "colour_match": lambda lr, sp: sc.colour_match_distance(lr, sp, p, j, f, luminance=grey),
        "template_match": lambda lr, sp: sc.template_match_distance(lr, sp, p, j, f, luminance=grey),
        "template_ncc": lambda lr, sp: sc.template_match_distance(lr, sp, p, j, f, normalise=True, luminance=grey),
        "aligned_match": lambda lr, sp: sc.aligned_block_distance(lr, sp, p, j, f, luminance=grey),
        "aligned_ncc": lambda lr, sp: sc.aligned_block_distance(lr, sp, p, j, f, normalise=True, luminance=grey),
    }
    problems = {}
    for split, hr, seed in (("fit", fit_hr, 1), ("val", val_hr, 10_000)):
        lr, sp, _, _ = model.make_inputs(hr, torch.Generator().manual_seed(seed))
        problems[split] = (lr, sp, shifted_negatives(sp))
    out = {}
    for key, fn in fns.items():
        lr, sp, neg = problems["fit"]
        t = sc.best_threshold(fn(lr, sp), fn(lr, neg))
        lr, sp, neg = problems["val"]
        out[f"{key}_acc"] = round(sc.threshold_accuracy(fn(lr, sp), fn(lr, neg), t), 2)
    out["best_trivial_acc"] = max(out[f"{k}_acc"] for k in SHORTCUTS)
    return out


def pretext_cli_args(name: str) -> list[str]:
    spec = PRETEXTS[name]
    return ["--config", str(CFG / spec["config"]), f"--model.init_args.objective={spec['objective']}",
            f"--model.init_args.optim.learning_rate={spec['lr']}", f"--model.init_args.patch_jitter={spec['jitter']}",
            f"--model.init_args.patch_grey={spec['grey']}", "--model.init_args.heatmap_every_n_epochs=0"]


def shortcuts_of(name: str, prof: dict[str, Any]) -> dict[str, float]:
    """The trivial solutions of pretext ``name``'s problems (no network: its data module and inputs)."""
    cli = main(pretext_cli_args(name), run=False)
    dm = cli.datamodule
    dm.setup("fit")
    n = prof["shortcut_images"]
    return shortcut_scores(cli.model, hr_stack(dm.train_set, n), hr_stack(dm.val_set, n), PRETEXTS[name]["grey"])


def hr_stack(dataset: Any, n: int) -> torch.Tensor:
    items = [dataset[i]["hr"] for i in range(min(n, len(dataset)))]
    x = torch.stack(items)
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def pretext(name: str, prof: dict[str, Any], out: Path) -> dict[str, Any]:
    spec = PRETEXTS[name]
    steps = prof["pretext_steps"][name]
    extra = ["--data.init_args.eval_batch_size=256"] if spec["config"].endswith("cifar10.yaml") else []
    t0 = time.perf_counter()
    cli = main(["fit", *pretext_cli_args(name), *common_args(out, f"pretext_{name}", steps, prof["val_every"], 0), *extra])
    fit_s = time.perf_counter() - t0
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    best = trainer.checkpoint_callback.best_model_path
    res = trainer.validate(model, datamodule=dm, ckpt_path=best, verbose=False)[0]
    state = {k: v.half() for k, v in model.state_dict().items() if k.startswith("image_tower.") and v.is_floating_point()}
    state.update({k: v for k, v in model.state_dict().items() if k.startswith("image_tower.") and not v.is_floating_point()})
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    torch.save(state, WEIGHTS / f"{name}.pt")
    p, j, g = model.grid_geometry
    row: dict[str, Any] = {**spec, "steps": steps, "train_s": round(fit_s, 1), "patch": p, "grid": g,
                           "data": "CIFAR-10 train split (labels unused)" if "cifar" in spec["config"] else "SR photographs: BSD100 + Urban100 (val Set14)"}
    if spec["objective"] == "classification":
        row["cls_acc"] = round(100 * float(res["val/pretext_acc"]), 2)
        row["curve"] = read_curve(trainer.log_dir, "val/pretext_acc")
    else:
        row["reg_mae"] = round(float(res["val/pretext_mae"]), 4)
        row["reg_mae_mean_predictor"] = round(float(res["val/pretext_mae_centre_predictor"]), 4)
        row["curve"] = read_curve(trainer.log_dir, "val/pretext_mae")
    return row


# -- stage 2: linear probes ------------------------------------------------------------------------
def tower_for(init: str, seed: int) -> LRImageTower:
    torch.manual_seed(seed)
    tower = LRImageTower("small")
    if init != "random":
        state = torch.load(WEIGHTS / f"{init}.pt", weights_only=True)
        tower.load_state_dict({k.removeprefix("image_tower."): v for k, v in state.items()})
    return tower.eval()


def cifar_lr(hr_u8: torch.Tensor) -> torch.Tensor:
    """Normalised 8x8 LR inputs (the transfer's: average pool x4, CIFAR mean / std)."""
    from lr_lightning.data.cifar import CIFAR10_MEAN, CIFAR10_STD

    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (downsample(hr_u8.float() / 255, 4, "avg") - mean) / std


@torch.no_grad()
def cifar_features(tower: LRImageTower, hr_u8: torch.Tensor) -> torch.Tensor:
    tower.eval()
    return torch.cat([tower(cifar_lr(hr_u8[i:i + 1000])) for i in range(0, len(hr_u8), 1000)])


def recalibrated(tower: LRImageTower, train_hr_u8: torch.Tensor) -> LRImageTower:
    """BatchNorm running statistics recomputed on the CIFAR training images, for every init (as
    ``head_init: probe`` does before fine-tuning): a random tower's initial statistics are not its
    statistics, and a pretext tower's are those of other images."""
    torch.optim.swa_utils.update_bn((cifar_lr(train_hr_u8[i:i + 1000]) for i in range(0, len(train_hr_u8), 1000)), tower)
    return tower.eval()


def cifar_splits(labels: float) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The transfer's splits as tensors (the CIFAR data module's own seeded split and subset)."""
    dm = CIFARDataModule()
    if labels < 1.0:
        dm.train_subset = subset_size(labels)
    dm.setup("fit")
    dm.setup("test")

    def stack(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:  # a DictTensorDataset: index its tensors at once
        return ds.images[ds.indices], ds.labels[ds.indices]

    return {"train": stack(dm.train_set), "val": stack(dm.val_set), "test": stack(dm.test_set)}


def subset_size(labels: float) -> int:
    dm = CIFARDataModule()
    n = len(dm.load_split("train")[1])
    return int(round(labels * (n - int(round(n * dm.val_fraction)))))


# -- stage 3: transfer -----------------------------------------------------------------------------
def transfer(init: str, labels: float, lr: float, seed: int, prof: dict[str, Any], out: Path) -> dict[str, Any]:
    steps = prof["steps"][labels]
    name = f"transfer_{init}_{labels:g}_lr{lr:g}_s{seed}"
    ckpt = None if init == "random" else str(WEIGHTS / f"{init}.pt")
    extra = [f"--model.init_args.pretrained={ckpt}" if ckpt else "--model.init_args.pretrained=null",
             "--model.init_args.head_only_steps=0", "--model.init_args.head_init=probe",
             f"--model.init_args.optim.learning_rate={lr}", "--model.init_args.optim.schedule_unit=step",
             f"--model.init_args.optim.step_size={DECAY_EVERY}", "--data.init_args.eval_batch_size=500",
             f"--data.init_args.seed={seed}"]  # seed s: its own validation split and label subset (paired across inits)
    if labels < 1.0:
        extra.append(f"--data.init_args.train_subset={subset_size(labels)}")
    t0 = time.perf_counter()
    cli = main(["fit", "--config", str(CFG / "transfer_cifar10.yaml"), *common_args(out, name, steps, prof["val_every"], seed), *extra])
    fit_s = time.perf_counter() - t0
    trainer, model, dm = cli.trainer, cli.model, cli.datamodule
    trainer.test(model, datamodule=dm, ckpt_path=trainer.checkpoint_callback.best_model_path, verbose=False)
    model.eval()
    correct = []
    with torch.no_grad():
        for batch in dm.test_dataloader():
            batch = dm.on_after_batch_transfer(batch, 0)
            correct.append(model(batch["lr"]).argmax(1) == batch["label"])
    correct_t = torch.cat(correct).numpy()
    curve = [(s, round(100 * (1 - a), 2)) for s, a in read_curve(trainer.log_dir, "val/acc")]
    return {"init": init, "labels": labels, "lr": lr, "seed": seed, "test_error": round(100 * (1 - float(correct_t.mean())), 2),
            "best_val_error": min(e for _, e in curve), "steps": steps, "head_probe_val_acc": round(model.head_probe.get("val_acc", float("nan")), 2),
            "head_probe_weight_decay": model.head_probe.get("weight_decay"), "train_s": round(fit_s, 1), "val_error_curve": curve,
            "correct_hex": np.packbits(correct_t).tobytes().hex()}


def correct_of(row: dict[str, Any]) -> np.ndarray:
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(row["correct_hex"]), dtype=np.uint8))
    return bits[:10_000].astype(bool) if len(bits) >= 10_000 else bits.astype(bool)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(LABELS), figsize=(5.5 * len(LABELS), 4), squeeze=False)
    for ax, frac in zip(axes[0], LABELS, strict=True):
        for r in rows:
            if r["labels"] == frac and r["seed"] == 0:
                s, e = zip(*r["val_error_curve"], strict=True)
                ax.plot(s, e, label=f"{r['init']} lr {r['lr']:g}", color="tab:gray" if r["init"] == "random" else "tab:red",
                        lw=2.0 if r.get("chosen_on_val") else 0.8)
        ax.set_title(f"CIFAR-10 8x8 LR, {frac:g} of labels")
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("validation error (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main_bench() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resume", action="store_true", help="skip the pretexts, probes and runs in the results JSON")
    ap.add_argument("--smoke", action="store_true", help="a few steps of every stage, results under benchmarks/runs")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    profile = "smoke" if args.smoke else "small"
    prof = PROFILES[profile]
    if not os.environ.get("LR_LIGHTNING_DATA") and (REPO.parent / "shared" / "data").is_dir():
        os.environ["LR_LIGHTNING_DATA"] = str(REPO.parent / "shared" / "data")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    global WEIGHTS
    results_dir = RESULTS if profile == "small" else REPO / "benchmarks" / "runs" / f"{NAME}_smoke"
    if profile != "small":
        WEIGHTS = results_dir / "weights"
    st = State(results_dir / f"{NAME}.json", profile, args.resume)
    st.data["invocations"] += 1
    wall0, t0 = float(st.data["wall_time_s"]), time.perf_counter()
    out = REPO / "benchmarks" / "runs" / NAME
    seeds = list(range(prof["seeds"]))
    replication = list(range(prof["seeds"], prof["seeds"] + prof.get("replication_seeds", 0)))

    def save() -> None:
        st.data["wall_time_s"] = round(wall0 + time.perf_counter() - t0, 1)
        st.data["settings"] = {"profile": prof, "lr_grid": LR_GRID, "labels": LABELS, "seeds": seeds, "replication_seeds": replication, "batch_size": 32,
                               "pretexts": PRETEXTS, "head": "linear probe of the frozen tower (BatchNorm statistics recomputed on the training split) before the first step, for every init",
                               "lr_schedule": f"x0.94 every {DECAY_EVERY} optimiser steps (2 epochs of the full training split) at every label fraction",
                               "data": "CIFAR-10 offline copy (JPEG-decoded PNGs): 18k train / 2k val (seeded split of 20k) / 10k test; LR = avg pool x4 (8x8)"}
        st.save()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    for name in PRETEXTS:
        if name not in st.data["pretexts"] or not (WEIGHTS / f"{name}.pt").is_file():
            st.data["pretexts"][name] = pretext(name, prof, out)
            save()
        if PRETEXTS[name]["objective"] == "classification" and "best_trivial_acc" not in st.data["pretexts"][name]:
            st.data["pretexts"][name] = {k: v for k, v in st.data["pretexts"][name].items() if not k.endswith("_acc") or k == "cls_acc"}
            st.data["pretexts"][name].update(shortcuts_of(name, prof))
            save()
        log(f"pretext {name}: " + json.dumps({k: v for k, v in st.data["pretexts"][name].items() if k != "curve"}))

    splits = {}
    for frac in LABELS:
        key = f"{frac:g}"
        if key in st.data["probes"] and all(i in st.data["probes"][key] for i in ["random", *PRETEXTS]):
            continue
        splits = cifar_splits(frac)
        st.data["probes"][key] = {}
        for init in ["random", *PRETEXTS]:
            tower = recalibrated(tower_for(init, 0), splits["train"][0])
            feats = {s: (cifar_features(tower, x), y) for s, (x, y) in splits.items()}
            linear, info = fit_linear_probe(feats["train"], feats["val"], 10)
            st.data["probes"][key][init] = {**{k: v if k in ("weight_decay", "grad_max_abs") else round(v, 2) for k, v in info.items()},
                                            "test_acc": round(probe_accuracy(linear, *feats["test"]), 2)}
            log(f"probe {init} labels {key}: {st.data['probes'][key][init]}")
        save()
    # the pretext to transfer: best validation probe at 10 % labels (never the test set)
    best = max(PRETEXTS, key=lambda n: st.data["probes"]["0.1"][n]["val_acc"])
    st.data["transfer_pretext"] = best
    inits = ["random", best]

    def run(init: str, frac: float, lr: float, seed: int) -> dict[str, Any]:
        key = f"{init}|{frac:g}|{lr:g}|{seed}"
        if key not in st.data["runs"]:
            st.data["runs"][key] = transfer(init, frac, lr, seed, prof, out)
            save()
            r = st.data["runs"][key]
            log(f"transfer {key}: test error {r['test_error']} best val {r['best_val_error']} head probe val {r['head_probe_val_acc']} ({r['train_s']} s)")
        return st.data["runs"][key]

    def chosen_lr(init: str, frac: float) -> float:
        return min(prof["lr_grid"], key=lambda lr: run(init, frac, lr, 0)["best_val_error"])

    for frac in LABELS:  # 1 % first: the rows the claim rests on
        for init in inits:
            for lr in prof["lr_grid"]:
                run(init, frac, lr, 0)
            if frac == min(LABELS):
                for seed in seeds[1:]:
                    run(init, frac, chosen_lr(init, frac), seed)
    # an independent replication at the lowest label fraction: fresh seeds (label subsets,
    # validation splits, initialisations), the learning rates already chosen, analysed on their own
    for seed in replication:
        for init in inits:
            run(init, min(LABELS), chosen_lr(init, min(LABELS)), seed)
    summarise(st, inits, seeds, results_dir, profile, prof["lr_grid"], replication)
    save()
    log(f"done; wall {st.data['wall_time_s']} s")


def compare(per: dict[str, list[dict[str, Any]]], inits: list[str], lr: dict[str, float]) -> dict[str, Any]:
    """Mean +- 95 % CI per init and the paired (same seed: same label subset and split) difference."""
    entry: dict[str, Any] = {i: {"lr": lr[i], **mean_ci([r["test_error"] for r in per[i]])} for i in inits}
    entry["pretrained_minus_random"] = paired([r["test_error"] for r in per[inits[1]]], [r["test_error"] for r in per[inits[0]]])
    # paired()'s "wins" counts a - b > 0, i.e. seeds where the pretrained *error* is higher
    lower = sum(a["test_error"] < b["test_error"] for a, b in zip(per[inits[1]], per[inits[0]], strict=True))
    entry["pretrained_lower_error_seeds"] = f"{lower}/{len(per[inits[0]])}"
    entry["seeds"] = [r["seed"] for r in per[inits[0]]]
    return entry


def summarise(st: State, inits: list[str], seeds: list[int], results_dir: Path, profile: str, grid: tuple[float, ...],
              replication: list[int]) -> None:
    runs = list(st.data["runs"].values())

    def at(init: str, frac: float, lr: float, seed: int) -> dict[str, Any]:
        return next(r for r in runs if r["init"] == init and r["labels"] == frac and r["lr"] == lr and r["seed"] == seed)

    chosen = {(i, f): min(grid, key=lambda lr, i=i, f=f: at(i, f, lr, 0)["best_val_error"]) for i in inits for f in LABELS}
    rows = [{k: r[k] for k in ("init", "labels", "lr", "seed", "test_error", "best_val_error", "head_probe_val_acc", "steps", "train_s")}
            | {"chosen_on_val": r["lr"] == chosen[(r["init"], r["labels"])]} for r in runs]
    low = min(LABELS)
    summary: dict[str, Any] = {}
    for frac in LABELS:
        per = {i: [at(i, frac, chosen[(i, frac)], s) for s in (seeds if frac == low else [0])] for i in inits}
        entry = compare(per, inits, {i: chosen[(i, frac)] for i in inits})
        entry["mcnemar_seed0"] = mcnemar(correct_of(per[inits[1]][0]), correct_of(per[inits[0]][0]))
        summary[f"{frac:g}"] = entry
    if replication:
        lr_low = {i: chosen[(i, low)] for i in inits}
        summary["replication"] = {"labels": low, **compare({i: [at(i, low, lr_low[i], s) for s in replication] for i in inits}, inits, lr_low)}
        summary["pooled"] = {"labels": low, **compare({i: [at(i, low, lr_low[i], s) for s in seeds + replication] for i in inits}, inits, lr_low)}
    pre = st.data["pretexts"]
    best = inits[1]
    cls_name = best if pre[best]["objective"] == "classification" else "sr_cls_jg"
    reg_name = "sr_reg_jg"
    st.data["pretext"] = {"cls_acc": pre[cls_name]["cls_acc"], "cls_chance": 50.0, "reg_mae": pre[reg_name]["reg_mae"],
                          "reg_mae_mean_predictor": pre[reg_name]["reg_mae_mean_predictor"],
                          "colour_match_acc": pre[cls_name]["colour_match_acc"], "best_trivial_acc": pre[cls_name]["best_trivial_acc"],
                          "variant": cls_name,
                          "variants": {n: {k: v for k, v in p.items() if k != "curve"} for n, p in pre.items()}}
    st.data["linear_probe"] = {i: p["test_acc"] for i, p in st.data["probes"]["1"].items()}
    st.data["rows"] = rows
    st.data["summary"] = summary
    png = results_dir / f"{NAME}.png"
    plot([r | {"chosen_on_val": r["lr"] == chosen[(r["init"], r["labels"])]} for r in runs], png)
    md = f"Profile `{profile}`, commit `{environment()['git_commit']}`, torch {torch.__version__}, {torch.get_num_threads()} threads, " \
         f"wall time {st.data['wall_time_s']:.0f} s over {st.data['invocations']} invocation(s), seeds {seeds} (+ replication {replication}).\n\n"
    md += "## Pretexts (validation crops) and their trivial solutions (cell accuracy %, chance 50)\n\n"
    md += markdown_table([{"pretext": n, "objective": p["objective"], "data": p["data"], "jitter": p["jitter"], "grey": p["grey"], "steps": p["steps"],
                           "network": p.get("cls_acc", f"MAE {p.get('reg_mae')} (centre {p.get('reg_mae_mean_predictor')})"),
                           **{k: p.get(f"{k}_acc", "n/a") for k in SHORTCUTS}}
                          for n, p in pre.items()],
                         ["pretext", "objective", "data", "jitter", "grey", "steps", "network", *SHORTCUTS])
    md += "\n## Linear probe of the frozen LR tower, CIFAR-10 test accuracy (%)\n\n"
    md += markdown_table([{"init": i, **{f"labels {k}": st.data["probes"][k][i]["test_acc"] for k in st.data["probes"]}} for i in ["random", *PRETEXTS]],
                         ["init", *[f"labels {k}" for k in st.data["probes"]]])
    md += f"\n## Fine-tuning: test error (%) at the learning rate chosen on validation (pretext `{best}`)\n\n"
    srows = []
    for k, e in summary.items():
        if k in ("replication", "pooled"):
            continue
        d = e["pretrained_minus_random"]
        srows.append({"labels": k, **{f"{i} (lr)": f"{e[i]['mean']:.2f} +- {e[i]['ci95']:.2f} (n={e[i]['n']}, lr {e[i]['lr']:g})" for i in inits},
                      "pretrained - random": f"{d['mean']:+.2f} +- {d['ci95']:.2f}", "pretrained lower (seeds)": e["pretrained_lower_error_seeds"],
                      "McNemar p (seed 0)": f"{e['mcnemar_seed0']['p']:.3g}"})
    md += markdown_table(srows, ["labels", *[f"{i} (lr)" for i in inits], "pretrained - random", "pretrained lower (seeds)", "McNemar p (seed 0)"])
    if "replication" in summary:
        md += (f"\n### Replication at {low:g} labels: fresh seeds {replication} (own label subsets, splits and initialisations), "
               "learning rates as chosen above, analysed on their own; then pooled with the primary seeds\n\n")
        rrows = []
        for k in ("replication", "pooled"):
            e, d = summary[k], summary[k]["pretrained_minus_random"]
            rrows.append({"seeds": k, **{f"{i}": f"{e[i]['mean']:.2f} +- {e[i]['ci95']:.2f} (n={e[i]['n']})" for i in inits},
                          "pretrained - random": f"{d['mean']:+.2f} +- {d['ci95']:.2f} (t-test p {d['p']:.3g})",
                          "pretrained lower (seeds)": e["pretrained_lower_error_seeds"]})
        md += markdown_table(rrows, ["seeds", *inits, "pretrained - random", "pretrained lower (seeds)"])
    md += "\n### Every run\n\n" + markdown_table([r | {"lr": f"{r['lr']:g}"} for r in sorted(rows, key=lambda r: (r["labels"], r["init"], r["seed"], -r["lr"]))],
                                                 ["init", "labels", "lr", "seed", "test_error", "best_val_error", "chosen_on_val", "head_probe_val_acc", "steps", "train_s"])
    md += "\nPaper Table 1 (full labels, 40-layer tower, 100M-image pretext, 32x32 CIFAR): random 9.09, regression 6.94, classification 6.60.\n"
    md += f"\n![validation error curves]({png.name})\n"
    (results_dir / f"{NAME}.md").write_text(f"# {NAME}\n\n" + md)
    print(md)


if __name__ == "__main__":
    main_bench()
