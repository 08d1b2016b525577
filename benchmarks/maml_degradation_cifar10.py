"""Paper A on CIFAR-10: does meta-learning over degradations (MAML) adapt better than joint
training, on held-out degradations where adaptation has something to gain?

    .venv/bin/python benchmarks/maml_degradation_cifar10.py --resume [--profile small|smoke]

Protocol (issue 14):

* **task space** ``rich`` (:data:`lr_lightning.degrade.PRESETS`): 20 degradations of the 32 x 32
  HR images to one 16 x 16 input: bicubic / bilinear / average / max pooling at x2 (native),
  x3 and x4 (upsampled back to 16), Gaussian blur sigma 0.8-1.6, DoReFa 3-4 bits, sensor noise
  <= 8 levels, JPEG quality 50-90, gamma 0.8-1.25;
* **held-out targets outside that hull** (:data:`TARGETS`): each one beyond the training range of
  one factor (JPEG 15, noise 24, x8, blur 2.5, gamma 2.2, and all of them at once) plus one
  in-hull control; the **headroom** of a target is oracle (trained on that target, the same
  pipeline, images and steps) minus joint, before adaptation, paired over training seeds. Only
  targets whose headroom CI lies above zero count for the claim;
* **methods**, all the same Conv4 (16 x 16 input), outer Adam at one rate, 64 labelled images per
  step, M = 4 tasks (the paper's recipe): MAML (second order), FOMAML at MAML's wall time, Meta-SGD
  (per-layer per-step learnt inner rates, second order), ANIL (head only), BN-only; joint training
  (same images and tasks per step), joint at MAML's wall time, source-only (bicubic x2), oracle;
* **meta-test**: k = 32 labelled training images of the target, n = 5 SGD steps at a rate chosen
  per method on the validation split ({0.003, 0.01, 0.03, 0.1}; Meta-SGD uses its learnt rates),
  accuracy on the whole CIFAR-10 test set under the target, before / after; ``support_draws``
  support draws per target;
* **BatchNorm protocols**: ``running`` (eval mode, running statistics) and ``transductive`` (batch
  statistics of fixed test batches of ``test_batch`` images, class-mixed by a fixed shuffle);
* **statistics**: ``seeds`` training seeds per method; differences paired over seeds (same support
  draws, same test images), mean +- 95 % t-interval;
* **curves**: accuracy after adaptation vs k and vs n (seed 0, targets with headroom);
* **cost**: MACs / CPU latency per image, and the meta-step time of the Lightning module vs a
  plain learn2learn loop of the same maths (``meta_step_ms``).

Resumable: every trained model (float16 weights in ``benchmarks/results/maml_weights/``) and every
evaluated (method, seed) is written to ``benchmarks/results/maml_degradation_cifar10.json`` as it
finishes; ``--resume`` skips them.
"""

from __future__ import annotations

import argparse
import json
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
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import (  # noqa: E402
    REPO,
    RESULTS,
    environment,
    markdown_table,
    mean_ci,
    median_time,
    paired,
)
from lr_lightning.data import CIFARDataModule  # noqa: E402
from lr_lightning.degrade import PRESETS, Degradation, DegradationSpace  # noqa: E402
from lr_lightning.methods.maml_degradation import (  # noqa: E402
    MAMLDegradationClassifier,
    adapt_classifier,
    evaluate_classifier,
    sample_support,
)
from lr_lightning.methods.optim import MAML_OPTIM  # noqa: E402
from lr_lightning.nn import Conv4  # noqa: E402
from lr_lightning.plotting import pyplot  # noqa: E402

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*LeafSpec.*")

