"""The integer-engine stages of ``benchmarks/ondevice_sr.py``: Tables 3/4 (training from scratch in
integer arithmetic), Tables 2/5/7 (Eq. 16/17 accounting) and measured step times.

Run through ``python benchmarks/ondevice_sr.py --stages table34,table2,timing`` (one results file).
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import numpy as np
import torch
from lightning.pytorch import seed_everything

from benchmarks.common import git_commit, markdown_table, median_time
from benchmarks.ondevice_sr import (
    WEIGHTS,
    bicubic_pairs,
    bicubic_psnr,
    datamodule,
    load_theta,
    paired,
    trainer,
)
from lr_lightning.callbacks import IntegerTrainingCallback
from lr_lightning.callbacks.cost import acceleration_table, table5_memory_kb, zssr8_shapes
from lr_lightning.degrade.zero_shot import bicubic_downsample
from lr_lightning.methods.ondevice_sr import ZSSRPretrain, install_masks
from lr_lightning.methods.optim import OptimSpec
from lr_lightning.metrics import psnr_y
from lr_lightning.nn import ZSSR8
from lr_lightning.quant import (
    calibrate_static_scales,
    convert_to_integer,
    eq15_update,
    integer_layers,
    save_scale_state,
)

PAPER_T34 = {"Set5": {"Bicubic": 28.42, "FP": 30.83, "8-bit": 30.63, "8-bit(Ours)": 30.75},
             "BSD100": {"Bicubic": 25.95, "FP": 27.04, "8-bit": 26.95, "8-bit(Ours)": 27.00}}
PAPER_T3_STATIC = {"8-bit": 30.29, "8-bit(Ours)": 30.66}
PAPER_T2 = {"cost": {"27": 5.14, "50": 6.20, "67": 7.14, "85": 7.81}, "memory": {"27": 4.43, "50": 5.25, "67": 6.08, "85": 7.12}}
PAPER_T7 = {"layerwise": {"cost": [1.20, 1.49, 1.71, 1.99], "memory": [1.17, 1.42, 1.58, 1.79]},
            "proposed": {"cost": [1.26, 1.52, 1.79, 1.95], "memory": [1.16, 1.37, 1.56, 1.79]}}


def _eval(net: torch.nn.Module, pairs: list[dict[str, Any]], scale: int) -> list[float]:
    net.eval()
    out = []
    with torch.no_grad():
        for pr in pairs:
            out.append(float(psnr_y(net(pr["lr"]).clamp(0, 1), pr["hr"], shave=scale)[0]))
    return out


def stage_table34(p: dict[str, Any], profile: str, results: dict[str, Any]) -> dict[str, Any]:
    """ZSSR-8 from scratch on D_bic: FP / standard 8-bit / ours, dynamic and static scales."""
    s, steps, lr = p["scale"], p["scratch_steps"], p["scratch_lr"]
    sets = {"Set5": bicubic_pairs(p, "sr/Set5"), "BSD100": bicubic_pairs(p, "sr/BSD100", p["bsd_images"])}
    arms = [("FP", None, "dynamic"), ("8-bit", 8, "dynamic"), ("8-bit(Ours)", 32, "dynamic"),
            ("8-bit", 8, "static"), ("8-bit(Ours)", 32, "static")]
    rows, per = [], {}
    scratch = from_scratch_probe(p)
    theta = load_theta(profile, "pretrain_bic", s)
    start = {k: float(np.mean(_eval(copy.deepcopy(theta), v, s))) for k, v in sets.items()}
    for label, bits, scales in arms:
        seed_everything(0)
        net = copy.deepcopy(theta).train()
        task = ZSSRPretrain(net=net, scale=s, train_degradation="bicubic",
                            optim=OptimSpec(name="sgd", learning_rate=lr, momentum=0.0, weight_decay=0.0))
        dm = datamodule(p, steps * p["batch"], p["batch"], patch=p["scratch_patch"])
        callbacks = []
        calib = None
        if bits is not None:
            scales_file = None
            if scales == "static":  # calibrated offline over training batches (forward + backward)
                dm.setup("fit")
                gen = torch.Generator().manual_seed(1)
                batches = []
                for _ in range(20):
                    idx = torch.randint(len(dm.train_set), (p["batch"],), generator=gen).tolist()
                    hr = torch.stack([dm.train_set[i]["hr"] for i in idx]).float() / 255
                    batches.append((bicubic_downsample(hr, s), hr))
                probe = convert_to_integer(copy.deepcopy(net), bits, "dynamic")
                calib = calibrate_static_scales(probe, batches, lambda out, hr: (out - hr).abs().mean())
                scales_file = str(WEIGHTS / f"{profile}_scales_{label}_{bits}.json")
                save_scale_state(probe, scales_file, {"calibration_batches": 20, "batch_generator_seed": 1, "arm": label,
                                                      "commit": git_commit()})
            callbacks.append(IntegerTrainingCallback(lr=lr, weight_bits=bits, scales=scales, scales_file=scales_file))
        tr = trainer(f"{profile}_t34_{label}_{scales}", max_steps=steps, callbacks=callbacks)
        tr.fit(task, datamodule=dm)
        name = f"{label} {scales}"
        scores = {k: _eval(task.net, v, s) for k, v in sets.items()}
        per[name] = scores
        rows.append({"arm": name, **{k: float(np.mean(v)) for k, v in scores.items()},
                     "calibrated_points": len(calib) if calib else 0})
        print(f"table34 {name}: {rows[-1]}", flush=True)
    bic = {k: float(np.mean(bicubic_psnr(v, s))) for k, v in sets.items()}
    tests = {
        "Ours dynamic - FP (Set5)": paired(per["8-bit(Ours) dynamic"]["Set5"], per["FP dynamic"]["Set5"]),
        "Ours dynamic - standard 8-bit dynamic (Set5)": paired(per["8-bit(Ours) dynamic"]["Set5"], per["8-bit dynamic"]["Set5"]),
        "Ours dynamic - FP (BSD100)": paired(per["8-bit(Ours) dynamic"]["BSD100"], per["FP dynamic"]["BSD100"]),
        "Ours dynamic - standard 8-bit dynamic (BSD100)": paired(per["8-bit(Ours) dynamic"]["BSD100"], per["8-bit dynamic"]["BSD100"]),
        "Ours dynamic - ours static (BSD100)": paired(per["8-bit(Ours) dynamic"]["BSD100"], per["8-bit(Ours) static"]["BSD100"]),
    }
    md = [f"## Tables 3/4: ZSSR-8 on D_bic x{s}, {steps} SGD steps (lr {lr}, batch {p['batch']}, {p['scratch_patch']}px "
          f"patches) from Pretrain(D_bic) (FP start: Set5 {start['Set5']:.2f}, BSD100 {start['BSD100']:.2f} dB) in each "
          f"arithmetic; PSNR-Y (dB); BSD100 = first {p['bsd_images']} images; paper (from scratch) in brackets\n",
          f"From-scratch probe (default init, 30 SGD steps at lr {lr}, batch 8): {scratch}\n"]
    trows = [{"arm": "Bicubic", "Set5": f"{bic['Set5']:.2f} [28.42]", "BSD100": f"{bic['BSD100']:.2f} [25.95]"}]
    for r in rows:
        label, scales = r["arm"].rsplit(" ", 1)
        ref5 = PAPER_T34["Set5"][label] if scales == "dynamic" else PAPER_T3_STATIC.get(label)
        ref_b = PAPER_T34["BSD100"][label] if scales == "dynamic" else None
        trows.append({"arm": r["arm"], "Set5": f"{r['Set5']:.2f} [{ref5}]", "BSD100": f"{r['BSD100']:.2f}" + (f" [{ref_b}]" if ref_b else "")})
    md.append(markdown_table(trows, ["arm", "Set5", "BSD100"]))
    md.append(markdown_table([{"comparison": k, "diff": f"{v['mean']:.3f} ± {v['ci95']:.3f}", "p": f"{v['p']:.2g}", "wins": v["wins"]}
                              for k, v in tests.items()], ["comparison", "diff", "p", "wins"]))
    return {"rows": rows, "bicubic": bic, "start_fp": start, "from_scratch_probe": scratch, "paired_tests": tests,
            "per_image": per, "markdown": "\n".join(md)}


def from_scratch_probe(p: dict[str, Any]) -> dict[str, Any]:
    """Why Tables 3/4 do not start from scratch here: 30 SGD steps from the default init in FP,
    standard 8-bit and ours; the relative change of the L1 loss and how many stored weights moved."""
    torch.manual_seed(0)
    s = p["scale"]
    net = ZSSR8(scale=s)
    hr = torch.rand(8, 3, 32, 32)
    hr = torch.nn.functional.avg_pool2d(hr, 4).repeat_interleave(4, -1).repeat_interleave(4, -2)  # smooth-ish content
    lr_img = bicubic_downsample(hr, s)
    out: dict[str, Any] = {}
    for label, bits in (("FP", None), ("8-bit", 8), ("8-bit(Ours)", 32)):
        m = copy.deepcopy(net)
        if bits is not None:
            m = convert_to_integer(m, bits, "dynamic")
        w0 = [q.detach().clone() for q in (m.parameters() if bits is None else (ly.weight_v for ly in integer_layers(m)))]
        losses = []
        for _ in range(30):
            loss = (m(lr_img) - hr).abs().mean()
            loss.backward()
            losses.append(float(loss.detach()))
            with torch.no_grad():
                if bits is None:
                    for q in m.parameters():
                        q.sub_(p["scratch_lr"] * q.grad)
                        q.grad = None
                else:
                    for ly in integer_layers(m):
                        eq15_update(ly, p["scratch_lr"])
        w1 = list(m.parameters()) if bits is None else [ly.weight_v for ly in integer_layers(m)]
        moved = sum(int((a != b).sum()) for a, b in zip(w0, w1, strict=True))
        out[label] = {"loss_first": losses[0], "loss_last": losses[-1],
                      "relative_change": (losses[0] - losses[-1]) / losses[0], "stored_weights_changed": moved}
    return out


def stage_table2(p: dict[str, Any], profile: str, results: dict[str, Any]) -> dict[str, Any]:
    """Eq. 16/17 acceleration of ZSSR-8 at 32x32 (Tables 2, 5, 7), uniform and learned masks."""
    layers = zssr8_shapes(32, 32)
    ratios = (0.27, 0.5, 0.67, 0.85)
    uni = acceleration_table(layers, 7, ratios)
    key = lambda r: str(round(r["prune_ratio"] * 100))  # noqa: E731
    out: dict[str, Any] = {"cost": {key(r): r["cost_x"] for r in uni[1:]}, "memory": {key(r): r["memory_x"] for r in uni[1:]},
                           "reading": "unpruned_activation (default, docs/integer_training.md)", "uniform": uni}
    masks_file = WEIGHTS / f"{profile}_masks_maml_so.json"
    if masks_file.is_file():
        doc = json.loads(masks_file.read_text())
        override = {r: doc["masks"][f"{r:g}"]["kept"] for r in ratios if f"{r:g}" in doc["masks"]}
        out["knapsack"] = acceleration_table(layers, 7, tuple(override), kept_override=override)
        out["knapsack_vs_integer"] = acceleration_table(layers, 7, tuple(override), kept_override=override, baseline="integer")
    out["table7_layerwise"] = acceleration_table(layers, 7, (0.17, 0.5, 0.66, 0.83), baseline="integer", scheme="layerwise")
    out["table7_uniform"] = acceleration_table(layers, 7, ratios, baseline="integer")
    out["pruned_activation_reading"] = acceleration_table(layers, 7, ratios, reading="pruned_activation")
    out["table5_kb"] = table5_memory_kb(layers)
    md = ["## Table 2: acceleration vs the 32-bit float net (Eq. 17 cost, Eq. 16 memory), ZSSR-8 at 32x32\n"]
    rows = []
    for name, tab in (("uniform", uni), ("knapsack (MAML theta)", out.get("knapsack")), ("pruned_activation reading", out["pruned_activation_reading"])):
        if tab is None:
            continue
        for r in tab:
            k = key(r)
            rows.append({"masks": name, "prune": f"{k}%", "kept": r["kept"][:7], "cost_x": f"{r['cost_x']:.2f}",
                         "paper_cost": PAPER_T2["cost"].get(k, ""), "memory_x": f"{r['memory_x']:.2f}", "paper_memory": PAPER_T2["memory"].get(k, "")})
    md.append(markdown_table(rows, ["masks", "prune", "kept", "cost_x", "paper_cost", "memory_x", "paper_memory"]))
    md.append("Table 7 (vs the unpruned integer net):\n")
    t7 = []
    for name, tab, ref in (("layer-wise", out["table7_layerwise"], PAPER_T7["layerwise"]),
                           ("uniform", out["table7_uniform"], PAPER_T7["proposed"]),
                           ("knapsack (MAML theta)", out.get("knapsack_vs_integer"), PAPER_T7["proposed"])):
        if tab is None:
            continue
        for i, r in enumerate(tab[1:]):
            t7.append({"scheme": name, "prune": f"{r['prune_ratio']:.2f}", "cost_x": f"{r['cost_x']:.2f}", "paper_cost": ref["cost"][i],
                       "memory_x": f"{r['memory_x']:.2f}", "paper_memory": ref["memory"][i]})
    md.append(markdown_table(t7, ["scheme", "prune", "cost_x", "paper_cost", "memory_x", "paper_memory"]))
    t5 = out["table5_kb"]
    md.append(f"Table 5 (gradient memory, KB, kernel area 9): Original {t5['Original']:.1f} [19,371], 8-bit {t5['8-bit']:.1f} "
              f"[4,840], 8-bit(Ours) {t5['8-bit(Ours)']:.1f} [5,517]\n")
    out["markdown"] = "\n".join(md)
    return out


def stage_timing(p: dict[str, Any], profile: str, results: dict[str, Any]) -> dict[str, Any]:
    """Training-step time integer vs float and integer backward unmasked vs 50 % masks (ZSSR-8 x2,
    batch 8, 24x24 -> 48x48), medians measured in this run."""
    torch.manual_seed(0)
    reps = p["timing_repeats"]
    x, y = torch.rand(8, 3, 24, 24), torch.rand(8, 3, 48, 48)
    fnet = ZSSR8(scale=2)
    opt = torch.optim.SGD(fnet.parameters(), lr=1e-3)
    inet = convert_to_integer(copy.deepcopy(fnet), 32, "dynamic")

    def float_step() -> None:
        opt.zero_grad()
        (fnet(x) - y).abs().mean().backward()
        opt.step()

    def int_step() -> None:
        (inet(x) - y).abs().mean().backward()
        for layer in integer_layers(inet):
            eq15_update(layer, 1e-3)

    t_float = median_time(float_step, reps, 2)
    t_int = median_time(int_step, reps, 2)

    def backward_time(masked: bool) -> float:
        net = convert_to_integer(copy.deepcopy(fnet), 32, "dynamic")
        install_masks(net, [torch.arange(32)] * 7 if masked else None)
        times = []
        for i in range(reps + 2):
            loss = (net(x) - y).abs().mean()
            t0 = time.perf_counter()
            loss.backward()
            dt = time.perf_counter() - t0
            for layer in integer_layers(net):
                layer.wgrad = layer.bgrad = None
            if i >= 2:
                times.append(dt)
        return float(np.median(times))

    b_full, b_half = backward_time(False), backward_time(True)
    out = {"step_float_s": t_float, "step_integer_s": t_int, "step_time_ratio_int_vs_float": t_int / t_float,
           "backward_integer_unmasked_s": b_full, "backward_integer_50pct_s": b_half,
           "backward_speedup_50pct": b_full / b_half, "repeats": reps, "targets": {"ratio": "<= 2.0", "speedup": ">= 1.5"}}
    rows = [{"what": k, "value": f"{v:.3f}" if isinstance(v, float) else str(v)} for k, v in out.items() if k != "targets"]
    out["markdown"] = ("## Timing (ZSSR-8 x2, batch 8, 24x24 -> 48x48, median; targets: ratio <= 2.0, speed-up >= 1.5)\n\n"
                       + markdown_table(rows, ["what", "value"]))
    return out


__all__ = ["stage_rounding", "stage_table2", "stage_table34", "stage_timing"]


def stage_rounding(p: dict[str, Any], profile: str, results: dict[str, Any]) -> dict[str, Any]:
    """Rounding and residual precision (issue 12, section 1) on Pretrain(D_bic), Set5 bicubic x s:
    integer inference with floor (literal Eq. 10) vs round half up, int8 / int16 / int32 residual
    output; then continued integer training with weight-gradient rounding nearest / floor /
    stochastic (activations: round half up), same steps and data as Tables 3/4's arms."""
    s = p["scale"]
    sets = {"Set5": bicubic_pairs(p, "sr/Set5")}
    theta = load_theta(profile, "pretrain_bic", s)
    fp = float(np.mean(_eval(copy.deepcopy(theta), sets["Set5"], s)))
    inference = []
    for rounding in ("floor", "nearest"):
        for bits in (8, 16, 32):
            net = convert_to_integer(copy.deepcopy(theta), 32, "dynamic", rounding=rounding, add_output_bits=bits)
            inference.append({"activation_rounding": rounding, "residual_output_bits": bits,
                              "Set5": float(np.mean(_eval(net, sets["Set5"], s)))})
    training = []
    steps = max(1, p["scratch_steps"] // 3)
    for wgr in ("nearest", "floor", "stochastic"):
        seed_everything(0)
        task = ZSSRPretrain(net=copy.deepcopy(theta).train(), scale=s, train_degradation="bicubic",
                            optim=OptimSpec(name="sgd", learning_rate=p["scratch_lr"], momentum=0.0, weight_decay=0.0))
        dm = datamodule(p, steps * p["batch"], p["batch"], patch=p["scratch_patch"])
        cb = IntegerTrainingCallback(lr=p["scratch_lr"], weight_bits=32, scales="dynamic", weight_grad_rounding=wgr,
                                     rounding_seed=0)
        tr = trainer(f"{profile}_rounding_{wgr}", max_steps=steps, callbacks=[cb])
        tr.fit(task, datamodule=dm)
        training.append({"weight_grad_rounding": wgr, "steps": steps, "Set5": float(np.mean(_eval(task.net, sets["Set5"], s)))})
    md = [f"## Rounding and residual precision (Pretrain(D_bic) theta, Set5 bicubic x{s}; FP inference {fp:.2f} dB)\n",
          markdown_table([{**r, "Set5": f"{r['Set5']:.2f}", "vs FP": f"{r['Set5'] - fp:+.2f}"} for r in inference],
                         ["activation_rounding", "residual_output_bits", "Set5", "vs FP"]),
          f"Integer training ({steps} SGD steps, 32-bit weights, dynamic scales, activations round half up):\n",
          markdown_table([{**r, "Set5": f"{r['Set5']:.2f}"} for r in training], ["weight_grad_rounding", "steps", "Set5"])]
    return {"fp_inference": fp, "inference": inference, "training": training, "markdown": "\n".join(md)}
