"""PatchDrop (paper C) on CIFAR-10: Table-2 rows, hard positives (Table 4), conditional BagNet
(Table 3), step-time profile.

    python benchmarks/patchdrop_cifar10.py                  # small profile, <= 40 min on 2 cores
    python benchmarks/patchdrop_cifar10.py --profile paper  # the paper's epochs (GPU; not run here)
    python benchmarks/patchdrop_cifar10.py --smoke          # every stage for a few steps

Every model is trained through the project's configs (``configs/patchdrop/``) with the CLI's
``main``; selection is on the validation split (10% of train), each model is tested once on
the 10k CIFAR-10 test images. HR 32x32, LR 8x8 (nearest x4), 4 x 4 grid (P = 16).

1. Classifiers: HR ResNet32 (HR-CNN row, S = 16); LR ResNet32 on the LR image upsampled
   bilinearly, initialised from the HR one (LR-CNN row, S = 0).
2. PatchDrop Pt -> Ft-1 -> Ft-2 (chained checkpoints).
3. Baselines at every stage with S = ceil(PatchDrop's mean test S at that stage), i.e. at least as
   many patches as PatchDrop: Fixed-H, Fixed-V, Stochastic (expected S), STN-style saliency.
   Pt = the frozen HR classifier on the baseline's masks (saliency: its net trained at Pt);
   Ft-1 = HR classifier fine-tuned on the masks; Ft-2 = as Ft-1 plus the LR stream (Eq. 7),
   starting from the baseline's Ft-1 checkpoint. Same epochs as PatchDrop's stages.
4. Hard positives (Sec. 7): the HR classifier fine-tuned with no augmentation, CutOut and
   PatchDrop hard positives (Ft-1 policy), tested on the original images. The paper trains
   from scratch; the small profile fine-tunes for a few epochs (stated in the output).
5. Conditional BagNet (Sec. 6): PatchBagNet on all patches, PatchDrop Pt and Ft-1 with it, and the
   inference time of BagNet on all patches vs policy + BagNet on the sampled patches.
6. Step time of Pt and Ft-1 training (B = 256) and the share spent in the agent + masking.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

import lr_lightning.methods.patchdrop  # noqa: E402,F401  (imported up front: later edits do not leak into a running benchmark)
from benchmarks.autoresolution_cifar10 import cache_cifar_loading  # noqa: E402
from benchmarks.common import (  # noqa: E402
    REPO,
    RESULTS,
    cli_run_args,
    markdown_table,
    median_time,
    write_results,
)
from lr_lightning.cli import main  # noqa: E402

CFG = REPO / "configs" / "patchdrop"
PROFILES: dict[str, dict[str, Any]] = {
    # <= 40 min on 2 CPU cores
    "small": dict(hr_epochs=10, lr_epochs=3, pt_epochs=10, ft1_epochs=4, ft2_epochs=2, stn_epochs=4, hp_epochs=3,
                  bag_epochs=6, bag_pt_epochs=5, bag_ft1_epochs=3, pt_batch=256, ft_batch=128, pt_lr=1e-3, ft_policy_lr=1e-3,
                  classifier_lr=1e-4, hp_lr=0.01, limit_train=None),
    # the paper's CIFAR-10 schedule (Sec. 5.3): Pt 3400 epochs batch 1024, Ft-1 1680 / Ft-2 990 epochs batch 256, lr 1e-4
    "paper": dict(hr_epochs=200, lr_epochs=100, pt_epochs=3400, ft1_epochs=1680, ft2_epochs=990, stn_epochs=200, hp_epochs=200,
                  bag_epochs=200, bag_pt_epochs=3400, bag_ft1_epochs=1680, pt_batch=1024, ft_batch=256, pt_lr=1e-4,
                  ft_policy_lr=1e-4, classifier_lr=1e-4, hp_lr=0.1, limit_train=None),
    "smoke": dict(hr_epochs=1, lr_epochs=1, pt_epochs=1, ft1_epochs=1, ft2_epochs=1, stn_epochs=1, hp_epochs=1,
                  bag_epochs=1, bag_pt_epochs=1, bag_ft1_epochs=1, pt_batch=64, ft_batch=32, pt_lr=1e-3, ft_policy_lr=1e-3,
                  classifier_lr=1e-4, hp_lr=0.01, limit_train=3),
}
RESNET32 = json.dumps({"class_path": "lr_lightning.nn.CifarResNet", "init_args": {"depth": 32, "num_classes": 10}})
RESNET8_POLICY = json.dumps({"class_path": "lr_lightning.nn.CifarResNet", "init_args": {"depth": 8, "num_classes": 16}})
BASELINES = {"fixed_h": "Fixed-H", "fixed_v": "Fixed-V", "stochastic": "Stochastic", "saliency": "STN"}


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.p = PROFILES["smoke" if args.smoke else args.profile]
        self.out = Path(args.out)
        self.runs: dict[str, dict[str, Any]] = {}

    def common(self, name: str, epochs: int) -> list[str]:
        args = [*cli_run_args(self.out, name, epochs), "--trainer.num_sanity_val_steps=0",
                "--trainer.log_every_n_steps=20", "--data.init_args.eval_batch_size=500"]
        if self.p["limit_train"]:
            args += [f"--trainer.limit_train_batches={self.p['limit_train']}", "--trainer.limit_val_batches=2",
                     "--trainer.limit_test_batches=2"]
        return args

    def run(self, name: str, config: str, epochs: int, extra: list[str], train: bool = True) -> dict[str, Any]:
        """Fit (unless ``train`` is false) then test once; returns metrics and the best checkpoint."""
        cli = main(["--config", str(CFG / config), *self.common(name, epochs), *extra], run=False)
        trainer, model, dm = cli.trainer, cli.model, cli.datamodule
        fit_s, best = 0.0, None
        if train:
            t0 = time.perf_counter()
            trainer.fit(model, datamodule=dm)
            fit_s = time.perf_counter() - t0
            best = trainer.checkpoint_callback.best_model_path
        res = trainer.test(model, datamodule=dm, ckpt_path=best, verbose=False)[0]
        out: dict[str, Any] = {"name": name, "checkpoint": best, "train_s": round(fit_s, 1), "epochs": epochs if train else 0,
                               "acc": round(100 * float(res["test/acc"]), 2), "log_dir": os.path.relpath(trainer.log_dir, REPO)}
        out.update({f"acc_{k.split('/')[-1]}": round(100 * float(v), 2) for k, v in res.items() if k.startswith("test/acc/")})
        if "test/hr_patches" in res:
            out["S"] = round(float(res["test/hr_patches"]), 2)
        stats = Path(trainer.log_dir) / "patchdrop_test.json"
        if stats.is_file():
            out["stats"] = json.loads(stats.read_text())
        print(f"[{name}] acc {out['acc']:.2f} %" + (f", S {out['S']:.2f}" if "S" in out else "") + f", train {fit_s:.0f} s", flush=True)
        self.runs[name] = out
        return out

    # -- stages --------------------------------------------------------------------------------
    def classifiers(self) -> tuple[dict[str, Any], dict[str, Any]]:
        p = self.p
        # SR baseline: the HR classifier on the LR image upsampled with bicubic interpolation
        hr = self.run("classifier_hr", "cifar10_classifier_hr.yaml", p["hr_epochs"], ["--model.init_args.test_degradations=[nearest4+up]"])
        lr = self.run("classifier_lr", "cifar10_classifier_lr.yaml", p["lr_epochs"],
                      [f"--model.init_args.init_checkpoint={hr['checkpoint']}"])
        return hr, lr

    def patchdrop(self, hr: dict[str, Any], lr: dict[str, Any]) -> dict[str, dict[str, Any]]:
        p = self.p
        pt = self.run("patchdrop_pt", "cifar10_pt.yaml", p["pt_epochs"], [
            f"--model.init_args.hr_checkpoint={hr['checkpoint']}", f"--model.init_args.optim.learning_rate={p['pt_lr']}",
            f"--data.init_args.batch_size={p['pt_batch']}"])
        ft = [f"--model.init_args.optim.learning_rate={p['ft_policy_lr']}", f"--model.init_args.optim.group_learning_rates={{hr_classifier: {p['classifier_lr']}}}",
              f"--data.init_args.batch_size={p['ft_batch']}"]
        ft1 = self.run("patchdrop_ft1", "cifar10_ft1.yaml", p["ft1_epochs"], [
            f"--model.init_args.init_checkpoint={pt['checkpoint']}", *ft])
        ft2 = self.run("patchdrop_ft2", "cifar10_ft2.yaml", p["ft2_epochs"], [
            f"--model.init_args.init_checkpoint={ft1['checkpoint']}", f"--model.init_args.lr_checkpoint={lr['checkpoint']}", *ft])
        return {"Pt": pt, "Ft-1": ft1, "Ft-2": ft2}

    def baseline(self, kind: str, s: dict[str, int], hr: dict[str, Any], lr: dict[str, Any]) -> dict[str, dict[str, Any]]:
        p = self.p
        lr_stream = [f"--model.init_args.lr_classifier={RESNET32}", f"--model.init_args.lr_checkpoint={lr['checkpoint']}"]
        cls = [f"--model.init_args.optim.group_learning_rates={{hr_classifier: {p['classifier_lr']}}}", f"--data.init_args.batch_size={p['ft_batch']}"]
        out: dict[str, dict[str, Any]] = {}
        if kind == "saliency":
            pt = self.run(f"{kind}_pt", "cifar10_stn_pt.yaml", p["stn_epochs"], [
                f"--model.init_args.hr_checkpoint={hr['checkpoint']}", f"--model.init_args.num_kept={s['Pt']}",
                f"--data.init_args.batch_size={p['pt_batch']}"])
            start = [f"--model.init_args.init_checkpoint={pt['checkpoint']}", f"--model.init_args.policy={RESNET8_POLICY}"]
        else:
            pt = self.run(f"{kind}_pt", "cifar10_baseline_ft1.yaml", 0, [
                f"--model.init_args.policy_kind={kind}", f"--model.init_args.num_kept={s['Pt']}",
                f"--model.init_args.hr_checkpoint={hr['checkpoint']}"], train=False)
            start = [f"--model.init_args.hr_checkpoint={hr['checkpoint']}"]
        out["Pt"] = pt
        kind_args = [f"--model.init_args.policy_kind={kind}"]
        ft1 = self.run(f"{kind}_ft1", "cifar10_baseline_ft1.yaml", p["ft1_epochs"], [
            *kind_args, f"--model.init_args.num_kept={s['Ft-1']}", *start, *cls])
        out["Ft-1"] = ft1
        ft2_start = [f"--model.init_args.init_checkpoint={ft1['checkpoint']}"] + (start[1:] if kind == "saliency" else [])
        out["Ft-2"] = self.run(f"{kind}_ft2", "cifar10_baseline_ft1.yaml", p["ft2_epochs"], [
            *kind_args, "--model.init_args.stage=ft2", f"--model.init_args.num_kept={s['Ft-2']}", *ft2_start, *lr_stream, *cls])
        return out

    def hard_positives(self, hr: dict[str, Any], ft1: dict[str, Any]) -> list[dict[str, Any]]:
        p = self.p
        rows = []
        for aug in ("none", "cutout", "hard_positive"):
            r = self.run(f"augment_{aug}", "cifar10_hard_positive.yaml", p["hp_epochs"], [
                f"--model.init_args.augment={aug}", f"--model.init_args.init_checkpoint={hr['checkpoint']}",
                f"--model.init_args.policy_checkpoint={ft1['checkpoint']}", f"--model.init_args.optim.learning_rate={p['hp_lr']}"])
            rows.append({"augmentation": {"none": "No Augment.", "cutout": "CutOut", "hard_positive": "PatchDrop"}[aug],
                         "acc": r["acc"], "epochs": p["hp_epochs"], "init": "HR classifier (fine-tuned)", "train_s": r["train_s"]})
        return rows

    def bagnet(self) -> dict[str, Any]:
        p = self.p
        bag = self.run("bagnet", "cifar10_bagnet.yaml", p["bag_epochs"], [])
        pt = self.run("bagnet_pt", "cifar10_bagnet_pt.yaml", p["bag_pt_epochs"], [
            f"--model.init_args.hr_checkpoint={bag['checkpoint']}", f"--model.init_args.optim.learning_rate={p['pt_lr']}",
            f"--data.init_args.batch_size={p['pt_batch']}"])
        ft1 = self.run("bagnet_ft1", "cifar10_bagnet_pt.yaml", p["bag_ft1_epochs"], [
            "--model.init_args.stage=ft1", "--model.init_args.sigma=5.0", f"--model.init_args.init_checkpoint={pt['checkpoint']}",
            f"--model.init_args.optim.learning_rate={p['ft_policy_lr']}", f"--model.init_args.optim.group_learning_rates={{hr_classifier: {p['classifier_lr']}}}",
            f"--data.init_args.batch_size={p['ft_batch']}"])
        return {"bagnet": bag, "Pt": pt, "Ft-1": ft1}


# -- timing ----------------------------------------------------------------------------------------
def _load_task(config: str, ckpt: str | None, extra: list[str]) -> Any:
    cli = main(["--config", str(CFG / config), "--trainer.logger=false", *extra], run=False)
    model = cli.model
    if ckpt:
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"], strict=False)
    return model


def step_profile(ft1_ckpt: str | None, hr_ckpt: str | None, repeats: int, batch: int = 256) -> dict[str, Any]:
    """Median time of a Pt and a Ft-1 training step (bf16 autocast, channels_last) and the share
    of it spent in the agent (policy forward, Eq. 11 bound, sampling, greedy action) + masking."""
    from lr_lightning.methods.patchdrop import rl

    g = torch.Generator().manual_seed(0)
    hr = torch.rand(batch, 3, 32, 32, generator=g)
    lr = torch.nn.functional.interpolate(hr, size=(8, 8), mode="nearest")
    y = torch.randint(0, 10, (batch,), generator=g)
    out: dict[str, Any] = {"batch": batch, "repeats": repeats}
    for stage, config, extra in (("Pt", "cifar10_pt.yaml", [f"--model.init_args.hr_checkpoint={hr_ckpt}"] if hr_ckpt else []),
                                 ("Ft-1", "cifar10_ft1.yaml", [f"--model.init_args.init_checkpoint={ft1_ckpt}"] if ft1_ckpt else [])):
        task = _load_task(config, None, extra)
        task.train()
        opt = torch.optim.Adam([q for q in task.parameters() if q.requires_grad], lr=1e-4)

        def full_step(task: Any = task, opt: torch.optim.Optimizer = opt) -> None:
            model = task.model
            with torch.autocast("cpu", dtype=torch.bfloat16):
                x = model.normalize(hr)
                loss, _ = model.reinforce_step(x, lr, y, lr_logits=None, alpha=task.alpha(), sigma=task.hparams.sigma,
                                               train_classifier=task.hparams.stage != "pt")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def agent_and_masks(task: Any = task) -> None:
            model = task.model
            with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
                x = model.normalize(hr)
                probs = model.policy_probs(lr)
                a = torch.bernoulli(rl.bound_probs(probs, 0.8))
                model.masked(x, a)
                model.masked(x, rl.greedy_actions(probs))

        step = median_time(full_step, repeats=repeats, warmup=2)
        agent = median_time(agent_and_masks, repeats=repeats, warmup=2)
        out[stage] = {"step_ms": round(step * 1e3, 1), "agent_and_masking_ms": round(agent * 1e3, 1),
                      "agent_and_masking_share_pct": round(100 * agent / step, 1)}
        print(f"[timing] {stage} step {step * 1e3:.1f} ms, agent + masking {agent * 1e3:.1f} ms ({100 * agent / step:.1f} %)", flush=True)
    return out


def bagnet_runtime(bag_ckpt: str | None, ft1_ckpt: str | None, repeats: int, batch: int = 256) -> dict[str, Any]:
    """Inference time (bf16 autocast, B = 256 test images): ResNet32 on the full HR image, BagNet
    on all 16 patches, and policy + BagNet on the patches the Ft-1 policy samples."""
    from lr_lightning.data import CIFARDataModule
    from lr_lightning.degrade import Degradation

    dm = CIFARDataModule(batch_size=batch, degradation=Degradation("nearest", 4))
    dm.setup("test")
    batch_ = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    hr, lr = batch_["hr"], batch_["lr"]
    task = _load_task("cifar10_bagnet_pt.yaml", ft1_ckpt, ["--model.init_args.stage=ft1"]).eval()
    dense = _load_task("cifar10_pt.yaml", None, []).eval()
    model = task.model
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        x = model.normalize(hr)
        actions = model.test_actions(lr)

        def all_patches() -> None:
            model.hr_classifier(x)

        def conditional() -> None:
            model.hr_classifier(x, model.test_actions(lr))

        def resnet32() -> None:
            dense.model.hr_classifier(x)

        t_all = median_time(all_patches, repeats=repeats)
        t_cond = median_time(conditional, repeats=repeats)
        t_dense = median_time(resnet32, repeats=repeats)
    res = {"batch": batch, "mean_S": round(float(actions.sum(1).mean()), 2), "bagnet_all_patches_ms": round(t_all * 1e3, 1),
           "policy_plus_bagnet_sampled_ms": round(t_cond * 1e3, 1), "resnet32_full_image_ms": round(t_dense * 1e3, 1),
           "conditional_over_all_ratio": round(t_cond / t_all, 3)}
    print(f"[timing] BagNet all {t_all * 1e3:.1f} ms, policy + sampled {t_cond * 1e3:.1f} ms (x{t_cond / t_all:.2f}), "
          f"ResNet32 {t_dense * 1e3:.1f} ms", flush=True)
    return res


def copy_figures(run: dict[str, Any], tag: str) -> list[str]:
    names = []
    for fig in ("patchdrop_policies.png", "patchdrop_statistics.png"):
        src = REPO / run["log_dir"] / fig
        if src.is_file():
            dst = RESULTS / f"patchdrop_cifar10_{tag}_{fig.split('_')[1]}"
            shutil.copyfile(src, dst)
            names.append(os.path.relpath(dst, REPO))
    return names


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=["small", "paper"], default="small")
    parser.add_argument("--smoke", action="store_true", help="a few steps per stage (checks the pipeline; results not written)")
    parser.add_argument("--repeats", type=int, default=10, help="repeats of each timing (median)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "runs" / "patchdrop_cifar10"))
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # the CLI runs below get their arguments explicitly
    torch.set_float32_matmul_precision("high")
    cache_cifar_loading()
    t_start = time.perf_counter()
    b = Bench(args)

    hr, lr = b.classifiers()
    pd = b.patchdrop(hr, lr)
    s = {stage: min(16, max(1, math.ceil(pd[stage]["S"] - 1e-9))) for stage in ("Pt", "Ft-1", "Ft-2")}
    print(f"[baselines] S per stage (ceil of PatchDrop's mean S): {s}", flush=True)
    base = {kind: b.baseline(kind, s, hr, lr) for kind in BASELINES}
    hp = b.hard_positives(hr, pd["Ft-1"])
    bag = b.bagnet()
    timing = step_profile(pd["Ft-1"]["checkpoint"], hr["checkpoint"], 3 if args.smoke else args.repeats)
    bag_time = bagnet_runtime(bag["bagnet"]["checkpoint"], bag["Ft-1"]["checkpoint"], 3 if args.smoke else args.repeats)

    rows: list[dict[str, Any]] = [
        {"method": "LR-CNN", "stage": None, "acc": lr["acc"], "S": 0},
        {"method": "SR (bicubic) + HR-CNN", "stage": None, "acc": hr["acc_nearest4+up"], "S": 0},
        {"method": "HR-CNN", "stage": None, "acc": hr["acc"], "S": 16},
    ]
    for kind, label in BASELINES.items():
        rows += [{"method": label, "stage": st, "acc": base[kind][st]["acc"], "S": base[kind][st]["S"]} for st in ("Pt", "Ft-1", "Ft-2")]
    rows += [{"method": "PatchDrop", "stage": st, "acc": pd[st]["acc"], "S": pd[st]["S"]} for st in ("Pt", "Ft-1", "Ft-2")]
    bag_rows = [
        {"method": "BagNet (no patch drop)", "stage": None, "acc": bag["bagnet"]["acc"], "S": 16},
        {"method": "BagNet (PatchDrop)", "stage": "Pt", "acc": bag["Pt"]["acc"], "S": bag["Pt"]["S"]},
        {"method": "BagNet (PatchDrop)", "stage": "Ft-1", "acc": bag["Ft-1"]["acc"], "S": bag["Ft-1"]["S"]},
    ]
    wall = time.perf_counter() - t_start
    if args.smoke:
        print(f"smoke run finished in {wall:.0f} s (nothing written)")
        return

    figures = copy_figures(pd["Ft-1"], "ft1") + copy_figures(pd["Ft-2"], "ft2")
    best_base = {st: max(base[k][st]["acc"] for k in BASELINES) for st in ("Ft-1", "Ft-2")}
    targets = {
        f"{st}: PatchDrop - best baseline (points)": round(pd[st]["acc"] - best_base[st], 2) for st in ("Ft-1", "Ft-2")
    }
    targets.update({f"{st}: HR-CNN - PatchDrop (points)": round(hr["acc"] - pd[st]["acc"], 2) for st in ("Ft-1", "Ft-2")})
    targets.update({f"{st}: PatchDrop patch fraction (%)": round(100 * pd[st]["S"] / 16, 1) for st in ("Ft-1", "Ft-2")})

    # Table-2 layout: one line per method, Pt / Ft-1 / Ft-2 accuracies and S
    table = []
    for method in ["LR-CNN", "SR (bicubic) + HR-CNN", "HR-CNN", *BASELINES.values(), "PatchDrop"]:
        rs = [r for r in rows if r["method"] == method]
        if rs[0]["stage"] is None:
            r = rs[0]
            table.append({"method": method, "acc Pt": r["acc"], "acc Ft-1": r["acc"], "acc Ft-2": r["acc"], "S (Pt, Ft-1, Ft-2)": f"{r['S']}, {r['S']}, {r['S']}"})
        else:
            by = {r["stage"]: r for r in rs}
            table.append({"method": method, "acc Pt": by["Pt"]["acc"], "acc Ft-1": by["Ft-1"]["acc"], "acc Ft-2": by["Ft-2"]["acc"],
                          "S (Pt, Ft-1, Ft-2)": ", ".join(f"{by[st]['S']:.2f}" for st in ("Pt", "Ft-1", "Ft-2"))})
    prof = b.p
    md = (
        f"## PatchDrop on CIFAR-10 ({args.profile} profile; HR 32x32, LR 8x8 nearest x4, 4x4 grid)\n\n"
        f"Epochs: HR classifier {prof['hr_epochs']}, LR classifier {prof['lr_epochs']} (from HR), Pt {prof['pt_epochs']} "
        f"(batch {prof['pt_batch']}, lr {prof['pt_lr']}), Ft-1 {prof['ft1_epochs']}, Ft-2 {prof['ft2_epochs']} (batch "
        f"{prof['ft_batch']}, policy lr {prof['ft_policy_lr']}, classifier lr {prof['classifier_lr']}). Baselines use "
        f"S = ceil(PatchDrop's S) per stage = {s} and the same epochs. Test accuracy (%) on 10k test images.\n\n"
        + markdown_table(table, ["method", "acc Pt", "acc Ft-1", "acc Ft-2", "S (Pt, Ft-1, Ft-2)"])
        + "\nTargets (issue): " + "; ".join(f"{k} = {v}" for k, v in targets.items()) + "\n\n"
        + f"### Hard positives (Table 4; fine-tuned {prof['hp_epochs']} epochs from the HR classifier, lr {prof['hp_lr']})\n\n"
        + markdown_table(hp, ["augmentation", "acc", "epochs", "train_s"])
        + "\n### Conditional BagNet (Table 3)\n\n"
        + markdown_table(bag_rows, ["method", "stage", "acc", "S"])
        + "\nInference, B = 256, bf16, median of "
        + f"{args.repeats}: " + "; ".join(f"{k} = {v}" for k, v in bag_time.items()) + "\n\n"
        + "### Training step time (B = 256, bf16 autocast + channels_last, median)\n\n"
        + markdown_table([{"stage": st, **timing[st]} for st in ("Pt", "Ft-1")], ["stage", "step_ms", "agent_and_masking_ms", "agent_and_masking_share_pct"])
        + "\nPer-patch sampling frequency and accuracy vs S of PatchDrop Ft-1 / Ft-2: "
        + ", ".join(figures) + "\n"
    )
    payload = {
        "profile": args.profile, "epochs": prof, "baseline_S": s, "rows": rows, "table2": table, "targets": targets,
        "hard_positive": hp, "bagnet": {"rows": bag_rows, "runtime": bag_time}, "step_time": timing,
        "patchdrop_policy_stats": {st: pd[st].get("stats") for st in ("Pt", "Ft-1", "Ft-2")},
        "runs": {k: {kk: vv for kk, vv in v.items() if kk != "stats"} for k, v in b.runs.items()}, "figures": figures,
    }
    write_results("patchdrop_cifar10", payload, md, wall)
    print(md)
    print(f"wall time {wall:.0f} s")


if __name__ == "__main__":
    main_bench()