NAME = "maml_degradation_cifar10"
WEIGHTS = RESULTS / "maml_weights"  # of the small profile; other profiles get their own folder
SPACE = "rich"
# held-out targets: which training range each one leaves (the rich space's maximum in brackets)
TARGETS: dict[str, str] = {
    "bicubic2+jpeg15": "JPEG quality 15 (training 50-90)",
    "bicubic2+n24": "noise 24 levels (training <= 8)",
    "bicubic8+up16": "scale x8 (training x2-x4)",
    "blur2(s2.5)": "blur sigma 2.5 at x2 (training <= 1.2 at x2, 1.6 at x4)",
    "bicubic2+g2.2": "gamma 2.2 (training 0.8-1.25)",
    "blur4(s2.4)+n16+jpeg30+up16": "blur, noise and JPEG all beyond their ranges",
    "bilinear4+n4+jpeg70+up16": "in-hull control (every factor inside the training ranges)",
}
ADAPT_LRS = [0.003, 0.01, 0.03, 0.1]
BN_MODES = ["transductive", "running"]
# method -> MAMLDegradationClassifier arguments ("_time": trained for MAML's measured wall time)
METHODS: dict[str, dict[str, Any]] = {
    "joint": dict(algorithm="joint"),
    "MAML": dict(algorithm="maml"),
    "FOMAML": dict(algorithm="maml", first_order=True),
    "FOMAML_time": dict(algorithm="maml", first_order=True),
    "ANIL_MAML": dict(algorithm="maml", inner_params="head"),
    "MetaSGD_MAML": dict(algorithm="maml", learn_inner_lr=True),
    "BNonly_MAML": dict(algorithm="maml", inner_params="bn"),
    "joint_time": dict(algorithm="joint"),
    "source_only": dict(algorithm="joint", tasks=["bicubic2"]),
}
MAML_VARIANTS = [m for m in METHODS if "MAML" in m]
JOINT_VARIANTS = ["joint", "joint_time"]
CONTROL = "bilinear4+n4+jpeg70+up16"  # in-hull: reported, never counted for the claim
BN_CALIBRATION_IMAGES = 2048
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(steps=4, seeds=[0], support_draws=2, running_draws=1, test_limit=400, val_limit=200, test_batch=100,
                  ks=[8, 32], ns=[1, 5], curve_draws=1, lr_draws=1, timing_steps=3, outer_lr=1e-3),
    "small": dict(steps=400, seeds=[0, 1, 2], support_draws=10, running_draws=5, test_limit=None, val_limit=None, test_batch=100,
                  ks=[8, 32, 128], ns=[1, 5, 20], curve_draws=2, lr_draws=3, timing_steps=8,
                  outer_lr=1e-3),
}


# -- training -----------------------------------------------------------------------------------------
def module(method: str, seed: int, outer_lr: float, target: str | None = None) -> MAMLDegradationClassifier:
    """The Conv4 model of ``method`` (``oracle`` with its ``target``), seeded."""
    torch.manual_seed(seed)
    kw: dict[str, Any] = dict(METHODS.get(method, {}))
    if method == "oracle":
        kw = dict(algorithm="joint", tasks=[target])
    if "tasks" not in kw:
        kw["space_preset"] = SPACE
    return MAMLDegradationClassifier(
        net=Conv4(10, 16), tasks_per_step=4, task_batches="shared", inner_steps=5, inner_learning_rate=0.01,
        task_seed=seed, val_degradation="bicubic2", optim=MAML_OPTIM.with_learning_rate(outer_lr), bn="transductive",
        input_size=32, **kw,
    )


