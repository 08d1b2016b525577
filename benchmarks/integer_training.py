"""Integer-arithmetic training and cost-constrained gradient pruning (paper E) on real models.

    python benchmarks/integer_training.py                    # default profile (~15 min, 2 cores)
    python benchmarks/integer_training.py --profile smoke    # seconds, checks the plumbing

1. Timing (ZSSR8, batch 8, 24x24 -> 48x48): training-step time float vs integer; backward time
   unmasked vs 50%-masked (uniform 32 of 64 kept filters in layers 1-7, float and integer);
   the cost of exact integer convolutions in float32 vs float64.
2. Analytic cost (Eq. 17) / memory (Eq. 16) acceleration vs 32-bit float for ZSSR8 at 32x32, next
   to paper Table 2 (uniform masks, and the knapsack masks learned in 3.).
3. SR: ZSSR8 pre-trained in float (Adam) on random Urban100 patches (x2, MATLAB bicubic), then
   continued with plain SGD for the same number of steps in float, in integer arithmetic
   (IntegerTrainingCallback: 32-bit weights, dynamic scales, floor = Eq. 10), and in integer
   arithmetic with 50% gradient pruning (GradientPruningCallback, masks learned on 10 frozen
   batches); Table-3 shape: static/dynamic scales x 8/32-bit weights; round-to-nearest variant.
   PSNR-Y on Set5 x2 (shave 2).
4. Conv4 (paper A) on x2 LR CIFAR-10: float (BatchNorm, Adam: the paper-A recipe); BN-free float
   (BN folded, He init, plain SGD: the like-for-like baseline); integer (same BN-free net, Eq. 15,
   floor and round-to-nearest); integer from the default init with BN folded.

Writes benchmarks/results/integer_training.{json,md}.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer, seed_everything

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, markdown_table, median_time, write_results  # noqa: E402
from lr_lightning.callbacks import GradientPruningCallback, IntegerTrainingCallback  # noqa: E402
from lr_lightning.callbacks.cost import LayerShape, acceleration_table  # noqa: E402
from lr_lightning.data import CIFARDataModule, SRDataModule  # noqa: E402
from lr_lightning.degrade import Degradation  # noqa: E402
from lr_lightning.methods import ImageClassifier  # noqa: E402
from lr_lightning.methods.optim import OptimSpec  # noqa: E402
from lr_lightning.methods.sr import SuperResolutionTask  # noqa: E402
from lr_lightning.nn import ZSSR8, Conv4  # noqa: E402
from lr_lightning.quant import (  # noqa: E402
    GradMaskedConv2d,
    IntConv2d,
    convert_to_integer,
    eq15_update,
    fold_batchnorm,
    integer_layers,
)

PROFILES: dict[str, dict[str, Any]] = {
    "default": {
        "pre_steps": 300, "ft_steps": 150, "t3_steps": 100, "batch": 8, "patch": 32, "mask_batches": 10,
        "conv4_epochs": 2, "conv4_subset": None, "repeats": 7,
    },
    "smoke": {
        "pre_steps": 3, "ft_steps": 3, "t3_steps": 2, "batch": 2, "patch": 32, "mask_batches": 2,
        "conv4_epochs": 1, "conv4_subset": 128, "repeats": 2,
    },
}
PAPER_TABLE2 = {0.27: (5.14, 4.43), 0.5: (6.20, 5.25), 0.67: (7.14, 6.08), 0.85: (7.81, 7.12)}
SGD_LR = 0.05


def _trainer(steps: int | None, callbacks: list, out: Path, name: str, epochs: int | None = None) -> Trainer:
    return Trainer(
        max_steps=steps if steps is not None else -1, max_epochs=epochs if epochs is not None else -1,
        callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", precision="32-true", num_sanity_val_steps=0,
        limit_val_batches=0 if epochs is None else 1.0, default_root_dir=str(out / name),
    )


# -- 1. timing ---------------------------------------------------------------------------------
def _uniform_masks(net: torch.nn.Module, kept: int) -> None:
    cb = GradientPruningCallback(propagate="pruned")
    layers = [m for m in net.modules() if isinstance(m, (GradMaskedConv2d, IntConv2d))]
    cb.all_layers, cb.layers = layers, layers[:-1]
    cb.set_masks([torch.arange(kept) for _ in cb.layers])


def timing(repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    lr, hr = torch.rand(8, 3, 24, 24), torch.rand(8, 3, 48, 48)
    fnet = ZSSR8(2)
    inet = convert_to_integer(copy.deepcopy(fnet))
    opt = torch.optim.SGD(fnet.parameters(), lr=1e-3)

    def fstep() -> None:
        opt.zero_grad()
        (fnet(lr) - hr).abs().mean().backward()
        opt.step()

    def istep() -> None:
        (inet(lr) - hr).abs().mean().backward()
        for layer in integer_layers(inet):
            eq15_update(layer, 1e-3)

    t_float, t_int = median_time(fstep, repeats, 2), median_time(istep, repeats, 2)

    def backward_time(net: torch.nn.Module) -> float:
        times = []
        for _ in range(repeats + 2):
            loss = (net(lr) - hr).abs().mean()
            t = time.perf_counter()
            loss.backward()
            times.append(time.perf_counter() - t)
            for p in net.parameters():
                p.grad = None
        return sorted(times[2:])[len(times[2:]) // 2]

    mnet = copy.deepcopy(fnet)
    for m in mnet.modules():
        if type(m) is torch.nn.Conv2d:
            GradMaskedConv2d.from_conv(m)
    bw = {"float_unmasked": backward_time(mnet)}
    _uniform_masks(mnet, 32)
    bw["float_masked50"] = backward_time(mnet)
    bw["int_unmasked"] = backward_time(inet)
    _uniform_masks(inet, 32)
    bw["int_masked50"] = backward_time(inet)

    # exact integer convolution: float32 (sums < 2^24) vs float64, 64 -> 64 layer
    v = torch.randint(-128, 128, (8, 64, 48, 48)).float()
    w = torch.randint(-128, 128, (64, 64, 3, 3)).float()
    conv = torch.nn.functional.conv2d
    t32 = median_time(lambda: conv(v, w, padding=1), repeats, 1)
    t64 = median_time(lambda: conv(v.double(), w.double(), padding=1), repeats, 1)
    wg32 = median_time(lambda: torch.nn.grad.conv2d_weight(v, w.shape, v, padding=1), repeats, 1)
    wg64 = median_time(lambda: torch.nn.grad.conv2d_weight(v.double(), w.shape, v.double(), padding=1), repeats, 1)
    return {
        "batch": "8 x 3 x 24 x 24 -> 48 x 48",
        "step_float_s": t_float, "step_int_s": t_int, "step_time_ratio_int_vs_float": t_int / t_float,
        "backward_s": bw,
        "backward_speedup_50pct": bw["int_unmasked"] / bw["int_masked50"],
        "backward_speedup_50pct_float": bw["float_unmasked"] / bw["float_masked50"],
        "conv_fp32_s": t32, "conv_fp64_s": t64, "wgrad_fp32_s": wg32, "wgrad_fp64_s": wg64,
    }


# -- 3. SR ---------------------------------------------------------------------------------------
def _sr_data(p: dict[str, Any]) -> SRDataModule:
    return SRDataModule(
        train_dirs=["sr/Urban100"], val_dirs=["sr/Set5"], test_dirs=["sr/Set5"], scale=2,
        patch_size=p["patch"], patches_per_epoch=p["batch"] * 100_000, batch_size=p["batch"],
    )


def _sr_task(state: dict | None, optimizer: str, lr: float) -> SuperResolutionTask:
    net = ZSSR8(2)
    if state is not None:
        net.load_state_dict(state)
    return SuperResolutionTask(net=net, scale=2, optim=OptimSpec(name=optimizer, learning_rate=lr, momentum=0.0))


def _psnr(trainer: Trainer, task: SuperResolutionTask, dm: SRDataModule) -> float:
    res = trainer.test(task, datamodule=dm, verbose=False)[0]
    return round(float(res["test/psnr_y/Set5"]), 3)


def sr_runs(p: dict[str, Any], out: Path) -> dict[str, Any]:
    res: dict[str, Any] = {}
    seed_everything(0)
    dm = _sr_data(p)
    t0 = time.perf_counter()
    pre = _sr_task(None, "adam", 1e-3)
    tr = _trainer(p["pre_steps"], [], out, "sr_pre")
    tr.fit(pre, datamodule=dm)
    res["pretrain_s"] = round(time.perf_counter() - t0, 1)
    state = copy.deepcopy(pre.net.state_dict())
    res["pretrained_float"] = _psnr(tr, pre, dm)
    bic = ZSSR8(2)
    for m in bic.body:
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.zeros_(m.weight)
    res["bicubic"] = _psnr(tr, _sr_task(bic.state_dict(), "sgd", SGD_LR), dm)

    def run(name: str, callbacks: list, steps: int) -> float:
        seed_everything(1)
        t = time.perf_counter()
        task = _sr_task(state, "sgd", SGD_LR)
        trainer = _trainer(steps, callbacks, out, name)
        if steps > 0:
            trainer.fit(task, datamodule=_sr_data(p))
        fit_s = time.perf_counter() - t
        psnr = _psnr(trainer, task, _sr_data(p))
        res.setdefault("runs", {})[name] = {"psnr_y": psnr, "steps": steps, "fit_s": round(fit_s, 1)}
        for cb in callbacks:
            if isinstance(cb, GradientPruningCallback):
                res["runs"][name]["masks"] = cb.summary
        print(f"[sr {name}] Set5 PSNR-Y {psnr:.3f} dB, {steps} steps, {fit_s:.0f} s", flush=True)
        return psnr

    n = p["ft_steps"]
    # the pre-trained weights in integer arithmetic without training (the callback converts at test set-up)
    res["pretrained_integer_no_training"] = run("int_no_training", [IntegerTrainingCallback(lr=SGD_LR)], 0)
    res["float"] = run("float_sgd", [], n)
    res["integer"] = run("int32w_dynamic_floor", [IntegerTrainingCallback(lr=SGD_LR, rounding="floor")], n)
    res["integer_pruned50"] = run(
        "int32w_dynamic_floor_pruned50",
        [IntegerTrainingCallback(lr=SGD_LR, rounding="floor"), GradientPruningCallback(prune_ratio=0.5, mask_batches=p["mask_batches"])],
        n + p["mask_batches"],
    )
    m = p["t3_steps"]
    t3 = {"dynamic_32bit": res["integer"] if m == n else run("t3_dyn32", [IntegerTrainingCallback(lr=SGD_LR, rounding="floor")], m)}
    t3["static_32bit"] = run("t3_static32", [IntegerTrainingCallback(lr=SGD_LR, scales="static", rounding="floor")], m)
    t3["dynamic_8bit"] = run("t3_dyn8", [IntegerTrainingCallback(lr=SGD_LR, weight_bits=8, rounding="floor")], m)
    t3["static_8bit"] = run("t3_static8", [IntegerTrainingCallback(lr=SGD_LR, weight_bits=8, scales="static", rounding="floor")], m)
    t3["dynamic_32bit_nearest"] = run("t3_dyn32_nearest", [IntegerTrainingCallback(lr=SGD_LR, rounding="nearest")], m)
    t3["float_sgd"] = res["float"] if m == n else run("t3_float", [], m)
    res["table3"] = t3
    res["table3_steps"] = m
    return res


# -- 4. Conv4 ------------------------------------------------------------------------------------
def _he_no_bn_conv4() -> Conv4:
    """Conv4 with BatchNorm folded away (as the integer conversion does) and He-normal conv init:
    without BN, PyTorch's default init shrinks the signal layer by layer and plain SGD barely moves
    (measured: float and integer alike stay at chance), so the BN-free runs start from He init."""
    net = Conv4(10, 16)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            torch.nn.init.zeros_(m.bias)
    for block in net.features:
        fold_batchnorm(block[0], block[1])
        block[1] = torch.nn.Identity()
    return net


def conv4_runs(p: dict[str, Any], out: Path) -> dict[str, Any]:
    res: dict[str, Any] = {}

    def run(name: str, net: Conv4, optimizer: str, lr: float, callbacks: list) -> float:
        seed_everything(0)
        dm = CIFARDataModule(
            batch_size=64, eval_batch_size=256, degradation=Degradation(mode="bicubic", factor=2),
            train_subset=p["conv4_subset"],
        )
        task = ImageClassifier(
            net=net, num_classes=10, input_key="lr",
            optim=OptimSpec(name=optimizer, learning_rate=lr, momentum=0.0, weight_decay=5e-4, scheduler="cosine"),
        )
        trainer = _trainer(None, callbacks, out, name, epochs=p["conv4_epochs"])
        t = time.perf_counter()
        trainer.fit(task, datamodule=dm)
        fit_s = time.perf_counter() - t
        acc = round(100 * float(trainer.test(task, datamodule=dm, verbose=False)[0]["test/acc"]), 2)
        res[name] = {"acc": acc, "fit_s": round(fit_s, 1), "epochs": p["conv4_epochs"]}
        print(f"[conv4 {name}] test acc {acc:.2f} %, {fit_s:.0f} s", flush=True)
        return acc

    seed_everything(0)
    res["float"] = run("float_bn_adam", Conv4(10, 16), "adam", 1e-3, [])
    seed_everything(0)
    res["float_nobn_sgd"] = run("float_nobn_he_sgd", _he_no_bn_conv4(), "sgd", SGD_LR, [])
    seed_everything(0)
    res["integer"] = run("int_nobn_he_sgd_floor", _he_no_bn_conv4(), "sgd", SGD_LR, [IntegerTrainingCallback(lr=SGD_LR, rounding="floor")])
    seed_everything(0)
    res["integer_nearest"] = run(
        "int_nobn_he_sgd_nearest", _he_no_bn_conv4(), "sgd", SGD_LR, [IntegerTrainingCallback(lr=SGD_LR, rounding="nearest")]
    )
    seed_everything(0)
    res["integer_default_init"] = run(
        "int_bnfolded_default_init_sgd", Conv4(10, 16), "sgd", SGD_LR, [IntegerTrainingCallback(lr=SGD_LR, fold_batchnorm=True, rounding="floor")]
    )
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", choices=sorted(PROFILES), default="default")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "runs" / "integer_training"))
    args = ap.parse_args()
    p = PROFILES[args.profile]
    out = Path(args.out)
    t0 = time.perf_counter()
    tim = timing(p["repeats"])
    print(f"[timing] {tim}", flush=True)
    zssr_layers = [LayerShape(3, 64, 32, 32)] + [LayerShape(64, 64, 32, 32)] * 6 + [LayerShape(64, 3, 32, 32)]
    table = acceleration_table(zssr_layers, prunable=7)
    sr = sr_runs(p, out)
    knap = sr["runs"]["int32w_dynamic_floor_pruned50"].get("masks", {})
    if knap.get("kept"):
        table_knap = acceleration_table(zssr_layers, prunable=7, ratios=(0.5,), kept_override={0.5: knap["kept"]})[1]
    else:
        table_knap = None
    c4 = conv4_runs(p, out)
    wall = time.perf_counter() - t0
    payload = {
        "profile": args.profile, "settings": p, "sgd_lr": SGD_LR,
        "step_time_ratio_int_vs_float": round(tim["step_time_ratio_int_vs_float"], 3),
        "backward_speedup_50pct": round(tim["backward_speedup_50pct"], 3),
        "sr_psnr_y": {"float": sr["float"], "integer": sr["integer"], "integer_pruned50": sr["integer_pruned50"]},
        "conv4_acc": {k: v for k, v in c4.items() if not isinstance(v, dict)},
        "timing": tim, "sr": sr, "conv4": c4,
        "cost_table_uniform": table, "cost_table_knapsack50": table_knap,
        "paper_table2": {str(k): {"cost_x": v[0], "memory_x": v[1]} for k, v in PAPER_TABLE2.items()},
    }
    md = [f"Profile `{args.profile}`: {p}; SGD lr {SGD_LR} (float and Eq. 15).\n"]
    md.append("## Timing (ZSSR8, batch 8, 24x24 -> 48x48, median)\n")
    md.append(markdown_table([
        {"what": "train step float (s)", "value": tim["step_float_s"]},
        {"what": "train step integer (s)", "value": tim["step_int_s"]},
        {"what": "ratio integer / float (goal <= 3)", "value": tim["step_time_ratio_int_vs_float"]},
        {"what": "backward integer unmasked (s)", "value": tim["backward_s"]["int_unmasked"]},
        {"what": "backward integer 50% masked (s)", "value": tim["backward_s"]["int_masked50"]},
        {"what": "backward speed-up integer (goal >= 1.5)", "value": tim["backward_speedup_50pct"]},
        {"what": "backward float unmasked (s)", "value": tim["backward_s"]["float_unmasked"]},
        {"what": "backward float 50% masked (s)", "value": tim["backward_s"]["float_masked50"]},
        {"what": "backward speed-up float", "value": tim["backward_speedup_50pct_float"]},
        {"what": "int conv 64->64 fp32 (s)", "value": tim["conv_fp32_s"]},
        {"what": "int conv 64->64 fp64 (s)", "value": tim["conv_fp64_s"]},
        {"what": "weight grad fp32, inexact (s)", "value": tim["wgrad_fp32_s"]},
        {"what": "weight grad fp64, exact (s)", "value": tim["wgrad_fp64_s"]},
    ], ["what", "value"]))
    md.append("\n## Analytic acceleration vs 32-bit float (ZSSR8, 32x32, Eq. 16/17), uniform masks\n")
    rows = [{"prune": f"{int(100 * r['prune_ratio'])}%", "kept": str(r["kept"][:7]), "cost_x": r["cost_x"],
             "memory_x": r["memory_x"], "paper_cost_x": PAPER_TABLE2.get(r["prune_ratio"], ("",))[0],
             "paper_memory_x": PAPER_TABLE2.get(r["prune_ratio"], ("", ""))[1]} for r in table]
    if table_knap:
        rows.append({"prune": "50% knapsack", "kept": str(table_knap["kept"][:7]), "cost_x": table_knap["cost_x"],
                     "memory_x": table_knap["memory_x"], "paper_cost_x": 6.20, "paper_memory_x": 5.25})
    md.append(markdown_table(rows, ["prune", "kept", "cost_x", "memory_x", "paper_cost_x", "paper_memory_x"]))
    md.append(f"\n## SR: ZSSR8 x2, Set5 PSNR-Y (dB); pre-train {p['pre_steps']} Adam steps, then {p['ft_steps']} SGD steps\n")
    md.append(markdown_table([
        {"model": "bicubic", "psnr_y": sr["bicubic"]},
        {"model": "pre-trained float (start point)", "psnr_y": sr["pretrained_float"]},
        {"model": "pre-trained, integer inference", "psnr_y": sr["pretrained_integer_no_training"]},
        {"model": "float SGD", "psnr_y": sr["float"]},
        {"model": "integer (32-bit w, dynamic, floor)", "psnr_y": sr["integer"]},
        {"model": "integer + 50% gradient pruning", "psnr_y": sr["integer_pruned50"]},
    ], ["model", "psnr_y"]))
    md.append(f"\nTable 3 shape ({sr['table3_steps']} steps each):\n\n")
    md.append(markdown_table([{"variant": k, "psnr_y": v} for k, v in sr["table3"].items()], ["variant", "psnr_y"]))
    md.append("\nRuns:\n\n")
    md.append(markdown_table([{"run": k, **{kk: vv for kk, vv in v.items() if kk != "masks"}} for k, v in sr["runs"].items()],
                             ["run", "psnr_y", "steps", "fit_s"]))
    if knap:
        md.append(f"\nKnapsack masks at 50%: kept {knap.get('kept')}, Eq. 9 cost fraction {knap.get('cost_fraction'):.3f}, "
                  f"filters pruned {knap.get('filters_pruned'):.3f}\n")
    md.append(f"\n## Conv4 on x2 LR CIFAR-10 ({p['conv4_epochs']} epochs), test accuracy %\n")
    md.append(markdown_table([{"model": k, **v} for k, v in c4.items() if isinstance(v, dict)], ["model", "acc", "epochs", "fit_s"]))
    write_results("integer_training", payload, "".join(md), wall)
    print("".join(md))
    print(f"wall time {wall:.0f} s")


if __name__ == "__main__":
    main()
