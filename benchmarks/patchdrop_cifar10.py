"""PatchDrop (paper C) on CIFAR-10: accuracy-vs-S frontiers of a learned policy and of the fixed /
stochastic / saliency masks, with seeds, intervals and paired tests.

    python benchmarks/patchdrop_cifar10.py                    # default profile, resumable
    python benchmarks/patchdrop_cifar10.py --resume           # skip the stages already in the JSON
    python benchmarks/patchdrop_cifar10.py --resume --stages classifiers,curves_pt   # some stages
    python benchmarks/patchdrop_cifar10.py --resume --redo pt_sweep                 # run one again
    python benchmarks/patchdrop_cifar10.py --profile smoke    # every stage for a few steps
    python benchmarks/patchdrop_cifar10.py --profile paper    # the paper's epochs (GPU; not run here)

HR 32x32, LR 8x8 (nearest x4), 4x4 grid (P = 16). Every model is trained through the project's
configs (``configs/patchdrop/``) with the CLI's ``main``; every choice (learning rate, sigma,
epoch) is made on the validation split (10 % of train, fixed); the 10k test images are only
evaluated, in one fixed order, so per-image correctness is paired across methods (McNemar).

Stages (each writes its rows into ``benchmarks/results/patchdrop_cifar10.json`` as it finishes;
the trained weights go to ``benchmarks/results/patchdrop_weights/`` so ``--resume`` works on a
fresh machine):

1. ``classifiers``: HR ResNet32 (the HR-CNN row) and the LR ResNet32 on the bilinearly upsampled
   LR image, initialised from the HR one (LR-CNN row; the Ft-2 LR stream).
2. ``curves_pt``: the frozen HR classifier under Fixed-H, Fixed-V and Stochastic masks at every
   S = 0..16 (validation and test), and the headroom check: an oracle that picks, per image, the
   best of K fixed masks of S patches (what an image-conditional policy could gain at most
   among them) against the best single mask.
3. ``stn_pt``: the STN-style saliency baseline trained at S = ``stn_s`` (3 seeds), evaluated with
   its top-S patches at every S.
4. ``pt_sweep``: PatchDrop Pt over policy learning rate x sigma (+ the exploration options at one
   sigma), seed 0; the learning rate is chosen per sigma by the best validation reward.
5. ``pt_seeds``: seeds 1, 2 of the chosen Pt setting(s); ``pt_eval``: every Pt policy's greedy
   test action, its threshold curve, and the paired comparison with every baseline at the floor,
   ceil and interpolation of its mean S.
6. ``ft1`` / ``ft2``: PatchDrop fine-tuning (3 seeds) and the baselines fine-tuned on their own
   masks at the floor and ceil of PatchDrop's mean *validation* S (seed 0; the best baseline at
   the ceil with 3 seeds), all for the same epochs.
7. ``timing``: Pt / Ft-1 / Ft-2 step and epoch time.
8. ``table3``: conditional BagNet (Sec. 6) with the same protocol, plus inference time.
9. ``table4``: hard positives vs CutOut vs none (Sec. 7), ResNet32 from scratch, 3 seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import lr_lightning.methods.patchdrop  # noqa: E402,F401  (imported up front: later edits do not leak into a running benchmark)
from benchmarks.common import (  # noqa: E402
    REPO,
    RESULTS,
    add_stage_arguments,
    cache_cifar_loading,
    cli_run_args,
    environment,
    git_commit,
    markdown_table,
    mcnemar,
    mean_ci,
    median_time,
    resumable_results,
    selected_stages,
    write_results,
)
from lr_lightning.cli import main as cli_main  # noqa: E402
from lr_lightning.data import CIFARDataModule  # noqa: E402
from lr_lightning.degrade import Degradation  # noqa: E402
from lr_lightning.methods.patchdrop.frontier import accuracy_curve, interpolate_at, oracle_accuracy  # noqa: E402
from lr_lightning.methods.patchdrop.model import PatchDropModel  # noqa: E402
from lr_lightning.nn import CifarResNet, PatchBagNet  # noqa: E402

NAME = "patchdrop_cifar10"
CFG = REPO / "configs" / "patchdrop"
WEIGHTS = RESULTS / "patchdrop_weights"
_SWEEP = dict(pt_lrs=[3e-4, 1e-3], pt_sigmas=[0.1, 0.25, 0.5], explore=[{"logit_bound": 3.0}, {"entropy_weight": 0.01}],
              stn_s=8, oracle_s=[4, 6, 8], oracle_k=16, seeds=[0, 1, 2], s_range=[6, 9],
              check_classifier_lrs=[3e-4, 1e-3], check_policy_samples=4, predict_epochs=15, longer_ft1_epochs=[10, 20],
              gap_levels=list(range(3, 14)))
PROFILES: dict[str, dict[str, Any]] = {
    "default": dict(hr_epochs=30, lr_epochs=5, stn_epochs=8, pt_epochs=15, pt_batch=256, ft1_epochs=5, ft2_epochs=3,
                    ft_batch=256, ft_sigmas=[0.5, 2.0], classifier_lr=1e-4, bag_epochs=15, bag_pt_epochs=15, bag_ft1_epochs=5,
                    hp_epochs=10, hp_lr=0.1, rp_epochs=10, limit_train=None, limit_eval=None, **_SWEEP),
    # the paper's CIFAR-10 schedule (Sec. 5.3): Pt 3400 epochs batch 1024 lr 1e-4, Ft-1 1680 / Ft-2 990 epochs batch 256
    "paper": dict(hr_epochs=200, lr_epochs=100, stn_epochs=200, pt_epochs=3400, pt_batch=1024, ft1_epochs=1680, ft2_epochs=990,
                  ft_batch=256, ft_sigmas=[5.0], classifier_lr=1e-4, bag_epochs=200, bag_pt_epochs=3400, bag_ft1_epochs=1680,
                  hp_epochs=200, hp_lr=0.1, rp_epochs=30, limit_train=None, limit_eval=None,
                  **{**_SWEEP, "pt_lrs": [1e-4], "pt_sigmas": [0.5]}),
    "smoke": dict(hr_epochs=1, lr_epochs=1, stn_epochs=1, pt_epochs=1, pt_batch=64, ft1_epochs=1, ft2_epochs=1, ft_batch=64,
                  ft_sigmas=[0.5], classifier_lr=1e-4, bag_epochs=1, bag_pt_epochs=1, bag_ft1_epochs=1, hp_epochs=1, hp_lr=0.1,
                  rp_epochs=1, limit_train=3, limit_eval=2,
                  **{**_SWEEP, "pt_lrs": [1e-3], "pt_sigmas": [0.5, 1.0], "explore": [{"logit_bound": 3.0}], "oracle_k": 3, "longer_ft1_epochs": [2]}),
}
STAGES = ["classifiers", "curves_pt", "stn_pt", "pt_sweep", "pt_seeds", "pt_eval", "ft1", "ft2", "timing", "table3", "table4",
          "ft1_checks", "adapted", "predictability", "adapted_sigmas", "ft1_longer",
          "reward_generalisation", "predictability_input", "table4_longer"]
RULE_LABEL = {"fixed_h": "Fixed-H", "fixed_v": "Fixed-V", "stochastic": "Stochastic", "top_s": "STN"}
RESNET32 = json.dumps({"class_path": "lr_lightning.nn.CifarResNet", "init_args": {"depth": 32, "num_classes": 10}})
RESNET8_POLICY = json.dumps({"class_path": "lr_lightning.nn.CifarResNet", "init_args": {"depth": 8, "num_classes": 16}})


class Runner:
    """Trains and tests one config through the CLI; keeps the run directories under ``out``."""

    def __init__(self, profile: str, out: Path) -> None:
        self.profile = profile
        self.p = PROFILES[profile]
        self.out = out
        self.flush: Any = lambda: None  # writes the results JSON (set by main)

    def args(self, name: str, epochs: int, seed: int) -> list[str]:
        args = [*cli_run_args(self.out, name, epochs), "--trainer.num_sanity_val_steps=0", "--trainer.log_every_n_steps=20",
                "--data.init_args.eval_batch_size=500", f"--seed_everything={seed}"]
        if self.p["limit_train"]:
            args += [f"--trainer.limit_train_batches={self.p['limit_train']}", f"--trainer.limit_val_batches={self.p['limit_eval']}",
                     f"--trainer.limit_test_batches={self.p['limit_eval']}"]
        return args

    def fit(self, name: str, config: str, epochs: int, extra: list[str], seed: int = 0, test: bool = True) -> dict[str, Any]:
        """Fit a config, then (``test``) test its best-by-validation checkpoint once. A run that
        finished before (its record in ``out/cache/<name>.json`` and its checkpoint still on
        disk, e.g. a stage killed half-way on this machine) is not trained again."""
        cache = self.out / "cache" / f"{name}.json"
        if cache.is_file():
            done = json.loads(cache.read_text())
            if Path(done["checkpoint"]).is_file() and done.get("extra") == extra and done.get("epochs") == epochs and (not test or "test" in done):
                print(f"[{name}] finished before, reused ({cache})", flush=True)
                return done
        cli = cli_main(["--config", str(CFG / config), *self.args(name, epochs, seed), *extra], run=False)
        trainer, model, dm = cli.trainer, cli.model, cli.datamodule
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        fit_s = time.perf_counter() - t0
        best = trainer.checkpoint_callback.best_model_path
        out: dict[str, Any] = {"name": name, "seed": seed, "epochs": epochs, "train_s": round(fit_s, 1), "checkpoint": best,
                               "best_val": float(trainer.checkpoint_callback.best_model_score or float("nan")),
                               "log_dir": os.path.relpath(trainer.log_dir, REPO)}
        if test:
            res = trainer.test(model, datamodule=dm, ckpt_path=best, verbose=False)[0]
            out["test"] = {k: float(v) for k, v in res.items()}
        print(f"[{name}] best val {out['best_val']:.4f}" + (f", test acc {100 * out['test'].get('test/acc', float('nan')):.2f} %" if test else "")
              + f", train {fit_s:.0f} s", flush=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({**out, "extra": extra}, indent=1))
        return out


def save_weights(checkpoint: str, path: Path, prefixes: tuple[str, ...], half: bool = False) -> str:
    """The entries of a Lightning checkpoint's state dict with the given prefixes as a plain
    state dict (no optimiser state; ``half`` stores float tensors in float16 to keep committed
    files small), so a fresh machine can ``--resume``; returns the path relative to the repo."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    own = {k: (v.half() if half and v.is_floating_point() else v) for k, v in state.items() if k.startswith(prefixes)}
    if not own:
        raise ValueError(f"{checkpoint!r} has no {prefixes} weights")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(own, path)
    return os.path.relpath(path, REPO)


def weights_path(profile: str, name: str) -> Path:
    return WEIGHTS / f"{profile}_{name}.pt"