class StepTimer(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.t = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.times.append(time.perf_counter() - self.t)


def fit(model: nn.Module, dm: CIFARDataModule, steps: int, root: Path, run: str,
        max_time_s: float | None = None) -> dict[str, float]:
    """Train ``steps`` steps, or (``max_time_s``) for that many seconds of Lightning's fit loop."""
    timer = StepTimer()
    tr = Trainer(max_steps=-1 if max_time_s else steps, max_epochs=-1,
                 max_time={"seconds": max_time_s} if max_time_s else None, accelerator="cpu", devices=1, precision="32-true",
                 logger=CSVLogger(root, name=run, version=0), enable_progress_bar=False, enable_model_summary=False,
                 enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0, log_every_n_steps=25,
                 callbacks=[timer])
    t0 = time.perf_counter()
    tr.fit(model, dm)
    return {"wall_s": round(time.perf_counter() - t0, 1), "steps": tr.global_step,
            "step_ms_median": round(1000 * statistics.median(timer.times[2:] or timer.times), 2)}


def save_weights(model: nn.Module, key: str) -> None:
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    sd = {k: v.half() if v.is_floating_point() and not k.startswith("inner_lrs") else v for k, v in model.state_dict().items()}
    torch.save(sd, WEIGHTS / f"{key}.pt")


def load_weights(model: nn.Module, key: str) -> nn.Module:
    sd = torch.load(WEIGHTS / f"{key}.pt", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    return model.eval()


# -- evaluation ---------------------------------------------------------------------------------------
def degrade_all(hr_u8: Tensor, deg: Degradation, seed: int, chunk: int = 1000) -> Tensor:
    """The whole set under ``deg`` once (fixed noise draws), float32."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([deg(hr_u8[i : i + chunk].float().div(255), g) for i in range(0, len(hr_u8), chunk)])


def accuracy(model: MAMLDegradationClassifier, x: Tensor, y: Tensor, bn: str, batch: int,
             params: dict[str, Tensor] | None = None, buffers: dict[str, Tensor] | None = None) -> float:
    """Accuracy (%) on pre-degraded inputs (the protocol's ``evaluate_classifier``); ``transductive``:
    BN with the statistics of each ``batch``-image test batch; ``running``: eval mode."""
    batches = [(x[i : i + batch], y[i : i + batch]) for i in range(0, len(y), batch)]
    return evaluate_classifier(model, batches, None, params, buffers, bn=bn)[0]  # type: ignore[arg-type]


@torch.no_grad()
def recalibrate_bn(model: MAMLDegradationClassifier, hr_u8: Tensor, seed: int, batch: int = 256) -> None:
    """Re-estimate every BatchNorm's running statistics (cumulative average, no momentum) on
    ``hr_u8`` training images, each batch split in 4 parts degraded by tasks drawn from the
    model's own training space: the ``running`` protocol's statistics. The MAML variants train
    with batch statistics (transductive, as reference MAML) and never update theirs, so every
    model gets its statistics this same way."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    g = torch.Generator().manual_seed(seed)
    model.train()
    for i in range(0, len(hr_u8), batch):
        hr = hr_u8[i : i + batch].float().div(255)
        parts = hr.chunk(4)
        x = torch.cat([t(part, g) for t, part in zip(model.space.sample(len(parts), g), parts, strict=True)])
        model(x)
    for m, mom in zip(norms, momenta, strict=True):
        m.momentum = mom
    model.eval()


def adapt(model: MAMLDegradationClassifier, deg: Degradation, train_set: Any, k: int, n: int, lr: float, bn: str,
          draw: int) -> Any:
    """Adapt on ``k`` training images of support draw ``draw`` under ``deg`` (Meta-SGD: its learnt rates)."""
    hr, y = sample_support(train_set, k, torch.Generator().manual_seed(1000 + draw))
    x = deg(hr, torch.Generator().manual_seed(2000 + draw))
    rates = model.adaptation_rates("net.", lr)
    return adapt_classifier(model, x, y, n, rates, bn=bn, adapt=model.adapted_names("net."))  # type: ignore[arg-type]


def macs_and_latency(net: nn.Module, size: int) -> tuple[int, float]:
    net.eval()
    x = torch.rand(1, 3, size, size)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(x)
    with torch.no_grad():
        lat = median_time(lambda: net(x), repeats=50, warmup=5)
    return int(fc.get_total_flops() // 2), round(1000 * lat, 3)


# -- meta-step timing: Lightning module vs a plain learn2learn loop (same maths, paper space) -----------
def meta_step_times(hr: Tensor, y: Tensor, first_order: bool, steps: int) -> dict[str, float]:
    import learn2learn as l2l

    from lr_lightning.data.cifar import CIFAR10_MEAN, CIFAR10_STD

    torch.manual_seed(0)
    m = MAMLDegradationClassifier(net=Conv4(10, 16), first_order=first_order, inner_steps=5, tasks_per_step=4,
                                  task_batches="shared", optim=MAML_OPTIM.with_learning_rate(1e-3))
    opt_m = torch.optim.Adam(m.parameters(), lr=1e-3)
    torch.manual_seed(0)
    maml = l2l.algorithms.MAML(Conv4(10, 16), lr=0.01, first_order=first_order)
    opt_l = torch.optim.Adam(maml.parameters(), lr=1e-3)
    space, g = DegradationSpace(), torch.Generator().manual_seed(0)
    mean, std = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1), torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    h = hr.shape[0] // 2

    def ours() -> None:
        opt_m.zero_grad()
        m.meta_loss(hr, y)[0].backward()
        opt_m.step()

    def plain() -> None:
        opt_l.zero_grad()
        losses = []
        for deg in space.sample(4, g):
            learner = maml.clone()
            s, q = (deg(hr[:h]) - mean) / std, (deg(hr[h:]) - mean) / std
            for _ in range(5):
                learner.adapt(F.cross_entropy(learner(s), y[:h]))
            losses.append(F.cross_entropy(learner(q), y[h:]))
        torch.stack(losses).mean().backward()
        opt_l.step()

    times: dict[str, list[float]] = {"ours": [], "plain_loop": []}
    for i in range(steps + 2):  # interleaved, so both see the same machine load
        for key, fn in (("ours", ours), ("plain_loop", plain)):
            t = time.perf_counter()
            fn()
            if i >= 2:
                times[key].append(1000 * (time.perf_counter() - t))
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


# -- main -----------------------------------------------------------------------------------------------
class State:
    """The results JSON, written after every finished unit."""

    KEEP = ("timing", "meta_step_ms", "costs", "invocations", "wall_time_s")

    def __init__(self, path: Path, profile: str, resume: bool, fingerprint: str) -> None:
        self.path = path
        fresh: dict[str, Any] = {"profile": profile, "fingerprint": fingerprint, "train": {}, "evals": {},
                                 "lr_selection": {}, "curves": {}}
        self.data = fresh
        if resume and path.is_file():
            old = json.loads(path.read_text())
            if old.get("profile") == profile and "evals" in old:
                if old.get("fingerprint") != fingerprint:
                    raise SystemExit(f"{path} was written with other settings (targets, methods, space or profile); "
                                     "run without --resume to start over")
                self.data = {**fresh, **{k: v for k, v in old.items() if k in fresh or k in self.KEEP}}

    def save(self, wall: float, extra: dict[str, Any] | None = None) -> None:
        payload = {**self.data, **(extra or {}), "environment": environment(), "wall_time_s": round(wall, 1)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(payload, indent=1) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="small")
    ap.add_argument("--resume", action="store_true", help="skip trained models and evaluated rows in the JSON")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="stop after this phase: train_headroom|train|eval|curves")
    args = ap.parse_args()
    prof = PROFILES[args.profile]
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    name = NAME if args.profile == "small" else f"{NAME}_{args.profile}"
    global WEIGHTS
    if args.profile != "small":
        WEIGHTS = RESULTS / f"maml_weights_{args.profile}"
    fingerprint = json.dumps({"targets": list(TARGETS), "methods": METHODS, "space": PRESETS[SPACE], "profile": prof,
                              "bn_calibration": BN_CALIBRATION_IMAGES}, sort_keys=True)
    st = State(RESULTS / f"{name}.json", args.profile, args.resume, fingerprint)
    wall_before = float(st.data.get("wall_time_s", 0.0))  # wall time of the earlier invocations
    st.data["invocations"] = int(st.data.get("invocations", 0)) + 1
    runs = REPO / "benchmarks" / "runs" / NAME
    wall = lambda: wall_before + time.perf_counter() - t_start  # noqa: E731

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    def save() -> None:
        st.save(wall())

    dm = CIFARDataModule(batch_size=64, eval_batch_size=256, seed=0, degradation=None)
    dm.setup("fit")
    dm.setup("test")
    train_set = dm.train_set
    # fixed shuffles: the folders are class-ordered; transductive BN needs class-mixed batches
    val_idx = dm.val_set.indices[torch.randperm(len(dm.val_set), generator=torch.Generator().manual_seed(1))]
    val_idx = val_idx[: prof["val_limit"]] if prof["val_limit"] else val_idx
    val_hr, val_y = dm.val_set.images[val_idx], dm.val_set.labels[val_idx]
    perm = torch.randperm(len(dm.test_set.labels), generator=torch.Generator().manual_seed(0))
    if prof["test_limit"]:
        perm = perm[: prof["test_limit"]]
    test_hr, test_y = dm.test_set.images[perm], dm.test_set.labels[perm]
    targets = {t: Degradation.from_name(t) for t in TARGETS}
    space = DegradationSpace.preset(SPACE)
    log(f"data: {len(train_set)} train / {len(val_y)} val / {len(test_y)} test; {len(space)} training tasks, "
        f"{len(targets)} targets")
    test_x = {t: degrade_all(test_hr, d, seed=7) for t, d in targets.items()}
    val_x = {t: degrade_all(val_hr, d, seed=8) for t, d in targets.items()}
    tb = prof["test_batch"]

    # ---- timing first (idle machine), once ------------------------------------------------------
    if "timing" not in st.data:
        g = torch.Generator().manual_seed(0)
        hr, yb = torch.rand(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
        so, fo = meta_step_times(hr, yb, False, prof["timing_steps"]), meta_step_times(hr, yb, True, prof["timing_steps"])
        st.data["timing"] = {"second_order": so, "first_order": fo}
        st.data["meta_step_ms"] = so
        st.data["costs"] = {"conv4_16": dict(zip(("macs_per_image", "cpu_latency_ms_batch1"), macs_and_latency(Conv4(10, 16), 16), strict=True))}
        log(f"meta-step ms second order {so}, first order {fo}")
        save()

    # ---- training (headroom first: joint, oracles, then the methods) ------------------------------
    def key(method: str, seed: int, target: str | None = None) -> str:
        return f"{method}[{target}]_s{seed}" if target else f"{method}_s{seed}"

    def train(method: str, seed: int, target: str | None = None) -> MAMLDegradationClassifier:
        k = key(method, seed, target)
        m = module(method, seed, prof["outer_lr"], target)
        if k in st.data["train"] and (WEIGHTS / f"{k}.pt").is_file():
            return load_weights(m, k)
        st.data["evals"].pop(k, None)  # results of a model that is trained again
        if seed == prof["seeds"][0]:  # the rate choice and the curves use seed 0
            st.data["lr_selection"].pop(method, None)
            st.data["curves"].pop(method, None)
        max_time = None
        if method.endswith("_time"):  # as long as MAML (second order) trained, same seed
            max_time = st.data["train"][key("MAML", seed)]["wall_s"]
        dm.batch_size = 64
        info = fit(m, dm, prof["steps"], runs, k, max_time)
        save_weights(m, k)
        st.data["train"][k] = info
        log(f"trained {k}: {info}")
        save()
        return load_weights(m, k)  # what a resumed run evaluates: the stored float16 weights

    order = [("joint", None)] + [("oracle", t) for t in TARGETS] + [(m, None) for m in METHODS if m != "joint"]
    models: dict[str, MAMLDegradationClassifier] = {}
    for seed in prof["seeds"]:
        for method, target in order[: 1 + len(TARGETS)]:
            models[key(method, seed, target)] = train(method, seed, target)
    if args.only == "train_headroom":
        return
    for seed in prof["seeds"]:
        for method, target in order[1 + len(TARGETS):]:
            models[key(method, seed, target)] = train(method, seed, target)
    if args.only == "train":
        return
    calib = train_set.images[train_set.indices[torch.randperm(len(train_set), generator=torch.Generator().manual_seed(3))[
        :BN_CALIBRATION_IMAGES]]]
    for m in models.values():
        recalibrate_bn(m, calib, seed=4)
    log(f"BatchNorm statistics re-estimated on {len(calib)} training images for {len(models)} models")

    # ---- adaptation lr per method on the validation split (seed 0, all targets, transductive) -----
    for method in METHODS:
        if method in st.data["lr_selection"]:
            continue
        m = models[key(method, prof["seeds"][0])]
        if m.hparams.learn_inner_lr:
            st.data["lr_selection"][method] = {"chosen": "learnt", "val_acc": {}}
            continue
        scores = {}
        for lr in ADAPT_LRS:
            accs = []
            for t, d in targets.items():
                for draw in range(prof["lr_draws"]):
                    res = adapt(m, d, train_set, 32, 5, lr, "transductive", 100 + draw)
                    accs.append(accuracy(m, val_x[t], val_y, "transductive", tb, res.params, res.buffers))
            scores[str(lr)] = round(statistics.mean(accs), 3)
        chosen = float(max(scores, key=lambda s: scores[s]))
        st.data["lr_selection"][method] = {"chosen": chosen, "val_acc": scores}
        log(f"adaptation lr {method}: {scores} -> {chosen}")
        save()
    st.data["lr_selection"].setdefault("oracle", {"chosen": st.data["lr_selection"]["joint"]["chosen"],
                                                   "val_acc": {}, "note": "joint's rate"})

    def lr_of(method: str) -> float:
        c = st.data["lr_selection"][method]["chosen"]
        return 0.01 if c == "learnt" else float(c)

    # ---- evaluation rows --------------------------------------------------------------------------
    def evaluate(method: str, seed: int, m: MAMLDegradationClassifier, tlist: list[str]) -> None:
        k = key(method, seed) if method != "oracle" else key("oracle", seed, tlist[0])
        if k in st.data["evals"]:
            return
        rows = []
        for t in tlist:
            for bn in BN_MODES:
                before = accuracy(m, test_x[t], test_y, bn, tb)
                draws = prof["support_draws"] if bn == "transductive" else prof["running_draws"]
                after = []
                for draw in range(draws):  # the same draws for every method of this seed: paired
                    res = adapt(m, targets[t], train_set, 32, 5, lr_of(method), bn, 10_000 * (seed + 1) + draw)
                    after.append(accuracy(m, test_x[t], test_y, bn, tb, res.params, res.buffers))
                rows.append({"method": method, "target": t, "seed": seed, "bn": bn, "acc_before": round(before, 3),
                             "acc_after": round(statistics.mean(after), 3), "acc_after_draws": [round(a, 2) for a in after]})
        st.data["evals"][k] = rows
        log(f"evaluated {k}: " + ", ".join(f"{r['target']}/{r['bn'][:5]} {r['acc_before']:.1f}->{r['acc_after']:.1f}" for r in rows))
        save()

    for seed in prof["seeds"]:
        for t in TARGETS:
            evaluate("oracle", seed, models[key("oracle", seed, t)], [t])
        for method in METHODS:
            evaluate(method, seed, models[key(method, seed)], list(TARGETS))
    if args.only == "eval":
        save()
        return

    # ---- summary: headroom, selection on validation, paired differences -----------------------------
    rows = [r for rs in st.data["evals"].values() for r in rs]

    def per_seed(method: str, t: str, bn: str, field: str) -> list[float]:
        return [next(r[field] for r in rows if r["method"] == method and r["target"] == t and r["seed"] == s
                     and r["bn"] == bn) for s in prof["seeds"]]

    val_best = {m: max(v["val_acc"].values()) if v["val_acc"] else None for m, v in st.data["lr_selection"].items()}

    def val_after(method: str) -> float:
        """Validation accuracy after adaptation at the chosen rate (seed 0, mean over targets)."""
        if val_best.get(method) is not None:
            return float(val_best[method])  # type: ignore[arg-type]
        m = models[key(method, prof["seeds"][0])]
        accs = [accuracy(m, val_x[t], val_y, "transductive", tb, *(lambda r: (r.params, r.buffers))(
            adapt(m, targets[t], train_set, 32, 5, 0.01, "transductive", 100 + d))) for t in TARGETS for d in range(prof["lr_draws"])]
        val_best[method] = round(statistics.mean(accs), 3)
        return float(val_best[method])  # type: ignore[arg-type]

    # Two budgets, each compared within itself. Matched steps and images (400 outer steps, the
    # oracle's budget too, so headroom is measurable): the MAML variant is chosen on validation among
    # the 400-step ones and compared with joint. Matched wall time: FOMAML_time vs joint_time, on the
    # held-out targets (no oracle was trained at that budget, so its headroom is not established).
    step_variants = [m for m in MAML_VARIANTS if not m.endswith("_time")]
    best_maml = max(step_variants, key=val_after)
    best_joint = "joint"
    held_out = [t for t in TARGETS if t != CONTROL]

    # headroom on the validation split (targets are never chosen on the test set), against the joint
    # variant the claim compares with; the test-set difference is reported beside it
    headroom: dict[str, Any] = {}
    for t in TARGETS:
        entry: dict[str, Any] = {"leaves": TARGETS[t], "against": best_joint, "split": "validation",
                                 "oracle_budget": "same steps, images and tasks per step as joint"}
        for bn in BN_MODES:
            o = [accuracy(models[key("oracle", s_, t)], val_x[t], val_y, bn, tb) for s_ in prof["seeds"]]
            jv = [accuracy(models[key(best_joint, s_)], val_x[t], val_y, bn, tb) for s_ in prof["seeds"]]
            h = paired(o, jv)
            ht = paired(per_seed("oracle", t, bn, "acc_before"), per_seed(best_joint, t, bn, "acc_before"))
            htime = paired(per_seed("oracle", t, bn, "acc_before"), per_seed("joint_time", t, bn, "acc_before"))
            entry[bn] = {"oracle_minus_joint": round(h["mean"], 2), "ci95": round(h["ci95"], 2),
                         "has_headroom": bool(t != CONTROL and h["mean"] - h["ci95"] > 0),
                         "test_oracle_minus_joint": round(ht["mean"], 2), "test_ci95": round(ht["ci95"], 2),
                         "test_oracle_minus_joint_time": round(htime["mean"], 2), "test_ci95_joint_time": round(htime["ci95"], 2)}
        entry.update({k: entry["transductive"][k] for k in ("oracle_minus_joint", "ci95", "has_headroom")})
        headroom[t] = entry
    with_headroom = [t for t in TARGETS if headroom[t]["has_headroom"]]
    with_headroom_running = [t for t in TARGETS if headroom[t]["running"]["has_headroom"]]

    def compare(a: str, b: str, tlist: list[str], bn: str, field: str = "acc_after") -> dict[str, Any]:
        if not tlist:
            return {"mean": math.nan, "ci95": math.nan, "n": 0}
        per_seed_diff = [statistics.mean(per_seed(a, t, bn, field)[i] - per_seed(b, t, bn, field)[i] for t in tlist)
                         for i in range(len(prof["seeds"]))]
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in mean_ci(per_seed_diff).items()}

    comparisons = {}
    for bn in BN_MODES:
        hr_targets = with_headroom if bn == "transductive" else with_headroom_running
        comparisons[bn] = {
            f"{a}-{b}": {"targets": "with headroom" if b == "joint" else "held out (headroom vs joint_time not measured)",
                         "after": compare(a, b, hr_targets if b == "joint" else held_out, bn),
                         "before": compare(a, b, hr_targets if b == "joint" else held_out, bn, "acc_before"),
                         "per_target_after": {t: {k: round(v, 3) if isinstance(v, float) else v for k, v in
                                                  paired(per_seed(a, t, bn, "acc_after"), per_seed(b, t, bn, "acc_after")).items()}
                                              for t in TARGETS}}
            for a in MAML_VARIANTS for b in JOINT_VARIANTS
        }
    main_cmp = comparisons["transductive"][f"{best_maml}-{best_joint}"]["after"]
    summary = {"maml_minus_joint_after": main_cmp["mean"], "ci95": main_cmp["ci95"],
               "targets_with_headroom": len(with_headroom), "targets": with_headroom,
               "maml_variant": best_maml, "joint_variant": best_joint, "bn": "transductive",
               "budget": "matched steps and labelled images per step (400 outer steps, 64 images, M = 4 tasks)",
               "selection": "MAML variant chosen on validation accuracy after adaptation (seed 0) among "
                            f"{step_variants}; validation scores {dict((m, val_after(m)) for m in MAML_VARIANTS + JOINT_VARIANTS)}",
               "claim_met": bool(len(with_headroom) >= 3 and main_cmp["mean"] - main_cmp["ci95"] > 0),
               "running_bn": {"targets_with_headroom": len(with_headroom_running),
                              **comparisons["running"][f"{best_maml}-{best_joint}"]["after"]},
               "matched_wall_time": {"maml_variant": "FOMAML_time", "joint_variant": "joint_time", "targets": held_out,
                                     "transductive": comparisons["transductive"]["FOMAML_time-joint_time"]["after"],
                                     "running": comparisons["running"]["FOMAML_time-joint_time"]["after"]}}
    log(f"headroom: {json.dumps(headroom)}")
    log(f"summary: {json.dumps(summary)}")

    # ---- curves vs k and n (seed 0, targets with headroom, else all) ---------------------------------
    ctargets = with_headroom or list(TARGETS)
    for method in dict.fromkeys([best_maml, "MAML", "FOMAML_time", "joint", "joint_time"]):
        if st.data["curves"].get(method, {}).get("targets") == ctargets:
            continue
        m = models[key(method, prof["seeds"][0])]
        cur: dict[str, Any] = {"targets": ctargets, "k": {}, "n": {}}
        for axis, values in (("k", prof["ks"]), ("n", prof["ns"])):
            for v in values:
                kk, nn_ = (v, 5) if axis == "k" else (32, v)
                accs = [accuracy(m, test_x[t], test_y, "transductive", tb, *(lambda r: (r.params, r.buffers))(
                    adapt(m, targets[t], train_set, kk, nn_, lr_of(method), "transductive", 500 + d)))
                    for t in ctargets for d in range(prof["curve_draws"])]
                cur[axis][str(v)] = round(statistics.mean(accs), 3)
        st.data["curves"][method] = cur
        log(f"curves {method}: {cur}")
        save()

    # ---- files ----------------------------------------------------------------------------------------
    out_rows = [{k: r[k] for k in ("method", "target", "seed", "bn", "acc_before", "acc_after")} for r in rows]
    metasgd_rates = {str(s_): {n: [round(float(v), 5) for v in r] for n, r in
                               models[key("MetaSGD_MAML", s_)].adaptation_rates().items()} for s_ in prof["seeds"]}
    extra = {"rows": out_rows, "headroom": headroom, "summary": summary, "comparisons": comparisons,
             "metasgd_learnt_rates": metasgd_rates, "seeds": prof["seeds"],
             "targets": TARGETS, "space": PRESETS[SPACE], "settings": prof, "adapt_lrs": ADAPT_LRS}
    st.data.update(extra)
    save()
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for method, cur in st.data["curves"].items():
        for a, axis in zip(ax, ("k", "n"), strict=True):
            xs = [int(v) for v in cur[axis]]
            a.plot(xs, list(cur[axis].values()), "o-", label=method)
            a.set(xscale="log", xlabel="support size k (n = 5)" if axis == "k" else "adaptation steps n (k = 32)",
                  ylabel="test accuracy after adaptation (%)")
    ax[0].set_title(f"seed 0, transductive BN, {'targets with headroom' if with_headroom else 'all targets (none has headroom)'}")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)

    env = environment()
    md = [f"# {name}\n", f"commit `{env['git_commit']}`, torch {env['torch']}, lightning {env['lightning']}, "
          f"{env['threads']} threads, {env['cpu']}, {env['date_utc']}, wall time {wall():.0f} s over "
          f"{st.data['invocations']} invocation(s), seeds {prof['seeds']}\n",
          f"Profile `{args.profile}`: {json.dumps(prof)}\n",
          f"Training space `{SPACE}` ({len(space)} tasks): {', '.join(space.names)}\n",
          f"## Headroom: oracle minus {best_joint} before adaptation (points, mean +- 95 % CI over seeds; counted on "
          f"validation, transductive; the in-hull control `{CONTROL}` never counts)\n",
          markdown_table([{"target": t, "leaves": h["leaves"],
                           "val transductive": f"{h['transductive']['oracle_minus_joint']:+.2f} +- {h['transductive']['ci95']:.2f}",
                           "val running": f"{h['running']['oracle_minus_joint']:+.2f} +- {h['running']['ci95']:.2f}",
                           "test transductive": f"{h['transductive']['test_oracle_minus_joint']:+.2f} +- {h['transductive']['test_ci95']:.2f}",
                           "test vs joint_time": f"{h['transductive']['test_oracle_minus_joint_time']:+.2f} +- {h['transductive']['test_ci95_joint_time']:.2f}",
                           "counts": h["has_headroom"]} for t, h in headroom.items()],
                         ["target", "leaves", "val transductive", "val running", "test transductive", "test vs joint_time", "counts"]),
          "\n## Accuracy before / after adaptation (k = 32, n = 5, mean over seeds; test set)\n"]
    for bn in BN_MODES:
        table = []
        for method in ["oracle", *METHODS]:
            row: dict[str, Any] = {"method": method, "lr": str(st.data["lr_selection"][method]["chosen"])}
            for t in TARGETS:
                b = statistics.mean(per_seed(method, t, bn, "acc_before"))
                a = statistics.mean(per_seed(method, t, bn, "acc_after"))
                row[t] = f"{b:.1f} / {a:.1f}"
            table.append(row)
        md += [f"\nBatchNorm `{bn}`" + (f" (test batches of {tb})" if bn == "transductive" else "") + ":\n",
               markdown_table(table, ["method", "lr", *TARGETS])]
    md += ["\n## MAML variants minus joint variants after adaptation (points, mean +- 95 % CI over seeds): vs `joint` over the "
           "targets with headroom, vs `joint_time` over the held-out targets\n",
           markdown_table([{"comparison": c, "transductive": f"{v['after']['mean']:+.2f} +- {v['after']['ci95']:.2f}",
                            "running": f"{comparisons['running'][c]['after']['mean']:+.2f} +- {comparisons['running'][c]['after']['ci95']:.2f}",
                            "before (transductive)": f"{v['before']['mean']:+.2f} +- {v['before']['ci95']:.2f}"}
                           for c, v in comparisons["transductive"].items()], ["comparison", "transductive", "running", "before (transductive)"]),
           f"\nSummary: {json.dumps(summary)}\n",
           f"\nAdaptation learning rate chosen on validation: {json.dumps({m: v['chosen'] for m, v in st.data['lr_selection'].items()})}\n",
           f"\nCurves (seed 0, transductive, mean over {ctargets}): {json.dumps(st.data['curves'])}\n",
           f"\nTraining (wall s, steps, median step ms): {json.dumps(st.data['train'])}\n",
           f"\nMeta-step time (median ms, paper space, Conv4 16 x 16, M = 4 x 5 inner steps, 32 + 32 images): {json.dumps(st.data['timing'])}\n",
           f"\nInference cost: {json.dumps(st.data['costs'])}\n", f"\n![curves]({name}.png)\n"]
    (RESULTS / f"{name}.md").write_text("\n".join(md))
    log(f"wrote {RESULTS / name}.json / .md / .png")


if __name__ == "__main__":
    main()
