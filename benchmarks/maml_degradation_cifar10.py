"""Paper A on CIFAR-10 (x2, 32 -> 16): MAML over degradation tasks vs joint training, source-only,
oracle and a frozen-SR + HR-CNN scheme, all under the same meta-test adaptation protocol.

    flock /tmp/lr_cpu.lock .venv/bin/python benchmarks/maml_degradation_cifar10.py [--profile small|paper|smoke]

``small`` (default, <= 30 min on 2 CPU cores): short meta-training with outer Adam 1e-3;
``paper``: the paper's 11 epochs at outer Adam 1e-4 (for a GPU); ``smoke``: a few steps to check
the script. Writes benchmarks/results/maml_degradation_cifar10.{json,md,png}:

* the adaptation table: rows (method, BatchNorm mode, unseen target, k, n) with accuracy on the
  whole test set before / after n SGD steps at lr 0.01 on k labelled LR training images (mean of
  ``support_seeds`` draws), plus MACs per image;
* accuracy after adaptation vs k and vs n (mean over targets), MAML vs joint;
* the cost table (MACs, CPU latency per image);
* meta-training curves (query loss vs step, paper Fig. 4-5);
* the meta-step time of the Lightning module vs a plain learn2learn loop of the same maths, and
  the first-order speed-up.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import REPO, RESULTS, markdown_table, median_time, write_results  # noqa: E402
from lr_lightning.data import CIFARDataModule  # noqa: E402
from lr_lightning.degrade import Degradation  # noqa: E402
from lr_lightning.methods import ImageClassifier  # noqa: E402
from lr_lightning.methods.maml_degradation import (  # noqa: E402
    MAMLDegradationClassifier,
    SRThenCNN,
    adapt_classifier,
    evaluate_classifier,
    sample_support,
)
from lr_lightning.methods.optim import MAML_OPTIM, SR_OPTIM, OptimSpec  # noqa: E402
from lr_lightning.methods.sr import SuperResolutionTask  # noqa: E402
from lr_lightning.nn import ZSSR8, Conv4  # noqa: E402
from lr_lightning.plotting import pyplot  # noqa: E402

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")

NAME = "maml_degradation_cifar10"
TARGETS = ["bicubic2", "bilinear2", "nearest2", "area2", "blur2(s1.0)", "avgpool2+q5", "maxpool2+q6"]
PROFILES: dict[str, dict[str, Any]] = {
    # meta_steps: outer steps of MAML and joint (same images / tasks); cls_epochs: source-only and
    # oracle epochs; sr_epochs / hrcnn_epochs: the SR scheme's two stages.
    "smoke": dict(meta_steps=6, outer_lr=1e-3, cls_epochs=0.02, sr_epochs=0.02, hrcnn_epochs=0.02, val_every=3,
                  val_batches=2, support_seeds=1, test_limit=500, timing_steps=4, ks=[16, 32], ns=[5, 10]),
    "small": dict(meta_steps=400, outer_lr=1e-3, cls_epochs=1.5, sr_epochs=1, hrcnn_epochs=1.5, val_every=50,
                  val_batches=20, support_seeds=2, test_limit=None, timing_steps=8, ks=[16, 32, 64, 128],
                  ns=[5, 10, 20]),
    "paper": dict(meta_steps=11 * 281, outer_lr=1e-4, cls_epochs=11, sr_epochs=20, hrcnn_epochs=11, val_every=281,
                  val_batches=100, support_seeds=5, test_limit=None, timing_steps=20, ks=[16, 32, 64, 128],
                  ns=[5, 10, 20]),
}


class StepTimer(Callback):
    """Wall time of every training step (training_step + optimiser, data loading excluded)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.t = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self.t)


ACCELERATOR = "cpu"


def trainer(run: str, max_steps: int, root: Path, val_every: int | None = None, val_batches: int = 0,
            callbacks: list[Callback] | None = None, log_every: int = 10) -> Trainer:
    return Trainer(
        max_steps=max_steps, max_epochs=-1, accelerator=ACCELERATOR, devices=1, precision="32-true",
        logger=CSVLogger(root, name=run, version=0), enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, val_check_interval=val_every, check_val_every_n_epoch=None if val_every else 1,
        limit_val_batches=val_batches, num_sanity_val_steps=0, log_every_n_steps=log_every,
        callbacks=callbacks or [],
    )