# -- stages ------------------------------------------------------------------------------------------
def stage_classifiers(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """HR-CNN (ResNet32 on the 32x32 image) and LR-CNN (ResNet32 on the 8x8 image upsampled
    bilinearly, initialised from the HR one, as the paper does)."""
    p = r.p
    hr = r.fit("classifier_hr", "cifar10_classifier_hr.yaml", p["hr_epochs"], [])
    hr_w = save_weights(hr["checkpoint"], weights_path(r.profile, "classifier_hr"), ("net.",))
    lr = r.fit("classifier_lr", "cifar10_classifier_lr.yaml", p["lr_epochs"], [f"--model.init_args.init_checkpoint={REPO / hr_w}"])
    lr_w = save_weights(lr["checkpoint"], weights_path(r.profile, "classifier_lr"), ("net.",))
    return {"hr": {**hr, "weights": hr_w, "acc": round(100 * hr["test"]["test/acc"], 2)},
            "lr": {**lr, "weights": lr_w, "acc": round(100 * lr["test"]["test/acc"], 2)}}


# -- evaluation helpers ------------------------------------------------------------------------------
_BATCHES: dict[tuple[str, int | None], list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}


def eval_batches(split: str, limit: int | None) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The fixed validation split (10 % of train, data seed 0, as in every CLI run), the 10k
    test images, or (``train``) the training split without augmentation, as ``(hr, lr, label)``
    batches of 500 in one fixed order."""
    key = (split, limit)
    if key not in _BATCHES:
        dm = CIFARDataModule(batch_size=500, eval_batch_size=500, degradation=Degradation("nearest", 4))
        dm.setup("test" if split == "test" else "fit")
        loader = {"val": dm.val_dataloader, "test": dm.test_dataloader, "train": lambda: dm._loader(dm.train_set, False, 500)}[split]()
        out = []
        for i, b in enumerate(loader):
            if limit and i >= limit:
                break
            b = dm.on_after_batch_transfer(b, 0)
            out.append((b["hr"], b["lr"], b["label"]))
        _BATCHES[key] = out
    return _BATCHES[key]


def _sub(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_model(*, hr: str, stage: str | None = None, lr: str | None = None, bagnet: bool = False,
               logit_bound: float | None = None) -> PatchDropModel:
    """A PatchDropModel for evaluation: HR classifier from ``hr`` (``net.*``) unless the stage
    weights ``stage`` (``model.*``) hold a fine-tuned one; their policy when they have one; the
    LR stream from ``lr`` (Ft-2)."""
    from lr_lightning.data.cifar import CIFAR10_MEAN, CIFAR10_STD

    state = torch.load(REPO / stage, map_location="cpu", weights_only=True) if stage else {}
    policy_state = _sub(state, "model.policy.")
    model = PatchDropModel(grid=4, policy_kind="learned" if policy_state else "full", mean=CIFAR10_MEAN, std=CIFAR10_STD,
                           hr_classifier=PatchBagNet(num_classes=10, grid=4, depth=8) if bagnet else CifarResNet(32, 10),
                           policy=CifarResNet(8, 16) if policy_state else None,
                           lr_classifier=CifarResNet(32, 10) if lr else None, logit_bound=logit_bound, channels_last=True)
    hr_state = _sub(state, "model.hr_classifier.") or _sub(torch.load(REPO / hr, map_location="cpu", weights_only=True), "net.")
    model.hr_classifier.load_state_dict(hr_state)
    if policy_state:
        model.policy.load_state_dict(policy_state)
    if lr:
        model.lr_classifier.load_state_dict(_sub(torch.load(REPO / lr, map_location="cpu", weights_only=True), "net."))
    return model.to(memory_format=torch.channels_last).eval()


def curve(model: PatchDropModel, split: str, r: Runner, rule: str, levels: list[float], seed: int = 0) -> list[dict[str, Any]]:
    """:func:`accuracy_curve` under bf16 autocast (as the training runs)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return accuracy_curve(model, eval_batches(split, r.p["limit_eval"]), rule, levels, seed=seed)  # type: ignore[arg-type]


def points(c: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [{"level": q["level"], "S": round(q["mean_S"], 3), "acc": round(q["acc"], 2)} for q in c]


def compose_init(r: Runner, name: str, *, hr_w: str, stage_w: str | None) -> str:
    """A plain state dict with ``model.hr_classifier.*`` (the stage's own, else the HR classifier)
    and ``model.policy.*`` (when the stage has one), for a next stage's ``init_checkpoint``."""
    state = torch.load(REPO / stage_w, map_location="cpu", weights_only=True) if stage_w else {}
    merged = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    if not any(k.startswith("model.hr_classifier.") for k in merged):
        hr = torch.load(REPO / hr_w, map_location="cpu", weights_only=True)
        merged.update({"model.hr_classifier." + k: v for k, v in _sub(hr, "net.").items()})
    path = r.out / "init" / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(merged, path)
    return str(path)


def greedy_eval(model: PatchDropModel, r: Runner) -> dict[str, Any]:
    """The learned policy's test action (``s_p > 0.5``) on validation and test: mean S, accuracy
    and the per-image correctness on test (for the paired tests)."""
    val = curve(model, "val", r, "threshold", [0.5])[0]
    test = curve(model, "test", r, "threshold", [0.5])[0]
    return {"val_S": round(val["mean_S"], 3), "val_acc": round(val["acc"], 2), "S": round(test["mean_S"], 3),
            "acc": round(test["acc"], 2), "correct": test["correct"]}


def baseline_correct(model: PatchDropModel, r: Runner, rule: str, s: int, seed: int) -> torch.Tensor:
    return curve(model, "test", r, rule, [s], seed=seed)[0]["correct"]


def compare(pd_correct: list[torch.Tensor], base_correct: list[torch.Tensor]) -> dict[str, Any]:
    """PatchDrop minus a baseline over paired seeds: mean +- 95 % CI of the accuracy difference
    and one exact McNemar test per seed on the same test images."""
    tests = [mcnemar(a.numpy(), b.numpy()) for a, b in zip(pd_correct, base_correct, strict=True)]
    return {"diff": mean_ci([t["diff"] for t in tests]), "mcnemar": tests}


# -- stages ------------------------------------------------------------------------------------------
def stage_curves_pt(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """Fixed-H / Fixed-V / Stochastic on the frozen HR classifier at S = 0..16, and the headroom
    of an image-conditional choice among K fixed masks (oracle) over the best single mask."""
    c = results["stages"]["classifiers"]
    model = load_model(hr=c["hr"]["weights"])
    levels = list(range(17))
    out: dict[str, Any] = {"val": {}, "test": {}, "headroom": []}
    for split in ("val", "test"):
        for rule in ("fixed_h", "fixed_v"):
            out[split][rule] = points(curve(model, split, r, rule, levels))
        seeds = r.p["seeds"] if split == "test" else r.p["seeds"][:1]
        out[split]["stochastic"] = {str(sd): points(curve(model, split, r, "stochastic", levels, seed=sd)) for sd in seeds}
    for split in ("val",):  # the headroom is a property of the task; validation suffices
        for s in r.p["oracle_s"]:
            cands = {f"random{k}": curve(model, split, r, "random", [s], seed=k)[0] for k in range(r.p["oracle_k"])}
            cands.update({rule: curve(model, split, r, rule, [s])[0] for rule in ("fixed_h", "fixed_v")})
            best = max(cands, key=lambda k: cands[k]["acc"])
            out["headroom"].append({"split": split, "S": s, "K": len(cands), "best_single": best, "best_single_acc": round(cands[best]["acc"], 2),
                                    "oracle_acc": round(oracle_accuracy([q["correct"] for q in cands.values()]), 2)})
            print(f"[headroom] {split} S={s}: best single {best} {cands[best]['acc']:.2f} %, oracle of {len(cands)} "
                  f"{out['headroom'][-1]['oracle_acc']:.2f} %", flush=True)
    full = out["test"]["fixed_h"][16]["acc"]
    out["check_full_image_acc"] = full  # = the HR-CNN's test accuracy (bf16 evaluation)
    return out


def stage_stn_pt(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """The STN-style saliency net, trained through a soft mask of S = ``stn_s`` patches by the
    frozen HR classifier (3 seeds), then its top-S rule at every S."""
    p, c = r.p, results["stages"]["classifiers"]
    runs = {}
    for seed in p["seeds"]:
        run = r.fit(f"stn_pt_seed{seed}", "cifar10_stn_pt.yaml", p["stn_epochs"], [
            f"--model.init_args.hr_checkpoint={REPO / c['hr']['weights']}", f"--model.init_args.num_kept={p['stn_s']}",
            f"--data.init_args.batch_size={p['pt_batch']}"], seed=seed, test=False)
        w = save_weights(run["checkpoint"], weights_path(r.profile, f"stn_pt_seed{seed}"), ("model.policy.",))
        model = load_model(hr=c["hr"]["weights"], stage=w)
        runs[str(seed)] = {**{k: run[k] for k in ("seed", "epochs", "train_s", "best_val")}, "weights": w,
                           "val": points(curve(model, "val", r, "top_s", list(range(17)))),
                           "test": points(curve(model, "test", r, "top_s", list(range(17))))}
    return {"train_S": p["stn_s"], "runs": runs}


def pt_args(r: Runner, results: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    c = results["stages"]["classifiers"]
    args = [f"--model.init_args.hr_checkpoint={REPO / c['hr']['weights']}", f"--model.init_args.optim.learning_rate={cfg['lr']}",
            f"--model.init_args.sigma={cfg['sigma']}", f"--data.init_args.batch_size={r.p['pt_batch']}"]
    return args + [f"--model.init_args.{k}={v}" for k, v in cfg.get("explore", {}).items()]


def cfg_name(cfg: dict[str, Any]) -> str:
    ex = "_".join(f"{k}{v:g}" for k, v in cfg.get("explore", {}).items())
    return f"pt_sigma{cfg['sigma']:g}_lr{cfg['lr']:g}" + (f"_{ex}" if ex else "")


def run_pt(r: Runner, results: dict[str, Any], cfg: dict[str, Any], seed: int, *, hr: str | None = None, prefix: str = "",
           extra: tuple[str, ...] = (), keep_correct: bool = False) -> dict[str, Any]:
    """One Pt run of ``cfg`` on the HR-CNN (or on the classifier ``hr``), greedy point on val / test
    (``keep_correct``: with the per-image test correctness, for paired tests in the same stage)."""
    name = f"{prefix}{cfg_name(cfg)}_seed{seed}"
    args = [*pt_args(r, results, cfg), *([f"--model.init_args.hr_checkpoint={REPO / hr}"] if hr else []), *extra]  # the last hr_checkpoint wins
    hr = hr or results["stages"]["classifiers"]["hr"]["weights"]
    run = r.fit(name, "cifar10_pt.yaml", r.p["pt_epochs"], args, seed=seed, test=False)
    w = save_weights(run["checkpoint"], weights_path(r.profile, name), ("model.policy.", "model.policy_updates"))
    bound = cfg.get("explore", {}).get("logit_bound")
    model = load_model(hr=hr, stage=w, logit_bound=bound)
    g = greedy_eval(model, r)
    if not keep_correct:
        g.pop("correct")
    print(f"[{name}] val reward {run['best_val']:.4f}, val S {g['val_S']:.2f}, val acc {g['val_acc']:.2f}", flush=True)
    return {**cfg, "seed": seed, "name": name, "weights": w, "logit_bound": bound, "val_reward": round(run["best_val"], 4),
            "train_s": run["train_s"], "epochs": run["epochs"], **g}


def stage_pt_sweep(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """Pt over learning rate x sigma (seed 0); per sigma the learning rate with the best
    validation reward; the exploration options at the sigma whose validation S is nearest the
    middle of the target range, with that learning rate. The claim setting = the best of them
    by validation reward."""
    p = r.p
    runs = [run_pt(r, results, {"sigma": sg, "lr": lr}, 0) for sg in p["pt_sigmas"] for lr in p["pt_lrs"]]
    chosen = {}
    for sg in p["pt_sigmas"]:
        cand = [q for q in runs if q["sigma"] == sg]
        chosen[str(sg)] = max(cand, key=lambda q: q["val_reward"])["name"]
    by_name = {q["name"]: q for q in runs}
    mid = sum(p["s_range"]) / 2
    claim_sigma = min(p["pt_sigmas"], key=lambda sg: abs(by_name[chosen[str(sg)]]["val_S"] - mid))
    base = by_name[chosen[str(claim_sigma)]]
    for ex in p["explore"]:
        runs.append(run_pt(r, results, {"sigma": claim_sigma, "lr": base["lr"], "explore": ex}, 0))
    cand = [q for q in runs if q["sigma"] == claim_sigma]
    claim = max(cand, key=lambda q: q["val_reward"])
    chosen[str(claim_sigma)] = claim["name"]
    return {"runs": runs, "chosen_per_sigma": chosen, "claim_sigma": claim_sigma,
            "claim": {k: claim[k] for k in ("sigma", "lr")} | {"explore": claim.get("explore", {})}, "claim_run": claim["name"]}


def stage_pt_seeds(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    sw = results["stages"]["pt_sweep"]
    cfg = sw["claim"]
    seed0 = next(q for q in sw["runs"] if q["name"] == sw["claim_run"])
    return {"config": cfg, "runs": [seed0] + [run_pt(r, results, cfg, seed) for seed in r.p["seeds"][1:]]}


def baselines_at(r: Runner, results: dict[str, Any], s_val: float, s_test: float, pd_correct: list[torch.Tensor], seeds: list[int],
                 curves: dict[str, dict[str, list[dict[str, float]]]]) -> list[dict[str, Any]]:
    """Every frozen-classifier baseline at floor / ceil of PatchDrop's mean validation S and
    interpolated at its mean test S, paired with PatchDrop's seeds."""
    c = results["stages"]["classifiers"]
    frozen = load_model(hr=c["hr"]["weights"])
    stn = results["stages"]["stn_pt"]["runs"]
    out = []
    for rule, label in RULE_LABEL.items():
        for which, s in (("floor", int(s_val // 1)), ("ceil", min(16, int(-(-s_val // 1))))):
            per_seed = []
            for i, seed in enumerate(seeds):
                if rule == "top_s":
                    model = load_model(hr=c["hr"]["weights"], stage=stn[str(seed)]["weights"])
                    per_seed.append(baseline_correct(model, r, rule, s, seed))
                else:
                    per_seed.append(baseline_correct(frozen, r, rule, s, seed) if rule == "stochastic" or i == 0 else per_seed[0])
            accs = [float(q.double().mean() * 100) for q in per_seed]
            out.append({"method": label, "which": which, "S": s, "acc": mean_ci(accs), "seeds": seeds, "per_seed_acc": [round(a, 2) for a in accs],
                        "vs_patchdrop": compare(pd_correct, per_seed)})
        seed_curves = [curves[rule][str(sd)] for sd in seeds] if rule in ("stochastic", "top_s") else [curves[rule]]
        interp = [interpolate_at([(q["S"], q["acc"]) for q in cv], s_test) for cv in seed_curves]
        out.append({"method": label, "which": "interpolated", "S": round(s_test, 3), "acc": mean_ci(interp)})
    return out


def test_curves(results: dict[str, Any]) -> dict[str, Any]:
    cp = results["stages"]["curves_pt"]["test"]
    return {"fixed_h": cp["fixed_h"], "fixed_v": cp["fixed_v"], "stochastic": cp["stochastic"],
            "top_s": {sd: v["test"] for sd, v in results["stages"]["stn_pt"]["runs"].items()}}


def stage_pt_eval(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """Every Pt policy: greedy point, threshold curve; the claim setting's 3 seeds against every
    baseline at the same S (paired)."""
    c = results["stages"]["classifiers"]
    points_out = []
    for q in results["stages"]["pt_sweep"]["runs"] + results["stages"]["pt_seeds"]["runs"][1:]:
        model = load_model(hr=c["hr"]["weights"], stage=q["weights"], logit_bound=q.get("logit_bound"))
        thr = points(curve(model, "test", r, "threshold", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]))
        points_out.append({"name": q["name"], "sigma": q["sigma"], "seed": q["seed"], "S": q["S"], "acc": q["acc"], "val_S": q["val_S"],
                           "threshold_curve": thr})
    runs = results["stages"]["pt_seeds"]["runs"]
    seeds = [q["seed"] for q in runs]
    pd_correct = [greedy_eval(load_model(hr=c["hr"]["weights"], stage=q["weights"], logit_bound=q.get("logit_bound")), r)["correct"]
                  for q in runs]
    s_val = sum(q["val_S"] for q in runs) / len(runs)
    s_test = sum(q["S"] for q in runs) / len(runs)
    claim = {"config": results["stages"]["pt_seeds"]["config"], "seeds": seeds, "acc": mean_ci([q["acc"] for q in runs]),
             "S": mean_ci([q["S"] for q in runs]), "val_S": round(s_val, 3),
             "baselines": baselines_at(r, results, s_val, s_test, pd_correct, seeds, test_curves(results))}
    return {"points": points_out, "claim": claim}


def ft_args(r: Runner, sigma: float) -> list[str]:
    p = r.p
    return [f"--model.init_args.sigma={sigma}", f"--model.init_args.optim.group_learning_rates={{hr_classifier: {p['classifier_lr']}}}",
            f"--data.init_args.batch_size={p['ft_batch']}"]


def recorded(results: dict[str, Any], stage: str, name: str) -> dict[str, Any] | None:
    """A finished run of an unfinished stage, recorded in the results JSON with its committed
    weights (so a stage resumes run by run, also on a fresh machine)."""
    rec = results.get("partial", {}).get(stage, {}).get(name)
    return rec if rec and (REPO / rec["weights"]).is_file() else None


def record(r: Runner, results: dict[str, Any], stage: str, rec: dict[str, Any]) -> None:
    results.setdefault("partial", {}).setdefault(stage, {})[rec["name"]] = {k: v for k, v in rec.items() if k != "correct"}
    r.flush()


def stage_ft(r: Runner, results: dict[str, Any], stage: str) -> dict[str, Any]:
    """Ft-1 / Ft-2: PatchDrop fine-tuned from the previous stage (3 seeds; at Ft-1 the sigma is
    chosen on seed 0 among ``ft_sigmas``: validation S in the target range, then the best
    validation accuracy), and the baselines fine-tuned on their own masks at floor / ceil of
    PatchDrop's mean validation S (seed 0), the best baseline at the ceil with all seeds."""
    p, c = r.p, results["stages"]["classifiers"]
    hr_w = c["hr"]["weights"]
    lr_w = c["lr"]["weights"] if stage == "ft2" else None
    prev = {q["seed"]: q for q in (results["stages"]["pt_seeds"]["runs"] if stage == "ft1" else results["stages"]["ft1"]["patchdrop"])}
    bound = results["stages"]["pt_seeds"]["config"].get("explore", {}).get("logit_bound")

    def run_pd(seed: int, sigma: float) -> dict[str, Any]:
        name = f"{stage}_sigma{sigma:g}_seed{seed}"
        if rec := recorded(results, stage, name):
            g = greedy_eval(load_model(hr=hr_w, stage=rec["weights"], lr=lr_w, logit_bound=bound), r)
            print(f"[{name}] recorded before, re-evaluated: test acc {g['acc']:.2f} (recorded {rec['acc']:.2f})", flush=True)
            return {**rec, "correct": g["correct"]}
        out = fit_patchdrop_ft(r, results, name, stage=stage, hr_w=hr_w, start_w=prev[seed]["weights"], seed=seed, sigma=sigma, lr_w=lr_w)
        record(r, results, stage, out)
        return out

    # sigma per stage, on seed 0: validation S inside the target range, then the best validation accuracy
    sweep = [run_pd(p["seeds"][0], sg) for sg in p["ft_sigmas"]]
    lo, hi = p["s_range"]
    inside = [q for q in sweep if lo <= q["val_S"] <= hi]
    pick = max(inside, key=lambda q: q["val_acc"]) if inside else min(sweep, key=lambda q: abs(q["val_S"] - (lo + hi) / 2))
    sigma = pick["sigma"]
    pd_runs = [pick] + [run_pd(sd, sigma) for sd in p["seeds"][1:]]
    pd_correct = [q.pop("correct") for q in pd_runs]
    for q in sweep:
        q.pop("correct", None)
    s_val = sum(q["val_S"] for q in pd_runs) / len(pd_runs)

    # baselines fine-tuned on their own masks
    stn = results["stages"]["stn_pt"]["runs"]

    def run_base(rule: str, s: int, seed: int) -> dict[str, Any]:
        kind = {"top_s": "saliency"}.get(rule, rule)
        name = f"{stage}_{kind}_S{s}_seed{seed}"
        if rec := recorded(results, stage, name):
            model = load_model(hr=hr_w, stage=rec["weights"], lr=lr_w)
            test = curve(model, "test", r, rule, [s], seed=seed)[0]
            print(f"[{name}] recorded before, re-evaluated: test acc {test['acc']:.2f} (recorded {rec['acc']:.2f})", flush=True)
            return {**rec, "correct": test["correct"]}
        pt_start = stn[str(seed)]["weights"] if rule == "top_s" else None
        ft1_start = results["stages"]["ft1"]["baseline_weights"].get(f"{kind}_seed{seed}") if stage == "ft2" else None
        # Ft-2 continues the rule's own Ft-1 run (at Ft-1's ceil S) when there is one for this seed, else starts as at Ft-1
        out = {**fit_baseline_ft(r, name, rule, s, stage=stage, hr_w=hr_w, start_w=ft1_start or pt_start, seed=seed, sigma=sigma, lr_w=lr_w),
               "start": "Ft-1 run" if ft1_start else "Pt start"}
        record(r, results, stage, out)
        return out

    floor_s, ceil_s = int(s_val // 1), min(16, int(-(-s_val // 1)))
    base = [run_base(rule, s, p["seeds"][0]) for rule in RULE_LABEL for s in sorted({floor_s, ceil_s})]
    at_ceil = [q for q in base if q["S"] == ceil_s]
    best = max(at_ceil, key=lambda q: q["val_acc"])  # chosen on validation
    best_rule = next(k for k, v in RULE_LABEL.items() if v == best["method"])
    base += [run_base(best_rule, ceil_s, sd) for sd in p["seeds"][1:]]
    best_runs = [q for q in base if q["method"] == best["method"] and q["S"] == ceil_s]
    # every seed-0 baseline against all PatchDrop seeds (paired on the test images; CI over PatchDrop's seeds)
    comparison = {q["method"] + f"@{q['S']}": compare(pd_correct, [q["correct"]] * len(pd_correct)) for q in base if q["seed"] == p["seeds"][0]}
    comparison["best_ceil_all_seeds"] = {"method": best["method"], "S": ceil_s, **compare(pd_correct, [q["correct"] for q in best_runs])}
    for q in base:
        q.pop("correct")
    out = {"sigma": sigma, "sigma_sweep": sweep, "patchdrop": pd_runs, "val_S": round(s_val, 3),
           "floor_S": floor_s, "ceil_S": ceil_s,
           "acc": mean_ci([q["acc"] for q in pd_runs]), "S": mean_ci([q["S"] for q in pd_runs]), "baselines": base,
           "best_baseline": best["method"], "best_baseline_acc": mean_ci([q["acc"] for q in best_runs]), "comparison": comparison}
    if stage == "ft1":  # the Ft-2 baselines continue from their Ft-1 run at the ceil
        out["baseline_weights"] = {f"{ {'top_s': 'saliency'}.get(k, k)}_seed{q['seed']}": q["weights"]
                                   for q in base for k, v in RULE_LABEL.items() if v == q["method"] and q["S"] == ceil_s}
    return out


def stage_ft1(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    return stage_ft(r, results, "ft1")


def stage_ft2(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    return stage_ft(r, results, "ft2")


def stage_timing(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """Median training-step time (B = 256, bf16 autocast + channels_last) of Pt, Ft-1 and Ft-2
    through the task's own ``training_step`` pieces, and the epoch time of every stage's runs."""
    from lr_lightning.methods.patchdrop import PatchDrop

    g = torch.Generator().manual_seed(0)
    batch = 256
    hr = torch.rand(batch, 3, 32, 32, generator=g)
    lr = torch.nn.functional.interpolate(hr, size=(8, 8), mode="nearest")
    y = torch.randint(0, 10, (batch,), generator=g)
    out: dict[str, Any] = {"batch": batch}
    import warnings

    for stage in ("pt", "ft1", "ft2"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            task = PatchDrop(hr_classifier=CifarResNet(32, 10), policy=CifarResNet(8, 16),
                             lr_classifier=CifarResNet(32, 10) if stage == "ft2" else None, stage=stage)
            task.configure_models()
        task.train()
        model = task.model.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam([q for q in task.parameters() if q.requires_grad], lr=1e-4)

        def step(model: nn.Module = model, opt: torch.optim.Optimizer = opt, stage: str = stage) -> None:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                x = model.normalize(hr)
                lr_logits = model.lr_logits(lr, hr.shape[-2:])
                loss, _ = model.reinforce_step(x, lr, y, lr_logits=lr_logits, alpha=0.8, sigma=0.5, train_classifier=stage != "pt")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        out[stage] = {"step_ms": round(median_time(step, repeats=5 if r.profile == "smoke" else 15, warmup=2) * 1e3, 1)}
        print(f"[timing] {stage} step {out[stage]['step_ms']:.1f} ms", flush=True)
    out["ft2_over_ft1_step"] = round(out["ft2"]["step_ms"] / out["ft1"]["step_ms"], 3)
    # whole epochs through the CLI (training loop, validation, checkpointing), timed alone: fits of
    # n and 2n batches; per step = the difference / n, the rest = start-up + validation
    n = 3 if r.profile == "smoke" else 20
    steps_per_epoch = 70  # 18k training images / batch 256
    cfgs = {"pt": ("cifar10_pt.yaml", []), "ft1": ("cifar10_ft1.yaml", []),
            "ft2": ("cifar10_ft2.yaml", [f"--model.init_args.lr_checkpoint={REPO / results['stages']['classifiers']['lr']['weights']}"])}
    hr_w = REPO / results["stages"]["classifiers"]["hr"]["weights"]
    for stage, (config, extra) in cfgs.items():
        walls = []
        for k in (n, 2 * n):
            cli = cli_main(["--config", str(CFG / config), *r.args(f"timing_{stage}_{k}", 1, 0), f"--trainer.limit_train_batches={k}",
                            f"--model.init_args.hr_checkpoint={hr_w}", "--data.init_args.batch_size=256", *extra], run=False)
            t0 = time.perf_counter()
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
            walls.append(time.perf_counter() - t0)
        per_step = (walls[1] - walls[0]) / n
        rest = walls[0] - n * per_step
        out[stage].update({"fit_step_ms": round(per_step * 1e3, 1), "startup_plus_validation_s": round(rest, 1),
                           "epoch_s": round(steps_per_epoch * per_step + rest, 1)})
        print(f"[timing] {stage} fit: {per_step * 1e3:.0f} ms / step, start-up + validation {rest:.1f} s", flush=True)
    out["ft2_over_ft1_epoch"] = round(out["ft2"]["epoch_s"] / out["ft1"]["epoch_s"], 3)
    return out


def stage_table3(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """Table 3, conditional BagNet (Sec. 6): a PatchBagNet (ResNet8 per 8x8 patch, logits
    averaged) trained on all patches; Fixed-H / Fixed-V / Stochastic masks on it (frozen, every
    S) vs PatchDrop Pt (the claim setting's sigma and learning rate, 3 seeds); Ft-1 of PatchDrop
    (3 seeds) vs the baselines fine-tuned at the ceil of its validation S (seed 0, the best by
    validation with all seeds); inference time of BagNet on all patches vs policy + BagNet on the
    sampled ones (only kept patches are computed) vs ResNet32 on the full image."""
    p = r.p
    seeds = p["seeds"]
    bag = r.fit("bagnet", "cifar10_bagnet.yaml", p["bag_epochs"], [], test=False)
    bag_w = save_weights(bag["checkpoint"], weights_path(r.profile, "bagnet"), ("net.",))
    frozen = load_model(hr=bag_w, bagnet=True)
    full = curve(frozen, "test", r, "fixed_h", [16])[0]
    curves = {rule: points(curve(frozen, "test", r, rule, list(range(17)))) for rule in ("fixed_h", "fixed_v")}
    curves["stochastic"] = {str(sd): points(curve(frozen, "test", r, "stochastic", list(range(17)), seed=sd)) for sd in seeds}
    cfg = results["stages"]["pt_seeds"]["config"]
    explore = [f"--model.init_args.{k}={v}" for k, v in cfg.get("explore", {}).items()]
    sigma_ft = results["stages"]["ft1"]["sigma"] if "ft1" in results["stages"] else p["ft_sigmas"][0]

    def pd_run(stage: str, seed: int, init: str | None) -> dict[str, Any]:
        name = f"bagnet_{stage}_seed{seed}"
        extra = [f"--model.init_args.hr_checkpoint={REPO / bag_w}", f"--model.init_args.optim.learning_rate={cfg['lr']}", *explore]
        if stage == "pt":
            extra += [f"--model.init_args.sigma={cfg['sigma']}", f"--data.init_args.batch_size={p['pt_batch']}"]
        else:
            extra += ["--model.init_args.stage=ft1", f"--model.init_args.init_checkpoint={init}", *ft_args(r, sigma_ft)]
        run = r.fit(name, "cifar10_bagnet_pt.yaml", p["bag_pt_epochs"] if stage == "pt" else p["bag_ft1_epochs"], extra, seed=seed, test=False)
        prefixes = ("model.policy.", "model.policy_updates") + (("model.hr_classifier.",) if stage == "ft1" else ())
        w = save_weights(run["checkpoint"], weights_path(r.profile, name), prefixes, half=stage == "ft1")
        g = greedy_eval(load_model(hr=bag_w, stage=w, bagnet=True), r)
        print(f"[{name}] val S {g['val_S']:.2f}, test S {g['S']:.2f}, test acc {g['acc']:.2f}", flush=True)
        return {"name": name, "seed": seed, "weights": w, "train_s": run["train_s"], "epochs": run["epochs"], **g}

    pt = [pd_run("pt", sd, None) for sd in seeds]
    ft1 = [pd_run("ft1", sd, compose_init(r, f"bagnet_ft1_seed{sd}", hr_w=bag_w, stage_w=q["weights"])) for sd, q in zip(seeds, pt, strict=True)]
    out: dict[str, Any] = {"bagnet_acc": round(full["acc"], 2), "bagnet_train_s": bag["train_s"], "weights": bag_w, "curves_pt": curves}
    for key, runs in (("Pt", pt), ("Ft-1", ft1)):
        correct = [q.pop("correct") for q in runs]
        s_val = sum(q["val_S"] for q in runs) / len(runs)
        ceil_s = min(16, int(-(-s_val // 1)))
        block: dict[str, Any] = {"patchdrop": runs, "acc": mean_ci([q["acc"] for q in runs]), "S": mean_ci([q["S"] for q in runs]),
                                 "val_S": round(s_val, 3), "ceil_S": ceil_s, "baselines": []}
        if key == "Pt":
            for rule in ("fixed_h", "fixed_v", "stochastic"):
                per = [baseline_correct(frozen, r, rule, ceil_s, sd) for sd in seeds] if rule == "stochastic" else [baseline_correct(frozen, r, rule, ceil_s, 0)] * len(seeds)
                block["baselines"].append({"method": RULE_LABEL[rule], "S": ceil_s, "acc": mean_ci([float(c.double().mean() * 100) for c in per]),
                                           "vs_patchdrop": compare(correct, per)})
        else:
            def base_run(rule: str, seed: int, ceil_s: int = ceil_s) -> dict[str, Any]:
                name = f"bagnet_ft1_{rule}_S{ceil_s}_seed{seed}"
                run = r.fit(name, "cifar10_baseline_ft1.yaml", p["bag_ft1_epochs"], [
                    "--model.init_args.hr_classifier=" + json.dumps({"class_path": "lr_lightning.nn.PatchBagNet",
                                                                      "init_args": {"num_classes": 10, "grid": 4, "depth": 8}}),
                    f"--model.init_args.policy_kind={rule}", f"--model.init_args.num_kept={ceil_s}",
                    f"--model.init_args.hr_checkpoint={REPO / bag_w}", *ft_args(r, sigma_ft)], seed=seed, test=False)
                w = save_weights(run["checkpoint"], weights_path(r.profile, name), ("model.hr_classifier.",), half=True)
                model = load_model(hr=bag_w, stage=w, bagnet=True)
                val = curve(model, "val", r, rule, [ceil_s], seed=seed)[0]
                test = curve(model, "test", r, rule, [ceil_s], seed=seed)[0]
                print(f"[{name}] val acc {val['acc']:.2f}, test acc {test['acc']:.2f}", flush=True)
                return {"method": RULE_LABEL[rule], "S": ceil_s, "seed": seed, "val_acc": round(val["acc"], 2), "acc": round(test["acc"], 2),
                        "train_s": run["train_s"], "correct": test["correct"]}

            base = [base_run(rule, seeds[0]) for rule in ("fixed_h", "fixed_v", "stochastic")]
            best = max(base, key=lambda q: q["val_acc"])
            rule = next(k for k, v in RULE_LABEL.items() if v == best["method"])
            best_runs = [best] + [base_run(rule, sd) for sd in seeds[1:]]
            for q in base:
                block["baselines"].append({"method": q["method"], "S": ceil_s, "acc": mean_ci([q["acc"]]),
                                           "vs_patchdrop": compare(correct, [q["correct"]] * len(correct))})
            block["best_baseline"] = {"method": best["method"], "S": ceil_s, "acc": mean_ci([q["acc"] for q in best_runs]),
                                      "vs_patchdrop": compare(correct, [q["correct"] for q in best_runs])}
            for q in best_runs + base:
                q.pop("correct", None)
            block["baseline_runs"] = base + best_runs[1:]
        out[key] = block

    # inference time, B = 256 test images, bf16 autocast
    hr_b, lr_b, _ = eval_batches("test", r.p["limit_eval"])[0]
    hr_b, lr_b = hr_b[:256], lr_b[:256]
    model = load_model(hr=bag_w, stage=ft1[0]["weights"], bagnet=True)
    dense = load_model(hr=results["stages"]["classifiers"]["hr"]["weights"])
    reps = 5 if r.profile == "smoke" else 20
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        x = model.normalize(hr_b)
        t_all = median_time(lambda: model.hr_classifier(x, torch.ones(x.shape[0], 16)), repeats=reps)
        t_cond = median_time(lambda: model.hr_classifier(x, model.test_actions(lr_b)), repeats=reps)
        t_dense = median_time(lambda: dense.hr_classifier(dense.normalize(hr_b)), repeats=reps)
        mean_s = float(model.test_actions(lr_b).sum(1).mean())
    out["runtime_ms"] = {"batch": int(hr_b.shape[0]), "bagnet_all_patches": round(t_all * 1e3, 1), "policy_plus_bagnet_sampled": round(t_cond * 1e3, 1),
                         "resnet32_full_image": round(t_dense * 1e3, 1), "mean_S": round(mean_s, 2), "conditional_over_all": round(t_cond / t_all, 3)}
    print(f"[table3] runtime {out['runtime_ms']}", flush=True)
    return out


def stage_table4(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """Table 4, conditional hard positives (Sec. 7): ResNet32 trained from scratch with no
    augmentation beyond crop + flip, with CutOut, and with PatchDrop hard positives (the
    M ~ U[1, 4] most probable patches of the Ft-1 policy, seed 0, masked), the same epochs,
    3 seeds each; tested on the full original images, paired per seed."""
    p = r.p
    policy_w = results["stages"]["ft1"]["patchdrop"][0]["weights"]
    runs: dict[str, list[dict[str, Any]]] = {}
    correct: dict[str, list[torch.Tensor]] = {}
    for aug in ("none", "cutout", "hard_positive"):
        runs[aug], correct[aug] = [], []
        for seed in p["seeds"]:
            name = f"table4_{aug}_seed{seed}"
            run = r.fit(name, "cifar10_hard_positive.yaml", p["hp_epochs"], [
                f"--model.init_args.augment={aug}", f"--model.init_args.policy_checkpoint={REPO / policy_w}",
                f"--model.init_args.optim.learning_rate={p['hp_lr']}"], seed=seed, test=False)
            net_w = save_weights(run["checkpoint"], r.out / "init" / f"{name}.pt", ("net.",))
            c = curve(load_model(hr=net_w), "test", r, "fixed_h", [16])[0]["correct"]
            correct[aug].append(c)
            runs[aug].append({"seed": seed, "acc": round(float(c.double().mean() * 100), 2), "best_val_acc": round(100 * run["best_val"], 2),
                              "train_s": run["train_s"], "epochs": run["epochs"]})
    label = {"none": "No Augment.", "cutout": "CutOut", "hard_positive": "PatchDrop"}
    rows = [{"augmentation": label[a], "acc": mean_ci([q["acc"] for q in runs[a]]), "per_seed": [q["acc"] for q in runs[a]]} for a in runs]
    return {"epochs": p["hp_epochs"], "init": "from scratch", "rows": rows, "runs": runs,
            "hard_positive_minus_cutout": compare(correct["hard_positive"], correct["cutout"]),
            "hard_positive_minus_none": compare(correct["hard_positive"], correct["none"])}


# -- checks of the Ft-1 gap and of a mask-adapted classifier (seed 0 unless said) ----------------------
def fit_patchdrop_ft(r: Runner, results: dict[str, Any], name: str, *, stage: str, hr_w: str, start_w: str, seed: int, sigma: float,
                     lr_w: str | None = None, extra: tuple[str, ...] = (), epochs: int | None = None) -> dict[str, Any]:
    """One PatchDrop fine-tuning run (``stage`` ft1 / ft2) from the previous stage's weights
    ``start_w`` on the HR classifier ``hr_w`` (+ the LR stream ``lr_w`` at Ft-2), with the Pt claim
    setting's policy learning rate and exploration; ``extra`` CLI overrides come last; ``epochs``
    (default: the profile's for the stage). Returns its greedy point on val / test (with the
    per-image test correctness)."""
    cfg = results["stages"]["pt_seeds"]["config"]
    explore = [f"--model.init_args.{k}={v}" for k, v in cfg.get("explore", {}).items()]
    bound = cfg.get("explore", {}).get("logit_bound")
    lr_stream = [f"--model.init_args.lr_checkpoint={REPO / lr_w}"] if lr_w else []
    epochs = epochs or (r.p["ft1_epochs"] if stage == "ft1" else r.p["ft2_epochs"])
    init = compose_init(r, name, hr_w=hr_w, stage_w=start_w)
    run = r.fit(name, f"cifar10_{stage}.yaml", epochs, [
        f"--model.init_args.init_checkpoint={init}", f"--model.init_args.hr_checkpoint={REPO / hr_w}",
        f"--model.init_args.optim.learning_rate={cfg['lr']}", *explore, *ft_args(r, sigma), *lr_stream, *extra], seed=seed, test=False)
    w = save_weights(run["checkpoint"], weights_path(r.profile, name), ("model.policy.", "model.policy_updates", "model.hr_classifier."), half=True)
    g = greedy_eval(load_model(hr=hr_w, stage=w, lr=lr_w, logit_bound=bound), r)
    print(f"[{name}] val S {g['val_S']:.2f}, val acc {g['val_acc']:.2f}, test S {g['S']:.2f}, test acc {g['acc']:.2f}", flush=True)
    return {"seed": seed, "sigma": sigma, "name": name, "weights": w, "train_s": run["train_s"], "epochs": epochs,
            "val_reward": round(run["best_val"], 4), **g}


def fit_baseline_ft(r: Runner, name: str, rule: str, s: int, *, stage: str, hr_w: str, start_w: str | None, seed: int, sigma: float,
                    lr_w: str | None = None, extra: tuple[str, ...] = (), epochs: int | None = None) -> dict[str, Any]:
    """One baseline fine-tuned on its own masks at S = ``s`` (``stage`` ft1 / ft2) from ``start_w``
    (the STN's Pt saliency net, or a previous fine-tuning; ``None``: the classifier ``hr_w``);
    ``extra`` CLI overrides come last; ``epochs`` (default: the profile's for the stage). Returns
    its validation and test accuracy (with the per-image test correctness)."""
    kind = {"top_s": "saliency"}.get(rule, rule)
    epochs = epochs or (r.p["ft1_epochs"] if stage == "ft1" else r.p["ft2_epochs"])
    start = compose_init(r, name, hr_w=hr_w, stage_w=start_w)
    policy = [f"--model.init_args.policy={RESNET8_POLICY}"] if rule == "top_s" else []
    lr_args = [f"--model.init_args.lr_classifier={RESNET32}", f"--model.init_args.lr_checkpoint={REPO / lr_w}"] if lr_w else []
    run = r.fit(name, "cifar10_baseline_ft1.yaml", epochs, [
        f"--model.init_args.policy_kind={kind}", f"--model.init_args.stage={stage}", f"--model.init_args.num_kept={s}",
        f"--model.init_args.init_checkpoint={start}", f"--model.init_args.hr_checkpoint={REPO / hr_w}", *policy, *lr_args,
        *ft_args(r, sigma), *extra], seed=seed, test=False)
    prefixes = ("model.hr_classifier.", "model.policy.") if rule == "top_s" else ("model.hr_classifier.",)
    w = save_weights(run["checkpoint"], weights_path(r.profile, name), prefixes, half=True)
    model = load_model(hr=hr_w, stage=w, lr=lr_w)
    val, test = curve(model, "val", r, rule, [s], seed=seed)[0], curve(model, "test", r, rule, [s], seed=seed)[0]
    print(f"[{name}] val acc {val['acc']:.2f}, test acc {test['acc']:.2f}", flush=True)
    return {"method": RULE_LABEL[rule], "S": s, "seed": seed, "name": name, "weights": w, "train_s": run["train_s"], "epochs": epochs,
            "val_acc": round(val["acc"], 2), "acc": round(test["acc"], 2), "correct": test["correct"]}


def stage_ft1_checks(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """Two explanations of the Ft-1 gap, checked on seed 0 (validation decides): (1) the
    classifier's fine-tuning rate, chosen per arm from ``classifier_lr`` + ``check_classifier_lrs``
    for PatchDrop and for the best Ft-1 baseline at the ceil S; (2) PatchDrop's classifier trained
    on its greedy (test-time) masks instead of the exploratory samples (``classifier_masks``)."""
    p, ft1 = r.p, results["stages"]["ft1"]
    hr_w = results["stages"]["classifiers"]["hr"]["weights"]
    pt_w = next(q for q in results["stages"]["pt_seeds"]["runs"] if q["seed"] == p["seeds"][0])["weights"]
    best_rule = next(k for k, v in RULE_LABEL.items() if v == ft1["best_baseline"])
    ceil_s = ft1["ceil_S"]
    seed0_pd = next(q for q in ft1["patchdrop"] if q["seed"] == p["seeds"][0])
    seed0_base = next(q for q in ft1["baselines"] if q["method"] == ft1["best_baseline"] and q["S"] == ceil_s and q["seed"] == p["seeds"][0])
    lr_rows = [{"arm": "PatchDrop", "classifier_lr": p["classifier_lr"], "val_S": seed0_pd["val_S"], "val_acc": seed0_pd["val_acc"],
                "S": seed0_pd["S"], "acc": seed0_pd["acc"], "run": seed0_pd["name"] + " (Ft-1 stage)"},
               {"arm": ft1["best_baseline"], "classifier_lr": p["classifier_lr"], "val_S": ceil_s, "val_acc": seed0_base["val_acc"],
                "S": ceil_s, "acc": seed0_base["acc"], "run": seed0_base["name"] + " (Ft-1 stage)"}]
    sd, sigma = p["seeds"][0], ft1["sigma"]
    stn_start = results["stages"]["stn_pt"]["runs"][str(sd)]["weights"] if best_rule == "top_s" else None

    def patchdrop(name: str, extra: tuple[str, ...]) -> dict[str, Any]:
        return fit_patchdrop_ft(r, results, name, stage="ft1", hr_w=hr_w, start_w=pt_w, seed=sd, sigma=sigma, extra=extra)

    for clr in p["check_classifier_lrs"]:
        group = (f"--model.init_args.optim.group_learning_rates={{hr_classifier: {clr}}}",)
        q = patchdrop(f"check_ft1_clr{clr:g}_seed0", group)
        lr_rows.append({"arm": "PatchDrop", "classifier_lr": clr, **{k: q[k] for k in ("val_S", "val_acc", "S", "acc")}, "run": q["name"]})
        b = fit_baseline_ft(r, f"check_ft1_{best_rule}_S{ceil_s}_clr{clr:g}_seed0", best_rule, ceil_s, stage="ft1", hr_w=hr_w,
                            start_w=stn_start, seed=sd, sigma=sigma, extra=group)
        lr_rows.append({"arm": b["method"], "classifier_lr": clr, "val_S": ceil_s, "val_acc": b["val_acc"], "S": ceil_s, "acc": b["acc"], "run": b["name"]})
    # per arm the best validation accuracy; PatchDrop's rate only among runs at validation S <= the baseline's S
    chosen = {arm: max((q for q in lr_rows if q["arm"] == arm and q["val_S"] <= ceil_s), key=lambda q: q["val_acc"])
              for arm in ("PatchDrop", ft1["best_baseline"])}
    greedy = patchdrop("check_ft1_greedy_masks_seed0", ("--model.init_args.classifier_masks=greedy",))
    greedy.pop("correct")
    return {"seed": p["seeds"][0], "classifier_lr_rows": lr_rows,
            "chosen_classifier_lr": {arm: q["classifier_lr"] for arm, q in chosen.items()},
            "gap_at_chosen_lr_val": round(chosen["PatchDrop"]["val_acc"] - chosen[ft1["best_baseline"]]["val_acc"], 2),
            "gap_at_chosen_lr_test": round(chosen["PatchDrop"]["acc"] - chosen[ft1["best_baseline"]]["acc"], 2),
            "S_at_chosen_lr": {arm: q["S"] for arm, q in chosen.items()},
            "greedy_masks": greedy, "sampled_masks": {k: seed0_pd[k] for k in ("name", "val_S", "val_acc", "S", "acc")}}


def stage_adapted(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """Issue #13's optional item, measured: the HR-CNN fine-tuned with random patch dropping
    (``cifar10_classifier_hr_random_patches.yaml``), its full-image accuracy and its accuracy
    under the fixed masks at every S (frozen, against the HR-CNN's); then PatchDrop Pt on it (the
    claim setting of ``pt_sweep``, 3 seeds, plus ``check_policy_samples`` actions per image on
    seed 0) against Fixed-H / Fixed-V on the same classifier at the same S (interpolated at each
    seed's test S; McNemar at the ceil of the mean validation S); and Ft-1 (seed 0) against
    Fixed-H / Fixed-V fine-tuned at the ceil of its validation S."""
    p, c = r.p, results["stages"]["classifiers"]
    run = r.fit("classifier_hr_rp", "cifar10_classifier_hr_random_patches.yaml", p["rp_epochs"],
                [f"--model.init_args.init_checkpoint={REPO / c['hr']['weights']}"])
    rp_w = save_weights(run["checkpoint"], weights_path(r.profile, "classifier_hr_rp"), ("net.",))
    levels = list(range(17))
    frozen: dict[str, Any] = {}
    for tag, hw in (("hr_cnn", c["hr"]["weights"]), ("random_patches", rp_w)):
        model = load_model(hr=hw)
        frozen[tag] = {split: {rule: points(curve(model, split, r, rule, levels)) for rule in ("fixed_h", "fixed_v")} for split in ("val", "test")}
    rp_model = load_model(hr=rp_w)
    cfg = results["stages"]["pt_seeds"]["config"]
    pt = [run_pt(r, results, cfg, sd, hr=rp_w, prefix="rp_", keep_correct=True) for sd in p["seeds"]]
    k = p["check_policy_samples"]
    pt_k = run_pt(r, results, cfg, p["seeds"][0], hr=rp_w, prefix=f"rp_k{k}_", extra=(f"--model.init_args.policy_samples={k}",))
    pd_correct = [q.pop("correct") for q in pt]
    s_val = sum(q["val_S"] for q in pt) / len(pt)
    ceil_s = min(16, int(-(-s_val // 1)))
    vs = {}
    for rule in ("fixed_h", "fixed_v"):
        tc = [(q["S"], q["acc"]) for q in frozen["random_patches"]["test"][rule]]
        base_c = baseline_correct(rp_model, r, rule, ceil_s, 0)
        vs[RULE_LABEL[rule]] = {
            "same_S_interpolated": mean_ci([q["acc"] - interpolate_at(tc, q["S"]) for q in pt]),
            "per_seed_same_S": [round(q["acc"] - interpolate_at(tc, q["S"]), 2) for q in pt],
            f"ceil_S{ceil_s}": compare(pd_correct, [base_c] * len(pd_correct))}
    pt_k_vs = {RULE_LABEL[rule]: round(pt_k["acc"] - interpolate_at([(q["S"], q["acc"]) for q in frozen["random_patches"]["test"][rule]], pt_k["S"]), 2)
               for rule in ("fixed_h", "fixed_v")}
    # Ft-1, seed 0, on the adapted classifier
    sd, sigma = p["seeds"][0], results["stages"]["ft1"]["sigma"]
    ft = fit_patchdrop_ft(r, results, "rp_ft1_seed0", stage="ft1", hr_w=rp_w, start_w=pt[0]["weights"], seed=sd, sigma=sigma)
    ft_ceil = min(16, int(-(-ft["val_S"] // 1)))
    base = [fit_baseline_ft(r, f"rp_ft1_{rule}_S{ft_ceil}_seed0", rule, ft_ceil, stage="ft1", hr_w=rp_w, start_w=None, seed=sd, sigma=sigma)
            for rule in ("fixed_h", "fixed_v")]
    ft_vs = {q["method"] + f"@{ft_ceil}": mcnemar(ft["correct"].numpy(), q["correct"].numpy()) for q in base}
    ft.pop("correct")
    for q in base:
        q.pop("correct")
    return {"classifier": {"weights": rp_w, "epochs": run["epochs"], "train_s": run["train_s"], "acc": round(100 * run["test"]["test/acc"], 2),
                           "best_val_acc": round(100 * run["best_val"], 2)},
            "frozen": frozen, "pt": pt, "pt_acc": mean_ci([q["acc"] for q in pt]), "pt_S": mean_ci([q["S"] for q in pt]),
            "pt_val_S": round(s_val, 3), "pt_vs_fixed": vs, "pt_samples": {"k": k, **pt_k, "vs_fixed_same_S": pt_k_vs},
            "ft1": ft, "ft1_baselines": base, "ft1_vs_fixed": ft_vs}


def stage_adapted_sigmas(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """The other operating points on the random-patch classifier: Pt (seed 0, the claim learning
    rate) at every other sigma of ``pt_sigmas``, each against Fixed-H / Fixed-V on the same
    classifier interpolated at its test S (the claim sigma lands below S = 6 there)."""
    p, a = r.p, results["stages"]["adapted"]
    cfg = results["stages"]["pt_seeds"]["config"]
    rp_w = a["classifier"]["weights"]
    out = []
    for sigma in p["pt_sigmas"]:
        if sigma == cfg["sigma"]:
            continue
        q = run_pt(r, results, {**cfg, "sigma": sigma}, p["seeds"][0], hr=rp_w, prefix="rp_")
        vs = {RULE_LABEL[rule]: round(q["acc"] - interpolate_at([(c["S"], c["acc"]) for c in a["frozen"]["random_patches"]["test"][rule]], q["S"]), 2)
              for rule in ("fixed_h", "fixed_v")}
        out.append({**{k: q[k] for k in ("name", "sigma", "seed", "val_reward", "val_S", "val_acc", "S", "acc", "train_s", "weights")},
                    "minus_fixed_same_S": vs})
    return {"runs": out}


def stage_ft1_longer(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """Is the Ft-1 gap a matter of the fine-tuning budget? Seed 0, Ft-1 for each of
    ``longer_ft1_epochs``: PatchDrop from its Pt policy (the Ft-1 stage's sigma and classifier
    rate) and the Ft-1 stage's best baseline fine-tuned at the floor and the ceil of PatchDrop's
    validation S, the same epochs; PatchDrop minus the baseline interpolated at PatchDrop's test S,
    and McNemar against the ceil. The ``ft1_epochs`` point is the Ft-1 stage's own seed-0 runs."""
    p, ft1 = r.p, results["stages"]["ft1"]
    hr_w = results["stages"]["classifiers"]["hr"]["weights"]
    sd, sigma = p["seeds"][0], ft1["sigma"]
    pt_w = next(q for q in results["stages"]["pt_seeds"]["runs"] if q["seed"] == sd)["weights"]
    best_rule = next(k for k, v in RULE_LABEL.items() if v == ft1["best_baseline"])
    stn_start = results["stages"]["stn_pt"]["runs"][str(sd)]["weights"] if best_rule == "top_s" else None
    keys = ("name", "epochs", "val_S", "val_acc", "S", "acc", "train_s")
    bound = results["stages"]["pt_seeds"]["config"].get("explore", {}).get("logit_bound")

    def point(epochs: int, pd: dict[str, Any], base: list[dict[str, Any]], ceil_test: dict[str, Any] | None) -> dict[str, Any]:
        at = interpolate_at([(float(q["S"]), q["acc"]) for q in base], pd["S"])
        return {"epochs": epochs, "patchdrop": {k: pd[k] for k in keys if k in pd},
                "baselines": [{k: q[k] for k in ("method", "S", "name", "val_acc", "acc", "train_s") if k in q} for q in base],
                "baseline_at_patchdrop_S": round(at, 2), "patchdrop_minus_baseline_same_S": round(pd["acc"] - at, 2),
                "vs_ceil_mcnemar": ceil_test}

    pd0 = next(q for q in ft1["patchdrop"] if q["seed"] == sd)
    base0 = [q for q in ft1["baselines"] if q["method"] == ft1["best_baseline"] and q["seed"] == sd]
    out = [point(p["ft1_epochs"], {**pd0, "epochs": p["ft1_epochs"]}, base0, None)]

    def fitted(name: str, fit: Any, evaluate: Any) -> dict[str, Any]:
        if rec := recorded(results, "ft1_longer", name):  # a run of an unfinished stage, from its committed weights
            return {**rec, "correct": evaluate(rec)}
        q = fit()
        record(r, results, "ft1_longer", q)
        return q

    for epochs in p["longer_ft1_epochs"]:
        pd = fitted(f"longer_ft1_e{epochs}_seed{sd}",
                    lambda e=epochs: fit_patchdrop_ft(r, results, f"longer_ft1_e{e}_seed{sd}", stage="ft1", hr_w=hr_w, start_w=pt_w,
                                                      seed=sd, sigma=sigma, epochs=e),
                    lambda rec: greedy_eval(load_model(hr=hr_w, stage=rec["weights"], logit_bound=bound), r)["correct"])
        levels = sorted({int(pd["val_S"] // 1), min(16, int(-(-pd["val_S"] // 1)))})
        base = [fitted(f"longer_ft1_{best_rule}_S{s}_e{epochs}_seed{sd}",
                       lambda s=s, e=epochs: fit_baseline_ft(r, f"longer_ft1_{best_rule}_S{s}_e{e}_seed{sd}", best_rule, s, stage="ft1",
                                                             hr_w=hr_w, start_w=stn_start, seed=sd, sigma=sigma, epochs=e),
                       lambda rec, s=s: baseline_correct(load_model(hr=hr_w, stage=rec["weights"]), r, best_rule, s, sd))
                for s in levels]
        test = mcnemar(pd["correct"].numpy(), base[-1]["correct"].numpy())
        out.append(point(epochs, pd, base, {"S": base[-1]["S"], **test}))
        print(f"[ft1_longer e{epochs}] PatchDrop {pd['acc']:.2f} at S {pd['S']:.2f}; {ft1['best_baseline']} at the same S "
              f"{out[-1]['baseline_at_patchdrop_S']:.2f} (difference {out[-1]['patchdrop_minus_baseline_same_S']:+.2f})", flush=True)
    return {"seed": sd, "sigma": sigma, "baseline": ft1["best_baseline"], "points": out}


def stage_predictability(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """Does the LR image tell which patches the classifier needs? For each HR classifier (the
    HR-CNN; the random-patch one of ``adapted``), K candidate masks of S patches (Fixed-H,
    Fixed-V and ``oracle_k`` random ones; S = PatchDrop's rounded Pt validation S on that
    classifier): the per-image correctness of every mask on the training, validation and test
    images; then a ResNet8 on the LR image (the policy's network and input) trained by plain
    supervised learning (binary cross-entropy) to predict which masks classify each training
    image right, its most probable mask used per image. This is an upper bound for an
    LR-conditioned choice among those masks learned from far better feedback than REINFORCE's
    (the outcome of every mask for every image). Compared with the best single mask (chosen on
    validation) and the per-image oracle, on test (McNemar, paired)."""
    return {tag: mask_picker(r, tag, hw, s_val, 4)[0] for tag, (hw, s_val) in predictability_arms(results).items()}


def stage_predictability_input(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """Is the 8x8 input the limit? The ``predictability`` picker again, with the same candidate
    masks, targets and training, given the 8x8 LR image (``x4``, the policy's input, again in
    this run so that all inputs share one set of targets), the 16x16 image (nearest x2) and the
    32x32 HR image itself (``x1``: which mask works, predicted from everything the classifier
    sees); each sharper input is compared with the 8x8 picker on the same test images
    (McNemar). If even the HR image does not predict which mask the classifier gets right, no LR
    resolution will. One picker seed per input."""
    out: dict[str, Any] = {}
    for tag, (hw, s_val) in predictability_arms(results).items():
        picks = {}
        for factor in (4, 2, 1):
            q, picks[factor] = mask_picker(r, tag, hw, s_val, factor)
            if factor != 4:
                q["minus_x4_picker"] = mcnemar(picks[factor].numpy(), picks[4].numpy())
            out[f"{tag}_x{factor}"] = q
    return out


def predictability_arms(results: dict[str, Any]) -> dict[str, tuple[str, float]]:
    """The HR classifiers of the predictability stages and PatchDrop's Pt validation S on each."""
    st = results["stages"]
    arms = {"hr_cnn": (st["classifiers"]["hr"]["weights"], st["pt_eval"]["claim"]["val_S"])}
    if "adapted" in st:
        arms["random_patches"] = (st["adapted"]["classifier"]["weights"], st["adapted"]["pt_val_S"])
    return arms


_MASK_CORRECT: dict[tuple[str, int, int | None, int], dict[str, torch.Tensor]] = {}


def mask_picker(r: Runner, tag: str, hw: str, s_val: float, factor: int) -> tuple[dict[str, Any], torch.Tensor]:
    """One picker of the predictability stages: the candidate masks' per-image correctness
    (cached per classifier and S), a ResNet8 trained on the image downsampled by ``factor``
    (nearest; 4 = the benchmark's LR image, 1 = the HR image) to predict it, the epoch chosen on
    validation, and its one mask per test image against the best single mask and the oracle.
    Returns the summary and the picker's per-image test correctness (for paired tests)."""
    p = r.p
    s = int(round(s_val))
    model = load_model(hr=hw)
    cands = [("fixed_h", 0), ("fixed_v", 0)] + [("random", k) for k in range(p["oracle_k"])]
    key = (hw, s, p["limit_eval"], p["oracle_k"])
    if key not in _MASK_CORRECT:
        _MASK_CORRECT[key] = {split: torch.stack([curve(model, split, r, rule, [s], seed=sd)[0]["correct"] for rule, sd in cands], 1)
                              for split in ("train", "val", "test")}
    correct = _MASK_CORRECT[key]
    if factor == 4:  # the benchmark's LR image (nearest x4), as the policy sees it
        inp = {split: torch.cat([b[1] for b in eval_batches(split, p["limit_eval"])]) for split in ("train", "val", "test")}
    else:
        down = Degradation("nearest", factor) if factor > 1 else (lambda x: x)
        inp = {split: torch.cat([down(b[0]) for b in eval_batches(split, p["limit_eval"])]) for split in ("train", "val", "test")}
    torch.manual_seed(0)
    net = CifarResNet(8, len(cands))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    mean, std = model.mean, model.std
    best: tuple[float, dict[str, torch.Tensor]] = (-1.0, {})
    history = []
    for _ in range(p["predict_epochs"]):
        net.train()
        order = torch.randperm(len(inp["train"]))
        for i in range(0, len(order), 256):
            idx = order[i:i + 256]
            logits = net((inp["train"][idx] - mean) / std).float()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, correct["train"][idx].float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            pick = {split: torch.cat([net((x - mean) / std).argmax(1) for x in inp[split].split(1000)]) for split in ("val", "test")}
        chosen = {split: correct[split].gather(1, pick[split][:, None]).squeeze(1) for split in ("val", "test")}
        val_acc = float(chosen["val"].double().mean() * 100)
        history.append(round(val_acc, 2))
        if val_acc > best[0]:  # the epoch is chosen on validation
            best = (val_acc, chosen)
    single_val = correct["val"].double().mean(0) * 100
    j = int(single_val.argmax())
    name = [f"{rule}{sd if rule == 'random' else ''}" for rule, sd in cands]
    pred_test = best[1]["test"]
    out = {"S": s, "K": len(cands), "input_px": int(inp["test"].shape[-1]), "candidates": name, "best_single": name[j],
           "best_single_val_acc": round(float(single_val[j]), 2),
           "best_single_test_acc": round(float(correct["test"][:, j].double().mean() * 100), 2),
           "predicted_val_acc": round(best[0], 2), "predicted_test_acc": round(float(pred_test.double().mean() * 100), 2),
           "oracle_val_acc": round(oracle_accuracy(list(correct["val"].T)), 2), "oracle_test_acc": round(oracle_accuracy(list(correct["test"].T)), 2),
           "train_mask_acc": [round(float(v), 2) for v in correct["train"].double().mean(0) * 100],
           "val_acc_per_epoch": history, "predicted_minus_best_single": mcnemar(pred_test.numpy(), correct["test"][:, j].numpy())}
    print(f"[predictability {tag} x{factor}] S={s}: best single {name[j]} test {out['best_single_test_acc']}, predicted "
          f"{out['predicted_test_acc']}, oracle {out['oracle_test_acc']}", flush=True)
    return out, pred_test


def stage_reward_generalisation(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """Do the Pt rewards generalise? Pt learns from rewards on the training images, on which the
    frozen HR classifier was itself trained, so it may be right there under masks that fail on
    unseen images. For each frozen classifier (the HR-CNN; the random-patch one of ``adapted``)
    and each split (train without augmentation, validation, test): the full-image accuracy, the
    Fixed-H / Fixed-V curves at S = ``gap_levels``, and each Pt claim-setting policy (3 seeds) at
    its greedy action: accuracy, mean S and its margin over each fixed mask interpolated at the
    policy's S on the same split. A margin much larger on train than on test says the policy
    learnt where this classifier memorised its training images rather than where the image
    content is. Evaluation only (no training)."""
    p, st = r.p, results["stages"]
    levels = p["gap_levels"]
    bound = st["pt_seeds"]["config"].get("explore", {}).get("logit_bound")
    arms = {"hr_cnn": (st["classifiers"]["hr"]["weights"], [q["weights"] for q in st["pt_seeds"]["runs"]])}
    if "adapted" in st:
        arms["random_patches"] = (st["adapted"]["classifier"]["weights"], [q["weights"] for q in st["adapted"]["pt"]])
    out: dict[str, Any] = {}
    for tag, (hw, policies) in arms.items():
        dense = load_model(hr=hw)
        splits: dict[str, Any] = {}
        for split in ("train", "val", "test"):
            full = curve(dense, split, r, "fixed_h", [16])[0]["acc"]
            fixed = {RULE_LABEL[rule]: points(curve(dense, split, r, rule, levels)) for rule in ("fixed_h", "fixed_v")}
            pols = []
            for w in policies:
                g = curve(load_model(hr=hw, stage=w, logit_bound=bound), split, r, "threshold", [0.5])[0]
                s, acc = round(g["mean_S"], 3), round(g["acc"], 2)
                pols.append({"weights": w, "S": s, "acc": acc,
                             "minus_fixed_same_S": {m: round(acc - interpolate_at([(c["S"], c["acc"]) for c in fc], s), 2) for m, fc in fixed.items()}})
            splits[split] = {"full_image_acc": round(full, 2), "fixed": fixed, "policies": pols,
                             "patchdrop_acc": mean_ci([q["acc"] for q in pols]), "patchdrop_S": mean_ci([q["S"] for q in pols]),
                             "minus_fixed_same_S": {m: mean_ci([q["minus_fixed_same_S"][m] for q in pols]) for m in fixed}}
            print(f"[reward_generalisation {tag} {split}] full {full:.2f}, PatchDrop {splits[split]['patchdrop_acc']['mean']:.2f} at S "
                  f"{splits[split]['patchdrop_S']['mean']:.2f}, minus Fixed-H {splits[split]['minus_fixed_same_S']['Fixed-H']['mean']:+.2f}, "
                  f"minus Fixed-V {splits[split]['minus_fixed_same_S']['Fixed-V']['mean']:+.2f}", flush=True)
        out[tag] = splits
    return out


def stage_table4_longer(r: Runner, results: dict[str, Any]) -> dict[str, Any]:
    """Is Table 4's ordering (no augmentation ahead of CutOut and hard positives after
    ``hp_epochs``) a matter of the short budget? CutOut and hard positives trained from scratch
    for ``hr_epochs`` (seed 0), the HR-CNN's hyper-parameters and budget: the no-augmentation arm
    *is* the HR-CNN (same ResNet32, SGD 0.1 + cosine, crop + flip, batch 128, bf16, seed 0, best
    epoch on validation), not trained again; it was trained by an earlier code version (before
    the resumable sampler), so its data order is not the one a seed-0 run draws today, and its
    weights are fp32 where the new arms' are stored in fp16. One seed:
    McNemar on the same test images measures test-sampling noise only, not the seed-to-seed
    spread (several points at 10 epochs)."""
    p, st = r.p, results["stages"]
    hr_w = st["classifiers"]["hr"]["weights"]
    policy_w = st["ft1"]["patchdrop"][0]["weights"]  # Table 4's policy: PatchDrop Ft-1, seed 0
    sd, epochs = p["seeds"][0], p["hr_epochs"]
    none_correct = curve(load_model(hr=hr_w), "test", r, "fixed_h", [16])[0]["correct"]
    out: dict[str, Any] = {"epochs": epochs, "seed": sd, "none": {"weights": hr_w, "acc": round(float(none_correct.double().mean() * 100), 2),
                                                                 "best_val_acc": round(100 * st["classifiers"]["hr"]["best_val"], 2)}}
    correct = {"none": none_correct}
    for aug in ("cutout", "hard_positive"):
        name = f"table4_{aug}_e{epochs}_seed{sd}"
        if not (rec := recorded(results, "table4_longer", name)):
            run = r.fit(name, "cifar10_hard_positive.yaml", epochs, [
                f"--model.init_args.augment={aug}", f"--model.init_args.policy_checkpoint={REPO / policy_w}",
                f"--model.init_args.optim.learning_rate={p['hp_lr']}"], seed=sd, test=False)
            w = save_weights(run["checkpoint"], weights_path(r.profile, name), ("net.",), half=True)
            rec = {"name": name, "weights": w, "best_val_acc": round(100 * run["best_val"], 2), "train_s": run["train_s"], "epochs": epochs}
            record(r, results, "table4_longer", rec)
        correct[aug] = curve(load_model(hr=rec["weights"]), "test", r, "fixed_h", [16])[0]["correct"]
        out[aug] = {**rec, "acc": round(float(correct[aug].double().mean() * 100), 2)}
        print(f"[table4_longer {aug}] {epochs} epochs: test {out[aug]['acc']:.2f} % (no augmentation, the HR-CNN: {out['none']['acc']:.2f} %)",
              flush=True)
    out["hard_positive_minus_cutout"] = mcnemar(correct["hard_positive"].numpy(), correct["cutout"].numpy())
    out["hard_positive_minus_none"] = mcnemar(correct["hard_positive"].numpy(), correct["none"].numpy())
    out["cutout_minus_none"] = mcnemar(correct["cutout"].numpy(), correct["none"].numpy())
    return out


# -- output ------------------------------------------------------------------------------------------
def top_level(results: dict[str, Any]) -> dict[str, Any]:
    """The fields the issue names: ``rows`` (one per method, stage, operating point and seed)
    and ``hr_cnn_acc``, from the stages run so far."""
    st = results["stages"]
    rows: list[dict[str, Any]] = []
    out: dict[str, Any] = {"rows": rows}
    if "classifiers" in st:
        out["hr_cnn_acc"] = st["classifiers"]["hr"]["acc"]
        out["lr_cnn_acc"] = st["classifiers"]["lr"]["acc"]
    if "pt_eval" in st:
        claim = st["pt_eval"]["claim"]
        claim_names = {q["name"] for q in st["pt_seeds"]["runs"]}
        for q in st["pt_eval"]["points"]:
            rows.append({"method": "PatchDrop", "stage": "Pt", "S": q["S"], "acc": q["acc"], "seed": q["seed"], "sigma": q["sigma"],
                         "run": q["name"], "claim": q["name"] in claim_names})
        for b in claim["baselines"]:
            if b["which"] == "interpolated":
                continue
            seeds = b["seeds"] if b["method"] in ("Stochastic", "STN") else b["seeds"][:1]  # fixed masks: no training, no draw
            rows += [{"method": b["method"], "stage": "Pt", "S": float(b["S"]), "acc": a, "seed": sd, "operating_point": b["which"]}
                     for sd, a in zip(seeds, b["per_seed_acc"], strict=False)]
    for key, label in (("ft1", "Ft-1"), ("ft2", "Ft-2")):
        if key in st:
            rows += [{"method": "PatchDrop", "stage": label, "S": q["S"], "acc": q["acc"], "seed": q["seed"], "sigma": q["sigma"]}
                     for q in st[key]["patchdrop"]]
            rows += [{"method": q["method"], "stage": label, "S": float(q["S"]), "acc": q["acc"], "seed": q["seed"],
                      "operating_point": "floor" if q["S"] == st[key]["floor_S"] else "ceil"} for q in st[key]["baselines"]]
    if "adapted" in st:  # the same rows on the HR classifier trained with random patch dropping
        a = st["adapted"]
        rp = {"hr_classifier": "random_patches"}
        rows += [{"method": "PatchDrop", "stage": "Pt", "S": q["S"], "acc": q["acc"], "seed": q["seed"], "sigma": q["sigma"], **rp} for q in a["pt"]]
        ceil_key = next(k for k in a["pt_vs_fixed"]["Fixed-H"] if k.startswith("ceil_S"))
        for label, rule in (("Fixed-H", "fixed_h"), ("Fixed-V", "fixed_v")):
            sv = int(ceil_key[len("ceil_S"):])
            rows.append({"method": label, "stage": "Pt", "S": float(sv), "acc": a["frozen"]["random_patches"]["test"][rule][sv]["acc"], "seed": 0,
                         "operating_point": "ceil", **rp})
        rows += [{"method": "PatchDrop", "stage": "Pt", "S": q["S"], "acc": q["acc"], "seed": q["seed"], "sigma": q["sigma"], **rp}
                 for q in st.get("adapted_sigmas", {}).get("runs", [])]
        rows.append({"method": "PatchDrop", "stage": "Ft-1", "S": a["ft1"]["S"], "acc": a["ft1"]["acc"], "seed": 0, **rp})
        rows += [{"method": q["method"], "stage": "Ft-1", "S": float(q["S"]), "acc": q["acc"], "seed": 0, "operating_point": "ceil", **rp}
                 for q in a["ft1_baselines"]]
    for q in st.get("ft1_longer", {}).get("points", [])[1:]:  # the first point is the Ft-1 stage's own seed-0 runs
        tag = {"ft_epochs": q["epochs"], "check": "ft1_longer"}
        rows.append({"method": "PatchDrop", "stage": "Ft-1", "S": q["patchdrop"]["S"], "acc": q["patchdrop"]["acc"], "seed": st["ft1_longer"]["seed"],
                     "sigma": st["ft1_longer"]["sigma"], **tag})
        rows += [{"method": b["method"], "stage": "Ft-1", "S": float(b["S"]), "acc": b["acc"], "seed": st["ft1_longer"]["seed"],
                  "operating_point": "ceil" if b is q["baselines"][-1] else "floor", **tag} for b in q["baselines"]]
    for row in rows:
        row.setdefault("hr_classifier", "hr_cnn")
    out["claim_check"] = claim_check(results)
    return out


def claim_check(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's done criterion per stage: PatchDrop's mean beats every baseline at the same or
    larger S (the ceil of its S) by >= 1 point and by more than the 95 % CI of the difference,
    at S <= 9, within 3 points of the HR-CNN."""
    st = results["stages"]
    out: dict[str, Any] = {}
    if "classifiers" not in st:
        return out
    hr = st["classifiers"]["hr"]["acc"]

    def verdict(acc: float, s: float, baseline_s: int, diffs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        worst = min(diffs.items(), key=lambda kv: kv[1]["mean"])
        # a difference without an interval (one seed) cannot pass "more than the 95 % CI"
        ok_diff = all(d["mean"] >= 1.0 and not math.isnan(d["ci95"]) and d["mean"] > d["ci95"] for d in diffs.values())
        return {"patchdrop_acc": round(acc, 2), "patchdrop_S": round(s, 2), "baseline_S": baseline_s, "baseline_S_ge_patchdrop_S": baseline_s >= s,
                "S_le_9": s <= 9, "hr_gap": round(hr - acc, 2), "within_3_of_hr": hr - acc <= 3, "smallest_margin": {"vs": worst[0], **worst[1]},
                "margins_ok": ok_diff, "met": ok_diff and baseline_s >= s and s <= 9 and hr - acc <= 3,
                "failing": sorted(k for k, d in diffs.items() if not (d["mean"] >= 1.0 and not math.isnan(d["ci95"]) and d["mean"] > d["ci95"])),
                "margins": {k: {"mean": round(d["mean"], 2), "ci95": round(d["ci95"], 2)} for k, d in diffs.items()}}

    if "pt_eval" in st:
        c = st["pt_eval"]["claim"]
        diffs = {f"{b['method']}@{b['S']}": b["vs_patchdrop"]["diff"] for b in c["baselines"] if b["which"] == "ceil"}
        ceil_s = next(b["S"] for b in c["baselines"] if b["which"] == "ceil")
        out["Pt"] = verdict(c["acc"]["mean"], c["S"]["mean"], ceil_s, diffs)
        # the same criterion against the baselines' curves interpolated at each PatchDrop seed's own
        # test S (its S varies between seeds; seed k paired with seed k of a trained / drawn baseline)
        runs = st["pt_seeds"]["runs"]
        s_test = sum(q["S"] for q in runs) / len(runs)
        tc = test_curves(results)
        interp: dict[str, dict[str, Any]] = {}
        for rule, label in RULE_LABEL.items():
            v = tc[rule]
            per_seed = [v[str(q["seed"])] for q in runs] if isinstance(v, dict) else [v] * len(runs)
            d = [q["acc"] - interpolate_at([(pt["S"], pt["acc"]) for pt in cv], q["S"]) for q, cv in zip(runs, per_seed, strict=True)]
            interp[f"{label} at each seed's S"] = mean_ci(d)
        out["Pt at the same S (interpolated)"] = verdict(c["acc"]["mean"], c["S"]["mean"], -1, interp) | {"baseline_S": round(s_test, 2),
                                                                                                          "baseline_S_ge_patchdrop_S": True}
        v = out["Pt at the same S (interpolated)"]
        v["met"] = v["margins_ok"] and v["S_le_9"] and v["within_3_of_hr"]
    for key, label in (("ft1", "Ft-1"), ("ft2", "Ft-2")):
        if key in st:
            f = st[key]
            diffs = {k: v["diff"] for k, v in f["comparison"].items() if k != "best_ceil_all_seeds" and k.endswith(f"@{f['ceil_S']}")}
            best = f["comparison"]["best_ceil_all_seeds"]
            diffs[f"{best['method']}@{best['S']} (all seeds)"] = best["diff"]
            out[label] = verdict(f["acc"]["mean"], f["S"]["mean"], f["ceil_S"], diffs)
    return out


def ci(d: dict[str, Any]) -> str:
    return f"{d['mean']:.2f} ± {d['ci95']:.2f}" if not math.isnan(d.get("ci95", float("nan"))) else f"{d['mean']:.2f}"


def markdown(results: dict[str, Any]) -> str:
    st = results["stages"]
    lines = [f"Profile `{results['profile']}`: {results['settings']}\n",
             "Stage wall seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in results["stage_wall_s"].items()) + "\n",
             "Test accuracy (%) on the 10k CIFAR-10 test images; every choice made on the validation split; "
             "± = 95 % t-interval over seeds; McNemar p per seed on the same test images.\n"]
    if "classifiers" in st:
        c = st["classifiers"]
        lines.append(f"- HR-CNN (ResNet32, {c['hr']['epochs']} epochs): test accuracy {c['hr']['acc']:.2f} %; "
                     f"LR-CNN (from HR, {c['lr']['epochs']} epochs): {c['lr']['acc']:.2f} %\n")
    if "curves_pt" in st:
        cp = st["curves_pt"]
        lines.append("## Headroom: oracle over K fixed masks vs the best single one (frozen HR classifier)\n")
        lines.append(markdown_table(cp["headroom"], ["split", "S", "K", "best_single", "best_single_acc", "oracle_acc"]))
        tc = test_curves(results) if "stn_pt" in st else {k: v for k, v in cp["test"].items()}
        rows = []
        for sv in range(17):
            row: dict[str, Any] = {"S": sv}
            for rule, label in RULE_LABEL.items():
                if rule not in tc:
                    continue
                v = tc[rule]
                if isinstance(v, dict):
                    row[label] = ci(mean_ci([cv[sv]["acc"] for cv in v.values()]))
                else:
                    row[label] = v[sv]["acc"]
            rows.append(row)
        lines.append("## Pt frontier: the frozen HR classifier under each rule, test accuracy at every S\n")
        lines.append(markdown_table(rows, ["S", *[v for k, v in RULE_LABEL.items() if k in tc]]))
    if "pt_sweep" in st:
        sw = st["pt_sweep"]
        lines.append(f"## Pt sweep (seed 0): chosen per sigma {sw['chosen_per_sigma']}; claim setting {sw['claim']}\n")
        rows = [{**{k: q.get(k) for k in ("name", "sigma", "val_reward", "val_S", "val_acc", "S", "acc", "train_s")},
                 "lr": f"{q['lr']:g}", "explore": q.get("explore", {})} for q in sw["runs"]]
        lines.append(markdown_table(rows, ["name", "sigma", "lr", "explore", "val_reward", "val_S", "val_acc", "S", "acc", "train_s"]))
    if "pt_eval" in st:
        lines.append(claim_markdown("Pt (frozen HR classifier)", st["pt_eval"]["claim"]["acc"], st["pt_eval"]["claim"]["S"],
                                    st["pt_eval"]["claim"]["baselines"], None))
    for key, label in (("ft1", "Ft-1"), ("ft2", "Ft-2")):
        if key in st:
            f = st[key]
            lines.append(f"## {label}: PatchDrop sigma {f['sigma']} (sweep on seed 0: "
                         + ", ".join(f"sigma {q['sigma']}: val S {q['val_S']}, val acc {q['val_acc']}" for q in f["sigma_sweep"]) + ")\n")
            lines.append(markdown_table(f["patchdrop"], ["name", "seed", "sigma", "val_S", "val_acc", "S", "acc", "train_s"]))
            lines.append(markdown_table(f["baselines"], ["method", "S", "seed", "start", "val_acc", "acc", "train_s"]))
            comp = [{"vs": k, "diff": ci(v["diff"]), "McNemar p": ", ".join(f"{t['p']:.2g}" for t in v["mcnemar"])} for k, v in f["comparison"].items()]
            lines.append(f"PatchDrop {ci(f['acc'])} % at S {ci(f['S'])}; best baseline by validation at the ceil: {f['best_baseline']} "
                         f"{ci(f['best_baseline_acc'])} %\n")
            lines.append(markdown_table(comp, ["vs", "diff", "McNemar p"]))
    cc = claim_check(results)
    if cc:
        lines.append("## Done criterion (issue): beat every baseline at the same or larger S by >= 1 point and > CI, S <= 9, within 3 of HR-CNN\n")
        lines.append(markdown_table([{"stage": k, **{kk: (str(vv) if isinstance(vv, dict) else vv) for kk, vv in v.items()}} for k, v in cc.items()],
                                    ["stage", "patchdrop_acc", "patchdrop_S", "baseline_S", "baseline_S_ge_patchdrop_S", "hr_gap", "margins_ok",
                                     "S_le_9", "within_3_of_hr", "met", "failing"]))
        lines.append("Margins (PatchDrop minus baseline, points, mean ± 95 % CI over seeds):\n")
        lines.append(markdown_table([{"stage": k, "vs": b, "margin": f"{m['mean']:.2f} ± {m['ci95']:.2f}"} for k, v in cc.items()
                                     for b, m in v["margins"].items()], ["stage", "vs", "margin"]))
    if "ft1_checks" in st:
        fc = st["ft1_checks"]
        lines.append(f"## Ft-1 checks (seed {fc['seed']}): classifier learning rate per arm, chosen on validation "
                     f"{fc['chosen_classifier_lr']} (PatchDrop among runs at val S <= the baseline's); PatchDrop minus baseline at the chosen rates: "
                     f"val {fc['gap_at_chosen_lr_val']}, test {fc['gap_at_chosen_lr_test']} (test S {fc['S_at_chosen_lr']})\n")
        lines.append(markdown_table([{**q, "classifier_lr": f"{q['classifier_lr']:g}"} for q in fc["classifier_lr_rows"]],
                                    ["arm", "classifier_lr", "val_S", "val_acc", "S", "acc", "run"]))
        g, sm = fc["greedy_masks"], fc["sampled_masks"]
        lines.append(f"PatchDrop's classifier on its greedy (test-time) masks instead of the samples: val acc {g['val_acc']} at val S "
                     f"{g['val_S']} (samples: {sm['val_acc']} at {sm['val_S']}); test {g['acc']} at S {g['S']} (samples: {sm['acc']} at {sm['S']})\n")
    if "adapted" in st:
        a = st["adapted"]
        cl = a["classifier"]
        lines.append(f"## HR classifier trained with random patch dropping ({cl['epochs']} epochs from the HR-CNN): full-image test "
                     f"accuracy {cl['acc']:.2f} % (HR-CNN {st['classifiers']['hr']['acc']:.2f} %)\n")
        fz = a["frozen"]
        rows = [{"S": sv, **{f"{lab} {tag}": fz[tag]["test"][rule][sv]["acc"] for rule, lab in (("fixed_h", "Fixed-H"), ("fixed_v", "Fixed-V"))
                             for tag in ("hr_cnn", "random_patches")}} for sv in range(17)]
        lines.append("Frozen classifiers under the fixed masks, test accuracy:\n")
        lines.append(markdown_table(rows, ["S", "Fixed-H hr_cnn", "Fixed-H random_patches", "Fixed-V hr_cnn", "Fixed-V random_patches"]))
        lines.append(f"Pt on it (claim setting, {len(a['pt'])} seeds): PatchDrop {ci(a['pt_acc'])} % at S {ci(a['pt_S'])}\n")
        lines.append(markdown_table(a["pt"], ["name", "seed", "val_reward", "val_S", "val_acc", "S", "acc", "train_s"]))
        vrows = []
        for lab, v in a["pt_vs_fixed"].items():
            ck = next(k for k in v if k.startswith("ceil_S"))
            vrows.append({"vs": lab, "same S (interpolated)": ci(v["same_S_interpolated"]), "per seed": v["per_seed_same_S"],
                          ck: ci(v[ck]["diff"]), "McNemar p": ", ".join(f"{t['p']:.2g}" for t in v[ck]["mcnemar"])})
        lines.append(markdown_table(vrows, list(vrows[0])))
        pk = a["pt_samples"]
        lines.append(f"Pt with {pk['k']} actions per image (seed 0): val reward {pk['val_reward']}, S {pk['S']}, acc {pk['acc']}; minus the fixed "
                     f"masks at the same S: {pk['vs_fixed_same_S']}\n")
        f1 = a["ft1"]
        lines.append(f"Ft-1 on it (seed 0): PatchDrop val {f1['val_acc']} at S {f1['val_S']}, test {f1['acc']} at S {f1['S']}\n")
        lines.append(markdown_table([{**{k: q[k] for k in ("method", "S", "val_acc", "acc", "train_s")},
                                      "PatchDrop minus": round(a["ft1_vs_fixed"][f"{q['method']}@{q['S']}"]["diff"], 2),
                                      "McNemar p": f"{a['ft1_vs_fixed'][q['method'] + '@' + str(q['S'])]['p']:.2g}"} for q in a["ft1_baselines"]],
                                    ["method", "S", "val_acc", "acc", "PatchDrop minus", "McNemar p", "train_s"]))
    if "adapted_sigmas" in st:
        lines.append("Pt on the random-patch classifier at the other sigmas (seed 0), minus the fixed masks at the same S:\n")
        lines.append(markdown_table([{**q, "minus_fixed_same_S": str(q["minus_fixed_same_S"])} for q in st["adapted_sigmas"]["runs"]],
                                    ["name", "sigma", "val_reward", "val_S", "val_acc", "S", "acc", "minus_fixed_same_S", "train_s"]))
    if "predictability" in st:
        lines.append("## Predictability: an LR-image network trained with full supervision to pick, per image, one of K masks the classifier gets right\n")
        lines.append(markdown_table([{"classifier": k, **{kk: v[kk] for kk in ("S", "K", "best_single", "best_single_test_acc", "predicted_test_acc",
                                                                                  "oracle_test_acc")},
                                      "predicted - best single": round(v["predicted_minus_best_single"]["diff"], 2),
                                      "McNemar p": f"{v['predicted_minus_best_single']['p']:.2g}"} for k, v in st["predictability"].items()],
                                    ["classifier", "S", "K", "best_single", "best_single_test_acc", "predicted_test_acc", "predicted - best single",
                                     "McNemar p", "oracle_test_acc"]))
    if "predictability_input" in st:
        pi = st["predictability_input"]
        lines.append("## Predictability from a sharper input: the same picker, targets and masks, given the 8x8 LR image, the 16x16 image "
                     "or the 32x32 HR image (one picker seed each)\n")
        rows = [{"classifier": k.rsplit("_x", 1)[0], "input": f"{v['input_px']}x{v['input_px']}",
                 **{kk: v[kk] for kk in ("S", "K", "best_single", "best_single_test_acc", "predicted_test_acc", "oracle_test_acc")},
                 "predicted - best single": f"{v['predicted_minus_best_single']['diff']:+.2f} (p {v['predicted_minus_best_single']['p']:.2g})",
                 "minus the 8x8 picker": "" if "minus_x4_picker" not in v else
                 f"{v['minus_x4_picker']['diff']:+.2f} (p {v['minus_x4_picker']['p']:.2g})"} for k, v in pi.items()]
        lines.append(markdown_table(sorted(rows, key=lambda q: (q["classifier"], int(q["input"].split("x")[0]))),
                                    ["classifier", "input", "S", "K", "best_single", "best_single_test_acc", "predicted_test_acc",
                                     "predicted - best single", "minus the 8x8 picker", "oracle_test_acc"]))
    if "ft1_longer" in st:
        fl = st["ft1_longer"]
        lines.append(f"## Ft-1 for longer (seed {fl['seed']}, sigma {fl['sigma']:g}): PatchDrop against {fl['baseline']} fine-tuned for the same "
                     "epochs at the floor and ceil of PatchDrop's validation S, interpolated at PatchDrop's test S\n")
        lines.append(markdown_table([{"epochs": q["epochs"], "PatchDrop S": q["patchdrop"]["S"], "PatchDrop acc": q["patchdrop"]["acc"],
                                      "baseline (S: acc)": ", ".join(f"{b['S']}: {b['acc']}" for b in q["baselines"]),
                                      "baseline at PatchDrop's S": q["baseline_at_patchdrop_S"],
                                      "PatchDrop minus": q["patchdrop_minus_baseline_same_S"],
                                      "McNemar vs ceil": "" if q["vs_ceil_mcnemar"] is None else
                                      f"{q['vs_ceil_mcnemar']['diff']:+.2f} (S {q['vs_ceil_mcnemar']['S']}), p {q['vs_ceil_mcnemar']['p']:.2g}",
                                      "PatchDrop train_s": q["patchdrop"].get("train_s")} for q in fl["points"]],
                                    ["epochs", "PatchDrop S", "PatchDrop acc", "baseline (S: acc)", "baseline at PatchDrop's S", "PatchDrop minus",
                                     "McNemar vs ceil", "PatchDrop train_s"]))
    if "reward_generalisation" in st:
        lines.append("## Do the Pt rewards generalise? Frozen classifiers and the Pt claim-setting policies (3 seeds) on the training images "
                     "(no augmentation), validation and test; PatchDrop minus the fixed masks interpolated at its S on the same split\n")
        rows = []
        for tag, splits in st["reward_generalisation"].items():
            for split, v in splits.items():
                fixed_at = {m: {c["S"]: c["acc"] for c in fc} for m, fc in v["fixed"].items()}
                rows.append({"classifier": tag, "split": split, "full image": v["full_image_acc"],
                             "Fixed-H S6 / S9": f"{fixed_at['Fixed-H'].get(6, '')} / {fixed_at['Fixed-H'].get(9, '')}",
                             "PatchDrop S": ci(v["patchdrop_S"]), "PatchDrop acc": ci(v["patchdrop_acc"]),
                             "minus Fixed-H": ci(v["minus_fixed_same_S"]["Fixed-H"]), "minus Fixed-V": ci(v["minus_fixed_same_S"]["Fixed-V"])})
        lines.append(markdown_table(rows, ["classifier", "split", "full image", "Fixed-H S6 / S9", "PatchDrop S", "PatchDrop acc",
                                           "minus Fixed-H", "minus Fixed-V"]))
        lines.append("The same policies' margin on the training images minus their margin on val / test, paired per seed "
                     "(mean ± 95 % CI over seeds):\n")
        rows = []
        for tag, splits in st["reward_generalisation"].items():
            for m in ("Fixed-H", "Fixed-V"):
                train = [q["minus_fixed_same_S"][m] for q in splits["train"]["policies"]]
                row = {"classifier": tag, "vs": m}
                for other in ("val", "test"):
                    row[f"train minus {other}"] = ci(mean_ci([a - b for a, b in zip(train, [q["minus_fixed_same_S"][m] for q in splits[other]["policies"]],
                                                                                     strict=True)]))
                rows.append(row)
        lines.append(markdown_table(rows, ["classifier", "vs", "train minus val", "train minus test"]))
    if "timing" in st:
        lines.append(f"## Timing\n\n{st['timing']}\n")
    if "table3" in st:
        t3 = st["table3"]
        lines.append(f"## Table 3: conditional BagNet (BagNet on all patches: {t3['bagnet_acc']:.2f} %)\n")
        rows = []
        for key in ("Pt", "Ft-1"):
            b = t3[key]
            rows.append({"stage": key, "method": "BagNet (PatchDrop)", "S": ci(b["S"]), "acc": ci(b["acc"])})
            for q in b["baselines"] + ([b["best_baseline"] | {"method": b["best_baseline"]["method"] + " (3 seeds)"}] if "best_baseline" in b else []):
                rows.append({"stage": key, "method": q["method"], "S": q["S"], "acc": ci(q["acc"]), "PatchDrop - baseline": ci(q["vs_patchdrop"]["diff"]),
                             "McNemar p": ", ".join(f"{t['p']:.2g}" for t in q["vs_patchdrop"]["mcnemar"])})
        lines.append(markdown_table(rows, ["stage", "method", "S", "acc", "PatchDrop - baseline", "McNemar p"]))
        lines.append(f"Inference (ms, bf16, median): {t3['runtime_ms']}\n")
    if "table4" in st:
        t4 = st["table4"]
        lines.append(f"## Table 4: hard positives, ResNet32 from scratch, {t4['epochs']} epochs, 3 seeds\n")
        lines.append(markdown_table([{"augmentation": q["augmentation"], "acc": ci(q["acc"]), "per seed": q["per_seed"]} for q in t4["rows"]],
                                    ["augmentation", "acc", "per seed"]))
        for k in ("hard_positive_minus_cutout", "hard_positive_minus_none"):
            lines.append(f"- {k}: {ci(t4[k]['diff'])} points, McNemar p " + ", ".join(f"{t['p']:.2g}" for t in t4[k]["mcnemar"]))
        lines.append("")
        if "table4_longer" in st:
            tl = st["table4_longer"]
            lines.append(f"Longer (seed {tl['seed']}, {tl['epochs']} epochs, the HR-CNN's recipe; the no-augmentation arm is the HR-CNN itself): "
                         f"No Augment. {tl['none']['acc']:.2f} %, CutOut {tl['cutout']['acc']:.2f} %, PatchDrop {tl['hard_positive']['acc']:.2f} %\n")
            for k in ("hard_positive_minus_cutout", "hard_positive_minus_none", "cutout_minus_none"):
                lines.append(f"- {k}: {tl[k]['diff']:+.2f} points, McNemar p {tl[k]['p']:.2g}")
            lines.append("")
    return "\n".join(lines) + "\n"


def claim_markdown(title: str, acc: dict[str, Any], s: dict[str, Any], baselines: list[dict[str, Any]], _: Any) -> str:
    rows = []
    for b in baselines:
        row = {"baseline": b["method"], "at": b["which"], "S": b["S"], "acc": ci(b["acc"])}
        if "vs_patchdrop" in b:
            row["PatchDrop - baseline"] = ci(b["vs_patchdrop"]["diff"])
            row["McNemar p"] = ", ".join(f"{t['p']:.2g}" for t in b["vs_patchdrop"]["mcnemar"])
        rows.append(row)
    return (f"## {title}: PatchDrop {ci(acc)} % at S {ci(s)}\n\n"
            + markdown_table(rows, ["baseline", "at", "S", "acc", "PatchDrop - baseline", "McNemar p"]))


def figure(name: str, results: dict[str, Any]) -> str | None:
    """Accuracy vs mean S, test split: (a) the frozen HR-CNN under each rule and PatchDrop's Pt
    points; (b) the same for the HR classifier fine-tuned with random patch dropping (stages
    ``adapted`` / ``adapted_sigmas``); (c) the fine-tuned points of Ft-1 / Ft-2 and of the longer
    Ft-1 runs (``ft1_longer``, seed 0), on their own accuracy axis. HR-CNN and LR-CNN as
    horizontal lines."""
    st = results["stages"]
    if "curves_pt" not in st:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    colours = {"PatchDrop": "k", "Fixed-H": "C0", "Fixed-V": "C1", "Stochastic": "C2", "STN": "C3"}
    tc = test_curves(results) if "stn_pt" in st else st["curves_pt"]["test"]
    for rule, label in RULE_LABEL.items():
        if rule not in tc:
            continue
        v = tc[rule]
        cvs = list(v.values()) if isinstance(v, dict) else [v]
        xs = [sum(cv[i]["S"] for cv in cvs) / len(cvs) for i in range(17)]
        ys = [sum(cv[i]["acc"] for cv in cvs) / len(cvs) for i in range(17)]
        axes[0].plot(xs, ys, marker=".", label=label, color=colours[label])
    if "pt_eval" in st:
        for q in st["pt_eval"]["points"]:
            thr = q["threshold_curve"]
            axes[0].plot([t["S"] for t in thr], [t["acc"] for t in thr], color="k", alpha=0.25, lw=0.8)  # threshold curves
        claim = st["pt_eval"]["claim"]
        claim_names = {q["name"] for q in st["pt_seeds"]["runs"]}
        others = [q for q in st["pt_eval"]["points"] if q["name"] not in claim_names]
        mine = [q for q in st["pt_eval"]["points"] if q["name"] in claim_names]
        axes[0].scatter([q["S"] for q in others], [q["acc"] for q in others], color="k", marker="x", zorder=5,
                        label="PatchDrop, other settings of the sweep (seed 0)")
        axes[0].scatter([q["S"] for q in mine], [q["acc"] for q in mine], color="k", marker="*", s=120, zorder=6,
                        label=f"PatchDrop sigma {claim['config']['sigma']:g}, one star per seed")
    if "adapted" in st:
        a = st["adapted"]
        for j, (tag, ls) in enumerate((("random_patches", "-"), ("hr_cnn", ":"))):
            for rule in ("fixed_h", "fixed_v"):
                c = a["frozen"][tag]["test"][rule]
                axes[1].plot([q["S"] for q in c], [q["acc"] for q in c], ls=ls, marker="." if j == 0 else None,
                             color=colours[RULE_LABEL[rule]], alpha=1.0 if j == 0 else 0.6,
                             label=f"{RULE_LABEL[rule]}, {'random-patch classifier' if j == 0 else 'HR-CNN'}")
        axes[1].scatter([q["S"] for q in a["pt"]], [q["acc"] for q in a["pt"]], color="k", marker="*", s=120, zorder=6,
                        label="PatchDrop Pt on it, claim setting, one star per seed")
        extra = st.get("adapted_sigmas", {}).get("runs", []) + [a["pt_samples"]]
        axes[1].scatter([q["S"] for q in extra], [q["acc"] for q in extra], color="k", marker="x", zorder=5,
                        label="PatchDrop Pt on it: sigma 0.25 / 0.5, K = 4 samples (seed 0)")
        axes[1].scatter([a["ft1"]["S"]], [a["ft1"]["acc"]], color="k", marker="o", zorder=5, label="PatchDrop Ft-1 from it (seed 0)")
        for q in a["ft1_baselines"]:
            axes[1].scatter([q["S"]], [q["acc"]], color=colours[q["method"]], marker="o", zorder=5,
                            label=f"{q['method']} Ft-1 from it (seed 0)")
        axes[1].axhline(a["classifier"]["acc"], color="C0", ls="-.", lw=1, label=f"random-patch classifier, full image ({a['classifier']['acc']:.2f} %)")
        axes[1].legend(fontsize=7)
    for key, marker in (("ft1", "o"), ("ft2", "s")):
        if key in st:
            f = st[key]
            for q in f["patchdrop"] + f["baselines"]:
                m = q.get("method", "PatchDrop")
                axes[2].scatter([q["S"]], [q["acc"]], color=colours[m], marker=marker, alpha=0.8)
    if "ft1_longer" in st:
        for q in st["ft1_longer"]["points"][1:]:
            axes[2].scatter([q["patchdrop"]["S"]], [q["patchdrop"]["acc"]], color="k", marker="^")
            axes[2].annotate(f"{q['epochs']} ep", (q["patchdrop"]["S"], q["patchdrop"]["acc"]), fontsize=7, xytext=(3, -9),
                             textcoords="offset points")
            for b in q["baselines"]:
                axes[2].scatter([b["S"]], [b["acc"]], color=colours[b["method"]], marker="^")
                axes[2].annotate(f"{q['epochs']} ep", (b["S"], b["acc"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for ax in axes:
        if "classifiers" in st:
            ax.axhline(st["classifiers"]["hr"]["acc"], color="grey", ls="--", lw=1, label="HR-CNN" if ax is axes[2] else None)
            ax.axhline(st["classifiers"]["lr"]["acc"], color="grey", ls=":", lw=1, label="LR-CNN" if ax is axes[2] else None)
        ax.set_xlabel("mean number of HR patches S (of 16)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    axes[0].set_title("(a) Pt: frozen HR-CNN (-- HR-CNN, : LR-CNN)", fontsize=10)
    axes[1].set_title("(b) random-patch classifier: frozen (Pt) and Ft-1 points (o)", fontsize=10)
    axes[2].set_title("(c) fine-tuned: Ft-1 (o), Ft-2 (s), Ft-1 10 / 20 epochs (^)", fontsize=10)
    handles = [plt.Line2D([], [], color=c, marker="o", ls="") for c in colours.values()]
    handles += [plt.Line2D([], [], color="grey", ls="--"), plt.Line2D([], [], color="grey", ls=":")]
    axes[2].legend(handles, [*colours, "HR-CNN (-- in every panel)", "LR-CNN (: in every panel)"], fontsize=8, loc="lower left")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    path = RESULTS / f"{name}_frontier.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return os.path.relpath(path, REPO)


def write(name: str, results: dict[str, Any]) -> None:
    payload = {**top_level(results), **results}
    write_results(name, payload, markdown(results), float(sum(results["stage_wall_s"].values())))
    figure(name, results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="default")
    add_stage_arguments(ap, STAGES)
    ap.add_argument("--rewrite", action="store_true", help="only render the JSON / Markdown / figure again from the results JSON")
    ap.add_argument("--out", default=None, help="run directories (default benchmarks/runs/patchdrop_cifar10[_profile])")
    args = ap.parse_args()
    sys.argv = sys.argv[:1]  # the CLI runs below get their arguments explicitly
    torch.set_num_threads(2)
    torch.set_float32_matmul_precision("high")
    cache_cifar_loading()
    name = NAME if args.profile == "default" else f"{NAME}_{args.profile}"
    out = Path(args.out) if args.out else REPO / "benchmarks" / "runs" / name
    path = RESULTS / f"{name}.json"
    results: dict[str, Any] = {"profile": args.profile, "settings": PROFILES[args.profile], "seeds": PROFILES[args.profile]["seeds"],
                               "stages": {}, "stage_wall_s": {}}
    results = resumable_results(path, results, resume=args.resume, redo=args.redo)
    try:
        wanted = selected_stages(args.stages, STAGES)
    except ValueError as err:
        ap.error(str(err))
    if args.rewrite:
        write(name, resumable_results(path, results, resume=True, redo=""))
        return
    code_commit = git_commit()  # the code this process runs (HEAD may move while it runs)
    runner = Runner(args.profile, out)
    runner.flush = lambda: write(name, results)
    for stage in STAGES:
        if stage not in wanted or stage in results["stages"]:
            continue
        print(f"== {stage}", flush=True)
        t0 = time.perf_counter()
        results["stages"][stage] = globals()[f"stage_{stage}"](runner, results)
        results["stage_wall_s"][stage] = round(time.perf_counter() - t0, 1)
        env = environment()  # the machine and code of each stage (a resumed run spans machines)
        results.setdefault("stage_environment", {})[stage] = {"git_commit": code_commit, **{k: env[k] for k in ("cpu", "threads", "torch", "date_utc")}}
        results.get("partial", {}).pop(stage, None)
        write(name, results)
        print(f"   {stage} done in {results['stage_wall_s'][stage]:.0f} s", flush=True)


if __name__ == "__main__":
    main()
