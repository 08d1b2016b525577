"""Precision x memory-format speed of the CIFAR ResNets on this CPU (the default-setting check).

    python benchmarks/precision_resnet.py [--depth 32] [--repeats 10]

Median training-step time (forward + backward + SGD step, batch 256) and inference time
(batch 512, no grad) for fp32 / bf16 autocast x NCHW / channels_last, settings interleaved
round-robin so background load hits them alike. The accuracy side of the check (bf16 +
channels_last keeps fp32 accuracy) is in benchmarks/baselines_cifar10.py.
Writes benchmarks/results/precision_resnet.{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import markdown_table, write_results  # noqa: E402
from lr_lightning.nn import CifarResNet  # noqa: E402

SETTINGS = [(False, False), (False, True), (True, False), (True, True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--depth", type=int, nargs="+", default=[20, 32])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--train-batch", type=int, default=256)
    parser.add_argument("--infer-batch", type=int, default=512)
    args = parser.parse_args()
    t_start = time.perf_counter()
    rows = []
    for depth in args.depth:
        torch.manual_seed(0)
        xt = torch.rand(args.train_batch, 3, 32, 32)
        yt = torch.randint(0, 10, (args.train_batch,))
        xi = torch.rand(args.infer_batch, 3, 32, 32)
        state = []
        for bf16, cl in SETTINGS:
            net = CifarResNet(depth)
            if cl:
                net = net.to(memory_format=torch.channels_last)
            opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
            fmt = torch.channels_last if cl else torch.contiguous_format
            state.append((bf16, cl, net, opt, xt.contiguous(memory_format=fmt), xi.contiguous(memory_format=fmt)))
        times: dict[tuple[bool, bool], dict[str, list[float]]] = {(b, c): {"train": [], "infer": []} for b, c in SETTINGS}
        for rep in range(args.repeats + 2):  # 2 warm-up rounds
            for bf16, cl, net, opt, x, xinf in state:
                net.train()
                t = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    loss = torch.nn.functional.cross_entropy(net(x), yt)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                t_train = time.perf_counter() - t
                net.eval()
                t = time.perf_counter()
                with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    net(xinf)
                t_infer = time.perf_counter() - t
                if rep >= 2:
                    times[(bf16, cl)]["train"].append(t_train)
                    times[(bf16, cl)]["infer"].append(t_infer)
        base = times[(False, False)]
        for bf16, cl in SETTINGS:
            tr = statistics.median(times[(bf16, cl)]["train"]) * 1000
            inf = statistics.median(times[(bf16, cl)]["infer"]) * 1000
            rows.append({
                "net": f"ResNet{depth}",
                "precision": "bf16-mixed" if bf16 else "32-true",
                "memory_format": "channels_last" if cl else "NCHW",
                "train_step_ms": round(tr, 1),
                "train_speedup": round(statistics.median(base["train"]) * 1000 / tr, 2),
                "infer_ms": round(inf, 1),
                "infer_speedup": round(statistics.median(base["infer"]) * 1000 / inf, 2),
            })
    cols = ["net", "precision", "memory_format", "train_step_ms", "train_speedup", "infer_ms", "infer_speedup"]
    md = (f"Median of {args.repeats} interleaved repeats; training step at batch {args.train_batch}, "
          f"inference at batch {args.infer_batch}.\n\n") + markdown_table(rows, cols)
    payload = {"rows": rows, "repeats": args.repeats, "train_batch": args.train_batch, "infer_batch": args.infer_batch,
               "load_average_at_end": list(__import__("os").getloadavg())}
    write_results("precision_resnet", payload, md, time.perf_counter() - t_start)
    print(md)


if __name__ == "__main__":
    main()