def maml_module(algorithm: str, first_order: bool, lr: float, bn: str = "transductive") -> MAMLDegradationClassifier:
    torch.manual_seed(0)
    return MAMLDegradationClassifier(
        net=Conv4(10, 16), algorithm=algorithm, first_order=first_order, optim=MAML_OPTIM.with_learning_rate(lr), bn=bn,  # type: ignore[arg-type]
        tasks_per_step=4, inner_steps=5, inner_learning_rate=0.01, task_batches="shared",
    )


def classifier(net: nn.Module, lr: float = 1e-3, normalize: bool = True) -> ImageClassifier:
    kw: dict[str, Any] = {} if normalize else {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    return ImageClassifier(net=net, input_key="lr", optim=OptimSpec(name="adam", learning_rate=lr), channels_last=False, **kw)


def plain_l2l_step(hr: torch.Tensor, y: torch.Tensor, first_order: bool) -> Any:
    """One meta-step written directly with learn2learn (same maths as the module), as a closure."""
    import learn2learn as l2l

    from lr_lightning.data.cifar import CIFAR10_MEAN, CIFAR10_STD
    from lr_lightning.degrade import DegradationSpace

    torch.manual_seed(0)
    net = Conv4(10, 16)
    maml = l2l.algorithms.MAML(net, lr=0.01, first_order=first_order)
    opt = torch.optim.Adam(maml.parameters(), lr=1e-3)
    space, g = DegradationSpace(), torch.Generator().manual_seed(0)
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    h = hr.shape[0] // 2

    def step() -> None:
        opt.zero_grad()
        losses = []
        for deg in space.sample(4, g):
            learner = maml.clone()
            s, q = (deg(hr[:h]) - mean) / std, (deg(hr[h:]) - mean) / std
            for _ in range(5):
                learner.adapt(F.cross_entropy(learner(s), y[:h]))
            losses.append(F.cross_entropy(learner(q), y[h:]))
        torch.stack(losses).mean().backward()
        opt.step()

    return step


def core_step(hr: torch.Tensor, y: torch.Tensor, first_order: bool) -> Any:
    """The module's meta_loss + backward + Adam step, called without Lightning, as a closure."""
    m = maml_module("maml", first_order, 1e-3)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad()
        m.meta_loss(hr, y)[0].backward()
        opt.step()

    return step


class InterleavedTimer(Callback):
    """Times every Lightning training step and, right after it, one step of each reference loop,
    so all three are measured under the same (shared, drifting) machine load."""

    def __init__(self, others: dict[str, Any]) -> None:
        self.others = others
        self.times: dict[str, list[float]] = {"lightning_module": [], **{k: [] for k in others}}

    def on_train_batch_start(self, *args: Any) -> None:
        self.t = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times["lightning_module"].append(1000 * (time.perf_counter() - self.t))
        for k, fn in self.others.items():
            t = time.perf_counter()
            fn()
            self.times[k].append(1000 * (time.perf_counter() - t))


def meta_step_times(dm: CIFARDataModule, hr: torch.Tensor, y: torch.Tensor, first_order: bool, steps: int,
                    root: Path) -> dict[str, float]:
    """Median ms per meta-step: Lightning module (fit loop), module core, plain learn2learn."""
    others = {"module_core_no_lightning": core_step(hr, y, first_order),
              "plain_learn2learn": plain_l2l_step(hr, y, first_order)}
    timer = InterleavedTimer(others)
    dm.batch_size, dm.degradation = 64, None
    t = trainer(f"timing_{'fo' if first_order else 'so'}", steps + 2, root, callbacks=[timer], log_every=50)
    t.limit_val_batches = 0
    t.fit(maml_module("maml", first_order, 1e-3), dm)
    return {k: statistics.median(v[2:]) for k, v in timer.times.items()}


def macs_and_latency(model: nn.Module, lr_size: int) -> tuple[int, float]:
    model.eval()
    x = torch.rand(1, 3, lr_size, lr_size)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    macs = fc.get_total_flops() // 2
    with torch.no_grad():
        lat = median_time(lambda: model(x), repeats=50, warmup=5)
    return int(macs), 1000 * lat


def read_curve(log_dir: Path, key: str) -> list[tuple[int, float]]:
    path = log_dir / "metrics.csv"
    out = []
    with path.open() as f:
        for row in csv.DictReader(f):
            if row.get(key):
                out.append((int(row["step"]), float(row[key])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--accelerator", default="cpu", help="Lightning accelerator of the training runs (the "
                    "timing and the adaptation protocol run on the CPU after training)")
    args = ap.parse_args()
    global ACCELERATOR
    ACCELERATOR = args.accelerator
    prof = PROFILES[args.profile]
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    runs = REPO / "benchmarks" / "runs" / NAME
    log = lambda msg: print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)  # noqa: E731

    dm = CIFARDataModule(batch_size=64, eval_batch_size=16, seed=0)
    dm.setup("fit")
    dm.setup("test")
    # The validation split's indices are sorted (class-ordered folder): shuffle them once, so the
    # 16-image validation batches (8 support / 8 query) are class-mixed.
    dm.val_set.indices = dm.val_set.indices[torch.randperm(len(dm.val_set), generator=torch.Generator().manual_seed(1))]
    test_imgs, test_y = dm.test_set.images, dm.test_set.labels
    if prof["test_limit"]:  # strided: the test set is ordered by class
        stride = len(test_y) // prof["test_limit"]
        test_imgs, test_y = test_imgs[::stride], test_y[::stride]
    # A fixed shuffle: the test folder is ordered by class, and transductive BatchNorm (batch
    # statistics at test time, reference MAML) is meaningless on single-class batches.
    perm = torch.randperm(len(test_y), generator=torch.Generator().manual_seed(0))
    test_imgs, test_y = test_imgs[perm], test_y[perm]
    test_batches = [(test_imgs[i : i + 500].float().div(255), test_y[i : i + 500]) for i in range(0, len(test_y), 500)]
    n_train = len(dm.train_set)
    log(f"data: {n_train} train / {len(dm.val_set)} val / {len(test_y)} test images")
    targets = [Degradation.from_name(t) for t in TARGETS]

    # ---- 1. meta-step time: Lightning module vs plain learn2learn loop (same maths) -----------
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(64, 3, 32, 32, generator=g)
    yb = torch.randint(0, 10, (64,), generator=g)
    n_t = prof["timing_steps"]
    timing = {}
    for fo in (False, True):
        key = "first_order" if fo else "second_order"
        timing[key] = meta_step_times(dm, hr, yb, fo, n_t, runs)
        log(f"meta-step {key}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in timing[key].items()))
    so, fo_t = timing["second_order"], timing["first_order"]
    meta_step_ms = {"ours": so["lightning_module"], "plain_loop": so["plain_learn2learn"]}
    overhead = 100 * (so["lightning_module"] / so["plain_learn2learn"] - 1)
    fo_speedup = so["lightning_module"] / fo_t["lightning_module"]

    # ---- 2. training --------------------------------------------------------------------------
    models: dict[str, nn.Module] = {}
    train_time: dict[str, float] = {}
    steps_per_epoch = math.ceil(n_train / 32)

    def fit(name: str, model: nn.Module, steps: int, batch: int, degradation: Degradation | None, **kw: Any) -> Path:
        dm.batch_size, dm.eval_batch_size, dm.degradation = batch, kw.pop("eval_batch", 256), degradation
        t0 = time.perf_counter()
        tr = trainer(name, max(1, steps), runs, **kw)
        tr.fit(model, dm)
        train_time[name] = time.perf_counter() - t0
        models[name] = model.eval()
        log(f"trained {name}: {tr.global_step} steps in {train_time[name]:.0f} s")
        return Path(tr.log_dir)

    ms, lr = prof["meta_steps"], prof["outer_lr"]
    vkw = dict(val_every=prof["val_every"], val_batches=prof["val_batches"], eval_batch=16)
    maml_dir = fit("maml", maml_module("maml", False, lr), ms, 64, None, **vkw)
    joint_dir = fit("joint", maml_module("joint", False, lr), ms, 64, None, **vkw)
    torch.manual_seed(0)
    fit("source_only", classifier(Conv4(10, 16)), int(prof["cls_epochs"] * steps_per_epoch), 32, Degradation("bicubic", 2))
    for t in targets:
        torch.manual_seed(0)
        fit(f"oracle[{t.name}]", classifier(Conv4(10, 16)), int(prof["cls_epochs"] * steps_per_epoch), 32, t)
    torch.manual_seed(0)
    sr_task = SuperResolutionTask(net=ZSSR8(scale=2, width=32, depth=8), scale=2, optim=SR_OPTIM.with_learning_rate(1e-3))
    fit("sr_zssr8", sr_task, int(prof["sr_epochs"] * math.ceil(n_train / 64)), 64, Degradation("bicubic", 2))
    sr_ckpt = runs / "sr_zssr8.pt"
    torch.save({f"net.{k}": v for k, v in sr_task.net.state_dict().items()}, sr_ckpt)
    torch.manual_seed(0)
    sr_cnn = SRThenCNN(ZSSR8(scale=2, width=32, depth=8), Conv4(10, 32), sr_checkpoint=None)
    sr_cnn.sr.load_state_dict(sr_task.net.state_dict())
    fit("sr_hrcnn", classifier(sr_cnn, normalize=False), int(prof["hrcnn_epochs"] * steps_per_epoch), 32,
        Degradation("bicubic", 2))
    with torch.no_grad():
        sr_psnr = []
        for hrb, _ in test_batches[:2]:
            out = sr_task.net(Degradation("bicubic", 2)(hrb)).clamp(0, 1)
            bic = F.interpolate(Degradation("bicubic", 2)(hrb), scale_factor=2, mode="bicubic").clamp(0, 1)
            sr_psnr.append((float(-10 * torch.log10(F.mse_loss(out, hrb))), float(-10 * torch.log10(F.mse_loss(bic, hrb)))))
    log(f"SR net RGB PSNR on test (x2 bicubic LR): {statistics.mean(p for p, _ in sr_psnr):.2f} dB "
        f"(bicubic upsampling {statistics.mean(b for _, b in sr_psnr):.2f} dB)")

    # ---- 3. protocol --------------------------------------------------------------------------
    seeds = list(range(prof["support_seeds"]))
    rows: list[dict[str, Any]] = []
    costs = {}
    for name, lr_size, model in (("conv4_lr16", 16, Conv4(10, 16)), ("zssr8w32_then_conv4_hr32", 16, sr_cnn)):
        costs[name] = macs_and_latency(model, lr_size)
    conv_macs, sr_macs = costs["conv4_lr16"][0], costs["zssr8w32_then_conv4_hr32"][0]

    def protocol(method: str, model: nn.Module, bn: str, target: Degradation, k: int, n: int, seed_list: list[int],
                 macs: int, batches: list | None = None, pre: Any = None, before: bool = True) -> dict[str, Any]:
        """Mean over support seeds of the protocol; ``pre`` maps LR -> model input (SR cache)."""
        ev_batches = batches if batches is not None else test_batches
        deg = None if batches is not None else target
        acc0, loss0 = evaluate_classifier(model, ev_batches, deg, bn=bn) if before else (math.nan, math.nan)  # type: ignore[arg-type]
        after, losses = [], []
        for s in seed_list:
            hr_s, y_s = sample_support(dm.train_set, k, torch.Generator().manual_seed(s))
            x_s = target(hr_s) if pre is None else pre(target(hr_s))
            res = adapt_classifier(model, x_s, y_s, n, 0.01, bn=bn)  # type: ignore[arg-type]
            a, l_ = evaluate_classifier(model, ev_batches, deg, res.params, res.buffers, bn=bn)  # type: ignore[arg-type]
            after.append(a)
            losses.append(l_)
        return {"method": method, "bn": bn, "target": target.name, "k": k, "n": n, "acc_before": round(acc0, 2),
                "acc_after": round(statistics.mean(after), 2),
                "acc_after_std": round(statistics.stdev(after), 2) if len(after) > 1 else 0.0,
                "loss_before": round(loss0, 4), "loss_after": round(statistics.mean(losses), 4),
                "support_seeds": len(seed_list), "macs": macs}

    plain_methods = [("maml", "transductive"), ("joint", "transductive"), ("joint", "running"),
                     ("source_only", "running"), ("source_only", "transductive")]
    for t in targets:
        for method, bn in plain_methods:
            rows.append(protocol(method, models[method], bn, t, 32, 5, seeds, conv_macs))
        for bn in ("running", "transductive"):
            rows.append(protocol("oracle", models[f"oracle[{t.name}]"], bn, t, 32, 5, seeds, conv_macs))
        # SR scheme: the frozen SR output of the test set is computed once per target
        cnn_part = models["sr_hrcnn"]
        with torch.no_grad():
            sr_batches = [(sr_cnn.super_resolve(t(hrb)), yb_) for hrb, yb_ in test_batches]
        cnn_only = classifier(sr_cnn.cnn, normalize=True).eval()  # the HR-CNN with its normalisation
        cnn_only.mean, cnn_only.std = sr_cnn.mean, sr_cnn.std
        for bn in ("running", "transductive"):
            rows.append(protocol("sr_then_hrcnn", cnn_only, bn, t, 32, 5, seeds, sr_macs, batches=sr_batches,
                                 pre=sr_cnn.super_resolve))
        del cnn_part, sr_batches
        log(f"protocol {t.name}: " + ", ".join(f"{r['method']}/{r['bn'][:5]} {r['acc_before']:.1f}->{r['acc_after']:.1f}"
                                               for r in rows if r["target"] == t.name))

    # ---- 4. curves vs k and n (seed 0), MAML vs joint (same BN mode as MAML and joint's own) ----
    curves: dict[str, dict[str, list[float]]] = {}
    for method, bn in (("maml", "transductive"), ("joint", "transductive"), ("joint", "running")):
        key = f"{method}/{bn}"
        curves[key] = {"k": [], "n": []}
        for k in prof["ks"]:
            curves[key]["k"].append(statistics.mean(
                protocol(method, models[method], bn, t, k, 5, [0], conv_macs, before=False)["acc_after"] for t in targets))
        for n in prof["ns"]:
            curves[key]["n"].append(statistics.mean(
                protocol(method, models[method], bn, t, 32, n, [0], conv_macs, before=False)["acc_after"] for t in targets))
        log(f"curves {key}: vs k {curves[key]['k']}, vs n {curves[key]['n']}")

    # ---- 5. summary, figure, files --------------------------------------------------------------
    def mean_over_targets(method: str, bn: str, field: str) -> float:
        return round(statistics.mean(r[field] for r in rows if r["method"] == method and r["bn"] == bn), 2)

    summary = [{"method": m, "bn": bn, "mean_acc_before": mean_over_targets(m, bn, "acc_before"),
                "mean_acc_after": mean_over_targets(m, bn, "acc_after"),
                "macs": next(r["macs"] for r in rows if r["method"] == m)}
               for m, bn in [*plain_methods, ("oracle", "running"), ("oracle", "transductive"),
                             ("sr_then_hrcnn", "running"), ("sr_then_hrcnn", "transductive")]]
    maml_after = mean_over_targets("maml", "transductive", "acc_after")
    joint_best = max(mean_over_targets("joint", b, "acc_after") for b in ("transductive", "running"))
    goal = {"maml_mean_acc_after": maml_after, "joint_best_mean_acc_after": joint_best,
            "maml_beats_joint": maml_after > joint_best}
    curve_train = read_curve(maml_dir, "train/loss")
    curve_val = read_curve(maml_dir, "val/ce")
    curve_joint = read_curve(joint_dir, "train/loss")

    plt = pyplot()

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].plot(*zip(*curve_train, strict=True), label="MAML train query loss (mean of M=4 tasks)")
    if curve_val:
        ax[0].plot(*zip(*curve_val, strict=True), "o-", label="MAML val query loss (bicubic)")
    ax[0].plot(*zip(*curve_joint, strict=True), alpha=0.6, label="joint train loss")
    ax[0].set(xlabel="meta-step", ylabel="cross-entropy", title="meta-training (paper Fig. 4-5)")
    ax[0].legend(fontsize=8)
    for key, c in curves.items():
        ax[1].plot(prof["ks"], c["k"], "o-", label=key)
        ax[2].plot(prof["ns"], c["n"], "o-", label=key)
    ax[1].set(xscale="log", xlabel="k labelled LR examples (n = 5)", ylabel="test acc after adaptation (%)",
              title="mean over 7 unseen targets vs k")
    ax[1].set_xticks(prof["ks"], [str(k) for k in prof["ks"]])
    ax[1].minorticks_off()
    ax[2].set(xlabel="n SGD steps (k = 32)", ylabel="test acc after adaptation (%)", title="vs n")
    ax[1].legend(fontsize=8)
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / f"{NAME}.png", dpi=110)

    cost_rows = [{"pipeline": k, "macs_per_image": v[0], "cpu_latency_ms_batch1": round(v[1], 3)} for k, v in costs.items()]
    payload = {
        "profile": args.profile,
        "profile_settings": prof,
        "targets": TARGETS,
        "rows": rows,
        "summary": summary,
        "research_goal": goal,
        "meta_step_ms": {**meta_step_ms, "breakdown": timing,
                         "framework_overhead_percent": round(overhead, 1), "first_order_speedup": round(fo_speedup, 2)},
        "costs": cost_rows,
        "curves_vs_k_n": {"ks": prof["ks"], "ns": prof["ns"], **curves},
        "meta_training_curve": {"train_query_loss": curve_train, "val_query_loss": curve_val, "joint_train_loss": curve_joint},
        "train_time_s": {k: round(v, 1) for k, v in train_time.items()},
        "sr_test_psnr_rgb_db": {"zssr8w32": round(statistics.mean(p for p, _ in sr_psnr), 2),
                                "bicubic": round(statistics.mean(b for _, b in sr_psnr), 2)},
    }
    wide = []
    for m, bn in [*plain_methods, ("oracle", "running"), ("oracle", "transductive"), ("sr_then_hrcnn", "running"),
                  ("sr_then_hrcnn", "transductive")]:
        r = {"method": m, "bn": bn}
        for t in TARGETS:
            x = next(x for x in rows if x["method"] == m and x["bn"] == bn and x["target"] == t)
            r[t] = f"{x['acc_before']:.1f} / {x['acc_after']:.1f}"
        r["mean"] = f"{mean_over_targets(m, bn, 'acc_before'):.1f} / {mean_over_targets(m, bn, 'acc_after'):.1f}"
        wide.append(r)
    md = (
        f"Profile `{args.profile}`: {prof}\n\n"
        "## Adaptation table (test accuracy %, before / after n = 5 SGD steps at lr 0.01 on k = 32 labelled LR "
        f"training images, mean of {len(seeds)} support draws; whole CIFAR-10 test set under each unseen target)\n\n"
        + markdown_table(wide, ["method", "bn", *TARGETS, "mean"])
        + f"\nResearch goal (MAML beats joint after adaptation, mean over targets): MAML {maml_after:.2f} % vs best joint "
        f"{joint_best:.2f} % -> **{'yes' if goal['maml_beats_joint'] else 'no'}**.\n\n"
        "## Accuracy after adaptation vs k (n = 5) and vs n (k = 32), mean over targets, support seed 0\n\n"
        + markdown_table([{"method": k, **{f"k={kk}": v for kk, v in zip(prof["ks"], c["k"], strict=True)},
                           **{f"n={nn_}": v for nn_, v in zip(prof["ns"], c["n"], strict=True)}} for k, c in curves.items()],
                         ["method", *[f"k={k}" for k in prof["ks"]], *[f"n={n}" for n in prof["ns"]]])
        + "\n## Inference cost per image (MACs from torch.utils.flop_counter, CPU latency at batch 1, "
        f"{args.threads} threads)\n\n" + markdown_table(cost_rows, ["pipeline", "macs_per_image", "cpu_latency_ms_batch1"])
        + f"\nSR net (ZSSR-8, width 32) RGB PSNR on test, bicubic x2: {payload['sr_test_psnr_rgb_db']['zssr8w32']} dB "
        f"(bicubic upsampling {payload['sr_test_psnr_rgb_db']['bicubic']} dB).\n\n"
        "## Meta-step time (median ms, Conv4 16x16, M = 4 tasks x 5 inner steps, 32 + 32 images)\n\n"
        + markdown_table([{"order": k, **{kk: round(vv, 1) for kk, vv in v.items()}} for k, v in timing.items()],
                         ["order", "lightning_module", "module_core_no_lightning", "plain_learn2learn"])
        + f"\nFramework overhead (Lightning module vs plain learn2learn, second order): {overhead:+.1f} %; "
        f"first-order speed-up: {fo_speedup:.2f}x.\n\n"
        f"Training wall times (s): {payload['train_time_s']}\n\n![curves]({NAME}.png)\n"
    )
    write_results(NAME, payload, md, time.perf_counter() - t_start)
    print(md)


if __name__ == "__main__":
    main()
